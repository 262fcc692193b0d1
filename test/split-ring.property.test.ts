/**
 * Split virtqueue (spec 2.7) property tests, driver side (SplitDriverQueue) against device
 * side (SplitDeviceQueue) over one GuestMemory:
 *
 *  - layout: alignment (split.alignment.driver.1), no overlap, within the footprint;
 *  - an honest pair under random batching, random chain shapes (direct and indirect) and
 *    indices starting near 65535: the device sees exactly what the driver added, the driver
 *    gets back exactly its tokens and lengths, no verdicts, no descriptor leaks;
 *  - well-formed raw chains the driver class never builds (direct then indirect);
 *  - hostile rings written raw: the device never throws, never loops, names catalogue
 *    clauses, marks the queue broken on a fatal verdict, and writes nothing but its used ring;
 *  - hostile ring configurations at activation;
 *  - a hostile used ring seen by the driver.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { GuestAllocator } from '../src/memory/allocator.js';
import { Monitor } from '../src/monitor/monitor.js';
import { clauseInfo } from '../src/monitor/catalogue.js';
import { layoutSplitQueue, splitQueueFootprint } from '../src/virtqueue/split/driver.js';
import { SplitDeviceQueue } from '../src/virtqueue/split/device.js';
import { ChainReader, ChainWriter, DescriptorChain } from '../src/virtqueue/chain.js';
import {
  AVAIL_RING,
  DESC_SIZE,
  RING_FLAGS,
  RING_IDX,
  USED_RING,
  USED_ELEM_SIZE,
  availEventOffset,
  availRingSize,
  descTableSize,
  isPowerOfTwo,
  usedEventOffset,
  usedRingSize,
} from '../src/spec/split-layout.js';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../src/spec/constants.js';
import { DATA_END, DATA_SPLIT, assertSaneVerdicts, countViewAccesses, makePair, allocSegs, offerSegs, releaseSegs, type Seg, type Shape, putDesc, splitAtRegions, type Pair, type SinkRecord } from './ring-harness.js';

// ------------------------------------------------------------------ layout

test('layoutSplitQueue: parts aligned, disjoint, in order, within splitQueueFootprint', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 1 << 24 }), fc.integer({ min: 0, max: 15 }), fc.integer({ min: 0, max: 64 }), (base, log, indirectMax) => {
      const size = 1 << log;
      const l = layoutSplitQueue(base, size, indirectMax);
      assert.equal(l.desc % 16, 0);
      assert.equal(l.avail % 2, 0);
      assert.equal(l.used % 4, 0);
      assert.equal(l.pool % 16, 0);
      assert.ok(l.desc >= base);
      assert.ok(l.desc + descTableSize(size) <= l.avail);
      assert.ok(l.avail + availRingSize(size) <= l.used);
      assert.ok(l.used + usedRingSize(size) <= l.pool);
      assert.equal(l.end, l.pool + size * indirectMax * DESC_SIZE);
      assert.ok(l.end <= base + splitQueueFootprint(size, indirectMax), 'layout overruns its footprint');
      // Field offsets: used_event is the last u16 of the driver area, avail_event of the device area.
      assert.equal(usedEventOffset(size) + 2, availRingSize(size));
      assert.equal(availEventOffset(size) + 2, usedRingSize(size));
    }),
    { numRuns: 300 },
  );
});

// ------------------------------------------------------------------ honest pair

interface Token {
  id: number;
  segs: Seg[];
  head: number;
  useIndirect: boolean;
  need: number;
  readableBytes: number;
  writableBytes: number;
}
type PairOp =
  | { k: 'add'; shape: Shape }
  | { k: 'publish' }
  | { k: 'pop'; n: number }
  | { k: 'complete'; pick: number; frac: number }
  | { k: 'devPublish' }
  | { k: 'collect'; n: number };

const lenArb = fc.oneof({ weight: 1, arbitrary: fc.constant(0) }, { weight: 8, arbitrary: fc.integer({ min: 1, max: 64 }) }, { weight: 2, arbitrary: fc.integer({ min: 65, max: 700 }) });
const shapeArb: fc.Arbitrary<Shape> = fc.record({
  readable: fc.array(lenArb, { maxLength: 6 }),
  writable: fc.array(lenArb, { maxLength: 6 }),
  indirect: fc.boolean(),
  align: fc.constantFrom(1, 2, 8),
});
const pairOpArb: fc.Arbitrary<PairOp> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ k: fc.constant('add' as const), shape: shapeArb }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('publish' as const) }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('pop' as const), n: fc.integer({ min: 1, max: 4 }) }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('complete' as const), pick: fc.nat(), frac: fc.double({ min: 0, max: 1, noNaN: true }) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('devPublish' as const) }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('collect' as const), n: fc.integer({ min: 1, max: 4 }) }) },
);

const cfgArb = fc
  .record({
    log: fc.integer({ min: 0, max: 4 }),
    maxFactor: fc.constantFrom(1, 2, 4),
    eventIdx: fc.boolean(),
    indirect: fc.boolean(),
    imax: fc.nat(),
    startKind: fc.constantFrom('near-wrap', 'zero', 'any'),
    startNear: fc.integer({ min: 0, max: 60 }),
    startAny: fc.integer({ min: 0, max: 0xffff }),
  })
  .map((c) => {
    const size = 1 << c.log;
    const start = c.startKind === 'near-wrap' ? 0x10000 - 1 - c.startNear : c.startKind === 'zero' ? 0 : c.startAny;
    // indirectMax may exceed the queue size (VirtioDriver's default does); chains are still
    // at most `size` buffers (split.indirect-descs.driver.3), see runPair's add().
    return { size, maxSize: size * c.maxFactor, eventIdx: c.eventIdx, indirect: c.indirect, indirectMax: 1 + (c.imax % (2 * size + 2)), start };
  });

const readPattern = (id: number, seg: number, i: number) => (id * 31 + seg * 7 + i * 3 + 1) & 0xff;
const writePattern = (id: number, i: number) => (id * 17 + i * 5 + 0x55) & 0xff;

function runPair(cfg: { size: number; maxSize: number; eventIdx: boolean; indirect: boolean; indirectMax: number; start: number }, ops: PairOp[]): void {
  const p: Pair = makePair(cfg);
  const { mem, drv, dev } = p;
  const size = cfg.size;
  // Buffers straddle DATA_SPLIT, where two memory regions meet.
  const allocBase = DATA_SPLIT - 0x400;
  const alloc = new GuestAllocator(allocBase, DATA_END - allocBase);
  const initialAvail = alloc.available;
  const committed: Token[] = [];
  let popped = 0;
  let published = 0;
  const held: { token: Token; chain: DescriptorChain }[] = [];
  const used: { token: Token; len: number }[] = [];
  let devPublished = 0;
  let collected = 0;
  let modelFree = size;
  let nextId = 0;
  const collectedSet = new Set<Token>();
  const reader = new ChainReader();
  const writer = new ChainWriter();

  const add = (shape: Shape) => {
    let readable = shape.readable;
    let writable = shape.writable;
    if (readable.length + writable.length === 0) writable = [8];
    // No chain longer than the queue (split.indirect-descs.driver.3 / the free list).
    readable = readable.slice(0, size);
    writable = writable.slice(0, size - readable.length);
    if (readable.length + writable.length === 0) readable = [1];
    const n = readable.length + writable.length;
    // n <= size here, so an indirect table is used iff it is asked for, negotiated and fits.
    const useIndirect = shape.indirect && cfg.indirect && n > 1 && n <= cfg.indirectMax;
    const need = useIndirect ? 1 : n;
    const id = nextId++;
    const segs = allocSegs(alloc, readable, writable, shape.align);
    if (segs === null) return; // out of data memory: skip this add
    segs.forEach((s, si) => {
      if (!s.writable) for (let i = 0; i < s.len; i++) mem.writeU8(s.addr + i, readPattern(id, si, i));
      else mem.fill(s.addr, s.len, 0xee);
    });
    const token: Token = {
      id,
      segs,
      head: -1,
      useIndirect,
      need,
      readableBytes: readable.reduce((a, b) => a + b, 0),
      writableBytes: writable.reduce((a, b) => a + b, 0),
    };
    const freeBefore = drv.numFree;
    assert.equal(freeBefore, modelFree, 'numFree before commit');
    offerSegs(drv, segs);
    const head = drv.commit(token, { indirect: shape.indirect });
    if (freeBefore < need) {
      assert.equal(head, -1, `commit of ${need} descriptors with ${freeBefore} free must fail`);
      releaseSegs(alloc, segs);
      return;
    }
    assert.ok(head >= 0 && head < size, `commit returned head ${head}`);
    assert.ok(!committed.some((t) => !collectedSet.has(t) && t.head === head), `head ${head} handed out while still in flight`);
    token.head = head;
    committed.push(token);
    modelFree -= need;
  };

  const pop = () => {
    const chain = dev.newChain();
    const ok = dev.pop(chain);
    assert.equal(ok, popped < published, `pop with ${published - popped} published chains waiting`);
    if (!ok) return;
    const token = committed[popped++];
    const what = `chain ${token.id} (head ${token.head})`;
    assert.equal(chain.head, token.head, `${what}: head`);
    assert.equal(chain.indirect, token.useIndirect, `${what}: indirect`);
    assert.equal(chain.tableDescriptors, token.need, `${what}: table descriptors`);
    const rPieces = token.segs.filter((s) => !s.writable).flatMap((s) => splitAtRegions(mem, s.addr, s.len));
    const wPieces = token.segs.filter((s) => s.writable).flatMap((s) => splitAtRegions(mem, s.addr, s.len));
    const pieces = [...rPieces, ...wPieces];
    assert.equal(chain.count, pieces.length, `${what}: buffer count`);
    assert.equal(chain.readable, rPieces.length, `${what}: readable count`);
    for (let i = 0; i < pieces.length; i++) {
      assert.equal(chain.addrs[i], pieces[i][0], `${what}: buffer ${i} address`);
      assert.equal(chain.lens[i], pieces[i][1], `${what}: buffer ${i} length`);
    }
    assert.equal(chain.readableBytes, token.readableBytes);
    assert.equal(chain.writableBytes, token.writableBytes);
    // The device reads what the driver wrote.
    const r = reader.reset(mem, chain);
    const got = new Uint8Array(token.readableBytes);
    r.read(got);
    const want: number[] = [];
    token.segs.forEach((s, si) => {
      if (!s.writable) for (let i = 0; i < s.len; i++) want.push(readPattern(token.id, si, i));
    });
    assert.deepEqual([...got], want, `${what}: readable data`);
    assert.equal(r.remaining, 0);
    assert.ok(dev.isInFlight(token.head));
    held.push({ token, chain });
  };

  const complete = (pick: number, frac: number) => {
    if (held.length === 0) return;
    const [{ token, chain }] = held.splice(pick % held.length, 1);
    const len = Math.min(token.writableBytes, Math.floor(frac * (token.writableBytes + 1)));
    const w = writer.reset(mem, chain);
    w.write(Uint8Array.from({ length: len }, (_, i) => writePattern(token.id, i)));
    dev.addUsed(chain.head, len);
    assert.ok(!dev.isInFlight(chain.head));
    used.push({ token, len });
  };

  const collect = () => {
    const tok = drv.getUsed();
    if (collected >= devPublished) {
      assert.equal(tok, undefined, 'getUsed with nothing published');
      return;
    }
    const { token, len } = used[collected++];
    assert.equal(tok, token, `getUsed returned the wrong token (want ${token.id})`);
    assert.equal(drv.lastLen, len, `length of chain ${token.id}`);
    assert.equal(drv.lastId, token.head);
    // The driver sees the first `len` bytes the device wrote, over the writable buffers in order.
    const wSegs = token.segs.filter((s) => s.writable);
    let i = 0;
    for (const s of wSegs) {
      for (let j = 0; j < s.len; j++, i++) {
        assert.equal(mem.readU8(s.addr + j), i < len ? writePattern(token.id, i) : 0xee, `chain ${token.id} writable byte ${i}`);
      }
    }
    releaseSegs(alloc, token.segs);
    collectedSet.add(token);
    modelFree += token.need;
  };

  const check = (what: string) => {
    assert.equal(drv.numFree, modelFree, `${what}: driver numFree`);
    assert.equal(drv.inFlightCount, committed.length - collected, `${what}: driver in flight`);
    assert.equal(dev.inFlightCount, held.length, `${what}: device in flight`);
    assert.deepEqual(p.drvMon.verdicts, [], `${what}: driver verdicts`);
    assert.deepEqual(p.devMon.verdicts, [], `${what}: device verdicts`);
  };

  for (const op of ops) {
    switch (op.k) {
      case 'add':
        add(op.shape);
        break;
      case 'publish':
        drv.publish();
        published = committed.length;
        break;
      case 'pop':
        for (let i = 0; i < op.n; i++) pop();
        break;
      case 'complete':
        complete(op.pick, op.frac);
        break;
      case 'devPublish':
        dev.publish();
        devPublished = used.length;
        break;
      case 'collect':
        for (let i = 0; i < op.n; i++) collect();
        break;
    }
    check(op.k);
  }
  // Drain.
  drv.publish();
  published = committed.length;
  while (popped < published) pop();
  pop(); // and one more, which finds nothing
  while (held.length > 0) complete(0, 1);
  dev.publish();
  devPublished = used.length;
  while (collected < used.length) collect();
  collect(); // nothing more
  check('drain');
  assert.equal(drv.numFree, size, 'descriptors leaked');
  assert.equal(alloc.available, initialAvail);
  const end = (cfg.start + committed.length) & 0xffff;
  assert.equal(drv.nextAvailIdx, end);
  assert.equal(drv.collectedIdx, end);
  assert.equal(dev.nextAvail, end);
  assert.equal(dev.nextUsed, end);
  assert.equal(mem.readU16(p.layout.avail + RING_IDX), end, 'avail.idx');
  assert.equal(mem.readU16(p.layout.used + RING_IDX), end, 'used.idx');
  assert.equal(p.drvSink.length + p.devSink.length, 0);
}

test('split ring pair: property: random batching, chain shapes and wrap-around; exact round trip, no verdicts, no leaks', { timeout: 60_000 }, () => {
  fc.assert(
    fc.property(cfgArb, fc.array(pairOpArb, { minLength: 1, maxLength: 150 }), (cfg, ops) => runPair(cfg, ops)),
    { numRuns: 150 },
  );
});

test('split ring pair: many chains across the 16-bit wrap (size 4, indirect and direct)', () => {
  for (const eventIdx of [false, true]) {
    for (const indirect of [false, true]) {
      const ops: PairOp[] = [];
      for (let i = 0; i < 40; i++) {
        ops.push({ k: 'add', shape: { readable: [i % 5], writable: [(i * 7) % 90, 3], indirect: i % 2 === 0, align: 1 } });
        if (i % 3 === 2) ops.push({ k: 'publish' }, { k: 'pop', n: 3 }, { k: 'complete', pick: i, frac: 0.5 }, { k: 'devPublish' }, { k: 'collect', n: 2 });
      }
      runPair({ size: 4, maxSize: 8, eventIdx, indirect, indirectMax: 4, start: 0xfff0 }, ops);
    }
  }
});

// ------------------------------------------------------------------ well-formed raw chains

test('device: zero or more direct descriptors followed by one indirect descriptor (split.indirect-descs.device.2)', () => {
  const mem = new GuestMemory([{ guestAddr: 0, size: 0x10000, buffer: new ArrayBuffer(0x10000) }]);
  const size = 8;
  const l = layoutSplitQueue(0x100, size);
  const mon = new Monitor();
  const sink: unknown[] = [];
  const dev = new SplitDeviceQueue(mem, 0, size, mon, (v) => sink.push(v));
  dev.setAddresses({ desc: l.desc, avail: l.avail, used: l.used });
  assert.ok(dev.activate({ eventIdx: false, indirect: true }));
  const table = 0x4000;
  // Chain at head 5: 5 (readable) -> 2 (readable) -> 7 (INDIRECT, with WRITE set, which is ignored)
  putDesc(mem, l.desc, 5, 0x8000, 10, VIRTQ_DESC_F_NEXT, 2);
  putDesc(mem, l.desc, 2, 0x8100, 20, VIRTQ_DESC_F_NEXT, 7);
  putDesc(mem, l.desc, 7, table, 3 * DESC_SIZE, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE, 0);
  // Indirect table, walked by next: 0 (readable) -> 2 (writable) -> 1 (writable)
  putDesc(mem, table, 0, 0x8200, 30, VIRTQ_DESC_F_NEXT, 2);
  putDesc(mem, table, 2, 0x8300, 40, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1);
  putDesc(mem, table, 1, 0x8400, 50, VIRTQ_DESC_F_WRITE, 0);
  mem.writeU16(l.avail + AVAIL_RING, 5);
  mem.writeU16(l.avail + RING_IDX, 1);
  const c = dev.newChain();
  assert.equal(dev.pop(c), true, JSON.stringify(mon.verdicts));
  assert.equal(c.head, 5);
  assert.equal(c.indirect, true);
  assert.equal(c.tableDescriptors, 3);
  assert.deepEqual([...c.addrs.subarray(0, c.count)], [0x8000, 0x8100, 0x8200, 0x8300, 0x8400]);
  assert.deepEqual([...c.lens.subarray(0, c.count)], [10, 20, 30, 40, 50]);
  assert.equal(c.readable, 3);
  assert.equal(c.readableBytes, 60);
  assert.equal(c.writableBytes, 90);
  dev.addUsed(5, 90);
  assert.equal(dev.publish(), true);
  assert.equal(mem.readU16(l.used + RING_IDX), 1);
  assert.equal(mem.readU32(l.used + USED_RING), 5);
  assert.equal(mem.readU32(l.used + USED_RING + 4), 90);
  assert.deepEqual(mon.verdicts, []);
  assert.deepEqual(sink, []);
});

// ------------------------------------------------------------------ hostile rings

const HOSTILE_RING_BASE = 0x100;
const SCRATCH_TABLES = 0x2000; // 64 random descriptors, targets for INDIRECT
const SCRATCH_ENTRIES = 64;

function hostileMemory(): GuestMemory {
  return new GuestMemory([
    { guestAddr: 0, size: 0x4000, buffer: new ArrayBuffer(0x4000) },
    { guestAddr: 0x10000, size: 0x1000, buffer: new ArrayBuffer(0x1000) },
    { guestAddr: 0x11000, size: 0x1000, buffer: new ArrayBuffer(0x1001), offset: 1 }, // adjacent
    { guestAddr: 0x20000, size: 0x100, buffer: new ArrayBuffer(0x100) }, // after a hole
  ]);
}

interface RawDesc {
  addr: bigint;
  len: number;
  flags: number;
  next: number;
}

function rawDescArb(maxNext: number): fc.Arbitrary<RawDesc> {
  return fc.record({
    addr: fc.oneof(
      { weight: 6, arbitrary: fc.integer({ min: 0x10000 - 8, max: 0x12008 }).map(BigInt) },
      { weight: 2, arbitrary: fc.integer({ min: 0x20000 - 8, max: 0x20108 }).map(BigInt) },
      { weight: 4, arbitrary: fc.integer({ min: 0, max: SCRATCH_ENTRIES + 2 }).map((k) => BigInt(SCRATCH_TABLES + 16 * k)) },
      { weight: 1, arbitrary: fc.integer({ min: 0, max: 0x4000 }).map(BigInt) },
      { weight: 1, arbitrary: fc.integer({ min: 0x4000, max: 0x10000 }).map(BigInt) },
      { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }) },
      { weight: 1, arbitrary: fc.constantFrom(1n << 32n, (1n << 32n) + 0x10000n, 1n << 53n, (1n << 64n) - 16n, (1n << 64n) - 1n) },
    ),
    len: fc.oneof(
      { weight: 2, arbitrary: fc.constant(0) },
      { weight: 6, arbitrary: fc.integer({ min: 1, max: 0x180 }) },
      { weight: 4, arbitrary: fc.integer({ min: 1, max: 8 }).map((k) => 16 * k) },
      { weight: 1, arbitrary: fc.constantFrom(0xffffffff, 0x80000000, 0x7fffffff, 0x1001, 0x2000) },
      { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffffffff }) },
    ),
    flags: fc.oneof(
      { weight: 8, arbitrary: fc.integer({ min: 0, max: 3 }) }, // NEXT / WRITE
      { weight: 3, arbitrary: fc.integer({ min: 4, max: 7 }) }, // INDIRECT (+ NEXT / WRITE)
      { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) },
    ),
    next: fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 0, max: maxNext + 1 }) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) }),
  });
}

type HostileStep =
  | { k: 'pop' }
  | { k: 'addUsed'; pick: number; len: number }
  | { k: 'addUsedRaw'; head: number; len: number }
  | { k: 'publish' }
  | { k: 'enable' }
  | { k: 'disable' }
  | { k: 'scribble'; where: 'desc' | 'avail' | 'table'; at: number; bytes: number[] }
  | { k: 'availIdx'; delta: number };

const hostileStepArb: fc.Arbitrary<HostileStep> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ k: fc.constant('pop' as const) }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('addUsed' as const), pick: fc.nat(), len: fc.integer({ min: 0, max: 0xffffffff }) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('addUsedRaw' as const), head: fc.integer({ min: 0, max: 0xffff }), len: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('publish' as const) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('enable' as const) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('disable' as const) }) },
  {
    weight: 2,
    arbitrary: fc.record({
      k: fc.constant('scribble' as const),
      where: fc.constantFrom('desc' as const, 'avail' as const, 'table' as const),
      at: fc.nat(),
      bytes: fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 16 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      k: fc.constant('availIdx' as const),
      delta: fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 0, max: 4 }) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 20 }) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) }),
    }),
  },
);

/**
 * A well-formed starting point: chains of consecutive descriptors over data memory (readable
 * first, then writable), some ending in an INDIRECT descriptor that points at a well-formed
 * 4-entry table in the scratch area; the ring names the chain heads.
 */
function validBase(size: number, links: boolean[], writableFrom: number[], indirectEnds: boolean[], indirect: boolean): { table: RawDesc[]; scratch: RawDesc[]; heads: number[] } {
  const table: RawDesc[] = [];
  const heads: number[] = [];
  let chainStart = 0;
  for (let i = 0; i < size; i++) {
    if (i === chainStart) heads.push(i);
    const last = !(links[i] && i < size - 1);
    const posInChain = i - chainStart;
    const writable = posInChain >= writableFrom[i];
    if (last && indirect && indirectEnds[i]) {
      table.push({ addr: BigInt(SCRATCH_TABLES + 64 * (i % 16)), len: 64, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    } else {
      table.push({ addr: BigInt(0x10000 + 0x100 * i + (i % 3) * 0xd0), len: 0x80 + i, flags: (last ? 0 : VIRTQ_DESC_F_NEXT) | (writable ? VIRTQ_DESC_F_WRITE : 0), next: last ? 0 : i + 1 });
    }
    if (last) chainStart = i + 1;
  }
  // 16 tables of 4 entries each: readable, readable, writable, writable.
  const scratch: RawDesc[] = [];
  for (let k = 0; k < SCRATCH_ENTRIES; k++) {
    const e = k % 4;
    scratch.push({ addr: BigInt(0x11000 - 0x40 + 0x30 * k), len: 0x30, flags: (e < 3 ? VIRTQ_DESC_F_NEXT : 0) | (e >= 2 ? VIRTQ_DESC_F_WRITE : 0), next: e < 3 ? e + 1 : 0 });
  }
  return { table, scratch, heads };
}

const corruptionArb = (size: number) =>
  fc.record({
    where: fc.constantFrom('table' as const, 'scratch' as const),
    index: fc.nat(),
    field: fc.constantFrom('addr' as const, 'len' as const, 'flags' as const, 'next' as const),
    with: rawDescArb(size),
  });

const hostileCaseArb = fc
  .record({
    log: fc.integer({ min: 0, max: 4 }),
    eventIdx: fc.boolean(),
    indirect: fc.boolean(),
    start: fc.oneof(fc.constant(0), fc.integer({ min: 0xfff0, max: 0xffff }), fc.integer({ min: 0, max: 0xffff })),
    base: fc.constantFrom('valid' as const, 'valid' as const, 'random' as const),
  })
  .chain((c) => {
    const size = 1 << c.log;
    const bools = fc.array(fc.boolean(), { minLength: size, maxLength: size });
    return fc.record({
      size: fc.constant(size),
      eventIdx: fc.constant(c.eventIdx),
      indirect: fc.constant(c.indirect),
      start: fc.constant(c.start),
      base: fc.constant(c.base),
      links: bools,
      writableFrom: fc.array(fc.integer({ min: 0, max: 4 }), { minLength: size, maxLength: size }),
      indirectEnds: bools,
      corruptions: fc.array(corruptionArb(size), { maxLength: 3 }),
      table: fc.array(rawDescArb(size), { minLength: size, maxLength: size }),
      scratch: fc.array(rawDescArb(8), { minLength: SCRATCH_ENTRIES, maxLength: SCRATCH_ENTRIES }),
      ring: fc.array(fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 0, max: size - 1 }) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) }), { minLength: size, maxLength: size }),
      idxDelta: fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 0, max: size }) }, { weight: 1, arbitrary: fc.integer({ min: size + 1, max: size + 2 }) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) }),
      availFlags: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(0, 1) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) }),
      usedEvent: fc.integer({ min: 0, max: 0xffff }),
      steps: fc.array(hostileStepArb, { minLength: 1, maxLength: 40 }),
    });
  });

function writeRaw(mem: GuestMemory, table: number, i: number, d: RawDesc): void {
  const o = table + i * DESC_SIZE;
  mem.writeU64(o, d.addr);
  mem.writeU32(o + 8, d.len);
  mem.writeU16(o + 12, d.flags);
  mem.writeU16(o + 14, d.next);
}

function copyAll(mem: GuestMemory): Uint8Array[] {
  return mem.regions.map((r) => Uint8Array.from(r.bytes));
}

/** Stats over the hostile runs, to see that the generator reaches deep into the walker. */
const hostileStats = { pops: 0, clauses: new Map<string, number>() };

type HostileCase = typeof hostileCaseArb extends fc.Arbitrary<infer T> ? T : never;

function runHostile(c: HostileCase): void {
  const mem = hostileMemory();
  const size: number = c.size;
  const l = layoutSplitQueue(HOSTILE_RING_BASE, size);
  let table: RawDesc[] = c.table;
  let scratch: RawDesc[] = c.scratch;
  let ring: number[] = c.ring;
  if (c.base === 'valid') {
    const v = validBase(size, c.links, c.writableFrom, c.indirectEnds, c.indirect);
    table = v.table;
    scratch = v.scratch;
    ring = ring.map((_, i) => v.heads[(i + c.ring[0]) % v.heads.length]);
    for (const k of c.corruptions) {
      const arr = k.where === 'table' ? table : scratch;
      const i = k.index % arr.length;
      arr[i] = { ...arr[i], [k.field]: k.with[k.field] };
    }
  }
  table.forEach((d, i) => writeRaw(mem, l.desc, i, d));
  scratch.forEach((d, i) => writeRaw(mem, SCRATCH_TABLES, i, d));
  ring.forEach((h, i) => mem.writeU16(l.avail + AVAIL_RING + 2 * i, h));
  mem.writeU16(l.avail + RING_FLAGS, c.availFlags);
  mem.writeU16(l.avail + usedEventOffset(size), c.usedEvent);
  let availIdx = (c.start + c.idxDelta) & 0xffff;
  mem.writeU16(l.avail + RING_IDX, availIdx);
  // The device area starts as a driver would leave it (zeroed, idx at the start).
  mem.fill(l.used, usedRingSize(size), 0);
  mem.writeU16(l.used + RING_IDX, c.start);

  const mon = new Monitor();
  const sink: SinkRecord[] = [];
  const dev: SplitDeviceQueue = new SplitDeviceQueue(mem, 0, size, mon, (verdict, fatal) => sink.push({ verdict, fatal, brokenThen: dev.broken }));
  const accesses = countViewAccesses(mem);
  /** Per device call: 8 accesses per descriptor a chain can hold or the ring can have, and some. */
  const ACCESS_BOUND = 8 * (dev.newChain().capacity + size) + 64;
  dev.setAddresses({ desc: l.desc, avail: l.avail, used: l.used });
  assert.equal(dev.activate({ eventIdx: c.eventIdx, indirect: c.indirect }, { avail: c.start, availWrap: true, used: c.start, usedWrap: true }), true);

  const usedLo = l.used;
  const usedHi = l.used + usedRingSize(size);
  const writes: [number, number][] = [];
  mem.onWrite = (a, n) => writes.push([a, n]);
  const held: number[] = [];
  const reader = new ChainReader();
  const writer = new ChainWriter();
  const chain = dev.newChain();

  /** Runs one device call: it must not throw and must write nothing but its used ring. */
  const deviceCall = <T>(what: string, fn: () => T): T => {
    const before = copyAll(mem);
    writes.length = 0;
    let out: T;
    accesses.n = 0;
    try {
      out = fn();
    } catch (err) {
      assert.fail(`device ${what} threw ${err instanceof Error ? err.stack : String(err)}`);
    }
    // Bounded work: walking a hostile chain costs at most ~queue-size descriptors (a few
    // memory accesses each), whatever the table says; an unbounded walk of an indirect table of
    // 2^28 entries would make millions. Counted, not timed: the same on a loaded machine.
    assert.ok(accesses.n <= ACCESS_BOUND, `device ${what} made ${accesses.n} guest memory accesses (bound ${ACCESS_BOUND})`);
    for (const [a, n] of writes) assert.ok(a >= usedLo && a + n <= usedHi, `device ${what} wrote [${a}, +${n}) outside its used ring [${usedLo}, ${usedHi})`);
    const after = mem.regions.map((r) => r.bytes);
    for (let ri = 0; ri < after.length; ri++) {
      const r = mem.regions[ri];
      for (let i = 0; i < r.size; i++) {
        if (after[ri][i] === before[ri][i]) continue;
        const a = r.guestAddr + i;
        assert.ok(a >= usedLo && a < usedHi, `device ${what} changed guest byte ${a} outside its used ring`);
      }
    }
    assertSaneVerdicts(sink, `device ${what}`);
    if (sink.some((s) => s.fatal)) {
      assert.ok(dev.broken, `device ${what}: a fatal verdict was made but the queue is not broken`);
    }
    assert.ok(dev.inFlightCount >= 0 && dev.inFlightCount <= size, `device in flight ${dev.inFlightCount}`);
    return out;
  };

  for (const step of c.steps) {
    switch (step.k) {
      case 'pop': {
        let n = 0;
        for (;;) {
          const ok = deviceCall('pop', () => dev.pop(chain));
          if (!ok) break;
          n++;
          hostileStats.pops++;
          assert.ok(n <= size, `more than ${size} chains popped without avail.idx moving`);
          assert.ok(!dev.broken, 'pop succeeded on a broken queue');
          assert.ok(chain.head < size && dev.isInFlight(chain.head));
          assert.ok(chain.count <= chain.capacity && chain.readable <= chain.count);
          let rb = 0;
          let wb = 0;
          for (let i = 0; i < chain.count; i++) {
            assert.ok(mem.isContiguous(chain.addrs[i], chain.lens[i]), `buffer ${i} [${chain.addrs[i]}, +${chain.lens[i]}) is not in one region`);
            if (i < chain.readable) rb += chain.lens[i];
            else wb += chain.lens[i];
          }
          assert.equal(chain.readableBytes, rb);
          assert.equal(chain.writableBytes, wb);
          assert.ok(rb + wb < 2 ** 32, 'a chain of 2^32 bytes or more was accepted');
          assert.ok(chain.tableDescriptors >= 1 && chain.tableDescriptors <= size);
          // Cursors can consume the whole chain without a memory error.
          reader.reset(mem, chain).skip(rb);
          const r2 = reader.reset(mem, chain);
          const tmp = new Uint8Array(Math.min(rb, 4096));
          r2.read(tmp);
          let seen = 0;
          writer.reset(mem, chain).produce(Math.min(wb, 1 << 20), (v) => (seen += v.length));
          assert.equal(seen, Math.min(wb, 1 << 20));
          held.push(chain.head);
        }
        if (dev.broken) assert.equal(deviceCall('pending', () => dev.pending()), 0);
        break;
      }
      case 'addUsed':
        if (held.length > 0) {
          const [h] = held.splice(step.pick % held.length, 1);
          deviceCall('addUsed', () => dev.addUsed(h, step.len));
          assert.ok(!dev.isInFlight(h));
        }
        break;
      case 'addUsedRaw': {
        const wasInFlight = dev.isInFlight(step.head);
        const before = dev.nextUsed;
        deviceCall('addUsed(raw)', () => dev.addUsed(step.head, step.len));
        if (!wasInFlight) assert.equal(dev.nextUsed, before, 'addUsed of a head not in flight must be ignored');
        else {
          const i = held.indexOf(step.head);
          if (i >= 0) held.splice(i, 1);
        }
        break;
      }
      case 'publish':
        deviceCall('publish', () => dev.publish());
        break;
      case 'enable':
        deviceCall('enableNotifications', () => dev.enableNotifications());
        break;
      case 'disable':
        deviceCall('disableNotifications', () => dev.disableNotifications());
        break;
      case 'scribble': {
        // The (hostile) driver scribbles over its own structures between device calls.
        mem.onWrite = null;
        const [base, len] =
          step.where === 'desc' ? [l.desc, descTableSize(size)] : step.where === 'avail' ? [l.avail, availRingSize(size)] : [SCRATCH_TABLES, SCRATCH_ENTRIES * DESC_SIZE];
        const at = step.at % len;
        const bytes = Uint8Array.from(step.bytes.slice(0, len - at));
        mem.write(base + at, bytes);
        mem.onWrite = (a, n) => writes.push([a, n]);
        break;
      }
      case 'availIdx':
        availIdx = (availIdx + step.delta) & 0xffff;
        mem.onWrite = null;
        mem.writeU16(l.avail + RING_IDX, availIdx);
        mem.onWrite = (a, n) => writes.push([a, n]);
        break;
    }
  }
  // Whatever happened, a broken queue gives nothing more.
  if (dev.broken) assert.equal(deviceCall('pop after broken', () => dev.pop(chain)), false);
  for (const s of sink) hostileStats.clauses.set(s.verdict.clause, (hostileStats.clauses.get(s.verdict.clause) ?? 0) + 1);
  // Every verdict recorded by the monitor went through the sink.
  assert.equal(mon.total, sink.length);
}

test('split ring device: property: hostile descriptor tables and rings never make it throw, loop, or write outside its used ring', { timeout: 60_000 }, () => {
  fc.assert(fc.property(hostileCaseArb, (c) => runHostile(c)), { numRuns: 400 });
  // Generator health: the runs reached successful pops and a spread of distinct rules.
  assert.ok(hostileStats.pops >= 100, `only ${hostileStats.pops} chains popped over all hostile runs`);
  assert.ok(hostileStats.clauses.size >= 8, `only ${[...hostileStats.clauses.keys()].join(', ')} seen`);
});

test('split ring device: targeted hostile chains name the rule they break', () => {
  const size = 8;
  type Setup = (mem: GuestMemory, desc: number) => void;
  const cases: [string, Setup, string, boolean][] = [
    ['self loop', (m, d) => putDesc(m, d, 0, 0x10000, 4, VIRTQ_DESC_F_NEXT, 0), 'split.desc-table.driver.1', true],
    [
      'two-descriptor loop',
      (m, d) => {
        putDesc(m, d, 0, 0x10000, 4, VIRTQ_DESC_F_NEXT, 3);
        putDesc(m, d, 3, 0x10010, 4, VIRTQ_DESC_F_NEXT, 0);
      },
      'split.desc-table.driver.1',
      true,
    ],
    ['next beyond the queue', (m, d) => putDesc(m, d, 0, 0x10000, 4, VIRTQ_DESC_F_NEXT, size), 'struct.desc-next.driver.1', true],
    [
      'readable after writable',
      (m, d) => {
        putDesc(m, d, 0, 0x10000, 4, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1);
        putDesc(m, d, 1, 0x10010, 4, 0, 0);
      },
      'split.message-framing.driver.1',
      true,
    ],
    ['buffer into the hole', (m, d) => putDesc(m, d, 0, 0x11ff0, 0x20, 0, 0), 'struct.buffer-range.driver.1', true],
    ['buffer beyond 2^32', (m, d) => putDesc(m, d, 0, 2 ** 40, 4, 0, 0), 'struct.buffer-range.driver.1', true],
    ['INDIRECT and NEXT', (m, d) => putDesc(m, d, 0, SCRATCH_TABLES, 32, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1), 'split.indirect-descs.driver.4', true],
    ['indirect length not a multiple of 16', (m, d) => putDesc(m, d, 0, SCRATCH_TABLES, 24, VIRTQ_DESC_F_INDIRECT, 0), 'struct.indirect-len.driver.1', true],
    ['empty indirect table', (m, d) => putDesc(m, d, 0, SCRATCH_TABLES, 0, VIRTQ_DESC_F_INDIRECT, 0), 'struct.indirect-len.driver.1', true],
    [
      'nested indirect',
      (m, d) => {
        putDesc(m, d, 0, SCRATCH_TABLES, 32, VIRTQ_DESC_F_INDIRECT, 0);
        putDesc(m, SCRATCH_TABLES, 0, SCRATCH_TABLES + 0x100, 16, VIRTQ_DESC_F_INDIRECT, 0);
      },
      'split.indirect-descs.driver.2',
      true,
    ],
    [
      'indirect table loop',
      (m, d) => {
        putDesc(m, d, 0, SCRATCH_TABLES, 32, VIRTQ_DESC_F_INDIRECT, 0);
        putDesc(m, SCRATCH_TABLES, 0, 0x10000, 4, VIRTQ_DESC_F_NEXT, 1);
        putDesc(m, SCRATCH_TABLES, 1, 0x10000, 4, VIRTQ_DESC_F_NEXT, 0);
      },
      'split.desc-table.driver.1',
      true,
    ],
    [
      'indirect next beyond the table',
      (m, d) => {
        putDesc(m, d, 0, SCRATCH_TABLES, 32, VIRTQ_DESC_F_INDIRECT, 0);
        putDesc(m, SCRATCH_TABLES, 0, 0x10000, 4, VIRTQ_DESC_F_NEXT, 2);
      },
      'struct.desc-next.driver.1',
      true,
    ],
    // An indirect chain longer than the queue is a servable violation, not a fatal one: see
    // test/long-chains.test.ts (served in tolerant mode, device error in strict, fatal past the cap).
  ];
  {
    const indirect = true;
    for (const [name, setup, clause, fatal] of cases) {
      const mem = hostileMemory();
      const l = layoutSplitQueue(HOSTILE_RING_BASE, size);
      const mon = new Monitor();
      const sink: { clause: string; fatal: boolean }[] = [];
      const dev = new SplitDeviceQueue(mem, 0, size, mon, (v, f) => sink.push({ clause: v.clause, fatal: f }));
      dev.setAddresses({ desc: l.desc, avail: l.avail, used: l.used });
      assert.ok(dev.activate({ eventIdx: false, indirect }));
      setup(mem, l.desc);
      mem.writeU16(l.avail + AVAIL_RING, 0);
      mem.writeU16(l.avail + RING_IDX, 1);
      assert.equal(dev.pop(dev.newChain()), false, name);
      assert.deepEqual(
        sink.map((s) => s.clause),
        [clause],
        name,
      );
      assert.equal(sink[0].fatal, fatal, name);
      assert.equal(dev.broken, fatal, name);
    }
  }
});

test('split ring device: INDIRECT without the feature, a head beyond the queue, and avail.idx moving too far or back', () => {
  const size = 8;
  const run = (setup: (mem: GuestMemory, l: ReturnType<typeof layoutSplitQueue>) => void, features: { eventIdx: boolean; indirect: boolean }, start = 0) => {
    const mem = hostileMemory();
    const l = layoutSplitQueue(HOSTILE_RING_BASE, size);
    const mon = new Monitor();
    const dev = new SplitDeviceQueue(mem, 0, size, mon, () => undefined);
    dev.setAddresses({ desc: l.desc, avail: l.avail, used: l.used });
    mem.writeU16(l.avail + RING_IDX, start);
    assert.ok(dev.activate(features, { avail: start, availWrap: true, used: start, usedWrap: true }));
    setup(mem, l);
    const ok = dev.pop(dev.newChain());
    return { ok, clauses: mon.verdicts.map((v) => v.clause), broken: dev.broken, dev };
  };
  let r = run(
    (m, l) => {
      putDesc(m, l.desc, 0, SCRATCH_TABLES, 16, VIRTQ_DESC_F_INDIRECT, 0);
      m.writeU16(l.avail + RING_IDX, 1);
    },
    { eventIdx: false, indirect: false },
  );
  assert.deepEqual([r.ok, r.clauses, r.broken], [false, ['split.indirect-descs.driver.1'], true]);
  r = run(
    (m, l) => {
      m.writeU16(l.avail + AVAIL_RING, size);
      m.writeU16(l.avail + RING_IDX, 1);
    },
    { eventIdx: false, indirect: false },
  );
  assert.deepEqual([r.ok, r.clauses, r.broken], [false, ['struct.desc-next.driver.1'], true]);
  // size + 1 outstanding across the wrap.
  r = run((m, l) => m.writeU16(l.avail + RING_IDX, (0xfffc + size + 1) & 0xffff), { eventIdx: true, indirect: false }, 0xfffc);
  assert.deepEqual([r.ok, r.clauses, r.broken], [false, ['split.avail-ring.driver.1'], true]);
  // Exactly size outstanding across the wrap is fine.
  r = run(
    (m, l) => {
      for (let i = 0; i < size; i++) {
        putDesc(m, l.desc, i, 0x10000 + 16 * i, 16, 0, 0);
        m.writeU16(l.avail + AVAIL_RING + 2 * ((0xfffc + i) & (size - 1)), i);
      }
      m.writeU16(l.avail + RING_IDX, (0xfffc + size) & 0xffff);
    },
    { eventIdx: true, indirect: false },
    0xfffc,
  );
  assert.deepEqual([r.ok, r.clauses, r.broken], [true, [], false]);
  const c = r.dev.newChain();
  let n = 1;
  while (r.dev.pop(c)) n++;
  assert.equal(n, size);
  // The same head made available again while in flight.
  r = run(
    (m, l) => {
      putDesc(m, l.desc, 3, 0x10000, 16, 0, 0);
      m.writeU16(l.avail + AVAIL_RING, 3);
      m.writeU16(l.avail + AVAIL_RING + 2, 3);
      m.writeU16(l.avail + RING_IDX, 2);
    },
    { eventIdx: false, indirect: false },
  );
  assert.equal(r.ok, true);
  assert.equal(r.dev.pop(r.dev.newChain()), false);
  assert.equal(r.dev.broken, true);
});

/** A chain of `n` descriptors over one 1 MiB region, all but the last 1 MiB long. */
function bigChain(lastLen: number): { clauses: string[]; ok: boolean; total: number } {
  const MiB = 1 << 20;
  const size = 4096;
  const mem = new GuestMemory([
    { guestAddr: 0, size: 0x20000, buffer: new ArrayBuffer(0x20000) },
    { guestAddr: MiB, size: MiB + 4096, buffer: new ArrayBuffer(MiB + 4096) },
  ]);
  const l = layoutSplitQueue(0, size);
  const mon = new Monitor();
  const dev = new SplitDeviceQueue(mem, 0, size, mon, () => undefined);
  dev.setAddresses({ desc: l.desc, avail: l.avail, used: l.used });
  assert.ok(dev.activate({ eventIdx: false, indirect: false }));
  for (let i = 0; i < size; i++) putDesc(mem, l.desc, i, MiB, i < size - 1 ? MiB : lastLen, i < size - 1 ? VIRTQ_DESC_F_NEXT : 0, i + 1);
  mem.writeU16(l.avail + RING_IDX, 1);
  const c = dev.newChain();
  const ok = dev.pop(c);
  return { clauses: mon.verdicts.map((v) => v.clause), ok, total: c.readableBytes };
}

test('split ring device: a chain longer than 2^32 bytes breaks split.desc-table.driver.1', () => {
  const r = bigChain((1 << 20) - 1 + 2); // 2^32 + 1 bytes
  assert.deepEqual([r.ok, r.clauses], [false, ['split.desc-table.driver.1']]);
  const s = bigChain((1 << 20) - 1); // 2^32 - 1 bytes
  assert.deepEqual([s.ok, s.clauses, s.total], [true, [], 2 ** 32 - 1]);
});

// ------------------------------------------------------------------ hostile configuration

test('split ring device: property: activate() accepts exactly the well-formed configurations, never throws', () => {
  const mem = hostileMemory();
  const maxSize = 64;
  const addrArb = fc.oneof(
    fc.integer({ min: 0, max: 0x4000 }),
    fc.integer({ min: 0, max: 0x100 }).map((k) => k * 16),
    fc.integer({ min: 0x10000 - 0x800, max: 0x12000 }),
    fc.integer({ min: 0, max: 2 ** 53 - 1 }),
  );
  fc.assert(
    fc.property(
      fc.oneof(fc.integer({ min: 0, max: 7 }).map((l) => 1 << l), fc.integer({ min: 0, max: 0xffff })),
      addrArb,
      addrArb,
      addrArb,
      fc.boolean(),
      (size, desc, avail, used, eventIdx) => {
        const mon = new Monitor();
        const sink: { clause: string; fatal: boolean }[] = [];
        const dev = new SplitDeviceQueue(mem, 0, maxSize, mon, (v, f) => sink.push({ clause: v.clause, fatal: f }));
        dev.setSize(size);
        dev.setAddresses({ desc: desc, avail: avail, used: used });
        let ok: boolean;
        try {
          ok = dev.activate({ eventIdx, indirect: true });
        } catch (err) {
          assert.fail(`activate threw ${String(err)}`);
        }
        const sizeOk = isPowerOfTwo(size) && size <= maxSize;
        const valid =
          sizeOk &&
          desc % 16 === 0 &&
          avail % 2 === 0 &&
          used % 4 === 0 &&
          mem.isContiguous(desc, descTableSize(size)) &&
          mem.isContiguous(avail, availRingSize(size)) &&
          mem.isContiguous(used, usedRingSize(size)) &&
          !(used < desc + descTableSize(size) && desc < used + usedRingSize(size)) &&
          !(used < avail + availRingSize(size) && avail < used + usedRingSize(size));
        assert.equal(ok, valid, `size ${size} desc ${desc} avail ${avail} used ${used}`);
        assert.equal(dev.active, valid);
        if (valid) assert.deepEqual(sink, []);
        else {
          assert.equal(sink.length, 1);
          assert.ok(sink[0].fatal);
          assert.ok(clauseInfo(sink[0].clause) !== undefined, sink[0].clause);
          assert.equal(dev.broken, true);
          assert.equal(dev.pop(dev.newChain()), false);
          assert.equal(dev.pending(), 0);
        }
      },
    ),
    { numRuns: 400 },
  );
});

// ------------------------------------------------------------------ hostile used ring (driver side)

test('split ring driver: property: a hostile used ring never makes getUsed throw or hand out a token twice', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 4 }),
      fc.boolean(),
      fc.integer({ min: 0, max: 0xffff }),
      fc.array(
        fc.oneof(
          fc.record({ k: fc.constant('elem' as const), slot: fc.nat(), id: fc.oneof(fc.integer({ min: 0, max: 17 }), fc.integer({ min: 0, max: 0xffffffff })), len: fc.oneof(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: 0xffffffff })) }),
          fc.record({ k: fc.constant('idx' as const), delta: fc.oneof(fc.integer({ min: 0, max: 5 }), fc.integer({ min: 0, max: 0xffff })) }),
          fc.record({ k: fc.constant('flags' as const), v: fc.integer({ min: 0, max: 0xffff }) }),
          fc.record({ k: fc.constant('scribble' as const), at: fc.nat(), v: fc.integer({ min: 0, max: 0xffffffff }) }),
          fc.record({ k: fc.constant('get' as const), n: fc.integer({ min: 1, max: 4 }) }),
          fc.record({ k: fc.constant('kick' as const) }),
          fc.record({ k: fc.constant('enable' as const) }),
        ),
        { minLength: 1, maxLength: 40 },
      ),
      (log, eventIdx, start, steps) => {
        const size = 1 << log;
        const p = makePair({ size, eventIdx, indirect: true, indirectMax: size, start });
        const { mem, drv, layout } = p;
        const tokens: { id: number; writable: number }[] = [];
        // Fill the queue: indirect two-buffer chains, direct two-buffer chains, single buffers.
        for (let i = 0; drv.numFree > 0; i++) {
          const t = { id: i, writable: 100 + i };
          tokens.push(t);
          const q = drv.begin();
          if (i % 2 === 0 || drv.numFree >= 2) q.addReadable(0x28000 + 0x100 * i, 10);
          assert.ok(q.addWritable(0x28080 + 0x100 * i, t.writable).commit(t, { indirect: i % 2 === 0 }) >= 0);
        }
        drv.publish();
        const returned = new Set<unknown>();
        let usedIdx = start;
        for (const s of steps) {
          try {
            switch (s.k) {
              case 'elem': {
                const o = layout.used + USED_RING + USED_ELEM_SIZE * (s.slot % size);
                mem.writeU32(o, s.id);
                mem.writeU32(o + 4, s.len);
                break;
              }
              case 'idx':
                usedIdx = (usedIdx + s.delta) & 0xffff;
                mem.writeU16(layout.used + RING_IDX, usedIdx);
                break;
              case 'flags':
                mem.writeU16(layout.used + RING_FLAGS, s.v);
                break;
              case 'scribble':
                mem.writeU32(layout.desc + 4 * (s.at % (4 * size)), s.v);
                break;
              case 'get':
                for (let i = 0; i < s.n; i++) {
                  const t = drv.getUsed() as { id: number; writable: number } | undefined;
                  if (t === undefined) continue;
                  assert.ok(tokens.includes(t), 'getUsed returned something never committed');
                  assert.ok(!returned.has(t), `token ${t.id} returned twice`);
                  returned.add(t);
                  assert.ok(drv.lastLen <= t.writable, `lastLen ${drv.lastLen} beyond the ${t.writable} writable bytes`);
                }
                break;
              case 'kick':
                drv.needsKick();
                break;
              case 'enable':
                drv.enableInterrupts();
                break;
            }
          } catch (err) {
            assert.fail(`driver ${s.k} threw ${err instanceof Error ? err.stack : String(err)}`);
          }
          assertSaneVerdicts(p.drvSink, `driver ${s.k}`);
          assert.ok(drv.numFree >= 0 && drv.numFree <= size);
          assert.equal(drv.inFlightCount, tokens.length - returned.size);
          if (drv.broken) assert.equal(drv.getUsed(), undefined);
        }
      },
    ),
    { numRuns: 300 },
  );
});

// ------------------------------------------------------------------ chain length vs queue size

test('split ring driver: no chain longer than the queue size, even through an indirect table (split.indirect-descs.driver.3)', () => {
  // VirtioDriver.setupQueue asks for indirect tables of 16 whatever the queue size: with a
  // 4-entry queue the driver must still never expose a chain of more than 4 buffers.
  for (const n of [4, 5, 6, 8]) {
    const p = makePair({ size: 4, eventIdx: false, indirect: true, indirectMax: 8 });
    let head = -1;
    try {
      const q = p.drv.begin();
      for (let i = 0; i < n; i++) q.addReadable(0x28000 + 16 * i, 16);
      head = p.drv.commit(`${n} buffers`);
    } catch (err) {
      // Refusing the chain up front is fine (it cannot be made available on this queue).
      assert.ok(n > 4 && err instanceof RangeError, `${n} buffers: ${String(err)}`);
    }
    if (n <= 4) assert.ok(head >= 0, `a ${n}-buffer chain fits a 4-entry queue`);
    if (head >= 0) {
      p.drv.publish();
      const c = p.dev.newChain();
      assert.equal(p.dev.pop(c), true, `${n} buffers: ${JSON.stringify(p.devMon.verdicts.map((v) => v.clause))}`);
      assert.equal(c.count, n);
      assert.ok(n <= 4, `the driver exposed a ${n}-buffer chain on a 4-entry queue`);
    }
    assert.equal(p.devMon.verdicts.length, 0);
  }
});

test('split ring device: a chain of exactly 2^32 bytes is allowed (2.7.5 forbids chains "longer than 2^32 bytes")', () => {
  const r = bigChain(1 << 20); // 4096 x 1 MiB = 2^32 bytes exactly
  assert.deepEqual([r.ok, r.clauses, r.total], [true, [], 2 ** 32]);
});

// ------------------------------------------------------------------ indices going back

test(
  'split ring device: avail.idx going back, even when not below the next entry to pop, is reported ' +
    '(split.avail-ring.driver.1: "A driver MUST NOT decrement the available idx")',
  () => {
    const p = makePair({ size: 8, eventIdx: false, indirect: false });
    for (let i = 0; i < 5; i++) assert.ok(p.drv.begin().addWritable(0x28000 + 16 * i, 8).commit(i) >= 0);
    p.drv.publish(); // avail.idx 0 -> 5
    const c = p.dev.newChain();
    assert.ok(p.dev.pop(c) && p.dev.pop(c)); // the device has seen idx 5 and popped 2 entries
    assert.equal(p.dev.pending(), 3);
    p.mem.writeU16(p.layout.avail + RING_IDX, 3); // "unexposes" entries 3 and 4
    p.dev.pending();
    assert.deepEqual(
      p.devMon.verdicts.map((v) => v.clause),
      ['split.avail-ring.driver.1'],
    );
    assert.equal(p.dev.broken, true);
    assert.equal(p.dev.pop(c), false);
  },
);

test(
  'split ring driver: used.idx going back, even when not below what the driver collected, is reported ' +
    '(struct.used-idx.device.1: the used index may only advance)',
  () => {
    const p = makePair({ size: 8, eventIdx: false, indirect: false });
    for (let i = 0; i < 5; i++) assert.ok(p.drv.begin().addWritable(0x28000 + 16 * i, 8).commit(i) >= 0);
    p.drv.publish();
    const c = p.dev.newChain();
    while (p.dev.pop(c)) p.dev.addUsed(c.head, 1);
    p.dev.publish(); // used.idx 0 -> 5
    assert.equal(p.drv.getUsed(), 0);
    assert.equal(p.drv.usedPending(), 4); // the driver has seen used.idx 5
    p.mem.writeU16(p.layout.used + RING_IDX, 3); // used.idx 5 -> 3
    p.drv.usedPending();
    assert.deepEqual(
      p.drvMon.verdicts.map((v) => v.clause),
      ['struct.used-idx.device.1'],
    );
    assert.equal(p.drv.broken, true);
    assert.equal(p.drv.getUsed(), undefined);
  },
);
