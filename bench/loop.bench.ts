/**
 * Device-loop benchmark (`npm run bench`, after the ring bench): the whole device side of a
 * virtqueue as a device author writes it with the public API, payload bytes included, against a
 * bare floor doing the same memory traffic in the same process.
 *
 * Rows (each on split and packed rings, at batch 1 and 32, queue size 256, EVENT_IDX on):
 *   rng 1x64 w      one 64-byte device-writable buffer, filled from a host buffer (entropy-shaped)
 *   blk read        3 direct descriptors: 16-byte header (readable), 4 KiB data and 1 status
 *                   byte (writable): header fields read, a 4 KiB host block written, status 0
 *   blk read ind    the same 3 buffers through an indirect table
 *
 * Library row, per chain: DeviceQueue.pop -> ChainReader (readU32, readU32, readU64Number) ->
 * ChainWriter (write, writeU8) -> addUsed; per batch: enableNotifications until it reports
 * nothing new, then publish (the device loop of src/devices/rng). Every check the conformance
 * monitor relies on is on (a Monitor is attached; a verdict makes the row unsound).
 *
 * Floor row: the same memory traffic with no library: a loop over a DataView and a Uint8Array
 * that reads the ring (avail index or descriptor flags), walks the descriptors (direct, or the
 * indirect table) with the bounds checks the spec asks for (addresses inside memory, next index
 * inside the table, chain no longer than the table, readable before writable, buffer sizes),
 * reads the header, copies the payload (Uint8Array.set of the whole host buffer), writes the
 * status byte and the used element, re-arms notifications and reads the driver's event field.
 *
 * Checked floor row: the floor plus the checks the library makes beyond the floor's (the chain
 * or buffer id not in flight, the shadow of each exposed descriptor and its re-check when the
 * chain is used, each buffer's region by GuestMemory.regionFor, the 2^32 total, the INDIRECT
 * rules; packed: ring room and the used flags written at publish, last to first), still plain
 * code with no library. It splits library/floor in two: checked/floor is what the checks cost,
 * library/checked what the library's structure (API calls, cursors, options) costs on top.
 *
 * Both rows share one driver stand-in per ring format that writes each chain's descriptors (and
 * the avail ring entry / index) straight into guest memory, the traffic a real driver makes,
 * without a driver queue: the figures are the device side. The driver recycles 64 chains of
 * buffers, as a driver recycles its requests.
 *
 * Figures: median ns per chain (interleaved rounds, bench/common.ts timeAll), chains/s, the floor
 * in the same rounds, library/floor, the paired ratios (library/floor, checked/floor,
 * library/checked: medians of ratios of samples taken back to back, see pairedRatios), heap
 * bytes per chain in steady state (common.ts measureAlloc), and packed/split. Goals are printed
 * next to the figures; nothing asserts on time.
 *
 * Environment: BENCH_TIME_MS, BENCH_ROUNDS, BENCH_PAIRS (triples per row, default 400), BENCH_FILTER (substring of "format:shape/batch",
 * e.g. "blk", "packed:", "/32"), BENCH_PROFILE=lib|floor|checked (run that side only, untimed, for
 * `node --cpu-prof` or `perf record`; BENCH_PROFILE_CHAINS chains per row, default 4 M).
 */
import os from 'node:os';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { Monitor } from '../src/monitor/monitor.js';
import { ChainReader, ChainWriter, type DescriptorChain } from '../src/virtqueue/chain.js';
import { SplitDeviceQueue } from '../src/virtqueue/split/device.js';
import { layoutSplitQueue } from '../src/virtqueue/split/driver.js';
import { PackedDeviceQueue } from '../src/virtqueue/packed/device.js';
import { layoutPackedQueue } from '../src/virtqueue/packed/driver.js';
import type { RingFormat } from '../src/virtqueue/queue.js';
import { backToBack, fmtBytes, measureAlloc, ratioStats, si, table, timeAll, type AllocResult } from './common.js';

const QUEUE_SIZE = 256;
const MASK = QUEUE_SIZE - 1;
/** Chains the driver stand-in cycles through (each has its own buffers). */
const SLOTS = 64;
const CHAINS_PER_ITER = 2048;
const ALLOC_N = 65536;
const TIME_MS = Number(process.env.BENCH_TIME_MS ?? 400);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const TIMING = { rounds: ROUNDS, timeMs: TIME_MS, warmupMs: 200, warmupIterations: 8 };
/** Back-to-back sample triples per row for the paired ratios (BENCH_PAIRS). */
const PAIRS = Number(process.env.BENCH_PAIRS ?? 400);
const GOAL_RNG = 10e6;
const GOAL_BLK = 3e6;
const GOAL_FLOOR_RATIO = 1.5;
const GOAL_PACKED_RATIO = 1.1;

type Shape = 'rng' | 'blk' | 'blk-ind';
const SHAPE_LABEL: Record<Shape, string> = { rng: 'rng 1x64 w', blk: 'blk read 3 desc', 'blk-ind': 'blk read indirect' };

interface Row {
  format: RingFormat;
  shape: Shape;
  batch: number;
}
const ALL_ROWS: Row[] = [];
for (const format of ['split', 'packed'] as const) {
  for (const batch of [32, 1]) for (const shape of ['rng', 'blk', 'blk-ind'] as const) ALL_ROWS.push({ format, shape, batch });
}
const key = (r: Row): string => `${r.format}:${r.shape}/${r.batch}`;
const FILTER = process.env.BENCH_FILTER;
/** BENCH_PROFILE=lib|floor|checked: run only that side, PROFILE_CHAINS chains per row, untimed (for node --cpu-prof). */
const PROFILE = process.env.BENCH_PROFILE === 'lib' || process.env.BENCH_PROFILE === 'floor' || process.env.BENCH_PROFILE === 'checked' ? process.env.BENCH_PROFILE : undefined;
const PROFILE_CHAINS = Number(process.env.BENCH_PROFILE_CHAINS ?? 4_000_000);
const ROWS = FILTER ? ALL_ROWS.filter((r) => key(r).includes(FILTER)) : ALL_ROWS;

// ---------------------------------------------------------------------------------------
// Guest memory layout: rings at 0x1000, then SLOTS chains of buffers.

const DATA_BASE = 0x10_0000;
const SLOT_STRIDE = 0x3000;
const HDR = 0; // 16-byte header, or the rng buffer (64 bytes)
const DATA = 0x1000; // 4 KiB
const STATUS = 0x2000; // 1 byte
const TABLE = 0x2100; // indirect table, 3 x 16 bytes
const MEM_SIZE = DATA_BASE + SLOTS * SLOT_STRIDE;
const BLOCK = 4096;

const F_NEXT = 1;
const F_WRITE = 2;
const F_INDIRECT = 4;
const P_AVAIL = 1 << 7;
const P_USED = 1 << 15;
const TWO_32 = 0x1_0000_0000;
const BLK_T_IN = 0;

/** Host data the device copies into the chain: the rng source and the "disk" block. */
const RNG_SRC = new Uint8Array(64).map((_, i) => (i * 7 + 1) & 0xff);
const BLOCK_SRC = new Uint8Array(BLOCK).map((_, i) => (i * 13 + 5) & 0xff);

const slotBase = (k: number): number => DATA_BASE + k * SLOT_STRIDE;

/** The buffers of one chain: [addr, len, flags] (flags F_WRITE or 0). */
function buffersOf(shape: Shape, k: number): [number, number, number][] {
  const b = slotBase(k);
  if (shape === 'rng') return [[b + HDR, 64, F_WRITE]];
  return [
    [b + HDR, 16, 0],
    [b + DATA, BLOCK, F_WRITE],
    [b + STATUS, 1, F_WRITE],
  ];
}

function makeMemory(shape: Shape): GuestMemory {
  const mem = GuestMemory.create(MEM_SIZE);
  for (let k = 0; k < SLOTS; k++) {
    // virtio_blk_outhdr: type IN, reserved 0, sector.
    mem.writeU32(slotBase(k) + HDR, shape === 'rng' ? 0 : BLK_T_IN);
    mem.writeU32(slotBase(k) + HDR + 4, 0);
    mem.writeU64(slotBase(k) + HDR + 8, BigInt(k * 8));
  }
  return mem;
}

// ---------------------------------------------------------------------------------------
// Driver stand-ins: write each chain's descriptors as a driver would, nothing more.

interface Driver {
  readonly desc: number;
  readonly avail: number;
  readonly used: number;
  offer(n: number): void;
}

class SplitDriver implements Driver {
  readonly desc: number;
  readonly avail: number;
  readonly used: number;
  private readonly v: DataView;
  private readonly bufs: [number, number, number][][];
  private availIdx = 0;
  private next = 0;

  constructor(
    mem: GuestMemory,
    private readonly shape: Shape,
  ) {
    const lay = layoutSplitQueue(0x1000, QUEUE_SIZE, 0);
    this.desc = lay.desc;
    this.avail = lay.avail;
    this.used = lay.used;
    this.v = mem.regions[0].view;
    this.bufs = Array.from({ length: SLOTS }, (_, k) => buffersOf(shape, k));
  }

  private putDesc(at: number, addr: number, len: number, flags: number, next: number): void {
    const v = this.v;
    v.setUint32(at, addr >>> 0, true);
    v.setUint32(at + 4, Math.floor(addr / TWO_32), true);
    v.setUint32(at + 8, len, true);
    v.setUint16(at + 12, flags, true);
    v.setUint16(at + 14, next, true);
  }

  offer(n: number): void {
    const v = this.v;
    for (let i = 0; i < n; i++) {
      const k = this.next;
      this.next = (k + 1) % SLOTS;
      const head = k * 3;
      const bufs = this.bufs[k];
      if (this.shape === 'blk-ind') {
        const table = slotBase(k) + TABLE;
        for (let j = 0; j < 3; j++) this.putDesc(table + 16 * j, bufs[j][0], bufs[j][1], bufs[j][2] | (j < 2 ? F_NEXT : 0), j + 1);
        this.putDesc(this.desc + 16 * head, table, 48, F_INDIRECT, 0);
      } else {
        const last = bufs.length - 1;
        for (let j = 0; j <= last; j++) this.putDesc(this.desc + 16 * (head + j), bufs[j][0], bufs[j][1], bufs[j][2] | (j < last ? F_NEXT : 0), head + j + 1);
      }
      v.setUint16(this.avail + 4 + 2 * (this.availIdx & MASK), head, true);
      this.availIdx = (this.availIdx + 1) & 0xffff;
    }
    v.setUint16(this.avail + 2, this.availIdx, true);
  }
}

class PackedDriver implements Driver {
  readonly desc: number;
  readonly avail: number;
  readonly used: number;
  private readonly v: DataView;
  private readonly bufs: [number, number, number][][];
  private slot = 0;
  private wrap = true;
  private next = 0;

  constructor(
    mem: GuestMemory,
    private readonly shape: Shape,
  ) {
    const lay = layoutPackedQueue(0x1000, QUEUE_SIZE, 0);
    this.desc = lay.desc;
    this.avail = lay.avail;
    this.used = lay.used;
    this.v = mem.regions[0].view;
    this.bufs = Array.from({ length: SLOTS }, (_, k) => buffersOf(shape, k));
  }

  private putDesc(at: number, addr: number, len: number, id: number, flags: number): void {
    const v = this.v;
    v.setUint32(at, addr >>> 0, true);
    v.setUint32(at + 4, Math.floor(addr / TWO_32), true);
    v.setUint32(at + 8, len, true);
    v.setUint16(at + 12, id, true);
    v.setUint16(at + 14, flags, true);
  }

  /** Writes one ring descriptor at the next slot with this lap's avail/used bits. */
  private putRing(addr: number, len: number, id: number, flags: number): void {
    this.putDesc(this.desc + 16 * this.slot, addr, len, id, flags | (this.wrap ? P_AVAIL : P_USED));
    if (++this.slot === QUEUE_SIZE) {
      this.slot = 0;
      this.wrap = !this.wrap;
    }
  }

  offer(n: number): void {
    for (let i = 0; i < n; i++) {
      const k = this.next;
      this.next = (k + 1) % SLOTS;
      const bufs = this.bufs[k];
      if (this.shape === 'blk-ind') {
        const table = slotBase(k) + TABLE;
        for (let j = 0; j < 3; j++) this.putDesc(table + 16 * j, bufs[j][0], bufs[j][1], 0, bufs[j][2]);
        this.putRing(table, 48, k, F_INDIRECT);
      } else {
        const last = bufs.length - 1;
        for (let j = 0; j <= last; j++) this.putRing(bufs[j][0], bufs[j][1], k, bufs[j][2] | (j < last ? F_NEXT : 0));
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// Library rigs: a device loop over the public API. One class per format (each loop stays
// monomorphic on its queue class), the same code otherwise.

// A tree without readU64Number (the base of bench:compare) reads the sector as a bigint.
const HAS_U64_NUMBER = typeof (ChainReader.prototype as { readU64Number?: unknown }).readU64Number === 'function';

/** What the report needs from any rig. */
interface Rig {
  run(n: number): void;
  sound(): string | null;
}

abstract class LibRig implements Rig {
  readonly mem: GuestMemory;
  readonly mon = new Monitor();
  readonly reader = new ChainReader();
  readonly writer = new ChainWriter();
  verdicts = 0;
  sectors = 0;
  served = 0;
  interrupts = 0;
  abstract readonly drv: Driver;
  protected readonly sink = (): void => {
    this.verdicts++;
  };

  constructor(
    readonly shape: Shape,
    readonly batch: number,
  ) {
    this.mem = makeMemory(shape);
  }

  /** Serves one chain: what a device type does between pop and addUsed. Returns bytes written. */
  protected serve(chain: DescriptorChain): number {
    const mem = this.mem;
    if (this.shape === 'rng') {
      const n = Math.min(chain.writableBytes, 64);
      this.writer.reset(mem, chain).write(n === 64 ? RNG_SRC : RNG_SRC.subarray(0, n));
      return n;
    }
    const r = this.reader.reset(mem, chain);
    const type = r.readU32();
    r.readU32();
    const sector = HAS_U64_NUMBER ? (r as unknown as { readU64Number(): number }).readU64Number() : Number(r.readU64());
    if (type !== BLK_T_IN || chain.writableBytes !== BLOCK + 1) throw new Error('unexpected request');
    this.sectors += sector;
    const w = this.writer.reset(mem, chain);
    w.write(BLOCK_SRC);
    w.writeU8(0);
    return BLOCK + 1;
  }

  /** Configures `q` as the driver stand-in laid the ring out, and starts it. */
  protected start<Q extends SplitDeviceQueue | PackedDeviceQueue>(q: Q): Q {
    q.setSize(QUEUE_SIZE);
    q.setAddresses({ desc: this.drv.desc, avail: this.drv.avail, used: this.drv.used });
    q.setEnabled(true);
    if (!q.activate({ eventIdx: true, indirect: this.shape === 'blk-ind' })) throw new Error('queue did not activate');
    return q;
  }

  abstract run(n: number): void;

  sound(): string | null {
    if (this.verdicts > 0 || this.mon.total > 0) return `verdicts: ${this.mon.verdicts[0]?.clause ?? this.verdicts}`;
    return checkPayload(this.mem, this.shape);
  }
}

class SplitLib extends LibRig {
  readonly drv: SplitDriver;
  readonly q: SplitDeviceQueue;
  readonly chain: DescriptorChain;
  constructor(shape: Shape, batch: number) {
    super(shape, batch);
    this.drv = new SplitDriver(this.mem, shape);
    this.q = this.start(new SplitDeviceQueue(this.mem, 0, QUEUE_SIZE, this.mon, this.sink));
    this.chain = this.q.newChain();
  }
  // The same loop as PackedLib.run, a separate copy on purpose (see above).
  run(n: number): void {
    const q = this.q;
    const chain = this.chain;
    for (let done = 0; done < n; done += this.batch) {
      this.drv.offer(this.batch);
      do {
        while (q.pop(chain)) {
          q.addUsed(chain.head, this.serve(chain));
          this.served++;
        }
      } while (q.enableNotifications());
      if (q.publish()) this.interrupts++;
    }
  }
}

class PackedLib extends LibRig {
  readonly drv: PackedDriver;
  readonly q: PackedDeviceQueue;
  readonly chain: DescriptorChain;
  constructor(shape: Shape, batch: number) {
    super(shape, batch);
    this.drv = new PackedDriver(this.mem, shape);
    this.q = this.start(new PackedDeviceQueue(this.mem, 0, QUEUE_SIZE, this.mon, this.sink));
    this.chain = this.q.newChain();
  }
  // The same loop as SplitLib.run, a separate copy on purpose (see above).
  run(n: number): void {
    const q = this.q;
    const chain = this.chain;
    for (let done = 0; done < n; done += this.batch) {
      this.drv.offer(this.batch);
      do {
        while (q.pop(chain)) {
          q.addUsed(chain.head, this.serve(chain));
          this.served++;
        }
      } while (q.enableNotifications());
      if (q.publish()) this.interrupts++;
    }
  }
}

/** null when every slot's writable buffers hold what the device wrote (status poisoned first by the caller). */
function checkPayload(mem: GuestMemory, shape: Shape): string | null {
  for (let k = 0; k < SLOTS; k++) {
    const b = slotBase(k);
    if (shape === 'rng') {
      for (let i = 0; i < 64; i++) if (mem.readU8(b + HDR + i) !== RNG_SRC[i]) return `slot ${k}: rng byte ${i} wrong`;
      continue;
    }
    for (let i = 0; i < BLOCK; i += 509) if (mem.readU8(b + DATA + i) !== BLOCK_SRC[i]) return `slot ${k}: data byte ${i} wrong`;
    if (mem.readU8(b + STATUS) !== 0) return `slot ${k}: status ${mem.readU8(b + STATUS)}`;
  }
  return null;
}

/** Poisons what the device is to write (so checkPayload sees it was written). */
function poison(mem: GuestMemory, shape: Shape): void {
  for (let k = 0; k < SLOTS; k++) {
    const b = slotBase(k);
    if (shape === 'rng') mem.fill(b + HDR, 64, 0xee);
    else {
      mem.fill(b + DATA, BLOCK, 0xee);
      mem.writeU8(b + STATUS, 0xff);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Floors: the same memory traffic, no library (bounds-checked loops over one DataView).

/** A buffer the floor walked: its guest address, length and whether it is device-writable. */
const segA = new Float64Array(QUEUE_SIZE);
const segL = new Uint32Array(QUEUE_SIZE);
const segW = new Uint8Array(QUEUE_SIZE);

function fail(what: string): never {
  throw new Error(`floor: ${what}`);
}

abstract class FloorRig implements Rig {
  readonly mem: GuestMemory;
  readonly v: DataView;
  readonly u8: Uint8Array;
  abstract readonly drv: Driver;
  sectors = 0;
  interrupts = 0;
  constructor(
    readonly shape: Shape,
    readonly batch: number,
  ) {
    this.mem = makeMemory(shape);
    this.v = this.mem.regions[0].view;
    this.u8 = this.mem.regions[0].bytes;
  }

  /** Checks one walked buffer against the memory's size and records it as segment `i` (readable ones first). */
  protected seg(i: number, addr: number, len: number, writable: boolean): void {
    if (addr + len > MEM_SIZE) fail('buffer outside memory');
    this.record(i, addr, len, writable);
  }

  /** seg for the checked floors: the buffer's region found as the library finds it (GuestMemory.regionFor). */
  protected checkedSeg(i: number, addr: number, len: number, writable: boolean): void {
    if (this.mem.regionFor(addr, len) === null) fail('buffer outside memory');
    this.record(i, addr, len, writable);
  }

  /** Records segment `i` (a readable one after a writable one is refused). */
  private record(i: number, addr: number, len: number, writable: boolean): void {
    if (!writable && i > 0 && segW[i - 1] === 1) fail('readable after writable');
    segA[i] = addr;
    segL[i] = len;
    segW[i] = writable ? 1 : 0;
  }

  /** The device type's work on segments [0, n): the same as LibRig.serve. Returns bytes written. */
  protected work(n: number): number {
    const u8 = this.u8;
    if (this.shape === 'rng') {
      if (n !== 1 || segW[0] !== 1) fail('rng chain shape');
      const len = Math.min(segL[0], 64);
      if (len === 64) u8.set(RNG_SRC, segA[0]);
      else for (let i = 0; i < len; i++) u8[segA[0] + i] = RNG_SRC[i];
      return len;
    }
    if (n !== 3 || segW[0] !== 0 || segL[0] < 16 || segL[1] < BLOCK || segL[2] < 1) fail('blk chain shape');
    const v = this.v;
    const h = segA[0];
    const type = v.getUint32(h, true);
    const hi = v.getUint32(h + 12, true);
    if (hi > 0x1f_ffff) fail('sector');
    const sector = hi * TWO_32 + v.getUint32(h + 8, true);
    if (type !== BLK_T_IN) fail('type');
    this.sectors += sector;
    u8.set(BLOCK_SRC, segA[1]);
    u8[segA[2]] = 0;
    return BLOCK + 1;
  }

  abstract run(n: number): void;

  sound(): string | null {
    return checkPayload(this.mem, this.shape);
  }
}

/** The split floors' read of avail.idx, checked against the last one seen (it never runs more than the ring ahead). */
function splitAvailIdx(v: DataView, avail: number, last: number): number {
  const availIdx = v.getUint16(avail + 2, true);
  if (((availIdx - last) & 0xffff) > QUEUE_SIZE) fail('avail index ran ahead');
  return availIdx;
}

/** The split floors' head at avail index `at`, checked against the table's size. */
function splitHeadAt(v: DataView, avail: number, at: number): number {
  const head = v.getUint16(avail + 4 + 2 * (at & MASK), true);
  if (head >= QUEUE_SIZE) fail('head');
  return head;
}

/** The split floors' used element for `head` at used index `usedIdx` (published at the batch's end). */
function splitPutUsed(v: DataView, used: number, usedIdx: number, head: number, len: number): void {
  const u = used + 4 + 8 * (usedIdx & MASK);
  v.setUint32(u, head, true);
  v.setUint32(u + 4, len, true);
}

/** The split floors' batch end: used.idx published; whether used_event asks for an interrupt. */
function splitPublish(v: DataView, avail: number, used: number, usedIdx: number): boolean {
  const old = v.getUint16(used + 2, true);
  v.setUint16(used + 2, usedIdx, true);
  const ev = v.getUint16(avail + 4 + 2 * QUEUE_SIZE, true); // used_event
  return ((usedIdx - ev - 1) & 0xffff) < ((usedIdx - old) & 0xffff);
}

class SplitFloor extends FloorRig {
  readonly drv: SplitDriver;
  private last = 0;
  private usedIdx = 0;
  constructor(shape: Shape, batch: number) {
    super(shape, batch);
    this.drv = new SplitDriver(this.mem, shape);
  }

  /** Walks the chain at `head` into the segment arrays; returns how many. */
  private walk(head: number): number {
    const v = this.v;
    let table = this.drv.desc;
    let size = QUEUE_SIZE;
    let idx = head;
    let n = 0;
    let o = table + 16 * idx;
    if ((v.getUint16(o + 12, true) & F_INDIRECT) !== 0) {
      const addr = v.getUint32(o, true) + v.getUint32(o + 4, true) * TWO_32;
      const len = v.getUint32(o + 8, true);
      if (len === 0 || len % 16 !== 0 || addr + len > MEM_SIZE) fail('indirect table');
      table = addr;
      size = len / 16;
      idx = 0;
    }
    for (;;) {
      if (n >= size) fail('chain longer than its table');
      o = table + 16 * idx;
      const flags = v.getUint16(o + 12, true);
      this.seg(n++, v.getUint32(o, true) + v.getUint32(o + 4, true) * TWO_32, v.getUint32(o + 8, true), (flags & F_WRITE) !== 0);
      if ((flags & F_NEXT) === 0) return n;
      idx = v.getUint16(o + 14, true);
      if (idx >= size) fail('next outside the table');
    }
  }

  run(n: number): void {
    const v = this.v;
    const { avail, used } = this.drv;
    for (let done = 0; done < n; done += this.batch) {
      this.drv.offer(this.batch);
      for (;;) {
        const availIdx = splitAvailIdx(v, avail, this.last);
        while (this.last !== availIdx) {
          const head = splitHeadAt(v, avail, this.last);
          this.last = (this.last + 1) & 0xffff;
          const len = this.work(this.walk(head));
          splitPutUsed(v, used, this.usedIdx, head, len);
          this.usedIdx = (this.usedIdx + 1) & 0xffff;
        }
        v.setUint16(used + 4 + 8 * QUEUE_SIZE, this.last, true); // avail_event
        if (v.getUint16(avail + 2, true) === this.last) break;
      }
      if (splitPublish(v, avail, used, this.usedIdx)) this.interrupts++;
    }
  }
}

/**
 * Checked floor, split: the split floor plus the checks the library makes that the floor leaves
 * out: the head not in flight, the init.cleanup.driver.1 shadow of each table descriptor and its
 * re-check when the chain is used, each buffer's region by GuestMemory.regionFor (not one bound
 * against the memory's size), the chain's 2^32 total, the INDIRECT rules. Plain code in the
 * floor's style, no library: what the checks cost, apart from what the library's structure
 * (API calls, cursors, options) costs.
 */
class SplitCheckedFloor extends FloorRig {
  readonly drv: SplitDriver;
  private last = 0;
  private usedIdx = 0;
  private readonly inFlight = new Uint8Array(QUEUE_SIZE);
  private readonly shadow = new Uint32Array(4 * QUEUE_SIZE);
  private readonly tableCount = new Uint16Array(QUEUE_SIZE);
  constructor(shape: Shape, batch: number) {
    super(shape, batch);
    this.drv = new SplitDriver(this.mem, shape);
  }

  private walk(head: number): number {
    const v = this.v;
    const mem = this.mem;
    const sh = this.shadow;
    let tv = v;
    let tbase = this.drv.desc;
    let size = QUEUE_SIZE;
    let idx = head;
    let n = 0;
    let total = 0;
    let count = 0;
    let indirect = false;
    for (;;) {
      if (count >= size) fail('chain longer than its table');
      const o = tbase + 16 * idx;
      const lo = tv.getUint32(o, true);
      const hi = tv.getUint32(o + 4, true);
      const len = tv.getUint32(o + 8, true);
      const fn = tv.getUint32(o + 12, true);
      const flags = fn & 0xffff;
      const addr = lo + hi * TWO_32;
      count++;
      if (!indirect) {
        const s = 4 * idx;
        sh[s] = lo;
        sh[s + 1] = hi;
        sh[s + 2] = len;
        sh[s + 3] = fn;
      }
      if ((flags & F_INDIRECT) !== 0) {
        if (indirect || (flags & F_NEXT) !== 0) fail('indirect rules');
        if (len === 0 || len % 16 !== 0) fail('indirect table');
        const r = mem.regionFor(addr, len);
        if (r === null) fail('indirect table outside memory');
        this.tableCount[head] = count;
        tv = r.view;
        tbase = addr - r.guestAddr;
        size = len / 16;
        idx = 0;
        count = 0;
        indirect = true;
        continue;
      }
      this.checkedSeg(n++, addr, len, (flags & F_WRITE) !== 0);
      total += len;
      if (total > TWO_32) fail('chain over 2^32 bytes');
      if ((flags & F_NEXT) === 0) break;
      idx = fn >>> 16;
      if (idx >= size) fail('next outside the table');
    }
    if (!indirect) this.tableCount[head] = count;
    return n;
  }

  private unaltered(head: number): void {
    const v = this.v;
    const sh = this.shadow;
    const desc = this.drv.desc;
    let idx = head;
    for (let n = this.tableCount[head]; n > 0; n--) {
      const o = desc + 16 * idx;
      const s = 4 * idx;
      if (v.getUint32(o, true) !== sh[s] || v.getUint32(o + 4, true) !== sh[s + 1] || v.getUint32(o + 8, true) !== sh[s + 2] || v.getUint32(o + 12, true) !== sh[s + 3]) fail('altered');
      idx = sh[s + 3] >>> 16;
      if (idx >= QUEUE_SIZE) return;
    }
  }

  // SplitFloor.run's loop with the checks added, a separate copy on purpose: one run shared by
  // both classes would see two receivers and its calls would go polymorphic (as the library
  // rigs keep their own loops), moving the floor it is compared with.
  run(n: number): void {
    const v = this.v;
    const { avail, used } = this.drv;
    const inFlight = this.inFlight;
    for (let done = 0; done < n; done += this.batch) {
      this.drv.offer(this.batch);
      for (;;) {
        const availIdx = splitAvailIdx(v, avail, this.last);
        while (this.last !== availIdx) {
          const head = splitHeadAt(v, avail, this.last);
          this.last = (this.last + 1) & 0xffff;
          if (inFlight[head] === 1) fail('in flight');
          const nseg = this.walk(head);
          inFlight[head] = 1;
          const len = this.work(nseg);
          if (inFlight[head] !== 1) fail('not in flight');
          this.unaltered(head);
          inFlight[head] = 0;
          splitPutUsed(v, used, this.usedIdx, head, len);
          this.usedIdx = (this.usedIdx + 1) & 0xffff;
        }
        v.setUint16(used + 4 + 8 * QUEUE_SIZE, this.last, true); // avail_event
        if (v.getUint16(avail + 2, true) === this.last) break;
      }
      if (splitPublish(v, avail, used, this.usedIdx)) this.interrupts++;
    }
  }
}

/** Whether the packed ring's descriptor at `slot` is available in lap `wrap` (AVAIL = wrap, USED != wrap). */
function packedAvailableAt(v: DataView, desc: number, slot: number, wrap: boolean): boolean {
  const f = v.getUint16(desc + 16 * slot + 14, true);
  return (f & P_AVAIL) !== 0 === wrap && (f & P_USED) !== 0 !== wrap;
}

class PackedFloor extends FloorRig {
  readonly drv: PackedDriver;
  private next = 0;
  private wrap = true;
  private usedSlot = 0;
  private usedWrap = true;
  constructor(shape: Shape, batch: number) {
    super(shape, batch);
    this.drv = new PackedDriver(this.mem, shape);
  }

  private availableAt(slot: number, wrap: boolean): boolean {
    return packedAvailableAt(this.v, this.drv.desc, slot, wrap);
  }

  run(n: number): void {
    const v = this.v;
    const desc = this.drv.desc;
    for (let done = 0; done < n; done += this.batch) {
      this.drv.offer(this.batch);
      for (;;) {
        while (this.availableAt(this.next, this.wrap)) {
          // Walk the list (ring descriptors in order), or its indirect table.
          let nseg = 0;
          let ringDescs = 0;
          let id = 0;
          for (;;) {
            if (ringDescs >= QUEUE_SIZE) fail('list longer than the ring');
            if (ringDescs > 0 && !this.availableAt(this.next, this.wrap)) fail('list ends in a slot not available');
            const o = desc + 16 * this.next;
            const addr = v.getUint32(o, true) + v.getUint32(o + 4, true) * TWO_32;
            const len = v.getUint32(o + 8, true);
            const flags = v.getUint16(o + 14, true);
            id = v.getUint16(o + 12, true);
            ringDescs++;
            if (++this.next === QUEUE_SIZE) {
              this.next = 0;
              this.wrap = !this.wrap;
            }
            if ((flags & F_INDIRECT) !== 0) {
              if (len === 0 || len % 16 !== 0 || addr + len > MEM_SIZE) fail('indirect table');
              for (let t = addr; t < addr + len; t += 16) {
                this.seg(nseg++, v.getUint32(t, true) + v.getUint32(t + 4, true) * TWO_32, v.getUint32(t + 8, true), (v.getUint16(t + 14, true) & F_WRITE) !== 0);
              }
              break;
            }
            this.seg(nseg++, addr, len, (flags & F_WRITE) !== 0);
            if ((flags & F_NEXT) === 0) break;
          }
          if (id >= QUEUE_SIZE) fail('buffer id');
          const written = this.work(nseg);
          // Used descriptor in the list's first slot: id, len, then flags (AVAIL = USED = wrap).
          const u = desc + 16 * this.usedSlot;
          v.setUint32(u + 8, written, true);
          v.setUint16(u + 12, id, true);
          v.setUint16(u + 14, this.usedWrap ? P_AVAIL | P_USED : 0, true);
          this.usedSlot += ringDescs;
          if (this.usedSlot >= QUEUE_SIZE) {
            this.usedSlot -= QUEUE_SIZE;
            this.usedWrap = !this.usedWrap;
          }
        }
        v.setUint16(this.drv.used + 2, 0, true); // device event suppression: notifications on
        if (!this.availableAt(this.next, this.wrap)) break;
      }
      if ((v.getUint16(this.drv.avail + 2, true) & 3) !== 1) this.interrupts++; // driver event flags
    }
  }
}

/**
 * Checked floor, packed: the packed floor plus the library's further checks (ring room: no slot
 * the device has not released; the buffer id not in flight; the packed.desc-table.driver.2
 * shadow of each slot and its re-check when the buffer is used; regions by
 * GuestMemory.regionFor; the 2^32 total; the INDIRECT rules) and the library's used-flags order
 * (written when the batch is published, last to first, so the driver never sees part of one).
 */
class PackedCheckedFloor extends FloorRig {
  readonly drv: PackedDriver;
  private next = 0;
  private wrap = true;
  private availLinear = 0;
  private usedLinear = 0;
  private signalledLinear = 0;
  private usedSlot = 0;
  private usedWrap = true;
  private readonly idLinear = new Float64Array(65536).fill(-1);
  private readonly idPlace = new Uint32Array(65536);
  private readonly shAddr = new Float64Array(QUEUE_SIZE);
  private readonly shLen = new Uint32Array(QUEUE_SIZE);
  private readonly shIdFlags = new Uint32Array(QUEUE_SIZE);
  private readonly pend = new Uint32Array(QUEUE_SIZE);
  private pendN = 0;
  constructor(shape: Shape, batch: number) {
    super(shape, batch);
    this.drv = new PackedDriver(this.mem, shape);
  }

  private availableAt(slot: number, wrap: boolean): boolean {
    return packedAvailableAt(this.v, this.drv.desc, slot, wrap);
  }

  /** The buffer id of the list take() took last. */
  private takenId = 0;

  /** Takes the list at `next` into the segment arrays; returns how many (its buffer id in takenId). */
  private take(): number {
    const v = this.v;
    const mem = this.mem;
    const desc = this.drv.desc;
    const first = this.next;
    const room = QUEUE_SIZE - (this.availLinear - this.signalledLinear);
    let slot = first;
    let wrap = this.wrap;
    let nseg = 0;
    let count = 0;
    let id = 0;
    let total = 0;
    for (;;) {
      if (count >= QUEUE_SIZE) fail('list longer than the ring');
      if (count > 0 && !this.availableAt(slot, wrap)) fail('list ends in a slot not available');
      if (count >= room) fail('no room');
      const o = desc + 16 * slot;
      const addr = v.getUint32(o, true) + v.getUint32(o + 4, true) * TWO_32;
      const len = v.getUint32(o + 8, true);
      const idFlags = v.getUint32(o + 12, true);
      const flags = idFlags >>> 16;
      id = idFlags & 0xffff;
      this.shAddr[slot] = addr;
      this.shLen[slot] = len;
      this.shIdFlags[slot] = idFlags;
      count++;
      if (++slot === QUEUE_SIZE) {
        slot = 0;
        wrap = !wrap;
      }
      if ((flags & F_INDIRECT) !== 0) {
        if ((flags & F_NEXT) !== 0 || count > 1) fail('indirect rules');
        if (len === 0 || len % 16 !== 0) fail('indirect table');
        const r = mem.regionFor(addr, len);
        if (r === null) fail('indirect table outside memory');
        const tv = r.view;
        const base = addr - r.guestAddr;
        const entries = len / 16;
        for (let e = 0; e < entries; e++) {
          const t = base + 16 * e;
          const a = tv.getUint32(t, true) + tv.getUint32(t + 4, true) * TWO_32;
          const l = tv.getUint32(t + 8, true);
          const f = tv.getUint16(t + 14, true);
          if ((f & F_INDIRECT) !== 0) fail('nested indirect');
          this.checkedSeg(nseg++, a, l, (f & F_WRITE) !== 0);
          total += l;
          if (total > TWO_32) fail('over 2^32');
        }
        break;
      }
      this.checkedSeg(nseg++, addr, len, (flags & F_WRITE) !== 0);
      total += len;
      if (total > TWO_32) fail('over 2^32');
      if ((flags & F_NEXT) === 0) break;
    }
    if (this.idLinear[id] >= 0) fail('id in flight');
    this.idLinear[id] = this.availLinear;
    this.idPlace[id] = (first | (count << 16)) >>> 0;
    this.next = slot;
    this.wrap = wrap;
    this.availLinear += count;
    this.takenId = id;
    return nseg;
  }

  private used(id: number, written: number): void {
    const v = this.v;
    const linear = this.idLinear[id];
    if (linear < 0) fail('not in flight');
    const place = this.idPlace[id];
    const count = place >>> 16;
    for (let i = 0, s = place & 0xffff; i < count; i++, s = s + 1 === QUEUE_SIZE ? 0 : s + 1) {
      if (linear + i < this.usedLinear) continue;
      const o = this.drv.desc + 16 * s;
      if (v.getUint32(o, true) + v.getUint32(o + 4, true) * TWO_32 !== this.shAddr[s] || v.getUint32(o + 8, true) !== this.shLen[s] || v.getUint32(o + 12, true) !== this.shIdFlags[s]) fail('altered');
    }
    this.idLinear[id] = -1;
    const u = this.drv.desc + 16 * this.usedSlot;
    v.setUint32(u + 8, written, true);
    v.setUint16(u + 12, id, true);
    this.pend[this.pendN++] = (this.usedSlot | ((this.usedWrap ? P_AVAIL | P_USED : 0) | (written > 0 ? F_WRITE : 0)) << 16) >>> 0;
    this.usedSlot += count;
    if (this.usedSlot >= QUEUE_SIZE) {
      this.usedSlot -= QUEUE_SIZE;
      this.usedWrap = !this.usedWrap;
    }
    this.usedLinear += count;
  }

  run(n: number): void {
    const v = this.v;
    for (let done = 0; done < n; done += this.batch) {
      this.drv.offer(this.batch);
      for (;;) {
        while (this.availableAt(this.next, this.wrap)) {
          const nseg = this.take();
          this.used(this.takenId, this.work(nseg));
        }
        v.setUint16(this.drv.used, this.next | (this.wrap ? 0x8000 : 0), true); // device event off_wrap
        v.setUint16(this.drv.used + 2, 2, true); // device event flags: DESC
        if (!this.availableAt(this.next, this.wrap)) break;
      }
      // Publish: flags last to first, then the driver's event.
      for (let i = this.pendN - 1; i >= 0; i--) {
        const p = this.pend[i];
        v.setUint16(this.drv.desc + 16 * (p & 0xffff) + 14, p >>> 16, true);
      }
      this.pendN = 0;
      const old = this.signalledLinear;
      this.signalledLinear = this.usedLinear;
      const flags = v.getUint16(this.drv.avail + 2, true) & 3;
      if (flags !== 1 && (flags !== 2 || old !== this.usedLinear)) this.interrupts++;
    }
  }
}

type Side = 'lib' | 'floor' | 'checked';
const SIDES: readonly Side[] = ['lib', 'floor', 'checked'];
const SIDE_LABEL: Record<Side, string> = { lib: 'library', floor: 'floor', checked: 'checked floor' };
function makeRig(r: Row, side: Side): Rig {
  if (side === 'checked') return r.format === 'split' ? new SplitCheckedFloor(r.shape, r.batch) : new PackedCheckedFloor(r.shape, r.batch);
  if (side === 'floor') return r.format === 'split' ? new SplitFloor(r.shape, r.batch) : new PackedFloor(r.shape, r.batch);
  return r.format === 'split' ? new SplitLib(r.shape, r.batch) : new PackedLib(r.shape, r.batch);
}

// ---------------------------------------------------------------------------------------

/** Paired ratios of one row: medians of per-round time ratios (common.ts backToBack, ratioStats). */
interface PairedRatios {
  libFloor: number;
  checkedFloor: number;
  libChecked: number;
  /** Interquartile range of library/floor, in % of its median. */
  iqrPct: number;
}

/**
 * The three sides of one row timed back to back, one sample of CHAINS_PER_ITER chains each,
 * PAIRS rounds (common.ts backToBack): within a round (about a millisecond) a drifting host
 * moves all three alike, so these ratios hold where the timed rounds' medians do not.
 */
function pairedRatios(lib: Rig, floor: Rig, checked: Rig): PairedRatios {
  const rounds = backToBack([() => lib.run(CHAINS_PER_ITER), () => floor.run(CHAINS_PER_ITER), () => checked.run(CHAINS_PER_ITER)], PAIRS);
  const lf = ratioStats(rounds, 0, 1);
  return { libFloor: lf.median, iqrPct: lf.iqrPct, checkedFloor: ratioStats(rounds, 2, 1).median, libChecked: ratioStats(rounds, 0, 2).median };
}

async function main(): Promise<void> {
  const t0 = performance.now();
  const cpus = os.cpus();
  console.log(
    `virtio-ts device-loop bench | node ${process.version} (V8 ${process.versions.v8}) | ${cpus[0]?.model?.trim() ?? 'unknown CPU'} (${cpus.length} cpus) | ${new Date().toISOString()}`,
  );
  console.log(
    `device side, payload included, queue size ${QUEUE_SIZE}, EVENT_IDX on, monitor on; ${ROUNDS} interleaved rounds x ${TIME_MS} ms per row, ${CHAINS_PER_ITER} chains per sample, medians${HAS_U64_NUMBER ? '' : ' (this tree has no readU64Number: sectors read as bigints)'}`,
  );

  const rigs: Record<Side, Rig[]> = { lib: [], floor: [], checked: [] };
  for (const side of SIDES) rigs[side] = ROWS.map((r) => makeRig(r, side));
  const everyRig = SIDES.flatMap((side) => rigs[side].map((rig, i) => ({ side, rig, r: ROWS[i] })));
  for (const { side, rig, r } of everyRig) {
    poison((rig as LibRig | FloorRig).mem, r.shape);
    rig.run(16384); // warm-up, and every slot served
    const bad = rig.sound();
    if (bad !== null) {
      console.log(`${SIDE_LABEL[side]} ${key(r)} is not sound: ${bad}`);
      process.exitCode = 1;
      return;
    }
  }

  if (PROFILE !== undefined) {
    // Profiling mode: one side only, a fixed number of chains, no timing (run under --cpu-prof).
    const profiled = rigs[PROFILE];
    const t = performance.now();
    const cpu = process.cpuUsage();
    // In samples of CHAINS_PER_ITER chains, as the timed rounds call it: one call of
    // PROFILE_CHAINS would run the loop through on-stack replacement, its code unlike the timed
    // one (callgrind saw `run` stay in baseline code, calling pop and serve un-inlined).
    for (const rig of profiled) for (let done = 0; done < PROFILE_CHAINS; done += CHAINS_PER_ITER) rig.run(Math.min(CHAINS_PER_ITER, PROFILE_CHAINS - done));
    const used = process.cpuUsage(cpu);
    const cpuNs = ((used.user + used.system) * 1000) / (profiled.length * PROFILE_CHAINS);
    console.log(`profiled ${PROFILE}: ${profiled.length} row(s) x ${PROFILE_CHAINS} chains in ${(performance.now() - t).toFixed(0)} ms, ${cpuNs.toFixed(1)} ns CPU per chain`);
    return;
  }
  const tasks: [string, () => void][] = [];
  const task = (side: Side, r: Row): string => (side === 'lib' ? key(r) : `${side} ${key(r)}`);
  ROWS.forEach((r, i) => {
    for (const side of SIDES) tasks.push([task(side, r), () => rigs[side][i].run(CHAINS_PER_ITER)]);
  });
  const timings = await timeAll(tasks, TIMING);
  const paired = ROWS.map((_, i) => pairedRatios(rigs.lib[i], rigs.floor[i], rigs.checked[i]));

  const allocs: AllocResult[] = [];
  const floorAllocs: AllocResult[] = [];
  ROWS.forEach((r) => {
    const lib = makeRig(r, 'lib');
    allocs.push(measureAlloc((n) => lib.run(n), ALLOC_N));
    const fl = makeRig(r, 'floor');
    floorAllocs.push(measureAlloc((n) => fl.run(n), ALLOC_N));
  });

  const ns = (name: string): number => (timings.get(name)!.median * 1e6) / CHAINS_PER_ITER;
  console.log('');
  const rows = ROWS.map((r, i) => {
    const lib = ns(key(r));
    const floor = ns(task('floor', r));
    const pr = paired[i];
    const t = timings.get(key(r))!;
    const goal = r.shape === 'rng' ? GOAL_RNG : GOAL_BLK;
    const a = allocs[i];
    return [
      r.format,
      SHAPE_LABEL[r.shape],
      String(r.batch),
      lib.toFixed(1),
      `${t.iqrPct.toFixed(1)}%`,
      si(1e9 / lib),
      floor.toFixed(1),
      `${(lib / floor).toFixed(2)}x`,
      `${pr.libFloor.toFixed(2)}x`,
      `${pr.iqrPct.toFixed(1)}%`,
      `${pr.checkedFloor.toFixed(2)}x`,
      `${pr.libChecked.toFixed(2)}x`,
      fmtBytes(a),
      fmtBytes(floorAllocs[i]),
      `${1e9 / lib >= goal ? 'met' : 'MISSED'} (${si(goal)})`,
      pr.libFloor <= GOAL_FLOOR_RATIO ? 'met' : 'MISSED',
      a.valid ? (a.perIter <= 0.5 ? 'met' : 'MISSED') : '?',
    ];
  });
  console.log(
    table(
      ['ring', 'workload', 'batch', 'ns/chain', 'IQR', 'chains/s', 'floor ns', 'x floor', 'paired x floor', 'paired IQR', 'checked/floor', 'x checked', 'heap B/chain', 'floor B', 'speed goal', `<=${GOAL_FLOOR_RATIO}x floor`, '0 B/chain'],
      rows,
      [false, false, true, true, true, true, true, true, true, true, true, true, true, true, false, false, false],
    ),
  );
  console.log(
    `goals: >= ${si(GOAL_RNG)} chains/s for rng 1x64, >= ${si(GOAL_BLK)} for the blk shapes, within ${GOAL_FLOOR_RATIO}x of the floor, 0 heap bytes per chain (steady state, common.ts measureAlloc)`,
  );
  console.log(
    `x floor: ns/chain over floor ns (medians of the timed rounds); paired x floor: the median of ${PAIRS} ratios of library and floor samples taken back to back (the goal is judged on it: a host whose speed drifts between the rounds moves it little); checked/floor (what the checks cost) and x checked (what the library's structure costs on top): paired medians likewise, against the checked floor (the floor plus the checks the library makes beyond it, plain code)`,
  );

  const pairs = ROWS.filter((r) => r.format === 'packed').flatMap((p) => {
    const s = ROWS.find((r) => r.format === 'split' && r.shape === p.shape && r.batch === p.batch);
    return s ? [[s, p] as const] : [];
  });
  if (pairs.length > 0) {
    console.log('');
    console.log(
      `packed / split (< 1: packed faster): medians of the timed rounds, and paired (the median of ${PAIRS} ratios of samples taken back to back, the figure the goal is judged on); goal within ${Math.round((GOAL_PACKED_RATIO - 1) * 100)}% of split`,
    );
    console.log(
      table(
        ['workload', 'batch', 'split ns', 'packed ns', 'packed/split', 'paired', 'paired IQR', 'floor paired', 'checked paired', 'goal'],
        pairs.map(([s, p]) => {
          const both = (side: Side) => {
            const packed = rigs[side][ROWS.indexOf(p)];
            const split = rigs[side][ROWS.indexOf(s)];
            return ratioStats(backToBack([() => packed.run(CHAINS_PER_ITER), () => split.run(CHAINS_PER_ITER)], PAIRS), 0, 1);
          };
          const lib = both('lib');
          return [
            SHAPE_LABEL[p.shape],
            String(p.batch),
            ns(key(s)).toFixed(1),
            ns(key(p)).toFixed(1),
            (ns(key(p)) / ns(key(s))).toFixed(3),
            lib.median.toFixed(3),
            `${lib.iqrPct.toFixed(1)}%`,
            both('floor').median.toFixed(3),
            both('checked').median.toFixed(3),
            lib.median <= GOAL_PACKED_RATIO ? 'met' : 'MISSED',
          ];
        }),
        [false, true, true, true, true, true, true, true, true, false],
      ),
    );
  }

  for (const { side, rig, r } of everyRig) {
    const bad = rig.sound();
    if (bad !== null) {
      console.log(`after timing, ${SIDE_LABEL[side]} ${key(r)} is not sound: ${bad}`);
      process.exitCode = 1;
    }
  }
  if ([...allocs, ...floorAllocs].some((a) => !a.valid)) console.log('note: some heap figures are invalid (a GC ran in a measured loop, or gc() is not exposed)');
  console.log(`total ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

await main();
