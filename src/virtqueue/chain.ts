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
    let cur = addr;
    let left = len;
    do {
      const r = mem.regionFor(cur, left === 0 ? 0 : 1);
      if (r === null) return 'range';
      if (this.count >= this.capacity && !this.grow()) return 'full';
      const piece = Math.min(left, r.end - cur);
      const i = this.count++;
      this.addrs[i] = cur;
      this.lens[i] = piece;
      if (writable) this.writableBytes += piece;
      else {
        this.readable = this.count;
        this.readableBytes += piece;
      }
      cur += piece;
      left -= piece;
    } while (left > 0);
    return 'ok';
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
 * REM_MEM_REG): copies and fixed-size fields go through the region that holds the whole buffer,
 * found again whenever GuestMemory.generation moves (through GuestMemory's own checked copies
 * when a buffer spans regions).
 */
abstract class ChainCursor {
  protected mem!: GuestMemory;
  protected chain!: DescriptorChain;
  protected seg = 0;
  protected segOff = 0;
  protected end = 0; // exclusive segment index
  /** Bytes left in this part (or under the limit set by `limit`). */
  remaining = 0;
  /** Bytes consumed so far. */
  position = 0;
  /** Offset in its region of the field field() found last. */
  protected fieldOff = 0;
  /** segRegion()'s cache: the segment it is for (-1: none), the memory generation, the region, the segment's offset in it. */
  private regionSeg = -1;
  private regionGen = -1;
  /** The kept region (the current segment's while regionSeg is the current segment, never null then). */
  protected region: MemoryRegion | null = null;
  protected regionBase = 0;

  /** Points the cursor at segments [first, end) of `chain`, `total` bytes. */
  protected init(mem: GuestMemory, chain: DescriptorChain, first: number, end: number, total: number): void {
    if (mem !== this.mem) this.region = null; // a region of another memory is never tried
    this.mem = mem;
    this.chain = chain;
    this.seg = first;
    this.segOff = 0;
    this.end = end;
    this.remaining = total;
    this.position = 0;
    this.regionSeg = -1;
  }

  /** Caps the bytes this cursor will still give (e.g. a request header's size). */
  limit(bytes: number): this {
    if (bytes < this.remaining) this.remaining = bytes;
    return this;
  }

  /** A VirtqueueError `chain-bounds` unless `n` more bytes are left (nothing consumed then). */
  protected need(n: number): void {
    if (!(n <= this.remaining)) throw new VirtqueueError('chain-bounds', `need ${n} bytes, ${this.remaining} left in the chain`);
  }

  /**
   * Moves to the segment holding the next byte (past exhausted and empty segments) and
   * returns how many bytes of it are left. Only called with bytes left (need() passed), so a
   * segment with bytes lies ahead.
   */
  protected here(): number {
    const lens = this.chain.lens;
    let avail = lens[this.seg] - this.segOff;
    while (avail === 0) {
      this.seg++;
      this.segOff = 0;
      avail = lens[this.seg];
    }
    return avail;
  }

  /** Counts `n` bytes as consumed (the segment offset moved already). */
  protected consumed(n: number): void {
    this.remaining -= n;
    this.position += n;
  }

  /**
   * The region holding the whole current segment (here() called first), with `regionBase` the
   * segment's offset in it; null when the segment spans regions (or lies outside memory now: the
   * caller then goes through GuestMemory's checked accessors). Kept while the cursor stays in the
   * segment and the memory's regions do not change (GuestMemory.generation), so a field costs
   * one lookup per segment, not one per access.
   */
  protected segRegion(): MemoryRegion | null {
    const mem = this.mem;
    const seg = this.seg;
    if (this.regionSeg === seg && this.regionGen === mem.generation) return this.region;
    const addr = this.chain.addrs[seg];
    const len = this.chain.lens[seg];
    let r: MemoryRegion | null = this.region;
    // Most buffers of a chain lie in the region of the one before (or of the last chain's).
    if (r === null || this.regionGen !== mem.generation || !(addr >= r.guestAddr && addr + len <= r.end && Number.isInteger(addr))) {
      r = mem.regionFor(addr, len);
      if (r === null) return null; // not kept: quick() relies on a kept region
    }
    this.region = r;
    this.regionSeg = seg;
    this.regionGen = mem.generation;
    this.regionBase = addr - r.guestAddr;
    return r;
  }

  /**
   * The fast path of a fixed-size field: when the next `n` bytes are left, lie in the current
   * segment and segRegion() has that segment's region kept (and regions did not change since),
   * their offset in `region`; else -1 (the caller takes the general path). Consumes nothing.
   */
  protected quick(n: number): number {
    const off = this.segOff;
    return n <= this.remaining && this.regionSeg === this.seg && this.regionGen === this.mem.generation && this.chain.lens[this.seg] - off >= n
      ? this.regionBase + off
      : -1;
  }

  /**
   * The region for the next `n` bytes when they lie in the current segment and one region (the
   * common case for a fixed-size field), their offset in it in `fieldOff`; null otherwise (the
   * caller then goes byte by byte). Consumes nothing; need(n) called first.
   */
  protected field(n: number): MemoryRegion | null {
    if (this.here() < n) return null;
    const r = this.segRegion();
    if (r !== null) this.fieldOff = this.regionBase + this.segOff;
    return r;
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
    this.consumed(n);
  }
}

/** Reads the device-readable part of a chain. */
export class ChainReader extends ChainCursor {
  /** Starts reading `chain`'s device-readable part (over `mem`). */
  reset(mem: GuestMemory, chain: DescriptorChain): this {
    this.init(mem, chain, 0, chain.readable, chain.readableBytes);
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
    if (!(Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0 && offset + length <= dst.length)) {
      throw new RangeError(`range ${offset} +${length} does not fit a ${dst.length}-byte array`);
    }
    this.need(length);
    const addrs = this.chain.addrs;
    let done = 0;
    while (done < length) {
      const take = Math.min(this.here(), length - done);
      const r = this.segRegion();
      if (r !== null) this.mem.copyBetween(r.bytes, this.regionBase + this.segOff, dst, offset + done, take);
      else this.mem.readInto(addrs[this.seg] + this.segOff, dst, offset + done, take);
      this.segOff += take;
      done += take;
    }
    this.consumed(length);
  }

  /** Reads up to `dst.length` bytes; returns how many. */
  readSome(dst: Uint8Array): number {
    const n = Math.min(dst.length, this.remaining);
    this.readInto(dst, 0, n);
    return n;
  }

  /** The next byte. */
  readU8(): number {
    const o = this.quick(1);
    if (o >= 0) {
      this.segOff++;
      this.consumed(1);
      return this.region!.bytes[o];
    }
    this.need(1);
    const r = this.field(1);
    const v = r !== null ? r.bytes[this.fieldOff] : this.mem.readU8(this.chain.addrs[this.seg] + this.segOff);
    this.segOff++;
    this.consumed(1);
    return v;
  }

  /** The next `n` (<= 4) bytes as a little-endian unsigned value, byte by byte (a field split across segments). */
  private bytesLE(n: number): number {
    let v = 0;
    for (let i = 0; i < n; i++) v += this.readU8() * 2 ** (8 * i);
    return v;
  }

  /** The next little-endian 16-bit value. */
  readU16(): number {
    const o = this.quick(2);
    if (o >= 0) {
      this.segOff += 2;
      this.consumed(2);
      return this.region!.view.getUint16(o, true);
    }
    this.need(2);
    const r = this.field(2);
    if (r === null) return this.bytesLE(2);
    this.segOff += 2;
    this.consumed(2);
    return r.view.getUint16(this.fieldOff, true);
  }

  /** The next little-endian 32-bit value. */
  readU32(): number {
    const o = this.quick(4);
    if (o >= 0) {
      this.segOff += 4;
      this.consumed(4);
      return this.region!.view.getUint32(o, true);
    }
    this.need(4);
    const r = this.field(4);
    if (r === null) return this.bytesLE(4);
    this.segOff += 4;
    this.consumed(4);
    return r.view.getUint32(this.fieldOff, true);
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
    this.need(8);
    const seg = this.seg;
    const segOff = this.segOff;
    const lo = this.readU32();
    const hi = this.readU32();
    if (hi > 0x1f_ffff) {
      this.seg = seg;
      this.segOff = segOff;
      this.remaining += 8;
      this.position -= 8;
      throw new VirtqueueError('unsafe-integer', `64-bit value 0x${hi.toString(16)}${lo.toString(16).padStart(8, '0')} in the chain is 2^53 or more: read it with readU64`);
    }
    return hi * 0x1_0000_0000 + lo;
  }
}

/** Writes the device-writable part of a chain. */
export class ChainWriter extends ChainCursor {
  /** Starts writing `chain`'s device-writable part (over `mem`). */
  reset(mem: GuestMemory, chain: DescriptorChain): this {
    this.init(mem, chain, chain.readable, chain.count, chain.writableBytes);
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
    if (!(Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0 && offset + length <= src.length)) {
      throw new RangeError(`range ${offset} +${length} does not fit a ${src.length}-byte array`);
    }
    this.need(length);
    const addrs = this.chain.addrs;
    let done = 0;
    while (done < length) {
      const take = Math.min(this.here(), length - done);
      const addr = addrs[this.seg] + this.segOff;
      const r = this.segRegion();
      if (r === null) this.mem.writeFrom(addr, src, offset + done, take);
      else {
        this.mem.copyBetween(src, offset + done, r.bytes, this.regionBase + this.segOff, take);
        if (this.mem.onWrite !== null) this.mem.onWrite(addr, take);
      }
      this.segOff += take;
      done += take;
    }
    this.consumed(length);
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
    this.consumed(n);
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
    this.consumed(n);
  }

  /** Writes the next byte. */
  writeU8(v: number): void {
    const o = this.quick(1);
    if (o >= 0) {
      this.region!.bytes[o] = v;
      this.wrote(1);
      return;
    }
    const r = this.put(1);
    if (r === null) {
      this.mem.writeU8(this.chain.addrs[this.seg] + this.segOff, v);
      this.segOff++;
      this.consumed(1);
      return;
    }
    r.bytes[this.fieldOff] = v;
    this.wrote(1);
  }

  /** Writes the low `n` bytes of `v` (a non-negative integer below 2^32), byte by byte: a field split across segments. */
  private bytesLE(v: number, n: number): void {
    for (let i = 0; i < n; i++) this.writeU8(Math.floor(v / 2 ** (8 * i)) & 0xff);
  }

  /** The region for the next `n` bytes when they lie in one piece (see field()), after the bounds check. */
  private put(n: number): MemoryRegion | null {
    this.need(n);
    return this.field(n);
  }

  /** Writes the low `n` bytes just written through a region view: moves on and tells onWrite. */
  private wrote(n: number): void {
    const addr = this.chain.addrs[this.seg] + this.segOff;
    this.segOff += n;
    this.consumed(n);
    if (this.mem.onWrite !== null) this.mem.onWrite(addr, n);
  }

  /** Writes the next little-endian 16-bit value. */
  writeU16(v: number): void {
    const o = this.quick(2);
    if (o >= 0) {
      this.region!.view.setUint16(o, v, true);
      this.wrote(2);
      return;
    }
    const r = this.put(2);
    if (r === null) return this.bytesLE(v & 0xffff, 2);
    r.view.setUint16(this.fieldOff, v, true);
    this.wrote(2);
  }

  /** Writes the next little-endian 32-bit value. */
  writeU32(v: number): void {
    const o = this.quick(4);
    if (o >= 0) {
      this.region!.view.setUint32(o, v >>> 0, true);
      this.wrote(4);
      return;
    }
    const r = this.put(4);
    if (r === null) return this.bytesLE(v >>> 0, 4);
    r.view.setUint32(this.fieldOff, v >>> 0, true);
    this.wrote(4);
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
    const r = this.put(8);
    if (r === null) {
      this.bytesLE(lo, 4);
      this.bytesLE(hi, 4);
      return;
    }
    r.view.setUint32(this.fieldOff, lo, true);
    r.view.setUint32(this.fieldOff + 4, hi, true);
    this.wrote(8);
  }
}
