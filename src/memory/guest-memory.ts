/**
 * Guest memory: the guest-physical address space that drivers and devices share.
 *
 * Every access is checked: a range outside memory, or one that runs into a hole between
 * regions where a single view is needed, raises a {@link MemoryError} (never a raw
 * RangeError), so ring code can turn a hostile address into a verdict.
 *
 * Multi-byte accessors are little-endian (virtio 1.x is little-endian, VIRTIO spec 1.4
 * section 1.4). Ring indices go through Atomics on typed-array views so a peer running
 * concurrently (vCPUs writing shared memory under vhost-user) sees whole 16-bit values.
 *
 * Browser-safe: no Node import.
 */

import { VirtioTsError } from '../errors.js';
import { copyBytes, ViewCache } from './copy.js';

/**
 * What went wrong with guest memory:
 * - `out-of-bounds`: a guest range no region backs, or one that crosses a hole (or, for the
 *   typed accessors and views, a region boundary);
 * - `bad-region`: a region description that cannot be (bad address or size, beyond 2^53, larger
 *   than its buffer);
 * - `overlap`: two regions share guest addresses;
 * - `no-region`: guest memory was given no region;
 * - `unmapped`: a front-end (VMM) virtual address that no region maps (vhost-user ring addresses);
 * - `out-of-memory`: the guest allocator has no free range that fits;
 * - `unsupported-host`: the host is big-endian (the ring views are little-endian typed arrays);
 * - `unsafe-integer`: a 64-bit value asked for as a `number` (readU64Number) is 2^53 or more, which
 *   a number cannot hold exactly (read it with readU64, a bigint).
 */
export type MemoryErrorKind = 'out-of-bounds' | 'bad-region' | 'overlap' | 'no-region' | 'unmapped' | 'out-of-memory' | 'unsupported-host' | 'unsafe-integer';

/** The memory layer's error: a guest range that no region backs, a region that does not fit, ... */
export class MemoryError extends VirtioTsError<MemoryErrorKind> {
  /** A MemoryError of `kind` about [addr, addr+length). */
  constructor(
    kind: MemoryErrorKind,
    message: string,
    /** The guest (or, for `unmapped`, front-end) address the failure is about. */
    readonly addr: number,
    /** Bytes from `addr`. */
    readonly length: number,
  ) {
    super(kind, message);
  }
}

/** Highest address (exclusive) any region may reach: guest addresses are JS numbers. */
export const MAX_GUEST_ADDRESS = Number.MAX_SAFE_INTEGER;

/** One region of guest memory to create: where it sits in the guest, how big, and the buffer behind it. */
export interface MemoryRegionInit {
  /** Guest-physical address of the first byte. */
  guestAddr: number;
  /** Size in bytes. */
  size: number;
  /** Backing store; mmapped buffers from the native addon fit here too. */
  buffer: ArrayBufferLike;
  /** Byte offset of the region inside `buffer` (default 0). */
  offset?: number;
  /** Frontend (VMM) virtual address of the first byte, for vhost-user ring translation. */
  userAddr?: number;
  /**
   * Whether another thread or process writes this memory while we run (vhost-user vCPUs, a
   * worker): ring indices then go through Atomics. Default: true for a SharedArrayBuffer.
   * Atomics on memory nobody else touches only cost time.
   */
  concurrent?: boolean;
}

/** One contiguous piece of guest memory with its preallocated views. */
export class MemoryRegion {
  readonly guestAddr: number;
  readonly size: number;
  /** Exclusive end: guestAddr + size. */
  readonly end: number;
  readonly userAddr: number | undefined;
  readonly bytes: Uint8Array;
  readonly view: DataView;
  /** 16-bit view for Atomics on ring indices, when the region is concurrent and its offset even. */
  readonly u16: Uint16Array | null;
  /** 32-bit view over the region when its byte offset is a multiple of 4. */
  readonly u32: Uint32Array | null;

  /** Views over `init.buffer`; a MemoryError (`bad-region`) when the description cannot be. */
  constructor(init: MemoryRegionInit) {
    const offset = init.offset ?? 0;
    if (!Number.isSafeInteger(init.guestAddr) || init.guestAddr < 0) {
      throw new MemoryError('bad-region', `region guest address ${init.guestAddr} is not a non-negative safe integer`, init.guestAddr, init.size);
    }
    if (!Number.isSafeInteger(init.size) || init.size <= 0) {
      throw new MemoryError('bad-region', `region size ${init.size} is not a positive integer`, init.guestAddr, init.size);
    }
    if (init.guestAddr + init.size > MAX_GUEST_ADDRESS) {
      throw new MemoryError('bad-region', 'region ends beyond the largest supported guest address (2^53)', init.guestAddr, init.size);
    }
    if (offset < 0 || offset + init.size > init.buffer.byteLength) {
      throw new MemoryError(
        'bad-region',
        `region [${offset}, ${offset + init.size}) does not fit its ${init.buffer.byteLength}-byte buffer`,
        init.guestAddr,
        init.size,
      );
    }
    this.guestAddr = init.guestAddr;
    this.size = init.size;
    this.end = init.guestAddr + init.size;
    this.userAddr = init.userAddr;
    this.bytes = new Uint8Array(init.buffer, offset, init.size);
    this.view = new DataView(init.buffer, offset, init.size);
    const concurrent = init.concurrent ?? (typeof SharedArrayBuffer !== 'undefined' && init.buffer instanceof SharedArrayBuffer);
    this.u16 = concurrent && offset % 2 === 0 ? new Uint16Array(init.buffer, offset, Math.floor(init.size / 2)) : null;
    this.u32 = offset % 4 === 0 ? new Uint32Array(init.buffer, offset, Math.floor(init.size / 4)) : null;
  }

  /** Whether [addr, addr+length) lies inside this region. */
  contains(addr: number, length: number): boolean {
    return addr >= this.guestAddr && length >= 0 && addr + length <= this.end;
  }
}

/** Called after every write through GuestMemory, for dirty-page logging (live migration). */
export type WriteHook = (addr: number, length: number) => void;

const hostIsLittleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function fmt(addr: number): string {
  return Number.isFinite(addr) ? `0x${addr.toString(16)}` : String(addr);
}

/** Regions sorted by guest address; a MemoryError when two overlap. */
function sortedRegions(regions: readonly MemoryRegion[]): MemoryRegion[] {
  const built = [...regions].sort((a, b) => a.guestAddr - b.guestAddr);
  for (let i = 1; i < built.length; i++) {
    if (built[i].guestAddr < built[i - 1].end) {
      throw new MemoryError('overlap', `regions overlap at ${fmt(built[i].guestAddr)}`, built[i].guestAddr, built[i].size);
    }
  }
  return built;
}

/**
 * The guest-physical address space: regions sorted by address, every access checked (a
 * MemoryError, kind `out-of-bounds`, for a range no region backs).
 */
export class GuestMemory {
  /**
   * The regions, sorted by guest address. Replaced (never changed in place) when regions are
   * added or removed, so a caller iterating it is not disturbed.
   */
  get regions(): readonly MemoryRegion[] {
    return this.list;
  }
  /** Optional dirty-page hook; ring code and cursors call it for every guest write. */
  onWrite: WriteHook | null = null;
  /**
   * Changes whenever regions are added or removed: a caller that keeps a region found by
   * regionFor (a chain cursor, for the buffer it is in) looks it up again when this moved, so it
   * never touches a region that is gone.
   */
  get generation(): number {
    return this.gen;
  }
  private gen = 0;
  private list: MemoryRegion[];
  /** The region the last lookup found (most accesses hit it again); null once none is left. */
  private last: MemoryRegion | null;
  /** Views of ranges copied more than once (copy.ts): readInto and writeFrom allocate nothing. */
  private readonly views = new ViewCache();

  /** Guest memory over `regions` (at least one; none may overlap: MemoryError `no-region`, `overlap`). */
  constructor(regions: readonly MemoryRegionInit[]) {
    if (!hostIsLittleEndian) throw new MemoryError('unsupported-host', 'virtio-ts needs a little-endian host (typed-array ring views)', 0, 0);
    if (regions.length === 0) throw new MemoryError('no-region', 'guest memory needs at least one region', 0, 0);
    this.list = sortedRegions(regions.map((r) => new MemoryRegion(r)));
    this.last = this.list[0];
  }

  /**
   * Adds regions while the memory is in use (vhost-user ADD_MEM_REG): everything else stays,
   * so views and ring regions callers hold remain valid. A MemoryError, with nothing added, when
   * a new region is malformed or overlaps another.
   */
  addRegions(inits: readonly MemoryRegionInit[]): MemoryRegion[] {
    const added = inits.map((r) => new MemoryRegion(r));
    this.list = sortedRegions([...this.list, ...added]);
    this.gen++;
    return added;
  }

  /**
   * Removes every region inside [guestAddr, guestAddr+size) and returns them (vhost-user
   * REM_MEM_REG); their addresses are outside guest memory from now on. The caller makes sure
   * nothing still uses them (it owns their buffers). The memory may end up with no region.
   */
  removeRegions(guestAddr: number, size: number): MemoryRegion[] {
    const end = guestAddr + size;
    const removed = this.list.filter((r) => r.guestAddr >= guestAddr && r.end <= end);
    if (removed.length === 0) return removed;
    this.list = this.list.filter((r) => !removed.includes(r));
    if (this.last !== null && removed.includes(this.last)) this.last = this.list[0] ?? null;
    this.views.clear(); // no view of a removed region's buffer stays reachable from here
    this.gen++;
    return removed;
  }

  /** One region of `size` bytes at guest address `guestAddr` over a fresh buffer. */
  static create(size: number, options: { guestAddr?: number; shared?: boolean } = {}): GuestMemory {
    const buffer = options.shared ? new SharedArrayBuffer(size) : new ArrayBuffer(size);
    return new GuestMemory([{ guestAddr: options.guestAddr ?? 0, size, buffer }]);
  }

  /** Total bytes backed by regions. */
  get size(): number {
    let n = 0;
    for (const r of this.regions) n += r.size;
    return n;
  }

  /** The region that holds all of [addr, addr+length), or null. Never throws. */
  regionFor(addr: number, length: number): MemoryRegion | null {
    // The region of the last lookup again (most lookups): small enough to inline into ring walks
    // and cursors. Inside a region means 0 <= addr, addr + length <= 2^53: with whole numbers
    // (a fractional address would index a typed array as undefined) both are safe integers.
    const last = this.last;
    if (last !== null && addr >= last.guestAddr && length >= 0 && addr + length <= last.end && Number.isInteger(addr) && Number.isInteger(length)) return last;
    return this.lookup(addr, length);
  }

  /** regionFor past the last region: a binary search over the regions. */
  private lookup(addr: number, length: number): MemoryRegion | null {
    if (!Number.isSafeInteger(addr) || !Number.isSafeInteger(length) || addr < 0 || length < 0) return null;
    // Binary search for the last region starting at or below addr (up to hundreds of regions
    // under vhost-user memory slots).
    const list = this.list;
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (list[mid].guestAddr <= addr) lo = mid + 1;
      else hi = mid;
    }
    const r = list[lo - 1];
    if (r === undefined || addr + length > r.end) return null;
    this.last = r;
    return r;
  }

  /** True when [addr, addr+length) lies inside one region. */
  isContiguous(addr: number, length: number): boolean {
    return this.regionFor(addr, length) !== null;
  }

  /** True when every byte of [addr, addr+length) is backed, across regions if needed. */
  isBacked(addr: number, length: number): boolean {
    if (!Number.isSafeInteger(addr) || !Number.isSafeInteger(length) || addr < 0 || length < 0) return false;
    let cur = addr;
    const end = addr + length;
    while (cur < end) {
      const r = this.regionFor(cur, 1);
      if (r === null) return false;
      cur = Math.min(end, r.end);
    }
    return true;
  }

  /** The region holding the range, or a MemoryError naming the range. */
  region(addr: number, length: number): MemoryRegion {
    const r = this.regionFor(addr, length);
    if (r === null) throw this.outOfBounds(addr, length);
    return r;
  }

  /** A view of [addr, addr+length); the range must lie in one region. */
  bytes(addr: number, length: number): Uint8Array {
    const r = this.region(addr, length);
    const off = addr - r.guestAddr;
    return r.bytes.subarray(off, off + length);
  }

  /** The byte at `addr`. */
  readU8(addr: number): number {
    const r = this.region(addr, 1);
    return r.bytes[addr - r.guestAddr];
  }
  /** The little-endian 16-bit value at `addr` (within one region). */
  readU16(addr: number): number {
    const r = this.region(addr, 2);
    return r.view.getUint16(addr - r.guestAddr, true);
  }
  /** The little-endian 32-bit value at `addr` (within one region). */
  readU32(addr: number): number {
    const r = this.region(addr, 4);
    return r.view.getUint32(addr - r.guestAddr, true);
  }
  /** The little-endian 64-bit value at `addr` (within one region). */
  readU64(addr: number): bigint {
    const r = this.region(addr, 8);
    return r.view.getBigUint64(addr - r.guestAddr, true);
  }
  /**
   * The little-endian 64-bit value at `addr` (within one region) as a number, with no bigint: a
   * MemoryError of kind `unsafe-integer` when it is 2^53 or more (readU64 reads any value).
   */
  readU64Number(addr: number): number {
    const r = this.region(addr, 8);
    const off = addr - r.guestAddr;
    const hi = r.view.getUint32(off + 4, true);
    if (hi > 0x1f_ffff) throw unsafeU64(addr, hi, r.view.getUint32(off, true));
    return hi * 0x1_0000_0000 + r.view.getUint32(off, true);
  }
  /** Writes a byte at `addr`. */
  writeU8(addr: number, value: number): void {
    const r = this.region(addr, 1);
    r.bytes[addr - r.guestAddr] = value;
    if (this.onWrite !== null) this.onWrite(addr, 1);
  }
  /** Writes a little-endian 16-bit value at `addr` (within one region). */
  writeU16(addr: number, value: number): void {
    const r = this.region(addr, 2);
    r.view.setUint16(addr - r.guestAddr, value, true);
    if (this.onWrite !== null) this.onWrite(addr, 2);
  }
  /** Writes a little-endian 32-bit value at `addr` (within one region). */
  writeU32(addr: number, value: number): void {
    const r = this.region(addr, 4);
    r.view.setUint32(addr - r.guestAddr, value >>> 0, true);
    if (this.onWrite !== null) this.onWrite(addr, 4);
  }
  /**
   * Writes a little-endian 64-bit value at `addr` (within one region). A number that is a
   * non-negative safe integer goes without a bigint; any other value is taken modulo 2^64 as
   * before (a fractional number is a RangeError).
   */
  writeU64(addr: number, value: bigint | number): void {
    const r = this.region(addr, 8);
    const off = addr - r.guestAddr;
    if (typeof value === 'number' && value >= 0 && Number.isSafeInteger(value)) {
      r.view.setUint32(off, value % 0x1_0000_0000, true);
      r.view.setUint32(off + 4, Math.floor(value / 0x1_0000_0000), true);
    } else {
      r.view.setBigUint64(off, BigInt.asUintN(64, BigInt(value)), true);
    }
    if (this.onWrite !== null) this.onWrite(addr, 8);
  }

  /** Atomic 16-bit load (ring indices). `addr` must be even. */
  loadU16(addr: number): number {
    const r = this.region(addr, 2);
    const off = addr - r.guestAddr;
    if (r.u16 !== null && (off & 1) === 0) return Atomics.load(r.u16, off >> 1);
    return r.view.getUint16(off, true);
  }

  /** Atomic 16-bit store (ring indices). */
  storeU16(addr: number, value: number): void {
    const r = this.region(addr, 2);
    const off = addr - r.guestAddr;
    if (r.u16 !== null && (off & 1) === 0) Atomics.store(r.u16, off >> 1, value);
    else r.view.setUint16(off, value, true);
    if (this.onWrite !== null) this.onWrite(addr, 2);
  }

  /** Copies guest bytes into `dst`, crossing region boundaries where regions are adjacent. */
  read(addr: number, dst: Uint8Array): void {
    this.readInto(addr, dst, 0, dst.length);
  }

  /**
   * Copies the `length` guest bytes at `addr` into dst[dstOffset, dstOffset+length), crossing
   * region boundaries where regions are adjacent. Allocates nothing (copy.ts says how). A
   * MemoryError (`out-of-bounds`, nothing copied) when a byte is not backed; a RangeError when
   * the range does not fit `dst` (the caller's mistake, not the guest's).
   */
  readInto(addr: number, dst: Uint8Array, dstOffset: number, length: number): void {
    checkHostRange(dst, dstOffset, length);
    const r = this.regionFor(addr, length);
    if (r !== null) copyBytes(this.views, r.bytes, addr - r.guestAddr, dst, dstOffset, length);
    else this.copyAcross(addr, dst, dstOffset, length, false);
  }

  /** Copies `src` into guest memory, crossing region boundaries where regions are adjacent. */
  write(addr: number, src: Uint8Array): void {
    this.writeFrom(addr, src, 0, src.length);
  }

  /**
   * Copies src[srcOffset, srcOffset+length) to guest address `addr`, crossing region boundaries
   * where regions are adjacent, then tells onWrite. Allocates nothing (copy.ts says how). A
   * MemoryError (`out-of-bounds`, nothing written) when a byte is not backed; a RangeError when
   * the range does not fit `src`.
   */
  writeFrom(addr: number, src: Uint8Array, srcOffset: number, length: number): void {
    checkHostRange(src, srcOffset, length);
    const r = this.regionFor(addr, length);
    if (r !== null) copyBytes(this.views, src, srcOffset, r.bytes, addr - r.guestAddr, length);
    else this.copyAcross(addr, src, srcOffset, length, true);
    if (this.onWrite !== null && length > 0) this.onWrite(addr, length);
  }

  /**
   * Copies src[srcOffset, srcOffset+length) to dst[dstOffset, dstOffset+length) between host
   * arrays (a region's `bytes` among them) with no allocation, as readInto and writeFrom copy (a
   * RangeError when a range does not fit its array). No guest address is involved and onWrite is
   * not called: for code that holds the region already (ChainReader, ChainWriter).
   */
  copyBetween(src: Uint8Array, srcOffset: number, dst: Uint8Array, dstOffset: number, length: number): void {
    checkHostRange(src, srcOffset, length);
    checkHostRange(dst, dstOffset, length);
    copyBytes(this.views, src, srcOffset, dst, dstOffset, length);
  }

  /**
   * readInto / writeFrom for a guest range in more than one region: all of it backed (else a
   * MemoryError `out-of-bounds` before any byte moves), region by region.
   */
  private copyAcross(addr: number, host: Uint8Array, hostOffset: number, length: number, toGuest: boolean): void {
    if (!this.isBacked(addr, length)) throw this.outOfBounds(addr, length);
    let done = 0;
    while (done < length) {
      const p = this.region(addr + done, 1);
      const off = addr + done - p.guestAddr;
      const n = Math.min(length - done, p.size - off);
      if (toGuest) copyBytes(this.views, host, hostOffset + done, p.bytes, off, n);
      else copyBytes(this.views, p.bytes, off, host, hostOffset + done, n);
      done += n;
    }
  }

  /** Sets [addr, addr+length) to `value`. */
  fill(addr: number, length: number, value = 0): void {
    if (!this.isBacked(addr, length)) throw this.outOfBounds(addr, length);
    let done = 0;
    while (done < length) {
      const r = this.region(addr + done, 1);
      const off = addr + done - r.guestAddr;
      const n = Math.min(length - done, r.size - off);
      r.bytes.fill(value, off, off + n);
      done += n;
    }
    if (this.onWrite !== null && length > 0) this.onWrite(addr, length);
  }

  /** Translates a frontend virtual address (vhost-user ring addresses) to a guest address. */
  userToGuest(userAddr: number, length: number): number {
    for (const r of this.regions) {
      if (r.userAddr === undefined) continue;
      if (userAddr >= r.userAddr && userAddr + length <= r.userAddr + r.size) return r.guestAddr + (userAddr - r.userAddr);
    }
    throw new MemoryError('unmapped', `frontend address ${fmt(userAddr)} (+${length}) is in no memory region`, userAddr, length);
  }

  /** The `out-of-bounds` MemoryError for [addr, addr+length), naming the regions there are. */
  private outOfBounds(addr: number, length: number): MemoryError {
    const map = this.regions.map((r) => `[${fmt(r.guestAddr)}, ${fmt(r.end)})`).join(' ');
    return new MemoryError(
      'out-of-bounds',
      `guest range ${fmt(addr)} +${length} is outside guest memory or crosses a hole (regions: ${map})`,
      addr,
      length,
    );
  }
}

/** A RangeError unless [offset, offset+length) is a whole-number range inside `a`. */
function checkHostRange(a: Uint8Array, offset: number, length: number): void {
  if (!(Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0 && offset + length <= a.length)) {
    throw new RangeError(`range ${offset} +${length} does not fit a ${a.length}-byte array`);
  }
}

/** The `unsafe-integer` MemoryError for a 64-bit value at `addr` too large for a number. */
function unsafeU64(addr: number, hi: number, lo: number): MemoryError {
  const hex = `0x${hi.toString(16)}${lo.toString(16).padStart(8, '0')}`;
  return new MemoryError('unsafe-integer', `64-bit value ${hex} at ${fmt(addr)} is 2^53 or more: read it with readU64`, addr, 8);
}

/** FNV-1a (32-bit) over guest bytes, region by region, continuing from `h` (drivers' audit hashes). */
export function hashGuest(mem: GuestMemory, addr: number, len: number, h = 2166136261): number {
  let done = 0;
  while (done < len) {
    const r = mem.region(addr + done, 1);
    const off = addr + done - r.guestAddr;
    const n = Math.min(len - done, r.size - off);
    const b = r.bytes;
    for (let i = off; i < off + n; i++) h = Math.imul(h ^ b[i], 16777619);
    done += n;
  }
  return h >>> 0;
}
