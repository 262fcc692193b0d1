/**
 * Split virtqueue layout, spec 2.7: sizes, alignments and field offsets.
 */

export const DESC_SIZE = 16;
export const DESC_ADDR = 0;
export const DESC_LEN = 8;
export const DESC_FLAGS = 12;
export const DESC_NEXT = 14;

export const RING_FLAGS = 0;
export const RING_IDX = 2;
export const AVAIL_RING = 4;
export const USED_RING = 4;
export const USED_ELEM_SIZE = 8;

/** Alignment of each part (2.7, table "Virtqueue Part Alignment"): split.alignment.driver.1. */
export const DESC_ALIGN = 16;
export const AVAIL_ALIGN = 2;
export const USED_ALIGN = 4;

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

export function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

/** Guest address of used.idx, for a used ring at `used` (what a device restarting a ring reads). */
export function usedIdxAddress(used: number): number {
  return used + RING_IDX;
}
