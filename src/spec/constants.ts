/**
 * Numbers from the VIRTIO 1.4 spec: device status bits (2.1), reserved feature bits (6),
 * split virtqueue flags and layout (2.7).
 */

/** Device status bits, spec 2.1. */
export const Status = {
  ACKNOWLEDGE: 1,
  DRIVER: 2,
  DRIVER_OK: 4,
  FEATURES_OK: 8,
  SUSPEND: 16,
  DEVICE_NEEDS_RESET: 64,
  FAILED: 128,
} as const;

/** Names of the set status bits, lowest first: `ACKNOWLEDGE|DRIVER`. */
export function statusNames(status: number): string {
  if (status === 0) return '0 (reset)';
  const names: string[] = [];
  for (const [name, bit] of Object.entries(Status)) if (status & bit) names.push(name);
  const unknown = status & ~Object.values(Status).reduce((a, b) => a | b, 0);
  if (unknown) names.push(`0x${unknown.toString(16)}`);
  return names.join('|');
}

/** Device-independent feature bits, spec 6 (Reserved Feature Bits). */
export const Feature = {
  NOTIFY_ON_EMPTY: 24,
  ANY_LAYOUT: 27,
  INDIRECT_DESC: 28,
  EVENT_IDX: 29,
  VERSION_1: 32,
  ACCESS_PLATFORM: 33,
  RING_PACKED: 34,
  IN_ORDER: 35,
  ORDER_PLATFORM: 36,
  SR_IOV: 37,
  NOTIFICATION_DATA: 38,
  NOTIF_CONFIG_DATA: 39,
  RING_RESET: 40,
  ADMIN_VQ: 41,
  SUSPEND: 43,
} as const;

/**
 * Bit 30 of the legacy interface: "UNUSED (30)" in the spec's Legacy Interface: Reserved Feature
 * Bits (QEMU's legacy virtio-pci offers it to catch early buggy drivers). A transitional device
 * may offer it through the legacy interface; a driver ignores it and never accepts it.
 */
export const LEGACY_UNUSED_FEATURE_BIT = 30;

/** Device-type ids, spec 5. */
export const DeviceId = {
  NET: 1,
  BLOCK: 2,
  CONSOLE: 3,
  ENTROPY: 4,
  SOCKET: 19,
  FS: 26,
} as const;

/** Split virtqueue descriptor flag (2.7.5): the chain continues at the descriptor in `next`. */
export const VIRTQ_DESC_F_NEXT = 1;
/** Split virtqueue descriptor flag (2.7.5): the buffer is device-writable (else device-readable). */
export const VIRTQ_DESC_F_WRITE = 2;
/** Split virtqueue descriptor flag (2.7.5.3): the buffer holds an indirect descriptor table. */
export const VIRTQ_DESC_F_INDIRECT = 4;
/** avail.flags: the driver does not want used-buffer notifications (2.7.7). */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
/** used.flags: the device does not want available-buffer notifications (2.7.10). */
export const VIRTQ_USED_F_NO_NOTIFY = 1;

/** Largest split queue size (2.7: Queue Size is a power of 2, at most 32768). */
export const MAX_QUEUE_SIZE = 32768;
