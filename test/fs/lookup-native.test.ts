/**
 * The addon's fsLookup (native/fs.c): FUSE LOOKUP in one call (openat2 + fstat), with errors as
 * -errno, and FsError.quick, the stackless error HostDirFs throws for a missing name.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, lstatSync, mkdtempSync, openSync, rmSync, symlinkSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { native } from '../../src/native/index.js';
import { Errno, FsError } from '../../src/fs/vfs.js';

const O_PATH = 0o10000000;
const EXDEV = 18;

test('fsLookup: an O_PATH fd and its stat in one call; a miss, ".." and a symlink beneath', () => {
  const n = native();
  const base = mkdtempSync(join(tmpdir(), 'virtio-ts-lookup-'));
  const root = join(base, 'root');
  mkdirSync(root);
  writeFileSync(join(base, 'outside'), 'secret');
  writeFileSync(join(root, 'file'), 'inside!');
  symlinkSync('../outside', join(root, 'up'));
  const dir = openSync(root, O_PATH);
  try {
    const st = new Float64Array(17);
    const fd = n.fsLookup(dir, 'file', st);
    assert.ok(fd >= 0, `fd ${fd}`);
    const host = lstatSync(join(root, 'file'), { bigint: true });
    assert.equal(BigInt(st[1]) * 2n ** 32n + BigInt(st[2]), host.ino, 'the stat is the file\'s');
    assert.equal(st[8], 7, 'size');
    assert.equal(st[3] & 0o170000, 0o100000, 'a regular file');
    n.close(fd);

    st.fill(-1);
    assert.equal(n.fsLookup(dir, 'nothing', st), -Errno.ENOENT, 'a missing name is -ENOENT, not a throw');
    assert.equal(st[1], -1, 'out untouched on a miss');
    assert.equal(n.fsLookup(dir, '..', st), -EXDEV, '".." never resolves');

    // A symlink is the symlink's own inode, never its target outside the root.
    const l = n.fsLookup(dir, 'up', st);
    assert.ok(l >= 0);
    assert.equal(st[3] & 0o170000, 0o120000, 'the symlink itself');
    assert.equal(BigInt(st[1]) * 2n ** 32n + BigInt(st[2]), lstatSync(join(root, 'up'), { bigint: true }).ino);
    n.close(l);

    assert.equal(n.fsLookup(dir, 'x'.repeat(256), st), -Errno.ENAMETOOLONG, 'one byte past NAME_MAX: the kernel says so');
    // A name with '/', an empty one or one far past 255 bytes is a bad argument (a throw).
    for (const bad of ['a/b', '', 'x'.repeat(300)]) assert.throws(() => n.fsLookup(dir, bad, st), (e: NodeJS.ErrnoException) => e.code === 'EINVAL', JSON.stringify(bad));
    assert.throws(() => n.fsLookup(dir, 'file', new Float64Array(16)), (e: NodeJS.ErrnoException) => e.code === 'EINVAL', 'a short out array');
  } finally {
    closeSync(dir);
    rmSync(base, { recursive: true, force: true });
  }
});

test('FsError.quick: the errno, no stack frames, and the stack trace limit left as it was', () => {
  const before = Error.stackTraceLimit;
  const e = FsError.quick(Errno.ENOENT);
  assert.ok(e instanceof FsError);
  assert.equal(e.errno, Errno.ENOENT);
  assert.equal(e.kind, 'errno');
  assert.ok(!/\n\s+at /.test(e.stack ?? ''), 'no frames');
  assert.equal(Error.stackTraceLimit, before);
  assert.ok(/\n\s+at /.test(new FsError(Errno.ENOENT).stack ?? ''), 'an ordinary FsError still has its stack');
});
