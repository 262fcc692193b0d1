/**
 * What both ring formats share (spec 2.6): a virtqueue is three parts in guest memory, set by
 * the driver (queue_desc, queue_driver, queue_device on PCI and MMIO; SET_VRING_ADDR over
 * vhost-user). The field names follow the split ring's; on a packed ring `avail` is the driver
 * event suppression structure and `used` the device event suppression structure (2.8.10).
 */
export interface RingAddresses {
  /** Descriptor area: the descriptor table (split) or the descriptor ring (packed). */
  desc: number;
  /** Driver area: the available ring (split) or the driver event suppression structure (packed). */
  avail: number;
  /** Device area: the used ring (split) or the device event suppression structure (packed). */
  used: number;
}
