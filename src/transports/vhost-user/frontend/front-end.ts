/**
 * The vhost-user front-end (the VMM side: QEMU's hw/virtio/vhost-user.c), as a DriverTransport:
 * the project's drivers (BlkDriver, RngDriver, any VirtioDriver) run over it unchanged and
 * drive a vhost-user back-end (qemu-storage-daemon, `virtio-ts serve`, ...) from a Node
 * program with no VM at all. Guest RAM is memfd regions mapped here and passed to the back-end.
 *
 * What the driver's register writes become (vhost-user.rst; the order QEMU keeps):
 * - connect: GET_FEATURES, GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM (MQ),
 *   GET_MAX_MEM_SLOTS (CONFIGURE_MEM_SLOTS), SET_BACKEND_REQ_FD (BACKEND_REQ), SET_OWNER;
 * - FEATURES_OK: SET_FEATURES (with VHOST_USER_F_PROTOCOL_FEATURES when offered), then
 *   SET_STATUS (STATUS): the back-end may refuse the features (FEATURES_OK reads back clear);
 * - DRIVER_OK: the inflight buffer (GET_INFLIGHT_FD once, SET_INFLIGHT_FD), guest memory
 *   (ADD_MEM_REG per region with CONFIGURE_MEM_SLOTS, else SET_MEM_TABLE), then per ring
 *   SET_VRING_NUM, SET_VRING_BASE, SET_VRING_ADDR, SET_VRING_CALL, SET_VRING_KICK,
 *   SET_VRING_ENABLE; SET_STATUS last;
 * - status 0 (reset): SET_STATUS 0, GET_VRING_BASE per running ring (it stops the ring: the
 *   back-end answers once nothing is in progress), RESET_DEVICE when offered (RESET_OWNER is
 *   deprecated: never sent), and the inflight buffer is dropped (a reset device has nothing in
 *   flight; vhost-user.rst: "QEMU should retrieve a new one when vm reset").
 * - configuration space: GET_CONFIG / SET_CONFIG (CONFIG); a CONFIG_CHANGE_MSG on the
 *   back-end request channel is the driver's configuration change notification, and moves
 *   config_generation (vhost-user has none of its own).
 *
 * Requests with no reply of their own ask for one when REPLY_ACK is negotiated (a refusal is
 * then a FrontEndError 'refused'). Every reply is checked (flags, request, size, fds) and
 * waited for at most `timeoutMs`.
 */
import { native, type NativeAddon } from '../../../native/index.js';
import type { GuestMemory } from '../../../memory/guest-memory.js';
import type { DriverTransport, TransportEvents } from '../../../driver/transport.js';
import type { RingAddresses } from '../../../spec/ring.js';
import type { RingFormat } from '../../../virtqueue/queue.js';
import { Feature, Status } from '../../../spec/constants.js';
import {
  BackendReq,
  encodeMessage,
  encodeRingBase,
  F_LOG_ALL,
  F_PROTOCOL_FEATURES,
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  FLAG_VERSION_MASK,
  MAX_MEM_REGIONS,
  ProtocolFeature,
  Req,
  statePayload,
  u64Payload,
  VERSION,
  vringAddrPayload,
} from '../protocol.js';
import { closeAll, MessageSocket, RequestChannel, type RawMessage, type ReplyShape } from './channel.js';
import { FrontEndError } from './errors.js';
import { GuestRam, memTablePayload, singleRegionPayload, type RamRegion } from './memory.js';

const pf = (b: number) => 1n << BigInt(b);

/** The protocol features this front-end implements (it asks for these, as far as the back-end offers them). */
export const FRONT_END_PROTOCOL_FEATURES =
  pf(ProtocolFeature.MQ) |
  pf(ProtocolFeature.REPLY_ACK) |
  pf(ProtocolFeature.BACKEND_REQ) |
  pf(ProtocolFeature.CONFIG) |
  pf(ProtocolFeature.INFLIGHT_SHMFD) |
  pf(ProtocolFeature.RESET_DEVICE) |
  pf(ProtocolFeature.CONFIGURE_MEM_SLOTS) |
  pf(ProtocolFeature.STATUS);

/**
 * Bits of GET_FEATURES that are vhost's, not the device's (VHOST_USER_F_PROTOCOL_FEATURES,
 * VHOST_F_LOG_ALL), and transport features this front-end cannot carry: a kick is an eventfd
 * (no NOTIFICATION_DATA), there is no IOMMU (ACCESS_PLATFORM), no single-ring reset or suspend
 * in vhost-user. The driver is never offered them.
 */
export const HIDDEN_FEATURES = pf(F_PROTOCOL_FEATURES) | pf(F_LOG_ALL) | pf(Feature.NOTIFICATION_DATA) | pf(Feature.ACCESS_PLATFORM) | pf(Feature.RING_RESET) | pf(Feature.SUSPEND);

/** How the front-end connects and what it offers the drivers over it. */
export interface VhostUserFrontEndOptions {
  /** The back-end's unix socket. */
  socketPath: string;
  /** The device type the back-end serves (DeviceId.BLOCK, DeviceId.ENTROPY, ...): vhost-user does not say. */
  deviceId: number;
  /** Bytes of guest RAM (one memfd region at guest address 0); default 16 MiB. */
  memorySize?: number;
  /** The bound of every wait for the back-end, in ms; default 10000. */
  timeoutMs?: number;
  /** The largest ring size offered to the driver (queue_size); default 256. */
  queueSize?: number;
  /** Queues when the back-end does not offer VHOST_USER_PROTOCOL_F_MQ; default 1. */
  numQueues?: number;
  /** Protocol features to accept (default FRONT_END_PROTOCOL_FEATURES); the back-end's offer limits them further. */
  protocolFeatures?: bigint;
}

/**
 * Where a ring stands on the back-end: `configured` (set up by the driver, not yet started),
 * `running` (started), `stopped` (by GET_VRING_BASE), `lost` (its back-end went away while it ran).
 */
export type RingState = 'configured' | 'running' | 'stopped' | 'lost';

interface FrontRing {
  readonly index: number;
  readonly size: number;
  readonly addrs: RingAddresses;
  readonly kick: number;
  readonly call: number;
  readonly watch: { close(): void };
  state: RingState;
  /** Where the next start begins (SET_VRING_BASE): 0 at first, GET_VRING_BASE's answer after a stop. */
  base: number;
}

/** Shape checks of the replies this front-end takes. */
const U64: ReplyShape = { size: 8 };
const STATE: ReplyShape = { size: 8 };

/** Counters, for tests and benchmarks: kicks sent, calls seen, configuration changes heard, reconnections. */
export interface FrontEndCounts {
  kicks: number;
  calls: number;
  configChanges: number;
  reconnects: number;
}

/**
 * The VMM side of vhost-user. Create one with VhostUserFrontEnd.connect(), hand it to a
 * driver as its transport, and close() it when done.
 */
export class VhostUserFrontEnd implements DriverTransport {
  /** Guest memory the drivers use (the first RAM region and any added with addMemory()). */
  readonly memory: GuestMemory;
  /** Guest RAM: the memfd regions behind `memory`. */
  readonly ram: GuestRam;
  /** Kicks are eventfd writes: no VIRTIO_F_NOTIFICATION_DATA. */
  readonly notificationData = false;
  /** GET_FEATURES as the back-end answered it (all 64 bits, vhost's own included). */
  backendFeatures = 0n;
  /** GET_PROTOCOL_FEATURES as the back-end answered it (0 when it does not offer VHOST_USER_F_PROTOCOL_FEATURES). */
  offeredProtocolFeatures = 0n;
  /** The protocol features negotiated (SET_PROTOCOL_FEATURES). */
  protocolFeatures = 0n;
  /** GET_QUEUE_NUM's answer (MQ), else the numQueues option. */
  backendQueues = 1;
  /** GET_MAX_MEM_SLOTS's answer (CONFIGURE_MEM_SLOTS), else the SET_MEM_TABLE limit of 8. */
  maxMemSlots = MAX_MEM_REGIONS;
  /** Features the driver accepted (sent with FEATURES_OK). */
  driverFeatures = 0n;
  /** Back-end requests that broke the protocol (the channel goes on; they are answered with a failure when a reply was asked). */
  readonly backendErrors: FrontEndError[] = [];
  readonly counts: FrontEndCounts = { kicks: 0, calls: 0, configChanges: 0, reconnects: 0 };
  /** Called when the connection ends other than by close(): the back-end went away, a reply timed out or broke the rules. */
  onDisconnect: (err: FrontEndError) => void = () => undefined;

  private readonly n: NativeAddon;
  private readonly timeoutMs: number;
  private readonly queueSize: number;
  private readonly wantedProtocol: bigint;
  private channel: RequestChannel | null = null;
  private backendChannel: MessageSocket | null = null;
  private events: TransportEvents | null = null;
  private status = 0;
  private generation = 0;
  private rings: (FrontRing | undefined)[] = [];
  /** Regions the back-end has (ADD_MEM_REG), when memory slots are in use. */
  private readonly slotted = new Set<RamRegion>();
  /** Guest memory was given to the back-end on this connection. */
  private memoryGiven = false;
  private inflight: { fd: number; payload: Uint8Array } | null = null;
  private closed = false;

  private constructor(readonly options: VhostUserFrontEndOptions) {
    this.n = native();
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.queueSize = options.queueSize ?? 256;
    this.wantedProtocol = options.protocolFeatures ?? FRONT_END_PROTOCOL_FEATURES;
    this.ram = new GuestRam(this.n, options.memorySize ?? 16 << 20);
    this.memory = this.ram.memory;
  }

  /** Connects to the back-end at `options.socketPath` and negotiates the session (not yet the device's features: the driver does that). */
  static async connect(options: VhostUserFrontEndOptions): Promise<VhostUserFrontEnd> {
    const fe = new VhostUserFrontEnd(options);
    try {
      await fe.open(Date.now());
    } catch (err) {
      fe.release();
      throw err;
    }
    return fe;
  }

  /** Whether the connection is up. */
  get connected(): boolean {
    return this.channel !== null && this.channel.closedBy === null;
  }

  /** Whether protocol feature `bit` (ProtocolFeature) was negotiated. */
  hasProtocolFeature(bit: number): boolean {
    return (this.protocolFeatures & pf(bit)) !== 0n;
  }

  /** The ring format the driver negotiated (VIRTIO_F_RING_PACKED), for the ring bases. */
  get ringFormat(): RingFormat {
    return (this.driverFeatures & pf(Feature.RING_PACKED)) !== 0n ? 'packed' : 'split';
  }

  // ---------------------------------------------------------------- the session

  /**
   * Connects (retrying, until `retryUntil`, while nobody listens yet: a back-end being
   * restarted) and negotiates as QEMU's vhost_user_backend_init and vhost_dev_init do.
   */
  private async open(retryUntil: number): Promise<void> {
    let fd: number;
    for (;;) {
      try {
        fd = this.n.connect(this.options.socketPath);
        break;
      } catch (err) {
        const code = (err as { code?: string }).code;
        if ((code === 'ENOENT' || code === 'ECONNREFUSED') && Date.now() < retryUntil) {
          await new Promise((res) => setTimeout(res, 20));
          continue;
        }
        throw new FrontEndError('connect', `cannot connect to ${this.options.socketPath}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      }
    }
    const channel = new RequestChannel(fd, this.n, this.timeoutMs, (err) => this.lostConnection(channel, err));
    this.channel = channel;
    this.memoryGiven = false;
    this.slotted.clear();
    const features = (await channel.ask(Req.GET_FEATURES, undefined, U64)).view.getBigUint64(0, true);
    let protocol = 0n;
    let offeredProtocol = 0n;
    if (features & pf(F_PROTOCOL_FEATURES)) {
      offeredProtocol = (await channel.ask(Req.GET_PROTOCOL_FEATURES, undefined, U64)).view.getBigUint64(0, true);
      protocol = offeredProtocol & this.wantedProtocol;
      await channel.tell(Req.SET_PROTOCOL_FEATURES, u64Payload(protocol));
      channel.replyAck = (protocol & pf(ProtocolFeature.REPLY_ACK)) !== 0n;
    }
    if (this.counts.reconnects > 0 || this.backendFeatures !== 0n) {
      // A back-end restarted under a running driver must still offer what was negotiated.
      const missing = (this.driverFeatures & ~features) | (this.protocolFeatures & ~protocol);
      if (missing !== 0n && this.status !== 0) {
        throw new FrontEndError('features-changed', `the back-end no longer offers what was negotiated (features 0x${(this.driverFeatures & ~features).toString(16)}, protocol features 0x${(this.protocolFeatures & ~protocol).toString(16)})`);
      }
    }
    this.backendFeatures = features;
    this.offeredProtocolFeatures = offeredProtocol;
    this.protocolFeatures = protocol;
    if (this.hasProtocolFeature(ProtocolFeature.MQ)) {
      const q = (await channel.ask(Req.GET_QUEUE_NUM, undefined, U64)).view.getBigUint64(0, true);
      if (q === 0n || q > 0xffffn) throw this.badReply(channel, `GET_QUEUE_NUM: ${q} queues`);
      this.backendQueues = Number(q);
    } else {
      this.backendQueues = this.options.numQueues ?? 1;
    }
    if (this.hasProtocolFeature(ProtocolFeature.CONFIGURE_MEM_SLOTS)) {
      const slots = (await channel.ask(Req.GET_MAX_MEM_SLOTS, undefined, U64)).view.getBigUint64(0, true);
      if (slots === 0n || slots > 4096n) throw this.badReply(channel, `GET_MAX_MEM_SLOTS: ${slots} slots`);
      this.maxMemSlots = Number(slots);
    } else {
      this.maxMemSlots = MAX_MEM_REGIONS;
    }
    if (this.hasProtocolFeature(ProtocolFeature.BACKEND_REQ)) {
      const [ours, theirs] = this.n.socketpair();
      this.backendChannel?.close(new FrontEndError('disconnected', 'replaced'));
      this.backendChannel = new MessageSocket(
        ours,
        this.n,
        (m) => this.backendRequest(m),
        () => undefined,
      );
      try {
        await channel.tell(Req.SET_BACKEND_REQ_FD, undefined, [theirs]);
      } finally {
        this.n.close(theirs);
      }
    }
    await channel.tell(Req.SET_OWNER);
  }

  /** A reply that passed the header checks but says something impossible: the connection ends. */
  private badReply(channel: RequestChannel, message: string): FrontEndError {
    const err = new FrontEndError('bad-reply', message);
    channel.close(err);
    return err;
  }

  private lostConnection(channel: RequestChannel, err: FrontEndError): void {
    if (channel !== this.channel) return;
    for (const r of this.rings) if (r !== undefined && r.state === 'running') r.state = 'lost';
    if (!this.closed) this.onDisconnect(err);
  }

  /** The connection, or a 'disconnected' error naming what ended it. */
  private get ch(): RequestChannel {
    if (this.closed) throw new FrontEndError('wrong-state', 'the front-end is closed');
    const c = this.channel;
    if (c === null) throw new FrontEndError('disconnected', 'not connected');
    if (c.closedBy !== null) throw new FrontEndError('disconnected', `the connection ended: ${c.closedBy.message}`, { cause: c.closedBy });
    return c;
  }

  private requireConnection(): void {
    void this.ch;
  }

  /**
   * Sends a request and waits (bounded) for its reply, checked against `shape`: for tools that
   * drive a back-end message by message (the probe). The session's own state is not updated.
   */
  ask(request: number, payload: Uint8Array | undefined, shape: ReplyShape, fds: readonly number[] = []): ReturnType<RequestChannel['ask']> {
    return this.ch.ask(request, payload, shape, fds);
  }

  /** Sends a request with no reply of its own (acknowledged when REPLY_ACK is negotiated); see ask(). */
  tell(request: number, payload?: Uint8Array, fds: readonly number[] = []): Promise<void> {
    return this.ch.tell(request, payload, fds);
  }

  /**
   * After the back-end went away (crashed, restarted, upgraded): connects again (waiting,
   * bounded, for the socket to come back), negotiates the same session and, when the device
   * was live, gives the new back-end the same inflight buffer, guest memory and rings. A ring
   * that was running restarts where the guest's used ring stands (split: used.idx, as QEMU
   * does after a lost GET_VRING_BASE); the back-end then serves again, from the inflight
   * buffer, what the old one had taken and not finished, so no request is lost.
   */
  async reconnect(): Promise<void> {
    if (this.closed) throw new FrontEndError('wrong-state', 'the front-end is closed');
    const old = this.channel;
    this.channel = null;
    old?.close(new FrontEndError('disconnected', 'reconnecting'));
    for (const r of this.rings) if (r !== undefined && r.state === 'running') r.state = 'lost';
    await this.open(Date.now() + this.timeoutMs);
    this.counts.reconnects++;
    if (this.status & Status.FEATURES_OK) await this.sendFeatures();
    if (this.status & Status.DRIVER_OK) {
      for (const r of this.rings) if (r !== undefined && r.state === 'lost') r.base = this.recoveredBase(r);
      await this.startDevice();
      if (this.hasProtocolFeature(ProtocolFeature.STATUS)) await this.ch.tell(Req.SET_STATUS, u64Payload(this.status));
    }
  }

  /**
   * Where a ring lost with its back-end restarts. Split: the guest's used.idx, as QEMU's
   * virtio_queue_restore_last_avail_idx after a GET_VRING_BASE that got no answer; what the
   * old back-end took beyond it comes back from the inflight buffer. Packed: a ring's device
   * position cannot be read back from guest memory (a used element covers a whole chain of
   * slots), so the last base known is sent; a back-end with an inflight buffer restarts from
   * what its region recorded.
   */
  private recoveredBase(r: FrontRing): number {
    if (this.ringFormat === 'split') return this.memory.loadU16(r.addrs.used + 2);
    return r.base;
  }

  /** The inflight buffer (INFLIGHT_SHMFD) the front-end holds for the back-end, or null: its fd (the front-end's) and size. */
  get inflightBuffer(): { fd: number; size: number; offset: number } | null {
    if (this.inflight === null) return null;
    const v = new DataView(this.inflight.payload.buffer, this.inflight.payload.byteOffset, 24);
    return { fd: this.inflight.fd, size: Number(v.getBigUint64(0, true)), offset: Number(v.getBigUint64(8, true)) };
  }

  // ---------------------------------------------------------------- back-end requests

  private backendRequest(m: RawMessage): void {
    closeAll(this.n, m.fds);
    const name = backendRequestName(m.request);
    let ok = false;
    if ((m.flags & FLAG_VERSION_MASK) !== VERSION || m.flags & FLAG_REPLY || m.flags & ~(FLAG_VERSION_MASK | FLAG_NEED_REPLY)) {
      this.backendErrors.push(new FrontEndError('bad-message', `${name}: flags 0x${m.flags.toString(16)}`));
    } else if (m.fds.length > 0) {
      this.backendErrors.push(new FrontEndError('bad-message', `${name}: ${m.fds.length} file descriptors (none expected)`));
    } else if (m.request === BackendReq.CONFIG_CHANGE_MSG) {
      if (m.payload.length !== 0) this.backendErrors.push(new FrontEndError('bad-message', `${name}: ${m.payload.length} payload bytes (none expected)`));
      else {
        ok = true;
        this.generation = (this.generation + 1) >>> 0;
        this.counts.configChanges++;
        this.events?.config();
      }
    }
    // vhost-user.rst: the front-end answers when REPLY_ACK is negotiated and the back-end asked.
    if (m.flags & FLAG_NEED_REPLY && this.hasProtocolFeature(ProtocolFeature.REPLY_ACK) && this.backendChannel !== null) {
      void this.backendChannel.write(encodeMessage(m.request, VERSION | FLAG_REPLY, u64Payload(ok ? 0 : 1)), [], Date.now() + this.timeoutMs).catch(() => undefined);
    }
  }

  // ---------------------------------------------------------------- DriverTransport

  listen(events: TransportEvents): void {
    this.events = events;
  }

  async deviceId(): Promise<number> {
    return this.options.deviceId;
  }

  async getStatus(): Promise<number> {
    // Closed under a live driver: the device is gone for good (DEVICE_NEEDS_RESET, see close()).
    if (this.closed) return this.status;
    if (!this.hasProtocolFeature(ProtocolFeature.STATUS)) {
      this.requireConnection(); // a lost back-end has no status to read
      return this.status;
    }
    const v = (await this.ch.ask(Req.GET_STATUS, undefined, U64)).view.getBigUint64(0, true);
    if (v > 0xffn) throw this.badReply(this.ch, `GET_STATUS: ${v} is not a status byte`);
    return Number(v);
  }

  async setStatus(status: number): Promise<void> {
    if (status === 0) return this.resetDevice();
    const before = this.status;
    const rising = status & ~before;
    const hasStatus = this.hasProtocolFeature(ProtocolFeature.STATUS);
    if (rising & Status.FEATURES_OK) {
      try {
        await this.sendFeatures();
      } catch (err) {
        // Without STATUS a refused SET_FEATURES is how a back-end says no: FEATURES_OK stays clear.
        if (!(err instanceof FrontEndError && err.kind === 'refused') || hasStatus) throw err;
        status &= ~Status.FEATURES_OK;
      }
    }
    this.status = status;
    if (rising & Status.DRIVER_OK) await this.startDevice();
    if (hasStatus) await this.ch.tell(Req.SET_STATUS, u64Payload(status));
  }

  private async sendFeatures(): Promise<void> {
    const vhostBit = this.backendFeatures & pf(F_PROTOCOL_FEATURES);
    await this.ch.tell(Req.SET_FEATURES, u64Payload(this.driverFeatures | vhostBit));
  }

  /** What the device offers the driver: GET_FEATURES without the bits this transport cannot carry (HIDDEN_FEATURES). */
  async getDeviceFeatures(): Promise<bigint> {
    this.requireConnection();
    return this.backendFeatures & ~HIDDEN_FEATURES;
  }

  async setDriverFeatures(features: bigint): Promise<void> {
    if (features & ~(this.backendFeatures & ~HIDDEN_FEATURES)) throw new RangeError(`features 0x${features.toString(16)} include bits the device does not offer`);
    this.driverFeatures = features;
  }

  /** Moves on every CONFIG_CHANGE_MSG (vhost-user carries no generation of its own). */
  async configGeneration(): Promise<number> {
    return this.generation;
  }

  /**
   * GET_CONFIG from offset 0 up to the field's end, as QEMU always reads (some back-ends answer
   * every read from offset 0 whatever it asks: qemu-storage-daemon 7.2 does).
   */
  async readConfig(offset: number, size: 1 | 2 | 4 | 8): Promise<number | bigint> {
    const bytes = await this.getConfig(0, offset + size);
    const v = new DataView(bytes.buffer, bytes.byteOffset + offset, size);
    return size === 1 ? v.getUint8(0) : size === 2 ? v.getUint16(0, true) : size === 4 ? v.getUint32(0, true) : v.getBigUint64(0, true);
  }

  /** GET_CONFIG: `size` bytes of the device configuration space from `offset` (a 'refused' error when the back-end answers with none). */
  async getConfig(offset: number, size: number): Promise<Uint8Array> {
    if (!this.hasProtocolFeature(ProtocolFeature.CONFIG)) throw new FrontEndError('not-offered', 'the back-end does not offer VHOST_USER_PROTOCOL_F_CONFIG: no configuration space to read');
    if (!Number.isInteger(offset) || !Number.isInteger(size) || offset < 0 || size < 1 || offset + size > 256) throw new RangeError(`config bytes [${offset}, +${size}) are outside the 256 bytes GET_CONFIG can carry`);
    const p = new Uint8Array(12 + size);
    const v = new DataView(p.buffer);
    v.setUint32(0, offset, true);
    v.setUint32(4, size, true);
    const r = await this.ch.ask(Req.GET_CONFIG, p, {
      size: (got) => (got === 0 || got === 12 + size ? null : `a reply of ${got} payload bytes, expected ${12 + size} (or 0: refused)`),
    });
    // libvhost-user answers a refused GET_CONFIG with an empty payload.
    if (r.payload.length === 0) throw new FrontEndError('refused', `GET_CONFIG [${offset}, +${size}): the back-end refused it`);
    if (r.view.getUint32(0, true) !== offset || r.view.getUint32(4, true) !== size) {
      throw this.badReply(this.ch, `GET_CONFIG: asked [${offset}, +${size}), the reply says [${r.view.getUint32(0, true)}, +${r.view.getUint32(4, true)})`);
    }
    return r.payload.subarray(12);
  }

  async writeConfig(offset: number, size: 1 | 2 | 4 | 8, value: number | bigint): Promise<void> {
    const data = new Uint8Array(size);
    const v = new DataView(data.buffer);
    if (size === 1) v.setUint8(0, Number(value));
    else if (size === 2) v.setUint16(0, Number(value), true);
    else if (size === 4) v.setUint32(0, Number(value), true);
    else v.setBigUint64(0, BigInt(value), true);
    await this.setConfig(offset, data);
  }

  /** SET_CONFIG (flags 0: a write by the driver, not migration). */
  async setConfig(offset: number, data: Uint8Array): Promise<void> {
    if (!this.hasProtocolFeature(ProtocolFeature.CONFIG)) throw new FrontEndError('not-offered', 'the back-end does not offer VHOST_USER_PROTOCOL_F_CONFIG: no configuration space to write');
    if (offset < 0 || offset + data.length > 256) throw new RangeError(`config bytes [${offset}, +${data.length}) are outside the 256 bytes SET_CONFIG can carry`);
    const p = new Uint8Array(12 + data.length);
    const v = new DataView(p.buffer);
    v.setUint32(0, offset, true);
    v.setUint32(4, data.length, true);
    p.set(data, 12);
    await this.ch.tell(Req.SET_CONFIG, p);
  }

  async numQueues(): Promise<number> {
    return this.backendQueues;
  }

  async queueMaxSize(index: number): Promise<number> {
    return index >= 0 && index < this.backendQueues ? this.queueSize : 0;
  }

  async setupQueue(index: number, size: number, addrs: RingAddresses): Promise<void> {
    if (!Number.isInteger(index) || index < 0 || index >= this.backendQueues) throw new RangeError(`queue ${index} does not exist (${this.backendQueues} queues)`);
    const old = this.rings[index];
    if (old !== undefined) {
      if (old.state === 'running') await this.stopQueue(index);
      this.dropRing(old);
    }
    const kick = this.n.eventfd();
    const call = this.n.eventfd();
    const watch = this.n.watch(call, true, false, () => {
      if (this.n.eventfdRead(call) === 0) return;
      this.counts.calls++;
      this.events?.used(index);
    });
    // Packed rings start with both wrap counters set (2.8.1); split rings at index 0.
    const base = this.ringFormat === 'packed' ? encodeRingBase('packed', { avail: 0, availWrap: true, used: 0, usedWrap: true }) : 0;
    this.rings[index] = { index, size, addrs: { ...addrs }, kick, call, watch, state: 'configured', base };
  }

  /** Enables a queue: at DRIVER_OK the rings start; a queue enabled later (re-set up) starts at once. */
  async enableQueue(index: number): Promise<void> {
    const r = this.ring(index);
    if (this.status & Status.DRIVER_OK && r.state === 'configured') await this.startRing(r);
  }

  notify(index: number): void {
    const r = this.rings[index];
    if (r === undefined) return;
    this.counts.kicks++;
    this.n.eventfdWrite(r.kick, 1);
  }

  // ---------------------------------------------------------------- rings

  private ring(index: number): FrontRing {
    const r = this.rings[index];
    if (r === undefined) throw new FrontEndError('wrong-state', `queue ${index} is not set up`);
    return r;
  }

  /** The driver-side rings, as set up; `state` is where each stands on the back-end. */
  ringState(index: number): { state: RingState; base: number; size: number } | undefined {
    const r = this.rings[index];
    return r === undefined ? undefined : { state: r.state, base: r.base, size: r.size };
  }

  /** Gives the back-end what a start needs once per connection or device start: inflight buffer, memory. */
  private async startDevice(): Promise<void> {
    const rings = this.rings.filter((r): r is FrontRing => r !== undefined);
    if (this.hasProtocolFeature(ProtocolFeature.INFLIGHT_SHMFD) && rings.length > 0) await this.giveInflight(rings);
    await this.giveMemory();
    for (const r of rings) if (r.state === 'configured' || r.state === 'lost') await this.startRing(r);
  }

  /** GET_INFLIGHT_FD (once per device start; kept across back-end restarts), then SET_INFLIGHT_FD. */
  private async giveInflight(rings: readonly FrontRing[]): Promise<void> {
    if (this.inflight === null) {
      const numQueues = Math.max(...rings.map((r) => r.index)) + 1;
      const queueSize = Math.max(...rings.map((r) => r.size));
      const ask = new Uint8Array(24);
      const av = new DataView(ask.buffer);
      av.setUint16(16, numQueues, true);
      av.setUint16(18, queueSize, true);
      const r = await this.ch.ask(Req.GET_INFLIGHT_FD, ask, { size: 24, fds: 1 });
      const mmapSize = r.view.getBigUint64(0, true);
      const problem =
        mmapSize === 0n
          ? 'a buffer of 0 bytes'
          : r.view.getUint16(16, true) !== numQueues || r.view.getUint16(18, true) !== queueSize
            ? `asked ${numQueues} queues of ${queueSize}, the reply says ${r.view.getUint16(16, true)} of ${r.view.getUint16(18, true)}`
            : null;
      if (problem !== null) {
        closeAll(this.n, r.fds);
        throw this.badReply(this.ch, `GET_INFLIGHT_FD: ${problem}`);
      }
      this.inflight = { fd: r.fds[0], payload: r.payload.slice() };
    }
    await this.ch.tell(Req.SET_INFLIGHT_FD, this.inflight.payload, [this.inflight.fd]);
  }

  private dropInflight(): void {
    if (this.inflight === null) return;
    closeAll(this.n, [this.inflight.fd]);
    this.inflight = null;
  }

  /**
   * Guest memory: ADD_MEM_REG for each region the back-end does not have yet (memory slots),
   * else the whole table with SET_MEM_TABLE (at most 8 regions), as QEMU's vhost_user_set_mem_table.
   */
  private async giveMemory(): Promise<void> {
    if (this.hasProtocolFeature(ProtocolFeature.CONFIGURE_MEM_SLOTS)) {
      for (const r of this.ram.regions) {
        if (this.slotted.has(r)) continue;
        await this.ch.tell(Req.ADD_MEM_REG, singleRegionPayload(r), [r.memfd]);
        this.slotted.add(r);
      }
    } else {
      const regions = this.ram.regions;
      if (regions.length > MAX_MEM_REGIONS) throw new FrontEndError('memory', `${regions.length} regions: SET_MEM_TABLE carries at most ${MAX_MEM_REGIONS}`);
      await this.ch.tell(Req.SET_MEM_TABLE, memTablePayload(regions), regions.map((r) => r.memfd));
    }
    this.memoryGiven = true;
  }

  /** Starts ring `r` at its base: SET_VRING_NUM, BASE, ADDR, CALL, KICK (the ring starts with its kick fd), ENABLE. */
  private async startRing(r: FrontRing): Promise<void> {
    const ch = this.ch;
    await ch.tell(Req.SET_VRING_NUM, statePayload(r.index, r.size));
    await ch.tell(Req.SET_VRING_BASE, statePayload(r.index, r.base));
    const ram = this.ram;
    await ch.tell(Req.SET_VRING_ADDR, vringAddrPayload(r.index, ram.userAddr(r.addrs.desc, 1), ram.userAddr(r.addrs.used, 1), ram.userAddr(r.addrs.avail, 1)));
    await ch.tell(Req.SET_VRING_CALL, u64Payload(r.index), [r.call]);
    await ch.tell(Req.SET_VRING_KICK, u64Payload(r.index), [r.kick]);
    // Without VHOST_USER_F_PROTOCOL_FEATURES a ring is enabled as it starts; with it, only by SET_VRING_ENABLE.
    if (this.backendFeatures & pf(F_PROTOCOL_FEATURES)) await ch.tell(Req.SET_VRING_ENABLE, statePayload(r.index, 1));
    r.state = 'running';
    // Buffers made available while the ring was stopped or lost: the back-end looks on a kick.
    this.notify(r.index);
  }

  /**
   * Stops a running ring: GET_VRING_BASE, which the back-end answers once it has stopped and
   * nothing it took is still in progress. Returns the base (split: the next available index;
   * packed: avail and used positions with their wrap counters, encodeRingBase's layout) and
   * keeps it for startQueue().
   */
  async stopQueue(index: number): Promise<number> {
    const r = this.ring(index);
    if (r.state !== 'running') throw new FrontEndError('wrong-state', `queue ${index} is not running (${r.state})`);
    const reply = await this.ch.ask(Req.GET_VRING_BASE, statePayload(index, 0), STATE);
    const got = reply.view.getUint32(0, true);
    if (got !== index) throw this.badReply(this.ch, `GET_VRING_BASE: asked for queue ${index}, the reply is for queue ${got}`);
    const base = reply.view.getUint32(4, true);
    if (this.ringFormat === 'split' ? base > 0xffff : ((base & 0x7fff) >= r.size || ((base >>> 16) & 0x7fff) >= r.size)) {
      throw this.badReply(this.ch, `GET_VRING_BASE: base 0x${base.toString(16)} cannot be a position of a ${this.ringFormat} ring of ${r.size}`);
    }
    r.base = base;
    r.state = 'stopped';
    return base;
  }

  /** Restarts a stopped ring from `base` (default: where GET_VRING_BASE said it stopped). */
  async startQueue(index: number, base?: number): Promise<void> {
    const r = this.ring(index);
    if (r.state === 'running') throw new FrontEndError('wrong-state', `queue ${index} is running`);
    if (base !== undefined) r.base = base >>> 0;
    if (!(this.status & Status.DRIVER_OK)) throw new FrontEndError('wrong-state', `queue ${index}: the device is not live (DRIVER_OK)`);
    await this.giveMemory();
    await this.startRing(r);
  }

  private dropRing(r: FrontRing): void {
    r.watch.close();
    closeAll(this.n, [r.kick, r.call]);
    if (this.rings[r.index] === r) this.rings[r.index] = undefined;
  }

  /**
   * Status 0: stops the device as QEMU's vhost_dev_stop does (SET_STATUS 0, then GET_VRING_BASE
   * per running ring), then RESET_DEVICE when offered. Rings are forgotten (the driver sets
   * them up again), and so is the inflight buffer.
   */
  private async resetDevice(): Promise<void> {
    if (this.closed) {
      // Nothing left to tell a back-end: the reset is the front-end's alone.
      this.status = 0;
      this.driverFeatures = 0n;
      return;
    }
    const ch = this.ch;
    if (this.hasProtocolFeature(ProtocolFeature.STATUS)) await ch.tell(Req.SET_STATUS, u64Payload(0));
    for (const r of this.rings) if (r !== undefined && r.state === 'running') await this.stopQueue(r.index);
    if (this.hasProtocolFeature(ProtocolFeature.RESET_DEVICE)) await ch.tell(Req.RESET_DEVICE);
    for (const r of this.rings) if (r !== undefined) this.dropRing(r);
    this.rings = [];
    this.dropInflight();
    this.status = 0;
    this.driverFeatures = 0n;
  }

  // ---------------------------------------------------------------- memory

  /**
   * Plugs in guest RAM (a new memfd region at `guestAddr`): the drivers' memory has it at once,
   * the back-end by ADD_MEM_REG (memory slots) or a new SET_MEM_TABLE once it has memory.
   */
  async addMemory(guestAddr: number, size: number): Promise<RamRegion> {
    this.requireConnection();
    const r = this.ram.add(guestAddr, size, this.hasProtocolFeature(ProtocolFeature.CONFIGURE_MEM_SLOTS) ? this.maxMemSlots : MAX_MEM_REGIONS);
    if (this.memoryGiven) await this.giveMemory();
    return r;
  }

  /**
   * Unplugs the region at `guestAddr`: REM_MEM_REG (with its fd, as QEMU 7.2 sends it and
   * libvhost-user 7.2 requires) or a new SET_MEM_TABLE; then unmaps it here. The drivers must
   * hold no buffers in it.
   */
  async removeMemory(guestAddr: number): Promise<void> {
    this.requireConnection();
    const r = this.ram.remove(guestAddr);
    try {
      if (this.hasProtocolFeature(ProtocolFeature.CONFIGURE_MEM_SLOTS)) {
        if (this.slotted.delete(r)) await this.ch.tell(Req.REM_MEM_REG, singleRegionPayload(r), [r.memfd]);
      } else if (this.memoryGiven) await this.giveMemory();
    } finally {
      this.ram.release(r);
    }
  }

  // ---------------------------------------------------------------- the end

  /**
   * Ends the session: running rings are stopped (GET_VRING_BASE, bounded) when the back-end is
   * still there, then the connection, eventfds, inflight buffer and guest RAM are let go. A
   * driver still live over the front-end then reads DEVICE_NEEDS_RESET (after a configuration
   * change notification) and fails its pending requests instead of waiting for them.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.connected) {
      try {
        for (const r of this.rings) if (r !== undefined && r.state === 'running') await this.stopQueue(r.index);
      } catch {
        // the back-end failed to stop: it is let go all the same
      }
    }
    const live = (this.status & Status.DRIVER_OK) !== 0;
    this.release();
    if (live) {
      // A driver still running over it would wait forever for buffers nobody will use: the
      // device now needs a reset (2.1.2), told as a configuration change (basic.status.device.3),
      // and the driver fails what it has in flight (basic.status.driver.4).
      this.status |= Status.DEVICE_NEEDS_RESET;
      this.events?.config();
    }
  }

  private release(): void {
    this.closed = true;
    this.channel?.close();
    this.backendChannel?.close(new FrontEndError('disconnected', 'the front-end closed the connection'));
    for (const r of this.rings) if (r !== undefined) this.dropRing(r);
    this.rings = [];
    this.dropInflight();
    this.ram.close();
  }
}

function backendRequestName(request: number): string {
  const name = Object.entries(BackendReq).find(([, v]) => v === request)?.[0];
  return name === undefined ? `back-end request ${request}` : `VHOST_USER_BACKEND_${name}`;
}
