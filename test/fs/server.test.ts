// The FUSE server over the in-memory file system, driven by the project's FUSE client (the
// requests Linux sends, built with the same struct sizes): every operation of issue 16, the
// nodeid table's lookup counts, READDIRPLUS paging, rename flags, links, xattrs, sparse files,
// POSIX locks, sessions, and a provider that answers with Promises.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FuseServer } from '../../src/fs/fuse/server.js';
import { FuseClient } from '../../src/fs/fuse/client.js';
import { Fattr, Fopen, InitFlag, OPEN_KILL_SUIDGID, WRITE_KILL_SUIDGID } from '../../src/fs/fuse/wire.js';
import { MemoryFs } from '../../src/fs/memory.js';
import { errno } from './fs-frontend.js';
import { Errno, FallocMode, FsError, LockType, RenameFlags, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, Whence, XattrFlags, type FsProvider } from '../../src/fs/vfs.js';

const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array | number) => new TextDecoder().decode(b as Uint8Array);

/** A server over `fs` and a client sending straight to it. */
async function session(fs: FsProvider = new MemoryFs(), opts = {}) {
  const server = new FuseServer(fs, opts);
  const client = new FuseClient(async (req, room) => {
    const r = await server.handle(req, room);
    if (r === null) return null;
    const out = new Uint8Array(r.length);
    out.set(r.head);
    if (r.data !== null) out.set(r.data, r.head.length);
    return out;
  });
  await client.init();
  return { server, client, fs };
}

test('INIT agrees protocol 7.x, max_write and the flags both sides have (POSIX locks, READDIRPLUS, big writes)', async () => {
  const { client, server } = await session();
  assert.equal(client.minor, 38);
  assert.equal(client.maxWrite, 1 << 20);
  for (const f of [InitFlag.POSIX_LOCKS, InitFlag.DO_READDIRPLUS, InitFlag.BIG_WRITES, InitFlag.MAX_PAGES, InitFlag.ASYNC_READ]) assert.ok(client.initFlags & f, `flag ${f}`);
  assert.equal(client.initFlags & InitFlag.WRITEBACK_CACHE, 0, 'no flag the server does not implement');
  assert.ok(server.initialized);
});

test('files: create, write, read, getattr, setattr (truncate, chmod, times), unlink', async () => {
  const { client } = await session();
  const { entry, fh } = await client.create(1, 'a.txt', 0o640);
  assert.equal(entry.attr.mode, S_IFREG | 0o640);
  assert.equal(await client.write(entry.nodeid, fh, 0, bytes('hello world')), 11);
  assert.equal(text(await client.read(entry.nodeid, fh, 6, 100)), 'world');
  assert.equal((await client.getattr(entry.nodeid)).size, 11);
  const a = await client.setattr(entry.nodeid, { valid: Fattr.SIZE | Fattr.MODE | Fattr.MTIME, size: 5, mode: 0o600, mtime: 1234 });
  assert.deepEqual([a.size, a.mode, a.mtime], [5, S_IFREG | 0o600, 1234]);
  assert.equal(text(await client.read(entry.nodeid, fh, 0, 100)), 'hello');
  await client.flush(entry.nodeid, fh);
  await client.fsync(entry.nodeid, fh, true);
  await client.release(entry.nodeid, fh);
  await client.unlink(1, 'a.txt');
  assert.equal(await errno(client.lookup(1, 'a.txt')), Errno.ENOENT);
});

test('directories, symlinks, device nodes and FIFOs; rmdir of a non-empty directory is ENOTEMPTY', async () => {
  const { client } = await session();
  const d = await client.mkdir(1, 'd', 0o755);
  assert.equal(d.attr.mode & S_IFMT, S_IFDIR);
  assert.equal(d.attr.nlink, 2);
  const s = await client.symlink(d.nodeid, 'l', '../target');
  assert.equal(s.attr.mode & S_IFMT, S_IFLNK);
  assert.equal(await client.readlink(s.nodeid), '../target');
  const f = await client.mknod(d.nodeid, 'fifo', S_IFIFO | 0o600);
  assert.equal(f.attr.mode & S_IFMT, S_IFIFO);
  const sub = await client.mkdir(d.nodeid, 'sub');
  assert.equal((await client.getattr(d.nodeid)).nlink, 3, 'a subdirectory adds a link to its parent');
  assert.equal(await errno(client.rmdir(1, 'd')), Errno.ENOTEMPTY);
  assert.equal(await errno(client.unlink(d.nodeid, 'sub')), Errno.EISDIR);
  await client.rmdir(d.nodeid, 'sub');
  assert.equal((await client.getattr(d.nodeid)).nlink, 2);
  assert.equal(await errno(client.mkdir(d.nodeid, 'l')), Errno.EEXIST);
  void sub;
});

test('hard links: nlink counts names; the data lives until the last name and the last handle go', async () => {
  const { client, fs } = await session(new MemoryFs());
  const { entry, fh } = await client.create(1, 'a');
  await client.write(entry.nodeid, fh, 0, bytes('data'));
  const l = await client.link(entry.nodeid, 1, 'b');
  assert.equal(l.nodeid, entry.nodeid);
  assert.equal(l.attr.nlink, 2);
  await client.unlink(1, 'a');
  assert.equal((await client.getattr(entry.nodeid)).nlink, 1);
  await client.unlink(1, 'b');
  assert.equal((await client.getattr(entry.nodeid)).nlink, 0);
  assert.equal(text(await client.read(entry.nodeid, fh, 0, 10)), 'data', 'an open unlinked file still reads');
  await client.release(entry.nodeid, fh);
  const nodes = (fs as MemoryFs).nodeCount;
  await client.forget(entry.nodeid, 2);
  assert.equal((fs as MemoryFs).nodeCount, nodes - 1, 'forgotten, unlinked and closed: gone');
});

test('rename: replace, RENAME_NOREPLACE, RENAME_EXCHANGE, across directories, not into its own subtree', async () => {
  const { client } = await session();
  const a = await client.mkdir(1, 'a');
  const b = await client.mkdir(1, 'b');
  const x = await client.create(a.nodeid, 'x');
  const y = await client.create(b.nodeid, 'y');
  assert.equal(await errno(client.rename(a.nodeid, 'x', b.nodeid, 'y', RenameFlags.NOREPLACE)), Errno.EEXIST);
  await client.rename(a.nodeid, 'x', b.nodeid, 'y', RenameFlags.EXCHANGE);
  assert.equal((await client.lookup(a.nodeid, 'x')).nodeid, y.entry.nodeid, 'exchanged');
  assert.equal((await client.lookup(b.nodeid, 'y')).nodeid, x.entry.nodeid);
  assert.equal(await errno(client.rename(a.nodeid, 'x', b.nodeid, 'none', RenameFlags.EXCHANGE)), Errno.ENOENT);
  await client.rename(a.nodeid, 'x', b.nodeid, 'y');
  assert.equal((await client.lookup(b.nodeid, 'y')).nodeid, y.entry.nodeid, 'replaced');
  assert.equal(await errno(client.lookup(a.nodeid, 'x')), Errno.ENOENT);
  const inner = await client.mkdir(a.nodeid, 'inner');
  assert.equal(await errno(client.rename(1, 'a', inner.nodeid, 'loop')), Errno.EINVAL);
  await client.rename(1, 'a', b.nodeid, 'a2');
  assert.equal((await client.getattr(1)).nlink, 3, 'the root lost a subdirectory');
  assert.equal((await client.getattr(b.nodeid)).nlink, 3, 'b gained one');
  assert.equal(await errno(client.rename(1, 'b', 1, 'c', RenameFlags.NOREPLACE | RenameFlags.EXCHANGE)), Errno.EINVAL);
  assert.equal(await errno(client.rename(1, 'b', 1, 'c', RenameFlags.WHITEOUT)), Errno.EINVAL);
});

test('READDIR and READDIRPLUS page through 1000 entries exactly once each; READDIRPLUS counts a lookup per entry', async () => {
  const { client, server } = await session();
  const d = await client.mkdir(1, 'big');
  for (let i = 0; i < 1000; i++) await client.release(...(await client.create(d.nodeid, `file-${i}`).then((c) => [c.entry.nodeid, c.fh] as const)));
  const plain = await client.list(d.nodeid);
  assert.deepEqual(plain.slice(0, 2).map((e) => e.name), ['.', '..']);
  assert.equal(plain.length, 1002);
  assert.equal(new Set(plain.map((e) => e.name)).size, 1002, 'no entry twice');
  const some = (await client.lookup(d.nodeid, 'file-7')).nodeid;
  const before = server.lookupCount(some);
  const plus = await client.list(d.nodeid, true);
  assert.equal(plus.length, 1002);
  assert.equal(plus[0].entry, null, '. has no entry (nodeid 0)');
  const e7 = plus.find((e) => e.name === 'file-7')!;
  assert.equal(e7.entry!.nodeid, some);
  assert.equal(e7.entry!.attr.mode & S_IFMT, S_IFREG);
  assert.equal(server.lookupCount(some), before + 1, 'READDIRPLUS handed the entry out once more');
});

test('READDIR / READDIRPLUS names: 1- to 4-byte UTF-8 characters as written; an entry whose lookup fails (synchronously or not) goes without attributes, the others keep theirs', async () => {
  const fs = new MemoryFs();
  // A provider whose lookups of two names fail as if they vanished after readdir listed them.
  const provider: FsProvider = Object.assign(Object.create(fs) as MemoryFs, {
    lookup: (parent: number, name: string) => {
      if (name === 'gone') throw new FsError(Errno.ENOENT);
      if (name === 'gone-later') return Promise.reject(new FsError(Errno.ENOENT));
      return fs.lookup(parent, name);
    },
  });
  const { client, server } = await session(provider);
  const d = await client.mkdir(1, 'names');
  const names = ['plain', 'caf\u00e9', '\u65e5\u672c\u8a9e', 'emoji-\u{1F600}', 'gone', 'gone-later'];
  for (const n of names) await client.release(...(await client.create(d.nodeid, n).then((c) => [c.entry.nodeid, c.fh] as const)));
  const sorted = (xs: string[]) => [...xs].sort();
  assert.deepEqual(sorted((await client.list(d.nodeid)).map((e) => e.name)), sorted(['.', '..', ...names]));
  const before = server.knownNodes;
  const plus = await client.list(d.nodeid, true);
  assert.deepEqual(sorted(plus.map((e) => e.name)), sorted(['.', '..', ...names]));
  for (const e of plus) {
    if (e.name === 'gone' || e.name === 'gone-later' || e.name === '.' || e.name === '..') assert.equal(e.entry, null, `${e.name}: nodeid 0`);
    else assert.equal(e.entry!.attr.mode & S_IFMT, S_IFREG, `${e.name} has its attributes`);
  }
  assert.equal(server.knownNodes, before, 'the same nodes, held once more');
});

test('lookup counts: FORGET and BATCH_FORGET lower them; at zero the nodeid is refused (ESTALE) and the provider told', async () => {
  const forgotten: number[] = [];
  const fs = new MemoryFs();
  const provider: FsProvider = Object.assign(Object.create(fs) as MemoryFs, { forget: (ino: number) => (forgotten.push(ino), fs.forget(ino)) });
  const { client, server } = await session(provider);
  const f = await client.create(1, 'f');
  await client.release(f.entry.nodeid, f.fh);
  await client.lookup(1, 'f');
  await client.lookup(1, 'f');
  const id = f.entry.nodeid;
  assert.equal(server.lookupCount(id), 3);
  await client.forget(id, 1);
  assert.equal(server.lookupCount(id), 2);
  assert.deepEqual(forgotten, []);
  const g = await client.mkdir(1, 'g');
  await client.batchForget([[id, 2], [g.nodeid, 1], [999, 5]]);
  assert.equal(server.lookupCount(id), 0);
  assert.deepEqual(forgotten.sort(), [id, g.nodeid].sort());
  assert.equal(await errno(client.getattr(id)), Errno.ESTALE);
  await client.forget(1, 100);
  assert.equal((await client.getattr(1)).ino, 1, 'the root is never forgotten');
  assert.equal((await client.lookup(1, 'f')).nodeid, id, 'handed out again');
});

test('a new INIT ends the session: every nodeid forgotten', async () => {
  const { client, server } = await session();
  const d = await client.mkdir(1, 'd');
  assert.equal(server.knownNodes, 1);
  await client.init();
  assert.equal(server.knownNodes, 0);
  assert.equal(await errno(client.getattr(d.nodeid)), Errno.ESTALE);
  await client.destroy();
  assert.equal(await errno(client.getattr(1)), Errno.EIO, 'nothing before INIT');
});

test('xattrs: set (CREATE / REPLACE), get (size query, ERANGE), list, remove', async () => {
  const { client } = await session();
  const f = await client.create(1, 'f');
  await client.setxattr(f.entry.nodeid, 'user.a', bytes('one'));
  assert.equal(await errno(client.setxattr(f.entry.nodeid, 'user.a', bytes('x'), XattrFlags.CREATE)), Errno.EEXIST);
  assert.equal(await errno(client.setxattr(f.entry.nodeid, 'user.b', bytes('x'), XattrFlags.REPLACE)), Errno.ENODATA);
  await client.setxattr(f.entry.nodeid, 'user.b', bytes('second'));
  assert.equal(await client.getxattr(f.entry.nodeid, 'user.b', 0), 6);
  assert.equal(text(await client.getxattr(f.entry.nodeid, 'user.b')), 'second');
  assert.equal(await errno(client.getxattr(f.entry.nodeid, 'user.b', 3)), Errno.ERANGE);
  assert.deepEqual((await client.listxattr(f.entry.nodeid)).sort(), ['user.a', 'user.b']);
  await client.removexattr(f.entry.nodeid, 'user.a');
  assert.equal(await errno(client.getxattr(f.entry.nodeid, 'user.a')), Errno.ENODATA);
  assert.equal(await errno(client.removexattr(f.entry.nodeid, 'user.a')), Errno.ENODATA);
});

test('lookupErrno / getxattrErrno: a returned errno (sync or async) is answered as a thrown one; a return that is not an errno is EIO; the plain methods are not called', async () => {
  for (const late of [false, true]) {
    const mem = new MemoryFs();
    const answer = <T>(x: T) => (late ? Promise.resolve(x) : x);
    const calls: string[] = [];
    const fs: FsProvider = Object.assign(Object.create(mem) as MemoryFs, {
      lookup: () => assert.fail('lookup called although lookupErrno is there'),
      getxattr: () => assert.fail('getxattr called although getxattrErrno is there'),
      lookupErrno(parent: number, name: string) {
        calls.push(`lookup ${name}`);
        if (name === 'missing') return answer(Errno.ENOENT);
        if (name === 'bad') return answer(-3);
        return answer(mem.lookup(parent, name));
      },
      getxattrErrno(ino: number, name: string) {
        calls.push(`getxattr ${name}`);
        if (!name.startsWith('user.')) return answer(Errno.ENODATA);
        return answer(mem.getxattr(ino, name));
      },
    });
    const { client, server } = await session(fs);
    const f = await client.create(1, 'f');
    await client.setxattr(f.entry.nodeid, 'user.a', bytes('one'));
    assert.equal(await errno(client.lookup(1, 'missing')), Errno.ENOENT);
    assert.equal(await errno(client.lookup(1, 'bad')), Errno.EIO, 'a negative number is no errno: a provider bug');
    assert.equal((await client.lookup(1, 'f')).nodeid, f.entry.nodeid);
    assert.equal(server.lookupCount(f.entry.nodeid), 2, 'CREATE and the LOOKUP that answered');
    assert.equal(await errno(client.getxattr(f.entry.nodeid, 'security.capability')), Errno.ENODATA);
    assert.equal(text(await client.getxattr(f.entry.nodeid, 'user.a')), 'one');
    assert.equal(await client.getxattr(f.entry.nodeid, 'user.a', 0), 3);
    assert.equal(server.stats.errors, 3);
    assert.deepEqual(calls, ['lookup missing', 'lookup bad', 'lookup f', 'getxattr security.capability', 'getxattr user.a', 'getxattr user.a'], late ? 'async' : 'sync');
  }
});

test('xattr: false (serve fs --no-xattr, virtiofsd\'s no_xattr): the four xattr requests answer ENOSYS whatever the provider has; the rest is served', async () => {
  const { client } = await session(new MemoryFs(), { xattr: false });
  const f = await client.create(1, 'f');
  assert.equal(await errno(client.setxattr(f.entry.nodeid, 'user.a', bytes('one'))), Errno.ENOSYS);
  assert.equal(await errno(client.getxattr(f.entry.nodeid, 'security.capability')), Errno.ENOSYS);
  assert.equal(await errno(client.listxattr(f.entry.nodeid)), Errno.ENOSYS);
  assert.equal(await errno(client.removexattr(f.entry.nodeid, 'user.a')), Errno.ENOSYS);
  assert.equal(await client.write(f.entry.nodeid, f.fh, 0, bytes('data')), 4);
});

test('posixLocks: false (serve fs\'s default, virtiofsd\'s no_posix_lock): POSIX_LOCKS not agreed, lock requests ENOSYS, and a noFlush open or create gets FOPEN_NOFLUSH', async () => {
  const { client } = await session(new MemoryFs(), { posixLocks: false });
  assert.equal(client.initFlags & InitFlag.POSIX_LOCKS, 0, 'the guest kernel keeps its locks');
  const c = await client.create(1, 'f');
  assert.equal(c.fopen & Fopen.NOFLUSH, Fopen.NOFLUSH, 'CREATE: MemoryFs says noFlush');
  const o = await client.openReply(c.entry.nodeid, 0);
  assert.equal(o.fopen & Fopen.NOFLUSH, Fopen.NOFLUSH, 'OPEN');
  const whole = { start: 0, end: Infinity, type: LockType.F_WRLCK, pid: 1 };
  assert.equal(await errno(client.setlk(c.entry.nodeid, c.fh, 1n, whole)), Errno.ENOSYS);
  assert.equal(await errno(client.getlk(c.entry.nodeid, c.fh, 1n, whole)), Errno.ENOSYS);
  // A FLUSH sent anyway (a kernel older than 5.16 ignores FOPEN_NOFLUSH) is still answered.
  await client.flush(c.entry.nodeid, o.fh, 1n);
  assert.equal(await client.write(c.entry.nodeid, c.fh, 0, bytes('data')), 4);
});

test('FOPEN_NOFLUSH only when nothing needs the FLUSH: not with remote POSIX locks (the default of the library), not for a provider that did not say noFlush', async () => {
  const locked = await session(new MemoryFs());
  assert.ok(locked.client.initFlags & InitFlag.POSIX_LOCKS);
  const c = await locked.client.create(1, 'f');
  assert.equal(c.fopen & Fopen.NOFLUSH, 0, 'the kernel drops the closing owner\'s locks with FLUSH');
  assert.equal((await locked.client.openReply(c.entry.nodeid, 0)).fopen & Fopen.NOFLUSH, 0);
  // A provider whose open answers without noFlush: its flush may have work (buffered writes to report).
  const fs = new MemoryFs();
  const plain: FsProvider = Object.create(fs);
  plain.open = (ino, flags) => ({ fh: fs.open(ino, flags).fh });
  plain.create = (parent, name, mode, umask, flags, ctx) => {
    const { fh, attr } = fs.create(parent, name, mode, umask, flags, ctx);
    return { fh, attr };
  };
  const { client } = await session(plain, { posixLocks: false });
  const p = await client.create(1, 'g');
  assert.equal(p.fopen & Fopen.NOFLUSH, 0, 'CREATE');
  assert.equal((await client.openReply(p.entry.nodeid, 0)).fopen & Fopen.NOFLUSH, 0, 'OPEN');
});

test('sparse files: holes read as zeroes and take no blocks; SEEK_DATA / SEEK_HOLE; fallocate, PUNCH_HOLE, ZERO_RANGE', async () => {
  const { client } = await session();
  const { entry, fh } = await client.create(1, 's');
  const id = entry.nodeid;
  await client.write(id, fh, 10 << 20, bytes('end'));
  const a = await client.getattr(id);
  assert.equal(a.size, (10 << 20) + 3);
  assert.ok(a.blocks * 512 <= 128 << 10, `a 10 MiB sparse file holds ${a.blocks} blocks`);
  assert.deepEqual([...(await client.read(id, fh, 5 << 20, 4))], [0, 0, 0, 0]);
  assert.equal(await client.lseek(id, fh, 0, Whence.SEEK_DATA), (10 << 20) - ((10 << 20) % (64 << 10)));
  assert.equal(await client.lseek(id, fh, 0, Whence.SEEK_HOLE), 0);
  assert.equal(await errno(client.lseek(id, fh, (10 << 20) + 3, Whence.SEEK_DATA)), Errno.ENXIO);
  await client.fallocate(id, fh, 0, 1 << 20);
  assert.equal(await client.lseek(id, fh, 0, Whence.SEEK_DATA), 0);
  await client.fallocate(id, fh, 0, 64 << 10, FallocMode.PUNCH_HOLE | FallocMode.KEEP_SIZE);
  assert.equal(await client.lseek(id, fh, 0, Whence.SEEK_HOLE), 0);
  await client.fallocate(id, fh, 20 << 20, 4096, FallocMode.KEEP_SIZE);
  assert.equal((await client.getattr(id)).size, (10 << 20) + 3, 'KEEP_SIZE');
  await client.fallocate(id, fh, 20 << 20, 4096);
  assert.equal((await client.getattr(id)).size, (20 << 20) + 4096);
  await client.write(id, fh, 0, bytes('abcdef'));
  await client.fallocate(id, fh, 1, 2, FallocMode.ZERO_RANGE);
  assert.deepEqual([...(await client.read(id, fh, 0, 4))], [0x61, 0, 0, 0x64]);
  assert.equal(await errno(client.fallocate(id, fh, 0, 10, FallocMode.PUNCH_HOLE)), Errno.EOPNOTSUPP, 'PUNCH_HOLE needs KEEP_SIZE');
});

test('a full file system: writes fail with ENOSPC and change nothing; statfs says so', async () => {
  const { client } = await session(new MemoryFs({ maxBytes: 256 << 10 }));
  const { entry, fh } = await client.create(1, 'f');
  await client.write(entry.nodeid, fh, 0, new Uint8Array(200 << 10));
  assert.equal(await errno(client.write(entry.nodeid, fh, 200 << 10, new Uint8Array(100 << 10))), Errno.ENOSPC);
  assert.equal((await client.getattr(entry.nodeid)).size, 200 << 10);
  const st = await client.statfs();
  assert.equal(st.blocks, 64);
  assert.ok(st.bfree < 16);
});

test('POSIX locks: conflicts by owner, GETLK names the holder, SETLKW waits for the unlock, INTERRUPT ends a wait with EINTR', async () => {
  const { client } = await session();
  const { entry, fh } = await client.create(1, 'l');
  const id = entry.nodeid;
  const W = LockType.F_WRLCK;
  await client.setlk(id, fh, 1n, { start: 0, end: 99, type: W, pid: 10 });
  await client.setlk(id, fh, 1n, { start: 50, end: Infinity, type: LockType.F_RDLCK, pid: 10 }, false);
  assert.equal(await errno(client.setlk(id, fh, 2n, { start: 10, end: 10, type: LockType.F_RDLCK, pid: 20 })), Errno.EAGAIN);
  const held = await client.getlk(id, fh, 2n, { start: 0, end: Infinity, type: W, pid: 20 });
  assert.deepEqual([held.type, held.pid, held.start], [W, 10, 0]);
  assert.equal((await client.getlk(id, fh, 1n, { start: 0, end: Infinity, type: W, pid: 10 })).type, LockType.F_UNLCK, 'no conflict with its own locks');
  let got = false;
  const waiting = client.setlk(id, fh, 2n, { start: 0, end: 10, type: W, pid: 20 }, true).then(() => (got = true));
  await new Promise((r) => setImmediate(r));
  assert.equal(got, false, 'SETLKW waits');
  await client.setlk(id, fh, 1n, { start: 0, end: Infinity, type: LockType.F_UNLCK, pid: 10 });
  await waiting;
  assert.equal(got, true, 'and gets the lock once it is free');
  const unique = client.nextUnique;
  const blocked = errno(client.setlk(id, fh, 3n, { start: 5, end: 5, type: W, pid: 30 }, true));
  await client.interrupt(unique);
  assert.equal(await blocked, Errno.EINTR);
});

test('HANDLE_KILLPRIV_V2: agreed for a provider that drops capabilities; the server clears set-user-ID / set-group-ID on the kernel\'s word (WRITE, OPEN, CREATE), never otherwise', async () => {
  const fs = new MemoryFs();
  const { client } = await session(fs);
  assert.equal(client.initFlags & InitFlag.HANDLE_KILLPRIV_V2, 0, 'not agreed unless the kernel offers it');
  await client.init(InitFlag.BIG_WRITES | InitFlag.HANDLE_KILLPRIV_V2);
  assert.ok(client.initFlags & InitFlag.HANDLE_KILLPRIV_V2, 'agreed with MemoryFs');
  const mode = async (nodeid: number) => (await client.getattr(nodeid)).mode & 0o7777;
  const { entry, fh } = await client.create(1, 'suid', 0o6755);
  const id = entry.nodeid;
  await client.write(id, fh, 0, bytes('a'));
  assert.equal(await mode(id), 0o6755, 'a writer with CAP_FSETID (no flag) keeps the bits');
  await client.write(id, fh, 1, bytes('b'), WRITE_KILL_SUIDGID);
  assert.equal(await mode(id), 0o755, 'FUSE_WRITE_KILL_SUIDGID: both go (group execute is set)');
  await client.setattr(id, { valid: Fattr.MODE, mode: 0o2644 });
  await client.write(id, fh, 2, bytes('c'), WRITE_KILL_SUIDGID);
  assert.equal(await mode(id), 0o2644, 'set-group-ID without group execute (mandatory locking) stays');
  await client.setattr(id, { valid: Fattr.MODE, mode: 0o4711 });
  await client.release(id, await client.open(id, 0o1002, OPEN_KILL_SUIDGID));
  assert.equal(await mode(id), 0o711, 'FUSE_OPEN_KILL_SUIDGID (O_TRUNC by a caller without CAP_FSETID)');
  await client.setattr(id, { valid: Fattr.MODE, mode: 0o4755 });
  const again = await client.create(1, 'suid', 0o644, 0o1102, 0, OPEN_KILL_SUIDGID);
  assert.equal(again.entry.nodeid, id);
  assert.equal(await mode(id), 0o755, 'CREATE of an existing file with FUSE_OPEN_KILL_SUIDGID');
  // Capabilities: a write and a chown drop them (the guest no longer asks GETXATTR first).
  await client.setxattr(id, 'security.capability', bytes('cap'));
  await client.write(id, fh, 0, bytes('d'));
  assert.equal(await errno(client.getxattr(id, 'security.capability')), Errno.ENODATA, 'a write dropped security.capability');
  await client.setattr(id, { valid: Fattr.MODE, mode: 0o4755 });
  await client.setxattr(id, 'security.capability', bytes('cap'));
  await client.setattr(id, { valid: Fattr.UID, uid: 1000 });
  assert.equal(await mode(id), 0o755, 'chown of a file takes set-user-ID');
  assert.equal(await errno(client.getxattr(id, 'security.capability')), Errno.ENODATA, 'and security.capability');
  // A provider that does not say it drops capabilities does not get the flag.
  const plain = await session(Object.assign(Object.create(fs) as MemoryFs, { killsPriv: false }));
  await plain.client.init(InitFlag.BIG_WRITES | InitFlag.HANDLE_KILLPRIV_V2);
  assert.equal(plain.client.initFlags & InitFlag.HANDLE_KILLPRIV_V2, 0, 'not agreed without FsProvider.killsPriv');
});

test('read-only: every change is EROFS, reads work', async () => {
  const fs = new MemoryFs();
  const { client } = await session(fs);
  const { entry, fh } = await client.create(1, 'f');
  await client.write(entry.nodeid, fh, 0, bytes('x'));
  const ro = await session(Object.assign(Object.create(fs) as MemoryFs, { readOnly: true }));
  const f = await ro.client.lookup(1, 'f');
  assert.equal(text(await ro.client.read(f.nodeid, await ro.client.open(f.nodeid, 0), 0, 10)), 'x');
  assert.equal(await errno(ro.client.open(f.nodeid, 2)), Errno.EROFS);
  assert.equal(await errno(ro.client.mkdir(1, 'd')), Errno.EROFS);
  assert.equal(await errno(ro.client.unlink(1, 'f')), Errno.EROFS);
  assert.equal(await errno(ro.client.setattr(f.nodeid, { valid: Fattr.SIZE, size: 0 })), Errno.EROFS);
  assert.equal(await errno(ro.client.setxattr(f.nodeid, 'user.x', bytes('1'))), Errno.EROFS);
});

test('an asynchronous provider (every answer a Promise) serves the same, and its failures are EIO, not crashes', async () => {
  const mem = new MemoryFs();
  const log: string[] = [];
  const asyncFs = new Proxy(mem, {
    get(target, prop, recv) {
      const v = Reflect.get(target, prop, recv) as unknown;
      if (typeof v !== 'function' || prop === 'forget') return v;
      return (...args: unknown[]) =>
        new Promise((resolve, reject) =>
          setImmediate(() => {
            try {
              if (prop === 'statfs') throw new TypeError('store exploded');
              resolve((v as (...a: unknown[]) => unknown).apply(target, args));
            } catch (e) {
              reject(e);
            }
          }),
        );
    },
  });
  const { client } = await session(asyncFs, { log: (m: string) => log.push(m) });
  const d = await client.mkdir(1, 'd');
  const { entry, fh } = await client.create(d.nodeid, 'f');
  await client.write(entry.nodeid, fh, 0, bytes('async'));
  assert.equal(text(await client.read(entry.nodeid, fh, 0, 10)), 'async');
  assert.equal((await client.list(d.nodeid, true)).length, 3);
  assert.equal(await errno(client.statfs()), Errno.EIO);
  assert.match(log.join('\n'), /store exploded/);
});
