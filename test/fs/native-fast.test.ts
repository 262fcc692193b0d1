/**
 * The addon's one-call file-system paths (native/fs.c) that HostDirFs's hot opcodes use:
 * fsStatAt (LOOKUP of a held inode: a stat, nothing opened), fsFstat (GETATTR), fsPreadNowait
 * (READ) and fsPwrite (WRITE); and HostDirFs's LOOKUP answering a held inode with its held fd.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, lstatSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { native } from '../../src/native/index.js';
import { HostDirFs } from '../../src/node/fs/host-dir.js';
import { Errno, FsError, ROOT_INO } from '../../src/fs/vfs.js';

const O_PATH = 0o10000000;
const EXDEV = 18;
const inoOf = (st: Float64Array) => BigInt(st[1]) * 2n ** 32n + BigInt(st[2]);
/** This process's open fds (each call opens one for the listing itself, the same each time). */
const openFds = () => readdirSync('/proc/self/fd').length;

function tree() {
  const base = mkdtempSync(join(tmpdir(), 'virtio-ts-fast-'));
  const root = join(base, 'root');
  mkdirSync(root);
  writeFileSync(join(base, 'outside'), 'secret');
  writeFileSync(join(root, 'file'), 'inside!');
  symlinkSync('../outside', join(root, 'up'));
  return { base, root, done: () => rmSync(base, { recursive: true, force: true }) };
}

test('fsStatAt: the stat of one name beneath a directory fd, nothing opened; a miss, ".." and a symlink are answers, bad arguments throw', () => {
  const n = native();
  const t = tree();
  const dir = openSync(t.root, O_PATH);
  try {
    const st = new Float64Array(17);
    const before = openFds();
    assert.equal(n.fsStatAt(dir, 'file', st), 0);
    assert.equal(openFds(), before, 'no fd left open');
    assert.equal(inoOf(st), lstatSync(join(t.root, 'file'), { bigint: true }).ino);
    assert.equal(st[8], 7, 'size');
    assert.equal(n.fsStatAt(dir, 'up', st), 0);
    assert.equal(st[3] & 0o170000, 0o120000, 'the symlink itself, never its target outside');
    st.fill(-1);
    assert.equal(n.fsStatAt(dir, 'nothing', st), -Errno.ENOENT);
    assert.equal(st[1], -1, 'out untouched on a miss');
    assert.equal(n.fsStatAt(dir, '..', st), -EXDEV, '".." never resolves');
    for (const bad of ['a/b', '', 'x'.repeat(300)]) assert.throws(() => n.fsStatAt(dir, bad, st), (e: NodeJS.ErrnoException) => e.code === 'EINVAL', JSON.stringify(bad));
    assert.throws(() => n.fsStatAt(dir, 'file', new Float64Array(16)), (e: NodeJS.ErrnoException) => e.code === 'EINVAL', 'a short out array');
  } finally {
    closeSync(dir);
    t.done();
  }
});

test('fsFstat, fsPwrite, fsPreadNowait: stat of an fd, a whole write at an offset, a read to the end of the file; errors as -errno or thrown', () => {
  const n = native();
  const t = tree();
  const path = join(t.root, 'file');
  const fd = openSync(path, 'r+');
  const opath = openSync(path, O_PATH);
  try {
    const st = new Float64Array(17);
    assert.equal(n.fsFstat(opath, st), 0, 'an O_PATH fd is enough');
    assert.equal(inoOf(st), lstatSync(path, { bigint: true }).ino);
    assert.equal(n.fsFstat(1 << 20, st), -9, 'EBADF as a number');

    assert.equal(n.fsPwrite(fd, new TextEncoder().encode('OUT'), 2), 3);
    assert.equal(readFileSync(path, 'utf8'), 'inOUTe!');
    assert.equal(n.fsPwrite(fd, new Uint8Array(0), 0), 0);
    assert.throws(() => n.fsPwrite(opath, new Uint8Array(1), 0), (e: NodeJS.ErrnoException) => e.code === 'EBADF', 'an O_PATH fd cannot write');

    const into = new Uint8Array(64).fill(0xee);
    assert.equal(n.fsPreadNowait(fd, into, 64, 0), 7, 'short at the end of the file');
    assert.equal(new TextDecoder().decode(into.subarray(0, 7)), 'inOUTe!');
    assert.equal(into[7], 0xee, 'nothing written past what was read');
    assert.equal(n.fsPreadNowait(fd, into, 3, 4), 3, 'exactly the length asked');
    assert.equal(new TextDecoder().decode(into.subarray(0, 3)), 'Te!');
    assert.equal(n.fsPreadNowait(fd, into, 64, 100), 0, 'past the end');
    assert.throws(() => n.fsPreadNowait(fd, into, 65, 0), (e: NodeJS.ErrnoException) => e.code === 'EINVAL', 'a length past the buffer');
    assert.throws(() => n.fsPreadNowait(opath, into, 1, 0), (e: NodeJS.ErrnoException) => e.code === 'EBADF');
  } finally {
    closeSync(fd);
    closeSync(opath);
    t.done();
  }
});

test('HostDirFs LOOKUP of a held inode answers the held node (no fd kept); a name moved to another inode is that inode, the old node stays its own', () => {
  const t = tree();
  const fs = HostDirFs.open(t.root);
  try {
    const a = fs.lookup(ROOT_INO, 'file');
    const held = fs.counts.nodes;
    const fds = openFds();
    for (let i = 0; i < 50; i++) assert.equal(fs.lookup(ROOT_INO, 'file').ino, a.ino, 'the same node');
    assert.equal(openFds(), fds, 'no fd kept by a lookup of a held inode');
    assert.equal(fs.counts.nodes, held);
    assert.equal(fs.lookup(ROOT_INO, 'file').size, 7, 'its current attributes');
    // Another inode takes the name: the lookup opens it (a new node) and the held one stays.
    writeFileSync(join(t.root, 'other'), 'another inode');
    renameSync(join(t.root, 'other'), join(t.root, 'file'));
    const b = fs.lookup(ROOT_INO, 'file');
    assert.notEqual(b.ino, a.ino);
    assert.equal(b.size, 13);
    assert.equal(fs.counts.nodes, held + 1);
    assert.equal(fs.getattr(a.ino).nlink, 0, 'the old node is still its inode (unlinked, held open)');
    assert.throws(() => fs.lookup(ROOT_INO, 'nothing'), (e: unknown) => e instanceof FsError && e.errno === Errno.ENOENT);
    assert.equal(fs.lookup(ROOT_INO, 'up').mode & 0o170000, 0o120000, 'a symlink is looked up as itself');
  } finally {
    fs.close();
    t.done();
  }
});

test('READ and FSYNC of a file on tmpfs: answered at once on the event loop (plain pread: tmpfs refuses RWF_NOWAIT), not sent to the thread pool', (t) => {
  const shm = '/dev/shm';
  const n = native();
  let base: string;
  try {
    base = mkdtempSync(join(shm, 'virtio-ts-fast-'));
  } catch {
    t.skip('no /dev/shm');
    return;
  }
  try {
    const dirFd = openSync(base, O_PATH);
    const memory = n.fsMemoryFs(dirFd);
    closeSync(dirFd);
    if (!memory) {
      t.skip('/dev/shm is not tmpfs here');
      return;
    }
    writeFileSync(join(base, 'f'), 'in memory');
    const fd = openSync(join(base, 'f'), 'r');
    try {
      assert.equal(n.fsPreadNowait(fd, new Uint8Array(64), 64, 0, true), 9, 'plain: the bytes, whatever RWF_NOWAIT would say');
    } finally {
      closeSync(fd);
    }
    const fs = HostDirFs.open(base);
    try {
      const { ino } = fs.lookup(ROOT_INO, 'f');
      const { fh } = fs.open(ino, 0);
      const got = fs.read(ino, fh, 0, 4096);
      assert.ok(got instanceof Uint8Array, 'answered now, not a Promise');
      assert.equal(Buffer.from(got).toString(), 'in memory');
      assert.deepEqual(fs.stats, { cachedReads: 1, poolReads: 0 });
      assert.equal(fs.fsync(ino, fh, false), undefined, 'FSYNC on tmpfs answered now (nothing to write back), not on the thread pool');
      fs.release(ino, fh);
    } finally {
      fs.close();
    }
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});

test('fsCreate: CREATE in one call (open beneath the directory, the O_PATH fd from the open file, its stat); a symlink is not followed, an existing name under O_EXCL and ".." are answers with nothing left open, bad arguments throw', () => {
  const n = native();
  const t = tree();
  const dir = openSync(t.root, O_PATH);
  const O_WRONLY = 1;
  const O_EXCL = 0o200;
  const ELOOP = 40;
  const EEXIST = 17;
  try {
    const st = new Float64Array(18);
    const before = openFds();
    const fd = n.fsCreate(dir, 'new', O_WRONLY, 0o640, st);
    assert.ok(fd >= 0);
    const pathFd = st[17];
    assert.ok(pathFd >= 0 && pathFd !== fd);
    assert.equal(openFds(), before + 2, 'the open fd and the O_PATH fd');
    const host = lstatSync(join(t.root, 'new'), { bigint: true });
    assert.equal(inoOf(st), host.ino, 'the stat is the new file');
    assert.equal(st[3], Number(host.mode));
    assert.equal(n.fsPwrite(fd, new TextEncoder().encode('abc'), 0), 3, 'the open fd writes');
    const again = new Float64Array(17);
    assert.equal(n.fsFstat(pathFd, again), 0);
    assert.equal(inoOf(again), host.ino, 'the O_PATH fd is the same inode');
    n.close(fd);
    n.close(pathFd);
    assert.equal(readFileSync(join(t.root, 'new'), 'utf8'), 'abc');
    // Answers, nothing left open: an existing name under O_EXCL, the escaping symlink, "..".
    assert.equal(n.fsCreate(dir, 'file', O_WRONLY | O_EXCL, 0o600, st), -EEXIST);
    assert.equal(n.fsCreate(dir, 'up', O_WRONLY, 0o600, st), -ELOOP, 'a symlink is never followed');
    assert.ok(n.fsCreate(dir, '..', O_WRONLY, 0o600, st) < 0);
    assert.equal(openFds(), before);
    assert.equal(readFileSync(join(t.base, 'outside'), 'utf8'), 'secret', 'nothing written outside');
    // Bad arguments: a name with '/', an out array too short.
    assert.throws(() => n.fsCreate(dir, 'a/b', O_WRONLY, 0o600, st));
    assert.throws(() => n.fsCreate(dir, 'x', O_WRONLY, 0o600, new Float64Array(17)));
  } finally {
    closeSync(dir);
    t.done();
  }
});
