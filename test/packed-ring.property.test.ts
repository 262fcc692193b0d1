/**
 * Packed virtqueue (spec 2.8) property tests, driver side (PackedDriverQueue) against device
 * side (PackedDeviceQueue) over one GuestMemory:
 *
 *  - packedNeedEvent against a brute-force reading of the event suppression rules;
 *  - an honest pair: queue sizes 1..64 (most of them not powers of two), random list shapes
 *    (readable then writable, direct and indirect), random batching, the device completing
 *    popped buffers in a random order; the device sees exactly what the driver added, the
 *    driver gets back exactly its tokens and lengths, the kick / interrupt decisions follow
 *    the event suppression structures, no verdicts, every ring slot comes back;
 *  - the same pair driven round the ring thousands of times (both wrap counters flip);
 *  - a hostile ring (random descriptors, flags and event structures written raw): the device
 *    never throws or loops, names only catalogue clauses, is broken after a fatal verdict,
 *    and writes nothing but used descriptors (len, id, flags) and its own event flags;
 *  - targeted hostile lists, each naming its clause; a hostile device seen by the driver;
 *  - regressions for three defects found while these tests were written (see the end).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { GuestAllocator } from '../src/memory/allocator.js';
import { Monitor } from '../src/monitor/monitor.js';
import { clauseInfo } from '../src/monitor/catalogue.js';
import { ChainReader, ChainWriter, DescriptorChain } from '../src/virtqueue/chain.js';
import { PackedDeviceQueue } from '../src/virtqueue/packed/device.js';
import { PackedDriverQueue, layoutPackedQueue, packedQueueFootprint } from '../src/virtqueue/packed/driver.js';
import {
  EVENT_FLAGS,
  EVENT_OFF_WRAP,
  EVENT_SIZE,
  PDESC_F_AVAIL,
  PDESC_F_INDIRECT,
  PDESC_F_NEXT,
  PDESC_F_USED,
  PDESC_F_WRITE,
  PDESC_SIZE,
  availFlags,
  packedNeedEvent,
  packedRingSize,
  usedFlags,
} from '../src/spec/packed-layout.js';
import { DATA_END, DATA_SPLIT, countViewAccesses, makePackedPair, allocSegs, offerSegs, releaseSegs, type Seg, type Shape, splitAtRegions, type PackedPair, type SinkRecord } from './ring-harness.js';

// ------------------------------------------------------------------ layout and packedNeedEvent

test('layoutPackedQueue: parts aligned (packed.ring.driver.1), disjoint, in order, within packedQueueFootprint, any size', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 1 << 24 }), fc.integer({ min: 1, max: 32768 }), fc.integer({ min: 0, max: 64 }), (base, size, indirectMax) => {
      const l = layoutPackedQueue(base, size, indirectMax);
      assert.equal(l.desc % 16, 0);
      assert.equal(l.avail % 4, 0);
      assert.equal(l.used % 4, 0);
      assert.equal(l.pool % 16, 0);
      assert.ok(l.desc >= base);
      assert.ok(l.desc + packedRingSize(size) <= l.avail);
      assert.ok(l.avail + EVENT_SIZE <= l.used);
      assert.ok(l.used + EVENT_SIZE <= l.pool);
      assert.equal(l.end, l.pool + size * indirectMax * PDESC_SIZE);
      assert.ok(l.end <= base + packedQueueFootprint(size, indirectMax), 'layout overruns its footprint');
    }),
    { numRuns: 300 },
  );
});

/**
 * Brute force (2.8.10, 2.8.14): the event (off, wrap) fires when the descriptor at ring offset
 * `off` is made available / used while the ring wrap counter equals `wrap`. Linear position p
 * is slot p % size of pass floor(p / size); the wrap counter is 1 on even passes.
 */
function eventHit(offWrap: number, size: number, old: number, next: number): boolean {
  const off = offWrap & 0x7fff;
  const wrap = offWrap >> 15;
  for (let p = old; p < next; p++) if (p % size === off && (Math.floor(p / size) % 2 === 0 ? 1 : 0) === wrap) return true;
  return false;
}

test('packedNeedEvent: property: true exactly when the event descriptor (offset and wrap) is among positions [old, next)', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 70 }),
      fc.nat({ max: 1_000_000 }),
      fc.nat(),
      fc.oneof(fc.integer({ min: 0, max: 0xffff }), fc.record({ off: fc.nat(), wrap: fc.boolean() })),
      (size, old, span, ev) => {
        const next = old + (span % (size + 1)); // at most a ring's worth between two decisions
        const offWrap = typeof ev === 'number' ? ev : (ev.off % size) | (ev.wrap ? 0x8000 : 0);
        assert.equal(packedNeedEvent(offWrap, size, old, next), eventHit(offWrap, size, old, next), `size ${size} old ${old} next ${next} offWrap 0x${offWrap.toString(16)}`);
      },
    ),
    { numRuns: 1000 },
  );
});

// ------------------------------------------------------------------ honest pair

interface Token {
  serial: number;
  segs: Seg[];
  /** Buffer id the driver chose. */
  bufId: number;
  useIndirect: boolean;
  /** Ring slots the list takes. */
  need: number;
  readableBytes: number;
  writableBytes: number;
}
type PairOp =
  | { k: 'add'; shape: Shape }
  | { k: 'publish' }
  | { k: 'pop'; n: number }
  | { k: 'complete'; picks: number[]; frac: number }
  | { k: 'devPublish' }
  | { k: 'collect'; n: number }
  | { k: 'irq'; on: boolean }
  | { k: 'notif'; on: boolean };

const lenArb = fc.oneof({ weight: 1, arbitrary: fc.constant(0) }, { weight: 8, arbitrary: fc.integer({ min: 1, max: 64 }) }, { weight: 1, arbitrary: fc.integer({ min: 65, max: 600 }) });
const shapeArb: fc.Arbitrary<Shape> = fc.record({
  readable: fc.array(lenArb, { maxLength: 5 }),
  writable: fc.array(lenArb, { maxLength: 5 }),
  indirect: fc.boolean(),
  align: fc.constantFrom(1, 2, 8),
});
const pairOpArb: fc.Arbitrary<PairOp> = fc.oneof(
  { weight: 7, arbitrary: fc.record({ k: fc.constant('add' as const), shape: shapeArb }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('publish' as const) }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('pop' as const), n: fc.integer({ min: 1, max: 6 }) }) },
  // Out of order: each pick chooses among the buffers the device holds.
  { weight: 3, arbitrary: fc.record({ k: fc.constant('complete' as const), picks: fc.array(fc.nat(), { minLength: 1, maxLength: 6 }), frac: fc.double({ min: 0, max: 1, noNaN: true }) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('devPublish' as const) }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('collect' as const), n: fc.integer({ min: 1, max: 6 }) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('irq' as const), on: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('notif' as const), on: fc.boolean() }) },
);

interface PCfg {
  size: number;
  maxSize: number;
  eventIdx: boolean;
  indirect: boolean;
  indirectMax: number;
}

/** Sizes 1..64: mostly not powers of two; the small and the extreme ones more often. */
const sizeArb = fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 1, max: 64 }) }, { weight: 2, arbitrary: fc.integer({ min: 1, max: 9 }) }, { weight: 1, arbitrary: fc.constantFrom(1, 3, 5, 63, 64) });

const cfgArb: fc.Arbitrary<PCfg> = fc
  .record({ size: sizeArb, extra: fc.constantFrom(0, 0, 1, 7), eventIdx: fc.boolean(), indirect: fc.boolean(), imax: fc.nat() })
  .map((c) => ({
    size: c.size,
    maxSize: c.size + c.extra,
    eventIdx: c.eventIdx,
    indirect: c.indirect,
    // May exceed the queue size: the driver caps its tables at the queue size itself.
    indirectMax: 1 + (c.imax % Math.min(c.size + 2, 33)),
  }));

const readPattern = (serial: number, seg: number, i: number) => (serial * 31 + seg * 7 + i * 3 + 1) & 0xff;
const writePattern = (serial: number, i: number) => (serial * 17 + i * 5 + 0x55) & 0xff;

interface RunStats {
  buffers: number;
  slots: number;
  availWrapFlips: number;
  usedWrapFlips: number;
  outOfOrder: number;
  kicks: number;
  irqs: number;
}

/**
 * Runs `ops` on a fresh packed pair, then drains; with `wraps` > 0, repeats ops + drain until
 * the driver has made `wraps` ring's worth of slots available. Checks everything on the way.
 */
function runPacked(cfg: PCfg, ops: PairOp[], wraps = 0, seed = 0): RunStats {
  const p: PackedPair = makePackedPair(cfg);
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
  /** usedAt[i]: linear ring position of the i-th used descriptor (slots of the lists before it). */
  const usedAt: number[] = [0];
  let devPublished = 0;
  let collected = 0;
  let modelFree = size;
  let serial = 0;
  let slots = 0; // slots committed (driver's linear avail position)
  let kickedSlots = 0;
  let devNotif = true; // device event suppression: ENABLE (zeroed) at start
  // With EVENT_IDX, enableNotifications asks for a notification at the slot it will look at next
  // (RING_EVENT_FLAGS_DESC); until the first enable, the zeroed structure means ENABLE.
  let devEventAt = -1;
  let poppedSlots = 0;
  let irq: { k: 'enable' } | { k: 'disable' } | { k: 'desc'; at: number } = { k: 'enable' }; // driver's, idem
  const inFlightIds = new Set<number>();
  const chainPool: DescriptorChain[] = [];
  const reader = new ChainReader();
  const writer = new ChainWriter();
  const stats: RunStats = { buffers: 0, slots: 0, availWrapFlips: 0, usedWrapFlips: 0, outOfOrder: 0, kicks: 0, irqs: 0 };
  let lastAvailWrap = dev.availWrap;
  let lastUsedWrap = dev.usedWrap;
  let rng = seed >>> 0 || 1;

  const add = (shape: Shape) => {
    let readable = shape.readable;
    let writable = shape.writable;
    if (readable.length + writable.length === 0) writable = [8];
    // No list longer than the queue (packed.scatter-gather-support.driver.2).
    readable = readable.slice(0, size);
    writable = writable.slice(0, size - readable.length);
    const n = readable.length + writable.length;
    const useIndirect = shape.indirect && cfg.indirect && n > 1 && n <= Math.min(cfg.indirectMax, size);
    const need = useIndirect ? 1 : n;
    const id = serial++;
    const segs = allocSegs(alloc, readable, writable, shape.align);
    if (segs === null) return; // out of data memory: skip this add
    segs.forEach((s, si) => {
      if (!s.writable) {
        const b = new Uint8Array(s.len);
        for (let i = 0; i < s.len; i++) b[i] = readPattern(id, si, i);
        mem.write(s.addr, b);
      } else mem.fill(s.addr, s.len, 0xee);
    });
    const token: Token = { serial: id, segs, bufId: -1, useIndirect, need, readableBytes: readable.reduce((a, b) => a + b, 0), writableBytes: writable.reduce((a, b) => a + b, 0) };
    const freeBefore = drv.numFree;
    assert.equal(freeBefore, modelFree, 'numFree before commit');
    offerSegs(drv, segs);
    const bufId = drv.commit(token, { indirect: shape.indirect });
    if (freeBefore < need) {
      assert.equal(bufId, -1, `commit of ${need} slots with ${freeBefore} free must fail`);
      releaseSegs(alloc, segs);
      return;
    }
    assert.ok(bufId >= 0 && bufId < size, `commit returned buffer id ${bufId}`);
    assert.ok(!inFlightIds.has(bufId), `buffer id ${bufId} handed out while still in flight`);
    inFlightIds.add(bufId);
    token.bufId = bufId;
    committed.push(token);
    modelFree -= need;
    slots += need;
  };

  const publish = () => {
    const kick = drv.publish();
    const wanted = devEventAt < 0 ? true : packedNeedEvent((devEventAt % size) | (Math.floor(devEventAt / size) % 2 === 0 ? 0x8000 : 0), size, kickedSlots, slots);
    assert.equal(kick, slots !== kickedSlots && devNotif && wanted, `kick decision (device notifications ${devNotif ? 'on' : 'off'}, event at ${devEventAt})`);
    if (kick) stats.kicks++;
    kickedSlots = slots;
    published = committed.length;
  };

  const pop = () => {
    const chain = chainPool.pop() ?? dev.newChain();
    const ok = dev.pop(chain);
    assert.equal(ok, popped < published, `pop with ${published - popped} published lists waiting`);
    if (!ok) {
      chainPool.push(chain);
      return;
    }
    if (dev.availWrap !== lastAvailWrap) {
      stats.availWrapFlips++;
      lastAvailWrap = dev.availWrap;
    }
    const token = committed[popped++];
    poppedSlots += token.need;
    const what = `list ${token.serial} (id ${token.bufId})`;
    assert.equal(chain.head, token.bufId, `${what}: buffer id`);
    assert.equal(chain.indirect, token.useIndirect, `${what}: indirect`);
    assert.equal(chain.tableDescriptors, token.need, `${what}: ring slots`);
    let i = 0;
    let nReadable = 0;
    for (const s of token.segs) {
      for (const [a, l] of splitAtRegions(mem, s.addr, s.len)) {
        assert.equal(chain.addrs[i], a, `${what}: buffer ${i} address`);
        assert.equal(chain.lens[i], l, `${what}: buffer ${i} length`);
        i++;
        if (!s.writable) nReadable = i;
      }
    }
    assert.equal(chain.count, i, `${what}: buffer count`);
    assert.equal(chain.readable, nReadable, `${what}: readable count`);
    assert.equal(chain.readableBytes, token.readableBytes);
    assert.equal(chain.writableBytes, token.writableBytes);
    // The device reads what the driver wrote.
    const r = reader.reset(mem, chain);
    const got = new Uint8Array(token.readableBytes);
    r.read(got);
    let k = 0;
    token.segs.forEach((s, si) => {
      if (!s.writable) for (let j = 0; j < s.len; j++, k++) if (got[k] !== readPattern(token.serial, si, j)) assert.fail(`${what}: readable byte ${k}`);
    });
    assert.equal(r.remaining, 0);
    assert.ok(dev.isInFlight(token.bufId));
    held.push({ token, chain });
  };

  const complete = (pick: number, frac: number) => {
    if (held.length === 0) return;
    const at = pick % held.length;
    if (at !== 0) stats.outOfOrder++;
    const [{ token, chain }] = held.splice(at, 1);
    const len = Math.min(token.writableBytes, Math.floor(frac * (token.writableBytes + 1)));
    const w = writer.reset(mem, chain);
    const b = new Uint8Array(len);
    for (let j = 0; j < len; j++) b[j] = writePattern(token.serial, j);
    w.write(b);
    dev.addUsed(chain.head, len);
    chainPool.push(chain);
    if (dev.usedWrap !== lastUsedWrap) {
      stats.usedWrapFlips++;
      lastUsedWrap = dev.usedWrap;
    }
    assert.ok(!dev.isInFlight(chain.head));
    used.push({ token, len });
    usedAt.push(usedAt[usedAt.length - 1] + token.need);
  };

  /**
   * With RING_EVENT_FLAGS_DESC the driver names a ring position by offset and wrap counter,
   * i.e. modulo two passes: the event fires when a used descriptor of this batch lands on the
   * position where the `at`-th one went (the next one the driver had to collect) or on the same
   * offset with the same wrap counter 2k passes later (an event the driver left stale).
   */
  const eventFires = (at: number, a: number, b: number) => {
    const cycle = 2 * size;
    const dist = (((usedAt[at] - usedAt[a]) % cycle) + cycle) % cycle;
    return dist < usedAt[b] - usedAt[a];
  };

  const devPublish = () => {
    const a = devPublished;
    const b = used.length;
    const want = b > a && (irq.k === 'enable' || (irq.k === 'desc' && eventFires(irq.at, a, b)));
    const got = dev.publish();
    assert.equal(got, want, `interrupt decision for completions [${a}, ${b}) with driver events ${JSON.stringify(irq)}`);
    if (got) stats.irqs++;
    devPublished = b;
  };

  const collect = () => {
    const tok = drv.getUsed();
    if (collected >= devPublished) {
      assert.equal(tok, undefined, 'getUsed with nothing published');
      return;
    }
    const { token, len } = used[collected++];
    assert.equal(tok, token, `getUsed returned the wrong token (want list ${token.serial})`);
    assert.equal(drv.lastLen, len, `length of list ${token.serial}`);
    assert.equal(drv.lastId, token.bufId);
    // The driver sees the first `len` bytes the device wrote, over the writable buffers in order.
    let i = 0;
    for (const s of token.segs) {
      if (!s.writable) continue;
      const b = new Uint8Array(s.len);
      mem.read(s.addr, b);
      for (let j = 0; j < s.len; j++, i++) if (b[j] !== (i < len ? writePattern(token.serial, i) : 0xee)) assert.fail(`list ${token.serial} writable byte ${i}`);
    }
    releaseSegs(alloc, token.segs);
    inFlightIds.delete(token.bufId);
    modelFree += token.need;
  };

  const check = (what: string) => {
    if (drv.numFree !== modelFree) assert.equal(drv.numFree, modelFree, `${what}: driver numFree`);
    if (drv.inFlightCount !== committed.length - collected) assert.equal(drv.inFlightCount, committed.length - collected, `${what}: driver in flight`);
    if (dev.inFlightCount !== held.length) assert.equal(dev.inFlightCount, held.length, `${what}: device in flight`);
    if (p.drvMon.total + p.devMon.total > 0) assert.deepEqual([...p.drvMon.verdicts, ...p.devMon.verdicts], [], `${what}: verdicts`);
  };

  const apply = (op: PairOp) => {
    switch (op.k) {
      case 'add':
        add(op.shape);
        break;
      case 'publish':
        publish();
        break;
      case 'pop':
        for (let i = 0; i < op.n; i++) pop();
        break;
      case 'complete':
        for (const pick of op.picks) complete(pick, op.frac);
        break;
      case 'devPublish':
        devPublish();
        break;
      case 'collect':
        for (let i = 0; i < op.n; i++) collect();
        break;
      case 'irq':
        if (op.on) {
          const pending = drv.enableInterrupts();
          irq = cfg.eventIdx ? { k: 'desc', at: collected } : { k: 'enable' };
          assert.equal(pending, collected < devPublished, 'enableInterrupts: used buffers pending');
        } else {
          drv.disableInterrupts();
          irq = { k: 'disable' };
        }
        break;
      case 'notif':
        if (op.on) {
          assert.equal(dev.enableNotifications(), popped < published, 'enableNotifications: buffers pending');
          devNotif = true;
          devEventAt = cfg.eventIdx ? poppedSlots : -1;
        } else {
          dev.disableNotifications();
          devNotif = false;
        }
        break;
    }
    check(op.k);
  };

  const drain = () => {
    publish();
    while (popped < published) pop();
    pop(); // and one more, which finds nothing
    // Complete what is held in a random order (xorshift, seeded by the property).
    while (held.length > 0) {
      rng ^= rng << 13;
      rng ^= rng >>> 17;
      rng ^= rng << 5;
      complete(rng >>> 0, ((rng >>> 8) & 0xff) / 255);
    }
    devPublish();
    while (collected < used.length) collect();
    collect(); // nothing more
    check('drain');
    assert.equal(drv.numFree, size, 'ring slots leaked');
    assert.equal(alloc.available, initialAvail);
  };

  for (const op of ops) apply(op);
  drain();
  if (wraps > 0) {
    for (let rep = 0; slots < wraps * size; rep++) {
      const before = slots;
      for (const op of ops) apply(op);
      drain();
      if (slots === before) break; // ops that add nothing: the caller checks the wrap count
    }
  }
  // Both sides went round the ring the same number of times, and both wrap counters flipped
  // once per pass.
  const passes = Math.floor(slots / size);
  assert.equal(dev.nextAvail, slots % size, 'device avail slot');
  assert.equal(dev.nextUsed, slots % size, 'device used slot');
  assert.equal(dev.availWrap, passes % 2 === 0, 'device avail wrap counter');
  assert.equal(dev.usedWrap, passes % 2 === 0, 'device used wrap counter');
  assert.equal(stats.availWrapFlips, passes);
  assert.equal(stats.usedWrapFlips, passes);
  assert.equal(p.drvSink.length + p.devSink.length, 0);
  stats.buffers = committed.length;
  stats.slots = slots;
  return stats;
}

const totals = { runs: 0, buffers: 0, outOfOrder: 0, sizes: new Set<number>() };

test('packed ring pair: property: sizes 1..64, random batching, list shapes, out-of-order completion; exact round trip, no verdicts, no leaks', { timeout: 60_000 }, () => {
  fc.assert(
    fc.property(cfgArb, fc.array(pairOpArb, { minLength: 1, maxLength: 120, size: 'max' }), fc.nat(), (cfg, ops, seed) => {
      const s = runPacked(cfg, ops, 0, seed);
      totals.runs++;
      totals.buffers += s.buffers;
      totals.outOfOrder += s.outOfOrder;
      totals.sizes.add(cfg.size);
    }),
    { numRuns: 200 },
  );
  // The generator reaches what it is meant to: odd sizes, many buffers, reordering.
  assert.ok([...totals.sizes].some((n) => (n & (n - 1)) !== 0), 'no size that is not a power of two was tried');
  assert.ok(totals.outOfOrder > 40, `only ${totals.outOfOrder} out-of-order completions`);
});

test('packed ring pair: property: thousands of passes round the ring (both wrap counters flip each pass)', { timeout: 60_000 }, () => {
  let totalPasses = 0;
  fc.assert(
    fc.property(
      cfgArb,
      fc.array(pairOpArb, { minLength: 4, maxLength: 40, size: 'max' }),
      shapeArb,
      fc.nat(),
      (cfg, ops, firstShape, seed) => {
        // Passes wanted: a few thousand on small rings, fewer (a bounded number of slots) on large ones.
        const wraps = Math.max(150, Math.min(3000, Math.floor(12_000 / cfg.size)));
        const s = runPacked(cfg, [{ k: 'add', shape: firstShape }, ...ops], wraps, seed);
        assert.ok(s.slots >= wraps * cfg.size, `went round only ${s.slots / cfg.size} times`);
        totalPasses += s.availWrapFlips;
      },
    ),
    { numRuns: 12 },
  );
  assert.ok(totalPasses >= 4000, `only ${totalPasses} passes in all`);
});

test('packed ring pair: 5000+ passes on rings of 1, 2, 3, 5 and 7 slots, every list shape, in and out of order', () => {
  const shapes: Shape[] = [
    { readable: [], writable: [16], indirect: false, align: 1 },
    { readable: [3, 5], writable: [9], indirect: true, align: 2 },
    { readable: [40], writable: [0, 7], indirect: false, align: 8 },
    { readable: [1, 2, 3], writable: [], indirect: true, align: 1 },
    { readable: [], writable: [1, 1, 1, 1], indirect: false, align: 1 },
  ];
  for (const size of [1, 2, 3, 5, 7]) {
    for (const eventIdx of [false, true]) {
      const ops: PairOp[] = [];
      for (let i = 0; i < 12; i++) {
        ops.push({ k: 'add', shape: shapes[i % shapes.length] });
        if (i % 3 === 1) ops.push({ k: 'publish' }, { k: 'pop', n: 3 }, { k: 'complete', picks: [i, 1], frac: 0.5 }, { k: 'devPublish' }, { k: 'collect', n: 2 }, { k: 'irq', on: i % 2 === 0 });
      }
      const s = runPacked({ size, maxSize: size, eventIdx, indirect: size % 2 === 1, indirectMax: 4 }, ops, 5000, size);
      assert.ok(s.availWrapFlips >= 5000, `size ${size}: ${s.availWrapFlips} passes`);
    }
  }
});

// ------------------------------------------------------------------ hostile ring (device side)

const RING_BASE = 0x100;
const SCRATCH = 0x2000; // 64 descriptors: targets for INDIRECT
const SCRATCH_ENTRIES = 64;

function hostileMemory(): GuestMemory {
  return new GuestMemory([
    { guestAddr: 0, size: 0x4000, buffer: new ArrayBuffer(0x4000) },
    { guestAddr: 0x10000, size: 0x1000, buffer: new ArrayBuffer(0x1000) },
    { guestAddr: 0x11000, size: 0x1000, buffer: new ArrayBuffer(0x1001), offset: 1 }, // adjacent, odd offset
    { guestAddr: 0x20000, size: 0x100, buffer: new ArrayBuffer(0x100) }, // after a hole
  ]);
}

interface RawDesc {
  addr: bigint;
  len: number;
  id: number;
  flags: number;
}

function writeRaw(mem: GuestMemory, table: number, i: number, d: RawDesc): void {
  const o = table + i * PDESC_SIZE;
  mem.writeU64(o, d.addr);
  mem.writeU32(o + 8, d.len);
  mem.writeU16(o + 12, d.id);
  mem.writeU16(o + 14, d.flags);
}

const addrArb = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0x10000 - 8, max: 0x12008 }).map(BigInt) },
  { weight: 2, arbitrary: fc.integer({ min: 0x20000 - 8, max: 0x20108 }).map(BigInt) },
  { weight: 4, arbitrary: fc.integer({ min: 0, max: SCRATCH_ENTRIES + 2 }).map((k) => BigInt(SCRATCH + 16 * k)) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 0x4000 }).map(BigInt) },
  { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }) },
  { weight: 1, arbitrary: fc.constantFrom(1n << 32n, 1n << 53n, (1n << 64n) - 16n, (1n << 64n) - 1n) },
);
const rawLenArb = fc.oneof(
  { weight: 2, arbitrary: fc.constant(0) },
  { weight: 6, arbitrary: fc.integer({ min: 1, max: 0x180 }) },
  { weight: 4, arbitrary: fc.integer({ min: 1, max: 8 }).map((k) => 16 * k) },
  { weight: 1, arbitrary: fc.constantFrom(0xffffffff, 0x80000000, 0x1001) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffffffff }) },
);
const idArb = (size: number) => fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 0, max: size + 1 }) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) });
/** Flags: NEXT / WRITE / INDIRECT with AVAIL / USED in any combination, or anything. */
const rawFlagsArb = fc.oneof(
  { weight: 8, arbitrary: fc.record({ low: fc.integer({ min: 0, max: 7 }), a: fc.boolean(), u: fc.boolean() }).map((f) => f.low | (f.a ? PDESC_F_AVAIL : 0) | (f.u ? PDESC_F_USED : 0)) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) },
);
const rawDescArb = (size: number): fc.Arbitrary<RawDesc> => fc.record({ addr: addrArb, len: rawLenArb, id: idArb(size), flags: rawFlagsArb });

type HostileStep =
  | { k: 'pop' }
  | { k: 'addUsed'; pick: number; len: number }
  | { k: 'addUsedRaw'; id: number; len: number }
  | { k: 'publish' }
  | { k: 'enable' }
  | { k: 'disable' }
  | { k: 'scribble'; where: 'ring' | 'scratch' | 'event'; at: number; bytes: number[] }
  /**
   * A descriptor made available (for the device's wrap counter at that slot, or `stale`: the
   * other one) `ahead` slots past the device's next one; `good`: over data memory, fresh id.
   */
  | { k: 'avail'; ahead: number; good: boolean; desc: RawDesc; bits: number; stale: boolean };

const hostileStepArb = (size: number): fc.Arbitrary<HostileStep> =>
  fc.oneof(
    { weight: 6, arbitrary: fc.record({ k: fc.constant('pop' as const) }) },
    { weight: 4, arbitrary: fc.record({ k: fc.constant('addUsed' as const), pick: fc.nat(), len: fc.oneof(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: 0xffffffff })) }) },
    { weight: 1, arbitrary: fc.record({ k: fc.constant('addUsedRaw' as const), id: fc.integer({ min: -2, max: 0x10001 }), len: fc.nat() }) },
    { weight: 3, arbitrary: fc.record({ k: fc.constant('publish' as const) }) },
    { weight: 1, arbitrary: fc.record({ k: fc.constant('enable' as const) }) },
    { weight: 1, arbitrary: fc.record({ k: fc.constant('disable' as const) }) },
    {
      weight: 2,
      arbitrary: fc.record({
        k: fc.constant('scribble' as const),
        where: fc.constantFrom('ring' as const, 'scratch' as const, 'event' as const),
        at: fc.nat(),
        bytes: fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 16 }),
      }),
    },
    {
      weight: 6,
      arbitrary: fc.record({
        k: fc.constant('avail' as const),
        ahead: fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 0, max: 3 }) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 2 * size }) }),
        good: fc.oneof({ weight: 3, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
        desc: rawDescArb(size),
        bits: fc.oneof({ weight: 6, arbitrary: fc.constantFrom(0, 0, PDESC_F_NEXT, PDESC_F_WRITE, PDESC_F_NEXT | PDESC_F_WRITE) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 7 }) }),
        stale: fc.oneof({ weight: 4, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
      }),
    },
  );

const hostileCaseArb = fc
  .record({ size: fc.oneof(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1, max: 40 })), eventIdx: fc.boolean(), indirect: fc.boolean(), base: fc.constantFrom('valid' as const, 'valid' as const, 'random' as const) })
  .chain((c) =>
    fc.record({
      size: fc.constant(c.size),
      eventIdx: fc.constant(c.eventIdx),
      indirect: fc.constant(c.indirect),
      base: fc.constant(c.base),
      maxChain: fc.oneof({ weight: 8, arbitrary: fc.constant(Infinity) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 4 }) }),
      lists: fc.array(
        fc.record({
          len: fc.integer({ min: 1, max: 4 }),
          writableFrom: fc.integer({ min: 0, max: 4 }),
          indirect: fc.boolean(),
          // Mostly distinct ids (the list's index); sometimes any id, which may repeat.
          id: fc.oneof({ weight: 6, arbitrary: fc.constant(-1) }, { weight: 1, arbitrary: idArb(c.size) }),
        }),
        { minLength: 1, maxLength: c.size, size: 'max' },
      ),
      corruptions: fc.array(fc.record({ where: fc.constantFrom('ring' as const, 'scratch' as const), index: fc.nat(), field: fc.constantFrom('addr' as const, 'len' as const, 'id' as const, 'flags' as const), with: rawDescArb(c.size) }), { maxLength: 3 }),
      ring: fc.array(rawDescArb(c.size), { minLength: c.size, maxLength: c.size }),
      scratch: fc.array(rawDescArb(8), { minLength: SCRATCH_ENTRIES, maxLength: SCRATCH_ENTRIES }),
      driverEvent: fc.record({ offWrap: fc.integer({ min: 0, max: 0xffff }), flags: fc.oneof(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 0xffff })) }),
      fill: fc.integer({ min: 1, max: 255 }),
      steps: fc.array(hostileStepArb(c.size), { minLength: 1, maxLength: 60, size: 'max' }),
    }),
  );

type HostileCase = typeof hostileCaseArb extends fc.Arbitrary<infer T> ? T : never;

function assertKnownClauses(sink: SinkRecord[], what: string): void {
  for (const r of sink) {
    assert.ok(clauseInfo(r.verdict.clause) !== undefined, `${what}: verdict names ${r.verdict.clause}, which is not in the catalogue`);
    if (r.fatal) assert.ok(r.brokenThen, `${what}: fatal verdict ${r.verdict.clause} did not mark the queue broken`);
  }
}

/** Stats over the hostile runs, to see that the generator reaches deep into the walker. */
const hostileStats = { pops: 0, usedWrites: 0, passes: 0, clauses: new Map<string, number>() };

function runHostile(c: HostileCase): void {
  const mem = hostileMemory();
  for (const r of mem.regions) r.bytes.fill(c.fill);
  const size = c.size;
  const l = layoutPackedQueue(RING_BASE, size);
  const ringEnd = l.desc + packedRingSize(size);
  let ring: RawDesc[] = c.ring;
  let scratch: RawDesc[] = c.scratch;
  if (c.base === 'valid') {
    // Lists laid over the first pass (wrap counter 1), some indirect (one slot each, pointing
    // at a well-formed 4-entry table: readable, readable, writable, writable).
    ring = [];
    for (const [li, list] of c.lists.entries()) {
      if (ring.length >= size) break;
      const n = Math.min(list.len, size - ring.length);
      const id = list.id < 0 ? li : list.id;
      if (c.indirect && list.indirect) {
        ring.push({ addr: BigInt(SCRATCH + 64 * (ring.length % 16)), len: 64, id, flags: PDESC_F_INDIRECT | availFlags(true) });
        continue;
      }
      for (let i = 0; i < n; i++) {
        const slot = ring.length;
        ring.push({ addr: BigInt(0x10000 + 0x100 * slot + (slot % 3) * 0xd0), len: 0x80 + slot, id, flags: (i < n - 1 ? PDESC_F_NEXT : 0) | (i >= list.writableFrom ? PDESC_F_WRITE : 0) | availFlags(true) });
      }
    }
    while (ring.length < size) ring.push({ addr: 0n, len: 0, id: 0, flags: 0 }); // not available yet
    scratch = [];
    for (let k = 0; k < SCRATCH_ENTRIES; k++) scratch.push({ addr: BigInt(0x11000 - 0x40 + 0x30 * k), len: 0x30, id: 0, flags: k % 4 >= 2 ? PDESC_F_WRITE : 0 });
    for (const k of c.corruptions) {
      const arr = k.where === 'ring' ? ring : scratch;
      const i = k.index % arr.length;
      arr[i] = { ...arr[i], [k.field]: k.with[k.field] };
    }
  }
  ring.forEach((d, i) => writeRaw(mem, l.desc, i, d));
  scratch.forEach((d, i) => writeRaw(mem, SCRATCH, i, d));
  mem.writeU16(l.avail + EVENT_OFF_WRAP, c.driverEvent.offWrap);
  mem.writeU16(l.avail + EVENT_FLAGS, c.driverEvent.flags);
  mem.writeU32(l.used, 0); // the device event structure, as a driver leaves it

  const mon = new Monitor();
  const sink: SinkRecord[] = [];
  const dev: PackedDeviceQueue = new PackedDeviceQueue(mem, 0, size, mon, (verdict, fatal) => sink.push({ verdict, fatal, brokenThen: dev.broken }));
  dev.setAddresses({ desc: l.desc, avail: l.avail, used: l.used });
  dev.maxChainLength = c.maxChain;
  assert.equal(dev.activate({ eventIdx: c.eventIdx, indirect: c.indirect }), true);

  const held: number[] = [];
  const chain = dev.newChain();
  const accesses = countViewAccesses(mem);
  const ACCESS_BOUND = 8 * (chain.capacity + size) + 64;
  let everBroken = false;
  let passes = 0;
  let lastWrap = dev.availWrap;
  let freshId = 0x100;

  /** Everything but used-descriptor fields (len, id, flags) and the device event flags is as before. */
  const region0 = mem.regions[0];
  const snapshot = (): Buffer[] => mem.regions.map((r) => Buffer.from(r.bytes));
  const same = (a: Uint8Array, b: Uint8Array, from: number, to: number) => from >= to || Buffer.compare(a.subarray(from, to), b.subarray(from, to)) === 0;
  const assertOnlyRingWrites = (before: Buffer[], what: string) => {
    mem.regions.forEach((r, i) => {
      const now = r.bytes;
      const old = before[i];
      if (r !== region0) {
        assert.ok(same(now, old, 0, r.size), `${what}: device wrote into region 0x${r.guestAddr.toString(16)}`);
        return;
      }
      assert.ok(same(now, old, 0, l.desc), `${what}: device wrote below the ring`);
      for (let s = 0; s < size; s++) assert.ok(same(now, old, l.desc + s * PDESC_SIZE, l.desc + s * PDESC_SIZE + 8), `${what}: device wrote the address of slot ${s}`);
      assert.ok(same(now, old, ringEnd, l.used), `${what}: device wrote between the ring and its event structure (the driver's event structure)`);
      assert.ok(same(now, old, l.used + EVENT_SIZE, r.size), `${what}: device wrote past its event structure`);
    });
  };

  for (const s of c.steps) {
    // Driver-side writes (the test plays a hostile driver).
    if (s.k === 'scribble') {
      const [base, span] = s.where === 'ring' ? [l.desc, packedRingSize(size)] : s.where === 'scratch' ? [SCRATCH, SCRATCH_ENTRIES * PDESC_SIZE] : [l.avail, EVENT_SIZE];
      s.bytes.forEach((b, i) => mem.writeU8(base + ((s.at + i) % span), b));
      continue;
    }
    if (s.k === 'avail') {
      const lin = dev.nextAvail + s.ahead;
      const slot = lin % size;
      const wrap = dev.availWrap !== (Math.floor(lin / size) % 2 === 1);
      const d = s.good ? { addr: BigInt(0x10000 + 0x40 * slot), len: 0x20, id: freshId++ & 0xffff, flags: 0 } : s.desc;
      writeRaw(mem, l.desc, slot, { ...d, flags: (s.bits & 7) | availFlags(s.stale ? !wrap : wrap) });
      continue;
    }
    const before = snapshot();
    accesses.n = 0;
    try {
      switch (s.k) {
        case 'pop': {
          const ok = dev.pop(chain);
          if (ok) {
            hostileStats.pops++;
            assert.ok(!dev.broken, 'pop succeeded on a broken queue');
            held.push(chain.head);
            assert.ok(chain.count <= chain.capacity);
            assert.ok(chain.readable <= chain.count);
            for (let i = 0; i < chain.count; i++) assert.ok(mem.regionFor(chain.addrs[i], chain.lens[i]) !== null, 'pop produced a buffer outside guest memory');
            if (dev.availWrap !== lastWrap) {
              passes++;
              lastWrap = dev.availWrap;
            }
          }
          if (everBroken) assert.equal(ok, false, 'pop succeeded after a fatal verdict');
          break;
        }
        case 'addUsed':
          if (held.length > 0) {
            dev.addUsed(held.splice(s.pick % held.length, 1)[0], s.len);
            hostileStats.usedWrites++;
          }
          break;
        case 'addUsedRaw':
          dev.addUsed(s.id, s.len);
          break;
        case 'publish':
          dev.publish();
          break;
        case 'enable': {
          const more = dev.enableNotifications();
          if (everBroken) assert.equal(more, false);
          break;
        }
        case 'disable':
          dev.disableNotifications();
          break;
      }
    } catch (err) {
      assert.fail(`device ${s.k} threw ${err instanceof Error ? err.stack : String(err)}`);
    }
    // Bounded work, counted rather than timed (the same on a loaded machine): a few memory
    // accesses per descriptor a chain can hold or the ring can have.
    assert.ok(accesses.n <= ACCESS_BOUND, `device ${s.k} made ${accesses.n} guest memory accesses (bound ${ACCESS_BOUND})`);
    assertOnlyRingWrites(before, `device ${s.k}`);
    assertKnownClauses(sink, `device ${s.k}`);
    if (sink.some((r) => r.fatal)) everBroken = true;
    if (everBroken) {
      assert.equal(dev.broken, true, 'queue not broken after a fatal verdict');
      assert.equal(dev.hasAvailable(), false);
    }
    assert.ok(dev.inFlightCount >= 0 && dev.inFlightCount <= size, `device in flight ${dev.inFlightCount}`);
    assert.ok(dev.nextAvail >= 0 && dev.nextAvail < size && dev.nextUsed >= 0 && dev.nextUsed < size);
  }
  hostileStats.passes += passes;
  for (const r of sink) hostileStats.clauses.set(r.verdict.clause, (hostileStats.clauses.get(r.verdict.clause) ?? 0) + 1);
}

test('packed ring device: property: a hostile ring never makes it throw, loop, name an unknown clause, go on after a fatal verdict, or write outside the ring', { timeout: 60_000 }, () => {
  fc.assert(fc.property(hostileCaseArb, (c) => runHostile(c)), { numRuns: 400 });
  // The generator reaches deep: many lists taken, used descriptors written, passes round the
  // ring, and most of the walker's clauses.
  const seen = JSON.stringify([...hostileStats.clauses]);
  assert.ok(hostileStats.pops > 300, `only ${hostileStats.pops} lists popped`);
  assert.ok(hostileStats.usedWrites > 100, `only ${hostileStats.usedWrites} used descriptors`);
  assert.ok(hostileStats.passes > 5, `only ${hostileStats.passes} passes round the ring`);
  // Each of these comes up tens of times per run; rarer ones are not required (no flakiness).
  for (const id of ['packed.scatter-gather-support.driver.3', 'packed.scatter-gather-support.driver.6', 'packed.indirect-descs.driver.4', 'struct.buffer-range.driver.1']) {
    assert.ok(hostileStats.clauses.has(id), `the hostile generator never produced ${id}: ${seen}`);
  }
  assert.ok(hostileStats.clauses.size >= 8, `only ${hostileStats.clauses.size} distinct clauses: ${seen}`);
});

// ------------------------------------------------------------------ targeted hostile lists (device side)

interface DevRig {
  mem: GuestMemory;
  dev: PackedDeviceQueue;
  mon: Monitor;
  sink: SinkRecord[];
  l: ReturnType<typeof layoutPackedQueue>;
  put: (slot: number, d: { addr?: number; len?: number; id?: number; flags: number }) => void;
  clauses: () => string[];
}

function devRig(size: number, features: { eventIdx: boolean; indirect: boolean }): DevRig {
  const mem = hostileMemory();
  const l = layoutPackedQueue(RING_BASE, size);
  const mon = new Monitor();
  const sink: SinkRecord[] = [];
  const dev: PackedDeviceQueue = new PackedDeviceQueue(mem, 0, size, mon, (verdict, fatal) => sink.push({ verdict, fatal, brokenThen: dev.broken }));
  dev.setAddresses({ desc: l.desc, avail: l.avail, used: l.used });
  assert.ok(dev.activate(features));
  const put = (slot: number, d: { addr?: number; len?: number; id?: number; flags: number }) =>
    writeRaw(mem, l.desc, slot, { addr: BigInt(d.addr ?? 0x10000 + 0x40 * slot), len: d.len ?? 0x20, id: d.id ?? 0, flags: d.flags });
  return { mem, dev, mon, sink, l, put, clauses: () => mon.verdicts.map((v) => v.clause) };
}

const A1 = availFlags(true); // available in the first pass

/** Pops once and expects exactly `clause`, fatal, and a broken queue that pops nothing more. */
function expectFatal(r: DevRig, clause: string, name: string): void {
  assert.equal(r.dev.pop(r.dev.newChain()), false, `${name}: pop`);
  assert.deepEqual(r.clauses(), [clause], name);
  assert.equal(r.sink[0].fatal, true, `${name}: fatal`);
  assert.equal(r.sink[0].brokenThen, true, `${name}: broken when reported`);
  assert.equal(r.dev.broken, true, name);
  assert.equal(r.dev.pop(r.dev.newChain()), false, `${name}: pop after`);
  assert.equal(r.clauses().length, 1, `${name}: one verdict only`);
}

test('packed ring device: a list longer than the queue size (packed.scatter-gather-support.driver.2)', () => {
  for (const size of [1, 3, 6]) {
    const r = devRig(size, { eventIdx: false, indirect: false });
    for (let i = 0; i < size; i++) r.put(i, { flags: PDESC_F_NEXT | A1 }); // every slot says "more follows"
    expectFatal(r, 'packed.scatter-gather-support.driver.2', `size ${size}`);
  }
  // A list of exactly the queue size is fine.
  const r = devRig(5, { eventIdx: false, indirect: false });
  for (let i = 0; i < 5; i++) r.put(i, { flags: (i < 4 ? PDESC_F_NEXT : 0) | A1, id: 3 });
  const c = r.dev.newChain();
  assert.equal(r.dev.pop(c), true, JSON.stringify(r.clauses()));
  assert.deepEqual([c.head, c.count, c.tableDescriptors], [3, 5, 5]);
});

test('packed ring device: the first descriptor available before the rest of its list (packed.scatter-gather-support.driver.6)', () => {
  const r = devRig(4, { eventIdx: false, indirect: false });
  r.put(0, { flags: PDESC_F_NEXT | A1 });
  r.put(1, { flags: 0 }); // not yet made available (zero-initialised ring)
  expectFatal(r, 'packed.scatter-gather-support.driver.6', 'second slot never made available');
  // Across the end of the ring: slot 3 then slot 0 of the next pass, which still carries the
  // first pass's flags (not available for wrap counter 0).
  const s = devRig(4, { eventIdx: false, indirect: false });
  for (let i = 0; i < 3; i++) s.put(i, { flags: A1, id: i });
  const c = s.dev.newChain();
  for (let i = 0; i < 3; i++) assert.ok(s.dev.pop(c));
  s.dev.addUsed(0, 0);
  s.dev.publish(); // slot 0 used: the driver may rewrite it
  s.put(3, { flags: PDESC_F_NEXT | A1, id: 7 });
  expectFatal(s, 'packed.scatter-gather-support.driver.6', 'list across the wrap, second half stale');
});

test('packed ring device: a readable descriptor after a writable one (packed.scatter-gather-support.driver.3), direct and indirect', () => {
  const r = devRig(4, { eventIdx: false, indirect: true });
  r.put(0, { flags: PDESC_F_NEXT | PDESC_F_WRITE | A1 });
  r.put(1, { flags: A1 });
  expectFatal(r, 'packed.scatter-gather-support.driver.3', 'direct');
  const s = devRig(4, { eventIdx: false, indirect: true });
  writeRaw(s.mem, SCRATCH, 0, { addr: 0x10000n, len: 8, id: 0, flags: PDESC_F_WRITE });
  writeRaw(s.mem, SCRATCH, 1, { addr: 0x10100n, len: 8, id: 0, flags: 0 });
  s.put(0, { addr: SCRATCH, len: 32, flags: PDESC_F_INDIRECT | A1 });
  expectFatal(s, 'packed.scatter-gather-support.driver.3', 'indirect');
});

test('packed ring device: INDIRECT without VIRTIO_F_INDIRECT_DESC (packed.indirect-descs.driver.1)', () => {
  const r = devRig(4, { eventIdx: false, indirect: false });
  writeRaw(r.mem, SCRATCH, 0, { addr: 0x10000n, len: 8, id: 0, flags: 0 });
  r.put(0, { addr: SCRATCH, len: 16, flags: PDESC_F_INDIRECT | A1 });
  expectFatal(r, 'packed.indirect-descs.driver.1', 'indirect not negotiated');
});

test('packed ring device: flags other than WRITE inside an indirect table (packed.indirect-descs.driver.2)', () => {
  for (const bad of [PDESC_F_NEXT, PDESC_F_INDIRECT, PDESC_F_AVAIL, PDESC_F_USED, PDESC_F_WRITE | 0x100]) {
    const r = devRig(4, { eventIdx: false, indirect: true });
    writeRaw(r.mem, SCRATCH, 0, { addr: 0x10000n, len: 8, id: 0, flags: 0 });
    writeRaw(r.mem, SCRATCH, 1, { addr: 0x10100n, len: 8, id: 0, flags: bad });
    r.put(0, { addr: SCRATCH, len: 32, flags: PDESC_F_INDIRECT | A1 });
    expectFatal(r, 'packed.indirect-descs.driver.2', `entry flags 0x${bad.toString(16)}`);
  }
  // WRITE alone, and a reserved buffer id in the table, are fine; WRITE on the INDIRECT
  // descriptor itself is reserved and ignored (2.8.6).
  const r = devRig(4, { eventIdx: false, indirect: true });
  writeRaw(r.mem, SCRATCH, 0, { addr: 0x10000n, len: 8, id: 0xbeef, flags: 0 });
  writeRaw(r.mem, SCRATCH, 1, { addr: 0x10100n, len: 9, id: 0, flags: PDESC_F_WRITE });
  r.put(0, { addr: SCRATCH, len: 32, id: 2, flags: PDESC_F_INDIRECT | PDESC_F_WRITE | A1 });
  const c = r.dev.newChain();
  assert.equal(r.dev.pop(c), true, JSON.stringify(r.clauses()));
  assert.deepEqual([c.head, c.count, c.readable, c.readableBytes, c.writableBytes, c.indirect, c.tableDescriptors], [2, 2, 1, 8, 9, true, 1]);
});

test('packed ring device: INDIRECT inside a list linked by NEXT (packed.indirect-descs.driver.4)', () => {
  // INDIRECT | NEXT on the first descriptor.
  const r = devRig(4, { eventIdx: false, indirect: true });
  writeRaw(r.mem, SCRATCH, 0, { addr: 0x10000n, len: 8, id: 0, flags: 0 });
  r.put(0, { addr: SCRATCH, len: 16, flags: PDESC_F_INDIRECT | PDESC_F_NEXT | A1 });
  r.put(1, { flags: A1 });
  expectFatal(r, 'packed.indirect-descs.driver.4', 'INDIRECT | NEXT');
  // INDIRECT as the second descriptor of a NEXT list.
  const s = devRig(4, { eventIdx: false, indirect: true });
  writeRaw(s.mem, SCRATCH, 0, { addr: 0x10000n, len: 8, id: 0, flags: 0 });
  s.put(0, { flags: PDESC_F_NEXT | A1 });
  s.put(1, { addr: SCRATCH, len: 16, flags: PDESC_F_INDIRECT | A1 });
  expectFatal(s, 'packed.indirect-descs.driver.4', 'INDIRECT after NEXT');
});

test('packed ring device: a buffer id made available again while the device holds it (struct.packed-buffer-id.driver.1)', () => {
  const r = devRig(4, { eventIdx: false, indirect: false });
  r.put(0, { flags: A1, id: 5 });
  r.put(1, { flags: PDESC_F_NEXT | A1, id: 9 });
  r.put(2, { flags: A1, id: 5 }); // the list's id is in its last descriptor: 5 again
  const c = r.dev.newChain();
  assert.equal(r.dev.pop(c), true);
  assert.equal(c.head, 5);
  expectFatal(r, 'struct.packed-buffer-id.driver.1', 'id 5 twice');
  // Once returned (and the used descriptor published), the id may be used again.
  const s = devRig(4, { eventIdx: false, indirect: false });
  s.put(0, { flags: A1, id: 5 });
  assert.equal(s.dev.pop(c), true);
  s.dev.addUsed(5, 0);
  s.dev.publish();
  s.put(1, { flags: A1, id: 5 });
  assert.equal(s.dev.pop(c), true, JSON.stringify(s.clauses()));
  assert.deepEqual(s.clauses(), []);
});

test('packed ring device: a misaligned ring or event structure (packed.ring.driver.1)', () => {
  const cases: [string, number, number, number, boolean][] = [
    ['ring at 8 mod 16', RING_BASE + 8, 0x600, 0x604, false],
    ['ring at 4 mod 16', RING_BASE + 4, 0x600, 0x604, false],
    ['driver event at 2 mod 4', RING_BASE, 0x602, 0x608, false],
    ['device event at 1 mod 4', RING_BASE, 0x600, 0x605, false],
    ['all aligned', RING_BASE, 0x600, 0x604, true],
    ['ring 16-aligned only, events 4-aligned only', 0x110, 0x60c, 0x614, true],
  ];
  for (const [name, desc, avail, used, ok] of cases) {
    const mem = hostileMemory();
    const mon = new Monitor();
    const sink: SinkRecord[] = [];
    const dev: PackedDeviceQueue = new PackedDeviceQueue(mem, 0, 8, mon, (verdict, fatal) => sink.push({ verdict, fatal, brokenThen: dev.broken }));
    dev.setSize(5); // not a power of two: fine for packed rings
    dev.setAddresses({ desc: desc, avail: avail, used: used });
    assert.equal(dev.activate({ eventIdx: true, indirect: true }), ok, name);
    assert.equal(dev.active, ok, name);
    assert.deepEqual(
      mon.verdicts.map((v) => v.clause),
      ok ? [] : ['packed.ring.driver.1'],
      name,
    );
    if (!ok) {
      assert.equal(sink[0].fatal, true);
      assert.equal(dev.broken, true);
      assert.equal(dev.pop(dev.newChain()), false);
    }
  }
});

// ------------------------------------------------------------------ hostile device (driver side)

interface DrvRig {
  mem: GuestMemory;
  drv: PackedDriverQueue;
  mon: Monitor;
  sink: SinkRecord[];
  l: ReturnType<typeof layoutPackedQueue>;
  /** Writes a used descriptor at `slot` as a device would (flags last). */
  used: (slot: number, id: number, len: number, flags?: number) => void;
}

function drvRig(size: number): DrvRig {
  const mem = hostileMemory();
  const l = layoutPackedQueue(RING_BASE, size);
  const mon = new Monitor();
  const sink: SinkRecord[] = [];
  const drv: PackedDriverQueue = new PackedDriverQueue(
    mem,
    0,
    size,
    { desc: l.desc, avail: l.avail, used: l.used },
    { eventIdx: false, indirect: false },
    mon,
    (verdict, fatal) => sink.push({ verdict, fatal, brokenThen: drv.broken }),
  );
  const used = (slot: number, id: number, len: number, flags = usedFlags(true) | (len > 0 ? PDESC_F_WRITE : 0)) => {
    const o = l.desc + slot * PDESC_SIZE;
    mem.writeU32(o + 8, len);
    mem.writeU16(o + 12, id);
    mem.writeU16(o + 14, flags);
  };
  return { mem, drv, mon, sink, l, used };
}

test('packed ring driver: a used descriptor naming a buffer id the driver never exposed (packed.desc-table.device.3)', () => {
  const ids = [4, 7, 0xffff, 2]; // >= size (4), far beyond, and < size but never handed out
  for (const bad of ids) {
    const r = drvRig(4);
    const id = r.drv.begin().addWritable(0x10000, 64).commit('t0');
    assert.equal(id, 0, 'ids come from a stack: 0 first'); // so that 2 is a valid id never used
    r.drv.publish();
    r.used(0, bad, 8);
    assert.equal(r.drv.getUsed(), undefined, `id ${bad}`);
    assert.deepEqual(
      r.mon.verdicts.map((v) => v.clause),
      ['packed.desc-table.device.3'],
      `id ${bad}`,
    );
    assert.equal(r.sink[0].fatal, true);
    assert.equal(r.drv.broken, true);
    assert.equal(r.drv.begin().addWritable(0x10200, 8).commit('more'), -1, 'a broken driver queue takes nothing more');
  }
  // A buffer id returned twice: the second time it is no longer in flight.
  const r = drvRig(4);
  r.drv.begin().addWritable(0x10000, 64).commit('a');
  r.drv.begin().addWritable(0x10100, 64).commit('b');
  r.drv.publish();
  r.used(0, 0, 8);
  assert.equal(r.drv.getUsed(), 'a');
  r.used(1, 0, 8);
  assert.equal(r.drv.getUsed(), undefined);
  assert.deepEqual(
    r.mon.verdicts.map((v) => v.clause),
    ['packed.desc-table.device.3'],
  );
});

test('packed ring driver: a used length beyond the writable part of the buffer (struct.used-len.device.1), not fatal, length capped', () => {
  const r = drvRig(4);
  r.drv.begin().addReadable(0x10000, 100).addWritable(0x10100, 10).addWritable(0x10200, 6).commit('t');
  r.drv.publish();
  r.used(0, 0, 17);
  assert.equal(r.drv.getUsed(), 't');
  assert.equal(r.drv.lastLen, 16, 'length capped at the writable bytes');
  assert.deepEqual(
    r.mon.verdicts.map((v) => v.clause),
    ['struct.used-len.device.1'],
  );
  assert.equal(r.sink[0].fatal, false);
  assert.equal(r.drv.broken, false);
  assert.equal(r.drv.numFree, 4);
  // Exactly the writable part is fine.
  r.drv.begin().addWritable(0x10100, 10).commit('u');
  r.drv.publish();
  r.used(3, 0, 10);
  assert.equal(r.drv.getUsed(), 'u');
  assert.equal(r.drv.lastLen, 10);
  assert.equal(r.mon.verdicts.length, 1);
});

test('packed ring driver: property: a hostile device never makes getUsed throw, hand out a token twice, or report more than the writable bytes', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 9 }),
      fc.array(
        fc.oneof(
          fc.record({ k: fc.constant('used' as const), slot: fc.nat(), id: fc.oneof(fc.integer({ min: 0, max: 10 }), fc.integer({ min: 0, max: 0xffff })), len: fc.oneof(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: 0xffffffff })), flags: rawFlagsArb }),
          fc.record({ k: fc.constant('honest' as const), slot: fc.nat(), pick: fc.nat(), len: fc.integer({ min: 0, max: 300 }), wrap: fc.boolean() }),
          fc.record({ k: fc.constant('event' as const), v: fc.integer({ min: 0, max: 0xffffffff }) }),
          fc.record({ k: fc.constant('get' as const), n: fc.integer({ min: 1, max: 4 }) }),
          fc.record({ k: fc.constant('add' as const), n: fc.integer({ min: 1, max: 3 }) }),
          fc.record({ k: fc.constant('enable' as const) }),
        ),
        { minLength: 1, maxLength: 40, size: 'max' },
      ),
      (size, steps) => {
        const r = drvRig(size);
        const { mem, drv, l } = r;
        const tokens: { n: number; writable: number }[] = [];
        const returned = new Set<unknown>();
        let serial = 0;
        const add = () => {
          const t = { n: serial++, writable: 50 + (serial % 7) };
          const q = drv.begin();
          if (serial % 2 === 0 && drv.numFree >= 2) q.addReadable(0x10000 + 0x10 * serial, 10);
          if (q.addWritable(0x10800, t.writable).commit(t) >= 0) tokens.push(t);
        };
        while (drv.numFree > 0 && tokens.length < size) add();
        drv.publish();
        for (const s of steps) {
          try {
            switch (s.k) {
              case 'used': {
                const o = l.desc + (s.slot % size) * PDESC_SIZE;
                mem.writeU32(o + 8, s.len);
                mem.writeU16(o + 12, s.id);
                mem.writeU16(o + 14, s.flags);
                break;
              }
              case 'honest': {
                const o = l.desc + (s.slot % size) * PDESC_SIZE;
                mem.writeU32(o + 8, s.len);
                mem.writeU16(o + 12, s.pick % size);
                mem.writeU16(o + 14, usedFlags(s.wrap) | PDESC_F_WRITE);
                break;
              }
              case 'event':
                mem.writeU32(l.used, s.v);
                break;
              case 'get':
                for (let i = 0; i < s.n; i++) {
                  const t = drv.getUsed() as { n: number; writable: number } | undefined;
                  if (t === undefined) continue;
                  assert.ok(tokens.includes(t), 'getUsed returned something never committed');
                  assert.ok(!returned.has(t), `token ${t.n} returned twice`);
                  returned.add(t);
                  assert.ok(drv.lastLen <= t.writable, `lastLen ${drv.lastLen} beyond the ${t.writable} writable bytes`);
                }
                break;
              case 'add':
                for (let i = 0; i < s.n; i++) add();
                drv.publish();
                break;
              case 'enable':
                drv.enableInterrupts();
                break;
            }
          } catch (err) {
            assert.fail(`driver ${s.k} threw ${err instanceof Error ? err.stack : String(err)}`);
          }
          assertKnownClauses(r.sink, `driver ${s.k}`);
          assert.ok(drv.numFree >= 0 && drv.numFree <= size, `numFree ${drv.numFree}`);
          assert.equal(drv.inFlightCount, tokens.length - returned.size);
          if (drv.broken) assert.equal(drv.getUsed(), undefined);
        }
      },
    ),
    { numRuns: 300 },
  );
});

// ------------------------------------------------------------------ regressions

/**
 * Found while writing this file: PackedDeviceQueue.pop() let the driver reuse a slot once the
 * device's *unpublished* used pointer had passed it (it compared with usedLinear instead of
 * the used position at the last publish). A driver rewriting slots whose used descriptors were
 * still pending (packed.desc-table.driver.1: it has not seen USED change) got more than
 * `maxSize` used descriptors pending; pendingSlot/pendingFlags (maxSize entries) dropped the
 * extra ones and publish() stored `undefined` flags at offset NaN, i.e. at the first bytes of
 * the memory region holding the ring: a write outside the ring, and no verdict.
 */
test('packed ring device: a driver reusing slots before the used flags are published is reported (packed.desc-table.driver.1), and publish() never writes outside the ring', () => {
  const size = 2;
  const r = devRig(size, { eventIdx: false, indirect: false });
  const marker = 0xa5a5;
  r.mem.writeU16(0, marker); // first bytes of the region holding the ring (which starts at 0x100)
  const c = r.dev.newChain();
  let popped = 0;
  for (let pass = 0; pass < 3; pass++) {
    for (let slot = 0; slot < size; slot++) {
      r.put(slot, { flags: availFlags(pass % 2 === 0), id: pass * size + slot });
      if (!r.dev.pop(c)) break;
      popped++;
      r.dev.addUsed(c.head, 0); // used descriptor written, its flags wait for publish()
    }
  }
  r.dev.publish();
  assert.equal(r.mem.readU16(0), marker, 'publish() wrote outside the ring');
  assert.ok(popped <= size, `the device took ${popped} lists through ${size} slots without publishing one used descriptor`);
  assert.deepEqual(r.clauses(), ['packed.desc-table.driver.1']);
});

/**
 * Found while writing this file: PackedDriverQueue.getUsed() accepted a used descriptor for a
 * buffer committed but not yet published (its first descriptor's flags not written, so the
 * device cannot have seen it): `inFlight` is set at commit(). The buffer was released, and
 * the next publish() still exposed its list, with an id the driver might have reused.
 */
test('packed ring driver: a used descriptor for a committed but not yet published buffer is reported (packed.desc-table.device.3)', () => {
  const r = drvRig(4);
  assert.equal(r.drv.begin().addWritable(0x10000, 64).commit('exposed'), 0);
  r.drv.publish();
  assert.equal(r.drv.begin().addWritable(0x10100, 64).commit('not exposed yet'), 1);
  // The device "uses" buffer 1, whose descriptor (slot 1) it cannot have seen available.
  r.used(0, 1, 8);
  const got = r.drv.getUsed();
  assert.equal(got, undefined, 'getUsed handed back a buffer the device never saw');
  assert.deepEqual(
    r.mon.verdicts.map((v) => v.clause),
    ['packed.desc-table.device.3'],
  );
});

/**
 * 2.8.4 / 2.8.5: "Element Length is reserved for used descriptors without the
 * VIRTQ_DESC_F_WRITE flag, and is ignored by drivers" (WRITE clear: nothing written).
 * Found while writing this file: PackedDriverQueue.getUsed() read len regardless of WRITE, so
 * a device leaving the reserved len alone (here: the driver's own len of the slot) drew a
 * struct.used-len.device.1 verdict and the driver reported a non-zero length.
 */
test('packed ring driver: the used length is ignored (0) when the used descriptor has no WRITE flag (2.8.5)', () => {
  const r = drvRig(4);
  r.drv.begin().addReadable(0x10000, 512).addWritable(0x10400, 4).commit('t');
  r.drv.publish();
  // Used descriptor at slot 0: id 0, flags USED|AVAIL (wrap 1) without WRITE, len untouched (512).
  r.mem.writeU16(r.l.desc + 12, 0);
  r.mem.writeU16(r.l.desc + 14, usedFlags(true));
  assert.equal(r.drv.getUsed(), 't');
  assert.deepEqual(r.mon.verdicts, [], 'a reserved field drew a verdict');
  assert.equal(r.drv.lastLen, 0, 'no WRITE flag: the device wrote nothing');
});
