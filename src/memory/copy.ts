/**
 * Byte copies between typed arrays that allocate nothing per call (GuestMemory.readInto and
 * writeFrom, and the chain cursors on top of them).
 *
 * JavaScript has one memcpy-speed copy between two buffers, `target.set(source, offset)`, and it
 * wants a source view of exactly the bytes to copy: a `subarray` per copy, about 100 heap bytes
 * each. So, per copy of `n` bytes:
 * - the whole source array: `set(source)` (no view needed);
 * - `n` up to {@link SMALL_COPY}: a byte loop (as fast as a view would be at that size);
 * - a range copied before: `set(view)` with the view the {@link ViewCache} keeps for it;
 * - a range seen for the first time: 32-bit words through DataViews (kept one per buffer), no
 *   view. The second time the same range is copied the cache makes its view (one allocation)
 *   and keeps it: a device whose driver recycles its buffers (a ring of them) copies them at
 *   memcpy speed with nothing allocated in steady state, and one-off ranges never allocate.
 *
 * Callers check every range first; these functions trust them. Browser-safe: no Node import.
 */

/**
 * Uint8Array.prototype.set, called through `call`: a `dst.set(...)` site in optimized code looked
 * `set` up through a generic LoadIC call on every copy; a call of this constant goes straight to
 * the builtin.
 */
const u8Set = Uint8Array.prototype.set;

/** Copies of at most this many bytes go byte by byte. */
export const SMALL_COPY = 16;

/** One DataView per buffer (the word loop reads and writes through them): made once, kept weakly. */
const dataViews = new WeakMap<ArrayBufferLike, DataView>();

function dataViewOf(a: Uint8Array): DataView {
  const buf = a.buffer;
  let v = dataViews.get(buf);
  if (v === undefined || v.byteLength < a.byteOffset + a.length) {
    v = new DataView(buf);
    dataViews.set(buf, v);
  }
  return v;
}

const CACHE_BITS = 8;
const CACHE_SIZE = 1 << CACHE_BITS;

/**
 * Views of ranges copied more than once, direct-mapped by (array, offset, length): a slot holds
 * the last range that hashed to it, and its view once that range came back. It holds at most
 * CACHE_SIZE arrays (and so their buffers) alive; clear() lets them go (GuestMemory clears it
 * when regions go away).
 */
export class ViewCache {
  private readonly arrays: (Uint8Array | null)[] = new Array<Uint8Array | null>(CACHE_SIZE).fill(null);
  private readonly views: (Uint8Array | null)[] = new Array<Uint8Array | null>(CACHE_SIZE).fill(null);
  private readonly offs = new Float64Array(CACHE_SIZE);
  private readonly lens = new Float64Array(CACHE_SIZE);

  /** The view of a[off, off+len) when that range was asked for before; null (and remembered) the first time. */
  get(a: Uint8Array, off: number, len: number): Uint8Array | null {
    const i = Math.imul(Math.imul(off | 0, 0x9e3779b1) ^ (off / 0x1_0000_0000) ^ len, 0x85ebca6b) >>> (32 - CACHE_BITS);
    if (this.arrays[i] === a && this.offs[i] === off && this.lens[i] === len) {
      let v = this.views[i];
      if (v === null) {
        v = a.subarray(off, off + len);
        this.views[i] = v;
      }
      return v;
    }
    this.arrays[i] = a;
    this.views[i] = null;
    this.offs[i] = off;
    this.lens[i] = len;
    return null;
  }

  /** Forgets every range (and lets go of the arrays they were in). */
  clear(): void {
    this.arrays.fill(null);
    this.views.fill(null);
  }
}

/**
 * Copies src[sOff, sOff+n) to dst[dOff, dOff+n) (ranges checked by the caller), right when the
 * two overlap in one buffer too.
 */
export function copyBytes(cache: ViewCache, src: Uint8Array, sOff: number, dst: Uint8Array, dOff: number, n: number): void {
  if (sOff === 0 && n === src.length) {
    // Faster than a byte loop from about 16 bytes up; right when the two overlap in one buffer
    // too (ECMA-262 SetTypedArrayFromTypedArray copies as if through a temporary).
    u8Set.call(dst, src, dOff);
    return;
  }
  if (src.buffer === dst.buffer) {
    const s = src.byteOffset + sOff;
    const d = dst.byteOffset + dOff;
    if (d < s + n && s < d + n) {
      // Overlapping (a guest copying onto itself): set() on a view, the one copy that allocates.
      if (s !== d) dst.set(src.subarray(sOff, sOff + n), dOff);
      return;
    }
  }
  if (n <= SMALL_COPY) {
    for (let i = 0; i < n; i++) dst[dOff + i] = src[sOff + i];
    return;
  }
  const view = cache.get(src, sOff, n);
  if (view !== null) {
    u8Set.call(dst, view, dOff);
    return;
  }
  // First sighting: words through DataViews (integers: exact bytes whatever they hold).
  const sv = dataViewOf(src);
  const dv = dataViewOf(dst);
  const s = src.byteOffset + sOff;
  const d = dst.byteOffset + dOff;
  let i = 0;
  for (const end = n - 8; i <= end; i += 8) {
    dv.setUint32(d + i, sv.getUint32(s + i, true), true);
    dv.setUint32(d + i + 4, sv.getUint32(s + i + 4, true), true);
  }
  for (; i < n; i++) dst[dOff + i] = src[sOff + i];
}
