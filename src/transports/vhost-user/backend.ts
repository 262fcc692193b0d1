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
import { Status } from '../../core/constants.js';
import { native, type NativeAddon } from '../../native/index.js';
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
  (1n << BigInt(ProtocolFeature.BACKEND_REQ));

/** Largest piece of a memory region mapped into one ArrayBuffer. */
const MAP_CHUNK = 1 << 30;

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
    for (;;) {
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

  private reply(request: number, payload?: Uint8Array): void {
    this.n.sendmsg(this.fd, encodeReply(request, payload));
  }

  private handle(d: Decoded, fds: number[]): void {
    const m = d.message;
    let replied = false;
    const reply = (p?: Uint8Array) => {
      this.reply(d.header.request, p);
      replied = true;
    };
    switch (d.header.request) {
      case Req.GET_FEATURES:
        reply(u64Payload(this.device.offered | (1n << BigInt(F_PROTOCOL_FEATURES))));
        break;
      case Req.SET_FEATURES:
        if (m.kind === 'u64') this.setFeatures(m.value & ~(1n << BigInt(F_PROTOCOL_FEATURES)));
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
        this.stopAll();
        this.device.reset();
        this.live = false;
        break;
      case Req.SET_STATUS:
        if (m.kind === 'u64') this.setStatus(Number(m.value & 0xffn));
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
        if (m.kind === 'state') this.rings[m.index].base = m.num;
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
        if (m.kind === 'state') reply(statePayload(m.index, this.stopRing(m.index)));
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
        if (m.kind === 'state') this.rings[m.index].enabled = m.num === 1;
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

  private setFeatures(features: bigint): void {
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
  }

  /**
   * SET_STATUS (VHOST_USER_PROTOCOL_F_STATUS): the front-end's view of the device status.
   * The back-end already walks the device through ACKNOWLEDGE..FEATURES_OK on SET_FEATURES and
   * to DRIVER_OK on the first kick, so only three writes change anything here: 0 resets the
   * device (rings stopped first, so a later GET_VRING_BASE still answers where each ring
   * stood), FAILED is recorded, and DRIVER_OK makes a negotiated device live before any kick.
   * Bits the device has not reached (FEATURES_OK before SET_FEATURES) are not invented:
   * GET_STATUS reports what the device really holds, which is how the front-end learns it.
   */
  private setStatus(value: number): void {
    const dev = this.device;
    if (value === 0) {
      this.stopAll();
      dev.reset();
      this.live = false;
      return;
    }
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
      if (!r.started) this.startRing(index);
      else if (r.enabled) this.device.notify(index);
    });
  }

  /** A ring starts on its first kick (vhost-user.rst "Ring states"). */
  private startRing(index: number): void {
    const r = this.rings[index];
    const dev = this.device;
    r.started = true;
    dev.setQueueSize(index, r.size);
    dev.setQueueAddresses(index, r.desc, r.avail, r.used);
    dev.enableQueue(index);
    if (!this.live) {
      this.live = true;
      dev.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
    }
    dev.notify(index);
  }

  /** GET_VRING_BASE: stop the ring and say where the next available buffer is. */
  private stopRing(index: number): number {
    const r = this.rings[index];
    r.watch?.close();
    r.watch = null;
    // A ring that never started (or was stopped before) still stands where it was left.
    if (!r.started) return r.base;
    r.started = false;
    const q = this.device.queues[index] as { format?: string; nextAvail?: number; availWrap?: boolean } | undefined;
    if (q?.format === 'packed') {
      // Packed rings: the next slot and, in bit 15, its wrap counter (vhost-user.rst).
      r.base = ((q.nextAvail ?? 0) & 0x7fff) | (q.availWrap === false ? 0 : 0x8000);
    } else if (q?.nextAvail !== undefined) {
      r.base = q.nextAvail & 0xffff;
    }
    // Kept: after a reset (SET_STATUS 0 comes before GET_VRING_BASE) the queue starts over.
    return r.base;
  }

  private stopAll(): void {
    for (let i = 0; i < this.rings.length; i++) this.stopRing(i);
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
    this.onClose();
  }

  get features(): bigint {
    return this.ackedFeatures;
  }
}
