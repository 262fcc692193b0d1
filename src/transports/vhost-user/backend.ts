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
 */
import { GuestMemory, type MemoryRegionInit } from '../../memory/guest-memory.js';
import type { DeviceHost, VirtioDevice } from '../../core/device.js';
import type { Resubmit, RingPosition } from '../../core/virtqueue/queue.js';
import { Status } from '../../core/constants.js';
import { native, type NativeAddon } from '../../native/index.js';
import { Feature } from '../../core/constants.js';
import { PackedInflightRegion, SplitInflightRegion, packedInflightQueueSize, splitInflightQueueSize } from './inflight.js';
import {
  F_PROTOCOL_FEATURES,
  HEADER_SIZE,
  ProtocolFeature,
  Req,
  decode,
  encodeReply,
  parseHeader,
  requestName,
  statePayload,
  u64Payload,
  BackendReq,
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
  (1n << BigInt(ProtocolFeature.INFLIGHT_SHMFD));

/** Largest piece of a memory region mapped into one ArrayBuffer. */
const MAP_CHUNK = 1 << 30;

/**
 * How long a ring stop waits for requests in progress (a disk that stopped answering) before
 * it gives up on them: the front-end is blocked on the reply meanwhile.
 */
const SETTLE_TIMEOUT_MS = 30_000;

interface Ring {
  size: number;
  desc: number;
  avail: number;
  used: number;
  base: number;
  kickFd: number;
  callFd: number;
  watch: { close(): void } | null;
  started: boolean;
  enabled: boolean;
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
  private maps: ArrayBuffer[] = [];
  private memory: GuestMemory | null = null;
  private rings: Ring[] = [];
  private readonly header = new Uint8Array(HEADER_SIZE);
  private readonly payload = new Uint8Array(4096);
  private live = false;
  /** The inflight buffer (GET/SET_INFLIGHT_FD), mapped, with one region per queue. */
  private inflight: { map: ArrayBuffer; regions: (SplitInflightRegion | PackedInflightRegion)[] } | null = null;
  /** Set while a stop waits for requests in progress: later messages wait in the socket. */
  private settling: ReturnType<typeof setTimeout> | null = null;
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
    this.resetState();
    this.connWatch = this.n.watch(fd, true, false, () => this.readable());
  }

  // ---------------------------------------------------------------- DeviceHost

  interrupt(index: number): void {
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
    while (this.settling === null && this.fd >= 0) {
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
        return this.close(`${requestName(h.request)}: ${err instanceof Error ? err.message : String(err)}`, fds);
      }
    }
  }

  private reply(request: number, payload?: Uint8Array, fds: number[] = []): void {
    this.n.sendmsg(this.fd, encodeReply(request, payload), fds);
  }

  private handle(d: Decoded, fds: number[]): void {
    const m = d.message;
    let replied = false;
    const reply = (p?: Uint8Array, replyFds: number[] = []) => {
      this.reply(d.header.request, p, replyFds);
      replied = true;
      for (const fd of replyFds) this.n.close(fd); // the front-end has its own copy now
    };
    switch (d.header.request) {
      case Req.GET_FEATURES:
        reply(u64Payload(this.device.offered | (1n << BigInt(F_PROTOCOL_FEATURES))));
        break;
      case Req.SET_FEATURES:
        if (m.kind === 'u64') this.setFeatures(m.value & ~(1n << BigInt(F_PROTOCOL_FEATURES)), (m.value & (1n << BigInt(F_PROTOCOL_FEATURES))) !== 0n);
        break;
      case Req.GET_PROTOCOL_FEATURES:
        // CONFIG only for devices with a config space (QEMU warns about it otherwise).
        reply(u64Payload(this.device.config.length > 0 ? BACKEND_PROTOCOL_FEATURES : BACKEND_PROTOCOL_FEATURES & ~(1n << BigInt(ProtocolFeature.CONFIG))));
        break;
      case Req.SET_PROTOCOL_FEATURES:
        if (m.kind === 'u64') this.session.protocolFeatures = m.value & BACKEND_PROTOCOL_FEATURES;
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
        this.device.reset();
        this.clearInflight();
        this.live = false;
        break;
      case Req.SET_STATUS:
        if (m.kind === 'u64' && (m.value & 0xffn) === 0n) {
          // Status 0 (QEMU's stop, before it asks where each ring stands): requests in progress
          // finish into the used rings first, then the device resets. The ack waits for both.
          replied = true;
          this.stopRings(this.rings.map((_, i) => i), () => {
            this.device.reset();
            this.clearInflight();
            this.live = false;
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
        fds.length = 0;
        break;
      case Req.SET_VRING_NUM:
        if (m.kind === 'state') this.rings[m.index].size = m.num;
        break;
      case Req.SET_VRING_BASE:
        if (m.kind === 'state') this.rings[m.index].base = m.num >>> 0;
        break;
      case Req.SET_VRING_ADDR:
        if (m.kind === 'addr') {
          const mem = this.requireMemory();
          const r = this.rings[m.index];
          // Ring addresses are front-end virtual addresses: translate through the regions.
          r.desc = mem.userToGuest(m.desc, 16);
          r.avail = mem.userToGuest(m.avail, 4);
          r.used = mem.userToGuest(m.used, 4);
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
        if (m.kind === 'vring-fd') this.setKick(m.index, m.noFd ? -1 : fds.shift()!);
        break;
      case Req.SET_VRING_CALL:
        if (m.kind === 'vring-fd') {
          const r = this.rings[m.index];
          if (r.callFd >= 0) this.n.close(r.callFd);
          r.callFd = m.noFd ? -1 : fds.shift()!;
        }
        break;
      case Req.SET_VRING_ERR:
        break; // errors are reported through the monitor and DEVICE_NEEDS_RESET
      case Req.SET_VRING_ENABLE:
        if (m.kind === 'state') {
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

  private setFeatures(features: bigint, protocolFeatures: boolean): void {
    const dev = this.device;
    if (dev.getStatus() & Status.FEATURES_OK) {
      dev.reset();
      this.live = false;
    }
    dev.setStatus(Status.ACKNOWLEDGE);
    dev.setStatus(Status.ACKNOWLEDGE | Status.DRIVER);
    dev.setDriverFeatures(features);
    dev.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
    this.ackedFeatures = features;
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
    const map = this.n.mmap(fd, offset, size, true);
    this.unmapInflight();
    const per = this.inflightQueueSize(queueSize);
    const packed = this.packedRings();
    this.inflight = { map, regions: Array.from({ length: numQueues }, (_, i) => (packed ? new PackedInflightRegion(map, i * per, queueSize) : new SplitInflightRegion(map, i * per, queueSize))) };
  }

  /** After a reset: nothing is in flight; each region starts over at its ring's next start. */
  private clearInflight(): void {
    for (const region of this.inflight?.regions ?? []) region.clear();
  }

  private packedRings(): boolean {
    return (this.ackedFeatures & (1n << BigInt(Feature.RING_PACKED))) !== 0n;
  }

  private inflightQueueSize(queueSize: number): number {
    return this.packedRings() ? packedInflightQueueSize(queueSize) : splitInflightQueueSize(queueSize);
  }

  private unmapInflight(): void {
    if (this.inflight === null) return;
    for (const q of this.device.queues) q.inflight = null; // nothing may write into an unmapped buffer
    this.n.munmap(this.inflight.map);
    this.inflight = null;
  }

  private requireMemory(): GuestMemory {
    if (this.memory === null) throw new Error('no memory table yet');
    return this.memory;
  }

  private setMemTable(regions: MemRegion[], fds: number[]): void {
    this.unmapAll();
    const inits: MemoryRegionInit[] = [];
    regions.forEach((r, i) => {
      // ArrayBuffers stay well under Node's limits: big regions are mapped in 1 GiB pieces,
      // which GuestMemory joins back (copies and chains cross piece boundaries).
      for (let off = 0; off < r.size; off += MAP_CHUNK) {
        const len = Math.min(MAP_CHUNK, r.size - off);
        const buffer = this.n.mmap(fds[i], r.mmapOffset + off, len, true);
        this.maps.push(buffer);
        inits.push({ guestAddr: r.guestAddr + off, size: len, buffer, userAddr: r.userAddr + off, concurrent: true });
      }
      this.n.close(fds[i]);
    });
    this.memory = new GuestMemory(inits);
    // The device follows the new table (attach re-creates its queues; the state machine stays).
    this.device.attach(this.memory, this);
  }

  private setKick(index: number, fd: number): void {
    const r = this.rings[index];
    r.watch?.close();
    if (r.kickFd >= 0) this.n.close(r.kickFd);
    r.kickFd = fd;
    r.watch = null;
    if (fd < 0) return;
    r.watch = this.n.watch(fd, true, false, () => {
      this.n.eventfdRead(fd);
      if (r.started) {
        if (r.enabled) this.device.notify(index);
        return;
      }
      const problem = this.startRing(index);
      if (problem !== null) this.close(`ring ${index}: ${problem}`);
    });
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
    q.inflight = tracked?.region ?? null;
    q.resubmit(tracked?.resubmit ?? []);
    this.log.info(`vhost-user: ring ${index} started at available ${start.avail}${q.format === 'packed' ? `/${+start.availWrap}` : ''}, used ${start.used}${q.format === 'packed' ? `/${+start.usedWrap}` : ''}`);
    if (q.active) {
      // Stopped by GET_VRING_BASE but not reset: the front-end restarts the ring itself (the
      // guest's driver did not touch the queue, so the device's setup rules do not apply).
      q.size = r.size;
      q.descAddr = r.desc;
      q.availAddr = r.avail;
      q.usedAddr = r.used;
      q.startAt = start;
      if (q.activate(dev.queueFeatures()) && r.enabled) dev.notify(index);
      return null;
    }
    dev.setQueueSize(index, r.size);
    dev.setQueueAddresses(index, r.desc, r.avail, r.used);
    q.startAt = start;
    dev.enableQueue(index);
    if (!this.live) {
      this.live = true;
      dev.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
    }
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
  private recoverInflight(index: number, r: Ring, format: 'split' | 'packed', start: RingPosition): { region: SplitInflightRegion | PackedInflightRegion; resubmit: Resubmit[] } | null | string {
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
    let resubmit: Resubmit[] = [];
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
      if (r.started && q !== undefined) q.paused = true;
    }
    const finish = (settled: boolean) => {
      if (!settled) this.log.warn(`vhost-user: requests still in progress after ${SETTLE_TIMEOUT_MS} ms; the rings stop without them`);
      for (const i of indices) this.keepPosition(i);
      then();
    };
    if (this.device.settled()) return finish(true);
    // Not watched meanwhile: the socket keeps later messages until the stop is answered.
    this.connWatch?.close();
    this.connWatch = null;
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
        finish(settled);
      } catch (err) {
        return this.close(`ring stop: ${err instanceof Error ? err.message : String(err)}`);
      }
      this.connWatch = this.n.watch(this.fd, true, false, () => this.readable());
      this.readable(); // the messages that waited
    };
    this.settling = setTimeout(poll, 1);
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
    for (const b of this.maps) this.n.munmap(b);
    this.maps = [];
    this.memory = null;
  }

  private resetState(): void {
    this.session = { protocolFeaturesOffered: true, protocolFeatures: 0n, numQueues: this.device.numQueues };
    this.rings = Array.from({ length: this.device.numQueues }, () => ({
      size: 0, desc: 0, avail: 0, used: 0, base: 0, kickFd: -1, callFd: -1, watch: null, started: false, enabled: false,
    }));
    this.live = false;
  }

  /** Ends the connection: fds closed, rings stopped, memory unmapped, device reset. */
  close(reason = 'closed', extraFds: number[] = []): void {
    for (const fd of extraFds) this.n.close(fd);
    if (this.fd < 0) return;
    this.lastError = reason;
    if (reason !== 'front-end closed the connection' && reason !== 'closed') this.log.warn(`vhost-user: ${reason}; closing the connection`);
    this.connWatch?.close();
    this.connWatch = null;
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
    this.unmapInflight();
    this.onClose();
  }

  get features(): bigint {
    return this.ackedFeatures;
  }
}
