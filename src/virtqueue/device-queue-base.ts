/**
 * What the split and packed device queues share: the driver-programmed configuration, the
 * negotiated ring features, the hooks a transport that restarts rings under a live device uses
 * (pause/resume, an observer of buffers taken and returned, buffers to serve first: the restart
 * state itself lives in the transport, e.g. vhost-user's VhostUserRing), verdicts, and the
 * IN_ORDER bookkeeping (reserved.bits.device.5: a buffer returned
 * early waits until those made available before it are returned). The ring formats differ in
 * everything else; their classes extend this one.
 */
import type { GuestMemory } from '../memory/guest-memory.js';
import type { Monitor } from '../monitor/monitor.js';
import { DescriptorChain } from './chain.js';
import type { PriorBuffer, QueueFeatures, QueueObserver, ViolationSink } from './queue.js';
import type { RingAddresses } from '../spec/ring.js';

export abstract class DeviceQueueBase {
  /**
   * The driver-programmed configuration (setSize, setAddresses, setEnabled), read by the ring
   * code through these fields and by everyone else through the getters below.
   */
  protected ringSize: number;
  protected ringDesc = 0;
  protected ringAvail = 0;
  protected ringUsed = 0;
  protected ringEnabled = false;
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
  /** pause(): pop() takes nothing new. Checked on the hot path: a plain field. */
  protected isPaused = false;
  /** setObserver(): told about each buffer taken, returned and published, or null. */
  protected observer: QueueObserver | null = null;
  /** Buffers to serve before the ring's own (serveFirst()), and how far that got. */
  protected priorList: readonly PriorBuffer[] = [];
  protected priorAt = 0;

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
    this.ringSize = maxSize;
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

  /** queue_size: the ring's entries. */
  get size(): number {
    return this.ringSize;
  }

  /** queue_desc: the descriptor area's guest address. */
  get descAddr(): number {
    return this.ringDesc;
  }

  /** queue_driver: the driver area's guest address. */
  get availAddr(): number {
    return this.ringAvail;
  }

  /** queue_device: the device area's guest address. */
  get usedAddr(): number {
    return this.ringUsed;
  }

  /** queue_enable. */
  get enabled(): boolean {
    return this.ringEnabled;
  }

  /** Set by pause(), cleared by resume(), activate() and reset(). */
  get paused(): boolean {
    return this.isPaused;
  }

  /** queue_size (checked at activate(): a bad size is the driver's verdict, not an exception). */
  setSize(size: number): void {
    this.ringSize = size;
  }

  /** queue_desc, queue_driver, queue_device (checked at activate()). */
  setAddresses(addrs: RingAddresses): void {
    this.ringDesc = addrs.desc;
    this.ringAvail = addrs.avail;
    this.ringUsed = addrs.used;
  }

  /** queue_enable (the queue starts at activate()). */
  setEnabled(enabled: boolean): void {
    this.ringEnabled = enabled;
  }

  /** Takes no new buffers until resume(); buffers in progress are still used and published. */
  pause(): void {
    this.isPaused = true;
  }

  /** Takes buffers again after pause(). */
  resume(): void {
    this.isPaused = false;
  }

  /** Told about each buffer taken, returned and published (null: nobody); reset() clears it. */
  setObserver(observer: QueueObserver | null): void {
    this.observer = observer;
  }

  /** Buffers served before anything the ring makes available, in this order; reset() clears them. */
  serveFirst(buffers: readonly PriorBuffer[]): void {
    this.priorList = buffers.slice();
    this.priorAt = 0;
  }

  /** The configuration and position back to their initial state (device reset 2.4, queue reset 2.6). */
  protected resetCommon(): void {
    this.isPaused = false;
    this.observer = null;
    this.priorList = [];
    this.priorAt = 0;
    this.ringSize = this.maxSize;
    this.ringDesc = this.ringAvail = this.ringUsed = 0;
    this.ringEnabled = this.active = this.broken = this.eventIdx = this.indirectAllowed = false;
    this.nextAvail = this.nextUsed = 0;
    this.inFlightCount = 0;
  }

  /** The negotiated ring features taken, IN_ORDER bookkeeping emptied (start of activate()). */
  protected activateCommon(features: QueueFeatures): void {
    this.isPaused = false;
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

  /** A verdict on this queue, named by its clause; `fatal` ones leave the queue broken. */
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
    this.order[this.orderTail++ % this.ringSize] = id;
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
      const h = this.order[this.orderHead % this.ringSize];
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
