/**
 * Packed virtqueue, driver side (spec 2.8): buffer ids from a free stack, lists written into
 * consecutive ring slots (the first descriptor's flags written last, at publish), indirect
 * tables from a pool, the kick decision from the device event suppression structure, and
 * collection of used descriptors with checks on what the device wrote.
 *
 * Same builder API as the split driver queue: begin / addReadable / addWritable / commit,
 * publish, getUsed. What both ring formats share is in DriverQueueBase.
 */
import { hashGuest, type GuestMemory, type MemoryRegion } from '../../memory/guest-memory.js';
import type { Monitor } from '../../monitor/monitor.js';
import type { DriverQueue, ViolationSink } from '../queue.js';
import { DriverQueueBase, indirectEntries, indirectPoolRegion, type DriverRingOptions } from '../driver-queue-base.js';
import { ChainBuilder } from '../chain.js';
import {
  EVENT_FLAGS,
  EVENT_OFF_WRAP,
  EVENT_SIZE,
  PDESC_F_INDIRECT,
  PDESC_F_NEXT,
  PDESC_F_WRITE,
  PDESC_SIZE,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  availFlags,
  isUsed,
  packedNeedEvent,
  packedRingSize,
} from '../../spec/packed-layout.js';
import type { RingAddresses } from '../../spec/ring.js';

const TWO_32 = 4294967296;


/**
 * With IN_ORDER one used descriptor may stand for a batch (2.8.9); auditReadable keeps a small
 * record per buffer besides the pass over the data each way.
 */
export type PackedDriverQueueOptions = DriverRingOptions;

/** Guest bytes a packed queue needs: ring, two event structures, the indirect pool. */
export function packedQueueFootprint(size: number, indirectMax = 0): number {
  return packedRingSize(size) + 16 + 2 * EVENT_SIZE + 16 + size * indirectMax * PDESC_SIZE;
}

/** Lays out a packed ring (and its indirect pool) from `base`: the three parts, the pool and the end of it all. */
export function layoutPackedQueue(base: number, size: number, indirectMax = 0): RingAddresses & { pool: number; end: number } {
  const align = (x: number, a: number) => Math.ceil(x / a) * a;
  const desc = align(base, 16);
  const avail = align(desc + packedRingSize(size), 4);
  const used = avail + EVENT_SIZE;
  const pool = align(used + EVENT_SIZE, 16);
  return { desc, avail, used, pool, end: pool + size * indirectMax * PDESC_SIZE };
}


export class PackedDriverQueue<T extends {} | null = {} | null> extends DriverQueueBase<T> implements DriverQueue<T> {
  // Fields in this order on purpose: see the layout note on DriverQueueBase.
  readonly format = 'packed' as const;

  private nextAvail = 0;
  private availWrap = true;
  private availLinear = 0;
  private kickedLinear = 0;
  private lastUsed = 0;
  private usedWrap = true;

  private freeTop: number;
  private readonly freeIds: Uint16Array;
  protected readonly tokens: (T | undefined)[];
  protected readonly inFlight: Uint8Array;
  /** Set at publish(): the device can have seen the buffer (its first flags are written). */
  protected readonly exposed: Uint8Array;
  private readonly pendingId: Uint16Array;
  private readonly slotsOf: Uint16Array;
  protected readonly writableLen: Float64Array;
  // What the driver last wrote into, or read from, each slot (packed.desc-table.device.4).
  private readonly shadow: Uint32Array;
  // Lists committed, their first descriptor's flags not yet written (publish writes them).
  private pendingCount = 0;
  private readonly pendingSlot: Uint16Array;
  private readonly pendingFlags: Uint16Array;

  // IN_ORDER: ids in the order made available, and the batch being handed out.
  private readonly order: Uint16Array;
  private orderHead = 0;
  private orderTail = 0;
  protected batchLeft = 0;
  protected batchLastLen = 0;
  /** Ids returned as skipped members of a batch, until the driver reuses them. */
  private readonly skipped: Uint8Array;

  /** With auditReadable: per buffer id, its readable pieces and their hash. */
  private readonly readable = new Map<number, { addrs: number[]; lens: number[]; hash: number }>();

  protected readonly seg: ChainBuilder;

  private readonly ring: MemoryRegion;
  private readonly ringOff: number;
  private readonly driverEvent: MemoryRegion;
  private readonly driverEventOff: number;
  private readonly deviceEvent: MemoryRegion;
  private readonly deviceEventOff: number;
  protected readonly indirectMax: number;
  protected readonly pool: number;
  protected readonly poolRegion: MemoryRegion | null;

  /** A packed ring of `size` slots at `addrs` (zeroed here), with the negotiated `options`; verdicts go to `monitor` and `sink`. */
  constructor(
    mem: GuestMemory,
    index: number,
    size: number,
    addrs: RingAddresses,
    options: PackedDriverQueueOptions,
    monitor: Monitor,
    sink: ViolationSink,
  ) {
    super(mem, index, size, addrs, options, monitor, sink);
    this.freeIds = new Uint16Array(size);
    for (let i = 0; i < size; i++) this.freeIds[i] = size - 1 - i;
    this.freeTop = size;
    this.tokens = new Array<T | undefined>(size).fill(undefined);
    this.inFlight = new Uint8Array(size);
    this.exposed = new Uint8Array(size);
    this.pendingId = new Uint16Array(size);
    this.slotsOf = new Uint16Array(size);
    this.writableLen = new Float64Array(size);
    this.shadow = new Uint32Array(size * 4);
    this.pendingSlot = new Uint16Array(size);
    this.pendingFlags = new Uint16Array(size);
    this.order = new Uint16Array(size);
    this.skipped = new Uint8Array(size);
    this.indirectMax = indirectEntries(options, size);
    this.pool = options.indirectPool ?? 0;
    this.seg = new ChainBuilder(Math.max(size, this.indirectMax));
    this.ring = mem.region(addrs.desc, packedRingSize(size));
    this.ringOff = addrs.desc - this.ring.guestAddr;
    this.driverEvent = mem.region(addrs.avail, EVENT_SIZE);
    this.driverEventOff = addrs.avail - this.driverEvent.guestAddr;
    this.deviceEvent = mem.region(addrs.used, EVENT_SIZE);
    this.deviceEventOff = addrs.used - this.deviceEvent.guestAddr;
    this.poolRegion = indirectPoolRegion(mem, options, size);
    this.ring.bytes.fill(0, this.ringOff, this.ringOff + packedRingSize(size));
    this.driverEvent.bytes.fill(0, this.driverEventOff, this.driverEventOff + EVENT_SIZE);
    this.deviceEvent.bytes.fill(0, this.deviceEventOff, this.deviceEventOff + EVENT_SIZE);
  }

  /**
   * Writes the list into the ring (all but the first descriptor's flags, which publish()
   * writes: packed.scatter-gather-support.driver.6). Returns the buffer id, or -1 when the
   * ring has no room for the whole list (packed.scatter-gather-support.driver.5).
   */
  commit(token: T, options?: { indirect?: boolean }): number {
    const seg = this.seg;
    const n = seg.count;
    if (n === 0) throw new RangeError('empty chain');
    if (seg.readableAfterWritable) throw new RangeError('device-readable buffers must come before device-writable ones (packed.scatter-gather-support.driver.3)');
    const useIndirect = (options?.indirect ?? true) && this.indirectMax > 0 && n > 1 && n <= this.indirectMax;
    const slots = useIndirect ? 1 : n;
    if (this.numFree < slots || this.freeTop === 0 || this.broken) return -1;
    const id = this.freeIds[--this.freeTop];
    const writable = seg.writableBytes();
    const first = this.nextAvail;
    const firstWrap = this.availWrap;
    if (useIndirect) {
      const table = this.pool + id * this.indirectMax * PDESC_SIZE;
      const r = this.poolRegion!;
      const base = table - r.guestAddr;
      for (let i = 0; i < n; i++) {
        const o = base + i * PDESC_SIZE;
        r.view.setUint32(o, seg.addrs[i] >>> 0, true);
        r.view.setUint32(o + 4, Math.floor(seg.addrs[i] / TWO_32), true);
        r.view.setUint32(o + 8, seg.lens[i], true);
        r.view.setUint16(o + 12, 0, true);
        r.view.setUint16(o + 14, seg.writable[i] ? PDESC_F_WRITE : 0, true);
      }
      if (this.mem.onWrite !== null) this.mem.onWrite(table, n * PDESC_SIZE);
      this.putSlot(first, table, n * PDESC_SIZE, id, PDESC_F_INDIRECT | availFlags(firstWrap), true);
      this.advance();
    } else {
      for (let i = 0; i < n; i++) {
        const flags = (seg.writable[i] ? PDESC_F_WRITE : 0) | (i < n - 1 ? PDESC_F_NEXT : 0) | availFlags(this.availWrap);
        this.putSlot(this.nextAvail, seg.addrs[i], seg.lens[i], id, flags, i === 0);
        this.advance();
      }
    }
    this.numFree -= slots;
    this.slotsOf[id] = slots;
    this.skipped[id] = 0;
    if (this.options.auditReadable) {
      const rec = { addrs: [] as number[], lens: [] as number[], hash: 2166136261 };
      for (let i = 0; i < n; i++) {
        if (seg.writable[i]) continue;
        rec.addrs.push(seg.addrs[i]);
        rec.lens.push(seg.lens[i]);
        rec.hash = hashGuest(this.mem, seg.addrs[i], seg.lens[i], rec.hash);
      }
      this.readable.set(id, rec);
    }
    if (this.options.inOrder) this.order[this.orderTail++ % this.size] = id;
    this.tokens[id] = token;
    this.writableLen[id] = writable;
    this.inFlight[id] = 1;
    this.inFlightCount++;
    this.availLinear += slots;
    seg.count = 0;
    return id;
  }

  private advance(): void {
    if (++this.nextAvail === this.size) {
      this.nextAvail = 0;
      this.availWrap = !this.availWrap;
    }
  }

  /** Writes one ring slot; the first of a list gets its flags at publish. */
  private putSlot(slot: number, addr: number, len: number, id: number, flags: number, deferFlags: boolean): void {
    this.checkSlot(slot);
    const view = this.ring.view;
    const o = this.ringOff + slot * PDESC_SIZE;
    view.setUint32(o, addr >>> 0, true);
    view.setUint32(o + 4, Math.floor(addr / TWO_32), true);
    view.setUint32(o + 8, len, true);
    view.setUint16(o + 12, id, true);
    if (deferFlags) {
      this.pendingSlot[this.pendingCount] = slot;
      this.pendingFlags[this.pendingCount] = flags;
      this.pendingId[this.pendingCount] = id;
      this.pendingCount++;
    } else view.setUint16(o + 14, flags, true);
    const s = slot * 4;
    this.shadow[s] = addr >>> 0;
    this.shadow[s + 1] = Math.floor(addr / TWO_32);
    this.shadow[s + 2] = len;
    this.shadow[s + 3] = (id | (flags << 16)) >>> 0;
    if (this.mem.onWrite !== null) this.mem.onWrite(this.addrs.desc + slot * PDESC_SIZE, PDESC_SIZE);
  }

  /** packed.desc-table.device.4: a slot is as the driver left it (or as the device marked it used). */
  private checkSlot(slot: number): void {
    if (this.broken) return;
    const view = this.ring.view;
    const o = this.ringOff + slot * PDESC_SIZE;
    const s = slot * 4;
    const now = (view.getUint16(o + 12, true) | (view.getUint16(o + 14, true) << 16)) >>> 0;
    if (view.getUint32(o, true) !== this.shadow[s] || view.getUint32(o + 4, true) !== this.shadow[s + 1] || view.getUint32(o + 8, true) !== this.shadow[s + 2] || now !== this.shadow[s + 3]) {
      this.report('packed.desc-table.device.4', `slot ${slot} changed after the device marked it used (or was written where no used descriptor belongs)`, { slot }, false);
    }
  }

  publish(): boolean {
    const r = this.ring;
    for (let i = 0; i < this.pendingCount; i++) {
      const off = this.ringOff + this.pendingSlot[i] * PDESC_SIZE + 14;
      if (r.u16 !== null && (off & 1) === 0) Atomics.store(r.u16, off >> 1, this.pendingFlags[i]);
      else r.view.setUint16(off, this.pendingFlags[i], true);
      this.exposed[this.pendingId[i]] = 1;
    }
    this.pendingCount = 0;
    return this.needsKick();
  }

  /** The kick decision for what was published since the last decision (the device event suppression structure, 2.8.10). */
  needsKick(): boolean {
    const old = this.kickedLinear;
    const next = this.availLinear;
    if (old === next) return false;
    this.kickedLinear = next;
    const ev = this.deviceEvent.view;
    const flags = ev.getUint16(this.deviceEventOff + EVENT_FLAGS, true) & 3;
    if (flags === RING_EVENT_FLAGS_DISABLE) return false;
    if (flags === RING_EVENT_FLAGS_DESC && this.options.eventIdx) {
      return packedNeedEvent(ev.getUint16(this.deviceEventOff + EVENT_OFF_WRAP, true), this.size, old, next);
    }
    return true;
  }

  private flagsAt(slot: number): number {
    const off = this.ringOff + slot * PDESC_SIZE + 14;
    return this.ring.u16 !== null && (off & 1) === 0 ? Atomics.load(this.ring.u16, off >> 1) : this.ring.view.getUint16(off, true);
  }

  /** VIRTIO_F_NOTIFICATION_DATA (2.9): next_off = next slot, next_wrap = its wrap counter. */
  notificationData(): number {
    return (((this.nextAvail | (this.availWrap ? 0x8000 : 0)) << 16) | this.index) >>> 0;
  }

  /** Whether the device marked the next slot used. */
  peekUsed(): boolean {
    if (this.batchLeft > 0) return true;
    return !this.broken && this.inFlightCount > 0 && isUsed(this.flagsAt(this.lastUsed), this.usedWrap);
  }

  /**
   * Buffers the device marked used and the driver has not collected (no checks, no side
   * effects): walks the used descriptors from the next one as getUsed() will take them (with
   * IN_ORDER one may stand for a batch) and stops at the first it would refuse.
   */
  usedPending(): number {
    if (this.broken) return 0;
    const size = this.size;
    let n = this.batchLeft;
    let slot = this.lastUsed;
    let wrap = this.usedWrap;
    let next = this.orderHead; // IN_ORDER: the next buffer in the order made available
    // What is left of a batch being handed out sits in the slots from lastUsed on.
    for (let i = 0; i < this.batchLeft; i++) {
      slot += this.slotsOf[this.order[next++ % size]];
      if (slot >= size) {
        slot -= size;
        wrap = !wrap;
      }
    }
    while (n < this.inFlightCount && isUsed(this.flagsAt(slot), wrap)) {
      const id = this.ring.view.getUint16(this.ringOff + slot * PDESC_SIZE + 12, true);
      if (!this.isOut(id)) break;
      let buffers = 1;
      let slots = this.slotsOf[id];
      if (this.options.inOrder) {
        // The used descriptor names the last buffer of a batch: those before it in order are in it.
        buffers = 0;
        slots = 0;
        let b = -1;
        while (b !== id && n + buffers < this.inFlightCount) {
          b = this.order[(next + buffers) % size];
          slots += this.slotsOf[b];
          buffers++;
        }
        if (b !== id) break;
        next += buffers;
      }
      n += buffers;
      slot += slots;
      if (slot >= size) {
        slot -= size;
        wrap = !wrap;
      }
    }
    return n;
  }

  getUsed(): T | undefined {
    if (this.batchLeft > 0) return this.nextOfBatch();
    if (this.broken || this.inFlightCount === 0) return undefined;
    const slot = this.lastUsed;
    const flags = this.flagsAt(slot); // read once: it decides, and it is what we record
    if (!isUsed(flags, this.usedWrap)) return undefined;
    const view = this.ring.view;
    const o = this.ringOff + slot * PDESC_SIZE;
    const id = view.getUint16(o + 12, true);
    const rawLen = view.getUint32(o + 8, true);
    // 2.8.4: without WRITE in the used descriptor nothing was written; len is reserved.
    const len = flags & PDESC_F_WRITE ? rawLen : 0;
    if (id >= this.size || this.inFlight[id] !== 1 || this.exposed[id] !== 1) {
      if (id < this.size && this.skipped[id] === 1) {
        this.report('reserved.bits.device.5', `with IN_ORDER the device marked buffer ${id} used after a later buffer's used descriptor already covered it`, { id, slot }, true);
      } else {
        this.report('packed.desc-table.device.3', `slot ${slot} marks buffer ${id} used, which the driver never made available (or it is not in flight)`, { id, slot }, true);
      }
      return undefined;
    }
    if (this.options.inOrder) {
      const front = this.order[this.orderHead % this.size];
      if (id !== front) {
        // A batch: `id` is its last buffer; those before it were used completely.
        let k = 1;
        while (k < this.inFlightCount && this.order[(this.orderHead + k) % this.size] !== id) k++;
        this.batchLeft = k + 1; // the buffers before `id`, and `id` itself
        this.batchLastLen = len;
        this.updateShadow(slot, rawLen, id, flags);
        return this.nextOfBatch();
      }
      this.orderHead++;
    }
    this.updateShadow(slot, rawLen, id, flags);
    return this.finish(id, len);
  }

  /** The device wrote this slot as a used descriptor: that is now the expected content. */
  private updateShadow(slot: number, len: number, id: number, flags: number): void {
    const s = slot * 4;
    // Element Address is unused in a used descriptor (2.8.5), so whatever is there now counts.
    const o = this.ringOff + slot * PDESC_SIZE;
    this.shadow[s] = this.ring.view.getUint32(o, true);
    this.shadow[s + 1] = this.ring.view.getUint32(o + 4, true);
    this.shadow[s + 2] = len;
    this.shadow[s + 3] = (id | (flags << 16)) >>> 0;
  }

  /** The next buffer of an IN_ORDER batch: the oldest one out. */
  private nextOfBatch(): T | undefined {
    const id = this.order[this.orderHead++ % this.size];
    this.batchLeft--;
    const last = this.batchLeft === 0;
    if (!last) this.skipped[id] = 1;
    return this.finish(id, last ? this.batchLastLen : this.writableLen[id]);
  }

  /** Hands buffer `id` back with `len` bytes and skips its slots. */
  private finish(id: number, len: number): T | undefined {
    const rec = this.options.auditReadable ? this.readable.get(id) : undefined;
    if (rec !== undefined) {
      this.readable.delete(id);
      let h = 2166136261;
      for (let i = 0; i < rec.addrs.length; i++) h = hashGuest(this.mem, rec.addrs[i], rec.lens[i], h);
      if (h !== rec.hash) this.report('packed.desc-table.device.1', `device wrote into a device-readable buffer of buffer ${id}`, { id }, false);
    }
    if (len > this.writableLen[id]) len = this.usedLen(id, len, 'struct.used-len.device.1');
    const slots = this.slotsOf[id];
    this.lastUsed += slots;
    if (this.lastUsed >= this.size) {
      this.lastUsed -= this.size;
      this.usedWrap = !this.usedWrap;
    }
    const token = this.tokens[id];
    this.release(id);
    this.lastId = id;
    this.lastLen = len;
    return token;
  }

  protected release(id: number): void {
    this.numFree += this.slotsOf[id];
    this.inFlight[id] = 0;
    this.exposed[id] = 0;
    this.inFlightCount--;
    this.tokens[id] = undefined;
    this.freeIds[this.freeTop++] = id;
  }

  /** Asks the device for used-buffer notifications again (RING_EVENT_FLAGS_DESC at the next used slot with EVENT_IDX); true when one is already waiting. */
  enableInterrupts(): boolean {
    const ev = this.driverEvent.view;
    if (this.options.eventIdx) {
      ev.setUint16(this.driverEventOff + EVENT_OFF_WRAP, this.lastUsed | (this.usedWrap ? 0x8000 : 0), true);
      this.writeDriverEventFlags(RING_EVENT_FLAGS_DESC);
    } else this.writeDriverEventFlags(RING_EVENT_FLAGS_ENABLE);
    return this.peekUsed();
  }

  /** Tells the device not to send used-buffer notifications (RING_EVENT_FLAGS_DISABLE). */
  disableInterrupts(): void {
    this.writeDriverEventFlags(RING_EVENT_FLAGS_DISABLE);
  }

  private writeDriverEventFlags(flags: number): void {
    const r = this.driverEvent;
    const off = this.driverEventOff + EVENT_FLAGS;
    if (r.u16 !== null && (off & 1) === 0) Atomics.store(r.u16, off >> 1, flags);
    else r.view.setUint16(off, flags, true);
    if (this.mem.onWrite !== null) this.mem.onWrite(this.addrs.avail, EVENT_SIZE);
  }

  /** drainAfterReset(): nothing committed waits for publish, no batch or order is left. */
  protected override forgetProgress(): void {
    this.pendingCount = 0;
    this.orderHead = this.orderTail = 0;
  }
}
