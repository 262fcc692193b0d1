/**
 * Copies between a disk held in memory and guest memory without allocating. A JavaScript copy
 * between two buffers is `target.set(source, at)`, and `source` must be exactly the bytes to
 * copy: a view made per copy (subarray) is about 100 bytes of heap per request, and a copy loop
 * over words is 3 to 8 times slower than set(). So the disk's side keeps a table of page
 * views, each made the first time its page is read and reused after: a read of whole aligned
 * 4 KiB pages copies page by page from them into guest memory, allocation-free. The table costs
 * at most one view (about 100 bytes) per 4 KiB page ever read, 2.5 % of the disk, and only for
 * pages actually read. Anything else (unaligned, or a write, whose source is guest memory) makes
 * one view per copy: correct, not allocation-free.
 */

/**
 * `Uint8Array.prototype.set`, called as `copy.call(target, source, at)`. Optimized code reaches
 * `target.set` through a generic property load (a LoadIC call: V8 11 does not inline typed
 * arrays' prototype methods), about 10 ns per copy on the block read path; the function taken
 * once is called directly.
 */
const copy = Uint8Array.prototype.set;

/** The page size of the view table: Linux's page, the unit nearly every guest I/O comes in. */
export const VIEW_PAGE = 4096;

/** Copies in and out of one Uint8Array (a memory disk) through reused page views. */
export class PageViews {
  private table: (Uint8Array | undefined)[] | null = null;

  /** Views over `bytes` (not copied; the caller keeps writing through it as it likes). */
  constructor(readonly bytes: Uint8Array) {}

  /** Copies `bytes[offset, offset + length)` into `into[at, at + length)`. */
  copyOut(offset: number, into: Uint8Array, at: number, length: number): void {
    const bytes = this.bytes;
    // Whole pages tested as whole quotients: `offset % VIEW_PAGE` on an offset that may exceed
    // 2^31 is a floating-point remainder, which V8 computes with the x87 fprem loop.
    const first = offset / VIEW_PAGE;
    const pages = length / VIEW_PAGE;
    if (first !== Math.floor(first) || pages !== Math.floor(pages) || offset + length > bytes.length) {
      copy.call(into, bytes.subarray(offset, offset + length), at);
      return;
    }
    const table = (this.table ??= new Array<Uint8Array | undefined>(Math.ceil(bytes.length / VIEW_PAGE)));
    for (let i = 0; i < pages; i++) {
      const p = first + i;
      let v = table[p];
      if (v === undefined) table[p] = v = bytes.subarray(p * VIEW_PAGE, (p + 1) * VIEW_PAGE);
      copy.call(into, v, at + i * VIEW_PAGE);
    }
  }

  /** Copies `from[at, at + length)` into `bytes` at `offset` (one view of `from` per call). */
  copyIn(offset: number, from: Uint8Array, at: number, length: number): void {
    copy.call(this.bytes, from.subarray(at, at + length), offset);
  }
}
