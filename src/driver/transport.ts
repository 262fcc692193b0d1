/**
 * What a driver needs from a transport (spec 4: PCI, MMIO; and this project's loopback and
 * vhost-user frontend). Control operations are asynchronous so that message-based transports
 * fit; notifications are fire-and-forget.
 */
import type { GuestMemory } from '../memory/guest-memory.js';
import type { RingAddresses } from '../spec/ring.js';

/** What a transport tells the driver it serves (its handlers, registered with DriverTransport.listen). */
export interface TransportEvents {
  /** Used-buffer notification for a queue. */
  used(queue: number): void;
  /** Configuration change notification. */
  config(): void;
}

/**
 * The transport a VirtioDriver talks through: the device's registers (status, features,
 * configuration space, queue setup) as calls, notifications both ways.
 */
export interface DriverTransport {
  /** Guest memory the driver places rings and buffers in (shared with the device). */
  readonly memory: GuestMemory;
  /** Transport-specific feature bits the transport itself supports (e.g. no NOTIFICATION_DATA on loopback). */
  readonly supportedTransportFeatures?: bigint;
  /** True when notify() returns only after the device handled it and any notification back arrived. */
  readonly synchronous?: boolean;

  /** The device type (5: the device ids of the spec). */
  deviceId(): Promise<number>;
  /** The device status field (2.1). */
  getStatus(): Promise<number>;
  /** Writes the device status field (0 resets the device). */
  setStatus(status: number): Promise<void>;
  /** The feature bits the device offers (all 64 of them). */
  getDeviceFeatures(): Promise<bigint>;
  /** The feature bits the driver accepts. */
  setDriverFeatures(features: bigint): Promise<void>;
  /** config_generation (2.5): changes when the configuration space changed. */
  configGeneration(): Promise<number>;
  /** Reads 1, 2, 4 or 8 bytes of device configuration space. */
  readConfig(offset: number, size: 1 | 2 | 4 | 8): Promise<number | bigint>;
  /** Writes 1, 2, 4 or 8 bytes of device configuration space. */
  writeConfig(offset: number, size: 1 | 2 | 4 | 8, value: number | bigint): Promise<void>;
  /** How many virtqueues the device has. */
  numQueues(): Promise<number>;
  /** The largest size queue `index` takes (0: no such queue). */
  queueMaxSize(index: number): Promise<number>;
  /** Tells the device queue `index`'s size and the guest addresses of its three parts (not yet enabled). */
  setupQueue(index: number, size: number, addrs: RingAddresses): Promise<void>;
  /** Enables queue `index` (queue_enable = 1). */
  enableQueue(index: number): Promise<void>;
  /**
   * Available-buffer notification. With VIRTIO_F_NOTIFICATION_DATA, `data` is the 32-bit value
   * of 2.9 (vq index | next_off << 16 | next_wrap << 31).
   */
  notify(index: number, data?: number): void;
  /** Whether notifications can carry VIRTIO_F_NOTIFICATION_DATA. */
  readonly notificationData?: boolean;
  /** VIRTIO_F_RING_RESET (2.6.1): ask the device to reset one queue. */
  resetQueue?(index: number): Promise<void>;
  /** Whether a queue reset is still in progress (queue_reset reads 1). */
  queueResetPending?(index: number): Promise<boolean>;
  /** Whether the queue is enabled (queue_enable). */
  queueEnabled?(index: number): Promise<boolean>;
  /**
   * The device is driven through a legacy interface (virtio-mmio version 1, the PCI legacy I/O
   * BAR): the driver follows 3.1.2 (no FEATURES_OK, feature bits 0-31 only, split rings laid
   * out as 2.7.2's legacy layout).
   */
  readonly legacy?: {
    /** Alignment of the used ring from the descriptor table's start (legacy QueueAlign: 4096 on PCI). */
    readonly queueAlign: number;
    /** The queue size is the device's maximum and cannot be chosen (PCI legacy: Queue Size is read-only). */
    readonly fixedQueueSize: boolean;
  };
  /** Registers the driver's notification handlers (one set per transport). */
  listen(events: TransportEvents): void;
  /** Lets go of the transport's resources (sockets, pending notifications). */
  close?(): Promise<void>;
}
