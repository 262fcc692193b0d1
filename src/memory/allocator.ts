/**
 * A first-fit allocator over a range of guest memory, for drivers: rings, indirect pools,
 * request headers and data buffers. Not a hot path (drivers allocate per queue, and reuse
 * request buffers).
 */
import { MemoryError } from './guest-memory.js';

export class GuestAllocator {
  /** Free ranges [start, end), sorted, coalesced. */
  private free: { start: number; end: number }[];
  private readonly sizes = new Map<number, number>();

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
      const pieces: { start: number; end: number }[] = [];
      if (start > r.start) pieces.push({ start: r.start, end: start });
      if (start + size < r.end) pieces.push({ start: start + size, end: r.end });
      this.free.splice(i, 1, ...pieces);
      this.sizes.set(start, size);
      return start;
    }
    throw new MemoryError(`guest allocator out of memory (${size} bytes wanted, ${this.available} free)`, this.base, size);
  }

  /** Frees an address returned by alloc. */
  release(addr: number): void {
    const size = this.sizes.get(addr);
    if (size === undefined) throw new RangeError(`0x${addr.toString(16)} was not allocated here`);
    this.sizes.delete(addr);
    let i = 0;
    while (i < this.free.length && this.free[i].start < addr) i++;
    this.free.splice(i, 0, { start: addr, end: addr + size });
    // Coalesce with neighbours.
    const merged: { start: number; end: number }[] = [];
    for (const r of this.free) {
      const last = merged[merged.length - 1];
      if (last !== undefined && last.end === r.start) last.end = r.end;
      else merged.push({ ...r });
    }
    this.free = merged;
  }

  get available(): number {
    return this.free.reduce((n, r) => n + (r.end - r.start), 0);
  }
}
