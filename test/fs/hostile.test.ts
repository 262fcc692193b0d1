// Hostile FUSE requests: each malformed header, length, name or size gets an error reply with
// the request's unique (EINVAL, or the errno that names the fault), never a throw, never a
// reply longer than the room the driver gave; and random bytes never crash the server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FuseServer, type FuseReply } from '../../src/fs/fuse/server.js';
import { fuseRequest } from '../../src/fs/fuse/client.js';
import { Op, Size } from '../../src/fs/fuse/wire.js';
import { MemoryFs } from '../../src/fs/memory.js';
import { Errno, S_IFREG } from '../../src/fs/vfs.js';

const enc = new TextEncoder();
const cstr = (s: string) => enc.encode(s + '\0');

function fresh(): FuseServer {
  const fs = new MemoryFs();
  fs.mknod(1, 'f', S_IFREG | 0o644, 0, 0, { uid: 0, gid: 0, pid: 1 });
  const s = new FuseServer(fs);
  const init = new Uint8Array(64);
  new DataView(init.buffer).setUint32(0, 7, true);
  new DataView(init.buffer).setUint32(4, 38, true);
  assert.ok(s.handle(fuseRequest(Op.INIT, 1n, 0, [init]), 4096) !== null);
  s.handle(fuseRequest(Op.LOOKUP, 2n, 1, [cstr('f')]), 4096); // the kernel holds nodeid 2
  return s;
}

/** The errno of a synchronous reply (0 for success). */
function errnoOf(r: FuseReply | null | Promise<unknown>, unique = 7n): number {
  assert.ok(r !== null && !(r instanceof Promise), 'a synchronous reply');
  const v = new DataView(r.head.buffer, r.head.byteOffset, r.head.byteLength);
  assert.equal(v.getBigUint64(8, true), unique, 'the reply echoes the unique');
  assert.equal(v.getUint32(0, true), r.length);
  return -v.getInt32(4, true);
}

const u32 = (...xs: number[]) => {
  const b = new Uint8Array(xs.length * 4);
  xs.forEach((x, i) => new DataView(b.buffer).setUint32(i * 4, x, true));
  return b;
};

test('malformed names: no NUL, empty, with /, . and .., not UTF-8, longer than 255 bytes', () => {
  const s = fresh();
  const cases: [Uint8Array, number][] = [
    [enc.encode('noterm'), Errno.EINVAL],
    [cstr(''), Errno.EINVAL],
    [cstr('a/b'), Errno.EINVAL],
    [cstr('.'), Errno.EINVAL],
    [cstr('..'), Errno.EINVAL],
    [new Uint8Array([0xff, 0xfe, 0]), Errno.EILSEQ],
    [cstr('x'.repeat(256)), Errno.ENAMETOOLONG],
  ];
  for (const [name, want] of cases) assert.equal(errnoOf(s.handle(fuseRequest(Op.LOOKUP, 7n, 1, [name]), 4096)), want, `name ${JSON.stringify(new TextDecoder().decode(name))}`);
  assert.equal(errnoOf(s.handle(fuseRequest(Op.LOOKUP, 7n, 1, [cstr('x'.repeat(255))]), 4096)), Errno.ENOENT, '255 bytes is a name');
  assert.equal(s.stats.malformed, cases.length);
});

test('malformed lengths: len beyond the buffer or below the header, short structs, a WRITE longer than its data, total_extlen past the end', () => {
  const s = fresh();
  const lie = fuseRequest(Op.GETATTR, 7n, 1, [new Uint8Array(16)]);
  new DataView(lie.buffer).setUint32(0, lie.length + 1, true);
  assert.equal(errnoOf(s.handle(lie, 4096)), Errno.EINVAL);
  new DataView(lie.buffer).setUint32(0, 12, true);
  assert.equal(errnoOf(s.handle(lie, 4096)), Errno.EINVAL);
  assert.equal(errnoOf(s.handle(fuseRequest(Op.MKDIR, 7n, 1, [new Uint8Array(4)]), 4096)), Errno.EINVAL, 'fuse_mkdir_in cut short');
  const w = new Uint8Array(Size.writeIn);
  new DataView(w.buffer).setUint32(16, 100, true);
  assert.equal(errnoOf(s.handle(fuseRequest(Op.WRITE, 7n, 2, [w, new Uint8Array(10)]), 4096)), Errno.EINVAL, 'size 100, 10 bytes of data');
  new DataView(w.buffer).setUint32(16, 64 << 20, true);
  assert.equal(errnoOf(s.handle(fuseRequest(Op.WRITE, 7n, 2, [w]), 4096)), Errno.EINVAL, 'more than max_write');
  const ext = fuseRequest(Op.LOOKUP, 7n, 1, [cstr('f')]);
  new DataView(ext.buffer).setUint16(36, 100, true);
  assert.equal(errnoOf(s.handle(ext, 4096)), Errno.EINVAL);
  const short = s.handle(new Uint8Array(20), 4096) as FuseReply;
  assert.equal(-new DataView(short.head.buffer, short.head.byteOffset).getInt32(4, true), Errno.EINVAL, 'shorter than a header: EINVAL (unique 0)');
});

test('nodeids the server never handed out are ESTALE; unknown opcodes ENOSYS; before INIT EIO', () => {
  const s = fresh();
  assert.equal(errnoOf(s.handle(fuseRequest(Op.GETATTR, 7n, 12345, [new Uint8Array(16)]), 4096)), Errno.ESTALE);
  assert.equal(errnoOf(s.handle(fuseRequest(Op.GETATTR, 7n, 0, [new Uint8Array(16)]), 4096)), Errno.ESTALE);
  const link = new Uint8Array(8);
  new DataView(link.buffer).setBigUint64(0, 2n ** 63n, true);
  assert.equal(errnoOf(s.handle(fuseRequest(Op.LINK, 7n, 1, [link, cstr('x')]), 4096)), Errno.EINVAL, 'a nodeid past 2^53');
  for (const op of [9999, Op.IOCTL, Op.SETUPMAPPING, Op.BMAP, Op.POLL]) assert.equal(errnoOf(s.handle(fuseRequest(op, 7n, 1, []), 4096)), Errno.ENOSYS, `opcode ${op}`);
  const cold = new FuseServer(new MemoryFs());
  assert.equal(errnoOf(cold.handle(fuseRequest(Op.GETATTR, 7n, 1, [new Uint8Array(16)]), 4096)), Errno.EIO);
  assert.equal(cold.handle(fuseRequest(Op.FORGET, 7n, 1, [new Uint8Array(8)]), 4096), null, 'FORGET gets no reply, even then');
});

test('room: a reply never exceeds the driver\'s writable bytes (READ is cut to fit; no room for a header: no reply)', () => {
  const s = fresh();
  const fs = s.provider as MemoryFs;
  fs.write(2, 0, 0, new Uint8Array(5000));
  const r = new Uint8Array(Size.readIn);
  new DataView(r.buffer).setUint32(16, 5000, true);
  const reply = s.handle(fuseRequest(Op.READ, 7n, 2, [r]), 100) as FuseReply;
  assert.equal(reply.length, 100);
  assert.equal(s.handle(fuseRequest(Op.GETATTR, 7n, 1, [new Uint8Array(16)]), 8), null);
  assert.equal(errnoOf(s.handle(fuseRequest(Op.GETATTR, 7n, 1, [new Uint8Array(16)]), 40)), Errno.EIO, 'attr_out does not fit 40 bytes');
});

test('BATCH_FORGET whose count is larger than its entries: only the entries there are taken', () => {
  const s = fresh();
  assert.equal(s.lookupCount(2), 1);
  const b = new Uint8Array(8 + 16);
  const v = new DataView(b.buffer);
  v.setUint32(0, 0xffffffff, true);
  v.setBigUint64(8, 2n, true);
  v.setBigUint64(16, 0xffffffffffffffffn, true);
  assert.equal(s.handle(fuseRequest(Op.BATCH_FORGET, 7n, 0, [b]), 0), null);
  assert.equal(s.lookupCount(2), 0);
});

test('a provider that throws something other than FsError: EIO, logged, the server goes on', () => {
  const fs = new MemoryFs();
  const logged: string[] = [];
  const bad = Object.assign(Object.create(fs) as MemoryFs, {
    lookup: () => {
      throw new RangeError('bug');
    },
    getattr: () => ({ ino: -1 }),
  });
  const s = new FuseServer(bad, { log: (m) => logged.push(m) });
  s.handle(fuseRequest(Op.INIT, 1n, 0, [u32(7, 38, 0, 0)]), 4096);
  assert.equal(errnoOf(s.handle(fuseRequest(Op.LOOKUP, 7n, 1, [cstr('x')]), 4096)), Errno.EIO);
  assert.equal(errnoOf(s.handle(fuseRequest(Op.GETATTR, 7n, 1, [new Uint8Array(16)]), 4096)), Errno.EIO, 'attributes without a valid ino');
  assert.equal(logged.length, 2);
});

test('INIT: an older protocol is refused (EPROTO); a newer major gets ours alone to retry with', () => {
  const s = new FuseServer(new MemoryFs());
  assert.equal(errnoOf(s.handle(fuseRequest(Op.INIT, 7n, 0, [u32(7, 20, 0, 0)]), 4096)), Errno.EPROTO);
  const r = s.handle(fuseRequest(Op.INIT, 7n, 0, [u32(8, 0, 0, 0)]), 4096) as FuseReply;
  assert.equal(r.length, 16 + 8);
  assert.equal(new DataView(r.head.buffer, r.head.byteOffset).getUint32(16, true), 7);
  assert.equal(s.initialized, false);
});

test('random requests (valid headers, random bodies and opcodes) never throw and always fit', () => {
  const s = fresh();
  let seed = 12345;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) / (1 << 24);
  for (let i = 0; i < 20000; i++) {
    const body = new Uint8Array(Math.floor(rnd() * 200));
    for (let j = 0; j < body.length; j++) body[j] = rnd() < 0.3 ? 0 : Math.floor(rnd() * 256);
    const op = rnd() < 0.9 ? 1 + Math.floor(rnd() * 51) : Math.floor(rnd() * 5000);
    const room = Math.floor(rnd() * 600);
    const r = s.handle(fuseRequest(op, BigInt(i), Math.floor(rnd() * 6), [body]), room);
    if (r !== null && !(r instanceof Promise)) assert.ok(r.length <= room && r.length >= 16);
    if (!s.initialized) s.handle(fuseRequest(Op.INIT, 1n, 0, [u32(7, 38, 0, 0xffffffff)]), 4096);
  }
});
