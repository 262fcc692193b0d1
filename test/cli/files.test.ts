// `serve --socket-path` never deletes or changes a file it did not create: only a unix socket
// is ever unlinked there, and only once a connect to it is refused (stale); at shutdown only
// the socket this process made (same inode) is removed. The real binary, real files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Feature } from '../../src/spec/constants.js';
import { bit } from '../../src/spec/features.js';
import { EXIT_OK, EXIT_RUNTIME } from '../../src/cli/exit-codes.js';
import { getFeatures, n, run, startServe, until } from './helpers.js';

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'virtio-ts-files-'));
}

/** A snapshot of a path (lstat, not following links) and, for a file, its bytes. */
function snapshot(path: string) {
  const st = lstatSync(path);
  return { ino: st.ino, mode: st.mode, size: st.size, mtimeMs: st.mtimeMs, bytes: st.isFile() ? readFileSync(path) : null };
}

test('serve --socket-path naming the disk image itself: refused with exit 3, the image byte-for-byte and mtime unchanged', () => {
  const dir = tempDir();
  try {
    const image = join(dir, 'disk.img');
    const content = new Uint8Array(1 << 20).map((_, i) => (i * 7) & 0xff);
    writeFileSync(image, content);
    utimesSync(image, new Date(2020, 0, 1), new Date(2020, 0, 1)); // an mtime that no write of ours could produce
    const before = snapshot(image);
    for (const type of ['blk', 'rng']) {
      const r = type === 'blk' ? run('serve', 'blk', '--socket-path', image, '--image', image) : run('serve', 'rng', '--socket-path', image);
      assert.equal(r.code, EXIT_RUNTIME, r.err);
      assert.match(r.err, /is a regular file \(1048576 bytes\), not a socket: refusing to replace it/);
      assert.doesNotMatch(r.err, /\n\s+at /, 'no stack trace');
      assert.deepEqual(snapshot(image), before, 'the image is untouched');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('serve --socket-path on a directory, a symlink (to a file, to a socket, dangling), a FIFO, a character device: refused, untouched', async () => {
  const dir = tempDir();
  const live = startServe(['serve', 'rng', '--socket-path', join(dir, 'live.sock')]);
  try {
    await live.logged(/^listening on/); // not the file: it appears at bind(), before listen()
    const target = join(dir, 'target');
    writeFileSync(target, 'keep me');
    const cases: [string, () => void, RegExp][] = [
      ['dir', () => mkdirSync(join(dir, 'dir')), /is a directory, not a socket/],
      ['link-to-file', () => symlinkSync(target, join(dir, 'link-to-file')), /is a symbolic link, not a socket/],
      ['link-to-socket', () => symlinkSync(join(dir, 'live.sock'), join(dir, 'link-to-socket')), /is a symbolic link, not a socket/],
      ['dangling', () => symlinkSync(join(dir, 'nowhere'), join(dir, 'dangling')), /is a symbolic link, not a socket/],
      ['fifo', () => execFileSync('mkfifo', [join(dir, 'fifo')]), /is a FIFO, not a socket/],
    ];
    for (const [name, make, message] of cases) {
      make();
      const path = join(dir, name);
      const before = snapshot(path);
      const r = run('serve', 'rng', '--socket-path', path);
      assert.equal(r.code, EXIT_RUNTIME, `${name}: ${r.err}`);
      assert.match(r.err, message, name);
      assert.deepEqual(snapshot(path), before, `${name} untouched`);
    }
    // A device node (not made here: /dev/null exists everywhere).
    const devNull = snapshot('/dev/null');
    const r = run('serve', 'rng', '--socket-path', '/dev/null');
    assert.equal(r.code, EXIT_RUNTIME);
    assert.match(r.err, /\/dev\/null is a character device, not a socket/);
    assert.equal(snapshot('/dev/null').ino, devNull.ino);
    assert.equal(readFileSync(target, 'utf8'), 'keep me');
    assert.ok((await getFeatures(join(dir, 'live.sock'))) & bit(Feature.VERSION_1), 'the live server behind the symlink still answers');
  } finally {
    live.child.kill('SIGTERM');
    await live.exited;
    rmSync(dir, { recursive: true, force: true });
  }
});

test('serve --socket-path: a live server\'s socket is refused (exit 3, kept, still answering); a stale one (connect refused) is replaced', async () => {
  const dir = tempDir();
  const path = join(dir, 'rng.sock');
  const first = startServe(['serve', 'rng', '--socket-path', path]);
  try {
    await first.logged(/^listening on/);
    const before = snapshot(path);
    // One front-end at a time: each connection below waits until the server saw the last go.
    const gone = () => first.logs().filter((l) => /waiting for the next one/.test(l.msg)).length;
    assert.ok((await getFeatures(path)) & bit(Feature.VERSION_1));
    await until(() => gone() >= 1, 'the first server to see the front-end go');
    const second = startServe(['serve', 'rng', '--socket-path', path]);
    assert.equal(await second.exited, EXIT_RUNTIME);
    assert.match(second.stderr(), /--socket-path .* is busy: another server is listening on it \(left untouched\)/);
    assert.deepEqual(snapshot(path), before, 'the live server keeps its socket (same inode)');
    // The second server's probe was a connection the first one served: wait until it saw it go.
    await until(() => gone() >= 2, 'the first server to see the probe go');
    assert.ok((await getFeatures(path)) & bit(Feature.VERSION_1), 'and still answers');
    first.child.kill('SIGKILL');
    await first.exited;
    assert.ok(existsSync(path), 'a killed server leaves its socket file');
    const third = startServe(['serve', 'rng', '--socket-path', path]);
    try {
      await third.logged(/^listening on/);
      assert.ok(third.logs().some((l) => /was left by a server that is gone \(connect refused\); replacing it/.test(l.msg)));
      assert.ok((await getFeatures(path)) & bit(Feature.VERSION_1), 'the restarted server answers on the same path');
    } finally {
      third.child.kill('SIGTERM');
      assert.equal(await third.exited, EXIT_OK);
    }
    assert.equal(existsSync(path), false, 'its own socket removed at shutdown');
  } finally {
    first.child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('serve shutdown removes only the socket it created: a socket another server put at the path since is left alone', async () => {
  const dir = tempDir();
  const path = join(dir, 'rng.sock');
  const s = startServe(['serve', 'rng', '--socket-path', path]);
  let other = -1;
  try {
    await s.logged(/^listening on/);
    // Someone else takes the path: the old name is unlinked, a new socket is bound there.
    unlinkSync(path);
    other = n.listen(path);
    const theirs = snapshot(path);
    s.child.kill('SIGTERM');
    assert.equal(await s.exited, EXIT_OK);
    assert.deepEqual(snapshot(path), theirs, 'the other socket is still there, same inode');
    const stop = s.logs().find((l) => l.event === 'stop')!;
    assert.equal(stop.socketFile, 'replaced');
    assert.match(stop.msg, /is no longer this server's socket, left alone/);
    // The path gone entirely at shutdown: nothing to remove, no error.
    const t = startServe(['serve', 'rng', '--socket-path', join(dir, 'b.sock')]);
    await t.logged(/^listening on/);
    unlinkSync(join(dir, 'b.sock'));
    t.child.kill('SIGTERM');
    assert.equal(await t.exited, EXIT_OK);
    assert.equal(t.logs().find((l) => l.event === 'stop')!.socketFile, 'gone');
  } finally {
    s.child.kill('SIGKILL');
    if (other >= 0) n.close(other);
    rmSync(dir, { recursive: true, force: true });
  }
});
