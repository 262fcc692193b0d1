/**
 * Split virtqueue, device side (spec 2.7): pops descriptor chains the driver made available,
 * publishes used elements in batches, and handles notification suppression both ways.
 *
 * Everything the driver wrote is untrusted. Each broken rule becomes a verdict naming its
 * clause; a malformed chain also marks the queue broken (the device core then sets
 * DEVICE_NEEDS_RESET). No guest value can make this code throw, loop forever, or touch memory
 * outside the guest's regions.
 *
 * Hot path: no allocation per descriptor or per chain; ring parts are resolved to their
 * memory region once when the queue is activated.
 */
import { GuestMemory, MemoryRegion } from '../../memory/guest-memory.js';
import type { Monitor, Verdict } from '../../monitor/monitor.js';
import * as C from '../../spec/constants.js';
import { LONG_CHAIN_CAP, type DescriptorChain } from '../chain.js';
import type { QueueFeatures, RingPosition, ViolationSink } from '../queue.js';
import { DeviceQueueBase } from '../device-queue-base.js';
import * as L from '../../spec/split-layout.js';

// Module-local copies of the layout constants: optimized code loads an imported binding from its
// module cell, with a TDZ check, at every use (seen in --print-opt-code of walk and addUsed); a
// local const is folded into the code.
const { AVAIL_ALIGN, AVAIL_RING, DESC_ALIGN, DESC_SIZE, RING_FLAGS, RING_IDX, USED_ALIGN, USED_ELEM_SIZE, USED_RING } = L;
const { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_USED_F_NO_NOTIFY, MAX_QUEUE_SIZE } = C;
const { availEventOffset, availRingSize, descTableSize, isPowerOfTwo, needEvent, usedEventOffset, usedRingSize } = L;
const TWO_32 = 4294967296;

function checkedMaxSize(maxSize: number): number {
  if (!isPowerOfTwo(maxSize) || maxSize > MAX_QUEUE_SIZE) throw new Error(`queue max size ${maxSize} is not a power of two <= 32768`);
  return maxSize;
}

/** The device side of a split virtqueue (2.7): see the module comment. */
export class SplitDeviceQueue extends DeviceQueueBase {
  readonly format = 'split' as const;

  /** avail.idx as last read, to tell a decrement from a driver that is ahead. */
  private lastAvailIdx = 0;
  /** used.idx at the previous publish: the batch start for the EVENT_IDX window. */
  private signalledUsed = 0;

  private mask = 0;
  private descRegion: MemoryRegion | null = null;
  private descOff = 0;
  private availRegion: MemoryRegion | null = null;
  private availOff = 0;
  private usedRegion: MemoryRegion | null = null;
  private usedOff = 0;
  /** avail_event's offset in the used ring's region, and used_event's in the avail ring's (set at activate). */
  private availEventAt = 0;
  private usedEventAt = 0;
  /** walkIndirect: the offset of the table being walked in its region (see there). */
  private indirectBase = 0;

  // Per head: in flight, and a shadow of the table descriptors as popped, to see a driver
  // altering exposed descriptors (init.cleanup.driver.1) when the device returns them: the four
  // 32-bit words of each descriptor as read (addr low, addr high, len, flags | next << 16), so
  // keeping and comparing it costs four stores and four loads per descriptor, no arithmetic.
  private readonly inFlight: Uint8Array;
  private readonly shadow: Uint32Array;
  private readonly headTableCount: Uint16Array;
  /** Whether to keep and check the shadow (cheap; on by default). */
  checkExposedDescriptors = true;

  /** Queue `index` over `mem`, of at most `maxSize` entries (a power of two); verdicts go to `monitor` and `sink`. */
  constructor(mem: GuestMemory, index: number, maxSize: number, monitor: Monitor, sink: ViolationSink) {
    super(mem, index, checkedMaxSize(maxSize), monitor, sink, maxSize);
    this.inFlight = new Uint8Array(maxSize);
    this.shadow = new Uint32Array(4 * maxSize);
    this.headTableCount = new Uint16Array(maxSize);
  }

  /** Where the ring stands: split indices are free-running, so the wrap flags carry nothing. */
  position(): RingPosition {
    return { avail: this.nextAvail, availWrap: true, used: this.nextUsed, usedWrap: true };
  }

  /** Returns the queue to its initial state (device reset, 2.4; queue reset, 2.6). */
  reset(): void {
    this.resetCommon();
    this.lastAvailIdx = this.signalledUsed = 0;
    this.inFlight.fill(0);
    this.descRegion = this.availRegion = this.usedRegion = null;
  }

  /**
   * Checks the driver's queue configuration and resolves the ring parts (at DRIVER_OK, or when
   * a vhost-user ring starts). Returns false, with a verdict, when the layout is unusable.
   * `start` restores the indices (a ring restarted where it stopped: vhost-user
   * SET_VRING_BASE); split indices are free-running, so its wrap flags carry nothing.
   */
  activate(features: QueueFeatures, start?: RingPosition): boolean {
    const startAvail = start?.avail ?? 0;
    const startUsed = start?.used ?? 0;
    this.activateCommon(features);
    const size = this.ringSize;
    if (!isPowerOfTwo(size) || size > this.maxSize) {
      this.violation('struct.queue-config.driver.1', `queue size ${size} is not a power of two <= ${this.maxSize}`, { size }, true);
      return false;
    }
    const parts: [string, number, number, number][] = [
      ['descriptor table', this.ringDesc, descTableSize(size), DESC_ALIGN],
      ['driver area (avail ring)', this.ringAvail, availRingSize(size), AVAIL_ALIGN],
      ['device area (used ring)', this.ringUsed, usedRingSize(size), USED_ALIGN],
    ];
    for (const [name, addr, len, align] of parts) {
      if (addr % align !== 0) {
        this.violation('split.alignment.driver.1', `${name} at 0x${addr.toString(16)} is not ${align}-byte aligned`, { part: name, addr, align }, true);
        return false;
      }
      if (!this.mem.isContiguous(addr, len)) {
        this.violation('struct.buffer-range.driver.1', `${name} [0x${addr.toString(16)}, +${len}) is not inside one guest memory region`, { part: name, addr, len }, true);
        return false;
      }
    }
    // The device writes the used ring; it must not overlap what the driver owns.
    const usedEnd = this.ringUsed + usedRingSize(size);
    for (const [name, addr, len] of parts.slice(0, 2)) {
      if (this.ringUsed < addr + len && addr < usedEnd) {
        this.violation('struct.queue-config.driver.1', `device area overlaps the ${name}`, { part: name }, true);
        return false;
      }
    }
    this.mask = size - 1;
    this.descRegion = this.mem.region(this.ringDesc, descTableSize(size));
    this.descOff = this.ringDesc - this.descRegion.guestAddr;
    this.availRegion = this.mem.region(this.ringAvail, availRingSize(size));
    this.availOff = this.ringAvail - this.availRegion.guestAddr;
    this.usedRegion = this.mem.region(this.ringUsed, usedRingSize(size));
    this.usedOff = this.ringUsed - this.usedRegion.guestAddr;
    this.availEventAt = this.usedOff + availEventOffset(size);
    this.usedEventAt = this.availOff + usedEventOffset(size);
    this.nextAvail = this.lastAvailIdx = this.kickAuditIdx = startAvail & 0xffff;
    this.nextUsed = this.signalledUsed = startUsed & 0xffff;
    this.inFlight.fill(0);
    this.inFlightCount = 0;
    this.broken = false;
    this.active = true;
    // Ask for a notification for the very next buffer (EVENT_IDX starts at the start index).
    if (this.eventIdx) {
      this.usedRegion.view.setUint16(this.availEventAt, this.nextAvail, true);
      if (this.mem.onWrite !== null) this.mem.onWrite(this.ringUsed + availEventOffset(size), 2);
    }
    if (startAvail === 0 && startUsed === 0) {
      const flags = this.usedRegion.view.getUint16(this.usedOff + RING_FLAGS, true);
      if (flags !== 0) {
        // split.avail-buffer-notif-suppr.driver.1: a new used ring starts with flags 0.
        this.violation('split.avail-buffer-notif-suppr.driver.1', `used ring flags are ${flags} when the queue starts (the driver must zero them)`, { flags }, false);
        this.writeUsedFlags(0);
      }
    }
    return true;
  }

  /** avail.idx when the driver's notifications were last audited (see kickAudit). */
  private kickAuditIdx = 0;

  /** avail_event as the device last wrote it. */
  availEvent(): number {
    return this.usedRegion!.view.getUint16(this.availEventAt, true);
  }

  /** Whether the device currently asks for available-buffer notifications covering (old, idx]. */
  private wantsKick(old: number, idx: number): boolean {
    if (this.eventIdx) return needEvent(this.availEvent(), idx, old);
    return (this.usedRegion!.view.getUint16(this.usedOff + RING_FLAGS, true) & VIRTQ_USED_F_NO_NOTIFY) === 0;
  }

  /**
   * Audits the driver's notification decisions, for transports where the device is at rest
   * between driver actions (synchronous loopback). `notified` is true when called for a
   * notification of this queue, false at any other driver action.
   *  - buffers published with notifications wanted and no notification: driver.4 / driver.6;
   *  - a notification while suppressed: driver.3 / driver.7 (SHOULD NOT).
   */
  kickAudit(notified: boolean): void {
    if (!this.active || this.broken) return;
    const idx = this.availIdx();
    const old = this.kickAuditIdx;
    if (notified) {
      this.kickAuditIdx = idx;
      if (idx !== old && !this.wantsKick(old, idx)) {
        if (this.eventIdx) this.violation('split.avail-buffer-notif-suppr.driver.7', `driver notified although avail_event (${this.availEvent()}) was not reached`, { availIdx: idx }, false);
        else this.violation('split.avail-buffer-notif-suppr.driver.3', 'driver notified although the device set VIRTQ_USED_F_NO_NOTIFY', { availIdx: idx }, false);
      }
      return;
    }
    if (idx === old) return;
    this.kickAuditIdx = idx;
    if (((idx - this.nextAvail) & 0xffff) > this.ringSize) return; // pending() reports that one
    if (this.wantsKick(old, idx)) {
      if (this.eventIdx) {
        this.violation('split.avail-buffer-notif-suppr.driver.6', `driver moved avail.idx past avail_event (${this.availEvent()}) without notifying`, { availIdx: idx }, false);
        // split.avail-buffer-notif-suppr.driver.5: with EVENT_IDX the low bit of used.flags
        // means nothing; a driver that stayed silent while it was set acted on it.
        if ((this.usedRegion!.view.getUint16(this.usedOff + RING_FLAGS, true) & VIRTQ_USED_F_NO_NOTIFY) !== 0) {
          this.violation('split.avail-buffer-notif-suppr.driver.5', 'driver honoured VIRTQ_USED_F_NO_NOTIFY although EVENT_IDX was negotiated (it must disregard the bit)', { availIdx: idx }, false);
        }
      } else {
        this.violation('split.avail-buffer-notif-suppr.driver.4', `driver made buffers available (avail.idx ${old} -> ${idx}) with notifications on and did not notify`, { availIdx: idx }, false);
        // split.avail-buffer-notif-suppr.driver.2: without EVENT_IDX avail_event means nothing;
        // a driver whose silence is exactly what avail_event would have allowed acted on it.
        if (!needEvent(this.availEvent(), idx, old)) {
          this.violation('split.avail-buffer-notif-suppr.driver.2', `driver held back the notification as avail_event (${this.availEvent()}) would allow, although EVENT_IDX was not negotiated`, { availIdx: idx }, false);
        }
      }
    }
  }

  /** VIRTIO_F_NOTIFICATION_DATA: the avail.idx in `data` (bits 16-31) against the ring; a description of the mismatch, or null. */
  checkNotificationData(data: number): string | null {
    if (!this.active) return null;
    const idx = this.availIdx();
    const sent = data >>> 16;
    // The driver may have made more buffers available since it sent the notification (a
    // transport may deliver it late), never fewer: the value may lag the ring, not lead it.
    return ((idx - sent) & 0xffff) <= this.ringSize ? null : `next_off/next_wrap say avail.idx ${sent}, the ring says ${idx}`;
  }

  /** avail.idx: it moves when the driver makes buffers available (suspend checks). */
  availMark(): number {
    return this.active ? this.availIdx() : 0;
  }

  /** avail.idx, read atomically (the driver may be writing it concurrently). */
  availIdx(): number {
    const r = this.availRegion!;
    const off = this.availOff + RING_IDX;
    return r.u16 !== null && (off & 1) === 0 ? Atomics.load(r.u16, off >> 1) : r.view.getUint16(off, true);
  }

  /** used.idx as published. */
  usedIdx(): number {
    const r = this.usedRegion!;
    const off = this.usedOff + RING_IDX;
    return r.u16 !== null && (off & 1) === 0 ? Atomics.load(r.u16, off >> 1) : r.view.getUint16(off, true);
  }

  /** avail.flags (driver's used-buffer notification suppression). */
  availFlags(): number {
    return this.availRegion!.view.getUint16(this.availOff + RING_FLAGS, true);
  }

  /** used_event, the last field of the driver area (valid with VIRTIO_F_EVENT_IDX). */
  usedEvent(): number {
    return this.availRegion!.view.getUint16(this.usedEventAt, true);
  }

  /**
   * Reads avail.idx and checks it moved forward by no more than the queue can hold
   * (split.avail-ring.driver.1: the index never goes back; more than `size` outstanding
   * buffers is only possible by going back or by writing garbage). Returns the number of
   * chains waiting, or -1 when the index is bad.
   */
  pending(): number {
    if (this.active !== true || this.broken === true) return 0;
    const idx = this.availIdx();
    if (idx !== this.lastAvailIdx) {
      // Entries already seen (validated, not yet popped) plus the new ones must fit the ring;
      // a decrement shows up as a move of almost 2^16.
      const seen = (this.lastAvailIdx - this.nextAvail) & 0xffff;
      const moved = (idx - this.lastAvailIdx) & 0xffff;
      if (seen + moved > this.ringSize) {
        this.violation(
          'split.avail-ring.driver.1',
          moved > 0x8000
            ? `available index went back from ${this.lastAvailIdx} to ${idx}`
            : `available index jumped from ${this.lastAvailIdx} to ${idx}: ${seen + moved} buffers outstanding on a queue of ${this.ringSize}`,
          { previous: this.lastAvailIdx, idx, nextAvail: this.nextAvail, size: this.ringSize },
          true,
        );
        return -1;
      }
      this.lastAvailIdx = idx;
    }
    return (idx - this.nextAvail) & 0xffff;
  }

  /**
   * Pops the next available chain into `chain`. Returns false when there is none, the
   * queue is not active, or the chain was malformed (then a verdict was made and the queue
   * is broken).
   */
  pop(chain: DescriptorChain): boolean {
    if (this.active !== true || this.broken === true || this.isPaused === true) return false;
    let head: number;
    if (this.priorAt < this.priorList.length) {
      // Taken before a restart and never used: served again first (the avail ring entries
      // that named them were consumed already: nextAvail starts past them).
      head = this.priorList[this.priorAt++].head;
      if (head >= this.ringSize || this.inFlight[head] === 1) return false;
    } else {
      // Re-read avail.idx only when the chains validated by the last read are used up.
      if (this.nextAvail === this.lastAvailIdx && this.pending() <= 0) return false;
      head = this.availRegion!.view.getUint16(this.availOff + AVAIL_RING + 2 * (this.nextAvail & this.mask), true);
      this.nextAvail = (this.nextAvail + 1) & 0xffff;
    }
    if (!this.walk(head, chain)) return false;
    this.inFlight[head] = 1;
    this.inFlightCount++;
    if (this.observer !== null) this.observer.taken(head);
    if (this.inOrder === true) this.takenInOrder(head, chain.writableBytes);
    return true;
  }

  /** Walks the chain starting at `head`, checking every rule the layout imposes. */
  private walk(head: number, chain: DescriptorChain): boolean {
    const size = this.ringSize;
    chain.clear(head);
    if (head >= size) {
      this.violation('struct.desc-next.driver.1', `avail ring names descriptor ${head}, beyond the queue size ${size}`, { head }, true);
      return false;
    }
    if (this.inFlight[head] === 1) {
      this.violation(
        'init.cleanup.driver.1',
        `descriptor ${head} made available again while the device still holds it`,
        { head },
        true,
      );
      return false;
    }
    const view = this.descRegion!.view;
    const base = this.descOff;
    const shadow = this.checkExposedDescriptors === true;
    let idx = head;
    let total = 0;
    let seenWritable = false;
    let tableCount = 0;
    for (;;) {
      if (tableCount >= size) {
        this.violation('split.desc-table.driver.1', `descriptor chain from head ${head} loops (more than ${size} descriptors)`, { head }, true);
        return false;
      }
      const o = base + idx * DESC_SIZE;
      const lo = view.getUint32(o, true);
      const hi = view.getUint32(o + 4, true);
      const len = view.getUint32(o + 8, true);
      const flagsNext = view.getUint32(o + 12, true); // flags (le16) then next (le16)
      const addr = lo + hi * TWO_32;
      const flags = flagsNext & 0xffff;
      const next = flagsNext >>> 16;
      if (shadow) {
        const sh = this.shadow;
        const s = 4 * idx;
        sh[s] = lo;
        sh[s + 1] = hi;
        sh[s + 2] = len;
        sh[s + 3] = flagsNext;
      }
      tableCount++;
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (this.indirectAllowed !== true) {
          this.violation('split.indirect-descs.driver.1', `descriptor ${idx} is INDIRECT but VIRTIO_F_INDIRECT_DESC was not negotiated`, { head, desc: idx }, true);
          return false;
        }
        if (flags & VIRTQ_DESC_F_NEXT) {
          this.violation('split.indirect-descs.driver.4', `descriptor ${idx} has both INDIRECT and NEXT`, { head, desc: idx }, true);
          return false;
        }
        // split.indirect-descs.device.1: the WRITE flag of this descriptor is ignored.
        chain.tableDescriptors = tableCount;
        this.headTableCount[head] = tableCount;
        return this.walkIndirect(chain, addr, len, total, seenWritable);
      }
      const writable = (flags & VIRTQ_DESC_F_WRITE) !== 0;
      if (!this.pushBuffer(chain, addr, len, writable, seenWritable, idx)) return false;
      if (writable) seenWritable = true;
      total += len;
      if (total > TWO_32) {
        this.violation('split.desc-table.driver.1', `descriptor chain from head ${head} is longer than 2^32 bytes`, { head }, true);
        return false;
      }
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) break;
      if (next >= size) {
        this.violation('struct.desc-next.driver.1', `descriptor ${idx} chains to ${next}, beyond the queue size ${size}`, { head, desc: idx, next }, true);
        return false;
      }
      if (this.inOrder === true && next !== (idx + 1) % size) {
        // Fatal: the in-order contract (one cyclic run of descriptors) no longer holds.
        this.violation('split.desc-table.driver.2', `with IN_ORDER, descriptor ${idx} must chain to ${(idx + 1) % size}, not ${next}`, { head, desc: idx, next }, true);
        return false;
      }
      idx = next;
    }
    chain.tableDescriptors = tableCount;
    this.headTableCount[head] = tableCount;
    return true;
  }

  private walkIndirect(chain: DescriptorChain, tableAddr: number, tableLen: number, total: number, seenWritable: boolean): boolean {
    const head = chain.head;
    if (tableLen === 0 || tableLen % DESC_SIZE !== 0) {
      this.violation('struct.indirect-len.driver.1', `indirect table length ${tableLen} is not a non-zero multiple of 16`, { head, len: tableLen }, true);
      return false;
    }
    const region = this.mem.regionFor(tableAddr, tableLen);
    if (region === null) {
      this.violation('struct.buffer-range.driver.1', `indirect table [0x${tableAddr.toString(16)}, +${tableLen}) is outside guest memory`, { head, addr: tableAddr, len: tableLen }, true);
      return false;
    }
    chain.indirect = true;
    const entries = tableLen / DESC_SIZE;
    const view = region.view;
    // The table's offset in its region goes through a field that holds small integers (`| 0`
    // makes one of the difference, a heap number otherwise), so optimized code reads it as an
    // integer and the entry offsets below are integer sums. A local computed from the guest
    // address (a double) made each of the five reads per entry convert a double offset to an
    // index, with its checks. An offset of 2^30 or more widens the field to a double: slower,
    // still right.
    const off = tableAddr - region.guestAddr;
    this.indirectBase = off < 0x4000_0000 ? off | 0 : off;
    const base = this.indirectBase;
    let idx = 0;
    let walked = 0;
    let longReported = false;
    for (;;) {
      if (walked >= entries) {
        this.violation('split.desc-table.driver.1', `indirect table of head ${head} loops (more than ${entries} entries walked)`, { head }, true);
        return false;
      }
      if (chain.tableDescriptors - 1 + walked >= this.ringSize) {
        // split.indirect-descs.driver.3: no chain longer than the queue size. Through an
        // indirect table such a chain is still well-defined (each entry is read once, `next`
        // stays inside the table, buffers are checked against guest memory as usual), so it is
        // a servable violation up to LONG_CHAIN_CAP descriptors; Linux builds such tables when
        // seg_max exceeds the queue size (catalogue/deviations.tsv). Beyond the cap the walk
        // stops: a hostile table must not make the device walk or allocate without bound.
        const cap = Math.max(this.ringSize, LONG_CHAIN_CAP);
        if (chain.tableDescriptors + walked > cap) {
          this.violation('split.indirect-descs.driver.3', `chain from head ${head} is longer than ${cap} descriptors, the most this device serves (queue size ${this.ringSize})`, { head, size: this.ringSize, cap }, true);
          return false;
        }
        if (!longReported) {
          longReported = true;
          if (!this.servable('split.indirect-descs.driver.3', `chain from head ${head} is longer than the queue size ${this.ringSize} (through its indirect table of ${entries} entries)`, { head, size: this.ringSize, entries })) return false;
        }
      }
      const o = base + idx * DESC_SIZE;
      const addr = view.getUint32(o, true) + view.getUint32(o + 4, true) * TWO_32;
      const len = view.getUint32(o + 8, true);
      const flagsNext = view.getUint32(o + 12, true); // flags (le16) then next (le16), one read as in walk
      const flags = flagsNext & 0xffff;
      const next = flagsNext >>> 16;
      walked++;
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        this.violation('split.indirect-descs.driver.2', `indirect table of head ${head} holds an INDIRECT descriptor (entry ${idx})`, { head, entry: idx }, true);
        return false;
      }
      const writable = (flags & VIRTQ_DESC_F_WRITE) !== 0;
      if (!this.pushBuffer(chain, addr, len, writable, seenWritable, idx)) return false;
      if (writable) seenWritable = true;
      total += len;
      if (total > TWO_32) {
        this.violation('split.desc-table.driver.1', `descriptor chain from head ${head} is longer than 2^32 bytes`, { head }, true);
        return false;
      }
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) return true;
      if (next >= entries) {
        this.violation('struct.desc-next.driver.1', `indirect entry ${idx} of head ${head} chains to ${next}, beyond the table's ${entries} entries`, { head, entry: idx, next }, true);
        return false;
      }
      if (this.inOrder === true && next !== idx + 1) {
        this.violation('split.indirect-descs.driver.5', `with IN_ORDER, indirect entry ${idx} of head ${head} must chain to ${idx + 1}, not ${next}`, { head, entry: idx, next }, true);
        return false;
      }
      idx = next;
    }
  }

  /** Appends one buffer, split at memory-region boundaries so each piece has one view. */
  private pushBuffer(chain: DescriptorChain, addr: number, len: number, writable: boolean, seenWritable: boolean, desc: number): boolean {
    if (!writable && seenWritable) {
      this.violation('split.message-framing.driver.1', `device-readable descriptor ${desc} follows a device-writable one in chain ${chain.head}`, { head: chain.head, desc }, true);
      return false;
    }
    const r = chain.append(this.mem, addr, len, writable);
    if (r === 'range') {
      this.violation('struct.buffer-range.driver.1', `buffer [0x${addr.toString(16)}, +${len}) of chain ${chain.head} is outside guest memory`, { head: chain.head, desc, addr, len }, true);
    } else if (r === 'full') {
      this.violation('split.indirect-descs.driver.3', `chain ${chain.head} has more buffers than this queue accepts (${chain.capacity})`, { head: chain.head }, true);
    }
    return r === 'ok';
  }

  /**
   * Puts a used element for `head` (written `len` bytes) in the used ring; the used index is
   * published by `publish()` so a batch costs one index write and at most one notification.
   */
  addUsed(head: number, len: number): void {
    if (this.active !== true || head >= this.ringSize || this.inFlight[head] !== 1 || this.stashed[head] === 1) return;
    if (this.checkExposedDescriptors === true && this.broken !== true) this.checkUnaltered(head);
    if (this.inOrder === true) {
      this.returnInOrder(head, len);
      return;
    }
    this.inFlight[head] = 0;
    this.inFlightCount--;
    if (this.observer !== null) this.observer.returned(head);
    this.writeUsed(head, len);
  }

  protected released(head: number): void {
    this.inFlight[head] = 0;
  }

  /** Writes the in-order buffers returned since the last publish, batching full ones (2.7.9). */
  private flushInOrder(): void {
    let i = 0;
    while (i < this.returnedCount) {
      let j = i;
      // A run: every buffer but the last was used completely, so one element can stand for all.
      if (this.batchInOrder) {
        while (j + 1 < this.returnedCount && this.returnedLen[j] === this.idWritable[this.returnedId[j]]) j++;
      }
      const start = this.nextUsed;
      if (this.observer !== null) for (let k = i; k <= j; k++) this.observer.returned(this.returnedId[k]);
      this.writeUsed(this.returnedId[j], this.returnedLen[j]);
      this.nextUsed = (start + (j - i + 1)) & 0xffff;
      i = j + 1;
    }
    this.returnedCount = 0;
  }

  private writeUsed(head: number, len: number): void {
    const r = this.usedRegion!;
    const o = this.usedOff + USED_RING + USED_ELEM_SIZE * (this.nextUsed & this.mask);
    // split.used-ring.device.1: len is written before the index is published.
    r.view.setUint32(o, head, true);
    r.view.setUint32(o + 4, len >>> 0, true);
    if (this.mem.onWrite !== null) this.mem.onWrite(this.ringUsed + (o - this.usedOff), USED_ELEM_SIZE);
    this.nextUsed = (this.nextUsed + 1) & 0xffff;
  }

  /** init.cleanup.driver.1: the table descriptors of an exposed chain did not change. */
  private checkUnaltered(head: number): void {
    const view = this.descRegion!.view;
    const sh = this.shadow;
    let idx = head;
    for (let n = this.headTableCount[head]; n > 0; n--) {
      const o = this.descOff + idx * DESC_SIZE;
      const s = 4 * idx;
      if (
        view.getUint32(o, true) !== sh[s] ||
        view.getUint32(o + 4, true) !== sh[s + 1] ||
        view.getUint32(o + 8, true) !== sh[s + 2] ||
        view.getUint32(o + 12, true) !== sh[s + 3]
      ) {
        this.violation('init.cleanup.driver.1', `driver altered descriptor ${idx} of chain ${head} while the device held it`, { head, desc: idx }, false);
        return;
      }
      idx = sh[s + 3] >>> 16;
      if (idx >= this.ringSize) return;
    }
  }

  /**
   * Publishes the used elements added since the last call (one atomic index store) and says
   * whether the driver wants a used-buffer notification for this batch (2.7.10).
   */
  publish(): boolean {
    if (this.active !== true) return false;
    if (this.returnedCount > 0) this.flushInOrder();
    const r = this.usedRegion!;
    const off = this.usedOff + RING_IDX;
    const old = this.signalledUsed;
    const next = this.nextUsed;
    if (old === next) return false;
    if (r.u16 !== null && (off & 1) === 0) Atomics.store(r.u16, off >> 1, next);
    else r.view.setUint16(off, next, true);
    if (this.mem.onWrite !== null) this.mem.onWrite(this.ringUsed + RING_IDX, 2);
    if (this.observer !== null) this.observer.published(next, true);
    this.signalledUsed = next;
    const flags = this.availFlags();
    if (this.eventIdx === true) {
      if (flags !== 0) this.violation('split.used-buffer-notif-suppr.driver.3', `avail.flags is ${flags} with VIRTIO_F_EVENT_IDX negotiated (must be 0)`, { flags }, false);
      // split.used-buffer-notif-suppr.device.4: the flags' low bit is ignored here.
      return needEvent(this.usedEvent(), next, old);
    }
    if (flags > 1) this.violation('split.used-buffer-notif-suppr.driver.1', `avail.flags is ${flags} (must be 0 or 1)`, { flags }, false);
    // split.used-buffer-notif-suppr.device.1: used_event is ignored without EVENT_IDX.
    return (flags & 1) === 0;
  }

  /** Asks the driver not to send available-buffer notifications (2.7.10). */
  disableNotifications(): void {
    if (!this.active || this.eventIdx) return; // with EVENT_IDX, avail_event simply stays behind
    this.writeUsedFlags(VIRTQ_USED_F_NO_NOTIFY);
  }

  /**
   * Asks for notifications again and re-checks the ring: returns true when buffers arrived
   * meanwhile, so the caller processes them instead of waiting for a notification that the
   * driver, having seen the suppression, will never send.
   */
  enableNotifications(): boolean {
    if (this.active !== true || this.broken === true || this.isPaused === true) return false;
    if (this.eventIdx === true) {
      const r = this.usedRegion!;
      // An atomic (seq-cst) store, not a plain one: a plain store may still sit in this CPU's
      // store buffer when avail.idx is loaded below, while the driver (another process: QEMU's
      // guest, a vhost-user front-end) publishes avail.idx and reads the old avail_event. Both
      // sides then wait for each other: a lost kick (seen as a bench:backends stall at QD1).
      const off = this.availEventAt;
      if (r.u16 !== null && (off & 1) === 0) Atomics.store(r.u16, off >> 1, this.nextAvail);
      else r.view.setUint16(off, this.nextAvail, true);
      if (this.mem.onWrite !== null) this.mem.onWrite(this.ringUsed + (off - this.usedOff), 2);
    } else {
      this.writeUsedFlags(0);
    }
    // The store above is seq-cst (Atomics), a full barrier before the load of avail.idx below.
    return this.pending() > 0;
  }

  private writeUsedFlags(flags: number): void {
    const r = this.usedRegion!;
    const off = this.usedOff + RING_FLAGS;
    if (r.u16 !== null && (off & 1) === 0) Atomics.store(r.u16, off >> 1, flags);
    else r.view.setUint16(off, flags, true);
    if (this.mem.onWrite !== null) this.mem.onWrite(this.ringUsed + RING_FLAGS, 2);
  }

  /** Whether `head` is a chain the device popped and has not returned. */
  isInFlight(head: number): boolean {
    return head < this.ringSize && this.inFlight[head] === 1 && this.stashed[head] !== 1;
  }
}
