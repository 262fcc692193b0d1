// Checksum and header checks of a frame, for the peer that judges the other side's virtio-net
// headers (issue 17): the device judges what a driver transmits (5.1.6.2: a fully checksummed
// packet without CSUM, a partial checksum's slot and what precedes it with NEEDS_CSUM, hdr_len),
// the driver judges what a device delivers (5.1.6.4: the same duties the other way, and
// DATA_VALID). Only what the frame itself proves is judged: IPv4/IPv6 TCP/UDP, not fragmented,
// no IPv6 extension header, lengths that agree; anything else is "cannot tell" (never a fault).
//
// No allocation: the parse goes to one module-level scratch array. Browser-safe.
import { foldSum, l3Offset, onesSum } from './offload.js';

/** What a checksum check found wrong (null: nothing, or nothing it can judge). */
export type ChecksumFault = 'ip-header' | 'l4' | 'pseudo-header';

// The parse of the last frame: l3 offset, 1 for IPv6, protocol, l4 offset, l4 end.
const P = new Int32Array(5);
const L3 = 0;
const V6 = 1;
const PROTO = 2;
const L4 = 3;
const END = 4;

/** Parses an IPv4/IPv6 TCP/UDP frame into P; false when it is not one this module judges. */
function parse(frame: Uint8Array): boolean {
  const n = frame.length;
  const l3 = l3Offset(frame);
  if (l3 < 0 || l3 + 20 > n) return false;
  const ver = frame[l3] >>> 4;
  let proto: number;
  let l4: number;
  let end: number;
  if (ver === 4) {
    const ihl = (frame[l3] & 0xf) * 4;
    if (ihl < 20 || l3 + ihl > n) return false;
    // A fragment (MF set or an offset): its L4 checksum covers bytes not in this frame.
    if ((frame[l3 + 6] & 0x3f) !== 0 || frame[l3 + 7] !== 0) return false;
    proto = frame[l3 + 9];
    l4 = l3 + ihl;
    end = l3 + ((frame[l3 + 2] << 8) | frame[l3 + 3]);
  } else if (ver === 6) {
    if (l3 + 40 > n) return false;
    proto = frame[l3 + 6];
    l4 = l3 + 40;
    end = l4 + ((frame[l3 + 4] << 8) | frame[l3 + 5]);
  } else return false;
  if (proto !== 6 && proto !== 17) return false;
  // A GSO frame's IP length may be 0 or stale (the device rewrites it per segment): the frame's own end then.
  if (end <= l4 || end > n) end = n;
  if (l4 + (proto === 6 ? 20 : 8) > end) return false;
  P[L3] = l3;
  P[V6] = ver === 6 ? 1 : 0;
  P[PROTO] = proto;
  P[L4] = l4;
  P[END] = end;
  return true;
}

function ipv4HeaderOk(frame: Uint8Array, l3: number): boolean {
  const ihl = (frame[l3] & 0xf) * 4;
  return foldSum(onesSum(frame, l3, l3 + ihl)) === 0xffff;
}

/** The folded pseudo-header sum (not inverted) for `len` bytes of L4 (P holds the parse). */
function pseudo(frame: Uint8Array, len: number): number {
  const l3 = P[L3];
  let sum = P[V6] === 1 ? onesSum(frame, l3 + 8, l3 + 40) : onesSum(frame, l3 + 12, l3 + 20);
  sum += P[PROTO] + (len >>> 16) + (len & 0xffff);
  return foldSum(sum);
}

/** Ones' complement equality: 0 and 0xffff are the same number. */
function same(a: number, b: number): boolean {
  return a === b || ((a === 0 || a === 0xffff) && (b === 0 || b === 0xffff));
}

/**
 * A frame that must be fully checksummed (no NEEDS_CSUM: net.packet-transmission.driver.4,
 * net.processing-of-incoming-packets.device.6, DATA_VALID: .device.30): the IPv4 header
 * checksum, then the TCP/UDP checksum (a UDP-over-IPv4 checksum of 0 means "none" and passes).
 */
export function checksumFault(frame: Uint8Array): ChecksumFault | null {
  if (!parse(frame)) return null;
  const l3 = P[L3];
  if (P[V6] === 0 && !ipv4HeaderOk(frame, l3)) return 'ip-header';
  const l4 = P[L4];
  const end = P[END];
  const udp = P[PROTO] === 17;
  if (udp && P[V6] === 0 && frame[l4 + 6] === 0 && frame[l4 + 7] === 0) return null;
  return foldSum(onesSum(frame, l4, end, pseudo(frame, end - l4))) === 0xffff ? null : 'l4';
}

/**
 * A frame with NEEDS_CSUM (csum_start `start`, csum_offset `offset`): what precedes the slot
 * must be valid (the IPv4 header checksum when the slot is past it: net.packet-transmission.driver.26,
 * net.processing-of-incoming-packets.device.18) and a TCP/UDP slot at the L4 header must hold
 * the pseudo-header sum (.driver.27, .device.19). A GSO frame's sum may leave the length out
 * (DPDK's TSO does; Linux puts the whole length in): both are accepted for GSO.
 */
export function partialChecksumFault(frame: Uint8Array, start: number, offset: number, gso: boolean): ChecksumFault | null {
  if (!parse(frame)) return null;
  const l4 = P[L4];
  if (P[V6] === 0 && start >= l4 && !ipv4HeaderOk(frame, P[L3])) return 'ip-header';
  if (start !== l4 || offset !== (P[PROTO] === 6 ? 16 : 6)) return null;
  const at = start + offset;
  const slot = (frame[at] << 8) | frame[at + 1];
  if (same(slot, pseudo(frame, P[END] - l4))) return null;
  if (gso && same(slot, pseudo(frame, 0))) return null;
  return 'pseudo-header';
}

/** Where the TCP/UDP header ends (the length of all headers: hdr_len's lower bound), or -1 when the frame does not tell. */
export function headersLength(frame: Uint8Array): number {
  if (!parse(frame)) return -1;
  const l4 = P[L4];
  return P[PROTO] === 6 ? l4 + (frame[l4 + 12] >>> 4) * 4 : l4 + 8;
}
