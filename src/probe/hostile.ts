/**
 * The fault injections of `virtio-ts probe --hostile`: one case per kind of abuse a front-end
 * can do to a vhost-user back-end (malformed messages, unoffered features, bad memory tables,
 * rings of bad sizes, malformed chains, descriptors outside memory, loops, floods, disconnects).
 * Each case only injects; runProbe (probe.ts) then observes, the same way for every case and
 * every back-end, what the back-end did (see {@link HostileOutcome}).
 *
 * The project's own hostile tests (test/vhost-user/hostile-cases.ts) inject through these
 * same cases and then assert the exact reason `virtio-ts serve` logs.
 *
 * Case ids are stable (reports and docs/findings.md name them).
 */
import { native } from '../native/index.js';
import { Feature, Status } from '../spec/constants.js';
import { bit } from '../spec/features.js';
import { FLAG_NEED_REPLY, HEADER_SIZE, ProtocolFeature, Req, encodeMessage, memRegionsPayload, statePayload, u64Payload, vringAddrPayload } from '../transports/vhost-user/protocol.js';
import { PROTOCOL_FEATURES_BIT, USER_BASE, memTablePayload, message, receive, type RawSession, type RawSplitRing } from './raw-session.js';
import { INDIRECT, NEXT, WRITE, placeRequest, type PlacedRequest, type Range, type RequestType } from './requests.js';

/**
 * What a back-end did with one hostile case:
 * - `refused`: it ended the connection, or answered a non-zero REPLY_ACK (a clean refusal);
 * - `status`: it answered with the proper status: a device error (CONFIG_CHANGE_MSG on the
 *   back-end channel, DEVICE_NEEDS_RESET in GET_STATUS), an error status in the request
 *   (blk IOERR / UNSUPP), or FEATURES_OK left clear;
 * - `served`: it served the request (or took the message) and the session went on;
 * - `ignored`: no visible reaction, and the session still answers (a ring that neither used
 *   the chain nor reported an error counts here too);
 * - `skipped`: the case needs something the back-end does not offer (a protocol feature, a
 *   device type with requests);
 * - `hung`: the session stopped answering within the bound (the connection still open);
 * - `wedged`: the case's own session ended, but the next fresh session is not served;
 * - `crashed`: the socket stopped accepting connections (when the probe did not spawn the
 *   back-end, that is all it can see of a crash);
 * - `wrote-outside`: guest memory outside the buffers the device was given lost its canary.
 */
export type HostileOutcome = 'refused' | 'status' | 'served' | 'ignored' | 'skipped' | 'hung' | 'wedged' | 'crashed' | 'wrote-outside';

/** Outcomes that are a failure whatever the case. */
export const FAILING_OUTCOMES: ReadonlySet<HostileOutcome> = new Set<HostileOutcome>(['hung', 'wedged', 'crashed', 'wrote-outside']);

/** The kinds of abuse, in the order the cases run. */
export type HostileClass = 'message' | 'features' | 'memory' | 'ring' | 'chain' | 'flood' | 'disconnect';

/** What a case is given: its raw session (fresh, connected, nothing sent) and the device type probed. */
export interface HostileContext {
  fe: RawSession;
  /** The device type probed (`--type`). */
  type: string;
  /** The request kind the probe can place for this type, or null (protocol-level probing only). */
  requests: RequestType | null;
}

/** What a case's injection left for the observer. */
export interface Injection {
  /** The ring a request went on (its used entries and the status byte say `served` or `status`). */
  ring?: RawSplitRing;
  /** The request placed on `ring`, if a correct one was. */
  placed?: PlacedRequest;
  /** Guest ranges the device may write or the driver itself wrote (beyond the ring area). */
  granted?: Range[];
  /** The outcome, when the case could tell it itself (a REPLY_ACK it read, a flood's count). */
  outcome?: HostileOutcome;
  /** What the case saw, for the report. */
  note?: string;
  /** The case ended the connection itself (disconnect cases): only the after-checks apply. */
  closedByUs?: boolean;
  /** The case kicked a ring: a reaction may come without an event of its own (watched for the settle time). */
  kicked?: boolean;
  /** The case saw this rule or clause broken (whatever the outcome). */
  breaks?: string;
}

/** One fault injection. */
export interface HostileCase {
  /** Stable id: `<class>.<what>`. */
  id: string;
  class: HostileClass;
  title: string;
  /** Only for device types the probe places requests for (blk, rng). */
  needsRequests?: boolean;
  /** Protocol features that must be offered (else `skipped`). */
  needsProtocol?: number[];
  /** Outcomes that are fine for this case (default: refused, status, served, ignored). */
  accept?: HostileOutcome[];
  /** The clause an outcome outside `accept` breaks (a vhost-user rule id or a catalogue id). */
  clause?: string;
  /** Does the damage on `ctx.fe` (a fresh session) and says what the observer should watch. */
  inject(ctx: HostileContext): Promise<Injection>;
}

/** Where the hostile cases put their rings in guest RAM (the driver writes this area). */
export const RING_AREA: Range = [0x1000, 0x10000];

const pf = (f: number) => 1n << BigInt(f);
/** The protocol features a hostile session asks for: QEMU's usual set (each when offered). */
export const HOSTILE_PROTOCOL = [ProtocolFeature.MQ, ProtocolFeature.CONFIG, ProtocolFeature.BACKEND_REQ, ProtocolFeature.STATUS, ProtocolFeature.INFLIGHT_SHMFD, ProtocolFeature.LOG_SHMFD].reduce((a, f) => a | pf(f), 0n);
/** The features a hostile session asks for (each when offered). */
export const HOSTILE_FEATURES = bit(Feature.VERSION_1) | bit(Feature.INDIRECT_DESC);
const REPLY_ACK = pf(ProtocolFeature.REPLY_ACK);
const ACK = 1 | FLAG_NEED_REPLY;

/** Features, protocol features, the back-end channel, SET_OWNER and the memory table: what ring messages need. */
export function withMemory(fe: RawSession, features = HOSTILE_FEATURES, protocol = HOSTILE_PROTOCOL): Promise<{ features: bigint; protocol: bigint; offered: bigint }> {
  return fe.negotiate(features, protocol);
}

/** A live session with ring 0 (split, 16 entries at RING_AREA) ready for its first chain. */
export async function liveRing(fe: RawSession, features = HOSTILE_FEATURES): Promise<RawSplitRing> {
  await withMemory(fe, features);
  return fe.splitRing(0, 16, RING_AREA[0]);
}

/** Reads one message (bounded) and returns its request code and u64 payload (a REPLY_ACK: 0 = success). */
export async function ackOf(fe: RawSession): Promise<[number, bigint]> {
  const r = new DataView((await receive(fe.fd, fe.waitMs)).buffer);
  return [r.getUint32(0, true), r.byteLength >= HEADER_SIZE + 8 ? r.getBigUint64(HEADER_SIZE, true) : -1n];
}

/** A feature bit (of 0..63) the back-end did not offer, highest first (bits 50..63 are reserved, so one is always free). */
function unofferedBit(offered: bigint): bigint {
  for (let b = 63n; b >= 0n; b--) if (((offered >> b) & 1n) === 0n) return 1n << b;
  return 0n;
}

const single = (id: string, cls: HostileClass, title: string, send: (fe: RawSession) => Promise<void>): HostileCase => ({
  id,
  class: cls,
  title,
  inject: async ({ fe }) => {
    await send(fe);
    return {};
  },
});

const messageCases: HostileCase[] = [
  single('message.unknown-request', 'message', 'an unknown request (99)', (fe) => fe.send(99)),
  single('message.version-2', 'message', 'protocol version 2 in the header flags', (fe) => fe.send(Req.GET_FEATURES, undefined, [], 2)),
  single('message.reply-flag', 'message', 'a request with the reply flag set', (fe) => fe.send(Req.GET_FEATURES, undefined, [], 1 | 4)),
  single('message.unknown-flags', 'message', 'unknown header flags (0x101)', (fe) => fe.send(Req.GET_FEATURES, undefined, [], 0x101)),
  single('message.short-payload', 'message', 'SET_FEATURES with a 4-byte payload', (fe) => fe.send(Req.SET_FEATURES, new Uint8Array(4))),
  single('message.huge-size', 'message', 'a header announcing 5000 payload bytes (and the 5000 bytes)', (fe) => {
    const m = encodeMessage(Req.SET_FEATURES, 1, new Uint8Array(5000));
    return fe.write(m);
  }),
  single('message.unexpected-fd', 'message', 'GET_FEATURES carrying an fd', (fe) => fe.send(Req.GET_FEATURES, undefined, [fe.memfd])),
  single('message.no-fd', 'message', 'SET_VRING_KICK without an fd and without the invalid-fd flag', (fe) => fe.send(Req.SET_VRING_KICK, u64Payload(0n))),
];

const featureCases: HostileCase[] = [
  {
    id: 'features.protocol-unoffered',
    class: 'features',
    title: 'SET_PROTOCOL_FEATURES with a bit never offered',
    inject: async ({ fe }) => {
      const offered = await fe.askU64(Req.GET_FEATURES);
      if ((offered & PROTOCOL_FEATURES_BIT) === 0n) return { outcome: 'skipped', note: 'VHOST_USER_F_PROTOCOL_FEATURES not offered' };
      const protocol = await fe.askU64(Req.GET_PROTOCOL_FEATURES);
      await fe.send(Req.SET_PROTOCOL_FEATURES, u64Payload(unofferedBit(protocol)));
      return {};
    },
  },
  {
    id: 'features.unoffered',
    class: 'features',
    title: 'SET_FEATURES with a bit never offered',
    inject: async ({ fe }) => {
      const offered = await fe.askU64(Req.GET_FEATURES);
      await fe.send(Req.SET_FEATURES, u64Payload((offered & (bit(Feature.VERSION_1) | PROTOCOL_FEATURES_BIT)) | unofferedBit(offered)));
      return {};
    },
  },
  {
    id: 'features.unoffered-ack',
    class: 'features',
    title: 'SET_FEATURES with a bit never offered, REPLY_ACK asked',
    needsProtocol: [ProtocolFeature.REPLY_ACK],
    // vhost-user.rst does not say a back-end must refuse unoffered bits in SET_FEATURES (the
    // driver must not ask for them): accepting them (REPLY_ACK 0) is reported, not failed.
    inject: async ({ fe }) => {
      const offered = await fe.askU64(Req.GET_FEATURES);
      await fe.askU64(Req.GET_PROTOCOL_FEATURES);
      await fe.send(Req.SET_PROTOCOL_FEATURES, u64Payload(REPLY_ACK));
      await fe.send(Req.SET_FEATURES, u64Payload((offered & (bit(Feature.VERSION_1) | PROTOCOL_FEATURES_BIT)) | unofferedBit(offered)), [], ACK);
      const [request, ack] = await ackOf(fe);
      return { outcome: request === Req.SET_FEATURES && ack !== 0n ? 'refused' : 'served', note: `REPLY_ACK ${ack}` };
    },
  },
  {
    id: 'features.features-ok-refusal',
    class: 'features',
    title: 'FEATURES_OK over a feature set with a bit never offered (SET_STATUS, then GET_STATUS)',
    needsProtocol: [ProtocolFeature.STATUS],
    // 2.2.2: a device that does not accept the driver's features leaves FEATURES_OK clear
    // (basic.features.device.3). A back-end that says it refused the set (non-zero REPLY_ACK)
    // and then shows FEATURES_OK breaks it; one that took the set is reported `served`.
    clause: 'basic.features.device.3',
    inject: async ({ fe }) => {
      const offered = await fe.askU64(Req.GET_FEATURES);
      const protocol = await fe.askU64(Req.GET_PROTOCOL_FEATURES);
      const ack = (protocol & REPLY_ACK) !== 0n;
      await fe.send(Req.SET_PROTOCOL_FEATURES, u64Payload(pf(ProtocolFeature.STATUS) | (ack ? REPLY_ACK : 0n)));
      await fe.send(Req.SET_STATUS, u64Payload(Status.ACKNOWLEDGE | Status.DRIVER));
      await fe.send(Req.SET_FEATURES, u64Payload((offered & (bit(Feature.VERSION_1) | PROTOCOL_FEATURES_BIT)) | unofferedBit(offered)), [], ack ? ACK : 1);
      const rejected = ack ? (await ackOf(fe))[1] !== 0n : false;
      await fe.send(Req.SET_STATUS, u64Payload(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK));
      const status = Number((await fe.ask(Req.GET_STATUS)).getBigUint64(0, true) & 0xffn);
      const kept = (status & Status.FEATURES_OK) !== 0;
      const note = `${ack ? `SET_FEATURES REPLY_ACK ${rejected ? 'non-zero' : '0'}, ` : ''}GET_STATUS 0x${status.toString(16)}`;
      if (rejected && kept) return { outcome: 'served', note, breaks: 'basic.features.device.3' };
      return { outcome: kept ? 'served' : 'status', note };
    },
  },
];

const memoryCases: HostileCase[] = [
  single('memory.past-fd-end', 'memory', 'a memory region past the end of its fd', async (fe) => {
    await fe.askU64(Req.GET_FEATURES);
    await fe.send(Req.SET_MEM_TABLE, memTablePayload(2 * fe.ramSize), [fe.memfd]);
  }),
  single('memory.offset-past-end', 'memory', 'a memory region whose mmap offset puts its end past the fd', async (fe) => {
    await fe.askU64(Req.GET_FEATURES);
    await fe.send(Req.SET_MEM_TABLE, memRegionsPayload([[0, 0x2000, USER_BASE, fe.ramSize - 0x1000]]), [fe.memfd]);
  }),
  single('memory.zero-size', 'memory', 'a memory region of size 0', (fe) => fe.send(Req.SET_MEM_TABLE, memRegionsPayload([[0, 0, USER_BASE, 0]]), [fe.memfd])),
  single('memory.overlap', 'memory', 'overlapping memory regions', (fe) =>
    fe.send(Req.SET_MEM_TABLE, memRegionsPayload([[0, 0x100000, USER_BASE, 0], [0x80000, 0x1000, USER_BASE + 0x200000, 0]]), [fe.memfd, fe.memfd]),
  ),
  single('memory.fd-count', 'memory', 'two memory regions, one fd', (fe) =>
    fe.send(Req.SET_MEM_TABLE, memRegionsPayload([[0, 0x80000, USER_BASE, 0], [0x80000, 0x80000, USER_BASE + 0x80000, 0x80000]]), [fe.memfd]),
  ),
  single('memory.nine-regions', 'memory', 'nine memory regions (at most 8)', (fe) => {
    const regions = Array.from({ length: 9 }, (_, i) => [i * 0x1000, 0x1000, USER_BASE + i * 0x1000, i * 0x1000] as const);
    return fe.send(Req.SET_MEM_TABLE, memRegionsPayload(regions), regions.map(() => fe.memfd));
  }),
  single('memory.huge-offset', 'memory', 'a memory region whose mmap offset overflows (2^64 - 4096)', (fe) =>
    fe.send(Req.SET_MEM_TABLE, memRegionsPayload([[0, 0x1000, USER_BASE, 2n ** 64n - 0x1000n]]), [fe.memfd]),
  ),
  single('memory.huge-size', 'memory', 'a memory region of 2^63 bytes', (fe) => fe.send(Req.SET_MEM_TABLE, memRegionsPayload([[0, 2n ** 63n, USER_BASE, 0]]), [fe.memfd])),
  {
    id: 'memory.past-fd-end-used',
    class: 'memory',
    title: 'a memory region twice the size of its fd, then a request whose buffer lies past the fd\'s end',
    needsRequests: true,
    inject: async ({ fe, requests }) => {
      const offered = await fe.askU64(Req.GET_FEATURES);
      await fe.send(Req.SET_OWNER);
      await fe.send(Req.SET_FEATURES, u64Payload(offered & (HOSTILE_FEATURES | PROTOCOL_FEATURES_BIT)));
      await fe.send(Req.SET_MEM_TABLE, memTablePayload(2 * fe.ramSize), [fe.memfd]);
      const ring = await fe.splitRing(0, 16, RING_AREA[0], 0, (offered & PROTOCOL_FEATURES_BIT) !== 0n);
      // The buffer is inside the region the table announced, past the end of the memory behind it.
      const beyond = fe.ramSize + 0x1000;
      if (requests === 'blk') {
        fe.bytes.fill(0, 0x20000, 0x20010); // VIRTIO_BLK_T_IN, sector 0
        fe.bytes[0x20100] = 0xff;
        ring.desc(0, 0x20000, 16, NEXT, 1);
        ring.desc(1, beyond, 512, NEXT | WRITE, 2);
        ring.desc(2, 0x20100, 1, WRITE);
      } else ring.desc(0, beyond, 64, WRITE);
      ring.offer(0);
      return { ring, granted: [[0x20000, 0x20010], [0x20100, 0x20101]] };
    },
  },
  single('memory.eventfd', 'memory', 'a memory region whose fd is an eventfd', async (fe) => {
    const n = native();
    const efd = n.eventfd();
    try {
      await fe.send(Req.SET_MEM_TABLE, memTablePayload(0x1000), [efd]);
    } finally {
      n.close(efd);
    }
  }),
];

/** SET_VRING_NUM `num` on ring 0 after the memory table. */
const ringSize = (num: number, what: string): HostileCase => ({
  id: `ring.size-${num}`,
  class: 'ring',
  title: `SET_VRING_NUM ${num} on a split ring (${what})`,
  inject: async ({ fe }) => {
    await withMemory(fe);
    await fe.send(Req.SET_VRING_NUM, statePayload(0, num));
    return {};
  },
});

const ringCases: HostileCase[] = [
  ringSize(0, 'empty'),
  ringSize(100, 'not a power of two'),
  ringSize(65536, 'larger than any split ring: 32768 at most'),
  {
    id: 'ring.size-100-started',
    class: 'ring',
    title: 'a split ring of size 100 set up, a request made available and kicked',
    needsRequests: true,
    inject: async ({ fe, requests }) => {
      await withMemory(fe);
      const ring = await fe.splitRing(0, 100, RING_AREA[0]);
      return { ring, placed: placeRequest(requests!, fe, ring, 0x20000) };
    },
  },
  single('ring.addr-outside', 'ring', 'ring addresses outside guest memory', async (fe) => {
    await withMemory(fe);
    await fe.send(Req.SET_VRING_NUM, statePayload(0, 16));
    await fe.send(Req.SET_VRING_ADDR, vringAddrPayload(0, USER_BASE + 16 * fe.ramSize, USER_BASE + 0x2000, USER_BASE + 0x1800));
  }),
  {
    id: 'ring.addr-outside-ack',
    class: 'ring',
    title: 'ring addresses outside guest memory, REPLY_ACK asked',
    needsProtocol: [ProtocolFeature.REPLY_ACK],
    // Addresses in no memory region cannot be translated: the request failed, and with need_reply
    // a back-end that goes on must say so (or end the connection).
    accept: ['refused', 'status'],
    clause: 'vhost-user.reply-ack.failure',
    inject: async ({ fe }) => {
      await withMemory(fe, HOSTILE_FEATURES, HOSTILE_PROTOCOL | REPLY_ACK);
      await fe.send(Req.SET_VRING_NUM, statePayload(0, 16));
      await fe.send(Req.SET_VRING_ADDR, vringAddrPayload(0, USER_BASE + 16 * fe.ramSize, USER_BASE + 0x2000, USER_BASE + 0x1800), [], ACK);
      const [request, ack] = await ackOf(fe);
      return { outcome: request === Req.SET_VRING_ADDR && ack !== 0n ? 'refused' : 'served', note: `REPLY_ACK ${ack}` };
    },
  },
  {
    id: 'ring.desc-table-off-end',
    class: 'ring',
    title: 'a descriptor table running off the end of guest memory, then a kick',
    inject: async ({ fe }) => {
      const n = native();
      await withMemory(fe);
      fe.bytes.fill(0, ...RING_AREA); // the driver's ring memory starts zeroed
      await fe.send(Req.SET_VRING_NUM, statePayload(0, 16));
      await fe.send(Req.SET_VRING_ADDR, vringAddrPayload(0, USER_BASE + fe.ramSize - 16, USER_BASE + 0x2000, USER_BASE + 0x1800));
      const kick = fe.own(n.eventfd());
      await fe.send(Req.SET_VRING_KICK, u64Payload(0n), [kick]);
      await fe.send(Req.SET_VRING_ENABLE, statePayload(0, 1));
      n.eventfdWrite(kick, 1);
      return { granted: [[fe.ramSize - 16, fe.ramSize]], kicked: true };
    },
  },
  single('ring.base-17-bits', 'ring', 'a split ring base beyond 16 bits', async (fe) => {
    await withMemory(fe);
    await fe.send(Req.SET_VRING_BASE, statePayload(0, 0x10000));
  }),
  {
    id: 'ring.base-ahead',
    class: 'ring',
    title: 'a ring base more than the ring size ahead of the used index, then a kick',
    inject: async ({ fe }) => {
      await withMemory(fe);
      const ring = await fe.splitRing(0, 16, RING_AREA[0], 100);
      native().eventfdWrite(ring.kick, 1);
      return { kicked: true };
    },
  },
  single('ring.kick-not-eventfd', 'ring', 'a kick fd that is not an eventfd (a memfd)', async (fe) => {
    await withMemory(fe);
    await fe.send(Req.SET_VRING_KICK, u64Payload(0n), [fe.memfd]);
  }),
  single('ring.enable-2', 'ring', 'SET_VRING_ENABLE 2', async (fe) => {
    await withMemory(fe);
    await fe.send(Req.SET_VRING_ENABLE, statePayload(0, 2));
  }),
  single('ring.no-such-queue', 'ring', 'SET_VRING_NUM on queue 255', (fe) => fe.send(Req.SET_VRING_NUM, statePayload(255, 16))),
  single('ring.queue-index-huge', 'ring', 'SET_VRING_NUM on queue 0xffffffff', (fe) => fe.send(Req.SET_VRING_NUM, statePayload(0xffffffff, 16))),
];

/** A malformed chain on a live ring: the device must not serve it (and must not write outside memory). */
function chainCase(id: string, title: string, place: (ring: RawSplitRing, fe: RawSession) => void, driverWrites: Range[] = []): HostileCase {
  return {
    id: `chain.${id}`,
    class: 'chain',
    title,
    needsRequests: true,
    // Served is no answer to a chain that cannot be served (it would read or write where the driver never said).
    accept: ['refused', 'status', 'ignored'],
    inject: async ({ fe }) => {
      const ring = await liveRing(fe);
      place(ring, fe);
      return { ring, granted: driverWrites };
    },
  };
}

const chainCases: HostileCase[] = [
  chainCase('loop', 'a descriptor loop (0 -> 1 -> 0)', (r) => {
    r.desc(0, 0x20000, 16, NEXT | WRITE, 1);
    r.desc(1, 0x20100, 16, NEXT | WRITE, 0);
    r.offer(0);
  }),
  chainCase('next-beyond-size', 'next beyond the queue size', (r) => {
    r.desc(0, 0x20000, 16, NEXT | WRITE, 100);
    r.offer(0);
  }),
  chainCase('head-beyond-size', 'a head beyond the queue size', (r) => r.offer(200)),
  chainCase('buffer-outside-memory', 'a buffer outside guest memory', (r) => {
    r.desc(0, 0x4000_0000, 64, WRITE);
    r.offer(0);
  }),
  chainCase('buffer-len-max', 'a buffer of length 0xffffffff', (r) => {
    r.desc(0, 0x20000, 0xffffffff, WRITE);
    r.offer(0);
  }),
  chainCase('buffer-straddles-end', 'a buffer that runs off the end of guest memory', (r, fe) => {
    r.desc(0, fe.ramSize - 32, 64, WRITE);
    r.offer(0);
  }),
  chainCase('indirect-17', 'an indirect table of 17 bytes', (r) => {
    r.desc(0, 0x30000, 17, INDIRECT);
    r.offer(0);
  }),
  chainCase('indirect-outside', 'an indirect table outside guest memory', (r) => {
    r.desc(0, 0x4000_0000, 64, INDIRECT);
    r.offer(0);
  }),
  chainCase(
    'indirect-nested',
    'an indirect table that holds an INDIRECT descriptor',
    (r) => {
      r.desc(0, 0x30000, 16, INDIRECT);
      r.desc(0, 0x20000, 16, INDIRECT, 0, 0x30000); // entry 0 of the table
      r.offer(0);
    },
    [[0x30000, 0x30010]],
  ),
  chainCase('avail-jump', 'an available index jump (0 -> 100 on a 16-entry ring)', (r) => {
    r.desc(0, 0x20000, 16, WRITE);
    r.offer(0, 100);
  }),
  {
    id: 'chain.write-into-readable',
    class: 'chain',
    title: 'a request whose data buffers are all device-readable (nothing to write the data or status into)',
    needsRequests: true,
    inject: async ({ fe, requests }) => {
      const ring = await liveRing(fe);
      // blk: a read whose data and status descriptors lack WRITE; rng: one readable buffer. The
      // readable buffers keep the canary and are not granted: a device writing into them shows.
      if (requests === 'blk') {
        fe.bytes.fill(0, 0x20000, 0x20010); // header: VIRTIO_BLK_T_IN, sector 0
        ring.desc(0, 0x20000, 16, NEXT, 1);
        ring.desc(1, 0x20100, 512, NEXT, 2);
        ring.desc(2, 0x20300, 1, 0);
      } else ring.desc(0, 0x20000, 64, 0);
      ring.offer(0);
      return { ring, granted: requests === 'blk' ? [[0x20000, 0x20010]] : [] };
    },
  },
  {
    id: 'chain.indirect-queue-size',
    class: 'chain',
    title: 'a valid indirect table as long as the queue size',
    needsRequests: true,
    accept: ['served', 'status'],
    inject: async ({ fe, requests }) => {
      const ring = await liveRing(fe);
      // blk: header + 14 data segments + status = 16 descriptors; rng: 16 writable pieces.
      return { ring, placed: placeRequest(requests!, fe, ring, 0x40000, requests === 'blk' ? 14 : 16, true) };
    },
  },
];

const floodCases: HostileCase[] = [
  {
    id: 'flood.get-features',
    class: 'flood',
    title: '10,000 GET_FEATURES in one write, every reply read',
    accept: ['served'],
    clause: 'vhost-user.reply.each',
    inject: async ({ fe }) => {
      const one = message(Req.GET_FEATURES);
      const all = new Uint8Array(one.length * 10_000);
      for (let i = 0; i < 10_000; i++) all.set(one, i * one.length);
      const writing = fe.write(all, [], fe.waitMs * 3); // the back-end takes it as it can; the replies are read meanwhile
      let got = 0;
      try {
        for (; got < 10_000; got++) {
          const r = new DataView((await receive(fe.fd, fe.waitMs)).buffer);
          if (r.getUint32(0, true) !== Req.GET_FEATURES) break;
        }
        await writing;
      } catch (err) {
        await writing.catch(() => undefined);
        return { outcome: got === 0 ? 'refused' : 'hung', note: `${got} of 10000 replies: ${err instanceof Error ? err.message : String(err)}` };
      }
      return { outcome: got === 10_000 ? 'served' : 'refused', note: `${got} of 10000 replies` };
    },
  },
  {
    id: 'flood.kicks',
    class: 'flood',
    title: '10,000 kicks with nothing new available, then a correct request',
    needsRequests: true,
    accept: ['served', 'status'],
    inject: async ({ fe, requests }) => {
      const n = native();
      const ring = await liveRing(fe);
      for (let i = 0; i < 10_000; i++) n.eventfdWrite(ring.kick, 1);
      await fe.askU64(Req.GET_FEATURES);
      return { ring, placed: placeRequest(requests!, fe, ring, 0x20000) };
    },
  },
];

/** A message cut short (the bytes and fds `cut` gives), then the connection closed by the probe. */
const cutShort = (id: string, title: string, cut: (fe: RawSession) => [Uint8Array, number[]]): HostileCase => ({
  id,
  class: 'disconnect',
  title,
  inject: async ({ fe }) => {
    const [bytes, fds] = cut(fe);
    await fe.write(bytes, fds);
    fe.close();
    return { closedByUs: true };
  },
});

const disconnectCases: HostileCase[] = [
  cutShort('disconnect.half-header', 'half a header, then the connection closed', () => [message(Req.GET_FEATURES).subarray(0, 6), []]),
  cutShort('disconnect.header-no-payload', 'a header without its payload, then the connection closed', () => [message(Req.SET_FEATURES, new Uint8Array(8)).subarray(0, HEADER_SIZE), []]),
  cutShort('disconnect.mem-table-half', 'a memory table with its fd and half its payload, then the connection closed', (fe) => [
    message(Req.SET_MEM_TABLE, memTablePayload(fe.ramSize)).subarray(0, HEADER_SIZE + 20),
    [fe.memfd],
  ]),
  {
    id: 'disconnect.ring-running',
    class: 'disconnect',
    title: 'a request in flight on a running ring, then the connection closed',
    needsRequests: true,
    inject: async ({ fe, requests }) => {
      const ring = await liveRing(fe);
      placeRequest(requests!, fe, ring, 0x20000);
      fe.close();
      return { closedByUs: true };
    },
  },
];

/** Every hostile case, in the order a probe runs them. */
export const HOSTILE_CASES: readonly HostileCase[] = [...messageCases, ...featureCases, ...memoryCases, ...ringCases, ...chainCases, ...floodCases, ...disconnectCases];

/** The case of `id` (throws for an unknown id: a typo in a test is a bug there). */
export function hostileCase(id: string): HostileCase {
  const c = HOSTILE_CASES.find((x) => x.id === id);
  if (c === undefined) throw new Error(`no hostile case ${id}`);
  return c;
}
