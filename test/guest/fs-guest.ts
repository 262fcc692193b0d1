// Issue 16, real guests: a Linux guest mounts `virtio-ts serve fs` (QEMU 7.2
// vhost-user-fs-pci, guest memory a shared memfd) with `mount -t virtiofs TAG /mnt` and runs
// scripts/guest/init's `fs` case: thousands of small files created, renamed (moved to another
// directory), deleted and read back; a large sequential file with fsync; concurrent writers (one shared file, four
// directories); hard and symbolic links; a symlink escape attempt; unmount and mount again (a
// new FUSE session); clean-up. The guest drops its caches before each read-back, so what it
// reads comes from the server. Here the checks of what the guest read (against what the host
// computes it must be) and of serve's run report: zero monitor verdicts, requests served.
// One scenario per test file (test/guest/fs-*.test.ts).
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { boot, noViolations, ringIndices, type GuestRun, type Running } from './harness.js';

/** One fs guest run. */
export interface FsGuestConfig {
  /** serve fs arguments after --socket-path (the provider: --memory or --shared-dir DIR). */
  serveArgs: string[];
  /** Small files (vt.files). */
  files: number;
  /** The large file in MiB (vt.mb). */
  mb: number;
  /** More vhost-user-fs-pci properties. */
  device?: string;
  tag?: string;
}

/** The md5 of every kept small file's contents in order of I (what the guest's cat prints). */
export function expectedSmallMd5(n: number): string {
  const h = createHash('md5');
  for (let i = 1; i <= n; i++) if (i % 3 !== 0) h.update(`small file ${i}\n`);
  return h.digest('hex');
}

/** Where small file I is after the workload (null: deleted): even ones moved, every third deleted. */
export function smallPath(i: number): string | null {
  if (i % 3 === 0) return null;
  return `${i % 2 === 0 ? 'moved' : 'small'}/f${i}`;
}

/** The contents the concurrent writers give file J of writer K. */
export function writerContents(k: number, j: number): string {
  return `writer ${k} file ${j} ${'x'.repeat(1024)}\n`;
}

/** The md5 of all writers' files, writer by writer, file by file. */
export function expectedWritersMd5(): string {
  const h = createHash('md5');
  for (let k = 1; k <= 4; k++) for (let j = 1; j <= 250; j++) h.update(writerContents(k, j));
  return h.digest('hex');
}

/** Boots the guest against serve fs, checks the guest's results and serve's report; returns the run. */
export async function fsGuest(c: FsGuestConfig): Promise<GuestRun & { report: FsRunReport }> {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-fs-'));
  const report = join(dir, 'report.json');
  const tag = c.tag ?? 'vt';
  const rings: string[] = [];
  try {
    const run = await boot({
      kind: 'fs',
      device: `vhost-user-fs-pci,chardev=c0,tag=${tag}${c.device ? ',' + c.device : ''}`,
      serveArgs: ['--tag', tag, ...c.serveArgs, '--report', report, '--log-format', 'json'],
      append: `vt.tag=${tag} vt.files=${c.files} vt.mb=${c.mb}`,
      memoryMiB: 384,
      during: (g) => umountWatch(g, rings),
      timeoutMs: 200_000, // a hang guard inside the runner's 300 s per file (the workload takes 40 to 100 s under TCG on a loaded 2-core machine; a hung umount gives up after 60 s)
    });
    const r = run.results;
    const say = () => `\n${run.console.slice(-3000)}\n${rings.join('\n')}\n${run.serveLog.slice(-3000)}`;
    assert.equal(r.get('fs-error'), undefined, `no file operation failed${say()}`);
    assert.equal(r.get('mounted'), '1', `the guest mounted the tag${say()}`);
    let inSmall = 0;
    let inMoved = 0;
    for (let i = 1; i <= c.files; i++) {
      const p = smallPath(i);
      if (p?.startsWith('small/')) inSmall++;
      else if (p !== null) inMoved++;
    }
    const kept = inSmall + inMoved;
    assert.equal(r.get('small-count'), `${inSmall} ${inMoved}`, 'readdir lists every small file left, in its directory');
    assert.equal(r.get('small-ls-l'), String(kept), 'ls -l (READDIRPLUS / GETATTR) sees them as regular files');
    const small = expectedSmallMd5(c.files);
    assert.equal(r.get('small-md5'), small, 'every small file holds what was written, under its new name');
    assert.match(r.get('big-md5') ?? '', /^[0-9a-f]{32}$/);
    assert.equal(r.get('fsync'), 'ok', 'the large write with fsync succeeded');
    assert.equal(r.get('big-readback-md5'), r.get('big-md5'), `the ${c.mb} MiB file reads back as written`);
    assert.equal(r.get('shared-md5'), r.get('shared-want'), 'four concurrent writers into one file');
    assert.equal(r.get('writers-md5'), expectedWritersMd5(), 'four concurrent writers into their own directories');
    assert.equal(r.get('hard-nlink'), '2', 'a hard link counts');
    assert.equal(r.get('soft-read'), 'small file 1', 'a symlink reads through');
    assert.equal(r.get('soft-target'), 'small/f1', 'readlink gives the target as written');
    assert.equal(r.get('escape'), 'blocked', 'a symlink out of the file system leads nowhere');
    assert.equal(r.get('escape-dir'), 'blocked');
    assert.equal(r.get('remount-big-md5'), r.get('big-md5'), 'a new session (unmount, mount) reads the large file back');
    assert.equal(r.get('remount-small-md5'), small, 'and the small files');
    assert.equal(r.get('left'), 'big escape hard shared soft', 'rm -rf removed the trees');
    noViolations(run);
    assert.ok(existsSync(report), `serve fs wrote its report${say()}`);
    const rep = JSON.parse(readFileSync(report, 'utf8')) as FsRunReport;
    assert.equal(rep.schema, 'virtio-ts/run-report@1');
    assert.deepEqual([rep.totals.verdicts, rep.clauses], [0, []], "serve fs's monitor verdicts");
    assert.ok(rep.counters.fuseRequests > 5 * c.files, `FUSE requests served: ${rep.counters.fuseRequests}`);
    assert.ok(rep.counters.hiprio > 0, 'FORGETs came on hiprio (drop_caches)');
    checkDefaultRequests(rep.counters);
    const secs = (k: string) => {
      const [a, b, d] = (r.get(k) ?? '').split(' ').map(Number);
      return d !== undefined ? [b - a, d - b] : [b - a];
    };
    const [bw, br] = secs('big-seconds');
    process.stdout.write(
      `# fs guest ${JSON.stringify(c.serveArgs)}: ${c.files} small files ${secs('small-seconds')[0]} s; ${c.mb} MiB write+fsync ${bw} s, read ${br} s; ` +
        `whole workload ${secs('seconds')[0]} s; ${rep.counters.fuseRequests} FUSE requests (${rep.counters.hiprio} hiprio, ${rep.counters.async} async), ` +
        `${rep.counters.fuseErrors} error replies (TCG, load ${readFileSync('/proc/loadavg', 'utf8').split(' ')[0]})\n`,
    );
    if (process.env.VT_FS_OPS) process.stdout.write(`# ${JSON.stringify(rep.counters)}\n`);
    return { ...run, report: rep };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * While the guest runs: once it says an umount hangs (scripts/guest/init vt_umount), the
 * rings' indices as QEMU reads them from guest memory, then again a while later (the guest
 * waits 30 s before it gives up), into `rings` and on stdout. Only diagnostics: nothing is
 * asserted here, and a guest that never hangs leaves `rings` empty.
 */
export async function umountWatch(g: Running, rings: string[]): Promise<void> {
  try {
    await g.waitFor(/umount-hung/);
  } catch {
    return; // QEMU ended without a hang
  }
  for (const when of ['at the hang', '15 s later']) {
    if (when !== 'at the hang') await new Promise((r) => setTimeout(r, 15_000));
    try {
      const s = `rings ${when}:\n${await ringIndices(g, 'virtio-user-fs')}`;
      rings.push(s);
      process.stdout.write(`# ${s.replace(/\n/g, '\n# ')}\n`);
    } catch (e) {
      rings.push(`rings ${when}: QMP failed: ${e instanceof Error ? e.message : String(e)}`);
      return; // QEMU ended meanwhile
    }
  }
}

/**
 * What Linux sends `serve fs` at its defaults (virtiofsd's no_xattr, no_posix_lock): no FLUSH
 * (every open was answered FOPEN_NOFLUSH), one GETXATTR at most (the first is ENOSYS and Linux
 * stops asking), no lock request.
 */
export function checkDefaultRequests(counters: Record<string, number>): void {
  assert.ok(counters.opOPEN > 0 && counters.opCREATE > 0, 'files were opened and created');
  assert.equal(counters.opFLUSH ?? 0, 0, 'no FLUSH: every open was answered FOPEN_NOFLUSH');
  assert.ok((counters.opGETXATTR ?? 0) <= 1, `GETXATTR sent once at most: ${counters.opGETXATTR}`);
  assert.equal((counters.opSETLK ?? 0) + (counters.opSETLKW ?? 0) + (counters.opGETLK ?? 0), 0, 'no remote lock request');
}

/** The run report serve fs writes (the fields the test reads). */
export interface FsRunReport {
  schema: string;
  totals: { verdicts: number };
  clauses: unknown[];
  counters: Record<string, number>;
}
