/**
 * Packed virtqueue layout, spec 2.8: a ring of 16-byte descriptors {addr u64, len u32,
 * id u16, flags u16} and two 4-byte event suppression structures {off_wrap u16, flags u16}.
 */

export const PDESC_SIZE = 16;
export const PDESC_ADDR = 0;
export const PDESC_LEN = 8;
export const PDESC_ID = 12;
export const PDESC_FLAGS = 14;

/** Descriptor flags (2.8.1, 2.8.4). */
export const PDESC_F_NEXT = 1;
export const PDESC_F_WRITE = 2;
export const PDESC_F_INDIRECT = 4;
export const PDESC_F_AVAIL = 1 << 7;
export const PDESC_F_USED = 1 << 15;
// The same two for the functions below, which the rings call per descriptor: an exported const
// is a module cell that optimized code loads (with a TDZ check) at every use; these are folded.
const F_AVAIL = 1 << 7;
const F_USED = 1 << 15;

/** Event suppression structure: offset 0 desc_event_off_wrap, offset 2 desc_event_flags (2.8.10). */
export const EVENT_OFF_WRAP = 0;
export const EVENT_FLAGS = 2;
export const RING_EVENT_FLAGS_ENABLE = 0;
export const RING_EVENT_FLAGS_DISABLE = 1;
export const RING_EVENT_FLAGS_DESC = 2;

/** Alignment (2.8.10.1 table): packed.ring.driver.1. */
export const PDESC_ALIGN = 16;
export const EVENT_ALIGN = 4;
export const EVENT_SIZE = 4;

/** Largest packed queue (any size up to 32768, not only powers of two). */
export const MAX_PACKED_SIZE = 32768;

export function packedRingSize(size: number): number {
  return PDESC_SIZE * size;
}

/** Guest address of the flags of descriptor `slot` in a descriptor ring at `ring`. */
export function packedFlagsAddress(ring: number, slot: number): number {
  return ring + slot * PDESC_SIZE + PDESC_FLAGS;
}

/** Flags that make a descriptor available in a pass whose wrap counter is `wrap`. */
export function availFlags(wrap: boolean): number {
  return wrap ? F_AVAIL : F_USED;
}

/** Flags of a used descriptor written in a pass whose wrap counter is `wrap`. */
export function usedFlags(wrap: boolean): number {
  return wrap ? F_AVAIL | F_USED : 0;
}

/**
 * A descriptor is available to the device when AVAIL matches the wrap counter and USED does not:
 * the two bits are AVAIL alone in a pass with wrap counter 1, USED alone with 0. (One mask and
 * one integer compare: comparing the two bits as booleans made the optimized code materialize
 * true/false objects for each, several times the instructions, on every descriptor.)
 */
export function isAvailable(flags: number, wrap: boolean): boolean {
  return (flags & (F_AVAIL | F_USED)) === (wrap === true ? F_AVAIL : F_USED);
}

/** A descriptor is used (for the driver) when AVAIL and USED both equal the wrap counter. */
export function isUsed(flags: number, wrap: boolean): boolean {
  return (flags & (F_AVAIL | F_USED)) === (wrap === true ? F_AVAIL | F_USED : 0);
}

/**
 * Whether an event at (off, wrap) falls in the ring positions [old, next) just passed, with
 * positions counted linearly (pass k covers [k*size, (k+1)*size); wrap is 1 on even passes).
 */
export function packedNeedEvent(offWrap: number, size: number, oldLinear: number, nextLinear: number): boolean {
  const off = offWrap & 0x7fff;
  const wrap = offWrap >> 15;
  if (off >= size) return false;
  const cycle = 2 * size;
  const event = off + (wrap === 1 ? 0 : size);
  const from = oldLinear % cycle;
  const dist = (((event - from) % cycle) + cycle) % cycle;
  return dist < nextLinear - oldLinear;
}
