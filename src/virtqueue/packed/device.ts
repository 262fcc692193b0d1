/**
 * Packed virtqueue, device side (spec 2.8): takes descriptor lists the driver made available
 * (AVAIL/USED flags against the device's wrap counter), writes one used descriptor per buffer
 * and skips the rest of its list, and reads the driver's event suppression structure to
 * decide on used-buffer notifications.
 *
 * As on the split ring, everything the driver wrote is untrusted: each broken rule is a
 * verdict naming its clause, a malformed list also breaks the queue, nothing throws, loops
 * or leaves guest memory. No allocation per descriptor or per list.
 */
import type { GuestMemory, MemoryRegion } from '../../memory/guest-memory.js';
import type { Monitor } from '../../monitor/monitor.js';
import { LONG_CHAIN_CAP, type DescriptorChain } from '../chain.js';
import type { QueueFeatures, ViolationSink } from '../queue.js';
import type { PriorBuffer, RingPosition } from '../queue.js';
import { DeviceQueueBase } from '../device-queue-base.js';
import * as P from '../../spec/packed-layout.js';

// Module-local copies of the layout constants and helpers: optimized code loads an imported
// binding from its module cell, with a TDZ check, at every use; a local const is folded.
const {
  EVENT_ALIGN,
  EVENT_FLAGS,
  EVENT_OFF_WRAP,
  EVENT_SIZE,
  MAX_PACKED_SIZE,
  PDESC_ALIGN,
  PDESC_F_INDIRECT,
  PDESC_F_NEXT,
  PDESC_F_WRITE,
  PDESC_SIZE,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  isAvailable,
  packedNeedEvent,
  packedRingSize,
  usedFlags,
} = P;

const TWO_32 = 4294967296;
/** idPlace's slot for a buffer served from stored descriptors (no ring slots to re-check). */
const NO_SLOT = 0xffff;

function checkedMaxSize(maxSize: number): number {
  if (!Number.isInteger(maxSize) || maxSize < 1 || maxSize > MAX_PACKED_SIZE) throw new Error(`packed queue max size ${maxSize} is not 1..32768`);
  return maxSize;
}

/**
 * The device side of a packed virtqueue (2.8). descAddr is the descriptor ring, availAddr the
 * driver event suppression structure (driver area), usedAddr the device event suppression
 * structure (device area); nextAvail / nextUsed are ring slots, with their wrap counters here.
 */
export class PackedDeviceQueue extends DeviceQueueBase {
  readonly format = 'packed' as const;
  /** Longest list the device takes (packed.scatter-gather-support.driver.1); default: the queue size. */
  maxChainLength = Infinity;

  /** The device's wrap counter for nextAvail, and the one for nextUsed. */
  availWrap = true;
  usedWrap = true;
  /** Ring positions counted without wrapping (slot + size * passes). */
  private availLinear = 0;
  /** Where checkNotificationData's last walk stopped (linear, slot, wrap); -1: walk from nextAvail. */
  private scanLinear = -1;
  private scanSlot = 0;
  private scanWrap = true;
  private usedLinear = 0;
  private signalledLinear = 0;

  private ring: MemoryRegion | null = null;
  private ringOff = 0;
  private driverEvent: MemoryRegion | null = null;
  private driverEventOff = 0;
  private deviceEvent: MemoryRegion | null = null;
  private deviceEventOff = 0;

  /**
   * Per buffer id (16 bits, chosen by the driver): the linear ring position of its list while
   * in flight (-1 otherwise), and in idPlace its first slot (low 16 bits; NO_SLOT for a buffer
   * served again from stored descriptors) and its length in slots (high 16 bits): one array
   * for the two, as addUsed reads both (each typed array costs the optimized code a map check
   * and three loads). Slots between usedLinear and availLinear belong to the device until its
   * used pointer passes them (2.8.7: one used descriptor per list, the rest skipped),
   * whichever buffer they held.
   */
  private readonly idLinear = new Float64Array(65536).fill(-1);
  private readonly idPlace = new Uint32Array(65536);
  /** Per ring slot: the descriptor as the device read it (packed.desc-table.driver.2). */
  private readonly shadowAddr: Float64Array;
  private readonly shadowLen: Uint32Array;
  private readonly shadowIdFlags: Uint32Array;
  // Used descriptors written by addUsed whose flags publish() writes (first one last): the
  // slot in the low 16 bits, the flags in the high 16.
  private pendingCount = 0;
  private readonly pending: Uint32Array;

  /** Queue `index` over `mem`, of at most `maxSize` entries (1..32768); verdicts go to `monitor` and `sink`. */
  constructor(mem: GuestMemory, index: number, maxSize: number, monitor: Monitor, sink: ViolationSink) {
    super(mem, index, checkedMaxSize(maxSize), monitor, sink, 65536);
    this.shadowAddr = new Float64Array(maxSize);
    this.shadowLen = new Uint32Array(maxSize);
    this.shadowIdFlags = new Uint32Array(maxSize);
    this.pending = new Uint32Array(maxSize);
  }

  /** Where the ring stands: the next available and used slots with their wrap counters. */
  position(): RingPosition {
    return { avail: this.nextAvail, availWrap: this.availWrap, used: this.nextUsed, usedWrap: this.usedWrap };
  }

  /** Returns the queue to its initial state (device reset, 2.4; queue reset, 2.6). */
  reset(): void {
    this.resetCommon();
    this.availWrap = this.usedWrap = true;
    this.availLinear = this.usedLinear = this.signalledLinear = 0;
    this.scanLinear = -1;
    this.pendingCount = 0;
    this.idLinear.fill(-1);
    this.ring = this.driverEvent = this.deviceEvent = null;
  }

  /** `start`: a ring restarted where it stopped (vhost-user SET_VRING_BASE: slots and wrap counters). */
  activate(features: QueueFeatures, start?: RingPosition): boolean {
    this.activateCommon(features);
    const size = this.ringSize;
    if (!Number.isInteger(size) || size < 1 || size > this.maxSize) {
      this.violation('struct.queue-config.driver.1', `queue size ${size} is not 1..${this.maxSize}`, { size }, true);
      return false;
    }
    const parts: [string, number, number, number][] = [
      ['descriptor ring', this.ringDesc, packedRingSize(size), PDESC_ALIGN],
      ['driver event suppression', this.ringAvail, EVENT_SIZE, EVENT_ALIGN],
      ['device event suppression', this.ringUsed, EVENT_SIZE, EVENT_ALIGN],
    ];
    for (const [name, addr, len, align] of parts) {
      if (addr % align !== 0) {
        this.violation('packed.ring.driver.1', `${name} at 0x${addr.toString(16)} is not ${align}-byte aligned`, { part: name, addr, align }, true);
        return false;
      }
      if (!this.mem.isContiguous(addr, len)) {
        this.violation('struct.buffer-range.driver.1', `${name} [0x${addr.toString(16)}, +${len}) is not inside one guest memory region`, { part: name, addr, len }, true);
        return false;
      }
    }
    this.ring = this.mem.region(this.ringDesc, packedRingSize(size));
    this.ringOff = this.ringDesc - this.ring.guestAddr;
    this.driverEvent = this.mem.region(this.ringAvail, EVENT_SIZE);
    this.driverEventOff = this.ringAvail - this.driverEvent.guestAddr;
    this.deviceEvent = this.mem.region(this.ringUsed, EVENT_SIZE);
    this.deviceEventOff = this.ringUsed - this.deviceEvent.guestAddr;
    this.nextAvail = this.nextUsed = 0;
    this.availWrap = this.usedWrap = true;
    this.availLinear = this.usedLinear = this.signalledLinear = 0;
    this.scanLinear = -1;
    if (start !== undefined) {
      // A ring restarted where it stopped (vhost-user SET_VRING_BASE: slots and wrap counters).
      // Linear positions count passes: slot + size while the wrap counter is 0 (odd passes).
      // The transport checks what its peer sent before it gets here (the driver did not choose it).
      if (start.avail >= size || start.used >= size) throw new RangeError(`restart position avail ${start.avail} / used ${start.used} is outside a ring of ${size}`);
      this.nextAvail = start.avail;
      this.availWrap = start.availWrap;
      this.nextUsed = start.used;
      this.usedWrap = start.usedWrap;
      const cycle = 2 * size;
      this.usedLinear = this.signalledLinear = start.used + (start.usedWrap ? 0 : size);
      this.availLinear = this.usedLinear + ((((start.avail + (start.availWrap ? 0 : size) - this.usedLinear) % cycle) + cycle) % cycle);
    }
    this.inFlightCount = 0;
    this.pendingCount = 0;
    this.idLinear.fill(-1);
    this.broken = false;
    this.active = true;
    return true;
  }

  private flagsAt(slot: number): number {
    const r = this.ring!;
    const off = this.ringOff + slot * PDESC_SIZE + 14;
    return r.u16 !== null && (off & 1) === 0 ? Atomics.load(r.u16, off >> 1) : r.view.getUint16(off, true);
  }

  /** Whether the driver has made the next descriptor available. */
  hasAvailable(): boolean {
    return this.active === true && this.broken !== true && isAvailable(this.flagsAt(this.nextAvail), this.availWrap);
  }

  /** Flags of the next slot: a change means the driver wrote it (suspend checks). */
  availMark(): number {
    return this.active ? this.flagsAt(this.nextAvail) : 0;
  }

  /**
   * packed.desc-table.driver.3: next_off / next_wrap name the first descriptor not yet made
   * available: walk the available ones from where the device is (at most the ring).
   */
  checkNotificationData(data: number): string | null {
    if (!this.active || this.broken) return null;
    // The walk goes on from where the last one stopped when the device has not popped past it:
    // descriptors it found available stay so until the device takes them. Walking from
    // nextAvail every time cost a third of the in-process bench:net path (a receiving driver
    // notifies per refilled buffer, each walk crossed the ~255 posted ones).
    let slot = this.nextAvail;
    let wrap = this.availWrap;
    let n = 0;
    const ahead = this.scanLinear - this.availLinear;
    if (ahead > 0 && ahead <= this.ringSize) {
      let s = slot + ahead;
      let w = wrap;
      if (s >= this.ringSize) {
        s -= this.ringSize;
        w = !w;
      }
      if (s === this.scanSlot && w === this.scanWrap) {
        slot = s;
        wrap = w;
        n = ahead;
      }
    }
    for (; n < this.ringSize && isAvailable(this.flagsAt(slot), wrap); n++) {
      if (++slot === this.ringSize) {
        slot = 0;
        wrap = !wrap;
      }
    }
    this.scanLinear = this.availLinear + n;
    this.scanSlot = slot;
    this.scanWrap = wrap;
    const off = (data >>> 16) & 0x7fff;
    const w = (data >>> 31) === 1;
    // Positions on the cycle of two passes (wrap 1, then wrap 0). The value may lag the ring
    // (more descriptors made available since it was sent) but never lead it.
    const cycle = 2 * this.ringSize;
    const stop = slot + (wrap ? 0 : this.ringSize);
    const sent = off + (w ? 0 : this.ringSize);
    const lag = (((stop - sent) % cycle) + cycle) % cycle;
    return off < this.ringSize && lag <= this.ringSize
      ? null
      : `next_off ${off}, next_wrap ${w ? 1 : 0}; the next descriptor not yet available is slot ${slot}, wrap ${wrap ? 1 : 0}`;
  }

  /** Packed rings have no clause on missing notifications; nothing to audit. */
  kickAudit(_notified: boolean): void {}

  /**
   * Takes the next buffer the driver made available (its id in `chain.head`): false when there
   * is none, the queue is not active or paused, or the list was malformed (a verdict, and the
   * queue is broken).
   */
  pop(chain: DescriptorChain): boolean {
    if (this.active !== true || this.broken === true || this.isPaused === true) return false;
    if (this.priorAt < this.priorList.length) return this.popResubmitted(chain, this.priorList[this.priorAt++]);
    const firstFlags = this.flagsAt(this.nextAvail);
    if (!isAvailable(firstFlags, this.availWrap)) return false;
    const size = this.ringSize;
    const view = this.ring!.view;
    const base = this.ringOff;
    const first = this.nextAvail;
    let slot = first;
    let wrap = this.availWrap === true;
    let count = 0;
    let id = 0;
    let seenWritable = false;
    let total = 0;
    chain.clear(0);
    // The smaller of the two length limits, tested once per descriptor; which one the list
    // broke is sorted out only then.
    const maxLength = this.maxChainLength;
    const limit = maxLength < size ? maxLength : size;
    // Slots the device may take: those its used pointer passed and publish() made visible.
    const room = size - (this.availLinear - this.signalledLinear);
    for (;;) {
      if (count >= limit) {
        if (count >= size) this.violation('packed.scatter-gather-support.driver.2', `descriptor list at slot ${first} is longer than the queue size ${size}`, { slot: first }, true);
        else this.violation('packed.scatter-gather-support.driver.1', `descriptor list at slot ${first} is longer than the ${limit} this device allows`, { slot: first }, true);
        return false;
      }
      const o = base + slot * PDESC_SIZE;
      // id and flags in one read (le16 id, then le16 flags); the head's flags are the ones
      // read atomically above, which made the list available.
      const idFlags = view.getUint32(o + 12, true);
      const flags = count === 0 ? firstFlags : idFlags >>> 16;
      if (count > 0 && !isAvailable(flags, wrap)) {
        this.violation('packed.scatter-gather-support.driver.6', `the first descriptor of the list at slot ${first} was made available before descriptor ${slot} of the same list`, { slot: first, at: slot }, true);
        return false;
      }
      if (count >= room) {
        // The slot is one the device took and has not released yet: released means its used
        // pointer passed it and publish() made that visible (the driver must see USED change).
        if (count === 0) this.violation('packed.desc-table.driver.1', `driver rewrote slot ${slot} before the device marked it used`, { slot }, true);
        else this.violation('packed.scatter-gather-support.driver.5', `the list at slot ${first} runs into slot ${slot}, not yet used by the device: the ring had no room for it`, { slot: first, at: slot }, true);
        return false;
      }
      const addr = view.getUint32(o, true) + view.getUint32(o + 4, true) * TWO_32;
      const len = view.getUint32(o + 8, true);
      id = idFlags & 0xffff;
      this.shadowAddr[slot] = addr;
      this.shadowLen[slot] = len;
      this.shadowIdFlags[slot] = (id | (flags << 16)) >>> 0;
      count++;
      if (flags & PDESC_F_INDIRECT) {
        if (this.indirectAllowed !== true) {
          this.violation('packed.indirect-descs.driver.1', `slot ${slot} is INDIRECT but VIRTIO_F_INDIRECT_DESC was not negotiated`, { slot }, true);
          return false;
        }
        if (flags & PDESC_F_NEXT || count > 1) {
          this.violation('packed.indirect-descs.driver.4', `slot ${slot} is INDIRECT inside a list linked by NEXT`, { slot }, true);
          return false;
        }
        // The WRITE flag of an indirect descriptor is reserved and ignored (2.8.6).
        if (!this.walkIndirect(chain, addr, len, first)) return false;
      } else {
        const writable = (flags & PDESC_F_WRITE) !== 0;
        if (!writable && seenWritable) {
          this.violation('packed.scatter-gather-support.driver.3', `device-readable slot ${slot} follows a device-writable one in the list at slot ${first}`, { slot: first, at: slot }, true);
          return false;
        }
        if (writable) seenWritable = true;
        total += len;
        if (total > TWO_32 || !this.pushBuffer(chain, addr, len, writable, first)) {
          if (total > TWO_32) this.violation('struct.buffer-range.driver.1', `list at slot ${first} is longer than 2^32 bytes`, { slot: first }, true);
          return false;
        }
      }
      slot++;
      if (slot === size) {
        slot = 0;
        wrap = !wrap;
      }
      if (!(flags & PDESC_F_NEXT)) break;
    }
    if (this.idLinear[id] >= 0) {
      this.violation('struct.packed-buffer-id.driver.1', `buffer id ${id} made available again while the device still holds it`, { id, slot: first }, true);
      return false;
    }
    chain.head = id;
    chain.tableDescriptors = count;
    this.idLinear[id] = this.availLinear;
    this.idPlace[id] = (first | (count << 16)) >>> 0;
    if (this.inOrder === true) this.takenInOrder(id, chain.writableBytes);
    this.nextAvail = slot;
    this.availWrap = wrap;
    this.availLinear += count;
    this.inFlightCount++;
    const t = this.observer;
    if (t !== null) {
      t.taken(id);
      for (let k = 0, s = first; k < count; k++, s = s + 1 === size ? 0 : s + 1) {
        t.descriptor!(this.shadowAddr[s], this.shadowLen[s], id, this.shadowIdFlags[s] >>> 16, k === count - 1);
      }
    }
    return true;
  }

  /**
   * A buffer a previous device process took and never used (inflight recovery), from its stored
   * descriptors: checked like ring descriptors, but not against ring slots (they may hold newer
   * descriptors now), and its slots are already counted between the used and available positions.
   */
  private popResubmitted(chain: DescriptorChain, r: PriorBuffer): boolean {
    const id = r.head;
    const ds = r.descriptors ?? [];
    chain.clear(0);
    let seenWritable = false;
    for (let k = 0; k < ds.length; k++) {
      const d = ds[k];
      if (d.flags & PDESC_F_INDIRECT) {
        if (!this.indirectAllowed || ds.length > 1) {
          this.violation('packed.indirect-descs.driver.1', `resubmitted buffer ${id} has an INDIRECT descriptor the ring does not allow here`, { id }, true);
          return false;
        }
        if (!this.walkIndirect(chain, d.addr, d.len, -1)) return false;
      } else {
        const writable = (d.flags & PDESC_F_WRITE) !== 0;
        if (!writable && seenWritable) {
          this.violation('packed.scatter-gather-support.driver.3', `resubmitted buffer ${id}: a device-readable descriptor follows a device-writable one`, { id }, true);
          return false;
        }
        if (writable) seenWritable = true;
        if (!this.pushBuffer(chain, d.addr, d.len, writable, -1)) return false;
      }
    }
    if (ds.length === 0 || this.idLinear[id] >= 0) return false;
    chain.head = id;
    chain.tableDescriptors = ds.length;
    this.idLinear[id] = Math.max(0, this.usedLinear - ds.length);
    // Its ring slots may hold other data now: NO_SLOT, nothing to re-check at addUsed.
    this.idPlace[id] = (NO_SLOT | (ds.length << 16)) >>> 0;
    if (this.inOrder) this.takenInOrder(id, chain.writableBytes);
    this.inFlightCount++;
    return true;
  }

  private walkIndirect(chain: DescriptorChain, tableAddr: number, tableLen: number, first: number): boolean {
    if (tableLen === 0 || tableLen % PDESC_SIZE !== 0) {
      this.violation('struct.indirect-len.driver.1', `indirect table length ${tableLen} is not a non-zero multiple of 16`, { slot: first, len: tableLen }, true);
      return false;
    }
    const region = this.mem.regionFor(tableAddr, tableLen);
    if (region === null) {
      this.violation('struct.buffer-range.driver.1', `indirect table [0x${tableAddr.toString(16)}, +${tableLen}) is outside guest memory`, { slot: first }, true);
      return false;
    }
    const entries = tableLen / PDESC_SIZE;
    // packed.indirect-descs.driver.3: no list longer than the device allows, here the queue
    // size. A longer table is still well-defined (every entry is read once, in order, and its
    // buffers are checked against guest memory as usual): a servable violation up to
    // LONG_CHAIN_CAP entries (Linux builds such tables when seg_max exceeds the queue size,
    // catalogue/deviations.tsv). Longer than the cap, or than a limit the device was given
    // (maxChainLength), is unservable: the walk and the chain stay bounded whatever the table says.
    const limit = Math.min(Math.max(this.ringSize, LONG_CHAIN_CAP), this.maxChainLength);
    if (entries > limit) {
      this.violation('packed.indirect-descs.driver.3', `indirect table at slot ${first} holds ${entries} descriptors, more than the ${limit} this device serves (queue size ${this.ringSize})`, { slot: first, entries, cap: limit }, true);
      return false;
    }
    if (entries > this.ringSize && !this.servable('packed.indirect-descs.driver.3', `indirect table at slot ${first} holds ${entries} descriptors, more than the queue size ${this.ringSize}`, { slot: first, entries, size: this.ringSize })) {
      return false;
    }
    chain.indirect = true;
    const view = region.view;
    const base = tableAddr - region.guestAddr;
    let seenWritable = false;
    let total = 0;
    for (let i = 0; i < entries; i++) {
      const o = base + i * PDESC_SIZE;
      const flags = view.getUint16(o + 14, true);
      if (flags & ~PDESC_F_WRITE) {
        this.violation('packed.indirect-descs.driver.2', `indirect entry ${i} at slot ${first} has flags 0x${flags.toString(16)}; only WRITE is allowed there`, { slot: first, entry: i, flags }, true);
        return false;
      }
      const writable = (flags & PDESC_F_WRITE) !== 0;
      if (!writable && seenWritable) {
        this.violation('packed.scatter-gather-support.driver.3', `device-readable indirect entry ${i} follows a device-writable one (slot ${first})`, { slot: first, entry: i }, true);
        return false;
      }
      if (writable) seenWritable = true;
      const len = view.getUint32(o + 8, true);
      total += len;
      if (total > TWO_32) {
        this.violation('struct.buffer-range.driver.1', `indirect list at slot ${first} is longer than 2^32 bytes`, { slot: first }, true);
        return false;
      }
      if (!this.pushBuffer(chain, view.getUint32(o, true) + view.getUint32(o + 4, true) * TWO_32, len, writable, first)) return false;
    }
    return true;
  }

  private pushBuffer(chain: DescriptorChain, addr: number, len: number, writable: boolean, first: number): boolean {
    const r = chain.append(this.mem, addr, len, writable);
    if (r === 'range') {
      this.violation('struct.buffer-range.driver.1', `buffer [0x${addr.toString(16)}, +${len}) of the list at slot ${first} is outside guest memory`, { slot: first, addr, len }, true);
    } else if (r === 'full') {
      this.violation('packed.scatter-gather-support.driver.2', `list at slot ${first} has more buffers than this queue takes (${chain.capacity})`, { slot: first }, true);
    }
    return r === 'ok';
  }

  /** Writes the used descriptor for buffer `id` (its flags at publish) and skips its list. */
  addUsed(id: number, len: number): void {
    if (this.active !== true || !(id >= 0 && id <= 0xffff)) return;
    const linear = this.idLinear[id];
    if (linear < 0 || this.stashed[id] === 1) return;
    const place = this.idPlace[id];
    const count = place >>> 16;
    const first = place & 0xffff;
    if (first !== NO_SLOT && this.broken !== true) this.checkUnaltered(linear, first, count, id);
    if (this.inOrder === true) {
      this.returnInOrder(id, len);
      return;
    }
    this.idLinear[id] = -1;
    this.inFlightCount--;
    if (this.observer !== null) this.observer.returned(id);
    this.writeUsed(id, len, count);
  }

  protected released(id: number): void {
    this.idLinear[id] = -1;
  }

  /** One used descriptor per run of buffers used completely, then the rest skipped (2.8.9). */
  private flushInOrder(): void {
    let i = 0;
    while (i < this.returnedCount) {
      let j = i;
      let slots = this.idPlace[this.returnedId[i]] >>> 16;
      if (this.batchInOrder) {
        while (j + 1 < this.returnedCount && this.returnedLen[j] === this.idWritable[this.returnedId[j]]) {
          j++;
          slots += this.idPlace[this.returnedId[j]] >>> 16;
        }
      }
      if (this.observer !== null) for (let k = i; k <= j; k++) this.observer.returned(this.returnedId[k]);
      this.writeUsed(this.returnedId[j], this.returnedLen[j], slots);
      i = j + 1;
    }
    this.returnedCount = 0;
  }

  /** Writes a used descriptor at the used pointer (flags at publish) and skips `count` slots. */
  private writeUsed(id: number, len: number, count: number): void {
    const size = this.ringSize;
    const slot = this.nextUsed;
    const r = this.ring!;
    const o = this.ringOff + slot * PDESC_SIZE;
    r.view.setUint32(o + 8, len >>> 0, true);
    r.view.setUint16(o + 12, id, true);
    this.pending[this.pendingCount] = (slot | ((usedFlags(this.usedWrap === true) | (len > 0 ? PDESC_F_WRITE : 0)) << 16)) >>> 0;
    this.pendingCount++;
    if (this.mem.onWrite !== null) this.mem.onWrite(this.ringDesc + slot * PDESC_SIZE + 8, 6);
    let next = slot + count;
    if (next >= size) {
      next -= size;
      this.usedWrap = this.usedWrap !== true;
    }
    this.nextUsed = next;
    this.usedLinear += count;
  }

  /**
   * packed.desc-table.driver.2: nothing of a list changed after it was made available, in the
   * slots the device has not released yet (the used pointer may have passed some of them when
   * other buffers completed first; those the driver may reuse).
   */
  private checkUnaltered(linear: number, first: number, count: number, id: number): void {
    const view = this.ring!.view;
    for (let i = 0, s = first; i < count; i++, s = s + 1 === this.ringSize ? 0 : s + 1) {
      // Passed by the used pointer: the device wrote a used descriptor there or skipped it
      // (and once published the driver may reuse it). Only slots ahead of it must be intact.
      if (linear + i < this.usedLinear) continue;
      const o = this.ringOff + s * PDESC_SIZE;
      const addr = view.getUint32(o, true) + view.getUint32(o + 4, true) * TWO_32;
      if (
        addr !== this.shadowAddr[s] ||
        view.getUint32(o + 8, true) !== this.shadowLen[s] ||
        view.getUint32(o + 12, true) !== this.shadowIdFlags[s] // le16 id, le16 flags
      ) {
        this.violation('packed.desc-table.driver.2', `driver changed slot ${s} of buffer ${id} after making it available`, { id, slot: s }, false);
        return;
      }
    }
  }

  /**
   * Makes the used descriptors written since the last call visible (flags written last to
   * first, so the driver never sees part of a batch) and says whether the driver wants a
   * used-buffer notification (2.8.10).
   */
  publish(): boolean {
    if (this.active !== true) return false;
    if (this.returnedCount > 0) this.flushInOrder();
    if (this.pendingCount === 0) return false;
    if (this.observer !== null) this.observer.publishing!(this.nextUsed, this.usedWrap);
    const r = this.ring!;
    // (Kept small: publish() inlines into a device loop only under TurboFan's bytecode limit.)
    for (let i = this.pendingCount - 1; i >= 0; i--) {
      const p = this.pending[i];
      const at = (p & 0xffff) * PDESC_SIZE + 14;
      const off = this.ringOff + at;
      if (r.u16 !== null && (off & 1) === 0) Atomics.store(r.u16, off >> 1, p >>> 16);
      else r.view.setUint16(off, p >>> 16, true);
      if (this.mem.onWrite !== null) this.mem.onWrite(this.ringDesc + at, 2);
    }
    this.pendingCount = 0;
    if (this.observer !== null) this.observer.published(this.nextUsed, this.usedWrap);
    const old = this.signalledLinear;
    this.signalledLinear = this.usedLinear;
    const ev = this.driverEvent!.view;
    const flags = ev.getUint16(this.driverEventOff + EVENT_FLAGS, true) & 3;
    if (flags === RING_EVENT_FLAGS_DISABLE) return false;
    if (flags === RING_EVENT_FLAGS_DESC && this.eventIdx === true) {
      return packedNeedEvent(ev.getUint16(this.driverEventOff + EVENT_OFF_WRAP, true), this.ringSize, old, this.usedLinear);
    }
    return true;
  }

  /** Asks the driver not to send available-buffer notifications (2.8.10). */
  disableNotifications(): void {
    if (!this.active) return;
    this.writeDeviceEventFlags(RING_EVENT_FLAGS_DISABLE);
  }

  /** Asks for notifications again; true when buffers arrived meanwhile (process them instead of waiting). */
  enableNotifications(): boolean {
    if (this.active !== true || this.broken === true || this.isPaused === true) return false;
    if (this.eventIdx === true) {
      // Like split's avail_event: one notification when the driver makes the next slot available,
      // not one per buffer.
      const ev = this.deviceEvent!;
      ev.view.setUint16(this.deviceEventOff + EVENT_OFF_WRAP, this.nextAvail | (this.availWrap === true ? 0x8000 : 0), true);
      if (this.mem.onWrite !== null) this.mem.onWrite(this.ringUsed + EVENT_OFF_WRAP, 2);
      this.writeDeviceEventFlags(RING_EVENT_FLAGS_DESC);
    } else this.writeDeviceEventFlags(RING_EVENT_FLAGS_ENABLE);
    return this.hasAvailable();
  }

  private writeDeviceEventFlags(flags: number): void {
    const r = this.deviceEvent!;
    const off = this.deviceEventOff + EVENT_FLAGS;
    if (r.u16 !== null && (off & 1) === 0) Atomics.store(r.u16, off >> 1, flags);
    else r.view.setUint16(off, flags, true);
    if (this.mem.onWrite !== null) this.mem.onWrite(this.ringUsed + EVENT_FLAGS, 2);
  }

  /** Whether buffer `id` is one the device took and has not returned. */
  isInFlight(id: number): boolean {
    return id >= 0 && id <= 0xffff && this.idLinear[id] >= 0 && this.stashed[id] !== 1;
  }
}
