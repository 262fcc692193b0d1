/**
 * vhost-user message codec (QEMU docs/interop/vhost-user.rst), back-end side: every message a
 * front-end sends is validated before anything acts on it: header version and flags, the
 * exact payload size of its request, how many file descriptors may come with it, and the
 * protocol feature that gates it. A message that fails is a VhostUserError ('malformed-message'
 * or 'unsupported-request') with the reason; nothing else is ever thrown.
 *
 * Browser-safe (pure data); the socket side lives with the native addon (connection.ts).
 */
import type { RingFormat, RingPosition } from '../../virtqueue/queue.js';
import { VhostUserError } from './errors.js';

const malformed = (message: string) => new VhostUserError('malformed-message', message);
const unsupported = (message: string) => new VhostUserError('unsupported-request', message);

export const HEADER_SIZE = 12;
export const VERSION = 0x1;
export const FLAG_VERSION_MASK = 0x3;
export const FLAG_REPLY = 1 << 2;
export const FLAG_NEED_REPLY = 1 << 3;
/** The largest payload any request carries (SET_MEM_TABLE with 8 regions is 8 + 8 * 32). */
export const MAX_PAYLOAD = 4096;
export const MAX_MEM_REGIONS = 8;
/** VHOST_USER_F_PROTOCOL_FEATURES: the virtio feature bit vhost-user reuses (30). */
export const F_PROTOCOL_FEATURES = 30;
/** VHOST_F_LOG_ALL: the vhost feature bit (26) that turns dirty logging on (vhost-user.rst "Migration"). */
export const F_LOG_ALL = 26;
/** VHOST_VRING_F_LOG: SET_VRING_ADDR flag bit 0, the used ring's writes are logged at its log address. */
export const VRING_F_LOG = 1 << 0;
/** VHOST_LOG_PAGE: one bit of the dirty log stands for this many bytes of guest memory. */
export const LOG_PAGE = 0x1000;

export const Req = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_BACKEND_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  RESET_DEVICE: 34,
  VRING_KICK: 35,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
} as const;

export const ProtocolFeature = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  NET_MTU: 4,
  BACKEND_REQ: 5,
  CROSS_ENDIAN: 6,
  CRYPTO_SESSION: 7,
  PAGEFAULT: 8,
  CONFIG: 9,
  BACKEND_SEND_FD: 10,
  HOST_NOTIFIER: 11,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  INBAND_NOTIFICATIONS: 14,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
} as const;

const REQ_NAMES: Record<number, string> = Object.fromEntries(Object.entries(Req).map(([k, v]) => [v, `VHOST_USER_${k}`]));

export function requestName(request: number): string {
  return REQ_NAMES[request] ?? `request ${request}`;
}

export interface Header {
  request: number;
  flags: number;
  size: number;
}

/** Parses the 12-byte header (native byte order: little-endian on the hosts we run on); throws a 'malformed-message' VhostUserError. */
export function parseHeader(bytes: Uint8Array): Header {
  if (bytes.length < HEADER_SIZE) throw malformed(`short header: ${bytes.length} of ${HEADER_SIZE} bytes`);
  const v = new DataView(bytes.buffer, bytes.byteOffset, HEADER_SIZE);
  const h = { request: v.getUint32(0, true), flags: v.getUint32(4, true), size: v.getUint32(8, true) };
  if ((h.flags & FLAG_VERSION_MASK) !== VERSION) throw malformed(`${requestName(h.request)}: protocol version ${h.flags & FLAG_VERSION_MASK}, expected ${VERSION}`);
  if (h.flags & FLAG_REPLY) throw malformed(`${requestName(h.request)}: a front-end request with the reply flag set`);
  if (h.flags & ~(FLAG_VERSION_MASK | FLAG_REPLY | FLAG_NEED_REPLY)) throw malformed(`${requestName(h.request)}: unknown flags 0x${h.flags.toString(16)}`);
  if (h.size > MAX_PAYLOAD) throw malformed(`${requestName(h.request)}: payload of ${h.size} bytes (at most ${MAX_PAYLOAD})`);
  return h;
}

/** How a request's payload and file descriptors must look. */
interface Rule {
  /** Exact payload size, or [min, max] for variable ones (checked further when decoded). */
  size: number | [number, number];
  /** File descriptors allowed: exact count, or [min, max]. */
  fds: number | [number, number];
  /** Protocol feature that must be negotiated first. */
  needs?: number;
  /** Sent only when VHOST_USER_F_PROTOCOL_FEATURES was offered by the back-end. */
  needsProtocolFeatures?: boolean;
}

const U64 = 8;
const STATE = 8;
const ADDR = 40;
const REGION = 32;

const RULES: Record<number, Rule> = {
  [Req.GET_FEATURES]: { size: 0, fds: 0 },
  [Req.SET_FEATURES]: { size: U64, fds: 0 },
  [Req.SET_OWNER]: { size: 0, fds: 0 },
  [Req.RESET_OWNER]: { size: 0, fds: 0 },
  [Req.SET_MEM_TABLE]: { size: [8, 8 + MAX_MEM_REGIONS * REGION], fds: [0, MAX_MEM_REGIONS] },
  [Req.SET_LOG_BASE]: { size: 16, fds: 1, needs: ProtocolFeature.LOG_SHMFD },
  [Req.SET_LOG_FD]: { size: 0, fds: 1 },
  [Req.SET_VRING_NUM]: { size: STATE, fds: 0 },
  [Req.SET_VRING_ADDR]: { size: ADDR, fds: 0 },
  [Req.SET_VRING_BASE]: { size: STATE, fds: 0 },
  [Req.GET_VRING_BASE]: { size: STATE, fds: 0 },
  [Req.SET_VRING_KICK]: { size: U64, fds: [0, 1] },
  [Req.SET_VRING_CALL]: { size: U64, fds: [0, 1] },
  [Req.SET_VRING_ERR]: { size: U64, fds: [0, 1] },
  [Req.GET_PROTOCOL_FEATURES]: { size: 0, fds: 0, needsProtocolFeatures: true },
  [Req.SET_PROTOCOL_FEATURES]: { size: U64, fds: 0, needsProtocolFeatures: true },
  [Req.GET_QUEUE_NUM]: { size: 0, fds: 0, needs: ProtocolFeature.MQ },
  [Req.SET_VRING_ENABLE]: { size: STATE, fds: 0, needsProtocolFeatures: true },
  [Req.SET_BACKEND_REQ_FD]: { size: 0, fds: 1, needs: ProtocolFeature.BACKEND_REQ },
  [Req.GET_CONFIG]: { size: [12, 12 + 256], fds: 0, needs: ProtocolFeature.CONFIG },
  [Req.SET_CONFIG]: { size: [12, 12 + 256], fds: 0, needs: ProtocolFeature.CONFIG },
  [Req.GET_INFLIGHT_FD]: { size: 24, fds: 0, needs: ProtocolFeature.INFLIGHT_SHMFD },
  [Req.SET_INFLIGHT_FD]: { size: 24, fds: 1, needs: ProtocolFeature.INFLIGHT_SHMFD },
  [Req.RESET_DEVICE]: { size: 0, fds: 0, needs: ProtocolFeature.RESET_DEVICE },
  [Req.VRING_KICK]: { size: STATE, fds: 0, needs: ProtocolFeature.INBAND_NOTIFICATIONS },
  [Req.GET_MAX_MEM_SLOTS]: { size: 0, fds: 0, needs: ProtocolFeature.CONFIGURE_MEM_SLOTS },
  [Req.ADD_MEM_REG]: { size: 8 + REGION, fds: 1, needs: ProtocolFeature.CONFIGURE_MEM_SLOTS },
  [Req.REM_MEM_REG]: { size: 8 + REGION, fds: [0, 1], needs: ProtocolFeature.CONFIGURE_MEM_SLOTS },
  [Req.SET_STATUS]: { size: U64, fds: 0, needs: ProtocolFeature.STATUS },
  [Req.GET_STATUS]: { size: 0, fds: 0, needs: ProtocolFeature.STATUS },
};

export interface MemRegion {
  guestAddr: number;
  size: number;
  userAddr: number;
  mmapOffset: number;
}

/** A validated request, decoded. */
export type Message =
  | { request: number; kind: 'none' }
  | { request: number; kind: 'u64'; value: bigint }
  | { request: number; kind: 'state'; index: number; num: number }
  | { request: number; kind: 'addr'; index: number; flags: number; desc: number; used: number; avail: number; log: number }
  | { request: number; kind: 'memory'; regions: MemRegion[] }
  | { request: number; kind: 'region'; region: MemRegion }
  | { request: number; kind: 'config'; offset: number; size: number; flags: number; data: Uint8Array }
  | { request: number; kind: 'inflight'; mmapSize: number; mmapOffset: number; numQueues: number; queueSize: number }
  | { request: number; kind: 'log'; size: number; offset: number }
  | { request: number; kind: 'vring-fd'; index: number; noFd: boolean };

export interface Session {
  /** Whether the back-end offers VHOST_USER_F_PROTOCOL_FEATURES. */
  protocolFeaturesOffered: boolean;
  /** Protocol features negotiated by SET_PROTOCOL_FEATURES. */
  protocolFeatures: bigint;
  /** Queues the back-end has. */
  numQueues: number;
}

export interface Decoded {
  header: Header;
  message: Message;
  /** The front-end asked for a REPLY_ACK (and REPLY_ACK is negotiated). */
  needReply: boolean;
}

const TWO_32 = 4294967296;

function u64n(v: DataView, off: number): number {
  // Addresses and sizes as JS numbers: anything at or above 2^53 is out of every range anyway.
  return v.getUint32(off, true) + v.getUint32(off + 4, true) * TWO_32;
}

/**
 * Validates a whole message (header, payload, number of fds) against the request's rule and
 * the session; returns the decoded message, or throws a VhostUserError with the reason it is
 * refused ('unsupported-request' for a request not served or not negotiated, 'malformed-message'
 * for the rest). Throws nothing else, whatever the bytes.
 */
export function decode(header: Header, payload: Uint8Array, fdCount: number, session: Session): Decoded {
  const name = requestName(header.request);
  const rule = RULES[header.request];
  if (rule === undefined) throw unsupported(`${name}: not a request this back-end serves`);
  if (payload.length !== header.size) throw malformed(`${name}: header says ${header.size} payload bytes, ${payload.length} arrived`);
  const [minSize, maxSize] = typeof rule.size === 'number' ? [rule.size, rule.size] : rule.size;
  if (header.size < minSize || header.size > maxSize) {
    throw malformed(`${name}: payload of ${header.size} bytes, expected ${minSize === maxSize ? minSize : `${minSize}..${maxSize}`}`);
  }
  const [minFds, maxFds] = typeof rule.fds === 'number' ? [rule.fds, rule.fds] : rule.fds;
  if (fdCount < minFds || fdCount > maxFds) throw malformed(`${name}: ${fdCount} file descriptors, expected ${minFds === maxFds ? minFds : `${minFds}..${maxFds}`}`);
  if (rule.needsProtocolFeatures && !session.protocolFeaturesOffered) throw unsupported(`${name}: VHOST_USER_F_PROTOCOL_FEATURES is not offered`);
  if (rule.needs !== undefined && ((session.protocolFeatures >> BigInt(rule.needs)) & 1n) === 0n) {
    throw unsupported(`${name}: protocol feature ${rule.needs} was not negotiated`);
  }
  const replyAck = ((session.protocolFeatures >> BigInt(ProtocolFeature.REPLY_ACK)) & 1n) === 1n;
  const needReply = replyAck && (header.flags & FLAG_NEED_REPLY) !== 0;
  const v = new DataView(payload.buffer, payload.byteOffset, payload.length);
  const r = header.request;
  const done = (message: Message): Decoded => ({ header, message, needReply });
  switch (r) {
    case Req.SET_FEATURES:
    case Req.SET_PROTOCOL_FEATURES:
    case Req.SET_STATUS:
      return done({ request: r, kind: 'u64', value: v.getBigUint64(0, true) });
    case Req.SET_VRING_NUM:
    case Req.SET_VRING_BASE:
    case Req.GET_VRING_BASE:
    case Req.SET_VRING_ENABLE:
    case Req.VRING_KICK: {
      const index = v.getUint32(0, true);
      if (index >= session.numQueues) throw malformed(`${name}: queue ${index} does not exist (${session.numQueues} queues)`);
      return done({ request: r, kind: 'state', index, num: v.getUint32(4, true) });
    }
    case Req.SET_VRING_ADDR: {
      const index = v.getUint32(0, true);
      if (index >= session.numQueues) throw malformed(`${name}: queue ${index} does not exist (${session.numQueues} queues)`);
      return done({ request: r, kind: 'addr', index, flags: v.getUint32(4, true), desc: u64n(v, 8), used: u64n(v, 16), avail: u64n(v, 24), log: u64n(v, 32) });
    }
    case Req.SET_VRING_KICK:
    case Req.SET_VRING_CALL:
    case Req.SET_VRING_ERR: {
      const value = v.getBigUint64(0, true);
      const index = Number(value & 0xffn);
      const noFd = (value & 0x100n) !== 0n;
      if (value >> 9n !== 0n) throw malformed(`${name}: reserved bits set in 0x${value.toString(16)}`);
      if (index >= session.numQueues) throw malformed(`${name}: queue ${index} does not exist (${session.numQueues} queues)`);
      if (noFd !== (fdCount === 0)) throw malformed(`${name}: the invalid-fd flag is ${noFd ? 'set' : 'clear'} but ${fdCount} fds came`);
      return done({ request: r, kind: 'vring-fd', index, noFd });
    }
    case Req.SET_MEM_TABLE: {
      const n = v.getUint32(0, true);
      if (n > MAX_MEM_REGIONS) throw malformed(`${name}: ${n} regions (at most ${MAX_MEM_REGIONS})`);
      if (header.size !== 8 + n * REGION) throw malformed(`${name}: ${n} regions need ${8 + n * REGION} payload bytes, not ${header.size}`);
      if (fdCount !== n) throw malformed(`${name}: ${n} regions but ${fdCount} file descriptors`);
      const regions: MemRegion[] = [];
      for (let i = 0; i < n; i++) {
        const reg = readRegion(v, 8 + i * REGION);
        checkRegion(reg, `${name}: region ${i}: `);
        regions.push(reg);
      }
      return done({ request: r, kind: 'memory', regions });
    }
    case Req.ADD_MEM_REG:
    case Req.REM_MEM_REG: {
      const reg = readRegion(v, 8);
      checkRegion(reg, `${name}: `);
      return done({ request: r, kind: 'region', region: reg });
    }
    case Req.GET_CONFIG:
    case Req.SET_CONFIG: {
      const offset = v.getUint32(0, true);
      const size = v.getUint32(4, true);
      const flags = v.getUint32(8, true);
      if (12 + size !== header.size) throw malformed(`${name}: config size ${size} does not match the ${header.size}-byte payload`);
      if (flags > 1) throw malformed(`${name}: unknown config flags ${flags}`);
      return done({ request: r, kind: 'config', offset, size, flags, data: payload.subarray(12) });
    }
    case Req.GET_INFLIGHT_FD:
    case Req.SET_INFLIGHT_FD:
      return done({ request: r, kind: 'inflight', mmapSize: u64n(v, 0), mmapOffset: u64n(v, 8), numQueues: v.getUint16(16, true), queueSize: v.getUint16(18, true) });
    case Req.SET_LOG_BASE: {
      const size = u64n(v, 0);
      const offset = u64n(v, 8);
      if (size === 0) throw malformed(`${name}: log size 0`);
      if (!Number.isSafeInteger(size + offset)) throw malformed(`${name}: log size ${size} at offset ${offset} beyond 2^53`);
      return done({ request: r, kind: 'log', size, offset });
    }
    default:
      return done({ request: r, kind: 'none' });
  }
}

function readRegion(v: DataView, off: number): MemRegion {
  return { guestAddr: u64n(v, off), size: u64n(v, off + 8), userAddr: u64n(v, off + 16), mmapOffset: u64n(v, off + 24) };
}

/** A region that cannot be one is a 'malformed-message' error (its message starts with `prefix`). */
function checkRegion(r: MemRegion, prefix: string): void {
  if (r.size === 0) throw malformed(`${prefix}size 0`);
  for (const [k, x] of Object.entries(r)) if (!Number.isSafeInteger(x)) throw malformed(`${prefix}${k} beyond 2^53`);
  if (!Number.isSafeInteger(r.guestAddr + r.size) || !Number.isSafeInteger(r.userAddr + r.size) || !Number.isSafeInteger(r.mmapOffset + r.size)) throw malformed(`${prefix}range wraps beyond 2^53`);
}

/** Back-end -> front-end requests on the back-end request channel (vhost-user.rst). */
export const BackendReq = {
  IOTLB_MSG: 1,
  CONFIG_CHANGE_MSG: 2,
  VRING_HOST_NOTIFIER_MSG: 3,
} as const;

/** One message: the 12-byte header (request, flags, payload size), then the payload. */
export function encodeMessage(request: number, flags: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + payload.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, request, true);
  v.setUint32(4, flags, true);
  v.setUint32(8, payload.length, true);
  out.set(payload, HEADER_SIZE);
  return out;
}

/** A back-end request with no payload and no reply asked for. */
export function encodeBackendRequest(request: number): Uint8Array {
  return encodeMessage(request, VERSION);
}

/** A reply: header with the reply flag, then the payload. */
export function encodeReply(request: number, payload?: Uint8Array): Uint8Array {
  return encodeMessage(request, VERSION | FLAG_REPLY, payload);
}

export function u64Payload(value: bigint | number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt.asUintN(64, BigInt(value)), true);
  return b;
}

export function statePayload(index: number, num: number): Uint8Array {
  const b = new Uint8Array(8);
  const v = new DataView(b.buffer);
  v.setUint32(0, index, true);
  v.setUint32(4, num, true);
  return b;
}

/**
 * SET_MEM_TABLE's payload (vhost-user.rst "Multiple memory regions description"): the region
 * count, padding, then each region as [guest address, size, user address, mmap offset]. Any
 * 64-bit values are taken (wrapped to u64): hostile front-ends send what no QEMU would.
 */
export function memRegionsPayload(regions: readonly (readonly [number | bigint, number | bigint, number | bigint, number | bigint])[]): Uint8Array {
  const b = new Uint8Array(8 + 32 * regions.length);
  const v = new DataView(b.buffer);
  v.setUint32(0, regions.length, true);
  regions.forEach((r, i) => r.forEach((x, k) => v.setBigUint64(8 + i * 32 + k * 8, BigInt.asUintN(64, BigInt(x)), true)));
  return b;
}

/** ADD_MEM_REG's / REM_MEM_REG's payload ("Single memory region description"): padding, then one region. */
export function memRegionPayload(guestAddr: number, size: number, userAddr: number, mmapOffset = 0): Uint8Array {
  const b = memRegionsPayload([[guestAddr, size, userAddr, mmapOffset]]);
  new DataView(b.buffer).setUint32(0, 0, true); // padding, not a count
  return b;
}

/** SET_VRING_ADDR's payload ("Vring address description"): ring `index`, flags, the three user addresses, the log address. */
export function vringAddrPayload(index: number, desc: number, used: number, avail: number, flags = 0, logAddr = 0): Uint8Array {
  const b = new Uint8Array(40);
  const v = new DataView(b.buffer);
  v.setUint32(0, index, true);
  v.setUint32(4, flags, true);
  v.setBigUint64(8, BigInt(desc), true);
  v.setBigUint64(16, BigInt(used), true);
  v.setBigUint64(24, BigInt(avail), true);
  v.setBigUint64(32, BigInt(logAddr), true);
  return b;
}

/** GET_INFLIGHT_FD's reply: mmap size and offset of the buffer, and its shape. */
export function inflightPayload(mmapSize: number, mmapOffset: number, numQueues: number, queueSize: number): Uint8Array {
  const b = new Uint8Array(24);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, BigInt(mmapSize), true);
  v.setBigUint64(8, BigInt(mmapOffset), true);
  v.setUint16(16, numQueues, true);
  v.setUint16(18, queueSize, true);
  return b;
}

/** GET_CONFIG's reply: offset, size and flags as asked, then `size` bytes of the config space from `offset` (zeros past its end). */
export function configPayload(offset: number, size: number, flags: number, config: Uint8Array): Uint8Array {
  const b = new Uint8Array(12 + size);
  const v = new DataView(b.buffer);
  v.setUint32(0, offset, true);
  v.setUint32(4, size, true);
  v.setUint32(8, flags, true);
  if (offset < config.length) b.set(config.subarray(offset, Math.min(config.length, offset + size)), 12);
  return b;
}

/**
 * A ring position as SET_VRING_BASE / GET_VRING_BASE carry it. Split rings: the next available
 * index (16 bits). Packed rings: the available slot in bits 0-14 and its wrap counter in bit
 * 15, the used slot in bits 16-30 and its wrap counter in bit 31.
 */
export function encodeRingBase(format: RingFormat, p: RingPosition): number {
  return format === 'packed'
    ? ((p.avail & 0x7fff) | (p.availWrap ? 0x8000 : 0) | ((p.used & 0x7fff) << 16) | (p.usedWrap ? 0x80000000 : 0)) >>> 0
    : p.avail & 0xffff;
}

/** A packed ring's position from its SET_VRING_BASE value (see encodeRingBase; not checked against a ring size). */
export function decodePackedRingBase(base: number): RingPosition {
  return { avail: base & 0x7fff, availWrap: (base & 0x8000) !== 0, used: (base >>> 16) & 0x7fff, usedWrap: (base & 0x80000000) !== 0 };
}
