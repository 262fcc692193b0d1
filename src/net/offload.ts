// Offload completion (issue 15): a frame whose virtio-net header asks for work the receiver cannot
// take is finished here. A partial checksum (VIRTIO_NET_HDR_F_NEEDS_CSUM, spec 5.1.6.2) is filled
// the way the device would (the ones' complement sum from csum_start to the end, stored at
// csum_start + csum_offset); a GSO frame (5.1.6.2: TCPv4, TCPv6, UDP fragmentation, UDP
// segmentation) is cut into MTU-sized frames with their own IP lengths, ids, TCP sequence numbers
// and checksums, as Linux's software GSO does.
//
// Allocation-free on the hot path: segments are built in preallocated scratch buffers (one per
// nesting level, so an `emit` that completes again does not overwrite its caller's frame).
// Browser-safe.
import type { NetOffload, OffloadSupport } from './frame-port.js';

/** What completeOffloads did with one frame. */
export interface OffloadCounters {
  /** Frames passed on as they were (offloads the receiver takes, or none). */
  passed: number;
  /** Checksums filled in software. */
  checksummed: number;
  /** GSO frames segmented in software. */
  segmented: number;
  /** Segments those produced. */
  segments: number;
  /** Frames dropped: headers that do not parse, or a GSO kind with no software path (IPv6 UFO). */
  dropped: number;
}

/** Counters of every completeOffloads call in this realm (tests and `serve net --report` read them). */
export const offloadCounters: OffloadCounters = { passed: 0, checksummed: 0, segmented: 0, segments: 0, dropped: 0 };

/** The largest frame a GSO frame may be (64 KiB of IP payload plus link headers). */
export const MAX_GSO_FRAME = 65536 + 14 + 8;

const SCRATCH_DEPTH = 4;
const scratch: Uint8Array[] = [];
let depth = 0;

function scratchBuffer(): Uint8Array | null {
  if (depth >= SCRATCH_DEPTH) return null;
  // Grown once per nesting level, the first time that level is used.
  scratch[depth] ??= new Uint8Array(MAX_GSO_FRAME);
  return scratch[depth];
}

/** The 16-bit ones' complement sum of bytes [start, end) added to `sum` (not folded, not inverted). */
export function onesSum(buf: Uint8Array, start: number, end: number, sum = 0): number {
  let i = start;
  // Summing 32-bit words of two 16-bit halves keeps the carry in the upper bits; fold every so often.
  for (; i + 1 < end; i += 2) {
    sum += (buf[i] << 8) | buf[i + 1];
    if (sum > 0x7fffffff) sum = (sum & 0xffff) + (sum >>> 16);
  }
  if (i < end) sum += buf[i] << 8;
  return sum;
}

/** Folds a ones' complement sum to 16 bits. */
export function foldSum(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

/**
 * Fills a partial checksum (NEEDS_CSUM): the field at start + offset holds the pseudo-header sum
 * (5.1.6.2, net.packet-transmission.driver.27); the result is the ones' complement of the sum
 * from `start` to the end. A result of 0 is stored as 0xffff (0 means "no checksum" to UDP; the
 * same value to TCP, as Linux's skb_checksum_help does). False when the field is outside the frame.
 */
export function fillChecksum(frame: Uint8Array, start: number, offset: number, length = frame.length): boolean {
  const at = start + offset;
  if (start >= length || at + 2 > length) return false;
  const c = ~foldSum(onesSum(frame, start, length)) & 0xffff;
  const v = c === 0 ? 0xffff : c;
  frame[at] = v >>> 8;
  frame[at + 1] = v & 0xff;
  return true;
}

/** Where the IP header starts after the Ethernet header and up to two VLAN tags; -1 if not IP. */
export function l3Offset(frame: Uint8Array, length = frame.length): number {
  let off = 12;
  for (let tags = 0; tags < 3; tags++) {
    if (off + 2 > length) return -1;
    const type = (frame[off] << 8) | frame[off + 1];
    if (type === 0x8100 || type === 0x88a8) {
      off += 4;
      continue;
    }
    return type === 0x0800 || type === 0x86dd ? off + 2 : -1;
  }
  return -1;
}

/** Sum of the IPv4/IPv6 pseudo-header for `l4Length` bytes of protocol `proto`. */
function pseudoSum(frame: Uint8Array, l3: number, v6: boolean, proto: number, l4Length: number): number {
  let sum = v6 ? onesSum(frame, l3 + 8, l3 + 40) : onesSum(frame, l3 + 12, l3 + 20);
  sum += proto + (l4Length >>> 16) + (l4Length & 0xffff);
  return sum;
}

/** Computes the whole L4 checksum of a TCP or UDP packet from scratch (field zeroed first). */
function l4Checksum(buf: Uint8Array, l3: number, v6: boolean, l4: number, end: number, proto: number): void {
  const at = l4 + (proto === 6 ? 16 : 6);
  buf[at] = 0;
  buf[at + 1] = 0;
  const c = ~foldSum(onesSum(buf, l4, end, pseudoSum(buf, l3, v6, proto, end - l4))) & 0xffff;
  const v = c === 0 && proto === 17 ? 0xffff : c;
  buf[at] = v >>> 8;
  buf[at + 1] = v & 0xff;
}

function ipv4HeaderChecksum(buf: Uint8Array, l3: number): void {
  const ihl = (buf[l3] & 0xf) * 4;
  buf[l3 + 10] = 0;
  buf[l3 + 11] = 0;
  const c = ~foldSum(onesSum(buf, l3, l3 + ihl)) & 0xffff;
  buf[l3 + 10] = c >>> 8;
  buf[l3 + 11] = c & 0xff;
}

const put16 = (b: Uint8Array, at: number, v: number) => {
  b[at] = (v >>> 8) & 0xff;
  b[at + 1] = v & 0xff;
};
const get16 = (b: Uint8Array, at: number) => (b[at] << 8) | b[at + 1];

/** Does the receiver take this frame's offloads as they are? */
export function acceptsOffload(offload: NetOffload | undefined, accepts: OffloadSupport): boolean {
  if (offload === undefined) return true;
  const gso = offload.gso;
  if (gso !== undefined) {
    const ok =
      gso.type === 'tcpv4' ? accepts.tso4 && (!gso.ecn || accepts.ecn) : gso.type === 'tcpv6' ? accepts.tso6 && (!gso.ecn || accepts.ecn) : gso.type === 'udp' ? accepts.ufo : accepts.uso;
    if (!ok) return false;
  }
  return offload.needsCsum === undefined || accepts.csum;
}

/**
 * Hands `frame` to `emit` in a form the receiver takes: as it is when `accepts` covers its
 * offloads; else with its partial checksum filled, or cut into segments (each with its own
 * headers and full checksums). The frames `emit` gets are valid only during the call. Returns
 * the frames emitted (0: dropped, counted in {@link offloadCounters}.dropped).
 */
export function completeOffloads(
  frame: Uint8Array,
  offload: NetOffload | undefined,
  accepts: OffloadSupport,
  emit: (frame: Uint8Array, offload: NetOffload | undefined) => void,
): number {
  if (acceptsOffload(offload, accepts)) {
    offloadCounters.passed++;
    emit(frame, offload);
    return 1;
  }
  const o = offload!;
  const buf = scratchBuffer();
  if (buf === null || frame.length > buf.length) {
    offloadCounters.dropped++;
    return 0;
  }
  depth++;
  try {
    if (o.gso === undefined) {
      // A partial checksum only: fill it in a copy (the caller's frame may be guest memory).
      buf.set(frame);
      if (!fillChecksum(buf, o.needsCsum!.start, o.needsCsum!.offset, frame.length)) {
        offloadCounters.dropped++;
        return 0;
      }
      offloadCounters.checksummed++;
      emit(buf.subarray(0, frame.length), o.dataValid ? DATA_VALID : undefined);
      return 1;
    }
    const n = segment(frame, o, buf, emit);
    if (n === 0) offloadCounters.dropped++;
    else {
      offloadCounters.segmented++;
      offloadCounters.segments += n;
    }
    return n;
  } finally {
    depth--;
  }
}

const DATA_VALID: NetOffload = Object.freeze({ dataValid: true });

/** Cuts a GSO frame into segments built in `buf`; 0 when its headers do not parse. */
function segment(frame: Uint8Array, o: NetOffload, buf: Uint8Array, emit: (frame: Uint8Array, offload: NetOffload | undefined) => void): number {
  const gso = o.gso!;
  const len = frame.length;
  const l3 = l3Offset(frame, len);
  if (l3 < 0 || l3 + 20 > len) return 0;
  const version = frame[l3] >>> 4;
  const v6 = version === 6;
  if (v6 !== (gso.type === 'tcpv6') && gso.type !== 'udp' && gso.type !== 'udp-l4') return 0;
  if (!v6 && version !== 4) return 0;
  if (v6 && l3 + 40 > len) return 0;
  // The transport header: where the driver said the checksum starts (it must, for GSO:
  // net.packet-transmission.driver.30), else right after a plain IP header.
  const l4 = o.needsCsum !== undefined ? o.needsCsum.start : v6 ? l3 + 40 : l3 + (frame[l3] & 0xf) * 4;
  const tcp = gso.type === 'tcpv4' || gso.type === 'tcpv6';
  if (l4 < l3 + 20 || l4 + (tcp ? 20 : 8) > len) return 0;
  const proto = tcp ? 6 : 17;
  const mss = gso.segmentSize;
  if (mss <= 0) return 0;

  if (gso.type === 'udp') {
    if (v6) return 0; // IPv6 UFO would need a fragment header inserted: no software path (deprecated in Linux since 4.14).
    return fragmentUdp4(frame, l3, l4, mss, buf, emit);
  }
  const hlen = tcp ? l4 + ((frame[l4 + 12] >>> 4) * 4) : l4 + 8;
  if (hlen > len || (tcp && hlen < l4 + 20)) return 0;
  const payload = len - hlen;
  const count = Math.max(1, Math.ceil(payload / mss));
  const seq0 = tcp ? ((frame[l4 + 4] << 24) | (frame[l4 + 5] << 16) | (frame[l4 + 6] << 8) | frame[l4 + 7]) >>> 0 : 0;
  const id0 = v6 ? 0 : get16(frame, l3 + 4);
  const tcpFlags = tcp ? frame[l4 + 13] : 0;
  for (let i = 0; i < count; i++) {
    const off = i * mss;
    const n = Math.min(mss, payload - off);
    buf.set(frame.subarray(0, hlen), 0);
    buf.set(frame.subarray(hlen + off, hlen + off + n), hlen);
    const end = hlen + n;
    if (v6) put16(buf, l3 + 4, end - l3 - 40);
    else {
      put16(buf, l3 + 2, end - l3);
      put16(buf, l3 + 4, (id0 + i) & 0xffff);
      ipv4HeaderChecksum(buf, l3);
    }
    if (tcp) {
      const seq = (seq0 + off) >>> 0;
      buf[l4 + 4] = seq >>> 24;
      buf[l4 + 5] = (seq >>> 16) & 0xff;
      buf[l4 + 6] = (seq >>> 8) & 0xff;
      buf[l4 + 7] = seq & 0xff;
      let flags = tcpFlags;
      if (i < count - 1) flags &= ~0x09; // FIN and PSH on the last segment only
      if (i > 0) flags &= ~0x80; // CWR on the first only (VIRTIO_NET_HDR_GSO_ECN)
      buf[l4 + 13] = flags;
    } else put16(buf, l4 + 4, end - l4);
    l4Checksum(buf, l3, v6, l4, end, proto);
    emit(buf.subarray(0, end), undefined);
  }
  return count;
}

/** UFO over IPv4: the whole datagram's UDP checksum, then IP fragments of `mss` bytes (rounded down to 8). */
function fragmentUdp4(frame: Uint8Array, l3: number, l4: number, mss: number, buf: Uint8Array, emit: (frame: Uint8Array, offload: NetOffload | undefined) => void): number {
  const len = frame.length;
  const ihl = (frame[l3] & 0xf) * 4;
  if (l4 !== l3 + ihl) return 0;
  const step = mss & ~7;
  if (step <= 0) return 0;
  // The checksum covers the whole datagram: compute it in the scratch copy first.
  const ipPayload = len - l4;
  buf.set(frame);
  put16(buf, l4 + 4, ipPayload);
  put16(buf, l3 + 2, len - l3);
  l4Checksum(buf, l3, false, l4, len, 17);
  const whole = buf;
  const count = Math.ceil(ipPayload / step);
  const id = get16(frame, l3 + 4);
  // Fragments go out in order, each one's payload moved down to l4 first: that overwrites only
  // bytes of fragments already emitted (fragment i's bytes start at l4 + i * step).
  let emitted = 0;
  for (let i = 0; i < count; i++) {
    const off = i * step;
    const n = Math.min(step, ipPayload - off);
    if (i > 0) whole.copyWithin(l4, l4 + off, l4 + off + n);
    const end = l4 + n;
    put16(whole, l3 + 2, end - l3);
    put16(whole, l3 + 4, id);
    put16(whole, l3 + 6, ((i < count - 1 ? 0x2000 : 0) | (off >>> 3)) & 0xffff);
    ipv4HeaderChecksum(whole, l3);
    emit(whole.subarray(0, end), undefined);
    emitted++;
  }
  return emitted;
}
