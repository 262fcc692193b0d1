/**
 * Property: random chains, made available by a real driver queue and popped by the device queue
 * (split and packed rings, direct and indirect), read and written through ChainReader and
 * ChainWriter (every copy and fixed-size field path: small and large copies, whole and partial
 * host arrays, first and repeated sightings of a range, fields split across buffers) give the
 * same bytes as a reference copy made byte by byte from the driver's own buffer list. Guest
 * memory has several adjacent regions of random sizes, some at odd offsets in their buffers,
 * so buffers and fields straddle region boundaries. Out-of-range operations must throw
 * chain-bounds and consume nothing, and no byte outside the writable buffers may change.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { GuestMemory, type MemoryRegionInit } from '../src/memory/guest-memory.js';
import { ChainReader, ChainWriter, DescriptorChain } from '../src/virtqueue/chain.js';
import { VirtqueueError } from '../src/virtqueue/errors.js';
import type { RingFormat } from '../src/virtqueue/queue.js';
import { makeQueuePair, RING_AREA } from './ring-harness.js';

const RUNS = Number(process.env.FC_RUNS ?? 150);

/** Ring region, then adjacent data regions of the given sizes (odd buffer offsets for some). */
function memoryOf(sizes: number[]): { mem: GuestMemory; dataEnd: number } {
  const inits: MemoryRegionInit[] = [{ guestAddr: 0, size: RING_AREA, buffer: new ArrayBuffer(RING_AREA) }];
  let at = RING_AREA;
  sizes.forEach((size, i) => {
    const offset = i % 3; // 0, 1, 2: regions unaligned in their buffers
    inits.push({ guestAddr: at, size, buffer: new ArrayBuffer(size + offset), offset });
    at += size;
  });
  return { mem: new GuestMemory(inits), dataEnd: at };
}

type ReadOp =
  | { op: 'read' | 'skip'; n: number }
  | { op: 'readInto'; n: number; off: number }
  | { op: 'u8' | 'u16' | 'u32' | 'u64' | 'u64n' };
type WriteOp =
  | { op: 'write' | 'fill'; n: number; seed: number }
  | { op: 'writeFrom'; n: number; off: number; seed: number }
  | { op: 'u8' | 'u16' | 'u32'; v: number }
  | { op: 'u64'; v: bigint }
  | { op: 'u64n'; v: number };

const len = fc.oneof(fc.integer({ min: 0, max: 24 }), fc.integer({ min: 0, max: 700 }));
const readOp: fc.Arbitrary<ReadOp> = fc.oneof(
  fc.record({ op: fc.constantFrom('read' as const, 'skip' as const), n: len }),
  fc.record({ op: fc.constant('readInto' as const), n: len, off: fc.integer({ min: 0, max: 9 }) }),
  fc.record({ op: fc.constantFrom('u8' as const, 'u16' as const, 'u32' as const, 'u64' as const, 'u64n' as const) }),
);
const writeOp: fc.Arbitrary<WriteOp> = fc.oneof(
  fc.record({ op: fc.constantFrom('write' as const, 'fill' as const), n: len, seed: fc.nat(255) }),
  fc.record({ op: fc.constant('writeFrom' as const), n: len, off: fc.integer({ min: 0, max: 9 }), seed: fc.nat(255) }),
  fc.record({ op: fc.constantFrom('u8' as const, 'u16' as const, 'u32' as const), v: fc.nat() }),
  fc.record({ op: fc.constant('u64' as const), v: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }) }),
  fc.record({ op: fc.constant('u64n' as const), v: fc.maxSafeNat() }),
);

const scenario = fc.record({
  regions: fc.array(fc.integer({ min: 16, max: 3000 }), { minLength: 2, maxLength: 6 }),
  readable: fc.array(len, { maxLength: 5 }),
  writable: fc.array(len, { maxLength: 5 }),
  gaps: fc.array(fc.nat(40), { minLength: 10, maxLength: 10 }),
  indirect: fc.boolean(),
  reads: fc.array(readOp, { maxLength: 14 }),
  writes: fc.array(writeOp, { maxLength: 14 }),
  /** Fill pattern of guest memory. */
  seed: fc.nat(255),
});

function pattern(n: number, seed: number): Uint8Array {
  const a = new Uint8Array(n);
  for (let i = 0; i < n; i++) a[i] = (Math.imul(i + 1, 2654435761) >>> 13) ^ seed;
  return a;
}

function isBounds(err: unknown): boolean {
  return err instanceof VirtqueueError && err.kind === 'chain-bounds';
}

/** The reference bytes of buffers `segs`: byte by byte through GuestMemory.readU8. */
function refBytes(mem: GuestMemory, segs: [number, number][]): Uint8Array {
  const out: number[] = [];
  for (const [a, n] of segs) for (let i = 0; i < n; i++) out.push(mem.readU8(a + i));
  return Uint8Array.from(out);
}

function le(bytes: Uint8Array, at: number, n: number): bigint {
  let v = 0n;
  for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[at + i]);
  return v;
}

/** Runs the read ops on a reset reader and checks each against the reference. */
function checkReads(r: ChainReader, ref: Uint8Array, ops: ReadOp[]): void {
  let pos = 0;
  for (const o of ops) {
    const need = 'n' in o ? o.n : o.op === 'u8' ? 1 : o.op === 'u16' ? 2 : o.op === 'u32' ? 4 : 8;
    const fits = pos + need <= ref.length;
    const before = r.position;
    let got: unknown;
    try {
      switch (o.op) {
        case 'read': {
          const dst = new Uint8Array(o.n);
          r.read(dst);
          got = dst;
          break;
        }
        case 'readInto': {
          const dst = new Uint8Array(o.n + o.off + 3).fill(0xa5);
          r.readInto(dst, o.off, o.n);
          // bytes outside [off, off+n) untouched
          for (let i = 0; i < dst.length; i++) if (i < o.off || i >= o.off + o.n) assert.equal(dst[i], 0xa5, 'readInto wrote outside its range');
          got = dst.subarray(o.off, o.off + o.n);
          break;
        }
        case 'skip':
          r.skip(o.n);
          break;
        case 'u8':
          got = r.readU8();
          break;
        case 'u16':
          got = r.readU16();
          break;
        case 'u32':
          got = r.readU32();
          break;
        case 'u64':
          got = r.readU64();
          break;
        case 'u64n':
          got = r.readU64Number();
          break;
      }
    } catch (err) {
      if (o.op === 'u64n' && fits && err instanceof VirtqueueError && err.kind === 'unsafe-integer') {
        assert.ok(le(ref, pos, 8) >= 2n ** 53n, 'unsafe-integer for a value below 2^53');
        assert.equal(r.position, before, 'unsafe-integer consumed bytes');
        assert.equal(r.readU64(), le(ref, pos, 8)); // still readable as a bigint
        pos += 8;
        continue;
      }
      assert.ok(!fits && isBounds(err), `${o.op} ${need} at ${pos}/${ref.length}: ${String(err)}`);
      assert.equal(r.position, before, 'a failed read consumed bytes');
      continue;
    }
    assert.ok(fits, `${o.op} past the end did not throw`);
    if (o.op === 'read' || o.op === 'readInto') assert.deepEqual([...(got as Uint8Array)], [...ref.subarray(pos, pos + need)], `${o.op} ${need} at ${pos}`);
    else if (o.op === 'u64') assert.equal(got, le(ref, pos, 8));
    else if (o.op === 'u64n') assert.equal(BigInt(got as number), le(ref, pos, 8));
    else if (o.op !== 'skip') assert.equal(got, Number(le(ref, pos, need)), `${o.op} at ${pos}`);
    pos += need;
    assert.equal(r.position, pos);
    assert.equal(r.remaining, ref.length - pos);
  }
}

/** Runs the write ops on a reset writer and on `model` (the writable bytes as they should become). */
function applyWrites(w: ChainWriter, model: Uint8Array, ops: WriteOp[]): void {
  let pos = 0;
  for (const o of ops) {
    const need = 'n' in o ? o.n : o.op === 'u8' ? 1 : o.op === 'u16' ? 2 : o.op === 'u32' ? 4 : 8;
    const fits = pos + need <= model.length;
    const before = w.position;
    let bytes: Uint8Array;
    try {
      switch (o.op) {
        case 'write':
          bytes = pattern(o.n, o.seed);
          w.write(bytes);
          break;
        case 'writeFrom': {
          const src = pattern(o.n + o.off + 5, o.seed);
          w.writeFrom(src, o.off, o.n);
          bytes = src.subarray(o.off, o.off + o.n);
          break;
        }
        case 'fill':
          w.fill(o.n, o.seed);
          bytes = new Uint8Array(o.n).fill(o.seed);
          break;
        case 'u8':
          w.writeU8(o.v & 0xff);
          bytes = Uint8Array.of(o.v & 0xff);
          break;
        case 'u16':
          w.writeU16(o.v & 0xffff);
          bytes = Uint8Array.of(o.v & 0xff, (o.v >>> 8) & 0xff);
          break;
        case 'u32': {
          w.writeU32(o.v);
          bytes = new Uint8Array(4);
          new DataView(bytes.buffer).setUint32(0, o.v >>> 0, true);
          break;
        }
        case 'u64':
        case 'u64n': {
          w.writeU64(o.v);
          bytes = new Uint8Array(8);
          new DataView(bytes.buffer).setBigUint64(0, BigInt(o.v), true);
          break;
        }
      }
    } catch (err) {
      assert.ok(!fits && isBounds(err), `${o.op} ${need} at ${pos}/${model.length}: ${String(err)}`);
      assert.equal(w.position, before, 'a failed write consumed bytes');
      continue;
    }
    assert.ok(fits, `${o.op} past the end did not throw`);
    model.set(bytes, pos);
    pos += need;
    assert.equal(w.position, pos);
  }
}

function property(format: RingFormat) {
  return fc.property(scenario, (s) => {
    const { mem, dataEnd } = memoryOf(s.regions);
    const total = s.readable.length + s.writable.length;
    fc.pre(total > 0);
    // Lay the buffers out one after another with gaps, inside the data regions.
    const segs: [number, number, boolean][] = [];
    let at = RING_AREA;
    [...s.readable.map((n) => [n, false] as const), ...s.writable.map((n) => [n, true] as const)].forEach(([n, w], i) => {
      at += s.gaps[i];
      segs.push([at, n, w]);
      at += n;
    });
    fc.pre(at <= dataEnd);
    mem.write(RING_AREA, pattern(dataEnd - RING_AREA, s.seed));

    const pair = makeQueuePair(format, { size: 16, eventIdx: false, indirect: true, indirectMax: 16 }, mem);
    pair.drv.begin();
    for (const [a, n, w] of segs) {
      if (w) pair.drv.addWritable(a, n);
      else pair.drv.addReadable(a, n);
    }
    assert.ok(pair.drv.commit({}, { indirect: s.indirect }) >= 0, 'commit');
    pair.drv.publish();
    const chain: DescriptorChain = pair.dev.newChain();
    assert.ok(pair.dev.pop(chain), `pop: ${JSON.stringify(pair.devSink.map((x) => x.verdict.clause))}`);
    assert.equal(pair.devSink.length, 0);

    const readSegs = segs.filter((x) => !x[2]).map(([a, n]): [number, number] => [a, n]);
    const writeSegs = segs.filter((x) => x[2]).map(([a, n]): [number, number] => [a, n]);
    const refRead = refBytes(mem, readSegs);
    const r = new ChainReader();
    // Twice: the second pass copies the same ranges again (the view cache's second sighting).
    for (let pass = 0; pass < 2; pass++) checkReads(r.reset(mem, chain), refRead, s.reads);

    const w = new ChainWriter();
    const snapshot = refBytes(mem, [[RING_AREA, dataEnd - RING_AREA]]);
    const model = refBytes(mem, writeSegs);
    for (let pass = 0; pass < 2; pass++) applyWrites(w.reset(mem, chain), model, s.writes);
    assert.deepEqual([...refBytes(mem, writeSegs)], [...model], 'writable bytes differ from the reference');
    // Nothing else in data memory changed.
    const after = refBytes(mem, [[RING_AREA, dataEnd - RING_AREA]]);
    const inWritable = (addr: number) => writeSegs.some(([a, n]) => addr >= a && addr < a + n);
    for (let i = 0; i < after.length; i++) if (!inWritable(RING_AREA + i)) assert.equal(after[i], snapshot[i], `byte at 0x${(RING_AREA + i).toString(16)} outside the writable buffers changed`);
  });
}

for (const format of ['split', 'packed'] as const) {
  test(`${format}: random chains through ChainReader/ChainWriter match a byte-by-byte reference copy (direct and indirect, straddling regions)`, () => {
    fc.assert(property(format), { numRuns: RUNS });
  });
}

test('GuestMemory.readInto / writeFrom across regions match byte-by-byte copies, first and repeated sightings', () => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 16, max: 2000 }), { minLength: 2, maxLength: 5 }),
      fc.nat(),
      fc.integer({ min: 0, max: 3000 }),
      fc.integer({ min: 0, max: 9 }),
      fc.nat(255),
      (sizes, startSeed, n, off, seed) => {
        const { mem, dataEnd } = memoryOf(sizes);
        const span = dataEnd - RING_AREA;
        fc.pre(n <= span);
        const addr = RING_AREA + (startSeed % (span - n + 1));
        mem.write(RING_AREA, pattern(span, seed));
        for (let pass = 0; pass < 3; pass++) {
          const dst = new Uint8Array(n + off + 2).fill(0x5a);
          mem.readInto(addr, dst, off, n);
          assert.deepEqual([...dst.subarray(off, off + n)], [...refBytes(mem, [[addr, n]])]);
          assert.ok(dst.subarray(0, off).every((b) => b === 0x5a) && dst.subarray(off + n).every((b) => b === 0x5a));
          const src = pattern(n + off + 2, seed ^ (pass + 1));
          mem.writeFrom(addr, src, off, n);
          assert.deepEqual([...refBytes(mem, [[addr, n]])], [...src.subarray(off, off + n)]);
        }
      },
    ),
    { numRuns: RUNS },
  );
});
