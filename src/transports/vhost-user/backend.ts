/**
 * vhost-user back-end (Node): serves one of our VirtioDevice models to a front-end (QEMU) over
 * a unix socket. Guest memory arrives as fds (mmapped here), rings as front-end virtual
 * addresses (translated through the regions), kicks and calls as eventfds. Every message is
 * validated by protocol.ts before it acts; a malformed one ends the connection with a logged
 * reason, and the device is reset so the next connection starts clean.
 *
 * The device core's driver-facing state machine is driven from the messages: SET_FEATURES
 * performs ACKNOWLEDGE / DRIVER / features / FEATURES_OK, and the first ring start DRIVER_OK
 * (the front-end owns the guest-visible status).
 *
 * Guest memory comes as a whole table (SET_MEM_TABLE: the device re-attaches) or, with
 * VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS, region by region (ADD_MEM_REG / REM_MEM_REG, up to
 * MAX_MEM_SLOTS), changed in place under running rings: a removal waits for the requests in
 * progress, and one that would take a started ring's memory is refused.
 *
 * Live migration (vhost-user.rst "Migration"): VHOST_F_LOG_ALL is offered, and with
 * VHOST_USER_PROTOCOL_F_LOG_SHMFD the front-end's dirty log is mapped (SET_LOG_BASE). While
 * LOG_ALL is negotiated every device write to guest memory goes through GuestMemory.onWrite and
 * sets its page's bit (used rings with VHOST_VRING_F_LOG at their log address); switching
 * LOG_ALL on or off does not reset the device.
 */
import { fstatSync } from 'node:fs';
import { GuestMemory, type MemoryRegionInit } from '../../memory/guest-memory.js';
import { usedRingSize } from '../../spec/split-layout.js';
import { EVENT_SIZE } from '../../spec/packed-layout.js';
import type { DeviceHost, VirtioDevice } from '../../device/device.js';
import type { PriorBuffer, RingPosition } from '../../virtqueue/queue.js';
import { Status } from '../../spec/constants.js';
import { isEventfd, native, POLL_WRITABLE, type NativeAddon } from '../../native/index.js';
import { Feature } from '../../spec/constants.js';
import { PackedInflightRegion, SplitInflightRegion, packedInflightQueueSize, splitInflightQueueSize } from './inflight.js';
import {
  F_LOG_ALL,
  F_PROTOCOL_FEATURES,
  HEADER_SIZE,
  LOG_PAGE,
  ProtocolFeature,
  Req,
  decode,
  encodeReply,
  parseHeader,
  requestName,
  statePayload,
  u64Payload,
  BackendReq,
  VRING_F_LOG,
  encodeBackendRequest,
  type Decoded,
  type MemRegion,
  type Session,
} from './protocol.js';

/** Protocol features this back-end implements. */
export const BACKEND_PROTOCOL_FEATURES =
  (1n << BigInt(ProtocolFeature.MQ)) | (1n << BigInt(ProtocolFeature.REPLY_ACK)) | (1n << BigInt(ProtocolFeature.CONFIG)) | (1n << BigInt(ProtocolFeature.RESET_DEVICE)) |
  (1n << BigInt(ProtocolFeature.STATUS)) |
  (1n << BigInt(ProtocolFeature.BACKEND_REQ)) |
  (1n << BigInt(ProtocolFeature.CONFIGURE_MEM_SLOTS)) |
  (1n << BigInt(ProtocolFeature.LOG_SHMFD)) |
  (1n << BigInt(ProtocolFeature.INFLIGHT_SHMFD));

/**
 * Memory regions accepted at once (GET_MAX_MEM_SLOTS). 509 is what KVM gives an x86 VM (and
 * what libvhost-user answers): a VM QEMU can build on KVM is never refused for its memory
 * layout. A slot costs one entry in GuestMemory's sorted region list (looked up by binary
 * search) and its mappings, nothing per slot we do not use.
 */
export const MAX_MEM_SLOTS = 509;

const LOG_ALL = 1n << BigInt(F_LOG_ALL);

/** Largest piece of a memory region mapped into one ArrayBuffer. */
const MAP_CHUNK = 1 << 30;

/**
 * How long a ring stop waits for requests in progress (a disk that stopped answering) before
 * it gives up on them: the front-end is blocked on the reply meanwhile.
 */
const SETTLE_TIMEOUT_MS = 30_000;

/**
 * Bytes of replies queued for a front-end that is not reading before the back-end stops
 * reading its messages (back-pressure). A message is answered by at most one reply of a few
 * KiB, so the queue never holds much more than this.
 */
export const OUT_LIMIT = 64 * 1024;

/** Split rings: a power of two up to 32768 (split.virtqueues.driver.1); packed rings: up to 32768 (packed.ring.driver.2). */
const MAX_RING = 32768;

/**
 * A message refused before it had any effect (the session is as it was). With REPLY_ACK asked
 * for, the front-end is told (a non-zero ack) and the session goes on; without it the front-end
 * could not know and would wait on a ring that will not move, so the connection ends.
 */
export class Refusal extends Error {}

/**
 * Checks that [offset, offset + size) of `fd` exists before it is mapped (what the front-end
 * claims is not trusted): touching a page of a mapping past the end of its file raises SIGBUS,
 * which would kill the process. Character and block devices (DAX, hugetlbfs) have no size to
 * compare with; mmap itself refuses what they cannot map. Anything else is not memory.
 */
export function checkFdRange(fd: number, offset: number, size: number, what: string): void {
  let st;
  try {
    st = fstatSync(fd);
  } catch (err) {
    throw new Refusal(`${what}: fstat of its fd failed (${err instanceof Error ? err.message : String(err)})`);
  }
  if (st.isFile()) {
    if (offset + size > st.size) {
      throw new Refusal(`${what} [offset ${hex(offset)}, +${hex(size)}) goes past the end of its fd (${hex(st.size)} bytes): mapping it would fault`);
    }
  } else if (!st.isCharacterDevice() && !st.isBlockDevice()) {
    throw new Refusal(`${what}: its fd is not a file (mode 0o${st.mode.toString(8)})`);
  }
}

interface Ring {
  size: number;
  desc: number;
  avail: number;
  used: number;
  /** VHOST_VRING_F_LOG: the used ring's writes are logged at logAddr (+ their offset in it). */
  logUsed: boolean;
  logAddr: number;
  base: number;
  kickFd: number;
  callFd: number;
  watch: { close(): void } | null;
  started: boolean;
  enabled: boolean;
}

/** One memory region the front-end gave (SET_MEM_TABLE or ADD_MEM_REG), mapped in pieces. */
interface Slot {
  guestAddr: number;
  size: number;
  userAddr: number;
  maps: ArrayBuffer[];
}

/** The dirty log (SET_LOG_BASE): one bit per 4 KiB page of guest memory, shared with the front-end. */
interface DirtyLog {
  buffer: ArrayBuffer;
  bytes: Uint8Array;
  /** Writes logged since it was mapped (for the log line when logging ends). */
  writes: number;
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

export interface BackendLog {
  info(msg: string): void;
  warn(msg: string): void;
}

export class VhostUserBackend implements DeviceHost {
  private readonly n: NativeAddon = native();
  private fd = -1;
  private connWatch: { close(): void } | null = null;
  /** The back-end request channel (SET_BACKEND_REQ_FD), or -1. */
  private backendReqFd = -1;
  private session: Session;
  private ackedFeatures = 0n;
  private slots: Slot[] = [];
  private memory: GuestMemory | null = null;
  /** The dirty log, while one is mapped. */
  private dirtyLog: DirtyLog | null = null;
  /** VHOST_F_LOG_ALL is in the front-end's features: every write to guest memory is logged. */
  private logAll = false;
  private readonly logHook = (addr: number, len: number) => this.logWrite(addr, len);
  private rings: Ring[] = [];
  private readonly header = new Uint8Array(HEADER_SIZE);
  private readonly payload = new Uint8Array(4096);
  private live = false;
  /** The inflight buffer (GET/SET_INFLIGHT_FD), mapped, with one region per queue. */
  private inflight: { map: ArrayBuffer; regions: (SplitInflightRegion | PackedInflightRegion)[] } | null = null;
  /** Set while a stop waits for requests in progress: later messages wait in the socket. */
  private settling: ReturnType<typeof setTimeout> | null = null;
  /** Replies the socket has not taken yet, oldest first (fds: closed once sent). */
  private out: { data: Uint8Array; fds: number[] }[] = [];
  private outBytes = 0;
  /** What the connection's watch waits for now (one watch per fd: libuv allows no second). */
  private watching = { read: false, write: false };
  /** Set when the device entered DEVICE_NEEDS_RESET: nothing more is read; the connection ends. */
  private failing: string | null = null;
  /** Whether this connection's unsealable memory was logged (once per connection). */
  private unsealedLogged = false;
  /** Whether this connection's back-pressure was logged (once: a flood would repeat it). */
  private pauseLogged = false;
  /** Counts connections, so a deferred close does not end a later one. */
  private connection = 0;
  /** The addon's count of absorbed guest-memory faults when last checked (checkFaults). */
  private faultsSeen = 0;
  /** Why the last connection ended (tests and logs). */
  lastError = '';
  onClose: () => void = () => undefined;

  constructor(
    readonly device: VirtioDevice,
    private readonly log: BackendLog = { info: () => undefined, warn: () => undefined },
  ) {
    this.session = { protocolFeaturesOffered: true, protocolFeatures: 0n, numQueues: device.numQueues };
  }

  /** Serves one connected socket fd until it closes (or sends something malformed). */
  serve(fd: number): void {
    this.fd = fd;
    this.connection++;
    this.failing = null;
    this.pauseLogged = false;
    this.unsealedLogged = false;
    this.lastError = '';
    this.resetState();
    this.updateWatch();
  }

  /**
   * (Re)creates the connection's watch for what is wanted now: messages are read unless a stop
   * is settling, the device failed, or the replies queued for a front-end that does not read
   * are over OUT_LIMIT (back-pressure: its messages wait in the socket); writability is watched
   * while replies are queued.
   */
  private updateWatch(): void {
    const read = this.fd >= 0 && this.settling === null && this.failing === null && this.outBytes <= OUT_LIMIT;
    const write = this.fd >= 0 && this.out.length > 0;
    if (this.connWatch !== null && read === this.watching.read && write === this.watching.write) return;
    if (!read && this.outBytes > OUT_LIMIT && !this.pauseLogged) {
      this.pauseLogged = true;
      this.log.warn(`vhost-user: the front-end is not reading its replies (${this.outBytes} bytes queued); its messages wait in the socket until it does`);
    }
    this.connWatch?.close();
    this.connWatch = null;
    this.watching = { read, write };
    if (!read && !write) return;
    this.connWatch = this.n.watch(
      this.fd,
      read,
      write,
      this.guarded('socket', (events) => {
        if (events < 0) return this.close('socket error');
        if (events & POLL_WRITABLE) this.flush();
        if (events & ~POLL_WRITABLE && this.watching.read) this.readable();
      }),
    );
  }

  /** Queues a message for the front-end and sends what the socket takes now. */
  private send(data: Uint8Array, fds: number[] = []): void {
    if (this.fd < 0) {
      for (const fd of fds) this.n.close(fd);
      return;
    }
    this.out.push({ data, fds });
    this.outBytes += data.length;
    this.flush();
  }

  /** Sends queued replies until the socket is full (then its writability is watched). */
  private flush(): void {
    while (this.out.length > 0 && this.fd >= 0) {
      const head = this.out[0];
      const sent = this.n.sendmsg(this.fd, head.data, head.fds);
      if (sent < 0) break;
      for (const fd of head.fds) this.n.close(fd); // the front-end has its own copy now
      head.fds = [];
      this.outBytes -= sent;
      if (sent < head.data.length) {
        head.data = head.data.subarray(sent);
        break;
      }
      this.out.shift();
    }
    if (this.fd >= 0) this.updateWatch();
  }

  /**
   * The device entered DEVICE_NEEDS_RESET (a chain it cannot serve, or any violation in strict
   * mode). Its configuration change notification went out first (CONFIG_CHANGE_MSG on the
   * back-end request channel, when negotiated and the device is live); now the connection ends
   * with the reason logged, as libvhost-user's vu_panic does: the front-end sees the back-end
   * go and no ring is left waiting. The end is deferred: the device is still inside its work.
   */
  deviceError(reason: string): void {
    if (this.fd < 0 || this.failing !== null) return;
    this.failing = reason;
    this.updateWatch();
    const connection = this.connection;
    setImmediate(() => {
      if (this.connection === connection) this.close(`device error: ${reason}`);
    });
  }

  // ---------------------------------------------------------------- DeviceHost

  interrupt(index: number): void {
    this.checkFaults(); // completions wrote guest memory outside any fd callback
    const r = this.rings[index];
    if (r !== undefined && r.callFd >= 0) this.n.eventfdWrite(r.callFd, 1);
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
        this.log.warn('vhost-user: CONFIG_CHANGE_MSG not sent: the front-end is not reading its back-end request channel');
      }
    } catch (err) {
      // A front-end that stopped reading its channel loses the notification, not the device.
      this.log.warn(`vhost-user: CONFIG_CHANGE_MSG not sent: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  // ---------------------------------------------------------------- messages

  private readable(): void {
    while (this.settling === null && this.fd >= 0 && this.failing === null && this.outBytes <= OUT_LIMIT) {
      const got = this.n.recvmsg(this.fd, this.header);
      if (got.bytes === -1) return;
      if (got.bytes === 0) return this.close('front-end closed the connection');
      if (got.bytes !== HEADER_SIZE) return this.close(`short header (${got.bytes} bytes)`, got.fds);
      const h = parseHeader(this.header);
      if (typeof h === 'string') return this.close(h, got.fds);
      let payload = this.payload.subarray(0, h.size);
      let have = 0;
      const fds = got.fds;
      while (have < h.size) {
        const more = this.n.recvmsg(this.fd, payload.subarray(have));
        fds.push(...more.fds);
        if (more.bytes === 0) return this.close('front-end closed mid-message', fds);
        // A front-end sends a message in one piece: a payload that is not there is malformed.
        if (more.bytes < 0) return this.close(`${requestName(h.request)}: ${h.size - have} payload bytes missing`, fds);
        have += more.bytes;
      }
      payload = payload.slice(0, h.size);
      const d = decode(h, payload, fds.length, this.session);
      if (typeof d === 'string') return this.close(d, fds);
      try {
        this.handle(d, fds);
      } catch (err) {
        const reason = `${requestName(h.request)}: ${err instanceof Error ? err.message : String(err)}`;
        if (err instanceof Refusal && d.needReply) {
          // Refused before it acted, and the front-end asked to hear: it is told, and may go on.
          for (const fd of fds) this.n.close(fd);
          this.log.warn(`vhost-user: ${reason}; refused (non-zero REPLY_ACK)`);
          this.reply(h.request, u64Payload(1));
          continue;
        }
        return this.close(reason, fds);
      }
    }
    if (this.fd >= 0) this.updateWatch();
  }

  private reply(request: number, payload?: Uint8Array, fds: number[] = []): void {
    this.send(encodeReply(request, payload), fds);
  }

  private handle(d: Decoded, fds: number[]): void {
    const m = d.message;
    let replied = false;
    const reply = (p?: Uint8Array, replyFds: number[] = []) => {
      this.reply(d.header.request, p, replyFds); // the fds are closed once sent
      replied = true;
    };
    switch (d.header.request) {
      case Req.GET_FEATURES:
        reply(u64Payload(this.offeredFeatures()));
        break;
      case Req.SET_FEATURES:
        if (m.kind === 'u64') this.featuresMessage(m.value);
        break;
      case Req.GET_PROTOCOL_FEATURES:
        // CONFIG only for devices with a config space (QEMU warns about it otherwise).
        reply(u64Payload(this.offeredProtocolFeatures()));
        break;
      case Req.SET_PROTOCOL_FEATURES:
        if (m.kind === 'u64') {
          const unoffered = m.value & ~this.offeredProtocolFeatures();
          if (unoffered !== 0n) throw new Refusal(`protocol features 0x${unoffered.toString(16)} were never offered`);
          this.session.protocolFeatures = m.value;
        }
        break;
      case Req.GET_QUEUE_NUM:
        reply(u64Payload(this.device.numQueues));
        break;
      case Req.SET_OWNER:
      case Req.RESET_OWNER:
        break;
      case Req.RESET_DEVICE:
        // A reset, not a stop: requests in progress are dropped (host bounce buffers keep
        // late I/O out of guest memory) and every ring starts over.
        for (const r of this.rings) {
          r.watch?.close();
          r.watch = null;
          r.started = false;
          r.base = 0;
        }
        this.resetDevice();
        break;
      case Req.SET_STATUS:
        if (m.kind === 'u64' && (m.value & 0xffn) === 0n) {
          // Status 0 (QEMU's stop, before it asks where each ring stands): requests in progress
          // finish into the used rings first, then the device resets. The ack waits for both.
          replied = true;
          this.stopRings(this.rings.map((_, i) => i), () => {
            this.resetDevice();
            if (d.needReply) this.reply(d.header.request, u64Payload(0));
          });
        } else if (m.kind === 'u64') this.setStatus(Number(m.value & 0xffn));
        break;
      case Req.GET_STATUS:
        reply(u64Payload(this.device.getStatus()));
        break;
      case Req.SET_BACKEND_REQ_FD:
        if (this.backendReqFd >= 0) this.n.close(this.backendReqFd);
        this.backendReqFd = fds.shift()!;
        break;
      case Req.SET_MEM_TABLE:
        if (m.kind === 'memory') this.setMemTable(m.regions, fds);
        break;
      case Req.GET_MAX_MEM_SLOTS:
        reply(u64Payload(MAX_MEM_SLOTS));
        break;
      case Req.ADD_MEM_REG:
        if (m.kind === 'region') this.addMemRegion(m.region, fds[0]);
        break;
      case Req.REM_MEM_REG:
        // Answered once the region is gone (requests in progress may still write into it).
        replied = true;
        if (m.kind === 'region') {
          this.remMemRegion(m.region, () => {
            if (d.needReply) this.reply(d.header.request, u64Payload(0));
          });
        }
        break;
      case Req.SET_LOG_BASE:
        if (m.kind === 'log') this.setLogBase(m.size, m.offset, fds[0]);
        reply(u64Payload(0)); // with LOG_SHMFD the front-end waits for this reply
        break;
      case Req.SET_LOG_FD:
        break; // the log is read by the front-end when it syncs; no eventfd is needed (closed below)
      case Req.SET_VRING_NUM:
        if (m.kind === 'state') {
          this.checkStopped(m.index);
          this.checkRingSize(m.num);
          this.rings[m.index].size = m.num;
        }
        break;
      case Req.SET_VRING_BASE:
        if (m.kind === 'state') {
          this.checkStopped(m.index);
          // Split: the next available index (16 bits). Packed: avail slot and wrap counter in
          // bits 0-15, used in 16-31 (checked against the ring size when the ring starts).
          if (!this.packedRings() && m.num > 0xffff) throw new Refusal(`split ring base ${m.num} is not a 16-bit index`);
          this.rings[m.index].base = m.num >>> 0;
        }
        break;
      case Req.SET_VRING_ADDR:
        if (m.kind === 'addr') {
          if (this.memory === null) throw new Refusal('ring addresses before any memory table');
          const mem = this.memory;
          const r = this.rings[m.index];
          if ((m.flags & ~VRING_F_LOG) !== 0) throw new Refusal(`unknown ring address flags 0x${m.flags.toString(16)}`);
          // Ring addresses are front-end virtual addresses: translate through the regions. All
          // three first, then the ring changes (nothing half-set on a refusal). Their full extent
          // is checked against guest memory when the ring starts (a fatal verdict otherwise).
          let desc: number, avail: number, used: number;
          try {
            desc = mem.userToGuest(m.desc, 16);
            avail = mem.userToGuest(m.avail, 4);
            used = mem.userToGuest(m.used, 4);
          } catch (err) {
            throw new Refusal(err instanceof Error ? err.message : String(err));
          }
          if (r.started && (desc !== r.desc || avail !== r.avail || used !== r.used)) {
            // QEMU sends SET_VRING_ADDR to a running ring only to switch its logging flag.
            throw new Refusal(`ring ${m.index} is running: its addresses cannot move`);
          }
          r.desc = desc;
          r.avail = avail;
          r.used = used;
          this.setRingLog(m.index, (m.flags & VRING_F_LOG) !== 0, m.log);
        }
        break;
      case Req.GET_VRING_BASE:
        if (m.kind === 'state') {
          // The reply says where the ring stopped: sent once its requests in progress are used.
          const index = m.index;
          replied = true;
          this.stopRings([index], () => this.reply(d.header.request, statePayload(index, this.rings[index].base)));
        }
        break;
      case Req.SET_VRING_KICK:
        if (m.kind === 'vring-fd') this.setKick(m.index, m.noFd ? -1 : this.eventfdFrom(fds, 'kick'));
        break;
      case Req.SET_VRING_CALL:
        if (m.kind === 'vring-fd') {
          const fd = m.noFd ? -1 : this.eventfdFrom(fds, 'call');
          const r = this.rings[m.index];
          if (r.callFd >= 0) this.n.close(r.callFd);
          r.callFd = fd;
        }
        break;
      case Req.SET_VRING_ERR:
        break; // errors are reported through the monitor and DEVICE_NEEDS_RESET
      case Req.SET_VRING_ENABLE:
        if (m.kind === 'state') {
          if (m.num > 1) throw new Refusal(`ring enable value ${m.num} (0 or 1)`);
          const r = this.rings[m.index];
          const was = r.enabled;
          r.enabled = m.num === 1;
          // Kicks that came while the ring was disabled are served now (QEMU enables the rings
          // after it has set their kick fds, and the guest may have kicked in between).
          if (r.enabled && !was && r.started) this.device.notify(m.index);
        }
        break;
      case Req.GET_INFLIGHT_FD:
        if (m.kind === 'inflight') reply(...this.getInflight(m.numQueues, m.queueSize));
        break;
      case Req.SET_INFLIGHT_FD:
        if (m.kind === 'inflight') this.setInflight(m.mmapSize, m.mmapOffset, m.numQueues, m.queueSize, fds.shift()!);
        break;
      case Req.GET_CONFIG:
        if (m.kind === 'config') {
          const out = new Uint8Array(12 + m.size);
          const v = new DataView(out.buffer);
          v.setUint32(0, m.offset, true);
          v.setUint32(4, m.size, true);
          v.setUint32(8, m.flags, true);
          // The front-end fills its own copy of the config space (QEMU does so before the guest
          // negotiates): a raw read, not a guest driver access the monitor should judge.
          const cfg = this.device.config;
          for (let i = 0; i < m.size && m.offset + i < cfg.length; i++) out[12 + i] = cfg[m.offset + i];
          reply(out);
        }
        break;
      case Req.SET_CONFIG:
        if (m.kind === 'config') for (let i = 0; i < m.size; i++) this.device.writeConfig(m.offset + i, 1, m.data[i]);
        break;
      default:
        throw new Error('not served');
    }
    for (const fd of fds) this.n.close(fd); // anything unused
    if (d.needReply && !replied) this.reply(d.header.request, u64Payload(0));
  }

  /** What GET_PROTOCOL_FEATURES answers: CONFIG only for devices with a config space (QEMU warns otherwise). */
  private offeredProtocolFeatures(): bigint {
    return this.device.config.length > 0 ? BACKEND_PROTOCOL_FEATURES : BACKEND_PROTOCOL_FEATURES & ~(1n << BigInt(ProtocolFeature.CONFIG));
  }

  /** What GET_FEATURES answers: the device's features, VHOST_USER_F_PROTOCOL_FEATURES and VHOST_F_LOG_ALL. */
  private offeredFeatures(): bigint {
    return this.device.offered | (1n << BigInt(F_PROTOCOL_FEATURES)) | LOG_ALL;
  }

  /** vhost-user.rst "Ring states": a ring's size and base are set while it is stopped. */
  private checkStopped(index: number): void {
    if (this.rings[index].started) throw new Refusal(`ring ${index} is running (stop it with GET_VRING_BASE first)`);
  }

  /**
   * SET_VRING_NUM against the ring format the features chose and the device's largest queue:
   * split rings take a power of two (split.virtqueues.driver.1), packed rings any size from 1
   * (packed.ring.driver.2), both at most 32768 and at most queueMaxSize. A size taken unchecked
   * would make a ring the device can never start (0) or walk wrongly (100 on a split ring).
   */
  private checkRingSize(num: number): void {
    const fmt = this.packedRings() ? 'packed' : 'split';
    const max = Math.min(MAX_RING, this.device.queueMaxSize);
    // Each refusal names the one rule the size broke: a power of two larger than the device's
    // largest queue (QEMU's default queue-size=128 against `serve --queue-size 64`) is refused
    // for its size, not for its shape, so the operator knows which side to change.
    if (num === 0) throw new Refusal(`${fmt} ring size 0: a ring holds at least one descriptor`);
    if (fmt === 'split' && (num & (num - 1)) !== 0) throw new Refusal(`split ring size ${num} is not a power of two`);
    if (num > max) {
      const limit =
        max === this.device.queueMaxSize
          ? `the device's largest queue, ${max} (\`serve --queue-size ${max}\`; QEMU's queue-size= must not exceed it)`
          : `${max}, the largest ring there is`;
      throw new Refusal(`${fmt} ring size ${num} is larger than ${limit}`);
    }
  }

  private setFeatures(features: bigint, protocolFeatures: boolean): void {
    const dev = this.device;
    if (dev.getStatus() & Status.FEATURES_OK) {
      // Re-negotiation: the device starts over, but the inflight record stays (a front-end
      // that did not stop the rings first may have left requests the next start must serve).
      dev.reset();
      this.live = false;
    }
    dev.setStatus(Status.ACKNOWLEDGE);
    dev.setStatus(Status.ACKNOWLEDGE | Status.DRIVER);
    dev.setDriverFeatures(features);
    dev.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
    this.ackedFeatures = features;
    this.log.info(`vhost-user: features ${dev.describeFeatures(features).join(', ') || 'none'}`);
    // Without VHOST_USER_F_PROTOCOL_FEATURES rings start enabled; with it, SET_VRING_ENABLE
    // enables them (vhost-user.rst "Ring states").
    if (!protocolFeatures) for (const r of this.rings) r.enabled = true;
  }

  /**
   * SET_STATUS (VHOST_USER_PROTOCOL_F_STATUS): the front-end's view of the device status.
   * The back-end already walks the device through ACKNOWLEDGE..FEATURES_OK on SET_FEATURES and
   * to DRIVER_OK on the first kick, so only three writes change anything here: 0 resets the
   * device (handled in handle(): rings stopped first, so a later GET_VRING_BASE still answers
   * where each ring stood), FAILED is recorded, and DRIVER_OK makes a negotiated device live
   * before any kick.
   * Bits the device has not reached (FEATURES_OK before SET_FEATURES) are not invented:
   * GET_STATUS reports what the device really holds, which is how the front-end learns it.
   */
  private setStatus(value: number): void {
    const dev = this.device;
    const now = dev.getStatus();
    if (value & Status.FAILED && !(now & Status.FAILED)) {
      dev.setStatus(now | Status.FAILED);
      return;
    }
    if (value & Status.DRIVER_OK && !this.live && now & Status.FEATURES_OK && !(now & Status.FAILED)) {
      this.live = true;
      dev.setStatus(now | Status.DRIVER_OK);
    }
  }

  /**
   * GET_INFLIGHT_FD: a new zeroed buffer for `numQueues` rings of `queueSize`, shared with the
   * front-end, which keeps it across back-end restarts. Its layout follows the negotiated ring
   * format (QEMU sends SET_FEATURES first for this reason).
   */
  private getInflight(numQueues: number, queueSize: number): [Uint8Array, number[]] {
    const out = new Uint8Array(24);
    const v = new DataView(out.buffer);
    v.setUint16(16, numQueues, true);
    v.setUint16(18, queueSize, true);
    this.checkInflightShape(numQueues, queueSize);
    const size = numQueues * this.inflightQueueSize(queueSize);
    const fd = this.n.memfdCreate('virtio-ts-inflight', size);
    try {
      this.mapInflight(fd, 0, size, numQueues, queueSize);
    } catch (err) {
      this.n.close(fd);
      throw err;
    }
    v.setBigUint64(0, BigInt(size), true);
    v.setBigUint64(8, 0n, true);
    return [out, [fd]];
  }

  /** SET_INFLIGHT_FD: the buffer to track in (from GET_INFLIGHT_FD, or kept by the front-end from a previous back-end). */
  private setInflight(size: number, offset: number, numQueues: number, queueSize: number, fd: number): void {
    try {
      this.checkInflightShape(numQueues, queueSize);
      const need = numQueues * this.inflightQueueSize(queueSize);
      if (size < need) throw new Error(`inflight buffer of ${size} bytes is smaller than ${numQueues} queues of ${queueSize} need (${need})`);
      checkFdRange(fd, offset, need, 'inflight buffer');
      this.mapInflight(fd, offset, need, numQueues, queueSize);
      this.log.info(`vhost-user: inflight buffer set: ${numQueues} queue(s) of ${queueSize}`);
    } finally {
      this.n.close(fd);
    }
  }

  private checkInflightShape(numQueues: number, queueSize: number): void {
    if (numQueues < 1 || numQueues > this.device.numQueues) throw new Error(`inflight buffer for ${numQueues} queues; the device has ${this.device.numQueues}`);
    if (queueSize < 1 || queueSize > 32768 || (queueSize & (queueSize - 1)) !== 0) throw new Error(`inflight queue size ${queueSize} is not a power of two <= 32768`);
  }

  private mapInflight(fd: number, offset: number, size: number, numQueues: number, queueSize: number): void {
    this.sealAgainstShrink(fd, 'inflight buffer');
    const map = this.n.mmap(fd, offset, size, true);
    this.unmapInflight();
    const per = this.inflightQueueSize(queueSize);
    const packed = this.packedRings();
    this.inflight = { map, regions: Array.from({ length: numQueues }, (_, i) => (packed ? new PackedInflightRegion(map, i * per, queueSize) : new SplitInflightRegion(map, i * per, queueSize))) };
  }

  /**
   * Device reset (2.4) on the front-end's word: the device forgets everything, nothing is in
   * flight any more (each inflight region starts over at its ring's next start), and the
   * device is live again only after a new negotiation.
   */
  private resetDevice(): void {
    this.device.reset();
    for (const region of this.inflight?.regions ?? []) region.clear();
    this.live = false;
  }

  private packedRings(): boolean {
    return (this.ackedFeatures & (1n << BigInt(Feature.RING_PACKED))) !== 0n;
  }

  private inflightQueueSize(queueSize: number): number {
    return this.packedRings() ? packedInflightQueueSize(queueSize) : splitInflightQueueSize(queueSize);
  }

  private unmapInflight(): void {
    if (this.inflight === null) return;
    for (const q of this.device.queues) q.setObserver(null); // nothing may write into an unmapped buffer
    this.n.munmap(this.inflight.map);
    this.inflight = null;
  }

  private requireMemory(): GuestMemory {
    if (this.memory === null) throw new Error('no memory table yet');
    return this.memory;
  }

  /** SET_MEM_TABLE: the whole table replaced (the device re-attaches: its queues are made anew). */
  private setMemTable(regions: MemRegion[], fds: number[]): void {
    // Everything is checked before the old table goes: a refused table leaves the one in use.
    // A new table re-creates the device's queues: a started ring would silently stop moving
    // (QEMU replaces the table only with its rings stopped; with CONFIGURE_MEM_SLOTS it never
    // sends one after the first).
    const running = this.rings.findIndex((r) => r.started);
    if (running >= 0) throw new Refusal(`ring ${running} is running: stop it (GET_VRING_BASE) before replacing the memory table`);
    const sorted = [...regions].sort((a, b) => a.guestAddr - b.guestAddr);
    for (let i = 1; i < sorted.length; i++) {
      if (sorted[i].guestAddr < sorted[i - 1].guestAddr + sorted[i - 1].size) throw new Refusal(`regions overlap at ${hex(sorted[i].guestAddr)}`);
    }
    regions.forEach((r, i) => checkFdRange(fds[i], r.mmapOffset, r.size, `region ${i}`));
    const problem = this.logging ? this.logCoverageProblem(this.dirtyLog!.bytes.length, regions) : null;
    if (problem !== null) throw new Refusal(problem);
    this.unmapAll();
    const inits: MemoryRegionInit[] = [];
    regions.forEach((r, i) => {
      const slot = this.mapSlot(r, fds[i], inits);
      this.slots.push(slot);
    });
    this.memory = new GuestMemory(inits);
    this.updateLogging();
    // The device follows the new table (attach re-creates its queues; the state machine stays).
    this.device.attach(this.memory, this);
  }

  /**
   * Maps one region from its fd (the caller closes the fd; the mapping stays). Big regions are
   * mapped in 1 GiB pieces, which GuestMemory joins back (copies and chains cross piece
   * boundaries), so ArrayBuffers stay well under Node's limits. The pieces go into `inits`.
   */
  private mapSlot(r: MemRegion, fd: number, inits: MemoryRegionInit[]): Slot {
    this.sealAgainstShrink(fd, `memory region at ${hex(r.guestAddr)}`);
    const slot: Slot = { guestAddr: r.guestAddr, size: r.size, userAddr: r.userAddr, maps: [] };
    try {
      for (let off = 0; off < r.size; off += MAP_CHUNK) {
        const len = Math.min(MAP_CHUNK, r.size - off);
        const buffer = this.n.mmap(fd, r.mmapOffset + off, len, true);
        slot.maps.push(buffer);
        inits.push({ guestAddr: r.guestAddr + off, size: len, buffer, userAddr: r.userAddr + off, concurrent: true });
      }
    } catch (err) {
      for (const b of slot.maps) this.n.munmap(b);
      throw err;
    }
    return slot;
  }

  /**
   * fstat checked the file before it was mapped; a front-end could still shrink it afterwards,
   * and the next touch of the mapping past the new end raises SIGBUS. A memfd is sealed against
   * shrinking (F_SEAL_SHRINK; QEMU's memory-backend-memfd is sealed already, seal=on), which a
   * correct front-end never notices: it does not shrink memory it gave away. Other files
   * (memory-backend-file on hugetlbfs or /dev/shm) cannot be sealed: logged once.
   */
  private sealAgainstShrink(fd: number, what: string): void {
    if (this.n.sealShrink(fd) === 1 || this.unsealedLogged) return;
    this.unsealedLogged = true;
    this.log.warn(
      `vhost-user: the ${what}'s file cannot be sealed against shrinking (not a memfd, or one made without sealing allowed); ` +
        'if the front-end shrinks it, the touched pages read as zeros and the connection ends',
    );
  }

  /**
   * The addon absorbs a SIGBUS in a guest mapping (a page past its file's end: the front-end
   * shrank a file it could not be kept from shrinking) by mapping a zero page there, and counts
   * it. Checked after every callback that may have touched guest memory: if one of this
   * connection's mappings faulted, the front-end took memory it had given away; what the device
   * read there was zeros and what it wrote is lost, so the session ends (a device error).
   */
  private checkFaults(): void {
    const count = this.n.faultCount();
    if (count === this.faultsSeen) return;
    this.faultsSeen = count;
    if (this.fd < 0) return;
    const mine = [...this.slots.flatMap((slot) => slot.maps), ...(this.dirtyLog ? [this.dirtyLog.buffer] : []), ...(this.inflight ? [this.inflight.map] : [])];
    if (!mine.some((b) => b.byteLength > 0 && this.n.faulted(b))) return;
    const reason = 'guest memory shrank under its mapping (the front-end truncated a file it had given; SIGBUS absorbed)';
    this.device.needsReset(reason);
    if (this.failing === null) this.deviceError(reason);
  }

  /**
   * ADD_MEM_REG (VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS): one more region, added in place:
   * the device and its running rings keep the memory they have. The first one attaches the
   * device (as SET_MEM_TABLE does).
   */
  private addMemRegion(r: MemRegion, fd: number): void {
    if (this.slots.length >= MAX_MEM_SLOTS) throw new Refusal(`no free memory slot: all ${MAX_MEM_SLOTS} are in use`);
    const clash = this.slots.find((s) => r.guestAddr < s.guestAddr + s.size && s.guestAddr < r.guestAddr + r.size);
    if (clash !== undefined) {
      throw new Refusal(`region [${hex(r.guestAddr)}, +${hex(r.size)}) overlaps the region at [${hex(clash.guestAddr)}, +${hex(clash.size)})`);
    }
    checkFdRange(fd, r.mmapOffset, r.size, `region [${hex(r.guestAddr)}, +${hex(r.size)})`);
    if (this.logging) {
      const problem = this.logCoverageProblem(this.dirtyLog!.bytes.length, [r]);
      if (problem !== null) throw new Refusal(problem);
    }
    const inits: MemoryRegionInit[] = [];
    const slot = this.mapSlot(r, fd, inits);
    this.slots.push(slot);
    this.log.info(`vhost-user: memory region [${hex(r.guestAddr)}, +${hex(r.size)}) added (front-end address ${hex(r.userAddr)})`);
    if (this.memory === null) {
      this.memory = new GuestMemory(inits);
      this.updateLogging();
      this.device.attach(this.memory, this);
    } else {
      this.memory.addRegions(inits);
    }
  }

  /**
   * REM_MEM_REG: the region with this guest address, size and front-end address goes, and is
   * unmapped. A started ring living in it is refused (its used ring would be written into
   * memory that is gone). Requests in progress may have buffers in it: the rings take no new
   * request meanwhile, the removal waits until those finish (later messages wait too), then
   * `then` runs (the answer).
   */
  private remMemRegion(r: MemRegion, then: () => void): void {
    const index = this.slots.findIndex((s) => s.guestAddr === r.guestAddr && s.size === r.size && s.userAddr === r.userAddr);
    if (index < 0) throw new Error(`no region at guest ${hex(r.guestAddr)}, size ${hex(r.size)}, front-end address ${hex(r.userAddr)}`);
    const slot = this.slots[index];
    const inSlot = (a: number) => a >= slot.guestAddr && a < slot.guestAddr + slot.size;
    this.rings.forEach((ring, i) => {
      if (ring.started && (inSlot(ring.desc) || inSlot(ring.avail) || inSlot(ring.used))) {
        throw new Error(`ring ${i} lives in the region at [${hex(slot.guestAddr)}, +${hex(slot.size)}): stop the ring (GET_VRING_BASE) before removing its memory`);
      }
    });
    const paused: number[] = [];
    this.rings.forEach((ring, i) => {
      const q = this.device.queues[i];
      if (ring.started && q !== undefined && !q.paused) {
        q.pause();
        paused.push(i);
      }
    });
    this.afterSettled('REM_MEM_REG', (settled) => {
      if (!settled) throw new Error(`requests in progress did not finish in ${SETTLE_TIMEOUT_MS} ms; the region cannot be removed under them`);
      this.memory?.removeRegions(slot.guestAddr, slot.size);
      this.slots.splice(this.slots.indexOf(slot), 1);
      for (const b of slot.maps) this.n.munmap(b);
      this.log.info(`vhost-user: memory region [${hex(slot.guestAddr)}, +${hex(slot.size)}) removed`);
      for (const i of paused) {
        const q = this.device.queues[i];
        if (q === undefined) continue;
        q.resume();
        // Kicks taken while paused found nothing: look again.
        if (this.rings[i]?.started && this.rings[i].enabled) this.device.notify(i);
      }
      then();
    });
  }

  // ---------------------------------------------------------------- dirty logging

  /** Whether writes are being logged: VHOST_F_LOG_ALL negotiated and a log mapped. */
  private get logging(): boolean {
    return this.logAll && this.dirtyLog !== null;
  }

  /** GuestMemory calls the log for every write while logging (a null check otherwise). */
  private updateLogging(): void {
    if (this.memory !== null) this.memory.onWrite = this.logging ? this.logHook : null;
  }

  /**
   * Why a log of `logBytes` bytes cannot cover the memory (the regions given, or all of them)
   * and the used rings logged at their log address, or null. The front-end sizes the log for
   * its whole memory (vhost-user.rst "Migration"); a write that cannot be logged would be lost
   * to the migration.
   */
  private logCoverageProblem(logBytes: number | undefined, regions: readonly { guestAddr: number; size: number }[] = this.slots): string | null {
    if (logBytes === undefined) return null;
    const covers = logBytes * 8 * LOG_PAGE;
    for (const r of regions) {
      if (r.guestAddr + r.size > covers) return `the dirty log (${logBytes} bytes) covers guest addresses below ${hex(covers)}; the region at [${hex(r.guestAddr)}, +${hex(r.size)}) is beyond it`;
    }
    for (let i = 0; i < this.rings.length; i++) {
      const ring = this.rings[i];
      if (ring.logUsed && ring.logAddr + this.usedLength(i) > covers) {
        return `the dirty log (${logBytes} bytes) covers guest addresses below ${hex(covers)}; ring ${i}'s used ring is logged at ${hex(ring.logAddr)}, beyond it`;
      }
    }
    return null;
  }

  /** Bytes of the area the device writes for ring `index` (split: used ring; packed: device event suppression). */
  private usedLength(index: number): number {
    return this.device.queues[index]?.format === 'packed' ? EVENT_SIZE : usedRingSize(this.rings[index].size);
  }

  /** SET_FEATURES: LOG_ALL switches logging; the rest is the device's features. */
  private featuresMessage(value: bigint): void {
    // basic.features.driver.1: only offered bits. Refused before anything changes (QEMU's
    // vhost-user-blk filters the guest's features by what the back-end offered; vhost-user-rng
    // forwards the guest's, which are a subset of the virtio-pci defaults this device offers).
    const unoffered = value & ~this.offeredFeatures();
    if (unoffered !== 0n) {
      throw new Refusal(`features never offered: ${this.device.describeFeatures(unoffered).join(', ')} (0x${unoffered.toString(16)})`);
    }
    const logAll = (value & LOG_ALL) !== 0n;
    const features = value & ~((1n << BigInt(F_PROTOCOL_FEATURES)) | LOG_ALL);
    if (logAll && !this.logAll) {
      const problem = this.logCoverageProblem(this.dirtyLog?.bytes.length);
      if (problem !== null) throw new Error(problem);
    }
    // Logging switched on or off under a negotiated device (a migration starting or ending)
    // changes nothing else: the device is not reset, its rings keep running.
    const onlyLogging = logAll !== this.logAll && features === this.ackedFeatures && (this.device.getStatus() & Status.FEATURES_OK) !== 0;
    if (!onlyLogging) {
      this.setFeatures(features, (value & (1n << BigInt(F_PROTOCOL_FEATURES))) !== 0n);
      // The device may refuse a set the bits alone allow (no VERSION_1, a feature without the
      // one it needs): its verdict is logged; no ring of this session could ever run.
      if ((this.device.getStatus() & Status.FEATURES_OK) === 0) throw new Error(`the device refused the features 0x${features.toString(16)} (FEATURES_OK not accepted; see its verdict)`);
    }
    if (logAll !== this.logAll) this.log.info(`vhost-user: dirty logging ${logAll ? 'on' : 'off'}${logAll || this.dirtyLog === null ? '' : ` (${this.dirtyLog.writes} writes logged)`}`);
    if (!logAll && this.logAll) this.unmapLog();
    this.logAll = logAll;
    this.updateLogging();
  }

  /** SET_LOG_BASE (VHOST_USER_PROTOCOL_F_LOG_SHMFD): maps the log, replacing any earlier one. */
  private setLogBase(size: number, offset: number, fd: number): void {
    checkFdRange(fd, offset, size, 'dirty log');
    if (size > MAP_CHUNK) throw new Error(`a dirty log of ${size} bytes (at most ${MAP_CHUNK}, enough for ${hex(MAP_CHUNK * 8 * LOG_PAGE)} bytes of memory)`);
    const problem = this.logCoverageProblem(size);
    if (problem !== null) throw new Error(problem);
    this.sealAgainstShrink(fd, 'dirty log');
    const buffer = this.n.mmap(fd, offset, size, true);
    this.unmapLog();
    this.dirtyLog = { buffer, bytes: new Uint8Array(buffer), writes: 0 };
    this.log.info(`vhost-user: dirty log set: ${size} bytes, covering guest addresses below ${hex(size * 8 * LOG_PAGE)}`);
    this.updateLogging();
  }

  /** SET_VRING_ADDR's VHOST_VRING_F_LOG and log address for ring `index`. */
  private setRingLog(index: number, logUsed: boolean, logAddr: number): void {
    const ring = this.rings[index];
    ring.logUsed = logUsed;
    ring.logAddr = logAddr;
    if (this.logging) {
      const problem = this.logCoverageProblem(this.dirtyLog!.bytes.length, []);
      if (problem !== null) throw new Error(problem);
    }
  }

  /**
   * Marks the pages of a guest write dirty: bit (addr / 4096) of the log, little-endian bit
   * order in bytes (log[page / 8] |= 1 << page % 8), with atomic ORs (the front-end reads and
   * clears the log concurrently). Writes to a used ring logged with VHOST_VRING_F_LOG are
   * marked at its log address.
   */
  private logWrite(addr: number, len: number): void {
    const log = this.dirtyLog;
    if (log === null || len <= 0) return;
    for (let i = 0; i < this.rings.length; i++) {
      const ring = this.rings[i];
      if (ring.logUsed && addr >= ring.used && addr < ring.used + this.usedLength(i)) {
        addr = ring.logAddr + (addr - ring.used);
        break;
      }
    }
    log.writes++;
    const bytes = log.bytes;
    const last = Math.floor((addr + len - 1) / LOG_PAGE);
    for (let page = Math.floor(addr / LOG_PAGE); page <= last; ) {
      const byte = Math.floor(page / 8);
      const upto = Math.min(last, byte * 8 + 7);
      if (byte >= bytes.length) {
        // Checked when the log, a region or a ring arrived: not reached with a sound front-end.
        queueMicrotask(() => this.close(`a write at ${hex(addr)} (+${len}) is beyond the dirty log (${bytes.length} bytes): the migration would miss it`));
        return;
      }
      Atomics.or(bytes, byte, ((1 << ((upto % 8) + 1)) - 1) & ~((1 << (page % 8)) - 1));
      page = upto + 1;
    }
  }

  private unmapLog(): void {
    if (this.dirtyLog === null) return;
    this.n.munmap(this.dirtyLog.buffer);
    this.dirtyLog = null;
    this.updateLogging();
  }

  private setKick(index: number, fd: number): void {
    const r = this.rings[index];
    r.watch?.close();
    if (r.kickFd >= 0) this.n.close(r.kickFd);
    r.kickFd = fd;
    r.watch = null;
    if (fd < 0) return;
    r.watch = this.n.watch(
      fd,
      true,
      false,
      this.guarded(`ring ${index} kick`, () => {
        this.n.eventfdRead(fd);
        if (r.started) {
          if (r.enabled) this.device.notify(index);
          return;
        }
        const problem = this.startRing(index);
        if (problem !== null) this.close(`ring ${index}: ${problem}`);
      }),
    );
  }

  /**
   * A callback the event loop runs for an fd: whatever it throws (a kick fd that is not an
   * eventfd, a socket error) ends the connection with the reason. An exception escaping a
   * native watch callback would end the whole process.
   */
  /** The message's fd, checked to be an eventfd before anything uses it (left in `fds` otherwise, for close()). */
  private eventfdFrom(fds: number[], what: string): number {
    if (!isEventfd(fds[0])) throw new Refusal(`the ${what} fd is not an eventfd`);
    return fds.shift()!;
  }

  private guarded(what: string, fn: (events: number) => void): (events: number) => void {
    return (events: number) => {
      try {
        fn(events);
        this.checkFaults();
      } catch (err) {
        this.close(`${what}: ${err instanceof Error ? err.message : String(err)}`);
      }
    };
  }

  /**
   * A ring starts on its first kick (vhost-user.rst "Ring states"), from where SET_VRING_BASE
   * says it stands: a ring stopped and started again (QEMU's stop/cont, a re-negotiation) goes
   * on after the last request served, never serves one twice. Split rings: the next available
   * index from the base, the used index as the guest's used ring holds it (what QEMU and
   * libvhost-user do). Packed rings: both slots and wrap counters from the base (bits 0-14
   * avail, 15 its wrap counter, 16-30 used, 31 its wrap counter). Returns why the position
   * is unusable, or null.
   */
  private startRing(index: number): string | null {
    const r = this.rings[index];
    const dev = this.device;
    const q = dev.queues[index];
    if (q === undefined) return 'no such queue';
    let start: RingPosition;
    if (q.format === 'packed') {
      start = { avail: r.base & 0x7fff, availWrap: (r.base & 0x8000) !== 0, used: (r.base >>> 16) & 0x7fff, usedWrap: (r.base & 0x80000000) !== 0 };
      if (start.avail >= r.size || start.used >= r.size) return `packed ring base 0x${r.base.toString(16)} points outside a ring of ${r.size}`;
    } else {
      if (r.base > 0xffff) return `split ring base ${r.base} is not a 16-bit index`;
      const usedIdx = this.memory !== null && this.memory.isBacked(r.used + 2, 2) ? this.memory.readU16(r.used + 2) : 0;
      if (((r.base - usedIdx) & 0xffff) > r.size) return `base ${r.base} is more than the ring size ${r.size} ahead of the used index ${usedIdx}`;
      start = { avail: r.base, availWrap: true, used: usedIdx, usedWrap: true };
    }
    const tracked = this.recoverInflight(index, r, q.format, start);
    if (typeof tracked === 'string') return tracked;
    r.started = true;
    q.setObserver(tracked?.region ?? null);
    q.serveFirst(tracked?.resubmit ?? []);
    this.log.info(`vhost-user: ring ${index} started at available ${start.avail}${q.format === 'packed' ? `/${+start.availWrap}` : ''}, used ${start.used}${q.format === 'packed' ? `/${+start.usedWrap}` : ''}`);
    if (q.active) {
      // Stopped by GET_VRING_BASE but not reset: the front-end restarts the ring itself (the
      // guest's driver did not touch the queue, so the device's setup rules do not apply).
      q.setSize(r.size);
      q.setAddresses({ desc: r.desc, avail: r.avail, used: r.used });
      if (q.activate(dev.queueFeatures(), start) && r.enabled) dev.notify(index);
      return null;
    }
    dev.setQueueSize(index, r.size);
    dev.setQueueAddresses(index, r.desc, r.avail, r.used);
    if (!this.live) {
      this.live = true;
      dev.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
    }
    // The queue starts from the ring's position, not from its beginning: activated here (after
    // DRIVER_OK, so that a layout it refuses is a device error the front-end is told of with a
    // configuration change), then enabled in the device core, which leaves an active queue as is.
    if (!q.activate(dev.queueFeatures(), start)) return null; // the verdict ends the session
    dev.enableQueue(index);
    if (r.enabled) dev.notify(index);
    return null;
  }

  /**
   * The ring's inflight region, if the front-end gave one: a fresh one is initialised at `start`;
   * one a previous back-end filled is repaired and read: the buffers it took and never returned
   * are served again first, and `start` moves after them (what libvhost-user does for split
   * rings: the base the front-end restored after losing its back-end is the used position,
   * which would serve some twice when requests finished out of order; for packed rings QEMU
   * cannot restore a base at all). Returns why the region is unusable, or null (no region).
   */
  private recoverInflight(index: number, r: Ring, format: 'split' | 'packed', start: RingPosition): { region: SplitInflightRegion | PackedInflightRegion; resubmit: PriorBuffer[] } | null | string {
    const region = this.inflight?.regions[index];
    if (region === undefined) return null;
    if (region instanceof PackedInflightRegion !== (format === 'packed')) {
      this.log.warn(`vhost-user: ring ${index} is ${format}, its inflight region is not: not tracked`);
      return null;
    }
    if (region.queueSize !== r.size) {
      this.log.warn(`vhost-user: ring ${index} has ${r.size} entries, its inflight region ${region.queueSize}: not tracked`);
      return null;
    }
    let resubmit: PriorBuffer[] = [];
    try {
      if (region instanceof PackedInflightRegion) {
        const mem = this.requireMemory();
        const got = region.recover((slot) => mem.readU16(r.desc + slot * 16 + 14), start.used, start.usedWrap);
        if (got !== null) {
          resubmit = got.resubmit;
          Object.assign(start, { avail: got.avail, availWrap: got.availWrap, used: got.used, usedWrap: got.usedWrap });
        }
      } else {
        const got = region.recover(start.used);
        if (got !== null) {
          resubmit = got.resubmit.map((head) => ({ head }));
          start.avail = (got.usedIdx + resubmit.length) & 0xffff;
        }
      }
    } catch (err) {
      return `inflight region: ${err instanceof Error ? err.message : String(err)}`;
    }
    if (resubmit.length > 0) this.log.info(`vhost-user: ring ${index} serves again ${resubmit.length} request(s) a previous back-end took and never finished`);
    return { region, resubmit };
  }

  /**
   * Stops rings (GET_VRING_BASE, SET_STATUS 0): no kicks are taken and no new request is,
   * the requests in progress finish into the used ring (the front-end waits for the reply
   * meanwhile, and so do its later messages), then each ring's position is kept in its base
   * and `then` runs. Without the wait a request taken but not finished would be lost: the
   * position says it was served.
   */
  private stopRings(indices: number[], then: () => void): void {
    for (const i of indices) {
      const r = this.rings[i];
      r.watch?.close();
      r.watch = null;
      const q = this.device.queues[i];
      if (r.started && q !== undefined) q.pause();
    }
    this.afterSettled('ring stop', (settled) => {
      if (!settled) this.log.warn(`vhost-user: requests still in progress after ${SETTLE_TIMEOUT_MS} ms; the rings stop without them`);
      for (const i of indices) this.keepPosition(i);
      then();
    });
  }

  /**
   * Runs `then(true)` once the device has no request in progress, or `then(false)` after
   * SETTLE_TIMEOUT_MS. Meanwhile the socket is not watched: later messages wait in it until
   * the answer. What `then` throws after a wait ends the connection, named by `what`.
   */
  private afterSettled(what: string, then: (settled: boolean) => void): void {
    if (this.device.settled()) return then(true);
    const deadline = Date.now() + SETTLE_TIMEOUT_MS;
    const poll = () => {
      this.settling = null;
      if (this.fd < 0) return; // the connection ended meanwhile
      const settled = this.device.settled();
      if (!settled && Date.now() < deadline) {
        this.settling = setTimeout(poll, 1);
        return;
      }
      try {
        then(settled);
      } catch (err) {
        return this.close(`${what}: ${err instanceof Error ? err.message : String(err)}`);
      }
      this.updateWatch();
      if (this.watching.read) this.readable(); // the messages that waited
    };
    this.settling = setTimeout(poll, 1);
    this.updateWatch(); // no reading meanwhile
  }

  /** A stopped ring's position goes into its base (what GET_VRING_BASE answers and a restart uses). */
  private keepPosition(index: number): void {
    const r = this.rings[index];
    // A ring that never started (or was stopped before) still stands where it was left; so
    // does one whose device was reset meanwhile.
    if (!r.started) return;
    r.started = false;
    const q = this.device.queues[index];
    if (q === undefined || !q.active) return;
    const p = q.position();
    this.log.info(`vhost-user: ring ${index} stopped at available ${p.avail}, used ${p.used}`);
    r.base =
      q.format === 'packed'
        ? ((p.avail & 0x7fff) | (p.availWrap ? 0x8000 : 0) | ((p.used & 0x7fff) << 16) | (p.usedWrap ? 0x80000000 : 0)) >>> 0
        : p.avail & 0xffff;
  }

  private unmapAll(): void {
    for (const slot of this.slots) for (const b of slot.maps) this.n.munmap(b);
    this.slots = [];
    this.memory = null;
  }

  private resetState(): void {
    this.session = { protocolFeaturesOffered: true, protocolFeatures: 0n, numQueues: this.device.numQueues };
    this.rings = Array.from({ length: this.device.numQueues }, () => ({
      size: 0, desc: 0, avail: 0, used: 0, logUsed: false, logAddr: 0, base: 0, kickFd: -1, callFd: -1, watch: null, started: false, enabled: false,
    }));
    this.live = false;
  }

  /** Ends the connection: fds closed, rings stopped, memory unmapped, device reset. */
  close(reason = 'closed', extraFds: number[] = []): void {
    for (const fd of extraFds) this.n.close(fd);
    if (this.fd < 0) return;
    this.lastError = reason;
    if (reason !== 'front-end closed the connection' && reason !== 'closed') this.log.warn(`vhost-user: ${reason}; closing the connection`);
    // Replies still queued go out if the socket takes them now (a NACK before a refusal's close).
    try {
      if (reason !== 'front-end closed the connection') this.flush();
    } catch {
      // the front-end is gone
    }
    for (const o of this.out) for (const fd of o.fds) this.n.close(fd);
    this.out = [];
    this.outBytes = 0;
    this.connWatch?.close();
    this.connWatch = null;
    this.watching = { read: false, write: false };
    if (this.settling !== null) clearTimeout(this.settling);
    this.settling = null;
    for (const r of this.rings) {
      r.watch?.close();
      if (r.kickFd >= 0) this.n.close(r.kickFd);
      if (r.callFd >= 0) this.n.close(r.callFd);
    }
    this.rings = [];
    if (this.backendReqFd >= 0) this.n.close(this.backendReqFd);
    this.backendReqFd = -1;
    this.n.close(this.fd);
    this.fd = -1;
    this.device.reset();
    this.unmapAll();
    this.unmapLog();
    this.logAll = false;
    this.unmapInflight();
    this.onClose();
  }

  get features(): bigint {
    return this.ackedFeatures;
  }
}
