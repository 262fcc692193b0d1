/**
 * Split virtqueue, driver side (spec 2.7): a descriptor free list, direct and indirect
 * chains, the kick decision, and collection of used buffers with checks on what the device
 * wrote (a used id must be an exposed head; a used length must fit the writable part; the
 * descriptor table must be as the driver left it).
 *
 * Hot path: chains are built in preallocated arrays (begin / addReadable / addWritable /
 * commit) and indirect tables come from a pool in guest memory set up once. What both ring
 * formats share is in DriverQueueBase.
 */
import { hashGuest, type GuestMemory, type MemoryRegion } from '../../memory/guest-memory.js';
import type { Monitor } from '../../monitor/monitor.js';
import * as C from '../../spec/constants.js';
import type { DriverQueue, ViolationSink } from '../queue.js';
import { DriverQueueBase, indirectEntries, indirectPoolRegion, type DriverRingOptions } from '../driver-queue-base.js';
import { ChainBuilder } from '../chain.js';
import * as L from '../../spec/split-layout.js';
import type { RingAddresses } from '../../spec/ring.js';

// Module-local copies of the layout constants, as in split/device.ts: optimized code loads an
// imported binding from its module cell, with a TDZ (hole) check, at every use (seen in
// --print-opt-code of commit: DESC_SIZE and the flag bits, in each descriptor written); a local
// const is folded into the code.
const { VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } = C;
const { AVAIL_RING, DESC_SIZE, RING_FLAGS, RING_IDX, USED_ELEM_SIZE, USED_RING } = L;
const { availEventOffset, availRingSize, descTableSize, needEvent, usedEventOffset, usedRingSize } = L;
const TWO_32 = 4294967296;

/**
 * With IN_ORDER the descriptors are used in ring order (2.7.9); with auditReadable the indirect
 * tables are hashed too (split.desc-table.device.4).
 */
export interface SplitDriverQueueOptions extends DriverRingOptions {
  /** First avail/used index (default 0); tests start near 65535 to cross the wrap. */
  startIndex?: number;
}


/** Guest bytes a split queue of `size` needs for its rings and indirect pool, with alignment. */
export function splitQueueFootprint(size: number, indirectMax = 0): number {
  return descTableSize(size) + 16 + availRingSize(size) + 16 + usedRingSize(size) + 16 + size * indirectMax * DESC_SIZE;
}

/**
 * Lays out rings (and the indirect pool) from `base`, honouring split.alignment.driver.1;
 * `usedAlign` > 4 is the legacy layout (2.7.2): descriptors from a page boundary, the used ring
 * at that alignment.
 */
export function layoutSplitQueue(base: number, size: number, indirectMax = 0, usedAlign = 4): RingAddresses & { pool: number; end: number } {
  const align = (x: number, a: number) => Math.ceil(x / a) * a;
  const desc = align(base, usedAlign > 4 ? 4096 : 16);
  const avail = align(desc + descTableSize(size), 2);
  const used = align(avail + availRingSize(size), usedAlign);
  const pool = align(used + usedRingSize(size), 16);
  return { desc, avail, used, pool, end: pool + size * indirectMax * DESC_SIZE };
}

export class SplitDriverQueue<T extends {} | null = {} | null> extends DriverQueueBase<T> implements DriverQueue<T> {
  // Fields in this order on purpose: see the layout note on DriverQueueBase.
  readonly format = 'split' as const;
  readonly mask: number;
  declare readonly options: SplitDriverQueueOptions;

  private freeHead = 0;
  private readonly nextFree: Uint16Array;
  private readonly inOrder: boolean;
  /** Head made available at each avail ring position (IN_ORDER bookkeeping, publish()). */
  private readonly availHeadAt: Uint16Array;
  protected batchLeft = 0;
  protected batchLastLen = 0;
  protected readonly tokens: (T | undefined)[];
  protected readonly inFlight: Uint8Array;
  protected readonly exposed: Uint8Array;
  private publishedIdx = 0;
  protected readonly writableLen: Float64Array;
  private readonly tableCount: Uint16Array;
  private readonly usesIndirect: Uint8Array;
  // Shadow of the table descriptors as written, for split.desc-table.device.4.
  private readonly shadow: Uint32Array;
  // With auditReadable: hashes of the readable bytes and of the indirect table, per head.
  private readonly readableHash: Uint32Array | null;
  private readonly tableHash: Uint32Array | null;

  private availIdx = 0;
  private kickedAt = 0;
  private lastUsed = 0;

  protected readonly seg: ChainBuilder;

  private readonly desc: MemoryRegion;
  private readonly descOff: number;
  private readonly avail: MemoryRegion;
  private readonly availOff: number;
  private readonly used: MemoryRegion;
  private readonly usedOff: number;
  protected readonly indirectMax: number;
  protected readonly pool: number;
  protected readonly poolRegion: MemoryRegion | null;
  /** used.idx when the last used-buffer notification was audited (synchronous transports). */
  private usedIdxAtLastNotification = 0;
  /** used.idx as last validated. */
  private seenUsed = 0;

  /** A split ring of `size` (a power of two) at `addrs` (zeroed here), with the negotiated `options`; verdicts go to `monitor` and `sink`. */
  constructor(
    mem: GuestMemory,
    index: number,
    size: number,
    addrs: RingAddresses,
    options: SplitDriverQueueOptions,
    monitor: Monitor,
    sink: ViolationSink,
  ) {
    super(mem, index, size, addrs, options, monitor, sink);
    this.mask = size - 1;
    this.nextFree = new Uint16Array(size);
    this.inOrder = options.inOrder === true;
    // With IN_ORDER the free descriptors are one cyclic run: x is followed by (x + 1) % size
    // (split.desc-table.driver.2), and buffers come back in the order they went out.
    for (let i = 0; i < size; i++) this.nextFree[i] = this.inOrder ? (i + 1) % size : i + 1;
    this.availHeadAt = new Uint16Array(size);
    this.tokens = new Array<T | undefined>(size).fill(undefined);
    this.inFlight = new Uint8Array(size);
    this.exposed = new Uint8Array(size);
    this.writableLen = new Float64Array(size);
    this.tableCount = new Uint16Array(size);
    this.usesIndirect = new Uint8Array(size);
    this.shadow = new Uint32Array(size * 4);
    this.readableHash = options.auditReadable ? new Uint32Array(size) : null;
    this.tableHash = options.auditReadable ? new Uint32Array(size) : null;
    this.indirectMax = indirectEntries(options, size);
    this.pool = options.indirectPool ?? 0;
    this.seg = new ChainBuilder(Math.max(size, this.indirectMax));
    this.desc = mem.region(addrs.desc, descTableSize(size));
    this.descOff = addrs.desc - this.desc.guestAddr;
    this.avail = mem.region(addrs.avail, availRingSize(size));
    this.availOff = addrs.avail - this.avail.guestAddr;
    this.used = mem.region(addrs.used, usedRingSize(size));
    this.usedOff = addrs.used - this.used.guestAddr;
    this.poolRegion = indirectPoolRegion(mem, options, size);
    this.availIdx = this.kickedAt = this.lastUsed = this.seenUsed = this.usedIdxAtLastNotification = this.publishedIdx = (options.startIndex ?? 0) & 0xffff;
    // split.avail-buffer-notif-suppr.driver.1: the used ring (flags included) starts zeroed.
    this.desc.bytes.fill(0, this.descOff, this.descOff + descTableSize(size));
    this.avail.bytes.fill(0, this.availOff, this.availOff + availRingSize(size));
    this.used.bytes.fill(0, this.usedOff, this.usedOff + usedRingSize(size));
    if (this.availIdx !== 0) {
      // A queue resumed at an index (tests, vhost-user ring base): both indices start there.
      this.avail.view.setUint16(this.availOff + RING_IDX, this.availIdx, true);
      this.used.view.setUint16(this.usedOff + RING_IDX, this.availIdx, true);
      this.avail.view.setUint16(this.availOff + usedEventOffset(size), this.availIdx, true);
    }
  }

  /**
   * Writes the chain into the descriptor table (or an indirect table) and the avail ring.
   * Returns the head, or -1 when the queue has no room (collect used buffers first).
   * The buffers are exposed to the device only at the next `publish()`.
   */
  commit(token: T, options?: { indirect?: boolean }): number {
    const seg = this.seg;
    const n = seg.count;
    if (n === 0) throw new RangeError('empty chain');
    if (seg.readableAfterWritable === true) throw new RangeError('device-readable buffers must come before device-writable ones (split.message-framing.driver.1)');
    // No default object for `options`: an object literal per call is the hot path's only allocation.
    // `=== true` / `!== false` tests, not a truthiness test: optimized code makes a generic ToBoolean
    // (false, empty string, undetectable, heap number, bigint) of a field it cannot prove boolean.
    const useIndirect = options?.indirect !== false && this.indirectMax > 0 && n > 1 && n <= this.indirectMax;
    const need = useIndirect ? 1 : n;
    if (this.numFree < need || this.broken === true) return -1;
    const head = this.freeHead;
    const writable = seg.writableBytes();
    if (useIndirect) {
      const table = this.pool + head * this.indirectMax * DESC_SIZE;
      const r = this.poolRegion!;
      const base = table - r.guestAddr;
      for (let i = 0; i < n; i++) {
        const last = i === n - 1;
        this.writeDesc(r.view, base + i * DESC_SIZE, seg.addrs[i], seg.lens[i], (seg.writable[i] ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT), last ? 0 : i + 1);
      }
      if (this.mem.onWrite !== null) this.mem.onWrite(table, n * DESC_SIZE);
      this.freeHead = this.nextFree[head];
      this.putTableDesc(head, table, n * DESC_SIZE, VIRTQ_DESC_F_INDIRECT, 0);
      this.usesIndirect[head] = 1;
    } else {
      let idx = head;
      for (let i = 0; i < n; i++) {
        const last = i === n - 1;
        const next = this.nextFree[idx];
        this.putTableDesc(idx, seg.addrs[i], seg.lens[i], (seg.writable[i] ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT), last ? 0 : next);
        if (!last) idx = next;
        else this.freeHead = next;
      }
      this.usesIndirect[head] = 0;
    }
    this.numFree -= need;
    this.tableCount[head] = need;
    if (this.readableHash !== null) {
      let h = 2166136261;
      for (let i = 0; i < n; i++) if (!seg.writable[i]) h = hashGuest(this.mem, seg.addrs[i], seg.lens[i], h);
      this.readableHash[head] = h;
      if (useIndirect) this.tableHash![head] = hashGuest(this.mem, this.pool + head * this.indirectMax * DESC_SIZE, n * DESC_SIZE, 2166136261);
    }
    const slot = this.availOff + AVAIL_RING + 2 * (this.availIdx & this.mask);
    this.avail.view.setUint16(slot, head, true);
    this.availHeadAt[this.availIdx & this.mask] = head;
    if (this.mem.onWrite !== null) this.mem.onWrite(this.addrs.avail + AVAIL_RING + 2 * (this.availIdx & this.mask), 2);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.tokens[head] = token;
    this.writableLen[head] = writable;
    this.inFlight[head] = 1;
    this.inFlightCount++;
    seg.count = 0;
    return head;
  }

  private writeDesc(view: DataView, o: number, addr: number, len: number, flags: number, next: number): void {
    view.setUint32(o, addr >>> 0, true);
    view.setUint32(o + 4, Math.floor(addr / TWO_32), true);
    view.setUint32(o + 8, len, true);
    view.setUint16(o + 12, flags, true);
    view.setUint16(o + 14, next, true);
  }

  private putTableDesc(idx: number, addr: number, len: number, flags: number, next: number): void {
    this.writeDesc(this.desc.view, this.descOff + idx * DESC_SIZE, addr, len, flags, next);
    const s = idx * 4;
    this.shadow[s] = addr >>> 0;
    this.shadow[s + 1] = Math.floor(addr / TWO_32);
    this.shadow[s + 2] = len;
    this.shadow[s + 3] = flags | (next << 16);
    if (this.mem.onWrite !== null) this.mem.onWrite(this.addrs.desc + idx * DESC_SIZE, DESC_SIZE);
  }

  /**
   * Makes the committed chains visible (one atomic store of avail.idx, after the ring
   * entries: split.updating-idx.driver.1) and returns whether the device wants a kick.
   */
  publish(): boolean {
    for (let p = this.publishedIdx; p !== this.availIdx; p = (p + 1) & 0xffff) this.exposed[this.availHeadAt[p & this.mask]] = 1;
    this.publishedIdx = this.availIdx;
    const off = this.availOff + RING_IDX;
    if (this.avail.u16 !== null && (off & 1) === 0) Atomics.store(this.avail.u16, off >> 1, this.availIdx);
    else this.avail.view.setUint16(off, this.availIdx, true);
    if (this.mem.onWrite !== null) this.mem.onWrite(this.addrs.avail + RING_IDX, 2);
    return this.needsKick();
  }

  /** The kick decision for what was published since the last decision (2.7.10). */
  needsKick(): boolean {
    const old = this.kickedAt;
    const next = this.availIdx;
    if (old === next) return false;
    this.kickedAt = next;
    const flags = this.usedFlags();
    if (this.options.eventIdx) {
      if (flags !== 0) this.report('split.avail-buffer-notif-suppr.device.3', `used.flags is ${flags} with VIRTIO_F_EVENT_IDX negotiated (must be 0)`, { flags }, false);
      // split.avail-buffer-notif-suppr.driver.5: the low bit of flags is ignored.
      const event = this.used.view.getUint16(this.usedOff + availEventOffset(this.size), true);
      return needEvent(event, next, old);
    }
    if (flags > 1) this.report('split.avail-buffer-notif-suppr.device.1', `used.flags is ${flags} (must be 0 or 1)`, { flags }, false);
    // split.avail-buffer-notif-suppr.driver.2: avail_event is ignored without EVENT_IDX.
    return (flags & 1) === 0;
  }

  private usedFlags(): number {
    const off = this.usedOff + RING_FLAGS;
    return this.used.u16 !== null && (off & 1) === 0 ? Atomics.load(this.used.u16, off >> 1) : this.used.view.getUint16(off, true);
  }

  /** VIRTIO_F_NOTIFICATION_DATA (2.9): next_off = avail idx bits 0-14, next_wrap = bit 15. */
  notificationData(): number {
    return ((this.availIdx & 0xffff) << 16 | this.index) >>> 0;
  }

  /** Whether the device published a used element the driver has not collected (no checks). */
  peekUsed(): boolean {
    return this.usedIdx() !== this.lastUsed;
  }

  /** used.idx as the device last published it (no checks). */
  deviceUsedIdx(): number {
    return this.usedIdx();
  }

  /** used_event as the driver last wrote it. */
  usedEventValue(): number {
    return this.avail.view.getUint16(this.availOff + usedEventOffset(this.size), true);
  }

  private usedIdx(): number {
    const off = this.usedOff + RING_IDX;
    return this.used.u16 !== null && (off & 1) === 0 ? Atomics.load(this.used.u16, off >> 1) : this.used.view.getUint16(off, true);
  }

  /**
   * Buffers the device returned (used elements published) and the driver has not collected.
   * Checks used.idx: a move beyond the buffers in flight is a fatal verdict (0 then).
   */
  usedPending(): number {
    if (this.broken) return 0;
    const idx = this.usedIdx();
    if (idx !== this.seenUsed) {
      // Seen-but-uncollected entries plus the new ones must be buffers in flight; a used
      // index going back shows up as a move of almost 2^16.
      const seen = (this.seenUsed - this.lastUsed) & 0xffff;
      const moved = (idx - this.seenUsed) & 0xffff;
      if (seen + moved > this.inFlightCount) {
        this.report(
          'struct.used-idx.device.1',
          moved > 0x8000
            ? `used index went back from ${this.seenUsed} to ${idx}`
            : `used index moved from ${this.seenUsed} to ${idx} with only ${this.inFlightCount} buffers in flight`,
          { seenUsed: this.seenUsed, idx },
          true,
        );
        return 0;
      }
      this.seenUsed = idx;
    }
    return (idx - this.lastUsed) & 0xffff;
  }

  /**
   * Returns the token of the next used buffer (its length in `lastLen`), or undefined when
   * none is pending or the device broke a rule (then a verdict was made).
   */
  getUsed(): T | undefined {
    if (this.inOrder) return this.getUsedInOrder();
    if (this.usedPending() === 0) return undefined;
    const o = this.usedOff + USED_RING + USED_ELEM_SIZE * (this.lastUsed & this.mask);
    const id = this.used.view.getUint32(o, true);
    let len = this.used.view.getUint32(o + 4, true);
    if (id >= this.size || this.inFlight[id] !== 1 || this.exposed[id] !== 1) {
      this.report('struct.used-id.device.1', `used element ${this.lastUsed} names descriptor ${id}, which is not an exposed head`, { id, usedIdx: this.lastUsed }, true);
      return undefined;
    }
    this.lastUsed = (this.lastUsed + 1) & 0xffff;
    if (len > this.writableLen[id]) len = this.usedLen(id, len, 'split.used-ring.device.2');
    this.checkTable(id);
    if (this.readableHash !== null) this.auditReadableBuffers(id);
    const token = this.tokens[id];
    this.release(id);
    this.lastId = id;
    this.lastLen = len;
    return token;
  }

  /**
   * IN_ORDER (2.7.9): one used element may stand for a batch: its id names the last buffer,
   * the buffers before it were used completely, and used.idx moved by the batch size.
   */
  private getUsedInOrder(): T | undefined {
    const head = this.availHeadAt[this.lastUsed & this.mask];
    let len: number;
    if (this.batchLeft > 0) {
      this.batchLeft--;
      len = this.batchLeft === 0 ? this.batchLastLen : this.writableLen[head];
    } else {
      const pending = this.usedPending();
      if (pending === 0) return undefined;
      const o = this.usedOff + USED_RING + USED_ELEM_SIZE * (this.lastUsed & this.mask);
      const id = this.used.view.getUint32(o, true);
      const elemLen = this.used.view.getUint32(o + 4, true);
      if (id >= this.size || this.inFlight[id] !== 1 || this.exposed[id] !== 1) {
        this.report('struct.used-id.device.1', `used element ${this.lastUsed} names descriptor ${id}, which is not an exposed head`, { id, usedIdx: this.lastUsed }, true);
        return undefined;
      }
      if (id === head) len = elemLen;
      else {
        let k = 1;
        while (k < this.inFlightCount && this.availHeadAt[(this.lastUsed + k) & this.mask] !== id) k++;
        if (k >= this.inFlightCount || k + 1 > pending) {
          this.report(
            'reserved.bits.device.5',
            `with IN_ORDER the device used buffer ${id} before buffer ${head}, made available earlier (used.idx moved by ${pending}, not by the ${k + 1} a batch ending at ${id} needs)`,
            { id, expected: head },
            true,
          );
          return undefined;
        }
        this.batchLeft = k;
        this.batchLastLen = elemLen;
        len = this.writableLen[head]; // skipped buffers were used completely
      }
    }
    this.lastUsed = (this.lastUsed + 1) & 0xffff;
    if (len > this.writableLen[head]) len = this.usedLen(head, len, 'split.used-ring.device.2');
    this.checkTable(head);
    if (this.readableHash !== null) this.auditReadableBuffers(head);
    const token = this.tokens[head];
    this.release(head);
    this.lastId = head;
    this.lastLen = len;
    return token;
  }

  /** split.desc-table.device.4: the device never writes the descriptor table. */
  private checkTable(head: number): void {
    const view = this.desc.view;
    let idx = head;
    for (let n = this.tableCount[head]; n > 0; n--) {
      const o = this.descOff + idx * DESC_SIZE;
      const s = idx * 4;
      const flagsNext = view.getUint16(o + 12, true) | (view.getUint16(o + 14, true) << 16);
      if (
        view.getUint32(o, true) !== this.shadow[s] ||
        view.getUint32(o + 4, true) !== this.shadow[s + 1] ||
        view.getUint32(o + 8, true) !== this.shadow[s + 2] ||
        flagsNext >>> 0 !== this.shadow[s + 3]
      ) {
        this.report('split.desc-table.device.4', `descriptor ${idx} of chain ${head} was changed while the device held it`, { head, desc: idx }, false);
        // Restore the driver's copy so the free list stays sound.
        this.writeDesc(view, o, this.shadow[s] + this.shadow[s + 1] * TWO_32, this.shadow[s + 2], this.shadow[s + 3] & 0xffff, this.shadow[s + 3] >>> 16);
      }
      idx = this.shadow[s + 3] >>> 16;
    }
  }

  /** split.desc-table.device.1 / .4 with auditReadable: nothing the device may only read changed. */
  private auditReadableBuffers(head: number): void {
    const mem = this.mem;
    let h = 2166136261;
    if (this.usesIndirect[head]) {
      const table = this.pool + head * this.indirectMax * DESC_SIZE;
      const len = this.shadow[head * 4 + 2];
      if (hashGuest(mem, table, len, 2166136261) !== this.tableHash![head]) {
        this.report('split.desc-table.device.4', `indirect table of chain ${head} was changed while the device held it`, { head }, false);
        return;
      }
      for (let o = 0; o < len; o += DESC_SIZE) {
        const flags = mem.readU16(table + o + 12);
        if (!(flags & VIRTQ_DESC_F_WRITE)) h = hashGuest(mem, mem.readU32(table + o) + mem.readU32(table + o + 4) * TWO_32, mem.readU32(table + o + 8), h);
      }
    } else {
      let idx = head;
      for (let n = this.tableCount[head]; n > 0; n--) {
        const s = idx * 4;
        if (!((this.shadow[s + 3] & 0xffff) & VIRTQ_DESC_F_WRITE)) h = hashGuest(mem, this.shadow[s] + this.shadow[s + 1] * TWO_32, this.shadow[s + 2], h);
        idx = this.shadow[s + 3] >>> 16;
      }
    }
    if (h !== this.readableHash![head]) {
      this.report('split.desc-table.device.1', `device wrote into a device-readable buffer of chain ${head}`, { head }, false);
    }
  }

  protected release(head: number): void {
    const n = this.tableCount[head];
    // With IN_ORDER the free run stays cyclic as it is: these are the oldest descriptors out
    // (buffers return in order). Otherwise the chain goes back on the free list.
    if (!this.inOrder) {
      let last = head;
      for (let i = 1; i < n; i++) last = this.shadow[last * 4 + 3] >>> 16;
      this.nextFree[last] = this.freeHead;
      this.freeHead = head;
    }
    this.numFree += n;
    this.inFlight[head] = 0;
    this.exposed[head] = 0;
    this.inFlightCount--;
    this.tokens[head] = undefined;
  }

  /** Asks the device for used-buffer notifications again; true when used buffers are already pending. */
  enableInterrupts(): boolean {
    if (this.options.eventIdx) {
      const o = this.availOff + usedEventOffset(this.size);
      // A seq-cst store: a full barrier between it and the used.idx load below. With a plain
      // store the CPU may let the load pass it (x86 store buffer): the driver then sees no new
      // used entry while the device, publishing at that moment, still reads the old used_event
      // and does not notify: a lost wakeup (seen with a back-end in another process).
      if (this.avail.u16 !== null && (o & 1) === 0) Atomics.store(this.avail.u16, o >> 1, this.lastUsed);
      else this.avail.view.setUint16(o, this.lastUsed, true);
      if (this.mem.onWrite !== null) this.mem.onWrite(this.addrs.avail + usedEventOffset(this.size), 2);
    } else this.writeAvailFlags(0);
    return this.usedPending() > 0;
  }

  /** Tells the device not to send used-buffer notifications (without EVENT_IDX). */
  disableInterrupts(): void {
    if (!this.options.eventIdx) this.writeAvailFlags(VIRTQ_AVAIL_F_NO_INTERRUPT);
  }

  /** Whether the driver asked for a notification for the used entry the device writes next. */
  wantsInterrupt(usedIdxBefore: number, usedIdxAfter: number): boolean {
    if (this.options.eventIdx) {
      const event = this.avail.view.getUint16(this.availOff + usedEventOffset(this.size), true);
      return needEvent(event, usedIdxAfter, usedIdxBefore);
    }
    return (this.avail.view.getUint16(this.availOff + RING_FLAGS, true) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
  }

  private writeAvailFlags(flags: number): void {
    const off = this.availOff + RING_FLAGS;
    if (this.avail.u16 !== null && (off & 1) === 0) Atomics.store(this.avail.u16, off >> 1, flags);
    else this.avail.view.setUint16(off, flags, true);
    if (this.mem.onWrite !== null) this.mem.onWrite(this.addrs.avail + RING_FLAGS, 2);
  }

  /** Current avail.idx as the driver keeps it (not yet published entries included). */
  get nextAvailIdx(): number {
    return this.availIdx;
  }

  /** used.idx up to which the driver has collected. */
  get collectedIdx(): number {
    return this.lastUsed;
  }

  /**
   * split.used-buffer-notif-suppr.device.2 / .6: a device SHOULD NOT notify when the driver
   * suppressed it. Judged on synchronous transports only, where the notification arrives right
   * after the used index moved.
   */
  override auditUsedNotification(): void {
    const now = this.usedIdx();
    const since = this.usedIdxAtLastNotification;
    this.usedIdxAtLastNotification = now;
    if (now === since || this.wantsInterrupt(since, now)) return;
    if (this.options.eventIdx) {
      this.report('split.used-buffer-notif-suppr.device.6', 'device notified although used_event was not reached', { usedIdx: now }, false);
    } else {
      this.report('split.used-buffer-notif-suppr.device.2', 'device notified although the driver set VIRTQ_AVAIL_F_NO_INTERRUPT', {}, false);
    }
  }

  override unannouncedUsed(): boolean {
    const now = this.usedIdx();
    return now !== this.lastUsed && this.wantsInterrupt(this.lastUsed, now);
  }

  override usedMark(): number {
    return this.usedIdx();
  }

  /**
   * split.used-buffer-notif-suppr.device.3 / .5: on a synchronous transport the device has done
   * its work when notify returns; a used index that crossed the driver's threshold since `mark`
   * with no notification is a missed one.
   */
  override auditMissedNotification(mark: number): void {
    const after = this.usedIdx();
    if (after === mark || !this.wantsInterrupt(mark, after)) return;
    if (this.options.eventIdx) {
      this.report('split.used-buffer-notif-suppr.device.5', `device wrote used entry ${this.usedEventValue()}, the one used_event named, without notifying`, {}, false);
      // split.used-buffer-notif-suppr.device.4: with EVENT_IDX the low bit of avail.flags means
      // nothing; a device that went silent while it was set acted on it.
      if ((this.avail.view.getUint16(this.availOff + RING_FLAGS, true) & VIRTQ_AVAIL_F_NO_INTERRUPT) !== 0) {
        this.report('split.used-buffer-notif-suppr.device.4', 'device honoured VIRTQ_AVAIL_F_NO_INTERRUPT although EVENT_IDX was negotiated (it must disregard the bit)', {}, false);
      }
    } else {
      this.report('split.used-buffer-notif-suppr.device.3', 'device used buffers with avail.flags 0 and sent no notification', {}, false);
      // split.used-buffer-notif-suppr.device.1: without EVENT_IDX used_event means nothing; a
      // device whose silence is exactly what used_event would have asked for acted on it.
      if (!needEvent(this.usedEventValue(), after, mark)) {
        this.report('split.used-buffer-notif-suppr.device.1', `device held back the notification as used_event (${this.usedEventValue()}) would, although EVENT_IDX was not negotiated`, {}, false);
      }
    }
  }
}
