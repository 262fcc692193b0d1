/**
 * What a driver needs from a transport (spec 4: PCI, MMIO; and this project's loopback and
 * vhost-user frontend). Control operations are asynchronous so that message-based transports
 * fit; notifications are fire-and-forget.
 */
import type { GuestMemory } from '../memory/guest-memory.js';
import type { RingAddresses } from '../spec/ring.js';

export interface TransportEvents {
  /** Used-buffer notification for a queue. */
  used(queue: number): void;
  /** Configuration change notification. */
  config(): void;
}

export interface DriverTransport {
  /** Guest memory the driver places rings and buffers in (shared with the device). */
  readonly memory: GuestMemory;
  /** Transport-specific feature bits the transport itself supports (e.g. no NOTIFICATION_DATA on loopback). */
  readonly supportedTransportFeatures?: bigint;
  /** True when notify() returns only after the device handled it and any notification back arrived. */
  readonly synchronous?: boolean;

  deviceId(): Promise<number>;
  getStatus(): Promise<number>;
  setStatus(status: number): Promise<void>;
  getDeviceFeatures(): Promise<bigint>;
  setDriverFeatures(features: bigint): Promise<void>;
  configGeneration(): Promise<number>;
  /** Reads 1, 2, 4 or 8 bytes of device configuration space. */
  readConfig(offset: number, size: 1 | 2 | 4 | 8): Promise<number | bigint>;
  writeConfig(offset: number, size: 1 | 2 | 4 | 8, value: number | bigint): Promise<void>;
  numQueues(): Promise<number>;
  queueMaxSize(index: number): Promise<number>;
  setupQueue(index: number, size: number, addrs: RingAddresses): Promise<void>;
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
  /** Registers the driver's notification handlers (one set per transport). */
  listen(events: TransportEvents): void;
  close?(): Promise<void>;
}
