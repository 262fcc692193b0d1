/**
 * The virtio-blk request parser (spec 5.2.6), apart from its execution (device.ts): what a
 * chain popped from a request queue asks for, read from guest memory and checked for shape
 * only. Whether the request is allowed (range, read-only, negotiated features) is the
 * device's to judge. The fuzz target fuzz/blk-request.fuzz.ts runs this parser on hostile
 * chains and memory.
 */
import type { GuestMemory } from '../../memory/guest-memory.js';
import { BlkType } from '../../spec/blk.js';
import type { ChainReader, DescriptorChain } from '../../virtqueue/chain.js';

/** Bytes of one struct virtio_blk_discard_write_zeroes. */
export const SEGMENT_SIZE = 16;

/**
 * A virtio-blk request as its chain carries it (5.2.6): the 16-byte header (type, reserved,
 * sector) at the start of the device-readable part, data after it, and the status byte as the
 * last device-writable byte. Pure: reads guest memory, writes nothing, keeps nothing.
 */
export type ParsedBlkRequest =
  /** No device-writable byte: no status can be reported. */
  | { kind: 'no-status' }
  /** Fewer than 16 readable bytes: answered IOERR at statusAddr. */
  | { kind: 'short'; statusAddr: number }
  | {
      kind: 'request';
      statusAddr: number;
      type: number;
      sector: number;
      /** Driver -> device payload bytes (after the header). */
      dataOut: number;
      /** Device -> driver payload bytes (before the status byte). */
      dataIn: number;
      /** IN and GET_ID: where the payload goes in guest memory. */
      inRanges: Range[];
      /** OUT: the payload, copied out of guest memory (a request still in the backend when the
       * device is reset must not touch memory the driver got back, basic.reset.device.2). */
      outData: Uint8Array | null;
      /** DISCARD, WRITE_ZEROES, SECURE_ERASE: the segments. */
      segs: Segment[];
    };

/** Parses the request in `chain` (popped from a queue over `mem`) with `reader` (reset here). */
export function parseBlkRequest(mem: GuestMemory, chain: DescriptorChain, reader: ChainReader): ParsedBlkRequest {
  const h = new BlkRequestHeader(0).parse(mem, chain, reader);
  if (h.kind === 'no-status') return { kind: 'no-status' };
  const statusAddr = h.statusAddr;
  if (h.kind === 'short') return { kind: 'short', statusAddr };
  const { type, sector, dataOut, dataIn } = h;
  // Data moves through host buffers: a request still in the backend when the device is reset
  // must not touch guest memory the driver got back (basic.reset.device.2).
  const inRanges = type === BlkType.IN || type === BlkType.GET_ID ? ranges(chain, chain.readable, chain.count, 0, dataIn) : [];
  const outData = type === BlkType.OUT ? gather(mem, ranges(chain, 0, chain.readable, 16, dataOut)) : null;
  const segs = type === BlkType.DISCARD || type === BlkType.WRITE_ZEROES || type === BlkType.SECURE_ERASE ? readSegments(reader, dataOut) : [];
  return { kind: 'request', statusAddr, type, sector, dataOut, dataIn, inRanges, outData, segs };
}

/**
 * The parts of a request the device judges before it touches any data, read in place into
 * preallocated fields: what {@link parseBlkRequest} returns as an object, without allocating
 * (the block device's hot path keeps one and parses every chain into it). For DISCARD,
 * WRITE_ZEROES and SECURE_ERASE the first `segments.capacity` segments are read too.
 */
export class BlkRequestHeader {
  /** 'no-status': no device-writable byte; 'short': fewer than 16 readable bytes; else 'request'. */
  kind: 'no-status' | 'short' | 'request' = 'no-status';
  /** Guest address of the status byte (the chain's last writable byte); -1 with 'no-status'. */
  statusAddr = -1;
  type = 0;
  /** The header's sector, as a number (a value past 2^53 is rounded: it is far beyond any capacity). */
  sector = 0;
  /** Driver -> device payload bytes (after the header). */
  dataOut = 0;
  /** Device -> driver payload bytes (before the status byte). */
  dataIn = 0;
  /** Whole 16-byte segments in the payload (DISCARD, WRITE_ZEROES, SECURE_ERASE), read or not. */
  segmentCount = 0;
  /** The first segments' fields (at most `capacity`; `segmentCount` may be larger). */
  readonly segments: { readonly capacity: number; readonly sector: Float64Array; readonly sectors: Uint32Array; readonly flags: Uint32Array };

  /** A header with room for `segmentCapacity` segments. */
  constructor(segmentCapacity: number) {
    this.segments = { capacity: segmentCapacity, sector: new Float64Array(segmentCapacity), sectors: new Uint32Array(segmentCapacity), flags: new Uint32Array(segmentCapacity) };
  }

  /**
   * Reads the request in `chain` (over `mem`) into this object. `reader` is used (reset, and
   * left after what was read) when the header spans buffers or segments follow it
   * (DISCARD, WRITE_ZEROES, SECURE_ERASE); else it is left as it was.
   */
  parse(mem: GuestMemory, chain: DescriptorChain, reader: ChainReader): this {
    this.segmentCount = 0;
    if (chain.writableBytes < 1) {
      this.kind = 'no-status';
      this.statusAddr = -1;
      return this;
    }
    // The status byte is the last writable byte.
    this.statusAddr = lastWritableByte(chain);
    if (chain.readableBytes < 16) {
      this.kind = 'short';
      return this;
    }
    this.kind = 'request';
    this.dataOut = chain.readableBytes - 16;
    this.dataIn = chain.writableBytes - 1;
    // The usual case: the whole header in the first buffer (one region holds every piece of a
    // chain, DescriptorChain.append), read with three loads from the region's view, no cursor.
    // Requests with segments after the header take the cursor, which reads on past it.
    if (chain.lens[0] >= 16) {
      const addr = chain.addrs[0];
      const reg = mem.regionFor(addr, 16);
      if (reg !== null) {
        const v = reg.view;
        const at = addr - reg.guestAddr;
        const type = v.getUint32(at, true);
        if (type !== BlkType.DISCARD && type !== BlkType.WRITE_ZEROES && type !== BlkType.SECURE_ERASE) {
          this.type = type;
          this.sector = v.getUint32(at + 12, true) * 2 ** 32 + v.getUint32(at + 8, true);
          return this;
        }
      }
    }
    const r = reader.reset(mem, chain);
    this.type = r.readU32();
    r.readU32(); // reserved
    this.sector = readU64Number(r);
    const type = this.type;
    if (type === BlkType.DISCARD || type === BlkType.WRITE_ZEROES || type === BlkType.SECURE_ERASE) {
      const n = Math.floor(this.dataOut / SEGMENT_SIZE);
      this.segmentCount = n;
      const s = this.segments;
      for (let i = 0; i < n && i < s.capacity; i++) {
        s.sector[i] = readU64Number(r);
        s.sectors[i] = r.readU32();
        s.flags[i] = r.readU32();
      }
    }
    return this;
  }
}

/** The next little-endian u64 as a number, from two u32 reads (no BigInt). */
function readU64Number(r: ChainReader): number {
  const lo = r.readU32();
  return r.readU32() * 2 ** 32 + lo;
}

/**
 * One struct virtio_blk_discard_write_zeroes of a DISCARD, WRITE_ZEROES or SECURE_ERASE
 * request (5.2.6): `sectors` 512-byte sectors from `sector`; `flags` bit 0 is unmap
 * (WRITE_ZEROES only), the other bits are reserved.
 */
export interface Segment {
  sector: number;
  sectors: number;
  flags: number;
}

function readSegments(r: ChainReader, bytes: number): Segment[] {
  const out: Segment[] = [];
  for (let n = Math.floor(bytes / SEGMENT_SIZE); n > 0 && r.remaining >= SEGMENT_SIZE; n--) {
    out.push({ sector: readU64Number(r), sectors: r.readU32(), flags: r.readU32() });
  }
  return out;
}

/** A stretch of guest memory, `len` bytes at guest-physical address `addr`: part of one descriptor's buffer. */
export type Range = [addr: number, len: number];

/** Guest ranges of buffers [from, to) of a chain: `skip` bytes left out, then at most `limit` bytes. */
function ranges(chain: DescriptorChain, from: number, to: number, skip: number, limit: number): Range[] {
  const out: Range[] = [];
  const p = new PayloadPieces().over(chain, from, to, skip, limit);
  while (p.next()) out.push([p.addr, p.len]);
  return out;
}

/**
 * The guest pieces of a request's payload, walked in place (nothing allocated): `out()` the
 * device-readable bytes after the 16-byte header, `in()` the device-writable bytes before the
 * status byte. After each `next()` that returns true, `addr` and `len` name one piece (never
 * empty; inside one memory region, as DescriptorChain splits them).
 */
export class PayloadPieces {
  /** The current piece: its guest address and length. */
  addr = 0;
  len = 0;
  private chain: DescriptorChain | null = null;
  private i = 0;
  private end = 0;
  private skip = 0;
  private left = 0;

  /** The first `bytes` of the readable part after the header (OUT data, segments). */
  out(chain: DescriptorChain, bytes: number): this {
    return this.over(chain, 0, chain.readable, 16, bytes);
  }

  /** The first `bytes` of the writable part (IN / GET_ID data, before the status byte). */
  in(chain: DescriptorChain, bytes: number): this {
    return this.over(chain, chain.readable, chain.count, 0, bytes);
  }

  /** Buffers [from, to) of `chain`: `skip` bytes left out, then at most `limit` bytes. */
  over(chain: DescriptorChain, from: number, to: number, skip: number, limit: number): this {
    this.chain = chain;
    this.i = from;
    this.end = to;
    this.skip = skip;
    this.left = limit;
    return this;
  }

  /** Moves to the next piece; false when the payload is done. */
  next(): boolean {
    const chain = this.chain!;
    while (this.left > 0 && this.i < this.end) {
      let addr = chain.addrs[this.i];
      let len = chain.lens[this.i];
      this.i++;
      if (this.skip >= len) {
        this.skip -= len;
        continue;
      }
      addr += this.skip;
      len -= this.skip;
      this.skip = 0;
      const n = Math.min(len, this.left);
      if (n === 0) continue;
      this.left -= n;
      this.addr = addr;
      this.len = n;
      return true;
    }
    return false;
  }
}

/** Copies guest ranges into one host buffer. */
function gather(mem: GuestMemory, rs: Range[]): Uint8Array {
  const out = new Uint8Array(rs.reduce((n, r) => n + r[1], 0));
  let off = 0;
  for (const [addr, len] of rs) {
    mem.read(addr, out.subarray(off, off + len));
    off += len;
  }
  return out;
}

function lastWritableByte(chain: DescriptorChain): number {
  for (let i = chain.count - 1; i >= chain.readable; i--) if (chain.lens[i] > 0) return chain.addrs[i] + chain.lens[i] - 1;
  return -1;
}
