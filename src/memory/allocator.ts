/**
 * A first-fit allocator over a range of guest memory, for drivers: rings, indirect pools,
 * request headers and data buffers. Not a hot path (drivers allocate per queue, and reuse
 * request buffers).
 */
import { MemoryError } from './guest-memory.js';

/**
 * A first-fit allocator of guest addresses in [base, base+size): a driver's rings, indirect
 * pools and request buffers. Out of room is a MemoryError (`out-of-memory`).
 */
export class GuestAllocator {
  /** Free ranges [start, end), sorted, coalesced. */
  private free: { start: number; end: number }[];
  private readonly sizes = new Map<number, number>();

  /** Allocates from [base, base+size), all free at first. */
  constructor(
    readonly base: number,
    readonly size: number,
  ) {
    this.free = [{ start: base, end: base + size }];
  }

  /** Returns the guest address of `size` bytes aligned to `align` (a power of two). */
  alloc(size: number, align = 8): number {
    if (!(size > 0)) throw new RangeError(`allocation size ${size} must be positive`);
    for (let i = 0; i < this.free.length; i++) {
      const r = this.free[i];
      const start = Math.ceil(r.start / align) * align;
      if (start + size > r.end) continue;
      // Shrink or split the range in place (no new objects unless it splits in two).
      const end = start + size;
      if (start === r.start) {
        if (end === r.end) this.free.splice(i, 1);
        else r.start = end;
      } else if (end === r.end) r.end = start;
      else {
        this.free.splice(i + 1, 0, { start: end, end: r.end });
        r.end = start;
      }
      this.sizes.set(start, size);
      return start;
    }
    throw new MemoryError('out-of-memory', `guest allocator out of memory (${size} bytes wanted, ${this.available} free)`, this.base, size);
  }

  /** Frees an address returned by alloc. */
  release(addr: number): void {
    const size = this.sizes.get(addr);
    if (size === undefined) throw new RangeError(`0x${addr.toString(16)} was not allocated here`);
    this.sizes.delete(addr);
    const free = this.free;
    // Binary search: first free range starting after addr.
    let lo = 0;
    let hi = free.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (free[mid].start < addr) lo = mid + 1;
      else hi = mid;
    }
    const end = addr + size;
    const prev = lo > 0 ? free[lo - 1] : undefined;
    const next = lo < free.length ? free[lo] : undefined;
    // Coalesce with neighbours in place: no new objects unless the range stands alone.
    if (prev !== undefined && prev.end === addr) {
      if (next !== undefined && next.start === end) {
        prev.end = next.end;
        free.splice(lo, 1);
      } else prev.end = end;
    } else if (next !== undefined && next.start === end) next.start = addr;
    else free.splice(lo, 0, { start: addr, end });
  }

  /** Free bytes (in any number of ranges). */
  get available(): number {
    return this.free.reduce((n, r) => n + (r.end - r.start), 0);
  }
}
