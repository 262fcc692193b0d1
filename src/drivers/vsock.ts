/**
 * Socket driver (spec 5.10): the guest side of virtio-vsock. Reads guest_cid, keeps the rx
 * queue full of fixed-size receive buffers, sends what the {@link VsockEngine} produces through
 * a fixed pool of transmit buffers, and handles TRANSPORT_RESET (re-reads guest_cid, ends the
 * connections, keeps the listeners: vsock.device-events.driver.2/.3/.4). With a
 * {@link VsockDevice} over loopback it gives a driver <-> device pair with no guest at all;
 * the Node glue (src/node/vsock/) makes Duplex streams of its connections.
 *
 * Buffers are allocated once, at start: a packet costs no allocation beyond the received
 * payload handed to the application.
 */
import { DeviceId } from '../spec/constants.js';
import { bit } from '../spec/features.js';
import { HOST_CID, VSOCK_FEATURES, VsockConfig, VsockEvent, VsockHdr, VsockQueue, VsockType, isReservedCid } from '../spec/vsock.js';
import { DriverError, VirtioDriver, type VirtioDriverOptions } from '../driver/driver.js';
import type { DriverTransport } from '../driver/transport.js';
import type { DriverQueue } from '../virtqueue/queue.js';
import { VsockEngine, VsockError, type VsockAcceptHandler, type VsockConnection, type VsockEngineOptions } from '../vsock/engine.js';

/** A buffer of the driver's (the token of its queues: read it, do not commit it). */
export interface VsockBufferToken {
  /** 0 rx, 1 tx, 2 event. */
  readonly queue: number;
  /** Guest address of the buffer. */
  readonly addr: number;
}

/** VsockDriver's options: the driver core's (all optional), buffer counts and sizes, the engine's. */
export interface VsockDriverOptions extends Partial<VirtioDriverOptions>, VsockEngineOptions {
  /** Receive buffers kept in the rx queue (default 64; at most the queue size). */
  rxBuffers?: number;
  /** Payload bytes per receive buffer (default 4096, Linux's). */
  rxBufferSize?: number;
  /** Transmit buffers (default 32). */
  txBuffers?: number;
  /** Largest payload per transmitted packet (default 16 KiB). */
  txPayload?: number;
  /** Event buffers (default 4). */
  eventBuffers?: number;
}

const DRIVER_VSOCK_FEATURES = bit(VSOCK_FEATURES.STREAM) | bit(VSOCK_FEATURES.SEQPACKET) | bit(VSOCK_FEATURES.NO_IMPLIED_STREAM);

/** The guest side of a vsock device: listen on and connect from the guest's CID. */
export class VsockDriver extends VirtioDriver<VsockBufferToken> {
  /** The guest side engine: its connections and their buffers. */
  readonly engine: VsockEngine;
  private rxq: DriverQueue<VsockBufferToken> | null = null;
  private txq: DriverQueue<VsockBufferToken> | null = null;
  private evq: DriverQueue<VsockBufferToken> | null = null;
  private readonly rxCount: number;
  private readonly rxSize: number;
  private readonly txCount: number;
  private readonly txPayload: number;
  private readonly eventCount: number;
  private freeTx: VsockBufferToken[] = [];
  private readonly hdrBytes = new Uint8Array(VsockHdr.size);
  private readonly hdr = new DataView(this.hdrBytes.buffer);
  private flushing = false;
  private cid = 0n;
  /** guest_cid's halves, for the per-packet check. */
  private cidLow = 0;
  private cidHigh = 0;
  /** TRANSPORT_RESET events seen. */
  transportResets = 0;
  /** Called after a TRANSPORT_RESET was handled (guest_cid re-read, connections ended). */
  onTransportReset: (() => void) | null = null;

  /** A vsock driver over `transport`; start() initializes the device. */
  constructor(transport: DriverTransport, options: VsockDriverOptions = {}) {
    super(transport, { deviceId: DeviceId.SOCKET, deviceFeatures: DRIVER_VSOCK_FEATURES, queueSize: 128, ...options });
    this.rxCount = options.rxBuffers ?? 64;
    this.rxSize = options.rxBufferSize ?? 4096;
    this.txCount = options.txBuffers ?? 32;
    this.txPayload = options.txPayload ?? 16 * 1024;
    this.eventCount = options.eventBuffers ?? 4;
    this.engine = new VsockEngine(
      'driver',
      {
        violation: (clause, message, context) => {
          this.deviceViolation(clause, message, context);
        },
        wake: () => this.scheduleFlush(),
      },
      options,
    );
    this.engine.peerCid = BigInt(HOST_CID);
    this.onUsed = (q) => this.collect(q);
  }

  /** The guest's CID, as last read from guest_cid. */
  get guestCid(): bigint {
    return this.cid;
  }

  /** Initializes the device: guest_cid, the three queues, receive and event buffers. */
  async start(): Promise<void> {
    await this.init({
      check: (offered) => {
        // feature-bits.device.1 (SHOULD): a device offers NO_IMPLIED_STREAM.
        if ((offered & bit(VSOCK_FEATURES.NO_IMPLIED_STREAM)) === 0n) {
          this.deviceViolation('vsock.feature-bits.device.1', 'the device does not offer VIRTIO_VSOCK_F_NO_IMPLIED_STREAM', { offered: `0x${offered.toString(16)}` });
        }
      },
      setup: async () => {
        await this.readCid();
        this.rxq = await this.setupQueue(VsockQueue.RX);
        this.txq = await this.setupQueue(VsockQueue.TX);
        this.evq = await this.setupQueue(VsockQueue.EVENT);
      },
    });
    const f = this.features;
    const has = (b: number) => (f & bit(b)) !== 0n;
    this.engine.seqpacket = has(VSOCK_FEATURES.SEQPACKET);
    this.engine.stream = has(VSOCK_FEATURES.STREAM) || !has(VSOCK_FEATURES.NO_IMPLIED_STREAM);
    const rxq = this.rxq!;
    const evq = this.evq!;
    for (let i = 0; i < Math.min(this.rxCount, rxq.size); i++) this.postRx({ queue: VsockQueue.RX, addr: this.allocator.alloc(VsockHdr.size + this.rxSize, 8) });
    for (let i = 0; i < Math.min(this.eventCount, evq.size); i++) this.postEvent({ queue: VsockQueue.EVENT, addr: this.allocator.alloc(VsockEvent.size, 4) });
    this.freeTx = [];
    for (let i = 0; i < Math.min(this.txCount, this.txq!.size); i++) this.freeTx.push({ queue: VsockQueue.TX, addr: this.allocator.alloc(VsockHdr.size + this.txPayload, 8) });
    this.kick(rxq);
    this.kick(evq);
  }

  /** guest_cid: a reserved CID is the device's fault (vsock.receive-and-transmit.device.1). */
  private async readCid(): Promise<void> {
    const cid = await this.readConfig(async (r) => BigInt(await r(VsockConfig.guestCid, 8)));
    if (isReservedCid(cid)) {
      this.deviceViolation('vsock.receive-and-transmit.device.1', `guest_cid holds the reserved CID ${cid}`, { guestCid: String(cid) });
    }
    this.cid = cid;
    this.cidLow = Number(cid & 0xffffffffn);
    this.cidHigh = Number((cid >> 32n) & 0xffffffffn);
    this.engine.localCid = cid;
  }

  /** Accepts connections from the host to the guest's `port`. */
  listen(port: number, onConnection: VsockAcceptHandler): void {
    this.engine.listen(port, onConnection);
  }

  /** Stops accepting on `port`. */
  unlisten(port: number): void {
    this.engine.unlisten(port);
  }

  /** Connects to the host's (CID 2) `port`. */
  connect(port: number, type: number = VsockType.STREAM): VsockConnection {
    if (this.state !== 'live') throw new VsockError('closed', `the vsock driver is ${this.state}, not live`);
    return this.engine.connect(port, type);
  }

  private postRx(t: VsockBufferToken): void {
    this.rxq!.begin().addWritable(t.addr, VsockHdr.size + this.rxSize).commit(t);
  }

  private postEvent(t: VsockBufferToken): void {
    this.evq!.begin().addWritable(t.addr, VsockEvent.size).commit(t);
  }

  private scheduleFlush(): void {
    if (this.flushing) return;
    this.flushing = true;
    queueMicrotask(() => {
      this.flushing = false;
      this.flush();
    });
  }

  /** Sends what the engine has, while transmit buffers are free. */
  private flush(): void {
    const q = this.txq;
    if (q === null || this.state !== 'live') return;
    const mem = this.transport.memory;
    let sent = false;
    while (this.freeTx.length > 0 && this.engine.hasOutput()) {
      const t = this.freeTx[this.freeTx.length - 1];
      const payload = this.engine.produce(this.hdr, 0, this.txPayload);
      if (payload === null) break;
      mem.write(t.addr, this.hdrBytes);
      if (payload.length > 0) mem.write(t.addr + VsockHdr.size, payload);
      if (q.begin().addReadable(t.addr, VsockHdr.size + payload.length).commit(t) < 0) {
        // Cannot happen with fewer transmit buffers than queue entries; kept for a smaller queue.
        break;
      }
      this.freeTx.pop();
      sent = true;
    }
    if (sent) this.kick(q);
  }

  private collect(q: DriverQueue<VsockBufferToken>): void {
    let repost = false;
    do {
      let t: VsockBufferToken | undefined;
      while ((t = q.getUsed()) !== undefined) {
        if (t.queue === VsockQueue.TX) {
          this.freeTx.push(t);
          continue;
        }
        if (t.queue === VsockQueue.RX) {
          this.received(t, q.lastLen);
          if (this.state === 'live') this.postRx(t);
          repost = true;
          continue;
        }
        this.event(t, q.lastLen);
        if (this.state === 'live') this.postEvent(t);
        repost = true;
      }
    } while (q.enableInterrupts() && !q.broken);
    if (repost && this.state === 'live') this.kick(q);
    if (q.index === VsockQueue.TX || this.engine.hasOutput()) this.flush();
  }

  private received(t: VsockBufferToken, used: number): void {
    if (used < VsockHdr.size) return;
    const mem = this.transport.memory;
    mem.read(t.addr, this.hdrBytes);
    const v = this.hdr;
    const len = v.getUint32(VsockHdr.len, true);
    if (len > used - VsockHdr.size) return; // a header claiming more than the device wrote
    // Compared as two 32-bit halves: no bigint per packet.
    if (v.getUint32(VsockHdr.dstCid, true) !== this.cidLow || v.getUint32(VsockHdr.dstCid + 4, true) !== this.cidHigh) {
      this.engine.unroutable(v, 0);
      return;
    }
    let payload = EMPTY;
    if (len > 0) {
      payload = new Uint8Array(len);
      mem.read(t.addr + VsockHdr.size, payload);
    }
    this.engine.receive(v, 0, payload);
  }

  /** TRANSPORT_RESET: connections end, guest_cid is read again, listeners stay (5.10.6.7). */
  private event(t: VsockBufferToken, used: number): void {
    if (used < VsockEvent.size) return;
    const id = this.transport.memory.readU32(t.addr);
    if (id !== VsockEvent.TRANSPORT_RESET) return;
    this.transportResets++;
    this.engine.resetTransport();
    this.readCid().then(
      () => this.onTransportReset?.(),
      (err: unknown) => this.breakDown(new DriverError('device-violation', `guest_cid unreadable after TRANSPORT_RESET: ${String(err)}`)),
    );
  }

  protected override onBroken(_err: DriverError): void {
    this.engine.resetTransport();
  }
}

const EMPTY = new Uint8Array(0);
