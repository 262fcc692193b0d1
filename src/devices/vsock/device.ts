/**
 * Socket device (spec 5.10): rx (0), tx (1) and event (2) queues, guest_cid in the
 * configuration space. The host side is a {@link VsockEngine} with CID 2: host code listens on
 * ports (the guest connects to CID 2, port P) and connects to the guest's ports; the Node glue
 * (src/node/vsock/) turns its connections into Duplex streams and implements the hybrid vsock
 * unix sockets of Firecracker and Cloud Hypervisor.
 *
 * The tx queue is always drained (vsock.virtqueue-flow-control.device.1): replies the device
 * owes wait as flags on their connection (and RSTs for unknown flows in a bounded list), not in
 * rx buffers. rx buffers are taken only when there is a packet for them, so nothing is held
 * and nothing is copied per buffer. The event queue's buffers are held for TRANSPORT_RESET.
 *
 * Over vhost-user, QEMU keeps the event queue (vhost-user-vsock hands the back-end rx and tx
 * only); `transportReset` works where the device has its event queue (loopback, mmio, pci).
 *
 * Browser-safe: no Node import.
 */
import { DeviceId } from '../../spec/constants.js';
import { bit } from '../../spec/features.js';
import { HOST_CID, VSOCK_FEATURES, VSOCK_FEATURE_NAMES, VsockConfig, VsockEvent, VsockHdr, VsockQueue, VsockType, isReservedCid } from '../../spec/vsock.js';
import { VirtioDevice, type VirtioDeviceOptions } from '../../device/device.js';
import { DeviceError } from '../../device/errors.js';
import type { DeviceContext, DeviceType } from '../../device/type.js';
import { ChainReader, ChainWriter, DescriptorChain } from '../../virtqueue/chain.js';
import type { DeviceQueue } from '../../virtqueue/queue.js';
import type { Monitor } from '../../monitor/monitor.js';
import { VsockEngine, VsockError, type VsockAcceptHandler, type VsockConnection, type VsockEngineOptions, type VsockRequestHandler } from '../../vsock/engine.js';

/** How a vsock device is built. */
export interface VsockDeviceOptions extends VsockEngineOptions {
  /** The guest's CID (guest_cid): 3 to 0xfffffffe (default 3). A RangeError for a reserved CID (vsock.receive-and-transmit.device.1). */
  guestCid?: number | bigint;
  /** Offer VIRTIO_VSOCK_F_SEQPACKET (default true). */
  seqpacket?: boolean;
  /** Largest queue the driver may set up (default 256). */
  queueMaxSize?: number;
  /** VsockDevice only: the device's monitor. */
  monitor?: Monitor;
  /** VsockDevice only: more options for the device core. */
  core?: VirtioDeviceOptions;
}

/** Checks a guest CID: a bigint, or a RangeError for a reserved one. */
function guestCidOf(cid: number | bigint): bigint {
  const c = BigInt(cid);
  if (c < 0n || isReservedCid(c)) throw new RangeError(`guest CID ${cid} is reserved (0, 1, 2, 0xffffffff and CIDs above 32 bits: spec 5.10.4)`);
  return c;
}

/**
 * The vsock device type: hand it to a {@link VirtioDevice}, or use {@link VsockDevice}, which
 * does that from the same options. One per device.
 */
export class VsockDeviceType implements DeviceType {
  readonly deviceId = DeviceId.SOCKET;
  readonly name = 'virtio-vsock';
  readonly numQueues = 3;
  readonly queueMaxSize: number;
  readonly features: bigint;
  readonly featureNames = VSOCK_FEATURE_NAMES;
  readonly configSize = VsockConfig.size;
  /** The host side: listen / connect, the connections and their buffers. */
  readonly engine: VsockEngine;
  private cid: bigint;
  private ctx: DeviceContext | null = null;
  private readonly chain: DescriptorChain;
  private readonly reader = new ChainReader();
  private readonly writer = new ChainWriter();
  /** Scratch for one header (in and out): no allocation per packet. */
  private readonly hdrBytes = new Uint8Array(VsockHdr.size);
  private readonly hdr = new DataView(this.hdrBytes.buffer);
  /** Event buffers the driver gave, held for TRANSPORT_RESET. */
  private readonly events: DescriptorChain[] = [];
  /** TRANSPORT_RESET events owed to the driver (no event buffer was there). */
  private eventsOwed = 0;
  private readonly dirty = new Set<number>();
  private running = false;
  /** Counters for tests and logs. */
  readonly stats = { txPackets: 0, rxPackets: 0, dropped: 0, events: 0 };

  /** A type for one device (`monitor` and `core` are {@link VsockDevice}'s). */
  constructor(options: VsockDeviceOptions = {}) {
    this.cid = guestCidOf(options.guestCid ?? 3);
    this.queueMaxSize = options.queueMaxSize ?? 256;
    const f = VSOCK_FEATURES;
    // feature-bits.device.1: NO_IMPLIED_STREAM is offered, with STREAM said explicitly.
    this.features = bit(f.STREAM) | bit(f.NO_IMPLIED_STREAM) | (options.seqpacket === false ? 0n : bit(f.SEQPACKET));
    this.chain = DescriptorChain.forQueue(this.queueMaxSize);
    this.engine = new VsockEngine(
      'device',
      {
        violation: (clause, message, context) => {
          this.context.violation(clause, message, context);
        },
        wake: () => this.wake(VsockQueue.RX),
      },
      options,
    );
    this.engine.localCid = BigInt(HOST_CID);
    this.engine.peerCid = this.cid;
  }

  /** The guest's CID. */
  get guestCid(): bigint {
    return this.cid;
  }

  /** guest_cid as a number (it fits 32 bits: isReservedCid refuses the rest). */
  private get cidLow(): number {
    return Number(this.cid);
  }

  init(ctx: DeviceContext): void {
    if (this.ctx !== null) throw new DeviceError('type-in-use', 'this VsockDeviceType already serves a device: make one per device');
    this.ctx = ctx;
    ctx.config.setBigUint64(VsockConfig.guestCid, this.cid, true);
  }

  private get context(): DeviceContext {
    if (this.ctx === null) throw new DeviceError('not-attached', 'this VsockDeviceType is not part of a VirtioDevice yet');
    return this.ctx;
  }

  featuresOk(features: bigint): void {
    const f = VSOCK_FEATURES;
    const has = (b: number) => (features & bit(b)) !== 0n;
    this.engine.seqpacket = has(f.SEQPACKET);
    // feature-bits.device.2/.3: no vsock feature means stream; SEQPACKET without
    // NO_IMPLIED_STREAM keeps stream too.
    this.engine.stream = has(f.STREAM) || !has(f.NO_IMPLIED_STREAM);
  }

  // ---------------------------------------------------------------- host API

  /** Accepts the guest's connections to host port `port` (CID 2). */
  listen(port: number, onConnection: VsockAcceptHandler): void {
    this.engine.listen(port, onConnection);
  }

  /** Stops accepting on `port`. */
  unlisten(port: number): void {
    this.engine.unlisten(port);
  }

  /** Connects to the guest's `port` (a VsockError `closed` when the driver is not live). */
  connect(port: number, type: number = VsockType.STREAM): VsockConnection {
    if (this.ctx === null || !this.ctx.live) throw new VsockError('closed', 'the vsock driver is not live: no guest to connect to');
    return this.engine.connect(port, type);
  }

  /** Decides on guest connections to ports nobody listens on (the hybrid vsock glue). */
  set onRequest(handler: VsockRequestHandler | null) {
    this.engine.onRequest = handler;
  }

  /**
   * VIRTIO_VSOCK_EVENT_TRANSPORT_RESET (5.10.6.7): every connection closes (host side:
   * `transport-reset`), the guest's CID changes if `newCid` is given (configuration change),
   * and the driver gets the event (when it has an event buffer; else at its next one).
   */
  transportReset(newCid?: number | bigint): void {
    const ctx = this.context;
    if (newCid !== undefined) {
      const cid = guestCidOf(newCid);
      this.cid = cid;
      this.engine.peerCid = cid;
      ctx.updateConfig((v) => v.setBigUint64(VsockConfig.guestCid, cid, true));
    }
    this.engine.resetTransport();
    this.eventsOwed++;
    this.wake(VsockQueue.EVENT);
  }

  // ---------------------------------------------------------------- queues

  private wake(index: number): void {
    const ctx = this.ctx;
    const q = ctx?.queues[index];
    if (q === undefined) return;
    if (this.running) {
      this.dirty.add(index);
      return;
    }
    ctx!.resume(q);
  }

  process(q: DeviceQueue, ctx: DeviceContext): void {
    this.dirty.add(q.index);
    if (this.running) return; // the loop below picks it up
    this.running = true;
    try {
      while (this.dirty.size > 0) {
        const index = this.dirty.values().next().value as number;
        this.dirty.delete(index);
        const dq = ctx.queues[index];
        if (dq === undefined || !dq.active || !ctx.accepting) continue;
        if (index === VsockQueue.TX) this.transmit(dq, ctx);
        else if (index === VsockQueue.RX) this.receive(dq, ctx);
        else if (index === VsockQueue.EVENT) this.event(dq, ctx);
      }
    } finally {
      this.running = false;
    }
  }

  /** The driver's packets: each is read, judged and handed to the engine; always drained. */
  private transmit(q: DeviceQueue, ctx: DeviceContext): void {
    const chain = this.chain;
    const v = this.hdr;
    q.disableNotifications();
    do {
      while (q.pop(chain)) {
        this.stats.txPackets++;
        this.packet(chain, v, ctx);
        q.addUsed(chain.head, 0);
        if (!ctx.live) return;
      }
      ctx.complete(q);
    } while (q.enableNotifications());
    // Replies and data the engine has now go out on rx.
    if (this.engine.hasOutput()) this.dirty.add(VsockQueue.RX);
  }

  private packet(chain: DescriptorChain, v: DataView, ctx: DeviceContext): void {
    if (chain.readableBytes < VsockHdr.size) {
      this.stats.dropped++;
      return;
    }
    const r = this.reader.reset(ctx.memory, chain);
    r.readInto(this.hdrBytes, 0, VsockHdr.size);
    // Compared as two 32-bit halves: no bigint per packet (guest_cid's upper half is 0).
    if (v.getUint32(VsockHdr.srcCid, true) !== this.cidLow || v.getUint32(VsockHdr.srcCid + 4, true) !== 0) {
      // vsock.receive-and-transmit.driver.1: the source CID is guest_cid.
      const src = v.getBigUint64(VsockHdr.srcCid, true);
      ctx.violation('vsock.receive-and-transmit.driver.1', `driver sent a packet with src_cid ${src}, guest_cid is ${this.cid}`, { srcCid: String(src), guestCid: String(this.cid) });
      this.stats.dropped++;
      return;
    }
    const len = v.getUint32(VsockHdr.len, true);
    if (len > r.remaining) {
      // A header that claims more payload than the buffer holds: not a packet.
      this.stats.dropped++;
      return;
    }
    if (v.getUint32(VsockHdr.dstCid, true) !== HOST_CID || v.getUint32(VsockHdr.dstCid + 4, true) !== 0) {
      // Not for the host: this device routes to no other CID; an RST answers it.
      this.engine.unroutable(v, 0);
      return;
    }
    if (len > this.engine.bufAlloc) {
      // More than any flow may take (buffer-space-management.driver.1 at best): judged without
      // copying, so a driver cannot make the device allocate what its chains describe.
      this.engine.receive(v, 0, EMPTY, len);
      return;
    }
    let payload = EMPTY;
    if (len > 0) {
      payload = new Uint8Array(len);
      r.readInto(payload, 0, len);
    }
    this.engine.receive(v, 0, payload);
  }

  /** Packets for the driver, one per rx buffer, taken only while there is one to give. */
  private receive(q: DeviceQueue, ctx: DeviceContext): void {
    const chain = this.chain;
    const engine = this.engine;
    q.disableNotifications();
    do {
      while (engine.hasOutput() && q.pop(chain)) {
        const room = chain.writableBytes;
        if (room < VsockHdr.size || chain.readable > 0) {
          q.addUsed(chain.head, 0);
          this.stats.dropped++;
          continue;
        }
        const payload = engine.produce(this.hdr, 0, room - VsockHdr.size);
        const w = this.writer.reset(ctx.memory, chain);
        if (payload === null) {
          q.addUsed(chain.head, 0);
          continue;
        }
        w.write(this.hdrBytes);
        if (payload.length > 0) w.write(payload);
        q.addUsed(chain.head, VsockHdr.size + payload.length);
        this.stats.rxPackets++;
      }
      ctx.complete(q);
    } while (engine.hasOutput() && q.enableNotifications());
    if (!engine.hasOutput()) q.enableNotifications();
  }

  /** Event buffers: held until there is an event. */
  private event(q: DeviceQueue, ctx: DeviceContext): void {
    const chain = this.chain;
    q.disableNotifications();
    do {
      while (q.pop(chain)) this.events.push(DescriptorChain.copyOf(chain));
    } while (q.enableNotifications());
    let sent = false;
    while (this.eventsOwed > 0 && this.events.length > 0) {
      const c = this.events.shift()!;
      if (c.writableBytes < VsockEvent.size) {
        q.addUsed(c.head, 0);
        continue;
      }
      const e = new Uint8Array(VsockEvent.size);
      new DataView(e.buffer).setUint32(0, VsockEvent.TRANSPORT_RESET, true);
      this.writer.reset(ctx.memory, c).write(e);
      q.addUsed(c.head, VsockEvent.size);
      this.eventsOwed--;
      this.stats.events++;
      sent = true;
    }
    if (sent) ctx.complete(q);
  }

  inProgress(ctx: DeviceContext): number {
    let n = 0;
    for (const q of ctx.queues) n += q.inFlightCount;
    return n - this.events.length;
  }

  stop(): void {
    this.engine.resetTransport();
  }

  reset(): void {
    this.events.length = 0;
    this.eventsOwed = 0;
    this.engine.seqpacket = false;
    this.engine.stream = true;
  }

  queueReset(index: number): void {
    if (index === VsockQueue.EVENT) this.events.length = 0;
  }
}

const EMPTY = new Uint8Array(0);


/**
 * A vsock device: a {@link VirtioDevice} of {@link VsockDeviceType}. Host code listens and
 * connects through it (`listen`, `connect`), or through the Node glue's Duplex streams.
 */
export class VsockDevice extends VirtioDevice<VsockDeviceType> {
  /** A device of a new {@link VsockDeviceType} from `options`, judged by `options.monitor`. */
  constructor(options: VsockDeviceOptions = {}) {
    super(new VsockDeviceType(options), { monitor: options.monitor, ...options.core });
  }

  /** The host side engine. */
  get engine(): VsockEngine {
    return this.type.engine;
  }

  /** The guest's CID. */
  get guestCid(): bigint {
    return this.type.guestCid;
  }

  /** Accepts the guest's connections to host port `port`. */
  listen(port: number, onConnection: VsockAcceptHandler): void {
    this.type.listen(port, onConnection);
  }

  /** Stops accepting on `port`. */
  unlisten(port: number): void {
    this.type.unlisten(port);
  }

  /** Connects to the guest's `port`. */
  connect(port: number, type: number = VsockType.STREAM): VsockConnection {
    return this.type.connect(port, type);
  }

  /** TRANSPORT_RESET to the driver (see {@link VsockDeviceType.transportReset}). */
  transportReset(newCid?: number | bigint): void {
    this.type.transportReset(newCid);
  }
}
