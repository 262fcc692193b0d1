/**
 * virtio-vsock on the wire (spec 5.10): feature bits, the configuration layout, the 44-byte
 * packet header, operations, flags, reserved CIDs and the event. Shared by the device and the
 * driver (and the connection engine both use, src/vsock/).
 */
import type { FeatureNames } from './features.js';

/** VIRTIO_VSOCK_F_* feature bit numbers (5.10.3). */
export const VSOCK_FEATURES = { STREAM: 0, SEQPACKET: 1, NO_IMPLIED_STREAM: 2 } as const;

/** Names of the vsock feature bits, for messages and logs. */
export const VSOCK_FEATURE_NAMES: FeatureNames = { 0: 'VIRTIO_VSOCK_F_STREAM', 1: 'VIRTIO_VSOCK_F_SEQPACKET', 2: 'VIRTIO_VSOCK_F_NO_IMPLIED_STREAM' };

/** struct virtio_vsock_config: le64 guest_cid (5.10.4). */
export const VsockConfig = { guestCid: 0, size: 8 } as const;

/** Queue indexes (5.10.2). */
export const VsockQueue = { RX: 0, TX: 1, EVENT: 2 } as const;

/** The well-known CID of the host (5.10.4). */
export const HOST_CID = 2;

/**
 * Whether `cid` may not be a guest's CID (5.10.4): 0, 1, 2, 0xffffffff, 0xffffffffffffffff,
 * and anything with the reserved upper 32 bits set.
 */
export function isReservedCid(cid: bigint): boolean {
  return cid <= 2n || cid === 0xffffffffn || cid >> 32n !== 0n;
}

/** struct virtio_vsock_hdr: byte offsets and its size (5.10.6). */
export const VsockHdr = {
  srcCid: 0,
  dstCid: 8,
  srcPort: 16,
  dstPort: 20,
  len: 24,
  type: 28,
  op: 30,
  flags: 32,
  bufAlloc: 36,
  fwdCnt: 40,
  size: 44,
} as const;

/** VIRTIO_VSOCK_OP_* (5.10.6). */
export const VsockOp = {
  INVALID: 0,
  REQUEST: 1,
  RESPONSE: 2,
  RST: 3,
  SHUTDOWN: 4,
  RW: 5,
  CREDIT_UPDATE: 6,
  CREDIT_REQUEST: 7,
} as const;

const OP_NAMES: Readonly<Record<number, string>> = Object.fromEntries(Object.entries(VsockOp).map(([n, v]) => [v, n]));

/** Name of an operation, for messages. */
export function vsockOpName(op: number): string {
  return OP_NAMES[op] ?? `op ${op}`;
}

/** VIRTIO_VSOCK_TYPE_* (5.10.6.3). */
export const VsockType = { STREAM: 1, SEQPACKET: 2 } as const;

/**
 * SHUTDOWN flags as values in `flags` (the spec lists bit numbers 0 and 1; Linux's
 * VIRTIO_VSOCK_SHUTDOWN_RCV/SEND are these masks).
 */
export const VsockShutdown = { RCV: 1, SEND: 2 } as const;

/** Seqpacket RW flags (5.10.6.6.1): end of message, end of record. */
export const VsockSeq = { EOM: 1, EOR: 2 } as const;

/** VIRTIO_VSOCK_EVENT_TRANSPORT_RESET and the size of struct virtio_vsock_event (5.10.6.7). */
export const VsockEvent = { TRANSPORT_RESET: 0, size: 4 } as const;

/** A decoded header (host-side structure; the hot path reads fields from the DataView instead). */
export interface VsockHeader {
  srcCid: bigint;
  dstCid: bigint;
  srcPort: number;
  dstPort: number;
  len: number;
  type: number;
  op: number;
  flags: number;
  bufAlloc: number;
  fwdCnt: number;
}

/** Writes `h` into `v` at `off` (44 bytes, little-endian). */
export function writeVsockHeader(v: DataView, off: number, h: VsockHeader): void {
  v.setBigUint64(off + VsockHdr.srcCid, h.srcCid, true);
  v.setBigUint64(off + VsockHdr.dstCid, h.dstCid, true);
  v.setUint32(off + VsockHdr.srcPort, h.srcPort, true);
  v.setUint32(off + VsockHdr.dstPort, h.dstPort, true);
  v.setUint32(off + VsockHdr.len, h.len, true);
  v.setUint16(off + VsockHdr.type, h.type, true);
  v.setUint16(off + VsockHdr.op, h.op, true);
  v.setUint32(off + VsockHdr.flags, h.flags, true);
  v.setUint32(off + VsockHdr.bufAlloc, h.bufAlloc, true);
  v.setUint32(off + VsockHdr.fwdCnt, h.fwdCnt, true);
}

/** Reads a header from `v` at `off`. */
export function readVsockHeader(v: DataView, off = 0): VsockHeader {
  return {
    srcCid: v.getBigUint64(off + VsockHdr.srcCid, true),
    dstCid: v.getBigUint64(off + VsockHdr.dstCid, true),
    srcPort: v.getUint32(off + VsockHdr.srcPort, true),
    dstPort: v.getUint32(off + VsockHdr.dstPort, true),
    len: v.getUint32(off + VsockHdr.len, true),
    type: v.getUint16(off + VsockHdr.type, true),
    op: v.getUint16(off + VsockHdr.op, true),
    flags: v.getUint32(off + VsockHdr.flags, true),
    bufAlloc: v.getUint32(off + VsockHdr.bufAlloc, true),
    fwdCnt: v.getUint32(off + VsockHdr.fwdCnt, true),
  };
}
