// Test support (not a test file): Ethernet/IPv4/IPv6/TCP/UDP frames built by hand, and an
// independent checksum verifier (written here again, not taken from src/net/offload.ts, so a
// wrong checksum in the code under test cannot also pass its own check).

export const MAC_A = Uint8Array.of(0x52, 0x54, 0x00, 0x00, 0x00, 0x0a);
export const MAC_B = Uint8Array.of(0x52, 0x54, 0x00, 0x00, 0x00, 0x0b);
export const BROADCAST = Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff);

function sum16(b: Uint8Array, start: number, end: number, acc = 0): number {
  for (let i = start; i < end; i += 2) acc += (b[i] << 8) | (i + 1 < end ? b[i + 1] : 0);
  while (acc > 0xffff) acc = (acc & 0xffff) + Math.floor(acc / 65536);
  return acc;
}

/** A frame: dst, src, ethertype, payload. */
export function ether(dst: Uint8Array, src: Uint8Array, type: number, payload: Uint8Array): Uint8Array {
  const f = new Uint8Array(14 + payload.length);
  f.set(dst, 0);
  f.set(src, 6);
  f[12] = type >> 8;
  f[13] = type & 0xff;
  f.set(payload, 14);
  return f;
}

/** Bytes 0, 1, 2, ... (mod 251) of length n, offset by `seed`. */
export function pattern(n: number, seed = 0): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i + seed) % 251);
}

/**
 * An IPv4 or IPv6 TCP/UDP frame with `payload`. `partial`: the L4 checksum field holds the
 * pseudo-header sum only (what a driver using NEEDS_CSUM sends); else it is complete.
 */
export function ipFrame(opts: { v6?: boolean; proto: 'tcp' | 'udp'; payload: Uint8Array; dst?: Uint8Array; src?: Uint8Array; partial?: boolean; seq?: number; tcpFlags?: number; srcPort?: number }): { frame: Uint8Array; l4: number } {
  const v6 = opts.v6 ?? false;
  const tcp = opts.proto === 'tcp';
  const l4len = (tcp ? 20 : 8) + opts.payload.length;
  const l3len = v6 ? 40 : 20;
  const ip = new Uint8Array(l3len + l4len);
  const proto = tcp ? 6 : 17;
  if (v6) {
    ip[0] = 0x60;
    ip[4] = l4len >> 8;
    ip[5] = l4len & 0xff;
    ip[6] = proto;
    ip[7] = 64;
    ip.set([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 8);
    ip.set([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], 24);
  } else {
    ip[0] = 0x45;
    const tl = l3len + l4len;
    ip[2] = tl >> 8;
    ip[3] = tl & 0xff;
    ip[4] = 0x12;
    ip[5] = 0x34;
    ip[8] = 64;
    ip[9] = proto;
    ip.set([169, 254, 0, 1], 12);
    ip.set([169, 254, 0, 2], 16);
    const c = ~sum16(ip, 0, 20) & 0xffff;
    ip[10] = c >> 8;
    ip[11] = c & 0xff;
  }
  const l4 = l3len;
  const srcPort = opts.srcPort ?? 12345;
  ip[l4] = srcPort >> 8;
  ip[l4 + 1] = srcPort & 0xff;
  ip[l4 + 2] = 0x1f;
  ip[l4 + 3] = 0x90; // dst port 8080
  if (tcp) {
    const seq = opts.seq ?? 1000;
    ip[l4 + 4] = seq >>> 24;
    ip[l4 + 5] = (seq >>> 16) & 0xff;
    ip[l4 + 6] = (seq >>> 8) & 0xff;
    ip[l4 + 7] = seq & 0xff;
    ip[l4 + 12] = 0x50;
    ip[l4 + 13] = opts.tcpFlags ?? 0x18;
    ip[l4 + 14] = 0xff;
  } else {
    ip[l4 + 4] = l4len >> 8;
    ip[l4 + 5] = l4len & 0xff;
  }
  ip.set(opts.payload, l4 + (tcp ? 20 : 8));
  const pseudo = v6 ? sum16(ip, 8, 40, proto + l4len) : sum16(ip, 12, 20, proto + l4len);
  const at = l4 + (tcp ? 16 : 6);
  if (opts.partial) {
    ip[at] = pseudo >> 8;
    ip[at + 1] = pseudo & 0xff;
  } else {
    const c = ~sum16(ip, l4, ip.length, pseudo) & 0xffff;
    ip[at] = c >> 8;
    ip[at + 1] = c & 0xff;
  }
  return { frame: ether(opts.dst ?? MAC_B, opts.src ?? MAC_A, v6 ? 0x86dd : 0x0800, ip), l4: 14 + l4 };
}

/** Whether an untagged IPv4/IPv6 TCP/UDP frame's checksums (IP header, L4) are right. */
export function checksumsValid(frame: Uint8Array): boolean {
  const v6 = frame[12] === 0x86 && frame[13] === 0xdd;
  const l3 = 14;
  let proto: number;
  let l4: number;
  let l4len: number;
  let pseudo: number;
  if (v6) {
    proto = frame[l3 + 6];
    l4 = l3 + 40;
    l4len = (frame[l3 + 4] << 8) | frame[l3 + 5];
    pseudo = sum16(frame, l3 + 8, l3 + 40, proto + l4len);
  } else {
    const ihl = (frame[l3] & 15) * 4;
    if (sum16(frame, l3, l3 + ihl) !== 0xffff) return false;
    proto = frame[l3 + 9];
    l4 = l3 + ihl;
    l4len = ((frame[l3 + 2] << 8) | frame[l3 + 3]) - ihl;
    pseudo = sum16(frame, l3 + 12, l3 + 20, proto + l4len);
  }
  if (l4 + l4len !== frame.length) return false;
  return sum16(frame, l4, l4 + l4len, pseudo) === 0xffff;
}

/** The L4 payload of an untagged IPv4/IPv6 TCP/UDP frame. */
export function l4Payload(frame: Uint8Array): Uint8Array {
  const v6 = frame[12] === 0x86 && frame[13] === 0xdd;
  const l4 = v6 ? 54 : 14 + (frame[14] & 15) * 4;
  const proto = v6 ? frame[20] : frame[23];
  return frame.subarray(l4 + (proto === 6 ? (frame[l4 + 12] >> 4) * 4 : 8));
}
