/**
 * One virtqueue interface for both ring formats (spec 2.7 split, 2.8 packed). Device types
 * and drivers program against these; the format follows the negotiated VIRTIO_F_RING_PACKED.
 */
import type { Verdict } from '../monitor/monitor.js';
import type { DescriptorChain } from './chain.js';
import type { RingAddresses } from '../spec/ring.js';

/** The ring format of a virtqueue: split (2.7) or packed (2.8, VIRTIO_F_RING_PACKED). */
export type RingFormat = 'split' | 'packed';

/** What the device core does with a verdict: `fatal` ones leave the queue unusable. */
export type ViolationSink = (verdict: Verdict, fatal: boolean) => void;

/** Negotiated features a ring cares about. */
export interface QueueFeatures {
  eventIdx: boolean;
  indirect: boolean;
  /** VIRTIO_F_IN_ORDER: buffers are used in the order they were made available. */
  inOrder?: boolean;
}

/**
 * Where a ring stands: the next available slot the device will look at and the next used slot
 * it will write, with their wrap counters (packed rings; split rings ignore them, their
 * indices are free-running 16-bit counters). A transport that stops a ring and starts it again
 * later under a running driver (vhost-user GET_VRING_BASE / SET_VRING_BASE) carries this.
 */
export interface RingPosition {
  avail: number;
  availWrap: boolean;
  used: number;
  usedWrap: boolean;
}

/**
 * Told about every buffer a device queue takes, returns and publishes (setObserver()), so that
 * a record kept outside the device survives the device's process: vhost-user's inflight region,
 * shared with the front-end, from which a restarted back-end serves again the buffers taken and
 * never returned. Called on the hot path: an observer must not allocate.
 */
export interface QueueObserver {
  /** Buffer `head` (split: its head descriptor; packed: its buffer id) was taken from the ring. */
  taken(head: number): void;
  /** Packed rings, after taken(): each ring descriptor of the list, in order. */
  descriptor?(addr: number, len: number, id: number, flags: number, last: boolean): void;
  /** Buffer `head` was written to the used ring (visible at the next publish). */
  returned(head: number): void;
  /** Packed rings: the used position about to be published (before the flags are written). */
  publishing?(usedIdx: number, usedWrap: boolean): void;
  /**
   * The used index was published: every returned buffer is visible. Split: `usedIdx` is
   * used.idx; packed: the used slot and its wrap counter.
   */
  published(usedIdx: number, usedWrap: boolean): void;
}

/**
 * A buffer to serve before the ring's own (serveFirst()): one a previous device process took
 * and never used (vhost-user inflight recovery).
 */
export interface PriorBuffer {
  /** Split: the head descriptor. Packed: the buffer id. */
  head: number;
  /** Packed: the list's ring descriptors as they were taken (the ring slots may hold others now). */
  descriptors?: readonly { addr: number; len: number; flags: number }[];
}

/** The device side of a virtqueue. */
export interface DeviceQueue {
  readonly format: RingFormat;
  readonly index: number;
  readonly maxSize: number;
  /**
   * Driver-programmed configuration (queue_size, queue_desc, queue_driver, queue_device,
   * queue_enable): read here, written through setSize(), setAddresses() and setEnabled() by
   * the device core (or a transport that restarts a ring under a live device).
   */
  readonly size: number;
  readonly descAddr: number;
  readonly availAddr: number;
  readonly usedAddr: number;
  readonly enabled: boolean;
  readonly active: boolean;
  readonly broken: boolean;
  /** Buffers taken and not yet returned. */
  readonly inFlightCount: number;
  /** Set by pause(), cleared by resume(), activate() and reset(). */
  readonly paused: boolean;
  /** queue_size: takes effect at the next activate(). */
  setSize(size: number): void;
  /** queue_desc / queue_driver / queue_device: take effect at the next activate(). */
  setAddresses(addrs: RingAddresses): void;
  /** queue_enable. */
  setEnabled(enabled: boolean): void;
  /** Where the ring stands now (after every buffer taken is used: what a restart resumes from). */
  position(): RingPosition;
  /**
   * Stops taking new buffers (pop() finds none, enableNotifications() reports none); buffers
   * in progress are still used and published. How a transport stops a ring under a live
   * device (vhost-user GET_VRING_BASE) without losing the requests it holds.
   */
  pause(): void;
  /** Takes buffers again after pause(). */
  resume(): void;
  /** Told about each buffer taken, returned and published (null: nobody); reset() clears it. */
  setObserver(observer: QueueObserver | null): void;
  /** Buffers served before anything the ring makes available, in this order; reset() clears them. */
  serveFirst(buffers: readonly PriorBuffer[]): void;
  /** A chain object big enough for any chain this queue accepts. */
  newChain(): DescriptorChain;
  /** Back to the initial state (device reset 2.4, queue reset 2.6): configuration, position, hooks. */
  reset(): void;
  /**
   * Checks the configuration and starts the queue (at DRIVER_OK or on enable), from the ring's
   * beginning or from `start` (a ring restarted where it stopped: vhost-user SET_VRING_BASE).
   */
  activate(features: QueueFeatures, start?: RingPosition): boolean;
  /** Takes the next available buffer into `chain` (its id in `chain.head`); false if none or malformed. */
  pop(chain: DescriptorChain): boolean;
  /** Returns buffer `id` with `len` bytes written; visible at the next publish(). */
  addUsed(id: number, len: number): void;
  /** Makes returned buffers visible; true when the driver wants a notification. */
  publish(): boolean;
  /** Asks the driver not to send available-buffer notifications. */
  disableNotifications(): void;
  /** Asks for notifications again; true when buffers arrived meanwhile (process them). */
  enableNotifications(): boolean;
  /** Whether buffer `id` is one the device took and has not returned. */
  isInFlight(id: number): boolean;
  /** A value that changes when the driver makes buffers available (suspend checks). */
  availMark(): number;
  /** On synchronous transports: audits the driver's notification decisions. */
  kickAudit(notified: boolean): void;
  /**
   * VIRTIO_F_NOTIFICATION_DATA: checks next_off / next_wrap (bits 16-31 of `data`) against the
   * ring; returns a description of the mismatch, or null.
   */
  checkNotificationData(data: number): string | null;
}

/**
 * The driver side of a virtqueue. `T` is the type of the token the driver attaches to each
 * buffer (commit) and gets back with it (getUsed, drainAfterReset); never undefined, which
 * getUsed() answers when no buffer is used.
 */
export interface DriverQueue<T extends {} | null = {} | null> {
  readonly format: RingFormat;
  readonly index: number;
  readonly size: number;
  readonly addrs: { desc: number; avail: number; used: number };
  /** Free descriptors (split) or ring slots (packed). */
  readonly numFree: number;
  /** Buffers made available and not yet collected. */
  readonly inFlightCount: number;
  readonly broken: boolean;
  /** Length (held to the buffer's writable bytes) and id of the buffer last returned by getUsed(). */
  readonly lastLen: number;
  readonly lastId: number;
  /** Used-buffer notifications received for this queue (the driver core counts them here). */
  usedNotifications: number;
  /** Starts a new chain (buffers added next, committed together). */
  begin(): this;
  /** Appends a device-readable buffer (before any device-writable one). */
  addReadable(addr: number, len: number): this;
  /** Appends a device-writable buffer. */
  addWritable(addr: number, len: number): this;
  /** Returns the buffer id, or -1 when there is no room (or the queue is broken). */
  commit(token: T, options?: { indirect?: boolean }): number;
  /** Exposes committed buffers; true when the device wants a notification. */
  publish(): boolean;
  /** Whether a used buffer is waiting (no checks, no side effects). */
  peekUsed(): boolean;
  /** Buffers the device returned that getUsed() has not handed back yet. */
  usedPending(): number;
  /** The token of the next used buffer (its length in lastLen), or undefined. */
  getUsed(): T | undefined;
  /** Asks the device for used-buffer notifications again; true when used buffers are already waiting (collect them). */
  enableInterrupts(): boolean;
  /** Tells the device the driver needs no used-buffer notifications for now. */
  disableInterrupts(): void;
  /** After a device reset: every buffer back (init.cleanup.driver.2). */
  drainAfterReset(): T[];
  /** The 32-bit notification value with VIRTIO_F_NOTIFICATION_DATA: vq index | next_off | next_wrap. */
  notificationData(): number;
  /**
   * Synchronous transports (the device has done its work when notify returns, and its
   * notification back arrived inside the call): audits a used-buffer notification that just
   * arrived against what the driver asked for; a verdict goes to the queue's sink. Formats with
   * no such rule (packed) do nothing.
   */
  auditUsedNotification(): void;
  /** Synchronous transports: the device's used position now, before a notify. */
  usedMark(): number;
  /**
   * Synchronous transports, after a notify that brought no used-buffer notification back:
   * audits whether the device owed one for what it used since `mark`.
   */
  auditMissedNotification(mark: number): void;
  /**
   * Synchronous transports: whether the device has used buffers the driver has not collected
   * although it asked to be notified of them (a notification would have made it collect them).
   * Formats with no such rule (packed) say false.
   */
  unannouncedUsed(): boolean;
}

/**
 * What createDriverQueue takes: the negotiated ring features and how long an indirect table
 * may be (it places the indirect pool itself). The ring classes' own constructors take
 * DriverRingOptions, with the pool already placed.
 */
export interface DriverQueueOptions {
  eventIdx: boolean;
  indirect: boolean;
  inOrder?: boolean;
  /** Entries per indirect table (0: no indirect tables). */
  indirectMax: number;
  /** See DriverRingOptions.auditReadable. */
  auditReadable?: boolean;
  /** Split rings of a legacy interface (2.7.2): the used ring starts at this alignment (QueueAlign). */
  usedAlign?: number;
}
