/**
 * ChainReader / ChainWriter over chains whose values straddle buffer (segment) boundaries
 * and memory-region boundaries: typed little-endian access, remaining / position, limit(),
 * and a VirtqueueError of kind chain-bounds (never a partial advance) past the end.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { GuestMemory, MemoryError } from '../src/memory/guest-memory.js';
import { ChainReader, ChainWriter, DescriptorChain } from '../src/virtqueue/chain.js';
import { VirtqueueError } from '../src/virtqueue/errors.js';

/** Two adjacent regions [0, 0x200) and [0x200, 0x400), and one more at 0x1000 after a hole. */
function memory(): GuestMemory {
  return new GuestMemory([
    { guestAddr: 0, size: 0x200, buffer: new ArrayBuffer(0x200) },
    { guestAddr: 0x200, size: 0x200, buffer: new ArrayBuffer(0x201), offset: 1 },
    { guestAddr: 0x1000, size: 0x100, buffer: new ArrayBuffer(0x100) },
  ]);
}

/** Builds a chain by hand: `readable` segments first, then `writable` ones. */
function chainOf(readable: [number, number][], writable: [number, number][]): DescriptorChain {
  const c = new DescriptorChain(64);
  c.clear(3);
  for (const [addr, len] of readable) {
    c.addrs[c.count] = addr;
    c.lens[c.count] = len;
    c.count++;
    c.readable = c.count;
    c.readableBytes += len;
  }
  for (const [addr, len] of writable) {
    c.addrs[c.count] = addr;
    c.lens[c.count] = len;
    c.count++;
    c.writableBytes += len;
  }
  return c;
}

function throwsBounds(fn: () => unknown, what: string): void {
  assert.throws(fn, (err: unknown) => err instanceof VirtqueueError && err.kind === 'chain-bounds' && !(err instanceof RangeError), what);
}

test('ChainReader: typed little-endian reads across segment boundaries', () => {
  const mem = memory();
  // 15 bytes 0x01..0x0f split 1 | 0 | 3 | 2 | 9, the last one crossing the region boundary.
  const segs: [number, number][] = [
    [0x10, 1],
    [0x40, 0],
    [0x80, 3],
    [0x1000, 2],
    [0x1fc, 9],
  ];
  let v = 1;
  for (const [a, n] of segs) for (let i = 0; i < n; i++) mem.writeU8(a + i, v++);
  const c = chainOf(segs, [[0x300, 8]]);
  const r = new ChainReader().reset(mem, c);
  assert.equal(r.remaining, 15);
  assert.equal(r.position, 0);
  assert.equal(r.readU16(), 0x0201); // straddles 1 | (empty) | 3
  assert.equal(r.readU32(), 0x06050403); // straddles 3 | 2
  assert.equal(r.position, 6);
  assert.equal(r.remaining, 9);
  assert.equal(r.readU64(), 0x0e0d0c0b0a090807n); // straddles 2 | 9 and the region boundary
  assert.equal(r.readU8(), 0x0f);
  assert.equal(r.remaining, 0);
  throwsBounds(() => r.readU8(), 'past the end');
  assert.equal(r.position, 15);
});

test('ChainWriter: typed little-endian writes across segment and region boundaries; readable part untouched', () => {
  const mem = memory();
  const c = chainOf(
    [[0x20, 4]],
    [
      [0x1fe, 3], // crosses into the second region
      [0x1000, 1],
      [0x1010, 0],
      [0x50, 12],
    ],
  );
  mem.fill(0x20, 4, 0xee);
  const w = new ChainWriter().reset(mem, c);
  assert.equal(w.remaining, 16);
  w.writeU16(0xbbaa);
  w.writeU32(0x44332211);
  w.writeU64(0x0807060504030201n);
  w.writeU8(0x99);
  assert.equal(w.position, 15);
  assert.equal(w.remaining, 1);
  throwsBounds(() => w.writeU16(1), 'u16 with one byte left');
  assert.equal(w.remaining, 1, 'a refused write does not advance');
  w.fill(1, 0x5a);
  throwsBounds(() => w.writeU8(0), 'past the end');
  const got = new Uint8Array(16);
  mem.read(0x1fe, got.subarray(0, 3));
  got[3] = mem.readU8(0x1000);
  mem.read(0x50, got.subarray(4, 16));
  assert.deepEqual([...got], [0xaa, 0xbb, 0x11, 0x22, 0x33, 0x44, 1, 2, 3, 4, 5, 6, 7, 8, 0x99, 0x5a]);
  assert.deepEqual([...mem.bytes(0x20, 4)], [0xee, 0xee, 0xee, 0xee]);
});

test('ChainReader: limit() caps remaining, never raises it; readSome() stops at the limit', () => {
  const mem = memory();
  mem.write(0x100, Uint8Array.from({ length: 10 }, (_, i) => i));
  const c = chainOf(
    [
      [0x100, 4],
      [0x104, 6],
    ],
    [],
  );
  const r = new ChainReader().reset(mem, c).limit(6);
  assert.equal(r.remaining, 6);
  r.limit(100);
  assert.equal(r.remaining, 6, 'limit cannot raise remaining');
  const dst = new Uint8Array(8);
  assert.equal(r.readSome(dst), 6);
  assert.deepEqual([...dst], [0, 1, 2, 3, 4, 5, 0, 0]);
  assert.equal(r.position, 6);
  assert.equal(r.readSome(dst), 0);
  throwsBounds(() => r.skip(1), 'skip past the limit');
  // reset() forgets the limit.
  r.reset(mem, c);
  assert.equal(r.remaining, 10);
  r.skip(9);
  assert.equal(r.readU8(), 9);
});

test('ChainWriter.produce: one guest view per piece, the write hook sees each piece', () => {
  const mem = memory();
  const calls: [number, number][] = [];
  mem.onWrite = (a, n) => calls.push([a, n]);
  // A device-made chain never has a piece straddling regions (pushBuffer splits there).
  const c = chainOf(
    [],
    [
      [0x1f8, 8],
      [0x200, 4],
      [0x1004, 5],
    ],
  );
  const w = new ChainWriter().reset(mem, c);
  const sizes: number[] = [];
  let k = 0;
  w.produce(15, (view) => {
    sizes.push(view.length);
    view.fill(++k);
  });
  assert.deepEqual(sizes, [8, 4, 3]);
  assert.deepEqual(calls, [
    [0x1f8, 8],
    [0x200, 4],
    [0x1004, 3],
  ]);
  assert.deepEqual([...mem.bytes(0x1f8, 8)], [1, 1, 1, 1, 1, 1, 1, 1]);
  assert.deepEqual([...mem.bytes(0x200, 4)], [2, 2, 2, 2]);
  assert.deepEqual([...mem.bytes(0x1004, 5)], [3, 3, 3, 0, 0]);
  assert.equal(w.remaining, 2);
  throwsBounds(() => w.produce(3, () => undefined), 'produce past the end');
});

// ------------------------------------------------------------------ properties

type CursorOp = { k: 'u8' | 'u16' | 'u32' | 'u64' } | { k: 'bytes' | 'skip' | 'some' | 'limit' | 'fill'; n: number };

const cursorOpArb: fc.Arbitrary<CursorOp> = fc.oneof(
  fc.record({ k: fc.constantFrom('u8' as const, 'u16' as const, 'u32' as const, 'u64' as const) }),
  fc.record({ k: fc.constantFrom('bytes' as const, 'skip' as const, 'some' as const, 'limit' as const, 'fill' as const), n: fc.integer({ min: 0, max: 24 }) }),
);

/**
 * A random segmentation of `total` bytes (some segments empty), each segment placed at its
 * own address in the two adjacent regions [0, 0x400) with gaps, so segments may cross the
 * region boundary at 0x200.
 */
const segmentsArb = fc
  .array(fc.record({ len: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 12 })), gap: fc.integer({ min: 0, max: 20 }) }), { minLength: 1, maxLength: 14 })
  .chain((parts) => fc.tuple(fc.constant(parts), fc.integer({ min: 0x1a0, max: 0x1f0 })))
  .map(([parts, start]) => {
    const segs: [number, number][] = [];
    let cur = start;
    for (const p of parts) {
      cur += p.gap;
      segs.push([cur, p.len]);
      cur += p.len;
    }
    return segs;
  });

const WIDTHS = { u8: 1, u16: 2, u32: 4, u64: 8 } as const;

test('ChainReader: property: reads match a DataView over the concatenated segments; bounds are exact', () => {
  fc.assert(
    fc.property(segmentsArb, fc.array(cursorOpArb, { minLength: 1, maxLength: 30 }), fc.integer({ min: 0, max: 255 }), (segs, ops, salt) => {
      const mem = memory();
      // Reader over the segments: the concatenation is the model.
      const model: number[] = [];
      for (const [a, n] of segs) {
        for (let i = 0; i < n; i++) {
          const b = (a * 7 + i * 13 + salt) & 0xff;
          mem.writeU8(a + i, b);
          model.push(b);
        }
      }
      const mv = new DataView(Uint8Array.from(model).buffer);
      const c = chainOf(segs, [[0x1000, 16]]);
      const r = new ChainReader().reset(mem, c);
      let pos = 0;
      let remaining = model.length;
      for (const op of ops) {
        const n = 'n' in op ? op.n : WIDTHS[op.k as keyof typeof WIDTHS];
        if (op.k === 'limit') {
          r.limit(n);
          remaining = Math.min(remaining, n);
        } else if (op.k === 'some') {
          const dst = new Uint8Array(n);
          const got = r.readSome(dst);
          const want = Math.min(n, remaining);
          assert.equal(got, want);
          assert.deepEqual([...dst.subarray(0, got)], model.slice(pos, pos + got));
          pos += got;
          remaining -= got;
        } else if (op.k === 'fill') {
          continue; // writer-only
        } else if (n > remaining) {
          throwsBounds(() => {
            if (op.k === 'u8') r.readU8();
            else if (op.k === 'u16') r.readU16();
            else if (op.k === 'u32') r.readU32();
            else if (op.k === 'u64') r.readU64();
            else if (op.k === 'skip') r.skip(n);
            else r.read(new Uint8Array(n));
          }, `${op.k}(${n}) with ${remaining} left`);
        } else {
          if (op.k === 'u8') assert.equal(r.readU8(), mv.getUint8(pos));
          else if (op.k === 'u16') assert.equal(r.readU16(), mv.getUint16(pos, true));
          else if (op.k === 'u32') assert.equal(r.readU32(), mv.getUint32(pos, true));
          else if (op.k === 'u64') assert.equal(r.readU64(), mv.getBigUint64(pos, true));
          else if (op.k === 'skip') r.skip(n);
          else {
            const dst = new Uint8Array(n);
            r.read(dst);
            assert.deepEqual([...dst], model.slice(pos, pos + n));
          }
          pos += n;
          remaining -= n;
        }
        assert.equal(r.position, pos, `position after ${op.k}`);
        assert.equal(r.remaining, remaining, `remaining after ${op.k}`);
      }
    }),
    { numRuns: 300 },
  );
});

test('ChainWriter: property: writes land in the concatenated writable segments and nowhere else', () => {
  fc.assert(
    fc.property(segmentsArb, fc.array(cursorOpArb, { minLength: 1, maxLength: 30 }), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), (segs, ops, value) => {
      const mem = memory();
      const readableSeg: [number, number] = [0x1000, 8];
      mem.fill(0, 0x400, 0xcc);
      mem.fill(0x1000, 0x100, 0xcc);
      const c = chainOf([readableSeg], segs);
      const total = segs.reduce((n, [, l]) => n + l, 0);
      const model = new Array<number>(total).fill(0xcc);
      const w = new ChainWriter().reset(mem, c);
      let pos = 0;
      let remaining = total;
      let step = 0;
      for (const op of ops) {
        step++;
        const n = 'n' in op ? op.n : WIDTHS[op.k as keyof typeof WIDTHS];
        if (op.k === 'limit') {
          w.limit(n);
          remaining = Math.min(remaining, n);
          continue;
        }
        if (op.k === 'some') continue; // reader-only
        if (n > remaining) {
          throwsBounds(() => {
            if (op.k === 'u8') w.writeU8(1);
            else if (op.k === 'u16') w.writeU16(1);
            else if (op.k === 'u32') w.writeU32(1);
            else if (op.k === 'u64') w.writeU64(1n);
            else if (op.k === 'skip') w.skip(n);
            else if (op.k === 'fill') w.fill(n, 1);
            else w.write(new Uint8Array(n));
          }, `${op.k}(${n}) with ${remaining} left`);
        } else {
          const bytes = new Uint8Array(8);
          const dv = new DataView(bytes.buffer);
          dv.setBigUint64(0, value ^ BigInt(step), true);
          let put: number[] | null;
          if (op.k === 'u8') {
            w.writeU8(bytes[0]);
            put = [bytes[0]];
          } else if (op.k === 'u16') {
            w.writeU16(dv.getUint16(0, true));
            put = [...bytes.subarray(0, 2)];
          } else if (op.k === 'u32') {
            w.writeU32(dv.getUint32(0, true));
            put = [...bytes.subarray(0, 4)];
          } else if (op.k === 'u64') {
            w.writeU64(value ^ BigInt(step));
            put = [...bytes];
          } else if (op.k === 'fill') {
            w.fill(n, step & 0xff);
            put = new Array<number>(n).fill(step & 0xff);
          } else if (op.k === 'skip') {
            w.skip(n);
            put = null;
          } else {
            const src = Uint8Array.from({ length: n }, (_, i) => (i + step * 3) & 0xff);
            w.write(src);
            put = [...src];
          }
          if (put !== null) for (let i = 0; i < n; i++) model[pos + i] = put[i];
          pos += n;
          remaining -= n;
        }
        assert.equal(w.position, pos);
        assert.equal(w.remaining, remaining);
      }
      // The writable segments hold the model; every other byte is still 0xcc.
      const inSeg = new Set<number>();
      let k = 0;
      for (const [a, l] of segs) {
        for (let i = 0; i < l; i++, k++) {
          assert.equal(mem.readU8(a + i), model[k], `writable byte ${k} at ${a + i}`);
          inSeg.add(a + i);
        }
      }
      for (let a = 0; a < 0x400; a++) if (!inSeg.has(a)) assert.equal(mem.readU8(a), 0xcc, `byte at ${a} outside the writable part`);
      assert.deepEqual([...mem.bytes(0x1000, 0x100)], new Array(0x100).fill(0xcc), 'readable part and other regions untouched');
    }),
    { numRuns: 300 },
  );
});

test('ChainReader.readU64Number: a number below 2^53 across segments; from 2^53 on VirtqueueError unsafe-integer, nothing consumed', () => {
  const mem = memory();
  const c = chainOf(
    [
      [0x10, 3],
      [0x1fe, 5], // crosses into the second region
      [0x40, 8],
      [0x80, 4],
    ],
    [[0x300, 8]],
  );
  const v = 2 ** 53 - 3;
  const w = new ChainWriter();
  // Write the values with a writer over a chain of the same buffers made writable.
  const wc = chainOf([], [[0x10, 3], [0x1fe, 5], [0x40, 8], [0x80, 4]]);
  w.reset(mem, wc).writeU64(v); // split 3 | 5, across regions
  w.writeU64(2n ** 60n + 5n);
  w.writeU32(7);
  const r = new ChainReader().reset(mem, c);
  assert.equal(r.readU64Number(), v);
  const pos = r.position;
  assert.throws(
    () => r.readU64Number(),
    (err: unknown) => err instanceof VirtqueueError && err.kind === 'unsafe-integer',
  );
  assert.equal(r.position, pos, 'nothing consumed');
  assert.equal(r.remaining, 12);
  assert.equal(r.readU64(), 2n ** 60n + 5n);
  // 4 bytes left: a 64-bit read throws chain-bounds and consumes nothing (bigint or number).
  throwsBounds(() => r.readU64(), 'readU64 with 4 bytes left');
  throwsBounds(() => r.readU64Number(), 'readU64Number with 4 bytes left');
  assert.equal(r.remaining, 4);
  assert.equal(r.readU32(), 7);
});

test('ChainReader.readInto / ChainWriter.writeFrom: parts of host arrays across segments; a bad host range is a RangeError', () => {
  const mem = memory();
  const c = chainOf(
    [],
    [
      [0x1f0, 0x20], // crosses into the second region
      [0x1000, 0x10],
    ],
  );
  const src = Uint8Array.from({ length: 0x40 }, (_, i) => i + 1);
  const w = new ChainWriter().reset(mem, c);
  w.writeFrom(src, 3, 0x30);
  assert.equal(w.remaining, 0);
  const rc = chainOf(
    [
      [0x1f0, 0x20],
      [0x1000, 0x10],
    ],
    [],
  );
  const dst = new Uint8Array(0x34);
  const r = new ChainReader().reset(mem, rc);
  r.readInto(dst, 2, 0x30);
  assert.deepEqual([...dst.subarray(2, 0x32)], [...src.subarray(3, 0x33)]);
  assert.throws(() => new ChainReader().reset(mem, rc).readInto(dst, 0x30, 8), RangeError);
  assert.throws(() => new ChainWriter().reset(mem, c).writeFrom(src, 0x3c, 8), RangeError);
});

test('cursors never touch a region removed while they are in its buffer (GuestMemory.generation): MemoryError out-of-bounds', () => {
  const mem = memory();
  const c = chainOf([[0x1000, 16]], [[0x1010, 16]]);
  const r = new ChainReader().reset(mem, c);
  const w = new ChainWriter().reset(mem, c);
  assert.equal(r.readU32(), 0);
  w.writeU32(5);
  const gen = mem.generation;
  mem.removeRegions(0x1000, 0x100);
  assert.notEqual(mem.generation, gen);
  const gone = (err: unknown) => err instanceof MemoryError && err.kind === 'out-of-bounds';
  assert.throws(() => r.readU32(), gone);
  assert.throws(() => r.readU8(), gone);
  assert.throws(() => w.writeU32(1), gone);
  assert.throws(() => w.writeU8(1), gone);
  assert.throws(() => w.write(new Uint8Array(4)), gone);
});

test('a cursor reset after the regions changed looks its first segment up again: the region of the last window may be gone', () => {
  // init() opens the first window in the region of the last one when the segment lies there;
  // that region is trusted only while GuestMemory.generation has not moved (vhost-user
  // REM_MEM_REG then ADD_MEM_REG can put other memory at the same guest addresses). Every access
  // checks the generation again, so this holds even if init() stopped checking it.
  const old = new Uint8Array(0x100).fill(0x11);
  const fresh = new Uint8Array(0x100).fill(0x22);
  const mem = new GuestMemory([
    { guestAddr: 0, size: 0x1000, buffer: new ArrayBuffer(0x1000) },
    { guestAddr: 0x1000, size: 0x100, buffer: old.buffer },
  ]);
  const c = chainOf([[0x1010, 8]], [[0x1020, 8]]);
  const r = new ChainReader();
  const w = new ChainWriter();
  assert.equal(r.reset(mem, c).readU32(), 0x11111111);
  w.reset(mem, c).writeU8(0x33);
  assert.equal(old[0x20], 0x33);
  mem.removeRegions(0x1000, 0x100);
  mem.addRegions([{ guestAddr: 0x1000, size: 0x100, buffer: fresh.buffer }]);
  assert.equal(r.reset(mem, c).readU32(), 0x22222222);
  w.reset(mem, c).writeU8(0x44);
  assert.equal(fresh[0x20], 0x44);
  assert.equal(old[0x20], 0x33, 'nothing written to the removed region');
});

test('a cursor reset onto another GuestMemory never reads through a region of the first one', () => {
  const a = memory();
  const b = new GuestMemory([{ guestAddr: 0, size: 0x400, buffer: new ArrayBuffer(0x400) }]);
  a.writeU32(0x10, 0x11111111);
  b.writeU32(0x10, 0x22222222);
  const c = chainOf([[0x10, 8]], []);
  const r = new ChainReader();
  assert.equal(r.reset(a, c).readU32(), 0x11111111);
  assert.equal(r.reset(b, c).readU32(), 0x22222222);
  assert.equal(r.reset(a, c).readU32(), 0x11111111);
});
