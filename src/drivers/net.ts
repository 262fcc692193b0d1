/**
 * Network driver (spec 5.1): negotiates the virtio-net features, writes and reads the
 * virtio_net_hdr in the layout they imply (5.1.6), keeps the receive queues filled (mergeable
 * buffers with MRG_RXBUF, one big buffer per packet without it: 5.1.6.3), drives the control
 * queue (5.1.6.5) and is a {@link FramePort}: `send(frame, offload)`, incoming frames through
 * `onFrame` or as an async iterator, link state from STATUS and configuration changes.
 *
 * It checks the device as it goes (the net.*.device.* clauses a driver can observe): the
 * configuration fields (mtu, max_virtqueue_pairs, speed/duplex), every received header (flags,
 * gso_type, num_buffers, the MTU, the checksum offsets), how buffers of one packet come back,
 * MAC_ADDR_SET and ANNOUNCE_ACK taking effect, receive steering before MQ_VQ_PAIRS_SET.
 *
 * Hot paths allocate nothing per frame: transmit slots and receive buffers are carved from one
 * guest allocation each at start and addressed through views taken once; a received frame that
 * fits one buffer is handed to `onFrame` as a view of guest memory (valid during the call).
 */
import { formatMac, randomMac } from '../net/mac.js';
import { DeviceId, Feature } from '../spec/constants.js';
import { NET_CONFIG, NET_CTRL, NET_FEATURES as F, NET_HDR, NET_HDR_F, NET_HDR_GSO, NET_HDR_SIZE, NET_MQ_PAIRS, NET_RX_BUFFER, NET_STATUS } from '../spec/net.js';
import { bit } from '../spec/features.js';
import { DriverError, VirtioDriver, type VirtioDriverOptions } from '../driver/driver.js';
import type { DriverTransport } from '../driver/transport.js';
import type { DriverQueue } from '../virtqueue/queue.js';
import type { FramePort, NetOffload, OffloadSupport } from '../net/frame-port.js';
import { checksumFault, headersLength, partialChecksumFault } from '../net/verify.js';

const b = (n: number): bigint => bit(n);

/** The device-specific features NetDriver understands and accepts by default (5.1.3). */
export const NET_DRIVER_FEATURES =
  b(F.CSUM) | b(F.GUEST_CSUM) | b(F.CTRL_GUEST_OFFLOADS) | b(F.MTU) | b(F.MAC) | b(F.GUEST_TSO4) | b(F.GUEST_TSO6) | b(F.GUEST_ECN) | b(F.GUEST_UFO) |
  b(F.HOST_TSO4) | b(F.HOST_TSO6) | b(F.HOST_ECN) | b(F.HOST_UFO) | b(F.MRG_RXBUF) | b(F.STATUS) | b(F.CTRL_VQ) | b(F.CTRL_RX) | b(F.CTRL_VLAN) |
  b(F.CTRL_RX_EXTRA) | b(F.GUEST_ANNOUNCE) | b(F.MQ) | b(F.CTRL_MAC_ADDR) | b(F.GUEST_USO4) | b(F.GUEST_USO6) | b(F.HOST_USO) | b(F.SPEED_DUPLEX);

/** The guest GSO features: any of them without MRG_RXBUF means 64 KiB receive buffers (5.1.6.3.1). */
const GUEST_GSO = b(F.GUEST_TSO4) | b(F.GUEST_TSO6) | b(F.GUEST_UFO) | b(F.GUEST_USO4) | b(F.GUEST_USO6);

/** Largest frame (Ethernet header + IP packet) a GSO packet may be: 14 + 40 + 65535 (5.1.6.3). */
const GSO_FRAME_MAX = 65589;
/** An 802.1Q tag: a tagged frame may be 4 bytes longer than mtu + 14. */
const VLAN_TAG = 4;
/** 0xffffffff: speed unknown (5.1.4); duplex 0xff unknown. */
const SPEED_UNKNOWN = 0xffffffff;
const DUPLEX_UNKNOWN = 0xff;

/**
 * The receive filter as the driver set it (5.1.6.5.1-5.1.6.5.3), to judge the frames a device
 * delivers. `undefined`: a mode the driver has not set since reset (the spec gives no default),
 * never judged. A table of null: more entries than {@link FILTER_TABLE_JUDGED}, not judged.
 */
interface RxFilter {
  promisc: boolean | undefined;
  allmulti: boolean | undefined;
  alluni: boolean | undefined;
  nomulti: boolean | undefined;
  nouni: boolean | undefined;
  nobcast: boolean | undefined;
  uni: Set<number> | null;
  multi: Set<number> | null;
  /** VLAN ids the driver removed with VLAN_DEL (and did not add again). */
  vlanDeleted: Set<number>;
  /** The driver's MAC address as a number. */
  mac: number;
}

/**
 * Tables longer than this are not judged: a device may take a long table as "accept all of
 * that kind" (QEMU and NetDevice keep 64 entries); the spec names no capacity.
 */
const FILTER_TABLE_JUDGED = 64;

/** Why the filter the driver set should have kept a delivered frame from it (0: it should not). */
const enum Reject {
  None = 0,
  Vlan,
  Broadcast,
  Multicast,
  Unicast,
  NotInTable,
}

/** 6 bytes of a MAC address at `off` as one number (48 bits fit a double exactly). */
function macNum(b: Uint8Array | number[], off = 0): number {
  return ((b[off] * 256 + b[off + 1]) * 256 + b[off + 2]) * 16777216 + ((b[off + 3] << 16) | (b[off + 4] << 8) | b[off + 5]);
}

function freshFilter(mac: number, extra: boolean): RxFilter {
  // Without CTRL_RX_EXTRA the ALLUNI/NO* modes do not exist: off. With it, unknown until set.
  const x = extra ? undefined : false;
  return { promisc: undefined, allmulti: undefined, alluni: x, nomulti: x, nouni: x, nobcast: x, uni: new Set(), multi: new Set(), vlanDeleted: new Set(), mac };
}

/** What a control command changes in what the driver judges, and what a refusal of it means. */
interface CtrlEffect {
  filter?: (f: RxFilter) => RxFilter;
  pairs?: number;
  refused?: () => void;
}

/** The RxFilter field each VIRTIO_NET_CTRL_RX command sets, by command number (5.1.6.5.1). */
const RX_MODE_KEYS: readonly ('promisc' | 'allmulti' | 'alluni' | 'nomulti' | 'nouni' | 'nobcast')[] = ['promisc', 'allmulti', 'alluni', 'nomulti', 'nouni', 'nobcast'];

/** What `f` says of a delivered frame (5.1.6.5.1 receive modes, 5.1.6.5.2 MAC table, 5.1.6.5.3 VLAN). */
function rxReject(frame: Uint8Array, f: RxFilter, vlan: boolean): Reject {
  // Promiscuous mode wins over the other modes (net.packet-receive-filtering.device.3); unknown: nothing judged.
  if (f.promisc !== false) return Reject.None;
  if (vlan && frame.length >= 16 && frame[12] === 0x81 && frame[13] === 0 && f.vlanDeleted.has(((frame[14] << 8) | frame[15]) & 0xfff)) return Reject.Vlan;
  if (frame[0] & 1) {
    if ((frame[0] & frame[1] & frame[2] & frame[3] & frame[4] & frame[5]) === 0xff) return f.nobcast === true ? Reject.Broadcast : Reject.None;
    if (f.nomulti === true) return Reject.Multicast;
    if (f.allmulti !== false || f.multi === null) return Reject.None;
    return f.multi.has(macNum(frame)) ? Reject.None : Reject.NotInTable;
  }
  if (f.nouni === true) return Reject.Unicast;
  if (f.alluni !== false || f.uni === null) return Reject.None;
  const dst = macNum(frame);
  return dst === f.mac || f.uni.has(dst) ? Reject.None : Reject.NotInTable;
}

/** A frame as the receive iterator hands it out: a copy, the offload metadata, the receive queue it came on. */
export interface ReceivedFrame {
  frame: Uint8Array;
  offload: NetOffload | undefined;
  /** The receive queue pair (0-based) the device delivered it on. */
  queue: number;
}

/** NetDriver's options: the driver core's (all optional here) and how the driver sets itself up. */
export interface NetDriverOptions extends Partial<VirtioDriverOptions> {
  /** Device-specific features to accept when offered (default {@link NET_DRIVER_FEATURES}; a subset of it). */
  features?: bigint;
  /**
   * The MAC address to use. With VIRTIO_NET_F_MAC the device's is used (net.device-config-layout.driver.3)
   * unless this differs and CTRL_MAC_ADDR is negotiated: then MAC_ADDR_SET sets it
   * (net.setting-mac-address-filtering.driver.2). Without MAC: this, or a random locally
   * administered address (net.device-config-layout.driver.4).
   */
  mac?: Uint8Array;
  /** Queue pairs to use with MQ (default 1; capped at max_virtqueue_pairs). */
  queuePairs?: number;
  /** Receive buffers per receive queue (default: the queue size; 16 for 64 KiB buffers). */
  rxBuffers?: number;
  /** Size of each mergeable receive buffer with MRG_RXBUF (default 2048). */
  mergeableBufferSize?: number;
  /** Transmit slots (each `txSlotSize` bytes; a frame takes as many as it needs; default 256). */
  txSlots?: number;
  /** Bytes per transmit slot (default 2048). */
  txSlotSize?: number;
  /** Frames the receive iterator keeps when nobody reads them (more are dropped; default 1024). */
  receiveBacklog?: number;
  /** The port's name (default "net"). */
  name?: string;
}

/** Counters for tests, logs and benchmarks. */
export interface NetDriverCounts {
  txFrames: number;
  txDropped: number;
  rxFrames: number;
  /** Received frames nobody took (no onFrame, no iterator, a full backlog) or that broke the header rules. */
  rxDropped: number;
  controlCommands: number;
  announces: number;
}

/**
 * The virtio-net driver. `start()` initializes the device; then it is a FramePort.
 * Tokens are numbers: the receive buffer index, the first transmit slot, 0 for the control buffer.
 */
export class NetDriver extends VirtioDriver<number> implements FramePort {
  readonly name: string;
  onFrame: ((frame: Uint8Array, offload: NetOffload | undefined) => void) | null = null;
  onLinkChange: ((up: boolean) => void) | null = null;
  /** Called when the device asks for an announcement (GUEST_ANNOUNCE), before the driver sends its own (an RARP, as QEMU's self-announce) and the ack. */
  onAnnounce: (() => void) | null = null;
  readonly counts: NetDriverCounts = { txFrames: 0, txDropped: 0, rxFrames: 0, rxDropped: 0, controlCommands: 0, announces: 0 };

  /** The MAC address in use (6 bytes). */
  readonly mac = new Uint8Array(6);
  /** The device's mtu with VIRTIO_NET_F_MTU, else 1500. */
  mtu = 1500;
  /** max_virtqueue_pairs with MQ, else 1. */
  maxQueuePairs = 1;
  /** Queue pairs in use (MQ_VQ_PAIRS_SET). */
  queuePairs = 1;
  /** Link speed in Mbit/s and duplex with SPEED_DUPLEX (out-of-range values read as unknown: net.device-config-layout.driver.10). */
  speed: number | 'unknown' = 'unknown';
  duplex: 'full' | 'half' | 'unknown' = 'unknown';
  /** Size of virtio_net_hdr in use (5.1.6: 10 legacy without MRG_RXBUF, else 12). */
  hdrSize = 12;

  private readonly wantedNet: bigint;
  private readonly opts: NetDriverOptions;
  private statusBits: number = NET_STATUS.LINK_UP;
  private linkState = false;
  private closed = false;
  private rxQueues: DriverQueue<number>[] = [];
  private txQueues: DriverQueue<number>[] = [];
  private ctrlQueue: DriverQueue<number> | null = null;
  // Receive buffers: `rxCount` per queue, `rxSize` bytes each, from rxBase.
  private rxBase = 0;
  private rxSize = 0;
  private rxPerQueue = 0;
  private rxView: Uint8Array = new Uint8Array(0);
  private rxData: DataView = new DataView(new ArrayBuffer(0));
  // Transmit slots: a free stack and the next slot of each chain.
  private txBase = 0;
  private txSlotSize = 2048;
  private txView: Uint8Array = new Uint8Array(0);
  private txData: DataView = new DataView(new ArrayBuffer(0));
  private txFree = new Int32Array(0);
  private txFreeTop = 0;
  private txNext = new Int32Array(0);
  private maxTxFrame = 1514;
  private flushScheduled = false;
  private readonly txDirty = new Set<DriverQueue<number>>();
  // Reassembly of a packet spanning several mergeable buffers, per receive queue.
  private scratch = new Uint8Array(0);
  private partial: { len: number; remaining: number; head: number; offload: NetOffload | undefined; queue: number; reported: boolean }[] = [];
  // Control queue: one command at a time.
  private ctrlAddr = 0;
  private ctrlChain: Promise<unknown> = Promise.resolve();
  private ctrlWaiter: ((ack: number) => void) | null = null;
  /** MQ_VQ_PAIRS_SET was completed since the device was last reset (steering checks). */
  private pairsSet = false;
  /** The pairs the last completed MQ_VQ_PAIRS_SET enabled (0: none since reset), and those of one in flight. */
  private rxPairsSet = 0;
  private rxPairsPending = 0;
  /** The receive filter the device has acked, the one a command in flight sets, the previous MAC table, and the tables from before the last reset. */
  private filter: RxFilter = freshFilter(0, false);
  private filterPending: RxFilter | null = null;
  private prevTables: { uni: Set<number> | null; multi: Set<number> | null } | null = null;
  private resetTables: { uni: Set<number> | null; multi: Set<number> | null } | null = null;
  /** Runs when the device marks the control command used (see collect). */
  private ctrlDone: ((ok: boolean) => void) | null = null;
  private ctrlAckAddr = 0;
  private vlanJudged = false;
  /** GUEST_CSUM / GUEST_ECN negotiated (read per delivered frame: kept as booleans, not bigint tests). */
  private guestCsum = false;
  private guestEcn = false;
  private announcing = false;
  // The async iterator.
  private readonly backlog: ReceivedFrame[] = [];
  private readonly readers: ((r: IteratorResult<ReceivedFrame>) => void)[] = [];
  private iterating = 0;
  private readonly roomWaiters: (() => void)[] = [];
  private allocations: number[] = [];

  /** A network driver over `transport`; start() initializes the device. */
  constructor(transport: DriverTransport, options: NetDriverOptions = {}) {
    const wanted = (options.features ?? NET_DRIVER_FEATURES) & NET_DRIVER_FEATURES;
    super(transport, { deviceId: DeviceId.NET, queueSize: 256, ...options, deviceFeatures: wanted });
    this.wantedNet = wanted;
    this.opts = options;
    this.name = options.name ?? 'net';
    this.onUsed = (q) => this.collect(q);
    this.onConfigChange = () => void this.configChanged().catch(() => undefined);
  }

  // ---------------------------------------------------------------- FramePort

  get accepts(): OffloadSupport {
    const n = (f: number): boolean => this.negotiated(f);
    return { csum: n(F.CSUM), tso4: n(F.HOST_TSO4), tso6: n(F.HOST_TSO6), ecn: n(F.HOST_ECN), ufo: n(F.HOST_UFO), uso: n(F.HOST_USO) };
  }

  /** The offloads received frames may carry (what the device was allowed: the GUEST_* features). */
  get delivers(): OffloadSupport {
    const n = (f: number): boolean => this.negotiated(f);
    return { csum: n(F.GUEST_CSUM), tso4: n(F.GUEST_TSO4), tso6: n(F.GUEST_TSO6), ecn: n(F.GUEST_ECN), ufo: n(F.GUEST_UFO), uso: n(F.GUEST_USO4) || n(F.GUEST_USO6) };
  }

  get linkUp(): boolean {
    return this.linkState;
  }

  /**
   * Queues one frame for the device (Ethernet header first, no FCS) with optional offload
   * metadata the negotiated features allow (see `accepts`). Returns false, and drops the frame,
   * when the driver is not live, the transmit slots or the queue are full, the frame is larger
   * than the MTU allows (net.device-config-layout.driver.8), or it asks for an offload that
   * was not negotiated (net.packet-transmission.driver.3/.7/.9/.11/.13). Frames queued in one
   * synchronous run are published with one notification (a microtask later; `flush()` now).
   */
  send(frame: Uint8Array, offload?: NetOffload, pair?: number): boolean {
    if (this.state !== 'live' || this.closed) return this.dropTx();
    const len = frame.length;
    const gso = offload?.gso;
    // net.device-config-layout.driver.8: no non-GSO frame beyond mtu + the L2 header.
    if (len < 14 || len > (gso === undefined ? this.maxTxFrame : GSO_FRAME_MAX)) return this.dropTx();
    const q = this.txQueues[pair === undefined ? 0 : pair % this.queuePairs];
    const hdr = this.hdrSize;
    const need = Math.ceil((hdr + len) / this.txSlotSize);
    if (this.txFreeTop < need) this.reclaim(q);
    if (this.txFreeTop < need || q.numFree < need) return this.dropTx();
    // The header (5.1.6.2): flags and gso fields as negotiated, num_buffers 0 (net.packet-transmission.driver.2).
    let flags = 0;
    let gsoType: number = NET_HDR_GSO.NONE;
    let hdrLen = 0;
    let gsoSize = 0;
    let csumStart = 0;
    let csumOffset = 0;
    if (offload?.needsCsum !== undefined) {
      if (!this.negotiated(F.CSUM)) return this.dropTx();
      flags = NET_HDR_F.NEEDS_CSUM;
      csumStart = offload.needsCsum.start;
      csumOffset = offload.needsCsum.offset;
    }
    if (gso !== undefined) {
      const t = gso.type;
      const f = t === 'tcpv4' ? F.HOST_TSO4 : t === 'tcpv6' ? F.HOST_TSO6 : t === 'udp' ? F.HOST_UFO : F.HOST_USO;
      if (!this.negotiated(f) || (gso.ecn && !this.negotiated(F.HOST_ECN)) || flags === 0) return this.dropTx(); // net.packet-transmission.driver.30: GSO needs NEEDS_CSUM
      gsoType = (t === 'tcpv4' ? NET_HDR_GSO.TCPV4 : t === 'tcpv6' ? NET_HDR_GSO.TCPV6 : t === 'udp' ? NET_HDR_GSO.UDP : NET_HDR_GSO.UDP_L4) | (gso.ecn ? NET_HDR_GSO.ECN : 0);
      gsoSize = gso.segmentSize;
      hdrLen = gso.headerLength;
    } else if (len > this.maxTxFrame) return this.dropTx();
    let slot = this.txFree[--this.txFreeTop];
    const head = slot;
    let off = slot * this.txSlotSize;
    const d = this.txData;
    d.setUint8(off + NET_HDR.FLAGS, flags);
    d.setUint8(off + NET_HDR.GSO_TYPE, gsoType);
    d.setUint16(off + NET_HDR.HDR_LEN, hdrLen, true);
    d.setUint16(off + NET_HDR.GSO_SIZE, gsoSize, true);
    d.setUint16(off + NET_HDR.CSUM_START, csumStart, true);
    d.setUint16(off + NET_HDR.CSUM_OFFSET, csumOffset, true);
    if (hdr >= NET_HDR_SIZE.NUM_BUFFERS) d.setUint16(off + NET_HDR.NUM_BUFFERS, 0, true);
    q.begin();
    let room = this.txSlotSize - hdr;
    let piece = Math.min(room, len);
    this.txView.set(piece === len ? frame : frame.subarray(0, piece), off + hdr);
    q.addReadable(this.txBase + off, hdr + piece);
    let done = piece;
    while (done < len) {
      const next = this.txFree[--this.txFreeTop];
      this.txNext[slot] = next;
      slot = next;
      off = slot * this.txSlotSize;
      room = this.txSlotSize;
      piece = Math.min(room, len - done);
      this.txView.set(frame.subarray(done, done + piece), off);
      q.addReadable(this.txBase + off, piece);
      done += piece;
    }
    this.txNext[slot] = -1;
    if (q.commit(head) < 0) {
      this.freeTxChain(head);
      return this.dropTx();
    }
    this.counts.txFrames++;
    this.txDirty.add(q);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(() => this.flush());
    }
    return true;
  }

  /** Like send, but waits for room instead of dropping when the slots or the queue are full (fails when the driver stops). */
  async write(frame: Uint8Array, offload?: NetOffload): Promise<void> {
    for (;;) {
      if (this.state !== 'live' || this.closed) throw this.failure ?? new DriverError('not-started', 'the network driver is not live');
      const before = this.counts.txDropped;
      if (this.send(frame, offload)) return;
      this.counts.txDropped = before;
      if (this.txFreeTop >= Math.ceil((this.hdrSize + frame.length) / this.txSlotSize) && this.txQueues[0].numFree > 0) {
        throw new DriverError('unsupported', `a ${frame.length}-byte frame with these offloads cannot be sent on this device (mtu ${this.mtu}, features ${this.describe(this.features).join(' ')})`);
      }
      this.flush();
      this.reclaim(this.txQueues[0]);
      // The device may have returned slots during the flush (a synchronous transport): try again before waiting.
      if (this.txFreeTop >= Math.ceil((this.hdrSize + frame.length) / this.txSlotSize)) continue;
      await new Promise<void>((resolve) => this.roomWaiters.push(resolve));
    }
  }

  /** Publishes the frames queued so far and notifies the device (when it asks for notifications). */
  flush(): void {
    this.flushScheduled = false;
    if (this.state !== 'live') return;
    for (const q of this.txDirty) this.kick(q);
    this.txDirty.clear();
  }

  /** Incoming frames as an async iterator (copies; `onFrame` still sees them first). Ends when the driver is closed or breaks. */
  frames(): AsyncIterableIterator<ReceivedFrame> {
    this.iterating++;
    let done = false;
    const finish = (): void => {
      if (!done) {
        done = true;
        this.iterating--;
      }
    };
    const it: AsyncIterableIterator<ReceivedFrame> = {
      next: () => {
        if (done) return Promise.resolve({ value: undefined, done: true });
        const f = this.backlog.shift();
        if (f !== undefined) return Promise.resolve({ value: f, done: false });
        if (this.closed || this.state === 'broken' || this.state === 'failed') {
          finish();
          return Promise.resolve({ value: undefined, done: true });
        }
        return new Promise((resolve) => this.readers.push(resolve));
      },
      return: () => {
        finish();
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]: () => it,
    };
    return it;
  }

  /** Same as {@link NetDriver.frames}. */
  [Symbol.asyncIterator](): AsyncIterableIterator<ReceivedFrame> {
    return this.frames();
  }

  /** Ends the port: the driver shuts the device down (reset), iterators end, the link reads down. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.endReaders();
    this.setLink(false);
    void this.shutdown().catch(() => undefined);
  }

  // ---------------------------------------------------------------- start

  /** Initializes the device (3.1.1), reads its configuration, sets up and fills the queues, then applies the MAC and queue pairs asked for. */
  async start(): Promise<void> {
    this.closed = false;
    this.pairsSet = false;
    this.rxPairsSet = this.rxPairsPending = 0;
    // The tables set before this reset: a device that keeps them breaks net.setting-mac-address-filtering.device.1.
    const f = this.filter;
    this.resetTables = (f.uni !== null && f.uni.size > 0) || (f.multi !== null && f.multi.size > 0) ? { uni: f.uni, multi: f.multi } : this.resetTables;
    this.filterPending = null;
    this.prevTables = null;
    this.releaseBuffers();
    await this.init({
      check: (offered) => this.checkOffer(offered),
      setup: () => this.setup(),
    });
    for (const q of this.rxQueues) this.kick(q);
    this.setLink((this.statusBits & NET_STATUS.LINK_UP) !== 0);
    // MAC_ADDR_SET when the MAC asked for differs from the device's (net.setting-mac-address-filtering.driver.2).
    const want = this.opts.mac;
    if (want !== undefined && this.negotiated(F.MAC) && !sameMac(want, this.mac) && this.negotiated(F.CTRL_MAC_ADDR)) await this.setMac(want);
    const pairs = Math.min(this.opts.queuePairs ?? 1, this.maxQueuePairs);
    if (pairs > 1) await this.setQueuePairs(pairs);
    if (this.negotiated(F.GUEST_ANNOUNCE) && this.statusBits & NET_STATUS.ANNOUNCE) void this.announce().catch(() => undefined);
  }

  /** Step 4: offers a driver can judge before accepting (5.1.4 device normatives on feature combinations). */
  private checkOffer(offered: bigint): void {
    const has = (f: number): boolean => (offered & b(f)) !== 0n;
    if (has(F.HASH_REPORT) && !has(F.CTRL_VQ)) this.deviceViolation('net.device-config-layout.device.13', 'device offers VIRTIO_NET_F_HASH_REPORT without VIRTIO_NET_F_CTRL_VQ', {});
    if (has(F.CTRL_RX_EXTRA) && !has(F.CTRL_VQ)) this.deviceViolation('net.device-config-layout.device.14', 'device offers VIRTIO_NET_F_CTRL_RX_EXTRA without VIRTIO_NET_F_CTRL_VQ', {});
  }

  /** Step 7: configuration, buffers, queues. */
  private async setup(): Promise<void> {
    const n = (f: number): boolean => this.negotiated(f);
    const legacy = this.transport.legacy !== undefined;
    // 5.1.6: num_buffers exists with VERSION_1 or MRG_RXBUF (net.setting-up-receive-buffers.driver.4).
    this.hdrSize = legacy && !n(F.MRG_RXBUF) ? NET_HDR_SIZE.LEGACY : NET_HDR_SIZE.NUM_BUFFERS;
    await this.readDeviceConfig();
    if (!n(F.MAC)) {
      // net.device-config-layout.driver.4: a locally administered unicast address of our own.
      const mac = this.opts.mac ?? randomMac();
      this.mac.set(mac.subarray(0, 6));
    }
    // Queues: receiveq1 transmitq1 ... receiveqN transmitqN controlq (5.1.2).
    const pairs = this.maxQueuePairs;
    const size = this.opts.queueSize ?? 256;
    const usePairs = Math.min(this.opts.queuePairs ?? 1, pairs);
    this.rxQueues = [];
    this.txQueues = [];
    for (let i = 0; i < usePairs; i++) {
      this.rxQueues.push(await this.setupQueue(2 * i));
      this.txQueues.push(await this.setupQueue(2 * i + 1));
    }
    this.ctrlQueue = n(F.CTRL_VQ) ? await this.setupQueue(2 * pairs) : null;
    // Receive buffers (5.1.6.3.1, net.setting-up-receive-buffers.driver.1/.2/.3, net.device-config-layout.driver.7).
    const mrg = n(F.MRG_RXBUF);
    const big = !mrg && (this.features & GUEST_GSO) !== 0n;
    const l2max = Math.max(this.mtu, 1500) + 14 + VLAN_TAG;
    this.rxSize = mrg ? Math.max(this.opts.mergeableBufferSize ?? 2048, this.hdrSize) : this.hdrSize + (big ? GSO_FRAME_MAX : Math.max(NET_RX_BUFFER.SMALL_FRAME, l2max));
    this.rxSize = (this.rxSize + 7) & ~7;
    const qsize = this.rxQueues[0].size;
    this.rxPerQueue = Math.min(qsize, this.opts.rxBuffers ?? (big ? 16 : qsize));
    const total = this.rxPerQueue * usePairs;
    this.rxBase = this.alloc(this.rxSize * total, 64);
    this.rxView = this.transport.memory.bytes(this.rxBase, this.rxSize * total);
    this.rxData = new DataView(this.rxView.buffer, this.rxView.byteOffset, this.rxView.byteLength);
    // The reassembly scratch holds the largest packet the device may deliver.
    this.scratch = new Uint8Array((this.features & GUEST_GSO) !== 0n ? GSO_FRAME_MAX : l2max);
    this.partial = this.rxQueues.map(() => ({ len: 0, remaining: 0, head: 0, offload: undefined, queue: 0, reported: false }));
    // Transmit slots.
    this.txSlotSize = Math.max(this.opts.txSlotSize ?? 2048, this.hdrSize + 64);
    const slots = this.opts.txSlots ?? 256;
    this.txBase = this.alloc(this.txSlotSize * slots, 64);
    this.txView = this.transport.memory.bytes(this.txBase, this.txSlotSize * slots);
    this.txData = new DataView(this.txView.buffer, this.txView.byteOffset, this.txView.byteLength);
    this.txFree = new Int32Array(slots);
    for (let i = 0; i < slots; i++) this.txFree[i] = slots - 1 - i;
    this.txFreeTop = slots;
    this.txNext = new Int32Array(slots).fill(-1);
    this.maxTxFrame = (n(F.MTU) ? this.mtu : 1500) + 14 + VLAN_TAG;
    if (this.ctrlQueue !== null) this.ctrlAddr = this.alloc(4096, 64);
    // Fill every receive queue in use (net.setting-up-receive-buffers.driver.5); they are
    // published with a notification right after DRIVER_OK (start): a publish now, with no
    // notification allowed before DRIVER_OK, would move avail.idx past avail_event unnotified
    // (split.avail-buffer-notif-suppr.driver.6 with EVENT_IDX).
    for (let qi = 0; qi < usePairs; qi++) {
      const q = this.rxQueues[qi];
      for (let i = 0; i < this.rxPerQueue; i++) this.postRx(q, qi * this.rxPerQueue + i);
    }
    this.queuePairs = 1;
    // What delivered frames are judged by, fixed before DRIVER_OK (a device may deliver at once).
    this.filter = freshFilter(macNum(this.mac), n(F.CTRL_RX_EXTRA));
    this.vlanJudged = n(F.CTRL_VLAN);
    this.guestCsum = n(F.GUEST_CSUM);
    this.guestEcn = n(F.GUEST_ECN);
  }

  private alloc(size: number, align: number): number {
    const a = this.allocator.alloc(size, align);
    this.allocations.push(a);
    return a;
  }

  private releaseBuffers(): void {
    for (const a of this.allocations) this.allocator.release(a);
    this.allocations = [];
  }

  /** Reads and judges the configuration fields of the negotiated features (5.1.4). */
  private async readDeviceConfig(): Promise<void> {
    const n = (f: number): boolean => this.negotiated(f);
    const c = await this.readConfig(async (r) => {
      const mac: number[] = [];
      if (n(F.MAC)) for (let i = 0; i < 6; i++) mac.push(Number(await r(NET_CONFIG.MAC + i, 1)));
      const status = n(F.STATUS) ? Number(await r(NET_CONFIG.STATUS, 2)) : NET_STATUS.LINK_UP;
      const pairs = n(F.MQ) ? Number(await r(NET_CONFIG.MAX_VIRTQUEUE_PAIRS, 2)) : 1;
      const mtu = n(F.MTU) ? Number(await r(NET_CONFIG.MTU, 2)) : 1500;
      const speed = n(F.SPEED_DUPLEX) ? Number(await r(NET_CONFIG.SPEED, 4)) : SPEED_UNKNOWN;
      const duplex = n(F.SPEED_DUPLEX) ? Number(await r(NET_CONFIG.DUPLEX, 1)) : DUPLEX_UNKNOWN;
      return { mac, status, pairs, mtu, speed, duplex };
    });
    if (n(F.MAC)) this.mac.set(c.mac);
    this.statusBits = c.status;
    if (n(F.MQ)) {
      if (c.pairs < NET_MQ_PAIRS.MIN || c.pairs > NET_MQ_PAIRS.MAX) {
        this.deviceViolation('net.device-config-layout.device.1', `max_virtqueue_pairs is ${c.pairs}, outside ${NET_MQ_PAIRS.MIN}..0x8000`, { maxVirtqueuePairs: c.pairs });
        this.maxQueuePairs = 1;
      } else this.maxQueuePairs = c.pairs;
    }
    if (n(F.MTU)) {
      if (c.mtu < 68) {
        this.deviceViolation('net.device-config-layout.device.2', `mtu is ${c.mtu}, below 68`, { mtu: c.mtu });
        this.mtu = 1500;
      } else {
        if (c.mtu < 1280) this.deviceViolation('net.device-config-layout.device.3', `mtu is ${c.mtu}, below 1280`, { mtu: c.mtu });
        this.mtu = c.mtu;
      }
    }
    if (n(F.SPEED_DUPLEX)) this.takeSpeedDuplex(c.speed, c.duplex, false);
  }

  private takeSpeedDuplex(speed: number, duplex: number, change: boolean): void {
    if (speed > 0x7fffffff && speed !== SPEED_UNKNOWN) this.deviceViolation('net.device-config-layout.device.10', `speed is 0x${speed.toString(16)}: neither 0..0x7fffffff nor unknown (0xffffffff)`, { speed });
    if (duplex !== 0 && duplex !== 1 && duplex !== DUPLEX_UNKNOWN) this.deviceViolation('net.device-config-layout.device.11', `duplex is 0x${duplex.toString(16)}: neither 0x00, 0x01 nor 0xff`, { duplex });
    // net.device-config-layout.driver.10: out of range reads as unknown.
    const s: number | 'unknown' = speed <= 0x7fffffff ? speed : 'unknown';
    const dx = duplex === 0 ? 'full' : duplex === 1 ? 'half' : 'unknown';
    if (change && this.linkState && (s !== this.speed || dx !== this.duplex) && (this.statusBits & NET_STATUS.LINK_UP) !== 0) {
      this.deviceViolation('net.device-config-layout.device.12', `speed/duplex changed from ${this.speed}/${this.duplex} to ${s}/${dx} while the link stayed up`, {});
    }
    this.speed = s;
    this.duplex = dx;
  }

  /** A configuration change notification (5.1.4): link state, announce requests, the mtu that must not move, speed/duplex (net.device-config-layout.driver.11). */
  private async configChanged(): Promise<void> {
    if (this.state !== 'live') return;
    const n = (f: number): boolean => this.negotiated(f);
    const c = await this.readConfig(async (r) => ({
      status: n(F.STATUS) ? Number(await r(NET_CONFIG.STATUS, 2)) : NET_STATUS.LINK_UP,
      mtu: n(F.MTU) ? Number(await r(NET_CONFIG.MTU, 2)) : this.mtu,
      speed: n(F.SPEED_DUPLEX) ? Number(await r(NET_CONFIG.SPEED, 4)) : SPEED_UNKNOWN,
      duplex: n(F.SPEED_DUPLEX) ? Number(await r(NET_CONFIG.DUPLEX, 1)) : DUPLEX_UNKNOWN,
    }));
    if (n(F.MTU) && c.mtu !== this.mtu) this.deviceViolation('net.device-config-layout.device.4', `mtu changed from ${this.mtu} to ${c.mtu} after it was set`, { was: this.mtu, now: c.mtu });
    const wasUp = (this.statusBits & NET_STATUS.LINK_UP) !== 0;
    this.statusBits = c.status;
    if (n(F.SPEED_DUPLEX) && wasUp) this.takeSpeedDuplex(c.speed, c.duplex, (c.status & NET_STATUS.LINK_UP) !== 0);
    else if (n(F.SPEED_DUPLEX)) this.takeSpeedDuplex(c.speed, c.duplex, false);
    this.setLink(!this.closed && (c.status & NET_STATUS.LINK_UP) !== 0);
    if (n(F.GUEST_ANNOUNCE) && c.status & NET_STATUS.ANNOUNCE && !this.announcing) await this.announce();
  }

  private setLink(up: boolean): void {
    if (up === this.linkState) return;
    this.linkState = up;
    this.onLinkChange?.(up);
  }

  /**
   * The device asked the driver to announce itself (GUEST_ANNOUNCE, 5.1.6.5.4): `onAnnounce`
   * runs, the driver broadcasts an RARP with its MAC (net.gratuitous-packet-sending.driver.1),
   * then acknowledges (net.gratuitous-packet-sending.driver.2); the device must have cleared
   * ANNOUNCE by then (net.gratuitous-packet-sending.device.1).
   */
  private async announce(): Promise<void> {
    this.announcing = true;
    try {
      this.counts.announces++;
      this.onAnnounce?.();
      this.send(rarpFrame(this.mac));
      this.flush();
      await this.control(NET_CTRL.ANNOUNCE, NET_CTRL.ANNOUNCE_ACK, new Uint8Array(0));
      const status = await this.readConfig(async (r) => Number(await r(NET_CONFIG.STATUS, 2)));
      this.statusBits = status;
      if (status & NET_STATUS.ANNOUNCE) this.deviceViolation('net.gratuitous-packet-sending.device.1', 'device completed ANNOUNCE_ACK with the ANNOUNCE status bit still set', { status });
    } finally {
      this.announcing = false;
    }
  }

  // ---------------------------------------------------------------- control queue (5.1.6.5)

  /**
   * Sends one control command (class, command, command-specific data, 5.1.6.5) and resolves
   * when the device acked it with VIRTIO_NET_OK. VIRTIO_NET_ERR (a refusal the device may give)
   * is a DriverError of kind `unsupported`. Commands run one at a time.
   */
  async control(cls: number, cmd: number, data: Uint8Array): Promise<void> {
    const run = this.ctrlChain.then(() => this.controlNow(cls, cmd, data));
    this.ctrlChain = run.catch(() => undefined);
    return run;
  }

  /**
   * What a command changes in what the driver judges (the receive filter, the queue pairs),
   * read from its bytes so that raw `control()` calls count as the helpers' do; null: nothing.
   */
  private effectOf(cls: number, cmd: number, data: Uint8Array): CtrlEffect | null {
    const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
    if (cls === NET_CTRL.RX) {
      const key = RX_MODE_KEYS[cmd];
      if (key === undefined || data.length !== 1 || data[0] > 1) return null;
      const on = data[0] === 1;
      const extra = cmd >= NET_CTRL.RX_ALLUNI;
      if (!this.negotiated(extra ? F.CTRL_RX_EXTRA : F.CTRL_RX)) return null;
      return {
        filter: (f) => ({ ...f, [key]: on }),
        // The device must support every command of the class it offered (5.1.6.5.1): VIRTIO_NET_ERR to one is a refusal it may not give.
        refused: () => {
          if (extra) this.deviceViolation('net.packet-receive-filtering.device.5', `device answered VIRTIO_NET_ERR to CTRL_RX command ${cmd} (${data[0]}) with VIRTIO_NET_F_CTRL_RX_EXTRA negotiated`, { cmd });
          else this.deviceViolation('net.packet-receive-filtering.device.1', `device answered VIRTIO_NET_ERR to CTRL_RX command ${cmd} (${data[0]}) with VIRTIO_NET_F_CTRL_RX negotiated`, { cmd });
        },
      };
    }
    if (cls === NET_CTRL.MAC && cmd === NET_CTRL.MAC_ADDR_SET && data.length === 6) {
      const mac = macNum(data);
      return { filter: (f) => ({ ...f, mac }) };
    }
    if (cls === NET_CTRL.MAC && cmd === NET_CTRL.MAC_TABLE_SET) {
      // Two (le32 count, MACs) tables; a payload that is not is judged by the device, and leaves both tables unknown here.
      const read = (at: number): { table: Set<number> | null; end: number } => {
        if (at + 4 > data.length) return { table: null, end: -1 };
        const n = v.getUint32(at, true);
        const end = at + 4 + 6 * n;
        if (end > data.length) return { table: null, end: -1 };
        const table = new Set<number>();
        for (let i = 0; i < n; i++) table.add(macNum(data, at + 4 + 6 * i));
        return { table: n > FILTER_TABLE_JUDGED ? null : table, end };
      };
      const u = read(0);
      const m = u.end < 0 ? u : read(u.end);
      const ok = m.end === data.length;
      return { filter: (f) => ({ ...f, uni: ok ? u.table : null, multi: ok ? m.table : null }) };
    }
    if (cls === NET_CTRL.VLAN && (cmd === NET_CTRL.VLAN_ADD || cmd === NET_CTRL.VLAN_DEL) && data.length === 2) {
      const id = v.getUint16(0, true) & 0xfff;
      return {
        filter: (f) => {
          const deleted = new Set(f.vlanDeleted);
          if (cmd === NET_CTRL.VLAN_ADD) deleted.delete(id);
          else deleted.add(id);
          return { ...f, vlanDeleted: deleted };
        },
      };
    }
    if (cls === NET_CTRL.MQ && cmd === NET_CTRL.MQ_VQ_PAIRS_SET && data.length === 2) return { pairs: v.getUint16(0, true) };
    return null;
  }

  private async controlNow(cls: number, cmd: number, data: Uint8Array): Promise<void> {
    const q = this.ctrlQueue;
    if (q === null || this.state !== 'live') throw new DriverError('not-negotiated', 'VIRTIO_NET_F_CTRL_VQ was not negotiated (or the driver is not live): no control queue');
    if (data.length > 4096 - 3) throw new DriverError('unsupported', `control command data of ${data.length} bytes is too long`);
    const mem = this.transport.memory;
    const a = this.ctrlAddr;
    mem.writeU8(a, cls);
    mem.writeU8(a + 1, cmd);
    mem.write(a + 2, data);
    const ackAddr = a + 2 + data.length;
    mem.writeU8(ackAddr, 0xff);
    // Header, data and ack in their own descriptors: the layout a legacy device without ANY_LAYOUT needs (net.legacy-framing-requirements.driver.2).
    q.begin().addReadable(a, 2);
    if (data.length > 0) q.addReadable(a + 2, data.length);
    q.addWritable(ackAddr, 1);
    const done = new Promise<number>((resolve) => (this.ctrlWaiter = resolve));
    this.ctrlAckAddr = ackAddr;
    const effect = this.effectOf(cls, cmd, data);
    this.ctrlDone = effect === null ? null : this.pendEffect(effect);
    if (q.commit(0) < 0) {
      this.ctrlDone?.(false);
      this.ctrlDone = null;
      throw new DriverError('unsupported', 'no room in the control queue');
    }
    this.counts.controlCommands++;
    this.kick(q);
    const ack = await done;
    if (ack === -1) throw this.failure ?? new DriverError('cancelled', 'the control command was not answered: the driver stopped');
    const value = mem.readU8(ackAddr);
    if (value !== NET_CTRL.OK) throw new DriverError('unsupported', `the device answered control command class ${cls} command ${cmd} with ${value === NET_CTRL.ERR ? 'VIRTIO_NET_ERR' : `ack ${value}`}`);
  }

  /**
   * A command with `effect` is about to be made available: from now until the device marks it
   * used, a frame is judged by the filter before it and the one it sets (the device may apply it
   * any time in between); at the used mark the new one holds, if the device acked it (returned).
   */
  private pendEffect(effect: CtrlEffect): (ok: boolean) => void {
    const next = effect.filter?.(this.filter) ?? null;
    if (next !== null) this.filterPending = next;
    if (effect.pairs !== undefined) this.rxPairsPending = effect.pairs;
    return (ok) => {
      if (next !== null) {
        if (ok) {
          const f = this.filter;
          if (next.uni !== f.uni || next.multi !== f.multi) this.prevTables = { uni: f.uni, multi: f.multi };
          this.filter = next;
        }
        this.filterPending = null;
      }
      if (effect.pairs !== undefined) {
        if (ok) this.rxPairsSet = effect.pairs;
        this.rxPairsPending = 0;
      }
      if (!ok) effect.refused?.();
    };
  }

  /** VIRTIO_NET_CTRL_RX_PROMISC (CTRL_RX; net.packet-receive-filtering.driver.1). */
  setPromisc(on: boolean): Promise<void> {
    return this.rxMode(NET_CTRL.RX_PROMISC, on);
  }

  /** VIRTIO_NET_CTRL_RX_ALLMULTI (CTRL_RX). */
  setAllMulti(on: boolean): Promise<void> {
    return this.rxMode(NET_CTRL.RX_ALLMULTI, on);
  }

  /** ALLUNI, NOMULTI, NOUNI, NOBCAST (CTRL_RX_EXTRA; net.packet-receive-filtering.driver.2) or PROMISC/ALLMULTI (CTRL_RX). */
  async rxMode(cmd: number, on: boolean): Promise<void> {
    const extra = cmd >= NET_CTRL.RX_ALLUNI;
    if (!this.negotiated(extra ? F.CTRL_RX_EXTRA : F.CTRL_RX)) throw new DriverError('not-negotiated', `${extra ? 'VIRTIO_NET_F_CTRL_RX_EXTRA' : 'VIRTIO_NET_F_CTRL_RX'} was not negotiated`);
    await this.control(NET_CTRL.RX, cmd, Uint8Array.of(on ? 1 : 0));
  }

  /** VIRTIO_NET_CTRL_MAC_TABLE_SET: the unicast and multicast filter tables (either may be empty: net.setting-mac-address-filtering.driver.3/.4). */
  async setMacTable(unicast: readonly Uint8Array[], multicast: readonly Uint8Array[]): Promise<void> {
    if (!this.negotiated(F.CTRL_RX)) throw new DriverError('not-negotiated', 'VIRTIO_NET_F_CTRL_RX was not negotiated (net.setting-mac-address-filtering.driver.1)');
    const data = new Uint8Array(8 + 6 * (unicast.length + multicast.length));
    const v = new DataView(data.buffer);
    let o = 0;
    for (const table of [unicast, multicast]) {
      v.setUint32(o, table.length, true);
      o += 4;
      for (const m of table) {
        data.set(m.subarray(0, 6), o);
        o += 6;
      }
    }
    await this.control(NET_CTRL.MAC, NET_CTRL.MAC_TABLE_SET, data);
  }

  /**
   * VIRTIO_NET_CTRL_MAC_ADDR_SET (CTRL_MAC_ADDR); with MAC negotiated the device must show the
   * new address in its config when it completes the command (net.setting-mac-address-filtering.device.3).
   */
  async setMac(mac: Uint8Array): Promise<void> {
    if (!this.negotiated(F.CTRL_MAC_ADDR)) throw new DriverError('not-negotiated', 'VIRTIO_NET_F_CTRL_MAC_ADDR was not negotiated');
    await this.control(NET_CTRL.MAC, NET_CTRL.MAC_ADDR_SET, mac.slice(0, 6));
    this.mac.set(mac.subarray(0, 6));
    if (this.negotiated(F.MAC)) {
      const now = await this.readConfig(async (r) => {
        const m = new Uint8Array(6);
        for (let i = 0; i < 6; i++) m[i] = Number(await r(NET_CONFIG.MAC + i, 1));
        return m;
      });
      if (!sameMac(now, mac)) this.deviceViolation('net.setting-mac-address-filtering.device.3', `device completed MAC_ADDR_SET ${formatMac(mac)} with ${formatMac(now)} in its config mac`, {});
    }
  }

  /** VIRTIO_NET_CTRL_VLAN_ADD / _DEL (CTRL_VLAN). */
  async vlan(vid: number, add: boolean): Promise<void> {
    if (!this.negotiated(F.CTRL_VLAN)) throw new DriverError('not-negotiated', 'VIRTIO_NET_F_CTRL_VLAN was not negotiated');
    const d = new Uint8Array(2);
    new DataView(d.buffer).setUint16(0, vid & 0xfff, true);
    await this.control(NET_CTRL.VLAN, add ? NET_CTRL.VLAN_ADD : NET_CTRL.VLAN_DEL, d);
  }

  /**
   * VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET (MQ): uses `pairs` queue pairs from now on. Their queues are
   * set up and filled first (net.automatic-receive-steering-in-multiqueue-mode.driver.1/.2).
   */
  async setQueuePairs(pairs: number): Promise<void> {
    if (!this.negotiated(F.MQ)) throw new DriverError('not-negotiated', 'VIRTIO_NET_F_MQ was not negotiated');
    if (!Number.isInteger(pairs) || pairs < 1 || pairs > this.maxQueuePairs || pairs > this.rxQueues.length) {
      throw new DriverError('unsupported', `queue pairs ${pairs}: between 1 and ${Math.min(this.maxQueuePairs, this.rxQueues.length)} (the pairs set up at start: queuePairs option)`);
    }
    const d = new Uint8Array(2);
    new DataView(d.buffer).setUint16(0, pairs, true);
    // Transmit only on the pairs in use (net.automatic-receive-steering-in-multiqueue-mode.driver.3/.4): shrink before, grow after.
    if (pairs < this.queuePairs) this.queuePairs = pairs;
    await this.control(NET_CTRL.MQ, NET_CTRL.MQ_VQ_PAIRS_SET, d);
    this.queuePairs = pairs;
    this.pairsSet = true;
  }

  /** VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET (CTRL_GUEST_OFFLOADS): the GUEST_* offload bits to have on (only negotiated ones: net.setting-offloads-state.driver.1). */
  async setGuestOffloads(bits: bigint): Promise<void> {
    if (!this.negotiated(F.CTRL_GUEST_OFFLOADS)) throw new DriverError('not-negotiated', 'VIRTIO_NET_F_CTRL_GUEST_OFFLOADS was not negotiated');
    if ((bits & ~this.features) !== 0n) throw new DriverError('not-negotiated', `offload bits ${this.describe(bits & ~this.features).join(' ')} were not negotiated`);
    const d = new Uint8Array(8);
    new DataView(d.buffer).setBigUint64(0, bits, true);
    await this.control(NET_CTRL.GUEST_OFFLOADS, NET_CTRL.GUEST_OFFLOADS_SET, d);
  }

  // ---------------------------------------------------------------- used buffers

  private collect(q: DriverQueue<number>): void {
    const i = q.index;
    if (this.ctrlQueue !== null && q === this.ctrlQueue) {
      do {
        while (q.getUsed() !== undefined) {
          const done = this.ctrlDone;
          this.ctrlDone = null;
          if (done !== null) {
            // Frames the device placed before it marked the command used are judged by the filter
            // (and pairs) from before: take them now, then the command's effect holds.
            for (let p = 0; p < this.rxQueues.length; p++) this.receive(this.rxQueues[p], p);
            done(this.transport.memory.readU8(this.ctrlAckAddr) === NET_CTRL.OK);
          }
          const w = this.ctrlWaiter;
          this.ctrlWaiter = null;
          w?.(0);
        }
      } while (q.enableInterrupts() && !q.broken);
      return;
    }
    if (i & 1) {
      // Re-arm used-buffer notifications (EVENT_IDX: used_event moves on) and collect what raced in.
      do this.reclaim(q);
      while (q.enableInterrupts() && !q.broken);
      const waiters = this.roomWaiters.splice(0);
      for (const w of waiters) w();
      return;
    }
    this.receive(q, i >> 1);
  }

  private reclaim(q: DriverQueue<number>): void {
    let tok: number | undefined;
    // net.legacy-device-operation.driver.2: the used length on the transmit queue means nothing.
    while ((tok = q.getUsed()) !== undefined) this.freeTxChain(tok);
  }

  private freeTxChain(head: number): void {
    let s = head;
    while (s >= 0 && this.txFreeTop < this.txFree.length) {
      this.txFree[this.txFreeTop++] = s;
      const next = this.txNext[s];
      this.txNext[s] = -1;
      s = next;
    }
  }

  private postRx(q: DriverQueue<number>, index: number): void {
    q.begin().addWritable(this.rxBase + index * this.rxSize, this.rxSize).commit(index);
  }

  /** Receive processing (5.1.6.4): every header judged, mergeable buffers reassembled, each buffer posted again. */
  private receive(q: DriverQueue<number>, pair: number): void {
    const part = this.partial[pair];
    let tok: number | undefined;
    let got = 0;
    do {
      while ((tok = q.getUsed()) !== undefined) {
        got++;
        const len = q.lastLen;
        const off = tok * this.rxSize;
        if (part.remaining > 0) {
          this.appendPart(part, off, len);
        } else {
          this.receiveHead(pair, off, len, part);
        }
        if (this.state !== 'live' && this.state !== 'suspended') return;
        this.postRx(q, tok);
      }
      if (part.remaining > 0 && !part.reported) {
        // The rest of the packet is not in the used ring: its buffers were not marked used together.
        part.reported = true;
        this.deviceViolation('net.processing-of-incoming-packets.device.4', `device marked ${part.head} buffer(s) of a packet used, num_buffers says ${part.head + part.remaining}: the rest is not in the used ring`, { queue: q.index });
      }
    } while (q.enableInterrupts() && !q.broken);
    if (got > 0) this.kick(q);
  }

  private receiveHead(pair: number, off: number, len: number, part: NetDriver['partial'][number]): void {
    const hdr = this.hdrSize;
    const d = this.rxData;
    if (len < hdr) {
      // Not even a header: nothing to deliver.
      this.counts.rxDropped++;
      this.deviceViolation('net.setting-up-receive-buffers.device.1', `device returned a receive buffer of ${len} bytes, shorter than the ${hdr}-byte virtio_net_hdr`, {});
      return;
    }
    const flags = d.getUint8(off + NET_HDR.FLAGS);
    const gsoType = d.getUint8(off + NET_HDR.GSO_TYPE);
    const gsoSize = d.getUint16(off + NET_HDR.GSO_SIZE, true);
    const hdrLen = d.getUint16(off + NET_HDR.HDR_LEN, true);
    const csumStart = d.getUint16(off + NET_HDR.CSUM_START, true);
    const csumOffset = d.getUint16(off + NET_HDR.CSUM_OFFSET, true);
    const numBuffers = hdr >= NET_HDR_SIZE.NUM_BUFFERS ? d.getUint16(off + NET_HDR.NUM_BUFFERS, true) : 1;
    const mrg = this.negotiated(F.MRG_RXBUF);
    let buffers = 1;
    if (mrg) {
      if (numBuffers === 0 || numBuffers > this.rxPerQueue) {
        this.deviceViolation('net.processing-of-incoming-packets.device.2', `num_buffers is ${numBuffers}: a packet spans 1 to ${this.rxPerQueue} buffers here`, { numBuffers });
        this.counts.rxDropped++;
        return;
      }
      buffers = numBuffers;
    } else if (hdr >= NET_HDR_SIZE.NUM_BUFFERS && numBuffers !== 1) {
      this.deviceViolation('net.processing-of-incoming-packets.device.1', `num_buffers is ${numBuffers} without VIRTIO_NET_F_MRG_RXBUF (must be 1)`, { numBuffers });
    }
    if (pair > 0 && !this.pairsSet) {
      this.deviceViolation('net.automatic-receive-steering-in-multiqueue-mode.device.1', `device delivered a packet on receiveq${pair + 1} before MQ_VQ_PAIRS_SET (only receiveq1 after reset)`, { queue: 2 * pair });
    } else if (this.rxPairsSet > 0 && pair >= Math.max(this.rxPairsSet, this.rxPairsPending)) {
      this.deviceViolation('net.automatic-receive-steering-in-multiqueue-mode.device.2', `device delivered a packet on receiveq${pair + 1} after MQ_VQ_PAIRS_SET enabled ${this.rxPairsSet} pair(s)`, { queue: 2 * pair });
    }
    const offload = this.judgeHeader(flags, gsoType, gsoSize, hdrLen, csumStart, csumOffset);
    if (offload === null) {
      this.counts.rxDropped++;
      if (buffers > 1) this.startPart(part, buffers, 0, undefined, true);
      return;
    }
    if (buffers === 1) {
      this.deliver(this.rxView.subarray(off + hdr, off + len), offload, pair);
      return;
    }
    // The first of several buffers: full to its end (net.processing-of-incoming-packets.device.3).
    if (len !== this.rxSize) this.deviceViolation('net.processing-of-incoming-packets.device.3', `device used ${len} of ${this.rxSize} bytes of a buffer that is not the last of its packet`, { len });
    this.startPart(part, buffers, len - hdr, offload, false);
    this.scratch.set(this.rxView.subarray(off + hdr, off + len), 0);
  }

  private startPart(part: NetDriver['partial'][number], buffers: number, len: number, offload: NetOffload | undefined, drop: boolean): void {
    part.len = drop ? -1 : len;
    part.remaining = buffers - 1;
    part.head = 1;
    part.offload = offload;
    part.reported = false;
  }

  private appendPart(part: NetDriver['partial'][number], off: number, len: number): void {
    part.remaining--;
    part.head++;
    if (part.remaining > 0 && len !== this.rxSize) this.deviceViolation('net.processing-of-incoming-packets.device.3', `device used ${len} of ${this.rxSize} bytes of a buffer that is not the last of its packet`, { len });
    if (part.len >= 0) {
      if (part.len + len > this.scratch.length) {
        this.deviceViolation('net.device-config-layout.device.5', `device delivered a packet longer than ${this.scratch.length} bytes (more than the negotiated offloads and mtu allow)`, {});
        part.len = -1;
      } else {
        this.scratch.set(this.rxView.subarray(off, off + len), part.len);
        part.len += len;
      }
    }
    if (part.remaining === 0) {
      if (part.len >= 0) this.deliver(this.scratch.subarray(0, part.len), part.offload, this.partial.indexOf(part));
      else this.counts.rxDropped++;
    }
  }

  /**
   * Judges a received header against the negotiated features (5.1.6.4.2) and turns it into
   * offload metadata; null: a header the driver cannot use (dropped).
   */
  private judgeHeader(flags: number, gsoType: number, gsoSize: number, hdrLen: number, csumStart: number, csumOffset: number): NetOffload | undefined | null {
    const n = (f: number): boolean => this.negotiated(f);
    if (!n(F.GUEST_CSUM) && flags !== 0) this.deviceViolation('net.processing-of-incoming-packets.device.5', `received header flags 0x${flags.toString(16)} without VIRTIO_NET_F_GUEST_CSUM (must be 0)`, { flags });
    if (flags & NET_HDR_F.RSC_INFO) this.deviceViolation('net.processing-of-incoming-packets.device.27', 'received header sets VIRTIO_NET_HDR_F_RSC_INFO without VIRTIO_NET_F_RSC_EXT', { flags });
    if (gsoType & 0x60) {
      this.deviceViolation('net.processing-of-incoming-packets.device.11', `received gso_type 0x${gsoType.toString(16)} sets a UDP tunnel bit without VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO`, { gsoType });
      return null;
    }
    const base = gsoType & ~NET_HDR_GSO.ECN;
    let offload: NetOffload | undefined;
    // net.processing-of-incoming-packets.driver.4: csum_start/offset mean something only with NEEDS_CSUM and no RSC_INFO.
    if (flags & NET_HDR_F.NEEDS_CSUM && !(flags & NET_HDR_F.RSC_INFO) && n(F.GUEST_CSUM)) offload = { needsCsum: { start: csumStart, offset: csumOffset } };
    if (flags & NET_HDR_F.DATA_VALID && n(F.GUEST_CSUM)) (offload ??= {}).dataValid = true;
    if (gsoType === NET_HDR_GSO.NONE) return offload;
    if ((this.features & GUEST_GSO) === 0n) {
      this.deviceViolation('net.processing-of-incoming-packets.device.24', `received gso_type ${gsoType} with no guest GSO feature negotiated (must be NONE)`, { gsoType });
      return null;
    }
    let type: 'tcpv4' | 'tcpv6' | 'udp' | 'udp-l4';
    if (base === NET_HDR_GSO.TCPV4) {
      type = 'tcpv4';
      if (!n(F.GUEST_TSO4)) this.deviceViolation('net.processing-of-incoming-packets.device.7', 'received gso_type TCPV4 without VIRTIO_NET_F_GUEST_TSO4', { gsoType });
    } else if (base === NET_HDR_GSO.UDP) {
      type = 'udp';
      if (!n(F.GUEST_UFO)) this.deviceViolation('net.processing-of-incoming-packets.device.8', 'received gso_type UDP without VIRTIO_NET_F_GUEST_UFO', { gsoType });
    } else if (base === NET_HDR_GSO.TCPV6) {
      type = 'tcpv6';
      if (!n(F.GUEST_TSO6)) this.deviceViolation('net.processing-of-incoming-packets.device.9', 'received gso_type TCPV6 without VIRTIO_NET_F_GUEST_TSO6', { gsoType });
    } else if (base === NET_HDR_GSO.UDP_L4) {
      type = 'udp-l4';
      if (!n(F.GUEST_USO4) && !n(F.GUEST_USO6)) this.deviceViolation('net.processing-of-incoming-packets.device.10', 'received gso_type UDP_L4 without VIRTIO_NET_F_GUEST_USO4 or _USO6', { gsoType });
    } else {
      // Not a type of 5.1.6: nothing the driver can do with it.
      return null;
    }
    if (gsoType & NET_HDR_GSO.ECN && !n(F.GUEST_ECN)) this.deviceViolation('net.processing-of-incoming-packets.device.13', 'received a GSO packet with VIRTIO_NET_HDR_GSO_ECN without VIRTIO_NET_F_GUEST_ECN', { gsoType });
    if (!(flags & NET_HDR_F.NEEDS_CSUM) || gsoSize === 0) {
      this.deviceViolation('net.processing-of-incoming-packets.device.25', `received a GSO packet ${flags & NET_HDR_F.NEEDS_CSUM ? 'with gso_size 0' : 'without VIRTIO_NET_HDR_F_NEEDS_CSUM'}`, { flags, gsoSize });
      return null;
    }
    // net.processing-of-incoming-packets.driver.5/.6: hdr_len is a hint only.
    return { ...offload, gso: { type, segmentSize: gsoSize, headerLength: hdrLen, ecn: (gsoType & NET_HDR_GSO.ECN) !== 0 } };
  }

  private deliver(frame: Uint8Array, offload: NetOffload | undefined, pair: number): void {
    const n = frame.length;
    const o = offload?.needsCsum;
    if (o !== undefined && o.start + o.offset + 2 > n) {
      this.deviceViolation('net.processing-of-incoming-packets.device.20', `NEEDS_CSUM with csum_start ${o.start} + csum_offset ${o.offset} beyond the ${n}-byte packet`, { csumStart: o.start, csumOffset: o.offset });
      this.counts.rxDropped++;
      return;
    }
    if (offload?.gso === undefined && this.negotiated(F.MTU) && n > this.mtu + 14 + (n >= 18 && frame[12] === 0x81 && frame[13] === 0 ? VLAN_TAG : 0)) {
      this.deviceViolation('net.device-config-layout.device.5', `device delivered a ${n}-byte non-GSO frame with mtu ${this.mtu}`, { length: n, mtu: this.mtu });
    }
    this.judgeChecksums(frame, offload);
    const reject = rxReject(frame, this.filter, this.vlanJudged);
    if (reject !== Reject.None && (this.filterPending === null || rxReject(frame, this.filterPending, this.vlanJudged) !== Reject.None)) this.judgeFiltered(reject, frame);
    this.counts.rxFrames++;
    let taken = false;
    if (this.onFrame !== null) {
      taken = true;
      this.onFrame(frame, offload);
    }
    if (this.iterating > 0) {
      taken = true;
      const f: ReceivedFrame = { frame: frame.slice(), offload, queue: pair };
      const r = this.readers.shift();
      if (r !== undefined) r({ value: f, done: false });
      else if (this.backlog.length < (this.opts.receiveBacklog ?? 1024)) this.backlog.push(f);
      else this.counts.rxDropped++;
    }
    if (!taken) this.counts.rxDropped++;
  }

  /**
   * The checksum duties of a delivered frame (5.1.6.4.1), judged for IPv4/IPv6 TCP/UDP frames
   * (src/net/verify.ts): NEEDS_CSUM's slot and what precedes it, a frame without GUEST_CSUM or
   * with DATA_VALID fully checksummed; and a GSO frame's hdr_len and ECN bit.
   */
  private judgeChecksums(frame: Uint8Array, offload: NetOffload | undefined): void {
    const o = offload?.needsCsum;
    const gso = offload?.gso;
    if (o !== undefined) {
      const fault = partialChecksumFault(frame, o.start, o.offset, gso !== undefined);
      if (fault === 'ip-header') this.deviceViolation('net.processing-of-incoming-packets.device.18', `NEEDS_CSUM at ${o.start}+${o.offset} with a wrong IPv4 header checksum before it`, { csumStart: o.start });
      else if (fault === 'pseudo-header') this.deviceViolation('net.processing-of-incoming-packets.device.19', `the checksum slot at ${o.start}+${o.offset} does not hold the TCP/UDP pseudo-header sum`, { csumStart: o.start });
    } else if (offload?.dataValid === true || !this.guestCsum) {
      const fault = checksumFault(frame);
      if (fault !== null && offload?.dataValid === true) this.deviceViolation('net.processing-of-incoming-packets.device.30', `DATA_VALID on a frame whose ${fault === 'ip-header' ? 'IPv4 header' : 'TCP/UDP'} checksum is wrong`, {});
      else if (fault !== null) this.deviceViolation('net.processing-of-incoming-packets.device.6', `without VIRTIO_NET_F_GUEST_CSUM a frame whose ${fault === 'ip-header' ? 'IPv4 header' : 'TCP/UDP'} checksum is wrong`, {});
    }
    if (gso === undefined) return;
    const headers = headersLength(frame);
    if (gso.headerLength < headers) this.deviceViolation('net.processing-of-incoming-packets.device.28', `GSO frame with hdr_len ${gso.headerLength}, its headers take ${headers} bytes`, { hdrLen: gso.headerLength });
    const l4 = o?.start ?? -1;
    if ((gso.type === 'tcpv4' || gso.type === 'tcpv6') && !gso.ecn && this.guestEcn && l4 > 0 && l4 + 14 <= frame.length && (frame[l4 + 13] & 0x80) !== 0) {
      this.deviceViolation('net.processing-of-incoming-packets.device.14', 'a TCP GSO frame with CWR set but no VIRTIO_NET_HDR_GSO_ECN (GUEST_ECN negotiated)', {});
    }
  }

  /** A frame the receive filter the driver set should have kept from it (5.1.6.5.1-3): which rule. */
  private judgeFiltered(reject: Reject, frame: Uint8Array): void {
    const f = this.filter;
    const dst = formatMac(frame.subarray(0, 6));
    switch (reject) {
      case Reject.Vlan:
        this.deviceViolation('net.vlan-filtering.device.3', `device delivered a frame tagged with VLAN ${((frame[14] << 8) | frame[15]) & 0xfff}, which the driver removed from the filter`, {});
        return;
      case Reject.Broadcast:
        this.deviceViolation(f.allmulti === true ? 'net.packet-receive-filtering.device.13' : 'net.packet-receive-filtering.device.12', `device delivered a broadcast frame with NOBCAST on${f.allmulti === true ? ' (and ALLMULTI)' : ''}`, {});
        return;
      case Reject.Multicast:
        this.deviceViolation(f.allmulti === true ? 'net.packet-receive-filtering.device.8' : 'net.packet-receive-filtering.device.7', `device delivered multicast ${dst} with NOMULTI on${f.allmulti === true ? ' (and ALLMULTI)' : ''}`, {});
        return;
      case Reject.Unicast:
        this.deviceViolation(f.alluni === true ? 'net.packet-receive-filtering.device.11' : 'net.packet-receive-filtering.device.10', `device delivered unicast ${dst} with NOUNI on${f.alluni === true ? ' (and ALLUNI)' : ''}`, {});
        return;
      default: {
        const a = macNum(frame);
        const multi = (frame[0] & 1) !== 0;
        const inTable = (t: { uni: Set<number> | null; multi: Set<number> | null } | null): boolean => (multi ? t?.multi : t?.uni)?.has(a) === true;
        if (inTable(this.prevTables)) this.deviceViolation('net.setting-mac-address-filtering.device.2', `device delivered ${dst}, in the MAC table before the last MAC_TABLE_SET but not in the one it acked`, {});
        else if (inTable(this.resetTables)) this.deviceViolation('net.setting-mac-address-filtering.device.1', `device delivered ${dst}, in the MAC table set before the reset (the table is empty after reset)`, {});
        else this.deviceViolation('net.setting-mac-address-filtering.device.4', `device delivered ${dst}, neither its MAC nor in the MAC table, with promiscuous mode off`, {});
      }
    }
  }

  private dropTx(): boolean {
    this.counts.txDropped++;
    return false;
  }

  private endReaders(): void {
    for (const r of this.readers.splice(0)) r({ value: undefined, done: true });
  }

  protected override onBroken(_err: DriverError): void {
    const w = this.ctrlWaiter;
    this.ctrlWaiter = null;
    this.ctrlDone = null;
    this.filterPending = null;
    this.rxPairsPending = 0;
    w?.(-1);
    for (const r of this.roomWaiters.splice(0)) r();
    this.endReaders();
    this.setLink(false);
  }
}

function sameMac(a: Uint8Array, b: Uint8Array | number[]): boolean {
  for (let i = 0; i < 6; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A broadcast RARP request announcing `mac` (what QEMU's self-announce sends after migration). */
export function rarpFrame(mac: Uint8Array): Uint8Array {
  const f = new Uint8Array(60);
  f.fill(0xff, 0, 6);
  f.set(mac.subarray(0, 6), 6);
  const v = new DataView(f.buffer);
  v.setUint16(12, 0x8035); // ETH_P_RARP
  v.setUint16(14, 1); // Ethernet
  v.setUint16(16, 0x0800); // IPv4
  f[18] = 6;
  f[19] = 4;
  v.setUint16(20, 3); // reverse request
  f.set(mac.subarray(0, 6), 22);
  f.set(mac.subarray(0, 6), 32);
  return f;
}
