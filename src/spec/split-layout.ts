/**
 * Split virtqueue layout, spec 2.7: sizes, alignments and field offsets of the descriptor
 * table, the driver area (available ring) and the device area (used ring), all little-endian.
 *
 * @packageDocumentation
 */

/** Size of one struct virtq_desc {le64 addr, le32 len, le16 flags, le16 next} (2.7.5). */
export const DESC_SIZE = 16;
/** Offset of a descriptor's le64 addr: the buffer's guest-physical address. */
export const DESC_ADDR = 0;
/** Offset of a descriptor's le32 len: the buffer's length in bytes. */
export const DESC_LEN = 8;
/** Offset of a descriptor's le16 flags (VIRTQ_DESC_F_NEXT, _WRITE, _INDIRECT). */
export const DESC_FLAGS = 12;
/** Offset of a descriptor's le16 next: the following descriptor when VIRTQ_DESC_F_NEXT is set. */
export const DESC_NEXT = 14;

/** Offset of le16 flags in both the available and the used ring (2.7.6, 2.7.8). */
export const RING_FLAGS = 0;
/** Offset of le16 idx, the free-running producer index, in both rings (2.7.6, 2.7.8). */
export const RING_IDX = 2;
/** Offset of the available ring's ring[] of le16 descriptor heads (2.7.6). */
export const AVAIL_RING = 4;
/** Offset of the used ring's ring[] of struct virtq_used_elem (2.7.8). */
export const USED_RING = 4;
/** Size of one struct virtq_used_elem {le32 id, le32 len} (2.7.8). */
export const USED_ELEM_SIZE = 8;

/** Alignment of each part (2.7, table "Virtqueue Part Alignment"): split.alignment.driver.1. */
export const DESC_ALIGN = 16;
/** Alignment of the driver area (available ring), split.alignment.driver.1. */
export const AVAIL_ALIGN = 2;
/** Alignment of the device area (used ring), split.alignment.driver.1. */
export const USED_ALIGN = 4;

/** Bytes of the descriptor table of a queue of `size` entries. */
export function descTableSize(size: number): number {
  return DESC_SIZE * size;
}
/** Driver area: flags, idx, ring[size], used_event. */
export function availRingSize(size: number): number {
  return 6 + 2 * size;
}
/** Device area: flags, idx, ring[size] of {id, len}, avail_event. */
export function usedRingSize(size: number): number {
  return 6 + USED_ELEM_SIZE * size;
}
/** Offset of used_event inside the driver area. */
export function usedEventOffset(size: number): number {
  return AVAIL_RING + 2 * size;
}
/** Offset of avail_event inside the device area. */
export function availEventOffset(size: number): number {
  return USED_RING + USED_ELEM_SIZE * size;
}

/**
 * vring_need_event (2.7.10 and Linux virtio_ring.h): whether moving an index from `old` to
 * `next` crossed `event`, i.e. the entry at index `event` was written in this batch.
 * All arithmetic modulo 2^16, so it holds across wrap-around.
 */
export function needEvent(event: number, next: number, old: number): boolean {
  return ((next - event - 1) & 0xffff) < ((next - old) & 0xffff);
}

/** Whether `n` is a power of 2, as a split queue's size must be (2.7). */
export function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

/** Guest address of used.idx, for a used ring at `used` (what a device restarting a ring reads). */
export function usedIdxAddress(used: number): number {
  return used + RING_IDX;
}
