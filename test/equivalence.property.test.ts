/**
 * Split and packed rings are two encodings of one virtqueue: the same driver workload over
 * either must look the same to the device and to the driver. Both pairs are made only
 * through queue.ts (createDriverQueue / createDeviceQueue, via makeQueuePair), so nothing
 * here depends on a format.
 *
 * For random workloads (list shapes, queue sizes, batching, EVENT_IDX and indirect on or off,
 * in-order or reordered completion, many passes round the packed ring) the test runs every
 * step on a split pair and on a packed pair, each over its own GuestMemory with the same
 * buffer addresses and contents, and checks at every step:
 *
 *  - commit succeeds on both or on neither, and both have the same free room;
 *  - the device pops the same buffers: addresses, lengths, readable/writable split, data
 *    bytes, indirect or not, ring entries taken;
 *  - the driver gets the same completions: tokens, lengths, bytes written, same order, and
 *    counts the same used buffers waiting (usedPending);
 *  - the notification decisions agree wherever the two formats define them the same way;
 *  - no verdict on any of the four monitors.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { GuestAllocator } from '../src/memory/allocator.js';
import { ChainReader, ChainWriter, type DescriptorChain } from '../src/virtqueue/chain.js';
import type { RingFormat } from '../src/virtqueue/queue.js';
import { PackedDeviceQueue } from '../src/virtqueue/packed/device.js';
import { DATA_END, DATA_SPLIT, makeQueuePair, allocSegs, offerSegs, releaseSegs, type QueuePair, type Seg, type Shape } from './ring-harness.js';

type Op =
  | { k: 'add'; shape: Shape }
  | { k: 'publish' }
  | { k: 'pop'; n: number }
  | { k: 'complete'; picks: number[]; frac: number }
  | { k: 'devPublish' }
  | { k: 'collect'; n: number }
  | { k: 'irq'; on: boolean }
  | { k: 'notif'; on: boolean };

const lenArb = fc.oneof({ weight: 1, arbitrary: fc.constant(0) }, { weight: 8, arbitrary: fc.integer({ min: 1, max: 64 }) }, { weight: 1, arbitrary: fc.integer({ min: 65, max: 500 }) });
const shapeArb: fc.Arbitrary<Shape> = fc.record({
  readable: fc.array(lenArb, { maxLength: 5 }),
  writable: fc.array(lenArb, { maxLength: 5 }),
  indirect: fc.boolean(),
  align: fc.constantFrom(1, 4, 16),
});
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 7, arbitrary: fc.record({ k: fc.constant('add' as const), shape: shapeArb }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('publish' as const) }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('pop' as const), n: fc.integer({ min: 1, max: 6 }) }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('complete' as const), picks: fc.array(fc.nat(), { minLength: 1, maxLength: 6 }), frac: fc.double({ min: 0, max: 1, noNaN: true }) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('devPublish' as const) }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('collect' as const), n: fc.integer({ min: 1, max: 6 }) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('irq' as const), on: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('notif' as const), on: fc.boolean() }) },
);

interface Cfg {
  /** A power of two (split rings need one), 1..64. */
  size: number;
  eventIdx: boolean;
  indirect: boolean;
  indirectMax: number;
  /** The device returns buffers in the order it took them (else in the order `picks` says, the same on both). */
  inOrder: boolean;
}

const cfgArb = (inOrder: boolean): fc.Arbitrary<Cfg> =>
  fc.record({ log: fc.integer({ min: 0, max: 6 }), eventIdx: fc.boolean(), indirect: fc.boolean(), imax: fc.nat() }).map((c) => ({
    size: 1 << c.log,
    eventIdx: c.eventIdx,
    indirect: c.indirect,
    indirectMax: 1 + (c.imax % Math.min((1 << c.log) + 2, 33)),
    inOrder,
  }));

const readPattern = (serial: number, seg: number, i: number) => (serial * 29 + seg * 11 + i * 7 + 3) & 0xff;
const writePattern = (serial: number, i: number) => (serial * 13 + i * 3 + 0x31) & 0xff;

interface Token {
  serial: number;
  segs: Seg[];
  writableBytes: number;
}

/** One side (split or packed) of the comparison. */
interface Side {
  pair: QueuePair;
  held: { token: Token; chain: DescriptorChain }[];
  pool: DescriptorChain[];
}

interface EqStats {
  buffers: number;
  /** Ring slots the packed driver made available (passes = slots / size). */
  packedSlots: number;
  reordered: number;
  kicks: number;
  irqs: number;
}

function runEquivalent(cfg: Cfg, ops: Op[], wraps = 0): EqStats {
  const make = (format: RingFormat): Side => ({
    pair: makeQueuePair(format, { size: cfg.size, eventIdx: cfg.eventIdx, indirect: cfg.indirect, indirectMax: cfg.indirectMax }),
    held: [],
    pool: [],
  });
  const sides = [make('split'), make('packed')] as const;
  const [S, P] = sides;
  assert.equal(S.pair.drv.format, 'split');
  assert.equal(P.pair.dev.format, 'packed');
  const size = cfg.size;
  const allocBase = DATA_SPLIT - 0x300; // buffers straddle the region boundary at DATA_SPLIT
  const alloc = new GuestAllocator(allocBase, DATA_END - allocBase);
  const reader = new ChainReader();
  const writer = new ChainWriter();
  const stats: EqStats = { buffers: 0, packedSlots: 0, reordered: 0, kicks: 0, irqs: 0 };
  const committed: Token[] = [];
  const completed: { token: Token; len: number }[] = [];
  let collected = 0;
  let popped = 0;
  let serial = 0;
  let slots = 0; // packed ring slots taken so far

  // With EVENT_IDX the two formats name the next interrupt differently (used_event, a 16-bit
  // index; off_wrap, a ring position modulo two passes): they agree as long as the driver
  // re-arms after each collection, as drivers do. So with EVENT_IDX the driver here always
  // re-arms and never disables (and the device-side disable differs: split leaves avail_event
  // behind, packed writes DISABLE, so kick decisions are compared without EVENT_IDX only).
  const compareKicks = !cfg.eventIdx;
  const rearm = () => {
    const [s, p] = sides.map((x) => x.pair.drv.enableInterrupts());
    assert.equal(p, s, 'enableInterrupts: used buffers pending');
  };
  if (cfg.eventIdx) rearm();

  const add = (shape: Shape) => {
    let readable = shape.readable.slice(0, size);
    let writable = shape.writable.slice(0, size - readable.length);
    if (readable.length + writable.length === 0) writable = [4];
    const id = serial++;
    const segs = allocSegs(alloc, readable, writable, shape.align);
    if (segs === null) return; // out of data memory: skip this add
    const token: Token = { serial: id, segs, writableBytes: writable.reduce((a, b) => a + b, 0) };
    const results = sides.map(({ pair }) => {
      segs.forEach((s, si) => {
        if (s.writable) pair.mem.fill(s.addr, s.len, 0xcc);
        else {
          const b = new Uint8Array(s.len);
          for (let i = 0; i < s.len; i++) b[i] = readPattern(id, si, i);
          pair.mem.write(s.addr, b);
        }
      });
      offerSegs(pair.drv, segs);
      return pair.drv.commit(token, { indirect: shape.indirect });
    });
    assert.equal(results[1] >= 0, results[0] >= 0, `commit of list ${id}: split gave ${results[0]}, packed ${results[1]}`);
    if (results[0] < 0) {
      releaseSegs(alloc, segs);
      return;
    }
    committed.push(token);
  };

  const publish = () => {
    const [s, p] = sides.map((x) => x.pair.drv.publish());
    if (compareKicks) assert.equal(p, s, 'kick decision');
    if (s) stats.kicks++;
  };

  const pop = () => {
    const got = sides.map((x) => {
      const chain = x.pool.pop() ?? x.pair.dev.newChain();
      const ok = x.pair.dev.pop(chain);
      if (!ok) x.pool.push(chain);
      return { ok, chain };
    });
    assert.equal(got[1].ok, got[0].ok, 'pop: a buffer on one ring and not on the other');
    if (!got[0].ok) return;
    const token = committed[popped++];
    const [a, b] = [got[0].chain, got[1].chain];
    const what = `list ${token.serial}`;
    assert.equal(b.count, a.count, `${what}: buffers`);
    assert.equal(b.readable, a.readable, `${what}: readable buffers`);
    assert.equal(b.readableBytes, a.readableBytes, `${what}: readable bytes`);
    assert.equal(b.writableBytes, a.writableBytes, `${what}: writable bytes`);
    assert.equal(b.indirect, a.indirect, `${what}: indirect`);
    assert.equal(b.tableDescriptors, a.tableDescriptors, `${what}: ring entries`);
    for (let i = 0; i < a.count; i++) {
      if (a.addrs[i] !== b.addrs[i] || a.lens[i] !== b.lens[i]) assert.fail(`${what}: buffer ${i} is [0x${a.addrs[i].toString(16)}, +${a.lens[i]}) on split, [0x${b.addrs[i].toString(16)}, +${b.lens[i]}) on packed`);
    }
    // The bytes the device reads are the same, and are what the driver wrote.
    const data = sides.map((x, i) => {
      const d = new Uint8Array(got[i].chain.readableBytes);
      reader.reset(x.pair.mem, got[i].chain).read(d);
      return d;
    });
    assert.ok(Buffer.compare(data[0], data[1]) === 0, `${what}: readable data differs`);
    let k = 0;
    token.segs.forEach((s, si) => {
      if (!s.writable) for (let j = 0; j < s.len; j++, k++) if (data[0][k] !== readPattern(token.serial, si, j)) assert.fail(`${what}: readable byte ${k}`);
    });
    slots += b.tableDescriptors;
    sides.forEach((x, i) => x.held.push({ token, chain: got[i].chain }));
  };

  const complete = (pick: number, frac: number) => {
    if (S.held.length === 0) return;
    const at = cfg.inOrder ? 0 : pick % S.held.length;
    if (at !== 0) stats.reordered++;
    let token: Token | undefined;
    let len = 0;
    for (const x of sides) {
      const [h] = x.held.splice(at, 1);
      token ??= h.token;
      assert.equal(h.token, token, 'the two devices hold different buffers');
      len = Math.min(h.token.writableBytes, Math.floor(frac * (h.token.writableBytes + 1)));
      const b = new Uint8Array(len);
      for (let j = 0; j < len; j++) b[j] = writePattern(h.token.serial, j);
      writer.reset(x.pair.mem, h.chain).write(b);
      x.pair.dev.addUsed(h.chain.head, len);
      x.pool.push(h.chain);
    }
    completed.push({ token: token!, len });
  };

  const devPublish = () => {
    const [s, p] = sides.map((x) => x.pair.dev.publish());
    assert.equal(p, s, 'interrupt decision');
    if (s) stats.irqs++;
  };

  const collect = () => {
    const [s, p] = sides.map((x) => x.pair.drv.getUsed());
    assert.equal(p, s, 'getUsed: the two drivers got different buffers');
    if (s === undefined) return;
    const want = completed[collected++];
    assert.equal(s, want.token, 'completions out of order');
    assert.equal(S.pair.drv.lastLen, want.len, 'split: used length');
    assert.equal(P.pair.drv.lastLen, want.len, 'packed: used length');
    const bytes = sides.map((x) =>
      want.token.segs
        .filter((g) => g.writable)
        .map((g) => {
          const b = new Uint8Array(g.len);
          x.pair.mem.read(g.addr, b);
          return Buffer.from(b);
        }),
    );
    assert.ok(Buffer.compare(Buffer.concat(bytes[0]), Buffer.concat(bytes[1])) === 0, `list ${want.token.serial}: written data differs`);
    releaseSegs(alloc, want.token.segs);
  };

  const check = (what: string) => {
    assert.equal(P.pair.drv.numFree, S.pair.drv.numFree, `${what}: free room`);
    assert.equal(P.pair.drv.inFlightCount, S.pair.drv.inFlightCount, `${what}: driver in flight`);
    assert.equal(P.pair.drv.usedPending(), S.pair.drv.usedPending(), `${what}: used buffers waiting for the driver`);
    assert.equal(P.pair.dev.inFlightCount, S.pair.dev.inFlightCount, `${what}: device in flight`);
    for (const x of sides) {
      const { drvMon, devMon, format } = x.pair;
      if (drvMon.total + devMon.total > 0) assert.deepEqual([...drvMon.verdicts, ...devMon.verdicts], [], `${what}: ${format} verdicts`);
    }
  };

  const apply = (op: Op) => {
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
        if (cfg.eventIdx) rearm();
        break;
      case 'irq':
        if (op.on || cfg.eventIdx) rearm();
        else for (const x of sides) x.pair.drv.disableInterrupts();
        break;
      case 'notif':
        if (op.on) {
          const [s, p] = sides.map((x) => x.pair.dev.enableNotifications());
          assert.equal(p, s, 'enableNotifications: buffers pending');
        } else for (const x of sides) x.pair.dev.disableNotifications();
        break;
    }
    check(op.k);
  };

  const drain = () => {
    apply({ k: 'publish' });
    while (popped < committed.length) pop();
    pop();
    while (S.held.length > 0) complete(S.held.length * 7 + 3, 0.75);
    apply({ k: 'devPublish' });
    while (collected < completed.length) apply({ k: 'collect', n: 1 });
    apply({ k: 'collect', n: 1 });
    assert.equal(S.pair.drv.numFree, size);
    assert.equal(P.pair.drv.numFree, size);
  };

  for (const op of ops) apply(op);
  drain();
  // More rounds of the same ops until the packed ring has been round `wraps` times.
  for (let rep = 0; wraps > 0 && slots < wraps * size; rep++) {
    const before = committed.length;
    for (const op of ops) apply(op);
    drain();
    if (committed.length === before) break;
  }
  // Sanity, outside the format-agnostic interface: the packed device went round `slots / size`
  // times and its wrap counters flipped once per pass.
  const pdev = P.pair.dev;
  assert.ok(pdev instanceof PackedDeviceQueue);
  const passes = Math.floor(slots / size);
  assert.equal(pdev.nextAvail, slots % size);
  assert.equal(pdev.nextUsed, slots % size);
  assert.equal(pdev.availWrap, passes % 2 === 0);
  assert.equal(pdev.usedWrap, passes % 2 === 0);
  stats.buffers = committed.length;
  stats.packedSlots = slots;
  return stats;
}

const totals = { runs: 0, buffers: 0, reordered: 0, irqs: 0 };

test('split vs packed: property: same workload, in-order completion: same buffers seen by the device, same completions in the same order, no verdicts', { timeout: 60_000 }, () => {
  fc.assert(
    fc.property(cfgArb(true), fc.array(opArb, { minLength: 1, maxLength: 100, size: 'max' }), (cfg, ops) => {
      const s = runEquivalent(cfg, ops);
      totals.runs++;
      totals.buffers += s.buffers;
    }),
    { numRuns: 150 },
  );
  assert.ok(totals.buffers > 400, `only ${totals.buffers} buffers in all`);
});

test('split vs packed: property: same workload, the devices completing in the same random order: still the same on both', { timeout: 60_000 }, () => {
  let reordered = 0;
  fc.assert(
    fc.property(cfgArb(false), fc.array(opArb, { minLength: 1, maxLength: 100, size: 'max' }), (cfg, ops) => {
      reordered += runEquivalent(cfg, ops).reordered;
    }),
    { numRuns: 150 },
  );
  assert.ok(reordered > 100, `only ${reordered} out-of-order completions`);
});

test('split vs packed: property: thousands of passes round the packed ring, in order and reordered', { timeout: 60_000 }, () => {
  let passes = 0;
  fc.assert(
    fc.property(
      fc.boolean().chain((inOrder) => cfgArb(inOrder)),
      shapeArb,
      fc.array(opArb, { minLength: 4, maxLength: 30, size: 'max' }),
      (cfg, first, ops) => {
        const wraps = Math.max(100, Math.min(2000, Math.floor(6000 / cfg.size)));
        const s = runEquivalent(cfg, [{ k: 'add', shape: first }, ...ops], wraps);
        assert.ok(s.packedSlots >= wraps * cfg.size, `went round ${s.packedSlots / cfg.size} times`);
        passes += Math.floor(s.packedSlots / cfg.size);
      },
    ),
    { numRuns: 10 },
  );
  assert.ok(passes >= 3000, `only ${passes} passes in all`);
});

test('split vs packed: every shape on a 1-entry and a 64-entry queue, EVENT_IDX and indirect on and off', () => {
  const shapes: Shape[] = [
    { readable: [], writable: [64], indirect: false, align: 1 },
    { readable: [16, 200], writable: [1], indirect: true, align: 4 },
    { readable: [33], writable: [0, 70, 5], indirect: false, align: 16 },
    { readable: [1, 2, 3, 4, 5], writable: [], indirect: true, align: 1 },
  ];
  for (const size of [1, 64]) {
    for (const eventIdx of [false, true]) {
      for (const indirect of [false, true]) {
        const ops: Op[] = [];
        for (let i = 0; i < 24; i++) {
          ops.push({ k: 'add', shape: shapes[i % shapes.length] });
          if (i % 5 === 4) ops.push({ k: 'publish' }, { k: 'pop', n: 4 }, { k: 'complete', picks: [0, 0, 0], frac: 1 }, { k: 'devPublish' }, { k: 'collect', n: 2 }, { k: 'notif', on: i % 2 === 0 });
        }
        runEquivalent({ size, eventIdx, indirect, indirectMax: 8, inOrder: true }, ops, size === 1 ? 3000 : 50);
      }
    }
  }
});
