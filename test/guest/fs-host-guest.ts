// What the host-directory virtio-fs guest tests share (not a test file): the shared directory
// with its hostile neighbours, and the host-side checks of what scripts/guest/init's `fshost`
// case left in it. The guest's results are checked on the HOST: every file it wrote is read
// back here, by md5.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { accessSync, constants, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { GuestRun } from './harness.js';

export const md5 = (b: Uint8Array | string): string => createHash('md5').update(b).digest('hex');
export const SECRET = 'HOST-SECRET outside the shared directory\n';

/** A shared directory `root`, and beside it `outside` (a secret), with escape symlinks in root. */
export interface Share {
  base: string;
  root: string;
  outside: string;
  /** Every path, mode, size, mtime and file md5 under `outside`, and /etc/passwd's: compared before and after. */
  outsideState(): string;
  remove(): void;
}

/** A shared directory with escape bait beside it, under `parent` (default: the OS's temporary directory). */
export function makeShare(parent: string = tmpdir()): Share {
  const base = mkdtempSync(join(parent, 'virtio-ts-fs-share-'));
  const root = join(base, 'root');
  const outside = join(base, 'OUTSIDE');
  mkdirSync(root);
  mkdirSync(outside);
  writeFileSync(join(outside, 'secret.txt'), SECRET);
  symlinkSync('../OUTSIDE', join(root, 'up'));
  symlinkSync(outside, join(root, 'abs'));
  symlinkSync('/etc/passwd', join(root, 'passwd'));
  const outsideState = () => {
    const walk = (dir: string): string[] =>
      readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
        const p = join(dir, e.name);
        const st = lstatSync(p);
        const line = `${p} ${st.mode.toString(8)} ${st.size} ${st.mtimeMs}${e.isFile() ? ' ' + md5(readFileSync(p)) : ''}`;
        return e.isDirectory() ? [line, ...walk(p)] : [line];
      });
    const pw = lstatSync('/etc/passwd');
    return [...walk(outside), `/etc/passwd ${pw.mode} ${pw.size} ${pw.mtimeMs} ${md5(readFileSync('/etc/passwd'))}`].join('\n');
  };
  return { base, root, outside, outsideState, remove: () => rmSync(base, { recursive: true, force: true }) };
}

/** The kernel command line of the workload: `files` small files, a large file of `mb` MiB; `umount`: unmount at the end. */
export function workloadAppend(o: { files: number; mb: number; fstype?: 'virtiofs' | '9p'; escape?: boolean; umount?: boolean }): string {
  return `vt.files=${o.files} vt.mb=${o.mb}${o.fstype ? ` vt.fstype=${o.fstype}` : ''}${o.escape ? ' vt.escape=1' : ''}${o.umount ? ' vt.umount=1' : ''}`;
}

/**
 * Checks on the host what the workload left in `root` (scripts/guest/init `fshost`): the small
 * files renamed with the right contents (every other one deleted), the large file by md5, the
 * four concurrent appenders' lines (each writer's in order, none torn) and slices, the fsynced
 * files.
 */
export function checkWorkload(run: GuestRun, root: string, files: number): void {
  const r = run.results;
  const errors = [...r.entries()].filter(([k]) => k === 'error' || k === 'mount-error' || k === 'fs-error');
  assert.deepEqual(errors, [], `the guest saw no error: ${run.console.slice(-3000)}`);
  const w = join(root, 'w');
  // 1. Small files: created, listed, read back (the guest's md5 of all of them in glob order
  //    is what the host computes from the names), renamed, every odd-ending one deleted.
  assert.equal(r.get('listed'), String(files), 'ls -l saw every file');
  const names = Array.from({ length: files }, (_, i) => `f${i}`).sort();
  assert.equal(r.get('small-md5'), md5(names.map((n) => `small file ${n.slice(1)}\n`).join('')), 'the guest read back what it wrote');
  const kept = names.filter((n) => !/[13579]$/.test(n));
  assert.deepEqual(readdirSync(join(w, 'renamed')).sort(), kept, 'renamed/ holds the even-ending files, the odd ones were deleted');
  for (const n of kept) assert.equal(readFileSync(join(w, 'renamed', n), 'utf8'), `small file ${n.slice(1)}\n`, n);
  assert.ok(!readdirSync(w).includes('small'), 'small/ was removed');
  // 2. The large file.
  const bigMd5 = r.get('big-md5');
  assert.match(bigMd5 ?? '', /^[0-9a-f]{32}$/);
  const big = readFileSync(join(w, 'big'));
  assert.equal(md5(big), bigMd5, 'the host file holds what the guest wrote');
  assert.equal(r.get('big-readback-md5'), bigMd5, 'the guest read it back through the server');
  // 3. Concurrent writers.
  const lines = readFileSync(join(w, 'shared.log'), 'utf8').split('\n').slice(0, -1);
  assert.equal(lines.length, 800, 'four writers, 200 appended lines each');
  for (let k = 1; k <= 4; k++) {
    const mine = lines.filter((l) => l.startsWith(`writer ${k} `));
    assert.deepEqual(mine, Array.from({ length: 200 }, (_, i) => `writer ${k} line ${i}`), `writer ${k}'s lines, whole and in order`);
    assert.equal(md5(readFileSync(join(w, `part${k}`))), md5(big.subarray((k - 1) * (4 << 20), k * (4 << 20))), `part${k}`);
  }
  // 4. fsync: each dd conv=fsync succeeded and its 4 KiB are there.
  assert.equal(r.get('fsync-ok'), '50');
  for (let i = 0; i < 50; i++) assert.ok(readFileSync(join(w, `sync${i}`)).equals(big.subarray(i * 4096, (i + 1) * 4096)), `sync${i}`);
}

/** The escape attempts failed: the secret never reached the guest, nothing was planted or linked. */
export function checkEscape(run: GuestRun, share: Share, before: string): void {
  const r = run.results;
  const secret = md5(SECRET);
  const empty = md5('');
  for (const l of ['up', 'abs']) {
    assert.equal(r.get(`escape-read-${l}`), empty, `reading ${l}/secret.txt gave nothing (not the secret ${secret})`);
    assert.equal(r.get(`escape-write-${l}`), 'failed', `writing through ${l}`);
    assert.equal(r.get(`escape-link-${l}`), 'failed', `hard-linking through ${l}`);
  }
  assert.equal(r.get('escape-readlink'), '/etc/passwd', "the link's text, as the host holds it");
  assert.notEqual(r.get('escape-passwd'), md5(readFileSync('/etc/passwd')), "the host's /etc/passwd never reached the guest");
  assert.equal(r.get('escape-mnt-parent'), '0');
  assert.equal(share.outsideState(), before, 'nothing outside the shared directory changed');
  assert.equal(readdirSync(share.root).filter((n) => n.startsWith('stolen')).length, 0);
}

/** QEMU's C virtiofsd (Debian's qemu-system-common), the anchor of bench:fs. */
export const VIRTIOFSD = '/usr/lib/qemu/virtiofsd';

/**
 * virtiofsd's command line for `dir` on `socket`, as this project runs it: as root (its sandbox
 * needs CAP_SYS_CHROOT; `sandbox=chroot` because the namespace sandbox needs more than a
 * container gives), xattrs off (its default), threads from its pool. `cache`: `none` (the
 * default here: every access goes to the daemon, FOPEN_DIRECT_IO on every open, entry and
 * attribute timeouts 0: the guest tests' anchor) or `auto` (virtiofsd's own default: 1 s
 * timeouts and the guest's page cache, the policy of `virtio-ts serve fs` without
 * --direct-io: the fair anchor of bench:fs). `options`: more `-o` options (`xattr`, `posix_lock`).
 */
export function virtiofsdArgs(socket: string, dir: string, cache: 'none' | 'auto' = 'none', options: readonly string[] = []): string[] {
  return [`--socket-path=${socket}`, '-o', `source=${dir}`, '-o', 'sandbox=chroot', '-o', `cache=${cache}`, ...options.flatMap((o) => ['-o', o])];
}

/** Why virtiofsd cannot run here, or null. */
export function virtiofsdMissing(): string | null {
  if (!existsSync(VIRTIOFSD)) return `${VIRTIOFSD} (Debian qemu-system-common)`;
  if (process.getuid?.() !== 0) return 'root (virtiofsd chroots into the shared directory)';
  return null;
}

/**
 * Starts virtiofsd on `socket` for `dir` (for boot's `server`; `cache` and `options` as virtiofsdArgs); close() ends it (SIGTERM, then
 * waits for it) and resolves with its log.
 */
export function startVirtiofsd(socket: string, dir: string, cache: 'none' | 'auto' = 'none', options: readonly string[] = []): { close(): Promise<string>; log(): string } {
  const child = spawn(VIRTIOFSD, virtiofsdArgs(socket, dir, cache, options), { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout!.on('data', (d) => (log += d));
  child.stderr!.on('data', (d) => (log += d));
  const exited = new Promise<void>((res) => child.once('exit', () => res()));
  return {
    log: () => log,
    close: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
      return log;
    },
  };
}

/**
 * Where the fs benches put their shared directories: `--dir DIR` if given, else /dev/shm (a
 * tmpfs) when it is there, else the OS's temporary directory. Not ext4 by default because
 * ext4's inode allocator scans every inode freed in the last seconds when it creates a file
 * (`recently_deleted`, a third of the server's CPU time in the create phase right after the
 * previous server's share was removed): that cost lands on whichever server runs next, the
 * same syscalls for every server, and would make the ratios depend on the order of a round.
 */
export function benchShareParent(argv: readonly string[]): string {
  const i = argv.indexOf('--dir');
  if (i >= 0) {
    const dir = argv[i + 1];
    if (dir === undefined || dir.startsWith('--')) throw new Error('--dir needs a directory');
    return dir;
  }
  try {
    accessSync('/dev/shm', constants.W_OK);
    return '/dev/shm';
  } catch {
    return tmpdir();
  }
}
