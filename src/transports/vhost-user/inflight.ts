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
 * Packed virtqueues: PackedInflightRegion below.
 *
 * Names: "inflight" here is the spec's (a record in shared memory that outlives the back-end);
 * a device queue's own count of buffers it holds is its `inFlightCount`, which knows nothing of
 * this. The regions see the queue's buffers as its QueueObserver.
 *
 * A region read back from the front-end is untrusted: whatever it holds, recover() either
 * returns a recovery a ring can follow or throws a VhostUserError of kind 'inflight'.
 */
import type { NativeAddon } from '../../native/index.js';
import type { PriorBuffer, QueueObserver, RingFormat, RingPosition } from '../../virtqueue/queue.js';
import { VhostUserError } from './errors.js';

const corrupt = (message: string) => new VhostUserError('inflight', message);

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

/** What both layouts keep: the queue's bytes in the shared buffer, the counter, the batch. */
abstract class InflightRegionBase {
  protected readonly view: DataView;
  protected readonly bytes: Uint8Array;
  protected counter = 0;
  /** Entries returned since the last publish (their inflight flags clear at publish). */
  protected readonly batch: Uint16Array;
  protected batchCount = 0;

  constructor(buffer: ArrayBuffer, offset: number, readonly queueSize: number, bytes: number) {
    this.view = new DataView(buffer, offset, bytes);
    this.bytes = new Uint8Array(buffer, offset, bytes);
    this.batch = new Uint16Array(queueSize);
  }

  /** Stores the next counter value (u64 as two halves: no BigInt per request; exact up to 2^53). */
  protected stamp(off: number): void {
    const c = this.counter++;
    this.view.setUint32(off, c % 0x100000000, true);
    this.view.setUint32(off + 4, Math.floor(c / 0x100000000), true);
  }
}

/** One queue's inflight region, as a QueueObserver the split device queue calls. */
export class SplitInflightRegion extends InflightRegionBase implements QueueObserver {
  constructor(buffer: ArrayBuffer, offset: number, queueSize: number) {
    super(buffer, offset, queueSize, splitInflightQueueSize(queueSize));
  }

  get version(): number {
    return this.view.getUint16(8, true);
  }

  /** Back to uninitialised (a reset device has nothing in flight; the next start sets it up). */
  clear(): void {
    this.bytes.fill(0);
    this.batchCount = 0;
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
    if (this.version !== INFLIGHT_VERSION) throw corrupt(`inflight region version ${this.version} (this back-end knows ${INFLIGHT_VERSION})`);
    if (this.descNum !== this.queueSize) throw corrupt(`inflight region is for ${this.descNum} descriptors, the ring has ${this.queueSize}`);
    const recorded = v.getUint16(14, true);
    if (recorded !== usedIdx) {
      // The used index moved past what the region says: the last batch was published but its
      // entries may still read in flight. Walk the batch list and clear them.
      const size = (usedIdx - recorded) & 0xffff;
      if (size > this.queueSize) throw corrupt(`inflight region's used index ${recorded} is ${size} behind the ring's ${usedIdx}`);
      let head = v.getUint16(12, true);
      for (let i = 0; i < size; i++) {
        if (head >= this.queueSize) throw corrupt(`inflight batch list names descriptor ${head} outside the ring`);
        this.setInflight(head, 0);
        head = v.getUint16(HEADER + DESC * head + 6, true);
      }
      v.setUint16(14, usedIdx, true);
    }
    const found: [bigint, number][] = [];
    let max = -1n;
    for (let head = 0; head < this.queueSize; head++) {
      const flag = this.inflightAt(head);
      if (flag > 1) throw corrupt(`inflight flag ${flag} at descriptor ${head}`);
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
    this.stamp(o + 8);
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

/*
 * Packed virtqueues (vhost-user.rst, QueueRegionPacked / DescStatePacked):
 *   header (32 bytes): u64 features; u16 version; u16 desc_num; u16 free_head;
 *     u16 old_free_head; u16 used_idx; u16 old_used_idx; u8 used_wrap_counter;
 *     u8 old_used_wrap_counter; u8 padding[7];
 *   DescStatePacked (32 bytes): u8 inflight; u8 padding; u16 next; u16 last; u16 num;
 *     u64 counter; u16 id; u16 flags; u32 len; u64 addr;
 * The entries copy every descriptor the device takes (the driver may reuse ring slots once the
 * used pointer passed them), linked in a free list; a list's head entry holds inflight, num,
 * last and counter. "old_*" is the state as of the last publish, for rolling back a publish
 * the previous process did not finish.
 */
const P_HEADER = 32;
const P_DESC = 32;
const F_AVAIL = 1 << 7;
const F_USED = 1 << 15;

export function packedInflightQueueSize(queueSize: number): number {
  return Math.ceil((P_HEADER + P_DESC * queueSize) / ALIGN) * ALIGN;
}

export interface PackedInflightRecovery {
  /** Buffers (id and their descriptors) taken and never used, oldest first. */
  resubmit: { head: number; descriptors: { addr: number; len: number; flags: number }[] }[];
  /** Where the ring stands: the used position, and the available one after the buffers above. */
  avail: number;
  availWrap: boolean;
  used: number;
  usedWrap: boolean;
}

export class PackedInflightRegion extends InflightRegionBase implements QueueObserver {
  /** Buffer id -> its head entry while in flight (-1 otherwise). */
  private readonly entryOf = new Int32Array(65536).fill(-1);

  constructor(buffer: ArrayBuffer, offset: number, queueSize: number) {
    super(buffer, offset, queueSize, packedInflightQueueSize(queueSize));
  }

  private u16(off: number): number {
    return this.view.getUint16(off, true);
  }

  /** Back to uninitialised (a reset device has nothing in flight; the next start sets it up). */
  clear(): void {
    this.bytes.fill(0);
    this.batchCount = 0;
    this.entryOf.fill(-1);
  }

  private set16(off: number, v: number): void {
    this.view.setUint16(off, v, true);
  }

  private d(entry: number): number {
    return P_HEADER + P_DESC * entry;
  }

  /**
   * At ring start. A fresh region is initialised at the position the front-end gave; one a
   * previous back-end left is repaired (an unfinished publish is committed when the ring shows
   * it, otherwise rolled back) and read. `flagsAt(slot)` reads a ring slot's flags.
   */
  recover(flagsAt: (slot: number) => number, used: number, usedWrap: boolean): PackedInflightRecovery | null {
    const n = this.queueSize;
    const version = this.u16(8);
    if (version === 0) {
      this.bytes.fill(0);
      this.set16(8, INFLIGHT_VERSION);
      this.set16(10, n);
      for (let e = 0; e < n; e++) this.set16(this.d(e) + 2, e + 1);
      this.set16(16, used);
      this.set16(18, used);
      this.bytes[20] = this.bytes[21] = usedWrap ? 1 : 0;
      this.counter = 0;
      this.entryOf.fill(-1);
      return null;
    }
    if (version !== INFLIGHT_VERSION) throw corrupt(`inflight region version ${version} (this back-end knows ${INFLIGHT_VERSION})`);
    if (this.u16(10) !== n) throw corrupt(`inflight region is for ${this.u16(10)} descriptors, the ring has ${n}`);
    if (this.u16(16) !== this.u16(18)) {
      // A publish was under way: if the ring slot at the old used position no longer reads as
      // available in that pass, the used descriptor reached the driver: keep it.
      const oldUsed = this.u16(18);
      if (oldUsed >= n) throw corrupt(`inflight region's old used index ${oldUsed} is outside the ring`);
      const wrap = this.bytes[21] === 1;
      if ((flagsAt(oldUsed) & (F_AVAIL | F_USED)) !== (wrap ? F_AVAIL : F_USED)) {
        this.set16(14, this.u16(12));
        this.set16(18, this.u16(16));
        this.bytes[21] = this.bytes[20];
      }
    }
    // Roll back to the last completed publish.
    this.set16(12, this.u16(14));
    this.set16(16, this.u16(18));
    this.bytes[20] = this.bytes[21];
    const usedIdx = this.u16(16);
    const wrapNow = this.bytes[20] === 1;
    if (usedIdx >= n) throw corrupt(`inflight region's used index ${usedIdx} is outside the ring`);
    // Entries on the free list are not in flight, whatever their flag says.
    const onFree = new Uint8Array(n);
    let free = 0;
    for (let e = this.u16(12), steps = 0; e < n; e = this.u16(this.d(e) + 2)) {
      if (++steps > n || onFree[e] === 1) throw corrupt('inflight free list loops');
      onFree[e] = 1;
      free++;
      this.bytes[this.d(e)] = 0;
    }
    const found: { counter: bigint; head: number; descriptors: { addr: number; len: number; flags: number }[] }[] = [];
    const owner = new Uint8Array(n);
    let max = -1n;
    let slots = 0;
    this.entryOf.fill(-1);
    for (let e = 0; e < n; e++) {
      const o = this.d(e);
      const flag = this.bytes[o];
      if (flag > 1) throw corrupt(`inflight flag ${flag} at entry ${e}`);
      const counter = this.view.getBigUint64(o + 8, true);
      if (counter > max) max = counter;
      if (flag !== 1) continue;
      const num = this.u16(o + 6);
      if (num < 1 || num > n) throw corrupt(`inflight entry ${e} holds a list of ${num} descriptors`);
      const descriptors: { addr: number; len: number; flags: number }[] = [];
      let id = -1;
      for (let k = 0, x = e; k < num; k++) {
        if (x >= n || owner[x] === 1 || onFree[x] === 1) throw corrupt(`inflight list at entry ${e} runs into entry ${x}`);
        owner[x] = 1;
        const xo = this.d(x);
        const addr = this.view.getUint32(xo + 24, true) + this.view.getUint32(xo + 28, true) * 0x100000000;
        descriptors.push({ addr, len: this.view.getUint32(xo + 20, true), flags: this.u16(xo + 18) });
        if (k === 0) id = this.u16(xo + 16);
        if (k === num - 1 && x !== this.u16(o + 4)) throw corrupt(`inflight list at entry ${e} does not end at its last entry ${this.u16(o + 4)}`);
        x = this.u16(xo + 2);
      }
      if (this.entryOf[id] >= 0) throw corrupt(`buffer id ${id} is in flight twice in the inflight region`);
      this.entryOf[id] = e;
      slots += num;
      found.push({ counter, head: id, descriptors });
    }
    if (slots > n) throw corrupt(`inflight region holds ${slots} descriptors in flight on a ring of ${n}`);
    // Every entry is either on the free list or in a list in flight: taking new buffers walks
    // the free list, so a short one (a head or a next past the ring) would send the next
    // taken() outside the region. (Found by fuzz/inflight.fuzz.ts.)
    if (free + slots !== n) throw corrupt(`inflight free list holds ${free} entries and ${slots} are in flight, on a ring of ${n}`);
    found.sort((a, b) => (a.counter < b.counter ? -1 : a.counter > b.counter ? 1 : 0));
    this.counter = Number(max + 1n);
    this.batchCount = 0;
    let avail = usedIdx + slots;
    let availWrap = wrapNow;
    if (avail >= n) {
      avail -= n;
      availWrap = !availWrap;
    }
    return { resubmit: found.map(({ head, descriptors }) => ({ head, descriptors })), avail, availWrap, used: usedIdx, usedWrap: wrapNow };
  }

  taken(id: number): void {
    const e = this.u16(14); // old_free_head: where this list's head entry goes
    const o = this.d(e);
    this.set16(o + 6, 0);
    this.stamp(o + 8);
    this.bytes[o] = 1;
    this.entryOf[id] = e;
  }

  descriptor(addr: number, len: number, id: number, flags: number, last: boolean): void {
    const head = this.d(this.u16(14));
    const f = this.u16(12);
    if (last) this.set16(head + 4, f);
    this.set16(head + 6, this.u16(head + 6) + 1);
    const o = this.d(f);
    this.view.setUint32(o + 24, addr % 0x100000000, true);
    this.view.setUint32(o + 28, Math.floor(addr / 0x100000000), true);
    this.view.setUint32(o + 20, len, true);
    this.set16(o + 18, flags);
    this.set16(o + 16, id);
    this.set16(12, this.u16(o + 2));
    if (last) this.set16(14, this.u16(12));
  }

  returned(id: number): void {
    const e = this.entryOf[id];
    if (e < 0) return;
    this.entryOf[id] = -1;
    this.batch[this.batchCount++] = e;
  }

  /**
   * The spec's "supplying used buffers" steps, done for the whole batch just before the used
   * descriptors' flags are written: each list's entries go back on the free list, and the
   * used position moves. Not at returned(): a device may take new buffers between returning
   * some and publishing them, and those must not reuse entries of buffers the driver has not
   * seen used (after a crash they are still to be served), nor move free_head under a list
   * being fetched.
   */
  publishing(used: number, usedWrap: boolean): void {
    for (let i = 0; i < this.batchCount; i++) {
      const e = this.batch[i];
      this.set16(this.d(this.u16(this.d(e) + 4)) + 2, this.u16(12));
      this.set16(12, e);
    }
    this.set16(16, used);
    this.bytes[20] = usedWrap ? 1 : 0;
  }

  published(used: number, usedWrap: boolean): void {
    for (let i = 0; i < this.batchCount; i++) this.bytes[this.d(this.batch[i])] = 0;
    this.batchCount = 0;
    this.set16(14, this.u16(12));
    this.set16(18, used);
    this.bytes[21] = usedWrap ? 1 : 0;
  }
}

/** One ring's region of the inflight buffer, in the negotiated ring format. */
export type InflightRegion = SplitInflightRegion | PackedInflightRegion;

/** Bytes of one queue's region in `format`. */
export function inflightQueueSize(format: RingFormat, queueSize: number): number {
  return format === 'packed' ? packedInflightQueueSize(queueSize) : splitInflightQueueSize(queueSize);
}

/**
 * The inflight buffer of one connection (GET_INFLIGHT_FD makes it, SET_INFLIGHT_FD hands it
 * over, perhaps from a previous back-end): mapped shared, one region per ring.
 */
export class InflightBuffer {
  readonly regions: readonly InflightRegion[];

  private constructor(
    /** The mapping (unmapped by unmap()). */
    readonly mapping: ArrayBuffer,
    format: RingFormat,
    readonly numQueues: number,
    readonly queueSize: number,
  ) {
    const per = inflightQueueSize(format, queueSize);
    this.regions = Array.from({ length: numQueues }, (_, i) =>
      format === 'packed' ? new PackedInflightRegion(mapping, i * per, queueSize) : new SplitInflightRegion(mapping, i * per, queueSize),
    );
  }

  /**
   * Why a buffer of `numQueues` rings of `queueSize` cannot be tracked in for a device of
   * `deviceQueues` queues, as a VhostUserError of kind 'inflight'; null when it can.
   */
  static shapeProblem(numQueues: number, queueSize: number, deviceQueues: number): VhostUserError | null {
    if (numQueues < 1 || numQueues > deviceQueues) return corrupt(`inflight buffer for ${numQueues} queues; the device has ${deviceQueues}`);
    if (queueSize < 1 || queueSize > 32768 || (queueSize & (queueSize - 1)) !== 0) return corrupt(`inflight queue size ${queueSize} is not a power of two <= 32768`);
    return null;
  }

  /** Maps `size` bytes of `fd` from `offset` (checked by the caller: the fd is long enough, sealed if it can be). */
  static map(n: NativeAddon, fd: number, offset: number, size: number, format: RingFormat, numQueues: number, queueSize: number): InflightBuffer {
    return new InflightBuffer(n.mmap(fd, offset, size, true), format, numQueues, queueSize);
  }

  /** Back to uninitialised: a reset device has nothing in flight (each region starts over at its ring's next start). */
  clear(): void {
    for (const region of this.regions) region.clear();
  }

  unmap(n: NativeAddon): void {
    n.munmap(this.mapping);
  }
}

/** What a restarted ring does, from its inflight region: serve `resubmit` first, then go on from `start`. */
export interface RingRecovery {
  start: RingPosition;
  resubmit: PriorBuffer[];
}

/**
 * A ring's start, read through its inflight region. A fresh region is initialised at `start`;
 * one a previous back-end filled is repaired and read: the buffers it took and never returned
 * are served again first, and the start moves after them (what libvhost-user does for split
 * rings: the base the front-end restored after losing its back-end is the used position, which
 * would serve some twice when requests finished out of order; for packed rings QEMU cannot
 * restore a base at all). `flagsAt(slot)` reads a packed ring slot's flags. Throws a
 * VhostUserError of kind 'inflight' when the region cannot be right.
 */
export function recoverRing(region: InflightRegion, start: RingPosition, flagsAt: (slot: number) => number): RingRecovery {
  if (region instanceof PackedInflightRegion) {
    const got = region.recover(flagsAt, start.used, start.usedWrap);
    if (got === null) return { start, resubmit: [] };
    return { start: { avail: got.avail, availWrap: got.availWrap, used: got.used, usedWrap: got.usedWrap }, resubmit: got.resubmit };
  }
  const got = region.recover(start.used);
  if (got === null) return { start, resubmit: [] };
  const resubmit = got.resubmit.map((head) => ({ head }));
  return { start: { ...start, avail: (got.usedIdx + resubmit.length) & 0xffff }, resubmit };
}
