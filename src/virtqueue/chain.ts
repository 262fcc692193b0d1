/**
 * A descriptor chain as the device sees it after walking it (direct and indirect parts
 * flattened), in preallocated arrays: popping a chain allocates nothing.
 * Readable descriptors come first, writable ones after (split.message-framing.driver.1 is
 * checked while walking).
 */
import type { GuestMemory } from '../memory/guest-memory.js';
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
 * device data) or the device-writable part. Reused across chains: `reset` allocates nothing.
 * Going beyond the part's end throws a {@link VirtqueueError} of kind `chain-bounds` (never a
 * RangeError: the chain's length is the peer's input, not the caller's mistake).
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
  protected readonly scratch = new Uint8Array(8);
  protected readonly scratchView = new DataView(this.scratch.buffer);

  /** Points the cursor at segments [first, end) of `chain`, `total` bytes. */
  protected init(mem: GuestMemory, chain: DescriptorChain, first: number, end: number, total: number): void {
    this.mem = mem;
    this.chain = chain;
    this.seg = first;
    this.segOff = 0;
    this.end = end;
    this.remaining = total;
    this.position = 0;
  }

  /** Caps the bytes this cursor will still give (e.g. a request header's size). */
  limit(bytes: number): this {
    if (bytes < this.remaining) this.remaining = bytes;
    return this;
  }

  /** Calls `fn(addr, len)` for the next `n` bytes, segment by segment, and advances. */
  protected advance(n: number, fn: (addr: number, len: number, done: number) => void): void {
    if (n > this.remaining) throw new VirtqueueError('chain-bounds', `need ${n} bytes, ${this.remaining} left in the chain`);
    let done = 0;
    while (done < n) {
      const segLen = this.chain.lens[this.seg];
      const avail = segLen - this.segOff;
      if (avail === 0) {
        this.seg++;
        this.segOff = 0;
        continue;
      }
      const take = Math.min(avail, n - done);
      fn(this.chain.addrs[this.seg] + this.segOff, take, done);
      this.segOff += take;
      done += take;
    }
    this.remaining -= n;
    this.position += n;
  }

  /** Passes over the next `n` bytes (a VirtqueueError `chain-bounds` past the part's end). */
  skip(n: number): void {
    this.advance(n, () => undefined);
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
    const mem = this.mem;
    this.advance(dst.length, (addr, len, done) => mem.read(addr, dst.subarray(done, done + len)));
  }

  /** Reads up to `dst.length` bytes; returns how many. */
  readSome(dst: Uint8Array): number {
    const n = Math.min(dst.length, this.remaining);
    this.read(n === dst.length ? dst : dst.subarray(0, n));
    return n;
  }

  private fill(n: number): DataView {
    this.read(this.scratch.subarray(0, n));
    return this.scratchView;
  }
  /** The next byte. */
  readU8(): number {
    return this.fill(1).getUint8(0);
  }
  /** The next little-endian 16-bit value. */
  readU16(): number {
    return this.fill(2).getUint16(0, true);
  }
  /** Guest address of the next `n` bytes when they lie in one segment and one region (and consumes them); -1 otherwise. */
  private contiguous(n: number): number {
    if (n > this.remaining) return -1;
    const lens = this.chain.lens;
    while (this.segOff === lens[this.seg] && this.seg < this.end) {
      this.seg++;
      this.segOff = 0;
    }
    if (lens[this.seg] - this.segOff < n) return -1;
    const addr = this.chain.addrs[this.seg] + this.segOff;
    if (!this.mem.isContiguous(addr, n)) return -1; // the segment spans two adjacent regions
    this.segOff += n;
    this.remaining -= n;
    this.position += n;
    return addr;
  }
  /** The next little-endian 32-bit value. */
  readU32(): number {
    const a = this.contiguous(4);
    return a >= 0 ? this.mem.readU32(a) : this.fill(4).getUint32(0, true);
  }
  /** The next little-endian 64-bit value. */
  readU64(): bigint {
    const a = this.contiguous(8);
    return a >= 0 ? this.mem.readU64(a) : this.fill(8).getBigUint64(0, true);
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
    const mem = this.mem;
    this.advance(src.length, (addr, len, done) => mem.write(addr, src.subarray(done, done + len)));
  }

  /** Writes `n` bytes of `value`. */
  fill(n: number, value = 0): void {
    const mem = this.mem;
    this.advance(n, (addr, len) => mem.fill(addr, len, value));
  }

  /** Calls `fn` with a guest view of each writable piece (zero-copy fill), up to `n` bytes. */
  produce(n: number, fn: (view: Uint8Array) => void): void {
    const mem = this.mem;
    this.advance(n, (addr, len) => {
      const r = mem.region(addr, len);
      const off = addr - r.guestAddr;
      fn(r.bytes.subarray(off, off + len));
      if (mem.onWrite !== null) mem.onWrite(addr, len);
    });
  }

  private put(n: number): void {
    this.write(this.scratch.subarray(0, n));
  }
  /** Writes the next byte. */
  writeU8(v: number): void {
    this.scratchView.setUint8(0, v);
    this.put(1);
  }
  /** Writes the next little-endian 16-bit value. */
  writeU16(v: number): void {
    this.scratchView.setUint16(0, v, true);
    this.put(2);
  }
  /** Writes the next little-endian 32-bit value. */
  writeU32(v: number): void {
    this.scratchView.setUint32(0, v >>> 0, true);
    this.put(4);
  }
  /** Writes the next little-endian 64-bit value. */
  writeU64(v: bigint): void {
    this.scratchView.setBigUint64(0, BigInt.asUintN(64, v), true);
    this.put(8);
  }
}
