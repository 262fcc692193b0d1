/**
 * vhost-user inflight I/O tracking (vhost-user.rst "Inflight I/O tracking",
 * VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD): a shared buffer the back-end writes and the front-end
 * keeps, recording which buffers the back-end took and has not yet returned. A back-end that
 * restarts (crash, upgrade) gets the buffer back with SET_INFLIGHT_FD and serves those
 * buffers again: nothing the guest submitted is lost, nothing already returned is served twice.
 *
 * Layout (one region per queue, each padded to 64 bytes; split virtqueues):
 *   QueueRegionSplit { u64 features; u16 version; u16 desc_num; u16 last_batch_head;
 *                      u16 used_idx; DescStateSplit desc[desc_num]; }
 *   DescStateSplit   { u8 inflight; u8 padding[5]; u16 next; u64 counter; }
 * Packed virtqueues have their own layout; this back-end does not track them (see README).
 */
import type { InflightTracker } from '../../core/virtqueue/queue.js';

const HEADER = 16;
const DESC = 16;
const ALIGN = 64;
export const INFLIGHT_VERSION = 1;

/** Bytes of one queue's region for a split ring of `queueSize` (padded to 64). */
export function splitInflightQueueSize(queueSize: number): number {
  return Math.ceil((HEADER + DESC * queueSize) / ALIGN) * ALIGN;
}

/** What a restarted ring must do, read from the region a previous back-end left. */
export interface InflightRecovery {
  /** Buffers taken and not returned, oldest first: serve them again before anything new. */
  resubmit: number[];
  /** used.idx as the guest's used ring holds it; the next available index is this + resubmit.length. */
  usedIdx: number;
}

/** One queue's inflight region, as an InflightTracker the split device queue calls. */
export class SplitInflightRegion implements InflightTracker {
  private readonly view: DataView;
  private readonly bytes: Uint8Array;
  private counter = 0;
  /** Heads returned since the last publish (the batch whose inflight flags clear at publish). */
  private readonly batch: Uint16Array;
  private batchCount = 0;

  constructor(
    buffer: ArrayBuffer,
    offset: number,
    readonly queueSize: number,
  ) {
    this.view = new DataView(buffer, offset, splitInflightQueueSize(queueSize));
    this.bytes = new Uint8Array(buffer, offset, splitInflightQueueSize(queueSize));
    this.batch = new Uint16Array(queueSize);
  }

  get version(): number {
    return this.view.getUint16(8, true);
  }

  get descNum(): number {
    return this.view.getUint16(10, true);
  }

  private inflightAt(head: number): number {
    return this.bytes[HEADER + DESC * head];
  }

  private setInflight(head: number, v: number): void {
    this.bytes[HEADER + DESC * head] = v;
  }

  /**
   * Called when the ring starts, with the guest's used.idx. A fresh region is initialised; one
   * a previous back-end left is repaired (its last batch may have been published without its
   * flags cleared: the spec's "When reconnecting" steps) and read. Returns null for a fresh region.
   */
  recover(usedIdx: number): InflightRecovery | null {
    const v = this.view;
    if (this.version === 0) {
      this.bytes.fill(0);
      v.setUint16(8, INFLIGHT_VERSION, true);
      v.setUint16(10, this.queueSize, true);
      v.setUint16(14, usedIdx, true);
      this.counter = 0;
      return null;
    }
    if (this.version !== INFLIGHT_VERSION) throw new Error(`inflight region version ${this.version} (this back-end knows ${INFLIGHT_VERSION})`);
    if (this.descNum !== this.queueSize) throw new Error(`inflight region is for ${this.descNum} descriptors, the ring has ${this.queueSize}`);
    const recorded = v.getUint16(14, true);
    if (recorded !== usedIdx) {
      // The used index moved past what the region says: the last batch was published but its
      // entries may still read in flight. Walk the batch list and clear them.
      const size = (usedIdx - recorded) & 0xffff;
      if (size > this.queueSize) throw new Error(`inflight region's used index ${recorded} is ${size} behind the ring's ${usedIdx}`);
      let head = v.getUint16(12, true);
      for (let i = 0; i < size; i++) {
        if (head >= this.queueSize) throw new Error(`inflight batch list names descriptor ${head} outside the ring`);
        this.setInflight(head, 0);
        head = v.getUint16(HEADER + DESC * head + 6, true);
      }
      v.setUint16(14, usedIdx, true);
    }
    const found: [bigint, number][] = [];
    let max = -1n;
    for (let head = 0; head < this.queueSize; head++) {
      const flag = this.inflightAt(head);
      if (flag > 1) throw new Error(`inflight flag ${flag} at descriptor ${head}`);
      const counter = v.getBigUint64(HEADER + DESC * head + 8, true);
      if (counter > max) max = counter;
      if (flag === 1) found.push([counter, head]);
    }
    found.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    this.counter = Number(max + 1n);
    return { resubmit: found.map(([, head]) => head), usedIdx };
  }

  taken(head: number): void {
    const o = HEADER + DESC * head;
    // u64 counter as two halves (no BigInt per request); exact up to 2^53 requests.
    const c = this.counter++;
    this.view.setUint32(o + 8, c % 0x100000000, true);
    this.view.setUint32(o + 12, Math.floor(c / 0x100000000), true);
    this.bytes[o] = 1;
  }

  returned(head: number): void {
    const v = this.view;
    v.setUint16(HEADER + DESC * head + 6, v.getUint16(12, true), true);
    v.setUint16(12, head, true);
    this.batch[this.batchCount++] = head;
  }

  published(usedIdx: number): void {
    for (let i = 0; i < this.batchCount; i++) this.setInflight(this.batch[i], 0);
    this.batchCount = 0;
    this.view.setUint16(14, usedIdx, true);
  }
}
