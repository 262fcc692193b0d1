/**
 * What the split and packed device queues share: the driver-programmed configuration, the
 * negotiated ring features, restart support for transports (startAt, paused, inflight,
 * resubmit), verdicts, and the IN_ORDER bookkeeping (reserved.bits.device.5: a buffer returned
 * early waits until those made available before it are returned). The ring formats differ in
 * everything else; their classes extend this one.
 */
import type { GuestMemory } from '../memory/guest-memory.js';
import type { Monitor } from '../monitor/monitor.js';
import { DescriptorChain } from './chain.js';
import type { QueueFeatures, ViolationSink } from './queue.js';
import type { InflightTracker, Resubmit, RingPosition } from './queue.js';

export abstract class DeviceQueueBase {
  /** Size the driver chose (at most maxSize). */
  size: number;
  descAddr = 0;
  availAddr = 0;
  usedAddr = 0;
  /** Set by the driver (queue_enable / SET_VRING_ENABLE). */
  enabled = false;
  /** Set by activate(): ring parts resolved and checked. */
  active = false;
  /** A fatal verdict was made; nothing more is taken until reset. */
  broken = false;
  eventIdx = false;
  indirectAllowed = false;
  inOrder = false;
  /**
   * With IN_ORDER: one used element for a run of buffers that were used completely (2.7.9,
   * 2.8.9); off writes one per buffer, which is also allowed.
   */
  batchInOrder = true;
  /** Next available entry (split: free-running 16-bit index; packed: ring slot). */
  nextAvail = 0;
  /** Next used entry (split: free-running 16-bit index; packed: ring slot). */
  nextUsed = 0;
  /** Buffers taken and not yet returned. */
  inFlightCount = 0;
  startAt: RingPosition | null = null;
  paused = false;
  inflight: InflightTracker | null = null;
  /** Buffers to serve again before the ring's own (resubmit()), and how far that got. */
  protected resubmitList: readonly Resubmit[] = [];
  protected resubmitAt = 0;

  // IN_ORDER: buffer ids in the order taken (a ring of `size`), ids returned early waiting for
  // their turn, and ids returned in order whose used entries publish() writes.
  protected readonly order: Uint16Array;
  protected orderHead = 0;
  protected orderTail = 0;
  protected readonly stashed: Uint8Array;
  protected readonly stashLen: Uint32Array;
  /** Per buffer id: its device-writable bytes (a full buffer may join a batched used entry). */
  protected readonly idWritable: Float64Array;
  protected returnedCount = 0;
  protected readonly returnedId: Uint16Array;
  protected readonly returnedLen: Uint32Array;

  /** `ids`: how many buffer ids there are (split: heads < maxSize; packed: any 16-bit id). */
  constructor(
    readonly mem: GuestMemory,
    readonly index: number,
    readonly maxSize: number,
    readonly monitor: Monitor,
    private readonly sink: ViolationSink,
    ids: number,
  ) {
    this.size = maxSize;
    this.order = new Uint16Array(maxSize);
    this.stashed = new Uint8Array(ids);
    this.stashLen = new Uint32Array(ids);
    this.idWritable = new Float64Array(ids);
    this.returnedId = new Uint16Array(maxSize);
    this.returnedLen = new Uint32Array(maxSize);
  }

  /** A chain object big enough for any chain this queue accepts. */
  newChain(): DescriptorChain {
    return DescriptorChain.forQueue(this.maxSize);
  }

  resubmit(buffers: readonly Resubmit[]): void {
    this.resubmitList = buffers.slice();
    this.resubmitAt = 0;
  }

  /** The configuration and position back to their initial state (device reset 2.4, queue reset 2.6). */
  protected resetCommon(): void {
    this.startAt = null;
    this.paused = false;
    this.inflight = null;
    this.resubmitList = [];
    this.resubmitAt = 0;
    this.size = this.maxSize;
    this.descAddr = this.availAddr = this.usedAddr = 0;
    this.enabled = this.active = this.broken = this.eventIdx = this.indirectAllowed = false;
    this.nextAvail = this.nextUsed = 0;
    this.inFlightCount = 0;
  }

  /** The negotiated ring features taken, IN_ORDER bookkeeping emptied (start of activate()). */
  protected activateCommon(features: QueueFeatures): void {
    this.paused = false;
    this.eventIdx = features.eventIdx;
    this.indirectAllowed = features.indirect;
    this.inOrder = features.inOrder === true;
    this.orderHead = this.orderTail = 0;
    this.stashed.fill(0);
    this.returnedCount = 0;
  }

  /** The monitor's verdict on this queue: the message and context name the queue. */
  private report(clause: string, message: string, context: Record<string, unknown>) {
    return this.monitor.report(clause, `queue ${this.index}: ${message}`, { queue: this.index, ...context });
  }

  protected violation(clause: string, message: string, context: Record<string, unknown>, fatal: boolean): void {
    const v = this.report(clause, message, context);
    if (fatal) this.broken = true;
    this.sink(v, fatal);
  }

  /**
   * A servable violation (the driver broke a rule, but what it asked is well-defined and inside
   * guest memory): reported with its clause, not fatal. Returns whether to serve it: in
   * tolerant mode yes; when the monitor acts (strict), the device enters DEVICE_NEEDS_RESET
   * through the sink and the queue takes nothing more, this request included.
   */
  protected servable(clause: string, message: string, context: Record<string, unknown>): boolean {
    const v = this.report(clause, message, context);
    const act = this.monitor.shouldAct(v);
    if (act) this.broken = true;
    this.sink(v, false);
    return !act;
  }

  /** IN_ORDER: buffer `id` was taken (with `writable` device-writable bytes). */
  protected takenInOrder(id: number, writable: number): void {
    this.order[this.orderTail++ % this.size] = id;
    this.idWritable[id] = writable;
  }

  /**
   * reserved.bits.device.5: with IN_ORDER, buffers are used in the order they were made
   * available. One returned early waits until those before it are returned; those now in
   * order move to returnedId/returnedLen for publish() to write.
   */
  protected returnInOrder(id: number, len: number): void {
    this.stashed[id] = 1;
    this.stashLen[id] = len;
    while (this.orderHead !== this.orderTail) {
      const h = this.order[this.orderHead % this.size];
      if (this.stashed[h] !== 1) break;
      this.stashed[h] = 0;
      this.orderHead++;
      this.released(h);
      this.inFlightCount--;
      this.returnedId[this.returnedCount] = h;
      this.returnedLen[this.returnedCount] = this.stashLen[h];
      this.returnedCount++;
    }
  }

  /** Buffer `id` is no longer held by the device (the format's own in-flight record). */
  protected abstract released(id: number): void;
}
