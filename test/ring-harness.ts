/**
 * Test support (not a test file): a split virtqueue pair, driver side and device side, over
 * one GuestMemory, wired the way VirtioDriver.setupQueue and VirtioDevice do it, with the
 * verdicts of each side collected. Also a packed pair (makePackedPair) and a format-agnostic
 * pair built through queue.ts (makeQueuePair).
 */
import assert from 'node:assert/strict';
import { GuestMemory } from '../src/memory/guest-memory.js';
import type { GuestAllocator } from '../src/memory/allocator.js';
import { Monitor, type Verdict } from '../src/monitor/monitor.js';
import { clauseInfo } from '../src/monitor/catalogue.js';
import { SplitDriverQueue, layoutSplitQueue, splitQueueFootprint } from '../src/virtqueue/split/driver.js';
import { SplitDeviceQueue } from '../src/virtqueue/split/device.js';
import { DESC_SIZE } from '../src/spec/split-layout.js';
import { PackedDriverQueue, layoutPackedQueue, packedQueueFootprint } from '../src/virtqueue/packed/driver.js';
import { PackedDeviceQueue } from '../src/virtqueue/packed/device.js';
import type { DeviceQueue, DriverQueue, RingFormat } from '../src/virtqueue/queue.js';
import { createDeviceQueue, createDriverQueue, driverQueueFootprint } from '../src/virtqueue/create.js';

/** Ring memory: [0, RING_AREA). */
export const RING_AREA = 0x10000;
/** Data memory: two adjacent regions (separate buffers) meeting at DATA_SPLIT. */
export const DATA_BASE = 0x10000;
export const DATA_SPLIT = 0x20000;
export const DATA_END = 0x30000;

export interface SinkRecord {
  verdict: Verdict;
  fatal: boolean;
  /** The queue's `broken` flag when the sink was called. */
  brokenThen: boolean;
}

export interface PairOptions {
  size: number;
  /** Device-side maximum (>= size). */
  maxSize?: number;
  eventIdx: boolean;
  indirect: boolean;
  indirectMax?: number;
  start?: number;
  /** Ring base address (default 0x1000). */
  ringBase?: number;
}

export interface Pair {
  mem: GuestMemory;
  drv: SplitDriverQueue;
  dev: SplitDeviceQueue;
  drvMon: Monitor;
  devMon: Monitor;
  drvSink: SinkRecord[];
  devSink: SinkRecord[];
  layout: ReturnType<typeof layoutSplitQueue>;
}

export function dataMemory(): GuestMemory {
  return new GuestMemory([
    { guestAddr: 0, size: RING_AREA, buffer: new ArrayBuffer(RING_AREA) },
    { guestAddr: DATA_SPLIT, size: DATA_END - DATA_SPLIT, buffer: new ArrayBuffer(DATA_END - DATA_SPLIT) },
    { guestAddr: DATA_BASE, size: DATA_SPLIT - DATA_BASE, buffer: new ArrayBuffer(DATA_SPLIT - DATA_BASE) },
  ]);
}

export function makePair(o: PairOptions, mem: GuestMemory = dataMemory()): Pair {
  const indirectMax = o.indirect ? (o.indirectMax ?? 4) : 0;
  const base = o.ringBase ?? 0x1000;
  assert.ok(base + splitQueueFootprint(o.size, indirectMax) <= RING_AREA, 'rings fit the ring area');
  const layout = layoutSplitQueue(base, o.size, indirectMax);
  const drvMon = new Monitor();
  const devMon = new Monitor();
  const drvSink: SinkRecord[] = [];
  const devSink: SinkRecord[] = [];
  let drv: SplitDriverQueue;
  let dev: SplitDeviceQueue;
  drv = new SplitDriverQueue(
    mem,
    0,
    o.size,
    layout,
    { eventIdx: o.eventIdx, indirect: o.indirect, indirectPool: o.indirect ? layout.pool : undefined, indirectMax, startIndex: o.start ?? 0 },
    drvMon,
    (verdict, fatal) => drvSink.push({ verdict, fatal, brokenThen: drv.broken }),
  );
  dev = new SplitDeviceQueue(mem, 0, o.maxSize ?? o.size, devMon, (verdict, fatal) => devSink.push({ verdict, fatal, brokenThen: dev.broken }));
  dev.setSize(o.size);
  dev.setAddresses({ desc: layout.desc, avail: layout.avail, used: layout.used });
  dev.setEnabled(true);
  const start = o.start ?? 0;
  assert.equal(dev.activate({ eventIdx: o.eventIdx, indirect: o.indirect }, { avail: start, availWrap: true, used: start, usedWrap: true }), true, `activate: ${JSON.stringify(devMon.verdicts)}`);
  return { mem, drv, dev, drvMon, devMon, drvSink, devSink, layout };
}

/** Every verdict names a clause of the catalogue; every fatal one left its queue broken. */
export function assertSaneVerdicts(sink: SinkRecord[], what: string): void {
  for (const r of sink) {
    assert.ok(clauseInfo(r.verdict.clause) !== undefined, `${what}: verdict names ${r.verdict.clause}, which is not in the catalogue`);
    if (r.fatal) assert.ok(r.brokenThen, `${what}: fatal verdict ${r.verdict.clause} did not mark the queue broken`);
  }
}

/** Writes one split descriptor (2.7.5) raw. */
export function putDesc(mem: GuestMemory, table: number, i: number, addr: number, len: number, flags: number, next: number): void {
  const o = table + i * DESC_SIZE;
  mem.writeU64(o, BigInt(addr));
  mem.writeU32(o + 8, len);
  mem.writeU16(o + 12, flags);
  mem.writeU16(o + 14, next);
}

/** The pieces a buffer becomes on the device side: split where memory regions meet. */
export function splitAtRegions(mem: GuestMemory, addr: number, len: number): [number, number][] {
  if (len === 0) return [[addr, 0]];
  const out: [number, number][] = [];
  let cur = addr;
  let left = len;
  while (left > 0) {
    const r = mem.regionFor(cur, 1);
    assert.ok(r !== null, `model: ${cur} unbacked`);
    const n = Math.min(left, r.end - cur);
    out.push([cur, n]);
    cur += n;
    left -= n;
  }
  return out;
}

// ------------------------------------------------------------------ packed pair

export interface PackedPairOptions {
  /** Any size 1..32768 (packed rings need not be powers of two). */
  size: number;
  /** Device-side maximum (>= size). */
  maxSize?: number;
  eventIdx: boolean;
  indirect: boolean;
  indirectMax?: number;
  /** Ring base address (default 0x1000). */
  ringBase?: number;
}

export interface PackedPair {
  mem: GuestMemory;
  drv: PackedDriverQueue;
  dev: PackedDeviceQueue;
  drvMon: Monitor;
  devMon: Monitor;
  drvSink: SinkRecord[];
  devSink: SinkRecord[];
  layout: ReturnType<typeof layoutPackedQueue>;
}

/** A packed pair (spec 2.8) over `mem`, laid out by layoutPackedQueue, device activated. */
export function makePackedPair(o: PackedPairOptions, mem: GuestMemory = dataMemory()): PackedPair {
  const indirectMax = o.indirect ? (o.indirectMax ?? 4) : 0;
  const base = o.ringBase ?? 0x1000;
  assert.ok(base + packedQueueFootprint(o.size, indirectMax) <= RING_AREA, 'rings fit the ring area');
  const layout = layoutPackedQueue(base, o.size, indirectMax);
  const drvMon = new Monitor();
  const devMon = new Monitor();
  const drvSink: SinkRecord[] = [];
  const devSink: SinkRecord[] = [];
  let drv: PackedDriverQueue;
  let dev: PackedDeviceQueue;
  drv = new PackedDriverQueue(
    mem,
    0,
    o.size,
    { desc: layout.desc, avail: layout.avail, used: layout.used },
    { eventIdx: o.eventIdx, indirect: o.indirect, indirectPool: o.indirect ? layout.pool : undefined, indirectMax },
    drvMon,
    (verdict, fatal) => drvSink.push({ verdict, fatal, brokenThen: drv.broken }),
  );
  dev = new PackedDeviceQueue(mem, 0, o.maxSize ?? o.size, devMon, (verdict, fatal) => devSink.push({ verdict, fatal, brokenThen: dev.broken }));
  dev.setSize(o.size);
  dev.setAddresses({ desc: layout.desc, avail: layout.avail, used: layout.used });
  dev.setEnabled(true);
  assert.equal(dev.activate({ eventIdx: o.eventIdx, indirect: o.indirect }), true, `activate: ${JSON.stringify(devMon.verdicts)}`);
  return { mem, drv, dev, drvMon, devMon, drvSink, devSink, layout };
}

// ------------------------------------------------------------------ either format, through queue.ts

export interface QueuePairOptions {
  size: number;
  maxSize?: number;
  eventIdx: boolean;
  indirect: boolean;
  indirectMax?: number;
  ringBase?: number;
}

export interface QueuePair {
  format: RingFormat;
  mem: GuestMemory;
  drv: DriverQueue;
  dev: DeviceQueue;
  drvMon: Monitor;
  devMon: Monitor;
  drvSink: SinkRecord[];
  devSink: SinkRecord[];
}

/**
 * A driver queue and a device queue of `format`, made only through queue.ts
 * (createDriverQueue / createDeviceQueue / driverQueueFootprint), so a test written against
 * it does not know the ring format.
 */
export function makeQueuePair(format: RingFormat, o: QueuePairOptions, mem: GuestMemory = dataMemory()): QueuePair {
  const indirectMax = o.indirect ? (o.indirectMax ?? 4) : 0;
  const base = o.ringBase ?? 0x1000;
  assert.ok(base + driverQueueFootprint(format, o.size, indirectMax) <= RING_AREA, 'rings fit the ring area');
  const drvMon = new Monitor();
  const devMon = new Monitor();
  const drvSink: SinkRecord[] = [];
  const devSink: SinkRecord[] = [];
  let drv: DriverQueue;
  let dev: DeviceQueue;
  drv = createDriverQueue(format, mem, 0, o.size, base, { eventIdx: o.eventIdx, indirect: o.indirect, indirectMax }, drvMon, (verdict, fatal) =>
    drvSink.push({ verdict, fatal, brokenThen: drv.broken }),
  );
  dev = createDeviceQueue(format, mem, 0, o.maxSize ?? o.size, devMon, (verdict, fatal) => devSink.push({ verdict, fatal, brokenThen: dev.broken }));
  dev.setSize(o.size);
  dev.setAddresses({ desc: drv.addrs.desc, avail: drv.addrs.avail, used: drv.addrs.used });
  dev.setEnabled(true);
  assert.equal(dev.activate({ eventIdx: o.eventIdx, indirect: o.indirect }), true, `activate: ${JSON.stringify(devMon.verdicts)}`);
  return { format, mem, drv, dev, drvMon, devMon, drvSink, devSink };
}

/** One buffer of a test chain: where it is, and its allocation (-1: a zero-length buffer). */
export interface Seg {
  addr: number;
  len: number;
  writable: boolean;
  alloc: number;
}

/** What a random test chain looks like: buffer lengths (0: empty), indirect wanted, alignment. */
export interface Shape {
  readable: number[];
  writable: number[];
  indirect: boolean;
  align: number;
}

/**
 * Allocates a chain's buffers, readable ones first. A zero-length buffer gets no allocation
 * (an address just below DATA_SPLIT). null, with nothing kept, when data memory is full.
 */
export function allocSegs(alloc: GuestAllocator, readable: readonly number[], writable: readonly number[], align: number): Seg[] | null {
  const segs: Seg[] = [];
  try {
    for (const [lens, w] of [
      [readable, false],
      [writable, true],
    ] as const) {
      for (const len of lens) {
        const a = len > 0 ? alloc.alloc(len, align) : -1;
        segs.push({ addr: a >= 0 ? a : DATA_SPLIT - 1, len, writable: w, alloc: a });
      }
    }
  } catch {
    releaseSegs(alloc, segs);
    return null;
  }
  return segs;
}

export function releaseSegs(alloc: GuestAllocator, segs: readonly Seg[]): void {
  for (const s of segs) if (s.alloc >= 0) alloc.release(s.alloc);
}

/** Starts a chain on `drv` with the segments as its buffers (commit is the caller's). */
export function offerSegs(drv: Pick<DriverQueue, 'begin' | 'addReadable' | 'addWritable'>, segs: readonly Seg[]): void {
  drv.begin();
  for (const s of segs) {
    if (s.writable) drv.addWritable(s.addr, s.len);
    else drv.addReadable(s.addr, s.len);
  }
}

/**
 * Counts the device's accesses to guest memory through the regions' DataViews (how the rings'
 * descriptors, indices and used entries are read and written): a measure of a call's work that
 * does not depend on the machine's speed or load, unlike its elapsed time. `counter.n` grows by
 * one per DataView call on any region of `mem` (call before the queue is activated).
 */
export function countViewAccesses(mem: GuestMemory): { n: number } {
  const counter = { n: 0 };
  for (const r of mem.regions) {
    const real = r.view;
    const counted = new Proxy(real, {
      get(target, key) {
        const v = Reflect.get(target, key, target) as unknown;
        if (typeof v !== 'function') return v;
        return (...args: unknown[]) => {
          counter.n++;
          return (v as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
    Object.defineProperty(r, 'view', { value: counted, configurable: true });
  }
  return counter;
}
