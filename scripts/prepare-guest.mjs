#!/usr/bin/env node
// What `npm test` prepares for the real-guest tests (dist/test/guest) before they run, so a fresh
// machine needs no separate step: the guest kernel and initramfs (.guest/, scripts/guest/
// build-guest.sh) and the workload guest's initramfs (scripts/guest/build-workload-guest.sh),
// when QEMU and the tools those scripts use are here. Both scripts are no-ops while their output
// is current (a changed scripts/guest/init is re-packed). What cannot be prepared is said
// plainly, with what to install: the tests then skip and say why (in CI they fail instead:
// test/prerequisites.ts). It installs nothing itself (.ci/run does, as root, with apt-get).
//
//   node scripts/prepare-guest.mjs     (scripts/run-tests.mjs calls prepareGuest() unless --no-guest)
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** The Debian package of each command the guest scripts and tests use (as .ci/run installs them). */
const PACKAGE = {
  'qemu-system-x86_64': 'qemu-system-x86',
  busybox: 'busybox-static',
  depmod: 'kmod',
  modprobe: 'kmod',
  modinfo: 'kmod',
  cpio: 'cpio',
  xz: 'xz-utils',
  python3: 'python3',
  'apt-get': 'apt',
  dpkg: 'dpkg',
  fio: 'fio',
  'mkfs.ext4': 'e2fsprogs',
  e2fsck: 'e2fsprogs',
  debugfs: 'e2fsprogs',
  ldd: 'libc-bin',
};

const onPath = (cmd) => spawnSync('sh', ['-c', `PATH="$PATH:/sbin:/usr/sbin" command -v "${cmd}"`], { encoding: 'utf8' }).stdout.trim() !== '';
const absent = (cmds) => cmds.filter((c) => (c === 'busybox' ? !existsSync('/bin/busybox') : !onPath(c)));
const install = (cmds) => `apt-get install ${[...new Set(cmds.map((c) => PACKAGE[c] ?? c))].join(' ')}`;

function run(script, guestDir) {
  const r = spawnSync('bash', [join(root, 'scripts', 'guest', script), guestDir], { cwd: root, encoding: 'utf8', timeout: 900_000 });
  if (r.stdout.trim()) console.log(r.stdout.trimEnd().replace(/^/gm, '  '));
  if (r.status === 0) return null;
  const tail = (r.stderr || r.stdout || String(r.error ?? '')).trim().split('\n').slice(-5).join(' / ');
  return `scripts/guest/${script} failed (${r.status ?? r.signal}): ${tail}`;
}

/**
 * Builds what the real-guest tests need when it is missing or stale and can be built here.
 * Returns the lines that say what could not be prepared (empty: everything is ready).
 */
export function prepareGuest({ guestDir = join(root, '.guest'), testDir = join(root, 'dist', 'test', 'guest') } = {}) {
  const files = existsSync(testDir) ? readdirSync(testDir).filter((n) => n.endsWith('.test.js')) : [];
  // The files that boot the workload guest import its modules (test/guest/workload-*.ts).
  const workloadFiles = files.filter((n) => /from '\.\/workload-[\w-]+\.js'/.test(readFileSync(join(testDir, n), 'utf8')));
  const all = `the real-guest tests (${files.length} files in dist/test/guest)`;
  const skip = (what) => `${what} will skip (in CI they fail)`;
  const notes = [];

  // The v86 guest (test/v86: no QEMU involved): Debian's i386 kernel and busybox, SeaBIOS.
  const v86Tools = absent(['apt-get', 'dpkg', 'depmod', 'modprobe', 'cpio', 'xz']);
  if (v86Tools.length > 0) notes.push(`cannot build the v86 guest (.guest/v86): ${v86Tools.join(', ')} not found: ${skip('test/v86')}. Install: ${install(v86Tools)}`);
  else {
    const failed = run('build-v86-guest.sh', guestDir);
    if (failed !== null) notes.push(`${failed}: ${skip('test/v86')}`);
  }

  const qemu = absent(['qemu-system-x86_64']);
  if (qemu.length > 0) {
    notes.push(`qemu-system-x86_64 not found: ${skip(all)}. Install: ${install(['qemu-system-x86_64', 'busybox', 'depmod', 'cpio', 'xz', 'fio', 'mkfs.ext4'])} (or run .ci/run, which installs everything and runs the tests)`);
    return notes;
  }

  // The guest: Debian's kernel (downloaded with apt-get) and a busybox initramfs.
  const base = absent(['busybox', 'depmod', 'modprobe', 'cpio', 'xz', 'python3', 'apt-get', 'dpkg']);
  const haveBase = existsSync(join(guestDir, 'vmlinux')) && existsSync(join(guestDir, 'initramfs.cpio'));
  if (base.length > 0) {
    if (!haveBase) {
      notes.push(`cannot build the guest (.guest/vmlinux, .guest/initramfs.cpio): ${base.join(', ')} not found: ${skip(all)}. Install: ${install(base)}`);
      return notes;
    }
    notes.push(`cannot check .guest/initramfs.cpio against scripts/guest/init (${base.join(', ')} not found): the guest tests boot it as it is. Install: ${install(base)}`);
  } else {
    if (!haveBase) console.log(`preparing the test guest: scripts/guest/build-guest.sh ${relative(root, guestDir)} (downloads Debian's kernel package)`);
    const failed = run('build-guest.sh', guestDir);
    if (failed !== null) {
      notes.push(`${failed}: ${skip(all)}`);
      return notes;
    }
  }

  // The workload guest: that initramfs plus the host's fio and e2fsprogs.
  const workload = absent(['fio', 'mkfs.ext4', 'e2fsck', 'debugfs', 'ldd', 'modinfo', 'cpio']);
  const what = `the workload guest's tests (${workloadFiles.length} files)`;
  if (workload.length > 0) {
    notes.push(`cannot build the workload guest (.guest/workload-initramfs.cpio): ${workload.join(', ')} not found: ${skip(what)}. Install: ${install(workload)}`);
  } else {
    const failed = run('build-workload-guest.sh', guestDir);
    if (failed !== null) notes.push(`${failed}: ${skip(what)}`);
  }
  return notes;
}

/** Prints the notes as one block (before and after a test run). */
export function reportGuest(notes) {
  if (notes.length === 0) return;
  console.log(`\nnot prepared for npm test:\n${notes.map((n) => `  - ${n}`).join('\n')}\n`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const notes = prepareGuest();
  if (notes.length === 0) console.log('guest ready: .guest/vmlinux, initramfs.cpio, workload-initramfs.cpio');
  reportGuest(notes);
}
