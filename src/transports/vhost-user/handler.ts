/**
 * The front-end's messages, one method each (as rust-vmm/vhost's backend request handler),
 * over the state of one session: protocol features, the rings, guest memory, the dirty log, the
 * inflight buffer, the back-end request channel. A table maps each request to its method and
 * the payload shape protocol.ts decoded it into.
 *
 * Every method checks everything it needs before it changes anything: a check that fails
 * throws a VhostUserError, and one marked `refused` left the session as it was (the front-end
 * may be told with a non-zero REPLY_ACK and go on). A method answers with what to send back:
 * nothing (REPLY_ACK's 0 when asked), a reply, or a reply that waits until the device has no
 * request in progress (a ring stop, a memory region removal).
 *
 * The device core's driver-facing state machine is driven from the messages: SET_FEATURES
 * performs ACKNOWLEDGE / DRIVER / features / FEATURES_OK, and the first ring start (or
 * SET_STATUS with DRIVER_OK) DRIVER_OK: the front-end owns the guest-visible status.
 */
import type { DeviceHost, VirtioDevice } from '../../device/device.js';
import { isEventfd, type NativeAddon } from '../../native/index.js';
import { Feature, Status } from '../../spec/constants.js';
import type { RingFormat } from '../../virtqueue/queue.js';
import { DirtyLog, type LoggedRing } from './dirty-log.js';
import { asVhostUserError, refusal, VhostUserError, messageOf } from './errors.js';
import { InflightBuffer, inflightQueueSize } from './inflight.js';
import { checkFdRange, hex, MAX_MEM_SLOTS, MemorySlots, sealAgainstShrink } from './mem-slots.js';
import {
  BackendReq,
  F_LOG_ALL,
  F_PROTOCOL_FEATURES,
  LOG_PAGE,
  ProtocolFeature,
  Req,
  VRING_F_LOG,
  configPayload,
  encodeBackendRequest,
  inflightPayload,
  requestName,
  statePayload,
  u64Payload,
  type Decoded,
  type MemRegion,
  type Message,
  type Session,
} from './protocol.js';
import { MAX_RING, VhostUserRing } from './ring.js';

/** Protocol features this back-end implements. */
export const BACKEND_PROTOCOL_FEATURES =
  (1n << BigInt(ProtocolFeature.MQ)) |
  (1n << BigInt(ProtocolFeature.REPLY_ACK)) |
  (1n << BigInt(ProtocolFeature.CONFIG)) |
  (1n << BigInt(ProtocolFeature.RESET_DEVICE)) |
  (1n << BigInt(ProtocolFeature.STATUS)) |
  (1n << BigInt(ProtocolFeature.BACKEND_REQ)) |
  (1n << BigInt(ProtocolFeature.CONFIGURE_MEM_SLOTS)) |
  (1n << BigInt(ProtocolFeature.LOG_SHMFD)) |
  (1n << BigInt(ProtocolFeature.INFLIGHT_SHMFD));

const LOG_ALL = 1n << BigInt(F_LOG_ALL);
const PROTOCOL_FEATURES = 1n << BigInt(F_PROTOCOL_FEATURES);

/** What a method answers. */
export type Answer =
  /** Nothing to send, but REPLY_ACK's 0 when the front-end asked for it. */
  | { kind: 'ack' }
  /** A reply (its fds are closed once sent). */
  | { kind: 'reply'; payload: Uint8Array; fds?: number[] }
  /**
   * Once the device has no request in progress (or after the wait's limit: `settled` false),
   * `then` gives the answer. Meanwhile no message is read: later ones wait in the socket.
   */
  | { kind: 'after-settled'; what: string; then(settled: boolean): Answer };

const ACK: Answer = { kind: 'ack' };
const reply = (payload: Uint8Array, fds?: number[]): Answer => ({ kind: 'reply', payload, fds });
const afterSettled = (what: string, then: (settled: boolean) => Answer): Answer => ({ kind: 'after-settled', what, then });

/** The fds that came with a message: a method takes those it keeps; the rest are closed after it. */
export class MessageFds {
  constructor(private readonly list: number[]) {}

  /** The first fd, still the message's (closed after the method). */
  peek(): number {
    return this.list[0];
  }

  /** The fds, still the message's. */
  all(): readonly number[] {
    return this.list;
  }

  /** The first fd, now the caller's. */
  take(): number {
    const fd = this.list.shift();
    if (fd === undefined) throw new VhostUserError('internal', 'a message without the fd its rule requires');
    return fd;
  }

  /** Closes those not taken. */
  closeRest(n: NativeAddon): void {
    for (const fd of this.list.splice(0)) n.close(fd);
  }
}

type MessageKind = Message['kind'];
type MessageOf<K extends MessageKind> = Extract<Message, { kind: K }>;
interface Entry {
  kind: MessageKind;
  run(m: Message, fds: MessageFds): Answer;
}

/** What the session needs of the back-end around it. */
export interface SessionHost {
  /** The transport the device reaches the driver through (attached with guest memory). */
  readonly deviceHost: DeviceHost;
  /** Ends the connection with this reason. */
  end(reason: string, error: VhostUserError): void;
  /** Wraps an fd callback: whatever it throws ends the connection, named by `what`. */
  guard(what: string, fn: (value: number) => void): (value: number) => void;
  info(message: string): void;
  warn(message: string): void;
}

export class VhostUserHandler {
  readonly session: Session;
  readonly rings: readonly VhostUserRing[];
  private features = 0n;
  private live = false;
  private backendReqFd = -1;
  private inflight: InflightBuffer | null = null;
  private readonly mem: MemorySlots;
  private readonly dirty: DirtyLog;
  /** Whether this session's unsealable memory was logged (once: every region would say it). */
  private unsealedLogged = false;
  private readonly table: ReadonlyMap<number, Entry>;

  constructor(
    readonly device: VirtioDevice,
    private readonly n: NativeAddon,
    private readonly host: SessionHost,
  ) {
    this.session = { protocolFeaturesOffered: true, protocolFeatures: 0n, numQueues: device.numQueues };
    this.rings = Array.from({ length: device.numQueues }, (_, i) => new VhostUserRing(i, n));
    const unsealable = (what: string) => this.unsealable(what);
    this.mem = new MemorySlots(n, unsealable);
    this.dirty = new DirtyLog(
      n,
      () => this.rings,
      // Deferred: the write is inside the device's work.
      (err) => queueMicrotask(() => this.host.end(err.message, err)),
    );
    const on = <K extends MessageKind>(request: number, kind: K, method: (m: MessageOf<K>, fds: MessageFds) => Answer): [number, Entry] => [
      request,
      {
        kind,
        // decode() gives each request one payload shape (protocol.ts); `kind` says which.
        run: (m, fds) => method(m as MessageOf<K>, fds),
      },
    ];
    this.table = new Map<number, Entry>([
      on(Req.GET_FEATURES, 'none', () => this.getFeatures()),
      on(Req.SET_FEATURES, 'u64', (m) => this.setFeatures(m.value)),
      on(Req.SET_OWNER, 'none', () => ACK),
      on(Req.RESET_OWNER, 'none', () => ACK),
      on(Req.GET_PROTOCOL_FEATURES, 'none', () => this.getProtocolFeatures()),
      on(Req.SET_PROTOCOL_FEATURES, 'u64', (m) => this.setProtocolFeatures(m.value)),
      on(Req.GET_QUEUE_NUM, 'none', () => this.getQueueNum()),
      on(Req.RESET_DEVICE, 'none', () => this.resetDeviceMessage()),
      on(Req.SET_STATUS, 'u64', (m) => this.setStatus(m.value)),
      on(Req.GET_STATUS, 'none', () => this.getStatus()),
      on(Req.SET_BACKEND_REQ_FD, 'none', (_m, fds) => this.setBackendReqFd(fds)),
      on(Req.SET_MEM_TABLE, 'memory', (m, fds) => this.setMemTable(m.regions, fds)),
      on(Req.GET_MAX_MEM_SLOTS, 'none', () => this.getMaxMemSlots()),
      on(Req.ADD_MEM_REG, 'region', (m, fds) => this.addMemReg(m.region, fds)),
      on(Req.REM_MEM_REG, 'region', (m) => this.remMemReg(m.region)),
      on(Req.SET_LOG_BASE, 'log', (m, fds) => this.setLogBase(m.size, m.offset, fds)),
      on(Req.SET_LOG_FD, 'none', () => this.setLogFd()),
      on(Req.SET_VRING_NUM, 'state', (m) => this.setVringNum(m.index, m.num)),
      on(Req.SET_VRING_ADDR, 'addr', (m) => this.setVringAddr(m)),
      on(Req.SET_VRING_BASE, 'state', (m) => this.setVringBase(m.index, m.num)),
      on(Req.GET_VRING_BASE, 'state', (m) => this.getVringBase(m.index)),
      on(Req.SET_VRING_KICK, 'vring-fd', (m, fds) => this.setVringKick(m.index, m.noFd, fds)),
      on(Req.SET_VRING_CALL, 'vring-fd', (m, fds) => this.setVringCall(m.index, m.noFd, fds)),
      on(Req.SET_VRING_ERR, 'vring-fd', (m, fds) => this.setVringErr(m.index, m.noFd, fds)),
      on(Req.SET_VRING_ENABLE, 'state', (m) => this.setVringEnable(m.index, m.num)),
      on(Req.GET_INFLIGHT_FD, 'inflight', (m) => this.getInflightFd(m.numQueues, m.queueSize)),
      on(Req.SET_INFLIGHT_FD, 'inflight', (m, fds) => this.setInflightFd(m.mmapSize, m.mmapOffset, m.numQueues, m.queueSize, fds)),
      on(Req.GET_CONFIG, 'config', (m) => this.getConfig(m.offset, m.size, m.flags)),
      on(Req.SET_CONFIG, 'config', (m) => this.setConfig(m.offset, m.size, m.data)),
    ]);
  }

  /** The message's method (the fds it does not take are closed after it, whatever happens). */
  handle(d: Decoded, fds: MessageFds): Answer {
    try {
      const entry = this.table.get(d.header.request);
      if (entry === undefined) throw new VhostUserError('unsupported-request', `${requestName(d.header.request)}: not served`);
      if (entry.kind !== d.message.kind) throw new VhostUserError('internal', `${requestName(d.header.request)} decoded as ${d.message.kind}, handled as ${entry.kind}`);
      return entry.run(d.message, fds);
    } finally {
      fds.closeRest(this.n);
    }
  }

  /** The features the front-end set (SET_FEATURES, without the vhost-user bits). */
  get acknowledgedFeatures(): bigint {
    return this.features;
  }

  /** The ring format the features chose. */
  get ringFormat(): RingFormat {
    return (this.features & (1n << BigInt(Feature.RING_PACKED))) !== 0n ? 'packed' : 'split';
  }

  // ---------------------------------------------------------------- features

  /** GET_FEATURES: the device's features, VHOST_USER_F_PROTOCOL_FEATURES and VHOST_F_LOG_ALL. */
  getFeatures(): Answer {
    return reply(u64Payload(this.offeredFeatures()));
  }

  /**
   * SET_FEATURES: VHOST_F_LOG_ALL switches dirty logging (a migration starting or ending: the
   * device is not reset, its rings keep running); the rest are the device's features.
   */
  setFeatures(value: bigint): Answer {
    // basic.features.driver.1: only offered bits. Refused before anything changes (QEMU's
    // vhost-user-blk filters the guest's features by what the back-end offered; vhost-user-rng
    // forwards the guest's, which are a subset of the virtio-pci defaults this device offers).
    const unoffered = value & ~this.offeredFeatures();
    if (unoffered !== 0n) {
      throw refusal('feature-not-offered', `features never offered: ${this.device.describeFeatures(unoffered).join(', ')} (0x${unoffered.toString(16)})`);
    }
    const logAll = (value & LOG_ALL) !== 0n;
    const features = value & ~(PROTOCOL_FEATURES | LOG_ALL);
    if (logAll && !this.dirty.logAll) {
      const problem = this.dirty.coverageProblem(this.dirty.size, this.mem.slots);
      if (problem !== null) throw problem;
    }
    const same = features === this.features && (this.device.status & Status.FEATURES_OK) !== 0;
    const onlyLogging = logAll !== this.dirty.logAll && same;
    // QEMU's multiqueue vhost-user-net drives one connection with one vhost device per queue
    // pair, and each sends SET_FEATURES (with the same features) before it sets up its rings:
    // while rings of this session are set up, the same features again are not a re-negotiation
    // (a reset would drop the pairs already started). With every ring stopped, it is one.
    const anotherDevice = same && this.rings.some((r) => r.armed);
    if (!onlyLogging && !anotherDevice) {
      this.negotiate(features, (value & PROTOCOL_FEATURES) !== 0n);
      // The device may refuse a set the bits alone allow (no VERSION_1, a feature without the
      // one it needs): its verdict is logged; no ring of this session could ever run.
      if ((this.device.status & Status.FEATURES_OK) === 0) {
        throw new VhostUserError('features-refused', `the device refused the features 0x${features.toString(16)} (FEATURES_OK not accepted; see its verdict)`);
      }
    }
    if (logAll !== this.dirty.logAll) {
      this.host.info(`vhost-user: dirty logging ${logAll ? 'on' : 'off'}${logAll || this.dirty.size === undefined ? '' : ` (${this.dirty.writes} writes logged)`}`);
    }
    this.dirty.setLogAll(logAll);
    return ACK;
  }

  /** GET_PROTOCOL_FEATURES: CONFIG only for devices with a config space (QEMU warns otherwise). */
  getProtocolFeatures(): Answer {
    return reply(u64Payload(this.offeredProtocolFeatures()));
  }

  /** SET_PROTOCOL_FEATURES: only offered bits. */
  setProtocolFeatures(value: bigint): Answer {
    const unoffered = value & ~this.offeredProtocolFeatures();
    if (unoffered !== 0n) throw refusal('feature-not-offered', `protocol features 0x${unoffered.toString(16)} were never offered`);
    this.session.protocolFeatures = value;
    return ACK;
  }

  /** GET_QUEUE_NUM (VHOST_USER_PROTOCOL_F_MQ). */
  getQueueNum(): Answer {
    return reply(u64Payload(this.device.numQueues));
  }

  // ---------------------------------------------------------------- device status

  /**
   * RESET_DEVICE: a reset, not a stop: requests in progress are dropped (host bounce buffers
   * keep late I/O out of guest memory) and every ring starts over.
   */
  resetDeviceMessage(): Answer {
    for (const ring of this.rings) ring.reset();
    this.resetDevice();
    return ACK;
  }

  /**
   * SET_STATUS (VHOST_USER_PROTOCOL_F_STATUS): the front-end's view of the device status.
   * The back-end already walks the device through ACKNOWLEDGE..FEATURES_OK on SET_FEATURES and
   * to DRIVER_OK on the first kick, so only three writes change anything here: 0 resets the
   * device (QEMU's stop, before it asks where each ring stands: requests in progress finish
   * into the used rings first, so a later GET_VRING_BASE still answers where each ring stood;
   * the answer waits for both), FAILED is recorded, and DRIVER_OK makes a negotiated device
   * live before any kick. Bits the device has not reached (FEATURES_OK before SET_FEATURES) are
   * not invented: GET_STATUS reports what the device really holds, which is how the front-end
   * learns it.
   */
  setStatus(value: bigint): Answer {
    const status = Number(value & 0xffn);
    if (status === 0) {
      return this.stopRings(
        this.rings.map((_, i) => i),
        () => {
          this.resetDevice();
          return ACK;
        },
      );
    }
    const dev = this.device;
    const now = dev.status;
    if (status & Status.FAILED && !(now & Status.FAILED)) {
      dev.setStatus(now | Status.FAILED);
    } else if (status & Status.DRIVER_OK && !this.live && now & Status.FEATURES_OK && !(now & Status.FAILED)) {
      this.live = true;
      dev.setStatus(now | Status.DRIVER_OK);
    }
    return ACK;
  }

  /** GET_STATUS: what the device holds. */
  getStatus(): Answer {
    return reply(u64Payload(this.device.readStatus()));
  }

  /** SET_BACKEND_REQ_FD: the channel for back-end requests (CONFIG_CHANGE_MSG). */
  setBackendReqFd(fds: MessageFds): Answer {
    const fd = fds.take();
    if (this.backendReqFd >= 0) this.n.close(this.backendReqFd);
    this.backendReqFd = fd;
    return ACK;
  }

  // ---------------------------------------------------------------- memory

  /**
   * SET_MEM_TABLE: the whole table replaced; the device re-attaches (its queues are made anew,
   * the state machine stays). A refused table leaves the one in use. A started ring would
   * silently stop moving, so the rings must be stopped (QEMU replaces the table only with its
   * rings stopped; with CONFIGURE_MEM_SLOTS it never sends one after the first).
   */
  setMemTable(regions: MemRegion[], fds: MessageFds): Answer {
    const running = this.rings.find((r) => r.started);
    if (running !== undefined) throw refusal('ring-state', `ring ${running.index} is running: stop it (GET_VRING_BASE) before replacing the memory table`);
    this.mem.checkTable(regions, fds.all());
    if (this.dirty.logging) this.refuseIf(this.dirty.coverageProblem(this.dirty.size, regions));
    const memory = this.mem.replaceTable(regions, fds.all());
    this.dirty.attach(memory);
    this.device.attach(memory, this.host.deviceHost);
    return ACK;
  }

  /** GET_MAX_MEM_SLOTS. */
  getMaxMemSlots(): Answer {
    return reply(u64Payload(MAX_MEM_SLOTS));
  }

  /**
   * ADD_MEM_REG (VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS): one more region, added in place:
   * the device and its running rings keep the memory they have. The first one attaches the
   * device (as SET_MEM_TABLE does).
   */
  addMemReg(r: MemRegion, fds: MessageFds): Answer {
    const fd = fds.peek();
    this.mem.checkAdd(r, fd);
    if (this.dirty.logging) this.refuseIf(this.dirty.coverageProblem(this.dirty.size, [r]));
    const { memory, created, again } = this.mem.add(r, fd);
    // The same region again: QEMU 7.2's multiqueue vhost-user-net adds each region once per
    // queue pair on the one connection (Slot.refs); nothing changes.
    if (again) return ACK;
    this.host.info(`vhost-user: memory region [${hex(r.guestAddr)}, +${hex(r.size)}) added (front-end address ${hex(r.userAddr)})`);
    if (created) {
      this.dirty.attach(memory);
      this.device.attach(memory, this.host.deviceHost);
    }
    return ACK;
  }

  /**
   * REM_MEM_REG: the region with this guest address, size and front-end address goes, and is
   * unmapped. A started ring living in it is refused (its used ring would be written into
   * memory that is gone). Requests in progress may have buffers in it: the rings take no new
   * request meanwhile, and the answer (and later messages) wait until those finish.
   */
  remMemReg(r: MemRegion): Answer {
    const slot = this.mem.find(r);
    // Added more than once (QEMU's multiqueue net, Slot.refs): one reference less, still mapped.
    if (slot.refs > 1) {
      this.mem.remove(slot);
      return ACK;
    }
    const inSlot = (a: number) => a >= slot.guestAddr && a < slot.guestAddr + slot.size;
    for (const ring of this.rings) {
      if (ring.started && (inSlot(ring.desc) || inSlot(ring.avail) || inSlot(ring.used))) {
        throw new VhostUserError('memory-table', `ring ${ring.index} lives in the region at [${hex(slot.guestAddr)}, +${hex(slot.size)}): stop the ring (GET_VRING_BASE) before removing its memory`);
      }
    }
    const paused = this.rings.filter((ring) => ring.started && !ring.paused);
    for (const ring of paused) ring.pause(this.device.queues[ring.index]);
    return afterSettled('REM_MEM_REG', (settled) => {
      if (!settled) throw new VhostUserError('settle-timeout', `requests in progress did not finish in ${SETTLE_TIMEOUT_MS} ms; the region cannot be removed under them`);
      this.mem.remove(slot);
      this.host.info(`vhost-user: memory region [${hex(slot.guestAddr)}, +${hex(slot.size)}) removed`);
      // Kicks taken while paused found nothing: look again.
      for (const ring of paused) if (ring.resume(this.device.queues[ring.index])) this.device.notify(ring.index);
      return ACK;
    });
  }

  // ---------------------------------------------------------------- dirty log

  /** SET_LOG_BASE (VHOST_USER_PROTOCOL_F_LOG_SHMFD): maps the log, replacing any earlier one. */
  setLogBase(size: number, offset: number, fds: MessageFds): Answer {
    const fd = fds.peek();
    checkFdRange(fd, offset, size, 'dirty log');
    this.dirty.checkBase(size, this.mem.slots);
    sealAgainstShrink(this.n, fd, 'dirty log', (what) => this.unsealable(what));
    this.dirty.map(fd, offset, size);
    this.host.info(`vhost-user: dirty log set: ${size} bytes, covering guest addresses below ${hex(size * 8 * LOG_PAGE)}`);
    return reply(u64Payload(0)); // with LOG_SHMFD the front-end waits for this reply
  }

  /** SET_LOG_FD: the log is read by the front-end when it syncs; no eventfd is needed (the fd is closed). */
  setLogFd(): Answer {
    return ACK;
  }

  // ---------------------------------------------------------------- rings

  /**
   * SET_VRING_NUM against the ring format the features chose and the device's largest queue:
   * split rings take a power of two (split.virtqueues.driver.1), packed rings any size from 1
   * (packed.ring.driver.2), both at most 32768 and at most queueMaxSize. A size taken unchecked
   * would make a ring the device can never start (0) or walk wrongly (100 on a split ring).
   */
  setVringNum(index: number, num: number): Answer {
    const ring = this.rings[index];
    ring.checkStopped();
    const fmt = this.ringFormat;
    const max = Math.min(MAX_RING, this.device.queueMaxSize);
    // Each refusal names the one rule the size broke: a power of two larger than the device's
    // largest queue (QEMU's default queue-size=128 against `serve --queue-size 64`) is refused
    // for its size, not for its shape, so the operator knows which side to change.
    if (num === 0) throw refusal('ring-size', `${fmt} ring size 0: a ring holds at least one descriptor`);
    if (fmt === 'split' && (num & (num - 1)) !== 0) throw refusal('ring-size', `split ring size ${num} is not a power of two`);
    if (num > max) {
      const limit =
        max === this.device.queueMaxSize
          ? `the device's largest queue, ${max} (\`serve --queue-size ${max}\`; QEMU's queue-size= must not exceed it)`
          : `${max}, the largest ring there is`;
      throw refusal('ring-size', `${fmt} ring size ${num} is larger than ${limit}`);
    }
    ring.size = num;
    return ACK;
  }

  /**
   * SET_VRING_BASE. Split: the next available index (16 bits). Packed: avail slot and wrap
   * counter in bits 0-15, used in 16-31 (checked against the ring size when the ring starts).
   */
  setVringBase(index: number, num: number): Answer {
    const ring = this.rings[index];
    ring.checkStopped();
    if (this.ringFormat === 'split' && num > 0xffff) throw refusal('ring-base', `split ring base ${num} is not a 16-bit index`);
    ring.base = num >>> 0;
    return ACK;
  }

  /**
   * SET_VRING_ADDR: ring addresses are front-end virtual addresses, translated through the
   * regions (all three first, then the ring changes: nothing half-set on a refusal). Their full
   * extent is checked against guest memory when the ring starts (a fatal verdict otherwise).
   */
  setVringAddr(m: MessageOf<'addr'>): Answer {
    const memory = this.mem.memory;
    if (memory === null) throw refusal('ring-address', 'ring addresses before any memory table');
    const ring = this.rings[m.index];
    if ((m.flags & ~VRING_F_LOG) !== 0) throw refusal('ring-address', `unknown ring address flags 0x${m.flags.toString(16)}`);
    let desc: number, avail: number, used: number;
    try {
      desc = memory.userToGuest(m.desc, 16);
      avail = memory.userToGuest(m.avail, 4);
      used = memory.userToGuest(m.used, 4);
    } catch (err) {
      throw refusal('ring-address', messageOf(err));
    }
    if (ring.started && (desc !== ring.desc || avail !== ring.avail || used !== ring.used)) {
      // QEMU sends SET_VRING_ADDR to a running ring only to switch its logging flag.
      throw refusal('ring-state', `ring ${m.index} is running: its addresses cannot move`);
    }
    const logUsed = (m.flags & VRING_F_LOG) !== 0;
    if (this.dirty.logging) {
      const after: LoggedRing = { index: ring.index, logUsed, logAddr: m.log, used, deviceAreaLength: ring.deviceAreaLength };
      const problem = this.dirty.coverageProblem(this.dirty.size, [], this.rings.map((r) => (r === ring ? after : r)));
      if (problem !== null) throw problem;
    }
    ring.desc = desc;
    ring.avail = avail;
    ring.used = used;
    ring.logUsed = logUsed;
    ring.logAddr = m.log;
    return ACK;
  }

  /** GET_VRING_BASE: stops the ring; the reply says where it stopped, once its requests in progress are used. */
  getVringBase(index: number): Answer {
    return this.stopRings([index], () => reply(statePayload(index, this.rings[index].base)));
  }

  /** SET_VRING_KICK: the ring's kick eventfd; the ring starts on its first kick. */
  setVringKick(index: number, noFd: boolean, fds: MessageFds): Answer {
    const fd = noFd ? -1 : this.eventfdFrom(fds, 'kick');
    this.rings[index].armed = true;
    this.rings[index].setKick(
      fd,
      () => this.kicked(index),
      (fn) => this.host.guard(`ring ${index} kick`, fn),
    );
    return ACK;
  }

  /** SET_VRING_CALL: the ring's call eventfd (used-buffer notifications). */
  setVringCall(index: number, noFd: boolean, fds: MessageFds): Answer {
    this.rings[index].setCall(noFd ? -1 : this.eventfdFrom(fds, 'call'));
    return ACK;
  }

  /** SET_VRING_ERR: the ring's error eventfd, signalled when the device fails (QEMU logs it). */
  setVringErr(index: number, noFd: boolean, fds: MessageFds): Answer {
    this.rings[index].setErr(noFd ? -1 : this.eventfdFrom(fds, 'error'));
    return ACK;
  }

  /**
   * SET_VRING_ENABLE: kicks that came while the ring was disabled are served now (QEMU enables
   * the rings after it has set their kick fds, and the guest may have kicked in between).
   */
  setVringEnable(index: number, num: number): Answer {
    if (num > 1) throw refusal('ring-state', `ring enable value ${num} (0 or 1)`);
    const ring = this.rings[index];
    const was = ring.enabled;
    ring.enabled = num === 1;
    // The device type hears of it (DeviceType.queueEnabled): QEMU's vhost-user-net enables the
    // queue pairs the guest set through the control queue QEMU serves itself.
    if (ring.enabled !== was) this.device.setQueueEnabled(index, ring.enabled);
    if (ring.enabled && !was && ring.started) this.device.notify(index);
    return ACK;
  }

  // ---------------------------------------------------------------- inflight

  /**
   * GET_INFLIGHT_FD: a new zeroed buffer for `numQueues` rings of `queueSize`, shared with the
   * front-end, which keeps it across back-end restarts. Its layout follows the negotiated ring
   * format (QEMU sends SET_FEATURES first for this reason).
   */
  getInflightFd(numQueues: number, queueSize: number): Answer {
    const shape = InflightBuffer.shapeProblem(numQueues, queueSize, this.device.numQueues);
    if (shape !== null) throw shape;
    const size = numQueues * inflightQueueSize(this.ringFormat, queueSize);
    const fd = this.n.memfdCreate('virtio-ts-inflight', size);
    try {
      this.useInflight(fd, 0, size, numQueues, queueSize);
    } catch (err) {
      this.n.close(fd);
      throw err;
    }
    return reply(inflightPayload(size, 0, numQueues, queueSize), [fd]);
  }

  /** SET_INFLIGHT_FD: the buffer to track in (from GET_INFLIGHT_FD, or kept by the front-end from a previous back-end). */
  setInflightFd(size: number, offset: number, numQueues: number, queueSize: number, fds: MessageFds): Answer {
    const shape = InflightBuffer.shapeProblem(numQueues, queueSize, this.device.numQueues);
    if (shape !== null) throw shape;
    const need = numQueues * inflightQueueSize(this.ringFormat, queueSize);
    if (size < need) throw new VhostUserError('inflight', `inflight buffer of ${size} bytes is smaller than ${numQueues} queues of ${queueSize} need (${need})`);
    const fd = fds.peek();
    checkFdRange(fd, offset, need, 'inflight buffer');
    this.useInflight(fd, offset, need, numQueues, queueSize);
    this.host.info(`vhost-user: inflight buffer set: ${numQueues} queue(s) of ${queueSize}`);
    return ACK;
  }

  // ---------------------------------------------------------------- config space

  /**
   * GET_CONFIG: the front-end fills its own copy of the config space (QEMU does so before the
   * guest negotiates): a raw read, not a guest driver access the monitor should judge.
   */
  getConfig(offset: number, size: number, flags: number): Answer {
    return reply(configPayload(offset, size, flags, this.device.config));
  }

  /** SET_CONFIG: the guest driver's writes, byte by byte (the device judges them). */
  setConfig(offset: number, size: number, data: Uint8Array): Answer {
    for (let i = 0; i < size; i++) this.device.writeConfig(offset + i, 1, data[i]);
    return ACK;
  }

  // ---------------------------------------------------------------- not messages

  /**
   * A kick on ring `index`: a started ring is served; a stopped one starts (vhost-user.rst "Ring
   * states"). A start that cannot be right (its base, its inflight region) ends the connection.
   */
  kicked(index: number): void {
    const ring = this.rings[index];
    if (ring.started) {
      if (ring.enabled) this.device.notify(index);
      return;
    }
    try {
      ring.start({
        device: this.device,
        format: this.ringFormat,
        memory: this.mem.memory,
        region: this.inflight?.regions[index],
        makeLive: () => this.makeLive(),
        log: this.host,
      });
    } catch (err) {
      const e = asVhostUserError(err);
      this.host.end(`ring ${index}: ${e.message}`, e);
    }
  }

  /**
   * A configuration change notification (spec 2.5; basic.status.device.3 for
   * DEVICE_NEEDS_RESET) goes to the front-end as CONFIG_CHANGE_MSG on the back-end request
   * channel; QEMU then re-reads the config space with GET_CONFIG and interrupts the guest.
   * No reply is asked for: the device must not wait on the front-end from inside its own work.
   */
  configChanged(): void {
    if (this.backendReqFd < 0) return;
    try {
      if (this.n.sendmsg(this.backendReqFd, encodeBackendRequest(BackendReq.CONFIG_CHANGE_MSG)) < 0) {
        this.host.warn('vhost-user: CONFIG_CHANGE_MSG not sent: the front-end is not reading its back-end request channel');
      }
    } catch (err) {
      // A front-end that stopped reading its channel loses the notification, not the device.
      this.host.warn(`vhost-user: CONFIG_CHANGE_MSG not sent: ${messageOf(err)}`);
    }
  }

  /** Every mapping of the session (guest memory, dirty log, inflight buffer), to ask the addon whether one faulted. */
  mappings(): ArrayBuffer[] {
    const log = this.dirty.mapping();
    return [...this.mem.mappings(), ...(log !== null ? [log] : []), ...(this.inflight !== null ? [this.inflight.mapping] : [])];
  }

  /** The session ends: every fd closed, the device reset, every mapping unmapped (in that order: the device touches no unmapped memory). */
  close(): void {
    for (const ring of this.rings) ring.close();
    if (this.backendReqFd >= 0) this.n.close(this.backendReqFd);
    this.backendReqFd = -1;
    this.device.reset();
    this.dirty.setLogAll(false); // unmaps the log; the memory's write hook goes with it
    this.dirty.unmap();
    this.dirty.attach(null);
    this.mem.clear();
    this.unmapInflight();
  }

  // ---------------------------------------------------------------- helpers

  /** What GET_FEATURES answers. */
  private offeredFeatures(): bigint {
    return this.device.offered | PROTOCOL_FEATURES | LOG_ALL;
  }

  /** What GET_PROTOCOL_FEATURES answers. */
  private offeredProtocolFeatures(): bigint {
    return this.device.config.length > 0 ? BACKEND_PROTOCOL_FEATURES : BACKEND_PROTOCOL_FEATURES & ~(1n << BigInt(ProtocolFeature.CONFIG));
  }

  /** The device's feature negotiation (SET_FEATURES without the vhost-user bits). */
  private negotiate(features: bigint, protocolFeatures: boolean): void {
    const dev = this.device;
    if (dev.status & Status.FEATURES_OK) {
      // Re-negotiation: the device starts over, but the inflight record stays (a front-end
      // that did not stop the rings first may have left requests the next start must serve).
      dev.reset();
      this.live = false;
    }
    dev.setStatus(Status.ACKNOWLEDGE);
    dev.setStatus(Status.ACKNOWLEDGE | Status.DRIVER);
    dev.setDriverFeatures(features);
    dev.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
    this.features = features;
    for (const ring of this.rings) ring.format = this.ringFormat;
    this.host.info(`vhost-user: features ${dev.describeFeatures(features).join(', ') || 'none'}`);
    // Without VHOST_USER_F_PROTOCOL_FEATURES rings start enabled; with it, SET_VRING_ENABLE
    // enables them (vhost-user.rst "Ring states").
    if (!protocolFeatures) {
      for (const ring of this.rings) {
        if (ring.enabled) continue;
        ring.enabled = true;
        this.device.setQueueEnabled(ring.index, true);
      }
    }
  }

  private makeLive(): void {
    if (this.live) return;
    this.live = true;
    this.device.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
  }

  /**
   * Device reset (2.4) on the front-end's word: the device forgets everything, nothing is in
   * flight any more (each inflight region starts over at its ring's next start), and the
   * device is live again only after a new negotiation.
   */
  private resetDevice(): void {
    this.device.reset();
    this.inflight?.clear();
    this.live = false;
  }

  /**
   * Stops rings (GET_VRING_BASE, SET_STATUS 0): no kicks are taken and no new request is, the
   * requests in progress finish into the used ring (the front-end waits for the answer
   * meanwhile, and so do its later messages), then each ring's position is kept in its base
   * and `then` answers. Without the wait a request taken but not finished would be lost: the
   * position says it was served.
   */
  private stopRings(indices: number[], then: () => Answer): Answer {
    for (const i of indices) {
      const ring = this.rings[i];
      ring.stopWatching();
      ring.pause(this.device.queues[i]);
    }
    return afterSettled('ring stop', (settled) => {
      if (!settled) this.host.warn(`vhost-user: requests still in progress after ${SETTLE_TIMEOUT_MS} ms; the rings stop without them`);
      for (const i of indices) {
        const p = this.rings[i].keepPosition(this.device.queues[i]);
        if (p !== null) this.host.info(`vhost-user: ring ${i} stopped at available ${p.avail}, used ${p.used}`);
      }
      return then();
    });
  }

  /** The message's fd, checked to be an eventfd before anything uses it (left with the message otherwise, to be closed). */
  private eventfdFrom(fds: MessageFds, what: string): number {
    if (!isEventfd(fds.peek())) throw refusal('bad-fd', `the ${what} fd is not an eventfd`);
    return fds.take();
  }

  /** Maps an inflight buffer (the fd is the caller's), replacing any earlier one. */
  private useInflight(fd: number, offset: number, size: number, numQueues: number, queueSize: number): void {
    sealAgainstShrink(this.n, fd, 'inflight buffer', (what) => this.unsealable(what));
    const buffer = InflightBuffer.map(this.n, fd, offset, size, this.ringFormat, numQueues, queueSize);
    this.unmapInflight();
    this.inflight = buffer;
  }

  private unmapInflight(): void {
    if (this.inflight === null) return;
    // Nothing may record into an unmapped buffer.
    for (const q of this.device.queues) q.setObserver(null);
    for (const ring of this.rings) ring.inflight = null;
    this.inflight.unmap(this.n);
    this.inflight = null;
  }

  /** A coverage problem found before anything changed is a refusal. */
  private refuseIf(problem: VhostUserError | null): void {
    if (problem !== null) throw refusal(problem.kind, problem.message);
  }

  private unsealable(what: string): void {
    if (this.unsealedLogged) return;
    this.unsealedLogged = true;
    this.host.warn(
      `vhost-user: the ${what}'s file cannot be sealed against shrinking (not a memfd, or one made without sealing allowed); ` +
        'if the front-end shrinks it, the touched pages read as zeros and the connection ends',
    );
  }
}

/**
 * How long a ring stop waits for requests in progress (a disk that stopped answering) before
 * it gives up on them: the front-end is blocked on the reply meanwhile.
 */
export const SETTLE_TIMEOUT_MS = 30_000;
