/**
 * A descriptor chain as the device sees it after walking it (direct and indirect parts
 * flattened), in preallocated arrays: popping a chain allocates nothing.
 * Readable descriptors come first, writable ones after (split.message-framing.driver.1 is
 * checked while walking).
 */
import type { GuestMemory, MemoryRegion } from '../memory/guest-memory.js';
import { VirtqueueError } from './errors.js';

/**
 * The most descriptors the device walks in one chain when a driver makes a chain longer than its
 * queue size through an indirect table (split.indirect-descs.driver.3,
 * packed.indirect-descs.driver.3: a servable violation, see DeviceQueueBase.servable). Longer
 * than this is unservable. 1024 is VIRTQUEUE_MAX_SIZE, the most QEMU's own virtio devices
 * (hw/virtio/virtio.c) and libvhost-user (hence qemu-storage-daemon) take in one chain ("too
 * many descriptors in indirect table"), and more than Linux 6.1's virtio_blk builds for any
 * seg_max this device advertises (seg_max + 2 descriptors; seg_max is at most queue size - 2).
 * A hostile table therefore costs at most 1024 descriptor reads and a chain of bounded size.
 */
export const LONG_CHAIN_CAP = 1024;

/**
 * Uint8Array.prototype.set, called through `call`: a `bytes.set(...)` site in optimized code
 * looked `set` up through a generic LoadIC call on every copy (about 50 instructions per chain
 * in callgrind); a call of this constant goes straight to the builtin.
 */
const u8Set = Uint8Array.prototype.set;

/**
 * Whether guest bytes [addr, addr + len) lie in `r`: the test a cursor makes before it trusts the
 * region it kept from its last window (with whole numbers: a fractional address would index a
 * typed array as undefined). Kept tiny so the compiler inlines it everywhere.
 */
function inRegion(r: MemoryRegion, addr: number, len: number): boolean {
  return addr >= r.guestAddr && addr + len <= r.end && Number.isInteger(addr);
}

/** Pieces one chain may hold beyond its descriptors: buffers split at memory-region boundaries. */
const REGION_SPLIT_SLACK = 64;

/**
 * A descriptor chain as the device sees it after walking it: its buffers (direct and indirect
 * parts flattened, split at memory-region boundaries) in preallocated arrays, readable ones first.
 */
export class DescriptorChain {
  /** Head descriptor index: the id the device returns in the used ring. */
  head = 0;
  /** Number of buffers (flattened descriptors) in the chain. */
  count = 0;
  /** Number of device-readable buffers; buffers [readable, count) are device-writable. */
  readable = 0;
  readableBytes = 0;
  writableBytes = 0;
  /** Number of descriptors of the queue's own table the chain occupies (1 for an indirect head). */
  tableDescriptors = 0;
  /** Whether the chain went through an indirect table. */
  indirect = false;
  /** Pieces the arrays hold now; they grow (rarely, by doubling) up to `limit`. */
  capacity: number;
  addrs: Float64Array;
  lens: Uint32Array;

  /**
   * `capacity` pieces preallocated; `limit` the most this chain ever holds (default: capacity).
   * Growth happens only for chains longer than the queue (servable violations): the hot path
   * of a conforming driver never allocates.
   */
  constructor(capacity: number, readonly limit = capacity) {
    this.capacity = capacity;
    this.addrs = new Float64Array(capacity);
    this.lens = new Uint32Array(capacity);
  }

  /**
   * A chain for a queue of at most `maxSize` entries: room for a conforming chain (maxSize
   * descriptors, plus pieces split at region boundaries) and growth up to the longest chain
   * the device serves at all (LONG_CHAIN_CAP).
   */
  static forQueue(maxSize: number): DescriptorChain {
    return new DescriptorChain(maxSize + REGION_SPLIT_SLACK, Math.max(maxSize, LONG_CHAIN_CAP) + REGION_SPLIT_SLACK);
  }

  /** Doubles the arrays (at most to `limit`), keeping what they hold; false at the limit. */
  private grow(): boolean {
    if (this.capacity >= this.limit) return false;
    const n = Math.min(this.limit, Math.max(1, this.capacity * 2));
    const addrs = new Float64Array(n);
    const lens = new Uint32Array(n);
    addrs.set(this.addrs.subarray(0, this.count));
    lens.set(this.lens.subarray(0, this.count));
    this.addrs = addrs;
    this.lens = lens;
    this.capacity = n;
    return true;
  }

  /**
   * Appends one guest buffer, split at memory-region boundaries so each piece has one view.
   * Returns 'range' when part of it is outside guest memory, 'full' when the chain has no
   * room for another piece, else 'ok'. The caller names the clause.
   */
  append(mem: GuestMemory, addr: number, len: number, writable: boolean): 'ok' | 'range' | 'full' {
    // The usual case first: the whole buffer in one region (the one of the last lookup, as a
    // rule) and room for it, one piece with no loop.
    if (this.count < this.capacity && mem.regionFor(addr, len) !== null) {
      this.put(addr, len, writable);
      return 'ok';
    }
    return this.appendPieces(mem, addr, len, writable);
  }

  /** append for a buffer that spans regions (or lies outside memory), or a chain out of room. */
  private appendPieces(mem: GuestMemory, addr: number, len: number, writable: boolean): 'ok' | 'range' | 'full' {
    let cur = addr;
    let left = len;
    do {
      const r = mem.regionFor(cur, left === 0 ? 0 : 1);
      if (r === null) return 'range';
      if (this.count >= this.capacity && !this.grow()) return 'full';
      const piece = Math.min(left, r.end - cur);
      this.put(cur, piece, writable);
      cur += piece;
      left -= piece;
    } while (left > 0);
    return 'ok';
  }

  /** Stores one piece (room checked by the caller) and counts its bytes in its part. */
  private put(addr: number, len: number, writable: boolean): void {
    const i = this.count++;
    this.addrs[i] = addr;
    this.lens[i] = len;
    if (writable) this.writableBytes += len;
    else {
      this.readable = this.count;
      this.readableBytes += len;
    }
  }

  /** Starts an empty chain (the walker fills it). */
  clear(head: number): void {
    this.head = head;
    this.count = 0;
    this.readable = 0;
    this.readableBytes = 0;
    this.writableBytes = 0;
    this.tableDescriptors = 0;
    this.indirect = false;
  }

  /**
   * A copy of `c` of its own, sized to it: for a buffer a device keeps past the next pop (held
   * receive buffers, event buffers), off the per-request hot path.
   */
  static copyOf(c: DescriptorChain): DescriptorChain {
    const s = new DescriptorChain(Math.max(1, c.count));
    s.clear(c.head);
    s.count = c.count;
    s.readable = c.readable;
    s.readableBytes = c.readableBytes;
    s.writableBytes = c.writableBytes;
    s.addrs.set(c.addrs.subarray(0, c.count));
    s.lens.set(c.lens.subarray(0, c.count));
    return s;
  }
}

/**
 * A chain under construction on the driver side (begin / addReadable / addWritable), in
 * preallocated arrays shared by both ring formats.
 */
export class ChainBuilder {
  count = 0;
  /** A device-readable buffer was added after a device-writable one (not allowed). */
  readableAfterWritable = false;
  readonly addrs: Float64Array;
  readonly lens: Uint32Array;
  readonly writable: Uint8Array;

  /** Room for `capacity` buffers, allocated once. */
  constructor(readonly capacity: number) {
    this.addrs = new Float64Array(capacity);
    this.lens = new Uint32Array(capacity);
    this.writable = new Uint8Array(capacity);
  }

  /** Starts an empty chain. */
  clear(): void {
    this.count = 0;
    this.readableAfterWritable = false;
  }

  /** Appends a buffer (`writable` 1: device-writable); a RangeError past `capacity` (`queue` names the queue). */
  add(addr: number, len: number, writable: number, queue: number): void {
    if (this.count >= this.capacity) throw new RangeError(`a chain on queue ${queue} holds at most ${this.capacity} buffers`);
    if (!writable && this.count > 0 && this.writable[this.count - 1]) this.readableAfterWritable = true;
    this.addrs[this.count] = addr;
    this.lens[this.count] = len;
    this.writable[this.count] = writable;
    this.count++;
  }

  /** Bytes of the device-writable buffers. */
  writableBytes(): number {
    let n = 0;
    for (let i = 0; i < this.count; i++) if (this.writable[i]) n += this.lens[i];
    return n;
  }
}

/**
 * A cursor over one direction of a chain's buffers: the device-readable part (driver to
 * device data) or the device-writable part. Reused across chains: `reset` allocates nothing, and
 * neither does any read, write, fill or skip (no closure, no view per segment: copies go through
 * GuestMemory's allocation-free copies, fixed-size fields through the region's DataView).
 * Going beyond the part's end throws a {@link VirtqueueError} of kind `chain-bounds` (never a
 * RangeError: the chain's length is the peer's input, not the caller's mistake) and consumes
 * nothing. Every access is checked against guest memory as it is now, although the chain's
 * buffers were checked when it was walked, as a region may have gone since (vhost-user
 * REM_MEM_REG).
 *
 * How it stays cheap: the cursor keeps a window on the current segment, the bytes
 * [segOff, winEnd) of it that lie in one region (`win`, at winBase + segment offset) and within
 * the bytes left in the part. A field or copy that fits the window, while the memory's regions
 * have not changed (GuestMemory.generation), is one comparison and one DataView access or copy;
 * everything else (a new segment, a field split across segments, a buffer spanning regions,
 * regions added or removed) takes the general path, which opens the next window or goes through
 * GuestMemory's checked accessors. The fast paths are small on purpose so the compiler inlines
 * them into the device's loop.
 */
abstract class ChainCursor {
  protected mem!: GuestMemory;
  protected chain!: DescriptorChain;
  protected seg = 0;
  protected segOff = 0;
  /** Bytes left in this part (or under the limit set by `limit`). */
  remaining = 0;
  /**
   * `position + remaining`: what the part (or the limit) holds in all. Only `remaining` moves as
   * bytes are consumed (one field update per access, not two); `position` is derived from it.
   */
  private span = 0;
  /** The window's region (kept across chains as a hint: most buffers lie in the region of the one before). */
  protected win: MemoryRegion | null = null;
  /** The current segment's offset in `win`. */
  protected winBase = 0;
  /** End (segment offset, exclusive) of the window; 0: no window. Never past the segment or the bytes left. */
  protected winEnd = 0;
  /** GuestMemory.generation when `win` was found: the window holds only while it has not moved. */
  protected winGen = -1;

  /**
   * Points the cursor at `chain`'s segments from `first` on, `total` bytes (the part ends where
   * they are used up: `remaining` bounds every walk over the segments).
   */
  protected init(mem: GuestMemory, chain: DescriptorChain, first: number, total: number): void {
    if (mem !== this.mem) {
      this.win = null; // a region of another memory is never tried
      this.mem = mem;
    }
    this.chain = chain;
    this.seg = first;
    this.segOff = 0;
    this.remaining = total;
    this.span = total;
    this.winEnd = 0;
    if (total > 0) {
      // The first window now, so the first field of a request is on the fast path too. Most
      // first segments lie in the region of the last window (open()'s test, written out here:
      // this runs twice per request, and here() and open() stayed calls in a device's loop).
      const addr = chain.addrs[first];
      const len = chain.lens[first];
      const r = this.win;
      if (len !== 0 && r !== null && this.winGen === mem.generation && inRegion(r, addr, len)) {
        this.winBase = addr - r.guestAddr;
        this.winEnd = len < total ? len : total;
        return;
      }
      this.here();
      this.open();
    }
  }

  /** Bytes consumed so far. */
  get position(): number {
    return this.span - this.remaining;
  }

  /** Caps the bytes this cursor will still give (e.g. a request header's size). */
  limit(bytes: number): this {
    if (bytes < this.remaining) {
      this.span -= this.remaining - bytes;
      this.remaining = bytes;
      if (this.winEnd > this.segOff + bytes) this.winEnd = Math.max(0, this.segOff + bytes);
    }
    return this;
  }

  /** A VirtqueueError `chain-bounds` unless `n` more bytes are left (nothing consumed then). */
  protected need(n: number): void {
    if (!(n <= this.remaining)) throw new VirtqueueError('chain-bounds', `need ${n} bytes, ${this.remaining} left in the chain`);
  }

  /**
   * Moves to the segment holding the next byte (past exhausted and empty segments) and
   * returns how many bytes of it are left. Only called with bytes left (need() passed), so a
   * segment with bytes lies ahead. Leaving a segment closes the window.
   */
  protected here(): number {
    const lens = this.chain.lens;
    let avail = lens[this.seg] - this.segOff;
    while (avail === 0) {
      this.seg++;
      this.segOff = 0;
      this.winEnd = 0;
      avail = lens[this.seg];
    }
    return avail;
  }

  /**
   * Keeps the window inside the bytes left, after a loop that opened windows before counting
   * what it consumed (a window opened mid-loop saw more bytes left than there are now).
   */
  protected clampWindow(): void {
    const lim = this.segOff + this.remaining;
    if (this.winEnd > lim) this.winEnd = Math.max(0, lim);
  }

  /**
   * Opens the window on the current segment (here() called first): true when the whole segment
   * lies in one region now; false (no window) when it spans regions or lies outside memory (the
   * caller then goes through GuestMemory's checked accessors). One region lookup per segment,
   * none when the segment lies in the region of the last one.
   */
  protected open(): boolean {
    const mem = this.mem;
    const gen = mem.generation;
    const addr = this.chain.addrs[this.seg];
    const len = this.chain.lens[this.seg];
    let r = this.win;
    if (r === null || this.winGen !== gen || !inRegion(r, addr, len)) {
      const found = mem.regionFor(addr, len);
      if (found === null) {
        this.winEnd = 0;
        return false;
      }
      r = this.win = found;
    }
    this.winGen = gen;
    this.winBase = addr - r.guestAddr;
    this.winEnd = Math.min(len, this.segOff + this.remaining);
    return true;
  }

  /**
   * Called after a copy that ended exactly at the window's end with bytes still left in the part
   * (so the segment is used up: a window stops short of its segment only where the bytes left
   * end): opens the window on the next segment now, so that the field that usually follows a
   * payload (a blk status byte after the data buffer) takes the fast path.
   */
  protected advance(): void {
    // The usual case written out, as in init(): the next segment has bytes and lies in the
    // window's region (here() and open() stayed calls in a device's loop).
    const c = this.chain;
    const next = this.seg + 1;
    const r = this.win;
    if (this.segOff === c.lens[this.seg] && next < c.count && r !== null && this.winGen === this.mem.generation) {
      const addr = c.addrs[next];
      const len = c.lens[next];
      if (len !== 0 && inRegion(r, addr, len)) {
        this.seg = next;
        this.segOff = 0;
        this.winBase = addr - r.guestAddr;
        this.winEnd = len < this.remaining ? len : this.remaining;
        return;
      }
    }
    this.here();
    this.open();
  }

  /**
   * The region offset of the next `n` (> 0) bytes when they lie in one region and one segment
   * (opening the window on the next segment when needed), else -1; need(n) called first.
   * Consumes nothing.
   */
  protected fieldAt(n: number): number {
    this.here();
    if (this.segOff + n > this.winEnd || this.winGen !== this.mem.generation) this.open();
    return this.segOff + n <= this.winEnd ? this.winBase + this.segOff : -1;
  }

  /** Passes over the next `n` bytes (a VirtqueueError `chain-bounds` past the part's end). */
  skip(n: number): void {
    this.need(n);
    let left = n;
    while (left > 0) {
      const take = Math.min(this.here(), left);
      this.segOff += take;
      left -= take;
    }
    this.remaining -= n;
  }
}

/** Reads the device-readable part of a chain. */
export class ChainReader extends ChainCursor {
  /** Starts reading `chain`'s device-readable part (over `mem`). */
  reset(mem: GuestMemory, chain: DescriptorChain): this {
    this.init(mem, chain, 0, chain.readableBytes);
    return this;
  }

  /** Copies the next `dst.length` bytes into `dst`. */
  read(dst: Uint8Array): void {
    this.readInto(dst, 0, dst.length);
  }

  /**
   * Copies the next `length` bytes into dst[offset, offset+length) (a RangeError when that does
   * not fit `dst`). Allocates nothing.
   */
  readInto(dst: Uint8Array, offset: number, length: number): void {
    const o = this.segOff;
    if (length > 0 && length <= this.winEnd - o && this.winGen === this.mem.generation) {
      // In the window: one copy (copyBetween checks the range of dst, nothing consumed before).
      this.mem.copyBetween(this.win!.bytes, this.winBase + o, dst, offset, length);
      this.segOff = o + length;
      this.remaining -= length;
      if (o + length === this.winEnd && this.remaining > 0) this.advance();
      return;
    }
    this.readAcross(dst, offset, length);
  }

  /** readInto beyond the window: segment by segment, through GuestMemory where a segment spans regions. */
  private readAcross(dst: Uint8Array, offset: number, length: number): void {
    if (!(Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0 && offset + length <= dst.length)) {
      throw new RangeError(`range ${offset} +${length} does not fit a ${dst.length}-byte array`);
    }
    this.need(length);
    const addrs = this.chain.addrs;
    let done = 0;
    while (done < length) {
      const take = Math.min(this.here(), length - done);
      if ((this.segOff + take <= this.winEnd && this.winGen === this.mem.generation) || this.open()) this.mem.copyBetween(this.win!.bytes, this.winBase + this.segOff, dst, offset + done, take);
      else this.mem.readInto(addrs[this.seg] + this.segOff, dst, offset + done, take);
      this.segOff += take;
      done += take;
    }
    this.remaining -= length;
    this.clampWindow();
  }

  /** Reads up to `dst.length` bytes; returns how many. */
  readSome(dst: Uint8Array): number {
    const n = Math.min(dst.length, this.remaining);
    this.readInto(dst, 0, n);
    return n;
  }

  /** The next byte. */
  readU8(): number {
    const o = this.segOff;
    if (o + 1 <= this.winEnd && this.winGen === this.mem.generation) {
      this.segOff = o + 1;
      this.remaining -= 1;
      return this.win!.bytes[this.winBase + o];
    }
    return this.fieldSlow(1);
  }

  /** The next little-endian 16-bit value. */
  readU16(): number {
    const o = this.segOff;
    if (o + 2 <= this.winEnd && this.winGen === this.mem.generation) {
      this.segOff = o + 2;
      this.remaining -= 2;
      return this.win!.view.getUint16(this.winBase + o, true);
    }
    return this.fieldSlow(2);
  }

  /** The next little-endian 32-bit value. */
  readU32(): number {
    const o = this.segOff;
    if (o + 4 <= this.winEnd && this.winGen === this.mem.generation) {
      this.segOff = o + 4;
      this.remaining -= 4;
      return this.win!.view.getUint32(this.winBase + o, true);
    }
    return this.fieldSlow(4);
  }

  /**
   * The next `n` (1, 2 or 4) bytes as a little-endian value off the fast path: in one piece
   * through the next window, else byte by byte (a field split across segments or regions).
   */
  private fieldSlow(n: number): number {
    this.need(n);
    const at = this.fieldAt(n);
    if (at >= 0) {
      const v = this.win!.view;
      const x = n === 1 ? v.getUint8(at) : n === 2 ? v.getUint16(at, true) : v.getUint32(at, true);
      this.segOff += n;
      this.remaining -= n;
      return x;
    }
    let x = 0;
    for (let i = 0; i < n; i++) {
      this.here();
      const b = (this.segOff < this.winEnd && this.winGen === this.mem.generation) || this.open() ? this.win!.bytes[this.winBase + this.segOff] : this.mem.readU8(this.chain.addrs[this.seg] + this.segOff);
      this.segOff++;
      this.remaining -= 1;
      x += b * 2 ** (8 * i);
    }
    return x;
  }

  /** The next little-endian 64-bit value, as a bigint (readU64Number: as a number). */
  readU64(): bigint {
    this.need(8); // all or nothing
    const lo = this.readU32();
    return (BigInt(this.readU32()) << 32n) | BigInt(lo);
  }

  /**
   * The next little-endian 64-bit value as a number, with no bigint (a blk sector, a
   * timestamp). A VirtqueueError of kind `unsafe-integer` when it is 2^53 or more (a number
   * cannot hold it exactly; the peer chose it): the 8 bytes are then not consumed, so readU64
   * can still read them.
   */
  readU64Number(): number {
    const o = this.segOff;
    if (o + 8 <= this.winEnd && this.winGen === this.mem.generation) {
      const v = this.win!.view;
      const at = this.winBase + o;
      const hi = v.getUint32(at + 4, true);
      if (hi <= 0x1f_ffff) {
        this.segOff = o + 8;
        this.remaining -= 8;
        return hi * 0x1_0000_0000 + v.getUint32(at, true);
      }
    }
    return this.u64NumberSlow();
  }

  /** readU64Number off the fast path (split across segments, or too large: nothing consumed then). */
  private u64NumberSlow(): number {
    this.need(8);
    const seg = this.seg;
    const segOff = this.segOff;
    const lo = this.readU32();
    const hi = this.readU32();
    if (hi > 0x1f_ffff) {
      this.seg = seg;
      this.segOff = segOff;
      this.winEnd = 0;
      this.remaining += 8;
      throw new VirtqueueError('unsafe-integer', `64-bit value 0x${hi.toString(16)}${lo.toString(16).padStart(8, '0')} in the chain is 2^53 or more: read it with readU64`);
    }
    return hi * 0x1_0000_0000 + lo;
  }
}

/** Writes the device-writable part of a chain. */
export class ChainWriter extends ChainCursor {
  /** Starts writing `chain`'s device-writable part (over `mem`). */
  reset(mem: GuestMemory, chain: DescriptorChain): this {
    this.init(mem, chain, chain.readable, chain.writableBytes);
    return this;
  }

  /** Copies `src` into the next bytes of the writable part. */
  write(src: Uint8Array): void {
    this.writeFrom(src, 0, src.length);
  }

  /**
   * Copies src[offset, offset+length) into the next bytes of the writable part (a RangeError
   * when that range does not fit `src`). Allocates nothing.
   */
  writeFrom(src: Uint8Array, offset: number, length: number): void {
    const o = this.segOff;
    if (length > 0 && length <= this.winEnd - o && this.winGen === this.mem.generation) {
      // In the window: one copy. A whole array needs no check (it fits the window) and no view;
      // else copyBetween checks the range of src, and throws before anything is written.
      if (offset === 0 && length === src.length) u8Set.call(this.win!.bytes, src, this.winBase + o);
      else this.mem.copyBetween(src, offset, this.win!.bytes, this.winBase + o, length);
      this.wrote(o, length);
      if (o + length === this.winEnd && this.remaining > 0) this.advance();
      return;
    }
    this.writeAcross(src, offset, length);
  }

  /** writeFrom beyond the window: segment by segment, through GuestMemory where a segment spans regions. */
  private writeAcross(src: Uint8Array, offset: number, length: number): void {
    if (!(Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0 && offset + length <= src.length)) {
      throw new RangeError(`range ${offset} +${length} does not fit a ${src.length}-byte array`);
    }
    this.need(length);
    const addrs = this.chain.addrs;
    let done = 0;
    while (done < length) {
      const take = Math.min(this.here(), length - done);
      const addr = addrs[this.seg] + this.segOff;
      if ((this.segOff + take <= this.winEnd && this.winGen === this.mem.generation) || this.open()) {
        this.mem.copyBetween(src, offset + done, this.win!.bytes, this.winBase + this.segOff, take);
        if (this.mem.onWrite !== null) this.mem.onWrite(addr, take);
      } else this.mem.writeFrom(addr, src, offset + done, take);
      this.segOff += take;
      done += take;
    }
    this.remaining -= length;
    this.clampWindow();
  }

  /** Writes `n` bytes of `value`. */
  fill(n: number, value = 0): void {
    this.need(n);
    const addrs = this.chain.addrs;
    let done = 0;
    while (done < n) {
      const take = Math.min(this.here(), n - done);
      this.mem.fill(addrs[this.seg] + this.segOff, take, value);
      this.segOff += take;
      done += take;
    }
    this.remaining -= n;
  }

  /**
   * Calls `fn` with a guest view of each writable piece (zero-copy fill), up to `n` bytes. Each
   * piece is a new view (a `subarray`): for a copy that allocates nothing, use write or writeFrom.
   */
  produce(n: number, fn: (view: Uint8Array) => void): void {
    this.need(n);
    const mem = this.mem;
    const addrs = this.chain.addrs;
    let done = 0;
    while (done < n) {
      const take = Math.min(this.here(), n - done);
      const addr = addrs[this.seg] + this.segOff;
      fn(mem.bytes(addr, take));
      if (mem.onWrite !== null) mem.onWrite(addr, take);
      this.segOff += take;
      done += take;
    }
    this.remaining -= n;
  }

  /** Moves on past `n` bytes written at segment offset `o` of the current segment and tells onWrite. */
  private wrote(o: number, n: number): void {
    this.segOff = o + n;
    this.remaining -= n;
    const hook = this.mem.onWrite;
    if (hook !== null) hook(this.chain.addrs[this.seg] + o, n);
  }

  /** Writes the next byte. */
  writeU8(v: number): void {
    const o = this.segOff;
    if (o + 1 <= this.winEnd && this.winGen === this.mem.generation) {
      this.win!.bytes[this.winBase + o] = v;
      this.wrote(o, 1);
      return;
    }
    this.fieldSlow(v & 0xff, 1);
  }

  /** Writes the next little-endian 16-bit value. */
  writeU16(v: number): void {
    const o = this.segOff;
    if (o + 2 <= this.winEnd && this.winGen === this.mem.generation) {
      this.win!.view.setUint16(this.winBase + o, v, true);
      this.wrote(o, 2);
      return;
    }
    this.fieldSlow(v & 0xffff, 2);
  }

  /** Writes the next little-endian 32-bit value. */
  writeU32(v: number): void {
    const o = this.segOff;
    if (o + 4 <= this.winEnd && this.winGen === this.mem.generation) {
      this.win!.view.setUint32(this.winBase + o, v >>> 0, true);
      this.wrote(o, 4);
      return;
    }
    this.fieldSlow(v >>> 0, 4);
  }

  /**
   * Writes the low `n` (1, 2 or 4) bytes of `v` (a non-negative integer below 2^32) off the fast
   * path: in one piece through the next window, else byte by byte (a field split across
   * segments or regions).
   */
  private fieldSlow(v: number, n: number): void {
    this.need(n);
    const at = this.fieldAt(n);
    if (at >= 0) {
      const view = this.win!.view;
      if (n === 1) view.setUint8(at, v);
      else if (n === 2) view.setUint16(at, v, true);
      else view.setUint32(at, v, true);
      this.wrote(this.segOff, n);
      return;
    }
    this.bytesLE(v, n);
  }

  /** Writes the low `n` bytes of `v` (a non-negative integer below 2^32) byte by byte; need(n) passed. */
  private bytesLE(v: number, n: number): void {
    for (let i = 0; i < n; i++) {
      const b = Math.floor(v / 2 ** (8 * i)) & 0xff;
      this.here();
      if ((this.segOff < this.winEnd && this.winGen === this.mem.generation) || this.open()) {
        this.win!.bytes[this.winBase + this.segOff] = b;
        this.wrote(this.segOff, 1);
      } else {
        this.mem.writeU8(this.chain.addrs[this.seg] + this.segOff, b);
        this.segOff++;
        this.remaining -= 1;
      }
    }
  }

  /**
   * Writes the next little-endian 64-bit value. A number that is a non-negative safe integer
   * goes without a bigint; any other value is taken modulo 2^64 (a fractional number is a
   * RangeError).
   */
  writeU64(v: bigint | number): void {
    let lo: number;
    let hi: number;
    if (typeof v === 'number' && v >= 0 && Number.isSafeInteger(v)) {
      lo = v % 0x1_0000_0000;
      hi = Math.floor(v / 0x1_0000_0000);
    } else {
      const b = BigInt.asUintN(64, BigInt(v));
      lo = Number(b & 0xffff_ffffn);
      hi = Number(b >> 32n);
    }
    const o = this.segOff;
    if (o + 8 <= this.winEnd && this.winGen === this.mem.generation) {
      const view = this.win!.view;
      view.setUint32(this.winBase + o, lo, true);
      view.setUint32(this.winBase + o + 4, hi, true);
      this.wrote(o, 8);
      return;
    }
    this.need(8);
    const at = this.fieldAt(8);
    if (at >= 0) {
      const view = this.win!.view;
      view.setUint32(at, lo, true);
      view.setUint32(at + 4, hi, true);
      this.wrote(this.segOff, 8);
      return;
    }
    this.bytesLE(lo, 4);
    this.bytesLE(hi, 4);
  }
}
