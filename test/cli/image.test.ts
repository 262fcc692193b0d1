// What `serve blk` checks about --image before it serves it: size (at least one sector; a
// partial last sector is a warning), recognisable non-raw formats (refused unless --format
// raw), missing / unreadable / not a file (runtime failure, exit 3). The real binary.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, closeSync, existsSync, fsyncSync, mkdirSync, mkdtempSync, openSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { detectFormat } from '../../src/cli/image.js';
import { EXIT_OK, EXIT_RUNTIME } from '../../src/cli/exit-codes.js';
import { bin, frontEnd, run, startServe, until } from './helpers.js';
import { missingPrerequisite } from '../prerequisites.js';

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'virtio-ts-image-'));
}

/** A 64 KiB image whose first bytes are `head` (the rest zero). */
function imageWith(head: Uint8Array): Uint8Array {
  const b = new Uint8Array(64 << 10);
  b.set(head);
  return b;
}
const ascii = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));

// The first bytes of each format as qemu-img writes them (magic numbers of QEMU's block/*.c probes).
const vdiHead = new Uint8Array(0x48);
vdiHead.set(ascii('<<< Oracle VM VirtualBox Disk Image >>>\n'));
vdiHead.set(Uint8Array.of(0x7f, 0x10, 0xda, 0xbe), 0x40);
const HEADS: [string, Uint8Array][] = [
  ['qcow2', Uint8Array.of(0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3)],
  ['qed', Uint8Array.of(0x51, 0x45, 0x44, 0x00)],
  ['vmdk', ascii('KDMV')],
  ['vmdk', ascii('# Disk DescriptorFile\nversion=1\n')],
  ['vdi', vdiHead],
  ['vhdx', ascii('vhdxfile')],
  ['vpc (vhd)', ascii('conectix')],
  ['parallels', ascii('WithoutFreeSpace')],
  ['bochs', ascii('Bochs Virtual HD Image')],
];

test('detectFormat: each non-raw magic is named; zeroes, an MBR, a LUKS header (a guest\'s own encryption) are raw', () => {
  for (const [name, head] of HEADS) assert.equal(detectFormat(imageWith(head)), name, name);
  assert.equal(detectFormat(new Uint8Array(512)), null);
  const mbr = new Uint8Array(512);
  mbr[510] = 0x55;
  mbr[511] = 0xaa;
  assert.equal(detectFormat(mbr), null);
  assert.equal(detectFormat(imageWith(Uint8Array.of(0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe))), null, 'LUKS inside a raw disk is the guest\'s business');
  assert.equal(detectFormat(Uint8Array.of(0x51, 0x46)), null, 'a head shorter than the magic');
});

test('serve blk refuses a qcow2, vmdk, vdi, vhdx, ... image (exit 3, says why and what to do), untouched', () => {
  const dir = tempDir();
  try {
    for (const [name, head] of HEADS) {
      const image = join(dir, 'disk.img');
      writeFileSync(image, imageWith(head));
      const mtime = statSync(image).mtimeMs;
      const sock = join(dir, 'blk.sock');
      const r = run('serve', 'blk', '--socket-path', sock, '--image', image);
      assert.equal(r.code, EXIT_RUNTIME, `${name}: ${r.err}`);
      assert.match(r.err, new RegExp(`looks like a ${name.replace(/[()]/g, '\\$&')} image, not a raw disk`), name);
      assert.match(r.err, /qemu-img convert -O raw/);
      assert.match(r.err, /give --format raw/);
      assert.equal(existsSync(sock), false, 'refused before the socket was made');
      assert.equal(statSync(image).mtimeMs, mtime);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('serve blk --format raw serves a file whose first bytes look like qcow2 (a raw disk the guest wrote that into)', async () => {
  const dir = tempDir();
  const image = join(dir, 'disk.img');
  writeFileSync(image, imageWith(HEADS[0][1]));
  const sock = join(dir, 'blk.sock');
  const s = startServe(['serve', 'blk', '--socket-path', sock, '--image', image, '--format', 'raw']);
  try {
    const start = await s.logged(/^serving /);
    assert.equal(start.format, 'raw');
    await until(() => existsSync(sock), 'the socket');
    const fe = await frontEnd(sock);
    assert.equal(await fe.capacity(), 128);
    fe.close();
    s.child.kill('SIGTERM');
    assert.equal(await s.exited, EXIT_OK);
  } finally {
    s.child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('serve blk: an image smaller than one sector is refused; 1000 bytes is served as 1 sector with a warning that 488 bytes are not visible', async () => {
  const dir = tempDir();
  try {
    for (const size of [0, 1, 100, 511]) {
      const image = join(dir, `tiny${size}.img`);
      writeFileSync(image, new Uint8Array(size));
      const r = run('serve', 'blk', '--socket-path', join(dir, 'x.sock'), '--image', image);
      assert.equal(r.code, EXIT_RUNTIME, `${size} bytes`);
      assert.match(r.err, new RegExp(`holds ${size} bytes, less than one 512-byte sector`));
    }
    const image = join(dir, 'odd.img');
    writeFileSync(image, new Uint8Array(1000));
    const sock = join(dir, 'blk.sock');
    const s = startServe(['serve', 'blk', '--socket-path', sock, '--image', image]);
    try {
      const start = await s.logged(/^serving /);
      assert.deepEqual([start.capacityBytes, start.capacitySectors], [512, 1]);
      const warning = await s.logged(/not a multiple of 512/);
      assert.equal(warning.level, 40);
      assert.match(warning.msg, /is 1000 bytes, not a multiple of 512: the last 488 bytes are not visible to the guest/);
      await until(() => existsSync(sock), 'the socket');
      const fe = await frontEnd(sock);
      assert.equal(await fe.capacity(), 1);
      fe.close();
      s.child.kill('SIGTERM');
      assert.equal(await s.exited, EXIT_OK);
      // serve's own warning above is not a monitor verdict: the stop line counts only those,
      // and says so (it once read "0 warnings in this run" right after this warning).
      const stop = await s.logged(/shutting down/);
      assert.match(stop.msg, /; monitor verdicts in this run: 0 violations, 0 warnings; exit 0/);
      assert.deepEqual([stop.violations, stop.warnings], [0, 0]);
    } finally {
      s.child.kill('SIGKILL');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('serve blk: a missing image, a directory, a FIFO as image: exit 3 with a clear message, no socket made', () => {
  const dir = tempDir();
  try {
    mkdirSync(join(dir, 'adir'));
    spawnSync('mkfifo', [join(dir, 'fifo')]);
    const sock = join(dir, 'blk.sock');
    const cases: [string, RegExp][] = [
      [join(dir, 'missing.img'), /cannot use --image .*missing\.img: no such file or directory \(ENOENT\)/],
      [join(dir, 'adir'), /--image .*adir is a directory, not a disk image/],
      [join(dir, 'fifo'), /--image .*fifo is a FIFO, not a disk image/],
      [join(dir, 'missing-dir', 'x.img'), /no such file or directory \(ENOENT\)/],
    ];
    for (const [image, message] of cases) {
      const r = run('serve', 'blk', '--socket-path', sock, '--image', image);
      assert.equal(r.code, EXIT_RUNTIME, `${image}: ${r.err}`);
      assert.match(r.err, message);
      assert.equal(existsSync(sock), false);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('serve blk: an image the user may not write is refused (EACCES) with a hint to use --read-only, which then serves it; an unreadable one gets no such hint', async (t) => {
  const dir = tempDir();
  try {
    chmodSync(dir, 0o755);
    const image = join(dir, 'disk.img');
    writeFileSync(image, new Uint8Array(64 << 10));
    chmodSync(image, 0o444);
    // root may write anything: run the binary as nobody then (it must be able to read the package).
    const asUser = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};
    const probe = spawnSync(process.execPath, [bin, '--version'], { encoding: 'utf8', ...asUser });
    if (probe.status !== 0) return missingPrerequisite(t, `running the binary as an unprivileged user: ${probe.stderr}`);
    const r = spawnSync(process.execPath, [bin, 'serve', 'blk', '--socket-path', join(dir, 'x.sock'), '--image', image], { encoding: 'utf8', timeout: 60_000, ...asUser });
    assert.equal(r.status, EXIT_RUNTIME, r.stderr);
    assert.match(r.stderr, /cannot open --image .*disk\.img for reading and writing: permission denied \(EACCES\); give --read-only to serve it read-only/);
    // --read-only: served (the socket in a directory the user may write).
    const socks = join(dir, 'socks');
    mkdirSync(socks);
    chmodSync(socks, 0o777);
    const sock = join(socks, 'blk.sock');
    const s = startServe(['serve', 'blk', '--socket-path', sock, '--image', image, '--read-only'], asUser);
    try {
      const start = await s.logged(/^serving /);
      assert.equal(start.readOnly, true);
      assert.match(start.msg, /read-only/);
      s.child.kill('SIGTERM');
      assert.equal(await s.exited, EXIT_OK);
    } finally {
      s.child.kill('SIGKILL');
    }
    chmodSync(image, 0o000);
    // Neither readable nor writable: no --read-only hint (it would only lead to a second refusal).
    const rw = spawnSync(process.execPath, [bin, 'serve', 'blk', '--socket-path', sock, '--image', image], { encoding: 'utf8', timeout: 60_000, ...asUser });
    assert.equal(rw.status, EXIT_RUNTIME, rw.stderr);
    assert.match(rw.stderr, /cannot open --image .*disk\.img for reading and writing: permission denied \(EACCES\) \(it cannot be read either, so --read-only would not help\)$/m);
    assert.doesNotMatch(rw.stderr, /give --read-only/);
    const ro = spawnSync(process.execPath, [bin, 'serve', 'blk', '--socket-path', sock, '--image', image, '--read-only'], { encoding: 'utf8', timeout: 60_000, ...asUser });
    assert.equal(ro.status, EXIT_RUNTIME);
    assert.match(ro.stderr, /cannot open --image .*disk\.img for reading: permission denied \(EACCES\)$/m);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('serve blk on a block device node (a loop device): measured, served without a tail warning; its contents probed like a file', async (t) => {
  const dir = tempDir();
  const backing = join(dir, 'backing.img');
  writeFileSync(backing, new Uint8Array(4 << 20));
  const attach = spawnSync('losetup', ['-f', '--show', backing], { encoding: 'utf8' });
  const loop = attach.stdout.trim();
  if (attach.status !== 0 || !loop.startsWith('/dev/loop')) {
    rmSync(dir, { recursive: true, force: true });
    return missingPrerequisite(t, `a loop device (losetup: ${attach.stderr.trim()})`);
  }
  try {
    const sock = join(dir, 'blk.sock');
    const s = startServe(['serve', 'blk', '--socket-path', sock, '--image', loop]);
    try {
      const start = await s.logged(/^serving /);
      assert.deepEqual([start.capacityBytes, start.capacitySectors], [4 << 20, 8192]);
      await s.logged(/^listening on/);
      s.child.kill('SIGTERM');
      assert.equal(await s.exited, EXIT_OK);
      assert.ok(!s.logs().some((l) => l.level >= 40), `no warning: ${s.stderr()}`);
    } finally {
      s.child.kill('SIGKILL');
    }
    // Written through the device node itself (no page cache of the backing file in between).
    const fd = openSync(loop, 'r+');
    writeSync(fd, HEADS[0][1], 0, HEADS[0][1].length, 0);
    fsyncSync(fd);
    closeSync(fd);
    const r = run('serve', 'blk', '--socket-path', sock, '--image', loop);
    assert.equal(r.code, EXIT_RUNTIME, r.err);
    assert.match(r.err, /looks like a qcow2 image/);
  } finally {
    spawnSync('losetup', ['-d', loop]);
    rmSync(dir, { recursive: true, force: true });
  }
});
