// HostDirFs (src/node/fs/host-dir.ts) on a real temporary directory: every operation of the
// provider interface against real files and directories, checked on the host with Node's fs;
// and the hostile cases, which must all stay inside the shared root: a symlink to /etc/passwd,
// `..` and names with '/', absolute and dangling symlinks, a symlink swapped in for a directory
// between two lookups (deterministically, then racing a worker thread), and directories renamed
// back and forth while files are created in them. Beside the root, in the same temporary folder,
// an "outside" directory holds a secret: no test may read it or change anything in it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  closeSync,
  existsSync,
  openSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { HostDirFs } from '../../src/node/fs/host-dir.js';
import { Errno } from '../../src/fs/errno.js';
import { FsError, ROOT_INO, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFCHR, RenameFlags, FallocMode, Whence, LockType, type FsContext, type FsProvider } from '../../src/fs/vfs.js';
import { native } from '../../src/native/index.js';

const ctx: FsContext = { uid: 0, gid: 0, pid: 1 };
const O_RDONLY = 0;
const O_WRONLY = 1;
const O_RDWR = 2;
const O_TRUNC = 0o1000;
const O_EXCL = 0o200;
const SECRET = 'OUTSIDE-SECRET\n';
const isRoot = process.getuid?.() === 0;

interface Fixture {
  base: string;
  root: string;
  outside: string;
  /** Typed as the server sees it too (every operation, with its FsContext). */
  fs: HostDirFs & Required<FsProvider>;
  /** md5 of every file under `outside` and its listing: compared before and after. */
  outsideState(): string;
}

/** Runs `fn` with a fixture, closes and removes it afterwards. */
async function withFixture(fn: (f: Fixture) => void | Promise<void>, options: { readOnly?: boolean; populate?: (root: string, outside: string) => void } = {}): Promise<void> {
  const base = mkdtempSync(join(tmpdir(), 'virtio-ts-hostdir-'));
  const root = join(base, 'root');
  const outside = join(base, 'outside');
  mkdirSync(root);
  mkdirSync(outside);
  writeFileSync(join(outside, 'secret.txt'), SECRET);
  options.populate?.(root, outside);
  const outsideState = () => {
    const walk = (dir: string): string[] =>
      readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
        const p = join(dir, e.name);
        const st = lstatSync(p);
        const what = `${p.slice(base.length)} ${st.mode.toString(8)} ${st.uid}:${st.gid} ${st.mtimeMs} ${st.size}`;
        return e.isDirectory() ? [what, ...walk(p)] : [what + (e.isFile() ? ' ' + createHash('md5').update(readFileSync(p)).digest('hex') : '')];
      });
    return walk(outside).join('\n');
  };
  const fs = HostDirFs.open(root, { readOnly: options.readOnly }) as HostDirFs & Required<FsProvider>;
  const before = outsideState();
  try {
    await fn({ base, root, outside, fs, outsideState });
    assert.equal(outsideState(), before, 'nothing outside the shared root changed');
  } finally {
    fs.close();
    rmSync(base, { recursive: true, force: true });
  }
}

/** Asserts that `fn` throws (or rejects with) an FsError with this errno. */
async function fails(fn: () => unknown, errno: number | number[], what?: string): Promise<void> {
  const want = Array.isArray(errno) ? errno : [errno];
  try {
    await fn();
  } catch (err) {
    assert.ok(err instanceof FsError, `${what ?? 'the call'}: an FsError, got ${String(err)}`);
    assert.equal(err.kind, 'errno');
    assert.ok(want.includes(err.errno), `${what ?? 'the call'}: errno ${err.errno}, want ${want.join(' or ')}`);
    return;
  }
  assert.fail(`${what ?? 'the call'} succeeded; want errno ${want.join(' or ')}`);
}

const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

test('HostDirFs: create, write, read, getattr, setattr, readdir, rename, link, symlink, unlink, rmdir on real files, seen on the host', async () => {
  await withFixture(async ({ root, fs }) => {
    // mkdir and create: the host has them, with the mode asked for (umask applied, this
    // process's own umask not).
    const d = fs.mkdir(ROOT_INO, 'dir', 0o775, 0o002, ctx);
    assert.equal(d.mode & S_IFMT, S_IFDIR);
    assert.equal(statSync(join(root, 'dir')).mode & 0o777, 0o775);
    const c = fs.create(d.ino, 'a.txt', S_IFREG | 0o664, 0o022, O_RDWR, ctx);
    assert.equal(statSync(join(root, 'dir/a.txt')).mode & 0o777, 0o644);
    assert.equal(c.attr.ino, statSync(join(root, 'dir/a.txt')).ino, 'the host inode number');
    assert.equal(fs.write(c.attr.ino, c.fh, 0, bytes('hello, ')), 7);
    assert.equal(fs.write(c.attr.ino, c.fh, 7, bytes('world')), 5);
    assert.equal(readFileSync(join(root, 'dir/a.txt'), 'utf8'), 'hello, world');
    assert.equal(text(await fs.read(c.attr.ino, c.fh, 7, 100)), 'world', 'a short read at the end of the file');
    assert.equal(fs.getattr(c.attr.ino).size, 12);
    await fs.fsync(c.attr.ino, c.fh, false);
    await fs.fsync(c.attr.ino, c.fh, true);
    fs.flush(c.attr.ino, c.fh, 1n);
    fs.release(c.attr.ino, c.fh);
    // setattr: truncate, chmod, times, owner.
    const when = { sec: 1_000_000_000, nsec: 123_456_789 };
    const a = fs.setattr(c.attr.ino, null, { size: 5, mode: 0o600, mtime: when, atime: when });
    assert.equal(a.size, 5);
    assert.equal(a.mode & 0o7777, 0o600);
    assert.equal(a.mtime, when.sec);
    assert.equal(a.mtimeNsec, when.nsec);
    const hs = statSync(join(root, 'dir/a.txt'), { bigint: true });
    assert.equal(hs.size, 5n);
    assert.equal(hs.mtimeNs, 1_000_000_000_123_456_789n);
    assert.equal(readFileSync(join(root, 'dir/a.txt'), 'utf8'), 'hello');
    if (isRoot) {
      fs.setattr(c.attr.ino, null, { uid: 1234, gid: 5678 });
      assert.equal(statSync(join(root, 'dir/a.txt')).uid, 1234);
      // New files belong to the caller (the server runs as root here).
      const owned = fs.mkdir(ROOT_INO, 'owned', 0o755, 0, { uid: 4321, gid: 8765, pid: 2 });
      assert.equal(owned.uid, 4321);
      assert.equal(statSync(join(root, 'owned')).gid, 8765);
    }
    // open with O_TRUNC, O_APPEND.
    const o = fs.open(c.attr.ino, O_WRONLY | 0o2000);
    fs.write(c.attr.ino, o.fh, 0, bytes('!'));
    fs.release(c.attr.ino, o.fh);
    assert.equal(readFileSync(join(root, 'dir/a.txt'), 'utf8'), 'hello!', 'O_APPEND appends whatever the offset');
    const t = fs.open(c.attr.ino, O_RDWR | O_TRUNC);
    fs.release(c.attr.ino, t.fh);
    assert.equal(statSync(join(root, 'dir/a.txt')).size, 0);
    // lookup finds the same node; a hard link has the same number, nlink 2.
    assert.equal(fs.lookup(d.ino, 'a.txt').ino, c.attr.ino);
    const l = fs.link(c.attr.ino, ROOT_INO, 'hard');
    assert.equal(l.nlink, 2);
    assert.equal(fs.lookup(ROOT_INO, 'hard').ino, c.attr.ino);
    assert.equal(statSync(join(root, 'hard')).ino, statSync(join(root, 'dir/a.txt')).ino);
    // symlink and readlink: the text as given, on the host too.
    const s = fs.symlink(ROOT_INO, 'sym', '/etc/passwd', ctx);
    assert.equal(s.mode & S_IFMT, S_IFLNK);
    assert.equal(fs.readlink(s.ino), '/etc/passwd');
    assert.equal(readlinkSync(join(root, 'sym')), '/etc/passwd');
    // readdir: every entry, with cookies that continue where they left off.
    for (let i = 0; i < 300; i++) writeFileSync(join(root, 'dir', `f${i}`), '');
    const h = fs.opendir(d.ino);
    const names: string[] = [];
    let off = 0;
    for (;;) {
      const got = fs.readdir(d.ino, h.fh, off, 37);
      if (got.length === 0) break;
      for (const e of got) names.push(e.name);
      off = got[got.length - 1].off;
    }
    assert.deepEqual(names.sort(), ['.', '..', 'a.txt', ...Array.from({ length: 300 }, (_, i) => `f${i}`)].sort());
    // A cookie from the middle (a seekdir): the same entries after it as the first pass gave.
    const first = fs.readdir(d.ino, h.fh, 0, 1000).map((e) => e.name);
    const later = fs.readdir(d.ino, h.fh, 100, 1000).map((e) => e.name);
    assert.deepEqual(later, first.slice(100));
    // A caller that used only part of a batch (the FUSE server stops at the reply's size)
    // continues from the last cookie it used: nothing lost, nothing twice.
    const part = fs.readdir(d.ino, h.fh, 0, 50);
    const rest = fs.readdir(d.ino, h.fh, part[19].off, 1000);
    assert.deepEqual([...part.slice(0, 20), ...rest].map((e) => e.name), first);
    const dot = fs.readdir(d.ino, h.fh, 0, 1000).find((e) => e.name === '..')!;
    assert.equal(dot.ino, d.ino, "'..' carries the directory's own number, not a host one");
    fs.releasedir(d.ino, h.fh);
    // rename, RENAME_NOREPLACE, RENAME_EXCHANGE.
    fs.rename(d.ino, 'f0', ROOT_INO, 'moved', 0);
    assert.ok(existsSync(join(root, 'moved')) && !existsSync(join(root, 'dir/f0')));
    await fails(() => fs.rename(d.ino, 'f1', ROOT_INO, 'moved', RenameFlags.NOREPLACE), Errno.EEXIST);
    writeFileSync(join(root, 'dir/f1'), 'one');
    writeFileSync(join(root, 'moved'), 'zero');
    fs.rename(d.ino, 'f1', ROOT_INO, 'moved', RenameFlags.EXCHANGE);
    assert.equal(readFileSync(join(root, 'moved'), 'utf8'), 'one');
    assert.equal(readFileSync(join(root, 'dir/f1'), 'utf8'), 'zero');
    // unlink, rmdir (ENOTEMPTY first).
    fs.unlink(ROOT_INO, 'moved');
    assert.ok(!existsSync(join(root, 'moved')));
    await fails(() => fs.rmdir(ROOT_INO, 'dir'), Errno.ENOTEMPTY);
    rmSync(join(root, 'dir'), { recursive: true });
    fs.mkdir(ROOT_INO, 'empty', 0o755, 0, ctx);
    fs.rmdir(ROOT_INO, 'empty');
    assert.ok(!existsSync(join(root, 'empty')));
    await fails(() => fs.lookup(ROOT_INO, 'empty'), Errno.ENOENT);
    // statfs of the host file system.
    const sf = fs.statfs(ROOT_INO);
    assert.ok(sf.blocks > 0 && sf.bsize > 0 && sf.namelen === 255);
  });
});

test('HostDirFs directIo: every open and create answers FOPEN_DIRECT_IO (the guest keeps no page cache); by default none does', async () => {
  await withFixture(async ({ root, fs }) => {
    const c = fs.create(ROOT_INO, 'f', S_IFREG | 0o644, 0, O_RDWR, ctx);
    assert.equal(c.directIo, false);
    fs.release(c.attr.ino, c.fh);
    const direct = HostDirFs.open(root, { directIo: true });
    try {
      const ino = direct.lookup(ROOT_INO, 'f').ino;
      const o = direct.open(ino, O_RDONLY);
      assert.equal(o.directIo, true);
      direct.release(ino, o.fh);
      const c2 = direct.create(ROOT_INO, 'g', S_IFREG | 0o644, 0, O_RDWR, ctx);
      assert.equal(c2.directIo, true);
      direct.release(c2.attr.ino, c2.fh);
    } finally {
      direct.close();
    }
  });
});

test('HostDirFs create: when the mode change after the open fails, the guest gets the errno and no fd stays open (the open file and its O_PATH node fd both closed)', async () => {
  // The guest asks for 0666 with umask 0; this process's umask 022 makes the open create 0644,
  // so create must chmod the new file (as any user; the caller is this process's own user, so
  // no chown runs even as root). The addon's chmod is made to fail as a refused fchmod would.
  const umask = process.umask(0o022);
  const me: FsContext = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, pid: 1 };
  try {
    await withFixture(async ({ fs }) => {
      const inner = fs as unknown as { n: Record<string, unknown> };
      const real = inner.n;
      // (The addon object is frozen: the override is an own property of an object inheriting it.)
      inner.n = Object.create(real, {
        fsChmod: {
          value: () => {
            throw Object.assign(new Error('EPERM: operation not permitted'), { code: 'EPERM' });
          },
        },
      }) as Record<string, unknown>;
      try {
        const fds = () => readdirSync('/proc/self/fd').length;
        // Warm: the first create may open lasting fds (directory nodes); count after it.
        await fails(() => fs.create(ROOT_INO, 'a', S_IFREG | 0o666, 0, O_RDWR, me), Errno.EPERM, 'create with chmod refused');
        const before = fds();
        for (let i = 0; i < 8; i++) {
          await fails(() => fs.create(ROOT_INO, `b${i}`, S_IFREG | 0o666, 0, O_RDWR, me), Errno.EPERM, 'create with chmod refused');
        }
        assert.equal(fds(), before, 'eight failed creates left no fd open');
      } finally {
        inner.n = real;
      }
    });
  } finally {
    process.umask(umask);
  }
});

test('HostDirFs: inode numbers are the host numbers, held per (dev, ino), released by forget; unknown numbers are ESTALE', async () => {
  await withFixture(async ({ root, fs }) => {
    writeFileSync(join(root, 'x'), 'x');
    const before = fs.counts.nodes;
    const a = fs.lookup(ROOT_INO, 'x');
    assert.equal(a.ino, statSync(join(root, 'x')).ino);
    assert.equal(fs.lookup(ROOT_INO, 'x').ino, a.ino, 'the same node, not a second one');
    assert.equal(fs.counts.nodes, before + 1);
    fs.forget(a.ino);
    assert.equal(fs.counts.nodes, before);
    await fails(() => fs.getattr(a.ino, null, ctx), 116, 'a forgotten number');
    await fails(() => fs.getattr(987654321, null, ctx), 116, 'a number never handed out');
    assert.equal(fs.lookup(ROOT_INO, 'x').ino, a.ino, 'the same number after forget and lookup again');
    fs.forget(ROOT_INO); // the root is never dropped
    assert.equal(fs.getattr(ROOT_INO).mode & S_IFMT, S_IFDIR);
    await fails(() => fs.read(a.ino, 999, 0, 10, ctx), Errno.EBADF, 'an unknown handle');
  });
});

test('HostDirFs: xattrs (user. only), fallocate, SEEK_DATA/SEEK_HOLE, POSIX locks per owner', async () => {
  await withFixture(async ({ root, fs }) => {
    const c = fs.create(ROOT_INO, 'f', S_IFREG | 0o644, 0, O_RDWR, ctx);
    const ino = c.attr.ino;
    fs.setxattr(ino, 'user.color', bytes('blue'), 0);
    assert.equal(text(fs.getxattr(ino, 'user.color')), 'blue');
    assert.deepEqual(fs.listxattr(ino), ['user.color']);
    await fails(() => fs.setxattr(ino, 'user.color', bytes('red'), 1 /* XATTR_CREATE */), Errno.EEXIST);
    // On the host: the file's own xattr.
    const hostFd = openSync(join(root, 'f'), 'r');
    const value = new Uint8Array(16);
    assert.equal(text(value.subarray(0, native().fsGetxattr(hostFd, 'user.color', value))), 'blue');
    closeSync(hostFd);
    // Namespaces that would act on the host are refused.
    await fails(() => fs.setxattr(ino, 'security.capability', new Uint8Array(20), 0), Errno.EOPNOTSUPP);
    await fails(() => fs.setxattr(ino, 'trusted.x', bytes('1'), 0), Errno.EOPNOTSUPP);
    await fails(() => fs.getxattr(ino, 'security.selinux'), Errno.ENODATA);
    // The FUSE server's throw-free forms answer the same misses with the errno itself.
    assert.equal(fs.getxattrErrno(ino, 'security.capability'), Errno.ENODATA);
    assert.equal(text(fs.getxattrErrno(ino, 'user.color') as Uint8Array), 'blue');
    assert.equal(fs.lookupErrno(ROOT_INO, 'no such name'), Errno.ENOENT);
    fs.removexattr(ino, 'user.color');
    await fails(() => fs.getxattr(ino, 'user.color'), Errno.ENODATA);
    // fallocate: allocate 1 MiB, punch a hole, find data and holes.
    fs.fallocate(ino, c.fh, 0, 1 << 20, 0);
    assert.equal(statSync(join(root, 'f')).size, 1 << 20);
    fs.write(ino, c.fh, 0, new Uint8Array(4096).fill(7));
    fs.write(ino, c.fh, 512 * 1024, new Uint8Array(4096).fill(8));
    fs.fallocate(ino, c.fh, 64 * 1024, 256 * 1024, FallocMode.PUNCH_HOLE | FallocMode.KEEP_SIZE);
    assert.equal(fs.lseek(ino, c.fh, 0, Whence.SEEK_DATA), 0);
    const hole = fs.lseek(ino, c.fh, 0, Whence.SEEK_HOLE);
    assert.ok(hole <= 64 * 1024, `first hole at ${hole}`);
    assert.ok(fs.lseek(ino, c.fh, 64 * 1024, Whence.SEEK_DATA) >= 64 * 1024 + 256 * 1024);
    await fails(() => fs.lseek(ino, c.fh, 2 << 20, Whence.SEEK_DATA), Errno.ENXIO);
    await fails(() => fs.fallocate(ino, c.fh, 0, 10, 0x40), Errno.EOPNOTSUPP);
    // Locks: owner 1 holds a write lock on [0, 99]; owner 2 conflicts there, not after it.
    const c2 = fs.open(ino, O_RDWR);
    fs.setlk(ino, c.fh, 1n, { start: 0, end: 99, type: LockType.F_WRLCK, pid: 10 }, false, ctx);
    await fails(() => fs.setlk(ino, c2.fh, 2n, { start: 50, end: 60, type: LockType.F_RDLCK, pid: 11 }, false, ctx), Errno.EAGAIN);
    const g = fs.getlk(ino, c2.fh, 2n, { start: 0, end: Infinity, type: LockType.F_WRLCK, pid: 11 });
    assert.deepEqual([g.type, g.start, g.end], [LockType.F_WRLCK, 0, 99]);
    assert.equal(fs.getlk(ino, c.fh, 1n, { start: 0, end: 10, type: LockType.F_WRLCK, pid: 10 }).type, LockType.F_UNLCK, 'its own lock does not conflict');
    fs.setlk(ino, c2.fh, 2n, { start: 100, end: Infinity, type: LockType.F_WRLCK, pid: 11 }, false, ctx);
    // A waiting lock is granted once the holder's close (flush) drops its locks.
    const waiting = fs.setlk(ino, c2.fh, 2n, { start: 0, end: 99, type: LockType.F_WRLCK, pid: 11 }, true, ctx);
    assert.ok(waiting instanceof Promise);
    fs.flush(ino, c.fh, 1n);
    await waiting;
    // And a waiting lock is interrupted by its signal (FUSE_INTERRUPT).
    const ac = new AbortController();
    const blocked = fs.setlk(ino, c.fh, 1n, { start: 0, end: 0, type: LockType.F_RDLCK, pid: 10 }, true, ctx, ac.signal);
    ac.abort();
    await fails(() => blocked, Errno.EINTR);
    fs.release(ino, c.fh);
    fs.release(ino, c2.fh);
  });
});

test('HostDirFs hostile: a symlink to /etc/passwd is only ever the symlink (no open, read, truncate, chmod, xattr or lookup through it)', async () => {
  const passwd = readFileSync('/etc/passwd');
  const passwdStat = statSync('/etc/passwd');
  await withFixture(
    async ({ root, outside, fs }) => {
      const l = fs.lookup(ROOT_INO, 'evil');
      assert.equal(l.mode & S_IFMT, S_IFLNK);
      assert.equal(l.size, '/etc/passwd'.length, "the link's own size");
      assert.equal(fs.readlink(l.ino), '/etc/passwd');
      await fails(() => fs.open(l.ino, O_RDONLY, ctx), Errno.ELOOP, 'open');
      await fails(() => fs.setattr(l.ino, null, { size: 0 }, ctx), Errno.EINVAL, 'truncate');
      await fails(() => fs.setattr(l.ino, null, { mode: 0o777 }, ctx), Errno.EOPNOTSUPP, 'chmod');
      await fails(() => fs.getxattr(l.ino, 'user.x', ctx), Errno.ENODATA, 'getxattr');
      await fails(() => fs.setxattr(l.ino, 'user.x', bytes('1'), 0, ctx), [Errno.EPERM, Errno.EOPNOTSUPP], 'setxattr on a symlink');
      await fails(() => fs.lookup(l.ino, 'x', ctx), Errno.ENOTDIR, 'lookup beneath');
      await fails(() => fs.opendir(l.ino, 0, ctx), Errno.ENOTDIR, 'opendir');
      await fails(() => fs.create(ROOT_INO, 'evil', S_IFREG | 0o644, 0, O_RDWR | O_TRUNC, ctx), Errno.ELOOP, 'create over it (no O_EXCL)');
      await fails(() => fs.create(ROOT_INO, 'evil', S_IFREG | 0o644, 0, O_RDWR | O_EXCL, ctx), Errno.EEXIST, 'create over it (O_EXCL)');
      // Times and ownership of the link itself: passwd keeps its own.
      fs.setattr(l.ino, null, { mtime: { sec: 1, nsec: 0 } }, ctx);
      if (isRoot) fs.setattr(l.ino, null, { uid: 4242 }, ctx);
      assert.equal(lstatSync(join(root, 'evil')).mtimeMs, 1000);
      const link = fs.link(l.ino, ROOT_INO, 'evil2');
      assert.equal(link.mode & S_IFMT, S_IFLNK, 'a hard link to the symlink, not to passwd');
      assert.equal(readlinkSync(join(root, 'evil2')), '/etc/passwd');
      // A symlink to a directory outside: lookups beneath it are ENOTDIR, nothing is created there.
      const out = fs.lookup(ROOT_INO, 'out');
      assert.equal(out.mode & S_IFMT, S_IFLNK);
      await fails(() => fs.lookup(out.ino, 'secret.txt'), Errno.ENOTDIR);
      await fails(() => fs.create(out.ino, 'planted', S_IFREG | 0o644, 0, O_RDWR, ctx), Errno.ENOTDIR);
      await fails(() => fs.mkdir(out.ino, 'planted', 0o755, 0, ctx), Errno.ENOTDIR);
      await fails(() => fs.rename(ROOT_INO, 'evil', out.ino, 'planted', 0), Errno.ENOTDIR);
      // A dangling absolute symlink: creating through it makes nothing outside.
      await fails(() => fs.create(ROOT_INO, 'dangle', S_IFREG | 0o644, 0, O_WRONLY, ctx), Errno.ELOOP);
      await fails(() => fs.mkdir(ROOT_INO, 'dangle', 0o755, 0, ctx), Errno.EEXIST);
      assert.ok(!existsSync(join(outside, 'made-by-guest')));
      // A relative symlink climbing out with ../: the same.
      const up = await fs.lookup(ROOT_INO, 'up', ctx);
      await fails(() => fs.lookup(up.ino, 'secret.txt', ctx), Errno.ENOTDIR);
      // Removing the links removes the links.
      fs.unlink(ROOT_INO, 'evil');
      fs.unlink(ROOT_INO, 'evil2');
      assert.ok(!existsSync(join(root, 'evil')));
    },
    {
      populate: (root, outside) => {
        symlinkSync('/etc/passwd', join(root, 'evil'));
        symlinkSync(outside, join(root, 'out'));
        symlinkSync(join(outside, 'made-by-guest'), join(root, 'dangle'));
        symlinkSync('../outside', join(root, 'up'));
      },
    },
  );
  assert.deepEqual(readFileSync('/etc/passwd'), passwd, '/etc/passwd unchanged');
  const after = statSync('/etc/passwd');
  assert.deepEqual([after.mode, after.uid, after.mtimeMs], [passwdStat.mode, passwdStat.uid, passwdStat.mtimeMs]);
});

test("HostDirFs hostile: '..', '.', names with '/' or NUL, over-long names are refused for every operation that takes a name", async () => {
  await withFixture(async ({ root, fs }) => {
    writeFileSync(join(root, 'file'), 'inside');
    const bad = ['..', '.', '../outside', '../../etc/passwd', '../outside/secret.txt', 'a/b', '/etc/passwd', 'x\0y', '', 'n'.repeat(256)];
    for (const name of bad) {
      const err = name.length > 255 ? Errno.ENAMETOOLONG : Errno.EINVAL;
      await fails(() => fs.lookup(ROOT_INO, name, ctx), err, `lookup ${JSON.stringify(name)}`);
      await fails(() => fs.create(ROOT_INO, name, S_IFREG | 0o644, 0, O_RDWR, ctx), err, `create ${JSON.stringify(name)}`);
      await fails(() => fs.mkdir(ROOT_INO, name, 0o755, 0, ctx), err, `mkdir ${JSON.stringify(name)}`);
      await fails(() => fs.mknod(ROOT_INO, name, S_IFIFO | 0o644, 0, 0, ctx), err, `mknod ${JSON.stringify(name)}`);
      await fails(() => fs.symlink(ROOT_INO, name, 'x', ctx), err, `symlink ${JSON.stringify(name)}`);
      await fails(() => fs.unlink(ROOT_INO, name, ctx), err, `unlink ${JSON.stringify(name)}`);
      await fails(() => fs.rmdir(ROOT_INO, name, ctx), err, `rmdir ${JSON.stringify(name)}`);
      await fails(() => fs.rename(ROOT_INO, 'file', ROOT_INO, name, 0, ctx), err, `rename to ${JSON.stringify(name)}`);
      await fails(() => fs.rename(ROOT_INO, name, ROOT_INO, 'z', 0, ctx), err, `rename from ${JSON.stringify(name)}`);
      await fails(() => fs.link(fs.lookup(ROOT_INO, 'file').ino, ROOT_INO, name, ctx), err, `link ${JSON.stringify(name)}`);
    }
    assert.equal(readFileSync(join(root, 'file'), 'utf8'), 'inside');
    assert.deepEqual(readdirSync(root), ['file']);
    // The addon refuses the same on its own: one component beneath the fd, '..' never.
    const n = native();
    const fd = (fs as unknown as { root: { fd: number } }).root.fd;
    assert.throws(() => n.fsOpenat(fd, '..', 0o10000000, 0), (e: NodeJS.ErrnoException) => e.code === 'EXDEV');
    assert.throws(() => n.fsOpenat(fd, '../outside', 0o10000000, 0), (e: NodeJS.ErrnoException) => e.code === 'EINVAL');
    assert.throws(() => n.fsMkdirat(fd, 'a/b', 0o755), (e: NodeJS.ErrnoException) => e.code === 'EINVAL');
    assert.throws(() => n.fsUnlinkat(fd, '..', 0x200), (e: NodeJS.ErrnoException) => e.code === 'EINVAL');
    assert.throws(() => n.fsRenameat2(fd, 'file', fd, '..', 0), (e: NodeJS.ErrnoException) => e.code === 'EINVAL');
    assert.throws(() => n.fsStat(fd, '..', new Float64Array(17)), (e: NodeJS.ErrnoException) => e.code === 'EXDEV');
  });
});

test('HostDirFs hostile: device nodes are never created, special files never opened', async () => {
  await withFixture(async ({ root, fs }) => {
    await fails(() => fs.mknod(ROOT_INO, 'sda', S_IFCHR | 0o666, (8 << 8) | 0, 0, ctx), Errno.EPERM, 'a character device');
    await fails(() => fs.mknod(ROOT_INO, 'sdb', 0o060000 | 0o666, (8 << 8) | 16, 0, ctx), Errno.EPERM, 'a block device');
    assert.ok(!existsSync(join(root, 'sda')) && !existsSync(join(root, 'sdb')));
    const fifo = fs.mknod(ROOT_INO, 'fifo', S_IFIFO | 0o644, 0, 0, ctx);
    assert.equal(fifo.mode & S_IFMT, S_IFIFO);
    assert.ok(lstatSync(join(root, 'fifo')).isFIFO());
    // Opening a FIFO here would block the whole process until a writer came: refused.
    await fails(() => fs.open(fifo.ino, O_RDONLY, ctx), Errno.EPERM);
    const d = fs.lookup(ROOT_INO, 'fifo');
    assert.equal(d.ino, fifo.ino);
    await fails(() => fs.open(ROOT_INO, O_RDONLY, ctx), Errno.EISDIR);
  });
});

test('HostDirFs hostile: a symlink swapped in for a directory between two lookups — the held directory stays the directory', async () => {
  await withFixture(
    async ({ root, outside, fs }) => {
      const n = native();
      const rootFd = (fs as unknown as { root: { fd: number } }).root.fd;
      const d = fs.lookup(ROOT_INO, 'd');
      assert.equal(d.mode & S_IFMT, S_IFDIR);
      // The swap lands between the lookup of d and the lookup beneath it.
      n.fsRenameat2(rootFd, 'd', rootFd, 'swap', RenameFlags.EXCHANGE);
      assert.ok(lstatSync(join(root, 'd')).isSymbolicLink());
      const s = fs.lookup(d.ino, 'secret.txt');
      const h = fs.open(s.ino, O_RDONLY);
      assert.equal(text(await fs.read(s.ino, h.fh, 0, 100)), 'inside\n', 'the directory that was looked up, not the link target');
      fs.release(s.ino, h.fh);
      const made = fs.create(d.ino, 'new', S_IFREG | 0o644, 0, O_RDWR, ctx);
      fs.release(made.attr.ino, made.fh);
      assert.ok(existsSync(join(root, 'swap', 'new')), 'created in the real directory (now named swap)');
      assert.ok(!existsSync(join(outside, 'new')));
      // Looked up again, d is now the symlink: nothing beneath it.
      const again = fs.lookup(ROOT_INO, 'd');
      assert.equal(again.mode & S_IFMT, S_IFLNK);
      await fails(() => fs.lookup(again.ino, 'secret.txt'), Errno.ENOTDIR);
    },
    {
      populate: (root, outside) => {
        mkdirSync(join(root, 'd'));
        writeFileSync(join(root, 'd', 'secret.txt'), 'inside\n');
        symlinkSync(outside, join(root, 'swap'));
      },
    },
  );
});

/** A worker thread that runs `script` (the racer) with the addon until told to stop. */
function racer(script: string, data: Record<string, unknown>): { stop(): Promise<number> } {
  const nativeUrl = new URL('../../src/native/index.js', import.meta.url).href;
  const flag = new Int32Array(new SharedArrayBuffer(8));
  const w = new Worker(
    `import { workerData } from 'node:worker_threads';
     const { native } = await import(workerData.nativeUrl);
     const n = native();
     const flag = workerData.flag;
     const fs = await import('node:fs');
     let rounds = 0;
     ${script}
     Atomics.store(flag, 1, rounds);`,
    { eval: true, workerData: { ...data, nativeUrl, flag } as unknown, type: 'module' } as never,
  );
  const ended = new Promise<void>((res, rej) => {
    w.once('exit', () => res());
    w.once('error', rej);
  });
  return {
    stop: async () => {
      Atomics.store(flag, 0, 1);
      await ended;
      return Atomics.load(flag, 1);
    },
  };
}

test('HostDirFs hostile: a worker swaps a directory and a symlink to outside (RENAME_EXCHANGE) while lookups, reads and creates race it — nothing outside is read or written', async () => {
  await withFixture(
    async ({ root, outside, fs }) => {
      const r = racer(
        `const root = fs.openSync(workerData.root, 0o10000000 | fs.constants.O_DIRECTORY);
         while (Atomics.load(flag, 0) === 0) { n.fsRenameat2(root, 'd', root, 'swap', 2); rounds++; }
         fs.closeSync(root);`,
        { root },
      );
      let reads = 0;
      let links = 0;
      let creates = 0;
      let other = 0;
      try {
        for (let i = 0; i < 3000; i++) {
          try {
            const d = fs.lookup(ROOT_INO, 'd');
            if ((d.mode & S_IFMT) === S_IFLNK) links++;
            const s = fs.lookup(d.ino, 'secret.txt');
            const h = fs.open(s.ino, O_RDONLY);
            const got = text(await fs.read(s.ino, h.fh, 0, 100));
            fs.release(s.ino, h.fh);
            assert.equal(got, 'inside\n', 'only the inside file is ever read');
            reads++;
            const c = fs.create(d.ino, `n${i}`, S_IFREG | 0o644, 0, O_RDWR, ctx);
            fs.release(c.attr.ino, c.fh);
            creates++;
            fs.forget(s.ino);
            if (c.attr.ino !== s.ino) fs.forget(c.attr.ino);
            fs.forget(d.ino);
          } catch (err) {
            if (!(err instanceof FsError)) throw err;
            assert.ok(([Errno.ENOTDIR, Errno.ENOENT] as number[]).includes(err.errno), `errno ${err.errno}`);
            other++;
          }
        }
      } finally {
        const rounds = await r.stop();
        console.log(`swap race: ${rounds} swaps, ${reads} inside reads, ${creates} creates, ${links} lookups saw the symlink, ${other} ENOTDIR/ENOENT`);
      }
      const real = lstatSync(join(root, 'd')).isDirectory() ? join(root, 'd') : join(root, 'swap');
      assert.equal(readdirSync(real).filter((x) => x.startsWith('n')).length, creates, 'every create landed in the real directory');
      assert.deepEqual(readdirSync(outside), ['secret.txt']);
    },
    {
      populate: (root, outside) => {
        mkdirSync(join(root, 'd'));
        writeFileSync(join(root, 'd', 'secret.txt'), 'inside\n');
        symlinkSync(outside, join(root, 'swap'));
      },
    },
  );
});

test('HostDirFs hostile: directories renamed back and forth (and out to a sibling) by a worker while files are created in the held ones — every file lands inside the root', async () => {
  await withFixture(
    async ({ root, outside, fs }) => {
      const r = racer(
        `const root = fs.openSync(workerData.root, 0o10000000 | fs.constants.O_DIRECTORY);
         const a = n.fsOpenat(root, 'a', 0o10000000, 0);
         const b = n.fsOpenat(root, 'b', 0o10000000, 0);
         while (Atomics.load(flag, 0) === 0) {
           try { n.fsRenameat2(a, 'sub', b, 'sub', 0); } catch {}
           try { n.fsRenameat2(b, 'sub', root, 'top', 0); } catch {}
           try { n.fsRenameat2(root, 'top', a, 'sub', 0); } catch {}
           try { n.fsRenameat2(a, 'x', b, 'x', 2); } catch {}
           rounds++;
         }
         n.close(a); n.close(b); fs.closeSync(root);`,
        { root },
      );
      let made = 0;
      let failed = 0;
      try {
        const a = fs.lookup(ROOT_INO, 'a');
        const b = fs.lookup(ROOT_INO, 'b');
        for (let i = 0; i < 800; i++) {
          for (const [p, name] of [[a.ino, 'sub'], [b.ino, 'sub'], [ROOT_INO, 'top'], [a.ino, 'x'], [b.ino, 'x']] as const) {
            try {
              const sub = fs.lookup(p, name);
              const c = fs.create(sub.ino, `f${i}-${name}-${p}`, S_IFREG | 0o644, 0, O_RDWR, ctx);
              fs.write(c.attr.ino, c.fh, 0, bytes(String(i)));
              fs.release(c.attr.ino, c.fh);
              fs.forget(c.attr.ino);
              made++;
            } catch (err) {
              if (!(err instanceof FsError)) throw err;
              assert.ok(([Errno.ENOENT, Errno.ENOTDIR] as number[]).includes(err.errno), `errno ${err.errno}`);
              failed++;
            }
          }
        }
      } finally {
        const rounds = await r.stop();
        console.log(`rename race: ${rounds} rounds of renames, ${made} files created, ${failed} lookups missed a moving name`);
      }
      const all = (dir: string): string[] => readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? all(join(dir, e.name)) : [e.name]));
      assert.equal(all(root).filter((x) => x.startsWith('f')).length, made, 'every created file is inside the root');
      assert.deepEqual(readdirSync(outside), ['secret.txt']);
    },
    {
      populate: (root) => {
        mkdirSync(join(root, 'a', 'sub'), { recursive: true });
        mkdirSync(join(root, 'a', 'x'));
        mkdirSync(join(root, 'b', 'x'), { recursive: true });
      },
    },
  );
});

test('HostDirFs --read-only: every change and every open for writing is EROFS; reads work; the host is unchanged', async () => {
  let snapshot = '';
  await withFixture(
    async ({ root, fs }) => {
      const list = () =>
        readdirSync(root, { recursive: true })
          .map(String)
          .sort()
          .map((p) => {
            const st = lstatSync(join(root, p));
            return `${p} ${st.mode} ${st.size} ${st.mtimeMs} ${st.uid}`;
          })
          .join('\n');
      snapshot = list();
      assert.equal(fs.readOnly, true);
      const f = fs.lookup(ROOT_INO, 'f');
      const d = fs.lookup(ROOT_INO, 'd');
      const r = fs.open(f.ino, O_RDONLY);
      assert.equal(text(await fs.read(f.ino, r.fh, 0, 10)), 'data');
      const E = Errno.EROFS;
      await fails(() => fs.write(f.ino, r.fh, 0, bytes('x'), ctx), E, 'write');
      await fails(() => fs.open(f.ino, O_WRONLY, ctx), E, 'open O_WRONLY');
      await fails(() => fs.open(f.ino, O_RDWR, ctx), E, 'open O_RDWR');
      await fails(() => fs.open(f.ino, O_RDONLY | O_TRUNC, ctx), E, 'open O_TRUNC');
      await fails(() => fs.setattr(f.ino, null, { size: 0 }, ctx), E, 'truncate');
      await fails(() => fs.setattr(f.ino, null, { mode: 0o777 }, ctx), E, 'chmod');
      await fails(() => fs.setattr(f.ino, null, { uid: 1 }, ctx), E, 'chown');
      await fails(() => fs.setattr(f.ino, null, { mtime: 'now' }, ctx), E, 'utimes');
      await fails(() => fs.create(ROOT_INO, 'n', S_IFREG | 0o644, 0, O_RDWR, ctx), E, 'create');
      await fails(() => fs.mkdir(ROOT_INO, 'n', 0o755, 0, ctx), E, 'mkdir');
      await fails(() => fs.mknod(ROOT_INO, 'n', S_IFIFO | 0o644, 0, 0, ctx), E, 'mknod');
      await fails(() => fs.symlink(ROOT_INO, 'n', '/etc', ctx), E, 'symlink');
      await fails(() => fs.link(f.ino, ROOT_INO, 'n', ctx), E, 'link');
      await fails(() => fs.unlink(ROOT_INO, 'f', ctx), E, 'unlink');
      await fails(() => fs.rmdir(ROOT_INO, 'd', ctx), E, 'rmdir');
      await fails(() => fs.rename(ROOT_INO, 'f', d.ino, 'f', 0, ctx), E, 'rename');
      await fails(() => fs.setxattr(f.ino, 'user.x', bytes('1'), 0, ctx), E, 'setxattr');
      await fails(() => fs.removexattr(f.ino, 'user.x', ctx), E, 'removexattr');
      await fails(() => fs.fallocate(f.ino, r.fh, 0, 4096, 0, ctx), E, 'fallocate');
      fs.release(f.ino, r.fh);
      assert.equal(list(), snapshot, 'the shared directory is unchanged');
    },
    {
      readOnly: true,
      populate: (root) => {
        writeFileSync(join(root, 'f'), 'data');
        mkdirSync(join(root, 'd'));
        linkSync(join(root, 'f'), join(root, 'd', 'f2'));
      },
    },
  );
});
