/**
 * GuestMemory: region construction, checked access against a model of the regions,
 * little-endian accessors, copies across adjacent regions, no partial writes across holes,
 * the dirty-write hook, frontend (vhost-user) address translation, and regions added and
 * removed in place.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { GuestMemory, MemoryError, type MemoryErrorKind, type MemoryRegionInit } from '../src/memory/guest-memory.js';

// ------------------------------------------------------------------ helpers

/** Asserts that `fn` throws a MemoryError of `kind` (and so never a RangeError or anything else). */
function assertMemoryError(fn: () => unknown, what: string, kind: MemoryErrorKind): MemoryError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof MemoryError, `${what}: expected MemoryError, got ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
    assert.ok(!(err instanceof RangeError), `${what}: a MemoryError must not be a RangeError`);
    assert.equal(err.kind, kind, `${what}: kind`);
    return err;
  }
  assert.fail(`${what}: expected a MemoryError, nothing was thrown`);
}

function region(guestAddr: number, size: number, extra: Partial<MemoryRegionInit> = {}): MemoryRegionInit {
  const offset = extra.offset ?? 0;
  return { guestAddr, size, buffer: new ArrayBuffer(offset + size), ...extra };
}

/** A model of a region layout: every byte address that some region backs. */
interface Layout {
  inits: MemoryRegionInit[];
  spans: { start: number; end: number }[];
}

function modelContiguous(l: Layout, addr: number, len: number): boolean {
  if (!Number.isSafeInteger(addr) || !Number.isSafeInteger(len) || addr < 0 || len < 0) return false;
  return l.spans.some((s) => addr >= s.start && addr + len <= s.end);
}
function modelBacked(l: Layout, addr: number, len: number): boolean {
  if (!Number.isSafeInteger(addr) || !Number.isSafeInteger(len) || addr < 0 || len < 0) return false;
  for (let a = addr; a < addr + len; a++) if (!l.spans.some((s) => a >= s.start && a < s.end)) return false;
  return true;
}

/**
 * Random layouts: 1..4 regions, each 1..48 bytes, separated by a gap of 0 (adjacent) to 12
 * bytes, backed at a random byte offset (0..3) of its buffer so both the typed-array and
 * the DataView paths of the 16-bit accessors run. Given to the constructor shuffled.
 */
const layoutArb: fc.Arbitrary<Layout> = fc
  .record({
    base: fc.integer({ min: 0, max: 40 }),
    parts: fc.array(
      fc.record({ gap: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 12 })), size: fc.integer({ min: 1, max: 48 }), offset: fc.integer({ min: 0, max: 3 }) }),
      { minLength: 1, maxLength: 4 },
    ),
    order: fc.array(fc.nat(), { minLength: 4, maxLength: 4 }),
  })
  .map(({ base, parts, order }) => {
    const inits: MemoryRegionInit[] = [];
    const spans: { start: number; end: number }[] = [];
    let cur = base;
    parts.forEach((p, i) => {
      if (i > 0) cur += p.gap;
      inits.push({ guestAddr: cur, size: p.size, buffer: new ArrayBuffer(p.offset + p.size + 3), offset: p.offset });
      spans.push({ start: cur, end: cur + p.size });
      cur += p.size;
    });
    // Shuffle the inits (the constructor must sort them).
    const shuffled = inits.map((r, i) => ({ r, k: order[i % order.length] * 8 + i })).sort((a, b) => a.k - b.k).map((x) => x.r);
    return { inits: shuffled, spans };
  });

function snapshot(mem: GuestMemory): number[] {
  const out: number[] = [];
  for (const r of mem.regions) out.push(...r.bytes);
  return out;
}

/** The byte at a guest address per the regions' own backing views (independent of accessors). */
function byteAt(mem: GuestMemory, addr: number): number {
  for (const r of mem.regions) if (addr >= r.guestAddr && addr < r.end) return r.bytes[addr - r.guestAddr];
  throw new Error(`model: ${addr} is unbacked`);
}

function leValue(bytes: number[]): bigint {
  let v = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]);
  return v;
}

// ------------------------------------------------------------------ construction

test('GuestMemory: regions are sorted by guest address; adjacent regions are accepted', () => {
  const mem = new GuestMemory([region(0x3000, 0x100), region(0x1000, 0x1000), region(0x2000, 0x800)]);
  assert.deepEqual(
    mem.regions.map((r) => [r.guestAddr, r.end]),
    [
      [0x1000, 0x2000],
      [0x2000, 0x2800],
      [0x3000, 0x3100],
    ],
  );
  assert.equal(mem.size, 0x1000 + 0x800 + 0x100);
});

test('GuestMemory: overlapping regions are rejected with MemoryError, in any order', () => {
  const cases: [number, number][][] = [
    [
      [0, 16],
      [8, 16],
    ],
    [
      [8, 16],
      [0, 16],
    ],
    [
      [0, 100],
      [200, 10],
      [10, 5],
    ], // nested in the first
    [
      [0, 16],
      [0, 16],
    ], // same start
    [
      [100, 10],
      [50, 51],
    ], // overlaps by one byte
  ];
  for (const c of cases) {
    assertMemoryError(() => new GuestMemory(c.map(([a, s]) => region(a, s))), `regions ${JSON.stringify(c)}`, 'overlap');
  }
});

test('GuestMemory: property: construction succeeds iff no two regions overlap', () => {
  fc.assert(
    fc.property(fc.array(fc.record({ a: fc.integer({ min: 0, max: 200 }), s: fc.integer({ min: 1, max: 40 }) }), { minLength: 1, maxLength: 5 }), (rs) => {
      const overlap = rs.some((x, i) => rs.some((y, j) => i < j && x.a < y.a + y.s && y.a < x.a + x.s));
      let mem: GuestMemory | null = null;
      try {
        mem = new GuestMemory(rs.map((r) => region(r.a, r.s)));
      } catch (err) {
        assert.ok(err instanceof MemoryError && err.kind === 'overlap', `constructor threw ${String(err)}`);
      }
      assert.equal(mem === null, overlap, `regions ${JSON.stringify(rs)}`);
      if (mem !== null) {
        for (let i = 1; i < mem.regions.length; i++) assert.ok(mem.regions[i - 1].end <= mem.regions[i].guestAddr);
      }
    }),
    { numRuns: 300 },
  );
});

test('GuestMemory: invalid regions are rejected with MemoryError', () => {
  assertMemoryError(() => new GuestMemory([]), 'no region', 'no-region');
  assertMemoryError(() => new GuestMemory([region(0, 0)]), 'empty region', 'bad-region');
  assertMemoryError(() => new GuestMemory([{ guestAddr: -16, size: 16, buffer: new ArrayBuffer(16) }]), 'negative guest address', 'bad-region');
  assertMemoryError(() => new GuestMemory([{ guestAddr: 0, size: 32, buffer: new ArrayBuffer(16) }]), 'region larger than its buffer', 'bad-region');
  assertMemoryError(() => new GuestMemory([{ guestAddr: 0, size: 16, buffer: new ArrayBuffer(16), offset: 4 }]), 'offset pushes it out of its buffer', 'bad-region');
  assertMemoryError(() => new GuestMemory([{ guestAddr: Number.MAX_SAFE_INTEGER - 4, size: 16, buffer: new ArrayBuffer(16) }]), 'beyond 2^53', 'bad-region');
  assertMemoryError(() => new GuestMemory([{ guestAddr: 0.5, size: 16, buffer: new ArrayBuffer(16) }]), 'fractional guest address', 'bad-region');
});

test('GuestMemory.create: one zeroed region at the asked address, shared if asked', () => {
  const mem = GuestMemory.create(4096, { guestAddr: 0x10000, shared: true });
  assert.equal(mem.regions.length, 1);
  assert.equal(mem.regions[0].guestAddr, 0x10000);
  assert.equal(mem.size, 4096);
  assert.ok(mem.regions[0].bytes.buffer instanceof SharedArrayBuffer);
  assert.equal(mem.readU64(0x10000), 0n);
  assertMemoryError(() => mem.readU8(0xffff), 'just below the region', 'out-of-bounds');
  assertMemoryError(() => mem.readU8(0x11000), 'just past the region', 'out-of-bounds');
});

// ------------------------------------------------------------------ little-endian accessors

test('GuestMemory: u16/u32/u64 accessors are little-endian and truncate to their width', () => {
  const mem = GuestMemory.create(64);
  mem.writeU16(0, 0x1234);
  assert.deepEqual([...mem.bytes(0, 2)], [0x34, 0x12]);
  mem.writeU32(4, 0xdeadbeef);
  assert.deepEqual([...mem.bytes(4, 4)], [0xef, 0xbe, 0xad, 0xde]);
  assert.equal(mem.readU32(4), 0xdeadbeef);
  mem.writeU64(8, 0x0102030405060708n);
  assert.deepEqual([...mem.bytes(8, 8)], [8, 7, 6, 5, 4, 3, 2, 1]);
  assert.equal(mem.readU64(8), 0x0102030405060708n);
  // Numbers are accepted for u64 (descriptor addresses are JS numbers).
  mem.writeU64(16, 2 ** 40 + 5);
  assert.equal(mem.readU64(16), 2n ** 40n + 5n);
  assert.equal(mem.readU32(16), 5);
  assert.equal(mem.readU32(20), 2 ** 8);
  // Negative u32 / u64 values wrap to their unsigned form.
  mem.writeU32(24, -1);
  assert.equal(mem.readU32(24), 0xffffffff);
  mem.writeU64(32, -1n);
  assert.equal(mem.readU64(32), 0xffffffffffffffffn);
  mem.writeU8(40, 0x1ff);
  assert.equal(mem.readU8(40), 0xff);
  // Unaligned accesses work (descriptors may sit anywhere in an indirect table).
  mem.writeU32(43, 0xa1b2c3d4);
  assert.equal(mem.readU32(43), 0xa1b2c3d4);
  assert.equal(mem.readU16(43), 0xc3d4);
  assert.equal(mem.readU8(46), 0xa1);
});

test('GuestMemory: property: typed writes then reads round-trip and store little-endian bytes', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 56 }), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.integer({ min: 0, max: 3 }), (addr, value, offset) => {
      const mem = new GuestMemory([{ guestAddr: 0, size: 64, buffer: new ArrayBuffer(64 + offset), offset }]);
      const expectBytes = (width: number, v: bigint) => Array.from({ length: width }, (_, i) => Number((v >> BigInt(8 * i)) & 0xffn));
      mem.writeU64(addr, value);
      assert.deepEqual([...mem.bytes(addr, 8)], expectBytes(8, value));
      assert.equal(mem.readU64(addr), value);
      const v32 = Number(value & 0xffffffffn);
      mem.writeU32(addr, v32);
      assert.deepEqual([...mem.bytes(addr, 4)], expectBytes(4, BigInt(v32)));
      assert.equal(mem.readU32(addr), v32);
      const v16 = v32 & 0xffff;
      mem.writeU16(addr, v16);
      assert.equal(mem.readU16(addr), v16);
      assert.equal(mem.loadU16(addr), v16);
      mem.storeU16(addr + 1, v16 ^ 0xa5a5);
      assert.equal(mem.readU16(addr + 1), v16 ^ 0xa5a5);
      assert.equal(mem.loadU16(addr + 1), v16 ^ 0xa5a5);
      assert.deepEqual([...mem.bytes(addr + 1, 2)], expectBytes(2, BigInt(v16 ^ 0xa5a5)));
    }),
    { numRuns: 200 },
  );
});

test('GuestMemory: loadU16/storeU16 use the atomic view when aligned and the DataView otherwise', () => {
  for (const offset of [0, 1, 2, 3]) {
    const buffer = new SharedArrayBuffer(offset + 32);
    const mem = new GuestMemory([{ guestAddr: 0x100, size: 32, buffer, offset }]);
    assert.equal(mem.regions[0].u16 !== null, offset % 2 === 0);
    for (const addr of [0x100, 0x101, 0x11e]) {
      mem.storeU16(addr, 0xbeef);
      assert.equal(mem.loadU16(addr), 0xbeef, `offset ${offset} addr ${addr}`);
      assert.equal(mem.readU16(addr), 0xbeef);
      assert.equal(new Uint8Array(buffer)[offset + addr - 0x100], 0xef);
      assert.equal(new Uint8Array(buffer)[offset + addr - 0x100 + 1], 0xbe);
    }
    assertMemoryError(() => mem.loadU16(0x11f), 'u16 load past the end', 'out-of-bounds');
    assertMemoryError(() => mem.storeU16(0xff, 1), 'u16 store before the start', 'out-of-bounds');
  }
});

// ------------------------------------------------------------------ checked access vs a model

type Op =
  | { k: 'u8' | 'u16' | 'u32' | 'u64' | 'load16'; addr: number }
  | { k: 'w8' | 'w16' | 'w32' | 'w64' | 'store16'; addr: number; v: bigint }
  | { k: 'read' | 'bytes'; addr: number; len: number }
  | { k: 'write'; addr: number; data: number[] }
  | { k: 'fill'; addr: number; len: number; v: number };

const WIDTH: Record<string, number> = { u8: 1, u16: 2, u32: 4, u64: 8, load16: 2, w8: 1, w16: 2, w32: 4, w64: 8, store16: 2 };

function opArb(maxAddr: number): fc.Arbitrary<Op> {
  const addr = fc.oneof(
    { weight: 8, arbitrary: fc.integer({ min: -4, max: maxAddr + 8 }) },
    { weight: 1, arbitrary: fc.constantFrom(-1, Number.NaN, Infinity, -Infinity, 2 ** 53, Number.MAX_SAFE_INTEGER, 2 ** 64) },
  );
  const value = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
  return fc.oneof(
    fc.record({ k: fc.constantFrom('u8' as const, 'u16' as const, 'u32' as const, 'u64' as const, 'load16' as const), addr }),
    fc.record({ k: fc.constantFrom('w8' as const, 'w16' as const, 'w32' as const, 'w64' as const, 'store16' as const), addr, v: value }),
    fc.record({ k: fc.constantFrom('read' as const, 'bytes' as const), addr, len: fc.integer({ min: 1, max: 40 }) }),
    fc.record({ k: fc.constant('write' as const), addr, data: fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 40 }) }),
    fc.record({ k: fc.constant('fill' as const), addr, len: fc.integer({ min: 1, max: 40 }), v: fc.integer({ min: 0, max: 255 }) }),
  );
}

test('GuestMemory: property: every access succeeds exactly when the model says so, otherwise MemoryError and no change', () => {
  fc.assert(
    fc.property(
      layoutArb.chain((l) => fc.tuple(fc.constant(l), fc.array(opArb(l.spans[l.spans.length - 1].end), { minLength: 1, maxLength: 40 }))),
      ([layout, ops]) => {
        const mem = new GuestMemory(layout.inits);
        // Sorted, same spans as the model.
        assert.deepEqual(
          mem.regions.map((r) => ({ start: r.guestAddr, end: r.end })),
          layout.spans,
        );
        const writes: [number, number][] = [];
        mem.onWrite = (a, n) => writes.push([a, n]);
        let seed = 1;
        for (const r of mem.regions) for (let i = 0; i < r.size; i++) r.bytes[i] = (seed = (seed * 73 + 41) & 0xff);

        for (const op of ops) {
          const before = snapshot(mem);
          writes.length = 0;
          const width = 'len' in op ? op.len : 'data' in op ? op.data.length : WIDTH[op.k];
          const contiguous = modelContiguous(layout, op.addr, width);
          const backed = modelBacked(layout, op.addr, width);
          assert.equal(mem.isContiguous(op.addr, width), contiguous, `isContiguous(${op.addr}, ${width})`);
          assert.equal(mem.isBacked(op.addr, width), backed, `isBacked(${op.addr}, ${width})`);
          assert.equal(mem.regionFor(op.addr, width) !== null, contiguous, `regionFor(${op.addr}, ${width})`);
          // Typed accessors and bytes() need one region; read/write/fill only need every byte backed.
          const ok = op.k === 'read' || op.k === 'write' || op.k === 'fill' ? backed : contiguous;
          const what = `${op.k} at ${op.addr} (+${width}) over ${JSON.stringify(layout.spans)}`;
          if (!ok) {
            assertMemoryError(() => {
              switch (op.k) {
                case 'u8':
                  return mem.readU8(op.addr);
                case 'u16':
                  return mem.readU16(op.addr);
                case 'u32':
                  return mem.readU32(op.addr);
                case 'u64':
                  return mem.readU64(op.addr);
                case 'load16':
                  return mem.loadU16(op.addr);
                case 'w8':
                  return mem.writeU8(op.addr, Number(op.v & 0xffn));
                case 'w16':
                  return mem.writeU16(op.addr, Number(op.v & 0xffffn));
                case 'w32':
                  return mem.writeU32(op.addr, Number(op.v & 0xffffffffn));
                case 'w64':
                  return mem.writeU64(op.addr, op.v);
                case 'store16':
                  return mem.storeU16(op.addr, Number(op.v & 0xffffn));
                case 'read':
                  return mem.read(op.addr, new Uint8Array(op.len));
                case 'bytes':
                  return mem.bytes(op.addr, op.len);
                case 'write':
                  return mem.write(op.addr, Uint8Array.from(op.data));
                case 'fill':
                  return mem.fill(op.addr, op.len, op.v);
              }
            }, what, 'out-of-bounds');
            assert.deepEqual(snapshot(mem), before, `${what}: a failed access changed memory`);
            assert.deepEqual(writes, [], `${what}: onWrite called for a failed access`);
            continue;
          }
          const expected = (n: number) => Array.from({ length: n }, (_, i) => byteAt(mem, op.addr + i));
          switch (op.k) {
            case 'u8':
              assert.equal(mem.readU8(op.addr), expected(1)[0], what);
              break;
            case 'u16':
              assert.equal(mem.readU16(op.addr), Number(leValue(expected(2))), what);
              break;
            case 'load16':
              assert.equal(mem.loadU16(op.addr), Number(leValue(expected(2))), what);
              break;
            case 'u32':
              assert.equal(mem.readU32(op.addr), Number(leValue(expected(4))), what);
              break;
            case 'u64':
              assert.equal(mem.readU64(op.addr), leValue(expected(8)), what);
              break;
            case 'read': {
              const dst = new Uint8Array(op.len);
              mem.read(op.addr, dst);
              assert.deepEqual([...dst], expected(op.len), what);
              break;
            }
            case 'bytes': {
              const view = mem.bytes(op.addr, op.len);
              assert.deepEqual([...view], expected(op.len), what);
              // It is a view, not a copy.
              const old = view[0];
              view[0] = old ^ 0xff;
              assert.equal(byteAt(mem, op.addr), old ^ 0xff, `${what}: bytes() is not a view`);
              assert.equal(mem.readU8(op.addr), old ^ 0xff);
              view[0] = old;
              break;
            }
            default: {
              // Writes: compute the expected bytes, check only those changed, check the hook.
              let data: number[];
              switch (op.k) {
                case 'w8':
                  data = [Number(op.v & 0xffn)];
                  mem.writeU8(op.addr, Number(op.v & 0xffn));
                  break;
                case 'w16':
                case 'store16':
                  data = [Number(op.v & 0xffn), Number((op.v >> 8n) & 0xffn)];
                  if (op.k === 'w16') mem.writeU16(op.addr, Number(op.v & 0xffffn));
                  else mem.storeU16(op.addr, Number(op.v & 0xffffn));
                  break;
                case 'w32':
                  data = [0, 1, 2, 3].map((i) => Number((op.v >> BigInt(8 * i)) & 0xffn));
                  mem.writeU32(op.addr, Number(op.v & 0xffffffffn));
                  break;
                case 'w64':
                  data = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => Number((op.v >> BigInt(8 * i)) & 0xffn));
                  mem.writeU64(op.addr, op.v);
                  break;
                case 'write':
                  data = op.data;
                  mem.write(op.addr, Uint8Array.from(op.data));
                  break;
                case 'fill':
                  data = new Array<number>(op.len).fill(op.v);
                  mem.fill(op.addr, op.len, op.v);
                  break;
              }
              assert.deepEqual(expected(data.length), data, what);
              // Nothing else changed.
              const after = snapshot(mem);
              let flat = 0;
              for (const r of mem.regions) {
                for (let i = 0; i < r.size; i++, flat++) {
                  const a = r.guestAddr + i;
                  if (a >= op.addr && a < op.addr + data.length) continue;
                  assert.equal(after[flat], before[flat], `${what}: byte at ${a} changed`);
                }
              }
              assert.deepEqual(writes, [[op.addr, data.length]], `${what}: onWrite ranges`);
            }
          }
        }
      },
    ),
    { numRuns: 250 },
  );
});

// ------------------------------------------------------------------ adjacent regions and holes

test('GuestMemory: read/write/fill copy across two adjacent regions (separate buffers)', () => {
  const a = new ArrayBuffer(16);
  const b = new ArrayBuffer(16);
  const mem = new GuestMemory([
    { guestAddr: 0x110, size: 16, buffer: b },
    { guestAddr: 0x100, size: 16, buffer: a },
  ]);
  const src = Uint8Array.from({ length: 20 }, (_, i) => i + 1);
  mem.write(0x106, src);
  assert.deepEqual([...new Uint8Array(a)].slice(6), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  assert.deepEqual([...new Uint8Array(b)].slice(0, 10), [11, 12, 13, 14, 15, 16, 17, 18, 19, 20]);
  const dst = new Uint8Array(20);
  mem.read(0x106, dst);
  assert.deepEqual(dst, src);
  mem.fill(0x10e, 4, 0x77);
  assert.deepEqual([...new Uint8Array(a)].slice(14), [0x77, 0x77]);
  assert.deepEqual([...new Uint8Array(b)].slice(0, 3), [0x77, 0x77, 13]);
  // A whole-memory copy.
  const all = new Uint8Array(32);
  mem.read(0x100, all);
  assert.equal(all[0x0e], 0x77);
  assert.equal(all[0x12], 13);
  // Typed accessors need one view: straddling the boundary is a MemoryError even though backed.
  assert.ok(mem.isBacked(0x10e, 4));
  assert.ok(!mem.isContiguous(0x10e, 4));
  assertMemoryError(() => mem.readU32(0x10e), 'u32 across adjacent regions', 'out-of-bounds');
  assertMemoryError(() => mem.bytes(0x10f, 2), 'bytes() across adjacent regions', 'out-of-bounds');
});

test('GuestMemory: write/fill across a hole throw MemoryError and write nothing; read across a hole throws', () => {
  const mem = new GuestMemory([region(0x100, 16), region(0x120, 16)]);
  const calls: [number, number][] = [];
  mem.onWrite = (a, n) => calls.push([a, n]);
  const before = snapshot(mem);
  const e = assertMemoryError(() => mem.write(0x10c, new Uint8Array(8).fill(0xaa)), 'write into the hole', 'out-of-bounds');
  assert.equal(e.addr, 0x10c);
  assert.equal(e.length, 8);
  assertMemoryError(() => mem.write(0x10c, new Uint8Array(0x20).fill(0xaa)), 'write over the hole into the next region', 'out-of-bounds');
  assertMemoryError(() => mem.fill(0x108, 0x20, 0xbb), 'fill over the hole', 'out-of-bounds');
  assertMemoryError(() => mem.fill(0x11c, 8, 0xbb), 'fill starting in the hole', 'out-of-bounds');
  assertMemoryError(() => mem.read(0x10c, new Uint8Array(8)), 'read into the hole', 'out-of-bounds');
  assertMemoryError(() => mem.read(0x0fc, new Uint8Array(8)), 'read from below memory', 'out-of-bounds');
  assertMemoryError(() => mem.write(0x12c, new Uint8Array(8)), 'write past the end', 'out-of-bounds');
  assert.deepEqual(snapshot(mem), before);
  assert.deepEqual(calls, []);
  // The error names the range.
  assert.match(e.message, /0x10c/);
});

// ------------------------------------------------------------------ the write hook

test('GuestMemory: onWrite sees every write with its exact range (and nothing for reads)', () => {
  const mem = new GuestMemory([region(0, 32), region(32, 32)]);
  const calls: [number, number][] = [];
  mem.onWrite = (a, n) => calls.push([a, n]);
  mem.writeU8(1, 1);
  mem.writeU16(2, 2);
  mem.writeU32(4, 4);
  mem.writeU64(8, 8n);
  mem.storeU16(17, 1);
  mem.write(30, new Uint8Array(5));
  mem.fill(28, 10, 1);
  mem.write(0, new Uint8Array(0));
  mem.fill(0, 0);
  mem.readU64(0);
  mem.read(0, new Uint8Array(64));
  mem.loadU16(2);
  assert.deepEqual(calls, [
    [1, 1],
    [2, 2],
    [4, 4],
    [8, 8],
    [17, 2],
    [30, 5],
    [28, 10],
  ]);
  mem.onWrite = null;
  mem.writeU32(0, 1); // no hook, no crash
  assert.equal(calls.length, 7);
});

// ------------------------------------------------------------------ frontend address translation

test('GuestMemory.userToGuest translates within regions that have a frontend address', () => {
  const mem = new GuestMemory([
    { guestAddr: 0, size: 0x1000, buffer: new ArrayBuffer(0x1000), userAddr: 0x7f0000000000 },
    { guestAddr: 0x100000, size: 0x2000, buffer: new ArrayBuffer(0x2000), userAddr: 0x7f0000100000 },
    { guestAddr: 0x200000, size: 0x1000, buffer: new ArrayBuffer(0x1000) }, // no frontend mapping
  ]);
  assert.equal(mem.userToGuest(0x7f0000000000, 16), 0);
  assert.equal(mem.userToGuest(0x7f0000000ff0, 16), 0xff0);
  assert.equal(mem.userToGuest(0x7f0000100010, 0x100), 0x100010);
  assert.equal(mem.userToGuest(0x7f0000101ff8, 8), 0x101ff8);
  assertMemoryError(() => mem.userToGuest(0x7f0000000ff8, 16), 'runs off the end of the mapping', 'unmapped');
  assertMemoryError(() => mem.userToGuest(0x7f0000001000, 1), 'just after the first mapping', 'unmapped');
  assertMemoryError(() => mem.userToGuest(0x7effffffffff, 1), 'just before the first mapping', 'unmapped');
  assertMemoryError(() => mem.userToGuest(0x200000, 4), 'a guest address is not a frontend address', 'unmapped');
});

test('GuestMemory.userToGuest: property against a model', () => {
  fc.assert(
    fc.property(
      fc.array(fc.record({ size: fc.integer({ min: 1, max: 64 }), userGap: fc.integer({ min: 0, max: 32 }), mapped: fc.boolean() }), { minLength: 1, maxLength: 4 }),
      fc.array(fc.record({ u: fc.integer({ min: 0, max: 600 }), len: fc.integer({ min: 0, max: 20 }) }), { minLength: 1, maxLength: 20 }),
      (parts, probes) => {
        let g = 0x1000;
        let u = 100;
        const inits: MemoryRegionInit[] = [];
        for (const p of parts) {
          u += p.userGap;
          inits.push({ guestAddr: g, size: p.size, buffer: new ArrayBuffer(p.size), userAddr: p.mapped ? u : undefined });
          g += p.size + 7;
          u += p.size;
        }
        const mem = new GuestMemory(inits);
        for (const { u: ua, len } of probes) {
          const hit = inits.find((r) => r.userAddr !== undefined && ua >= r.userAddr && ua + len <= r.userAddr + r.size);
          if (hit === undefined) assertMemoryError(() => mem.userToGuest(ua, len), `user ${ua} +${len}`, 'unmapped');
          else assert.equal(mem.userToGuest(ua, len), hit.guestAddr + (ua - hit.userAddr!));
        }
      },
    ),
    { numRuns: 200 },
  );
});

test('GuestMemory: regions added and removed in place; lookups follow; an overlapping add changes nothing', () => {
  const mem = new GuestMemory([region(0x1000, 0x1000)]);
  const first = mem.regions[0];
  // Many regions, added in a shuffled order: lookups (binary search) find each one.
  const order = Array.from({ length: 64 }, (_, i) => i).sort((a, b) => ((a * 37) % 64) - ((b * 37) % 64));
  for (const i of order) mem.addRegions([region(0x10000 + i * 0x2000, 0x1000)]);
  assert.equal(mem.regions.length, 65);
  assert.equal(mem.regions[0], first, 'the first region is the same object');
  for (let i = 0; i < 64; i++) {
    const a = 0x10000 + i * 0x2000;
    assert.equal(mem.regionFor(a + 0xfff, 1)?.guestAddr, a);
    assert.equal(mem.regionFor(a + 0x1000, 1), null, 'the hole after it');
    assert.equal(mem.regionFor(a + 0xfff, 2), null, 'a range running into the hole');
  }
  mem.writeU32(0x10000 + 5 * 0x2000, 0xdeadbeef);
  assert.throws(() => mem.addRegions([region(0x1800, 0x1000)]), (e: unknown) => e instanceof MemoryError && e.kind === 'overlap');
  assert.equal(mem.regions.length, 65, 'nothing added');

  const removed = mem.removeRegions(0x10000 + 5 * 0x2000, 0x1000);
  assert.equal(removed.length, 1);
  assert.equal(removed[0].view.getUint32(0, true), 0xdeadbeef, 'the caller gets the removed region');
  assert.equal(mem.regionFor(0x10000 + 5 * 0x2000, 4), null, 'gone from lookups (also from the last-hit cache)');
  assert.throws(() => mem.readU32(0x10000 + 5 * 0x2000), (e: unknown) => e instanceof MemoryError && e.kind === 'out-of-bounds');
  assert.equal(mem.readU8(0x1000), 0, 'the others stay');
  assert.deepEqual(mem.removeRegions(0x0, 0x800), [], 'nothing there: nothing removed');
  // Every region removed: the memory is empty, and every lookup says so.
  mem.removeRegions(0, 0x1_0000_0000);
  assert.equal(mem.regions.length, 0);
  assert.equal(mem.regionFor(0x1000, 1), null);
  assert.throws(() => mem.readU8(0x1000), (e: unknown) => e instanceof MemoryError && e.kind === 'out-of-bounds');
  mem.addRegions([region(0, 16)]);
  mem.writeU8(15, 7);
  assert.equal(mem.readU8(15), 7, 'and can be filled again');
});

test('GuestMemory.readU64Number: exact below 2^53, MemoryError unsafe-integer from 2^53 on; writeU64 takes a number without a bigint', () => {
  const mem = new GuestMemory([region(0, 0x100), region(0x100, 0x100, { offset: 3 })]);
  for (const v of [0, 1, 0xffff_ffff, 0x1_0000_0000, 2 ** 52 + 12345, Number.MAX_SAFE_INTEGER]) {
    mem.writeU64(0x1f8 - 8, v); // inside the second region, at an odd buffer offset
    assert.equal(mem.readU64Number(0x1f8 - 8), v);
    assert.equal(mem.readU64(0x1f8 - 8), BigInt(v));
  }
  mem.writeU64(0x10, 2n ** 53n);
  const err = assertMemoryError(() => mem.readU64Number(0x10), 'readU64Number(2^53)', 'unsafe-integer');
  assert.equal(err.addr, 0x10);
  assert.equal(mem.readU64(0x10), 2n ** 53n, 'still readable as a bigint');
  // Numbers a bigint path took modulo 2^64 still are; fractions are still a RangeError.
  mem.writeU64(0x20, -1);
  assert.equal(mem.readU64(0x20), 2n ** 64n - 1n);
  assert.throws(() => mem.writeU64(0x20, 1.5), RangeError);
  // Across the region boundary a 64-bit field is out of bounds, as before.
  assertMemoryError(() => mem.readU64Number(0xfc), 'u64 across regions', 'out-of-bounds');
});

test('GuestMemory.readInto / writeFrom: parts of host arrays, across regions; a bad host range is a RangeError, a hole a MemoryError with nothing written', () => {
  const mem = new GuestMemory([region(0, 0x100), region(0x100, 0x100, { offset: 1 }), region(0x300, 0x100)]);
  const src = Uint8Array.from({ length: 300 }, (_, i) => (i * 7 + 3) & 0xff);
  const writes: [number, number][] = [];
  mem.onWrite = (a, n) => writes.push([a, n]);
  mem.writeFrom(0xf0, src, 5, 200); // crosses 0x100
  assert.deepEqual(writes, [[0xf0, 200]], 'one onWrite for the whole copy');
  for (let i = 0; i < 200; i++) assert.equal(mem.readU8(0xf0 + i), src[5 + i]);
  for (let pass = 0; pass < 3; pass++) {
    const dst = new Uint8Array(210).fill(0xaa);
    mem.readInto(0xf0, dst, 4, 200);
    assert.deepEqual([...dst.subarray(4, 204)], [...src.subarray(5, 205)]);
    assert.ok(dst.subarray(0, 4).every((b) => b === 0xaa) && dst.subarray(204).every((b) => b === 0xaa));
  }
  assert.throws(() => mem.readInto(0, new Uint8Array(8), 4, 5), RangeError);
  assert.throws(() => mem.writeFrom(0, new Uint8Array(8), -1, 2), RangeError);
  assert.throws(() => mem.writeFrom(0, new Uint8Array(8), 0.5, 2), RangeError);
  writes.length = 0;
  const before = mem.readU8(0x1ff);
  assertMemoryError(() => mem.writeFrom(0x1f0, src, 0, 0x20), 'write across the hole', 'out-of-bounds');
  assert.equal(mem.readU8(0x1ff), before, 'nothing written before the hole');
  assert.deepEqual(writes, []);
  assertMemoryError(() => mem.readInto(0x1f0, new Uint8Array(0x20), 0, 0x20), 'read across the hole', 'out-of-bounds');
});
