/**
 * A raw virtio-net driver peer for tests (issue 15): it builds every buffer itself, so a test
 * can send any header bytes, any control command and any receive-buffer layout, conforming or
 * not (the negative tests of the net device's driver clauses), and read back exactly what the
 * device wrote. Not a network driver for applications (that is NetDriver, src/drivers/net.ts).
 *
 * Browser-safe: no Node import.
 */
import { DeviceId, Feature } from '../spec/constants.js';
import { bit } from '../spec/features.js';
import { NET_FEATURES as F, NET_HDR, NET_HDR_SIZE } from '../spec/net.js';
import { VirtioDriver, type VirtioDriverOptions } from '../driver/driver.js';
import type { DriverTransport } from '../driver/transport.js';
import type { DriverQueue } from '../virtqueue/queue.js';

/** One buffer the peer posted, as its token. */
interface PeerToken {
  kind: 'rx' | 'tx' | 'ctrl';
  addr: number;
  len: number;
  /** ctrl: where the ack byte is; resolves with it. */
  ack?: (v: number) => void;
  ackAddr?: number;
}

/** A frame the device delivered: the header bytes and the frame, with the buffers it spanned. */
export interface PeerFrame {
  header: Uint8Array;
  frame: Uint8Array;
  /** Used lengths of the buffers it spanned, in order. */
  lens: number[];
  /** The receive queue it came on. */
  queue: number;
}

/** Options of a {@link NetTestPeer}. */
export interface NetTestPeerOptions extends Partial<VirtioDriverOptions> {
  /** Net feature bits to accept when offered (default: every one the device offers). */
  netFeatures?: bigint;
  /** Receive buffers posted at start (default 16) and their size (default 2048). */
  rxBuffers?: number;
  rxBufferSize?: number;
  /** Queue pairs to set up (default 1). */
  pairs?: number;
  /** Post a new receive buffer for each one used (default true); false lets the ring run dry. */
  refill?: boolean;
}

/** Every net feature bit this peer knows how to drive. */
export const NET_PEER_ALL_FEATURES = [
  F.CSUM, F.GUEST_CSUM, F.CTRL_GUEST_OFFLOADS, F.MTU, F.MAC, F.GUEST_TSO4, F.GUEST_TSO6, F.GUEST_ECN, F.GUEST_UFO, F.HOST_TSO4, F.HOST_TSO6, F.HOST_ECN,
  F.HOST_UFO, F.MRG_RXBUF, F.STATUS, F.CTRL_VQ, F.CTRL_RX, F.CTRL_VLAN, F.CTRL_RX_EXTRA, F.GUEST_ANNOUNCE, F.MQ, F.CTRL_MAC_ADDR, F.GUEST_USO4, F.GUEST_USO6, F.HOST_USO,
].reduce((s, b) => s | bit(b), 0n);

/** A raw net driver: post receive buffers, transmit header + frame bytes, send control commands. */
export class NetTestPeer extends VirtioDriver<PeerToken> {
  /** Frames received, oldest first (take them with `received.shift()`). */
  readonly received: PeerFrame[] = [];
  /** Called after each received frame. */
  onReceive: ((f: PeerFrame) => void) | null = null;
  private partial: PeerFrame | null = null;
  private partialLeft = 0;
  private readonly rxCount: number;
  private readonly rxSize: number;
  private readonly refill: boolean;
  private readonly pairs: number;

  /** A peer over `transport`; start() initializes the device. */
  constructor(transport: DriverTransport, options: NetTestPeerOptions = {}) {
    super(transport, {
      deviceId: DeviceId.NET,
      deviceFeatures: options.netFeatures ?? NET_PEER_ALL_FEATURES,
      transportFeatures: bit(Feature.VERSION_1) | bit(Feature.INDIRECT_DESC) | bit(Feature.EVENT_IDX),
      queueSize: 64,
      ...options,
    });
    this.rxCount = options.rxBuffers ?? 16;
    this.rxSize = options.rxBufferSize ?? 2048;
    this.pairs = options.pairs ?? 1;
    this.refill = options.refill ?? true;
    this.onUsed = (q) => this.collect(q);
  }

  /** The header size the negotiated features imply. */
  get headerLength(): number {
    return this.negotiated(F.HASH_REPORT) ? NET_HDR_SIZE.HASH_REPORT : this.negotiated(Feature.VERSION_1) || this.negotiated(F.MRG_RXBUF) ? NET_HDR_SIZE.NUM_BUFFERS : NET_HDR_SIZE.LEGACY;
  }

  /** The controlq's index (2N with MQ, else 2). */
  get ctrlIndex(): number {
    return this.negotiated(F.MQ) ? 2 * this.maxPairs : 2;
  }

  private maxPairs = 1;

  /** Initializes the device with `pairs` queue pairs (and the control queue when negotiated), posting receive buffers. */
  async start(): Promise<void> {
    await this.init({
      setup: async () => {
        if (this.negotiated(F.MQ)) this.maxPairs = Number(await this.readConfig((r) => r(8, 2)));
        for (let p = 0; p < this.pairs; p++) {
          await this.setupQueue(2 * p);
          await this.setupQueue(2 * p + 1);
        }
        if (this.negotiated(F.CTRL_VQ)) await this.setupQueue(this.ctrlIndex);
      },
    });
    for (let p = 0; p < this.pairs; p++) this.postRx(this.rxCount, this.rxSize, p);
  }

  /** Posts `count` receive buffers of `size` bytes on receiveq `pair`+1. */
  postRx(count: number, size: number, pair = 0): void {
    const q = this.queues[2 * pair];
    for (let i = 0; i < count; i++) {
      const addr = this.allocator.alloc(size, 8);
      if (q.begin().addWritable(addr, size).commit({ kind: 'rx', addr, len: size }) < 0) {
        this.allocator.release(addr);
        break;
      }
    }
    this.kick(q);
  }

  /** Transmits `header` (as given: the test picks every byte) followed by `frame` on transmitq `pair`+1. */
  transmit(header: Uint8Array, frame: Uint8Array, pair = 0): void {
    const q = this.queues[2 * pair + 1];
    const addr = this.allocator.alloc(header.length + frame.length + 1, 8);
    this.transport.memory.write(addr, header);
    this.transport.memory.write(addr + header.length, frame);
    if (q.begin().addReadable(addr, header.length + frame.length).commit({ kind: 'tx', addr, len: 0 }) < 0) throw new Error('transmit queue full');
    this.kick(q);
  }

  /** A header of the negotiated size with these fields (num_buffers 0). */
  header(fields: { flags?: number; gsoType?: number; hdrLen?: number; gsoSize?: number; csumStart?: number; csumOffset?: number; numBuffers?: number } = {}): Uint8Array {
    const h = new Uint8Array(this.headerLength);
    const v = new DataView(h.buffer);
    v.setUint8(NET_HDR.FLAGS, fields.flags ?? 0);
    v.setUint8(NET_HDR.GSO_TYPE, fields.gsoType ?? 0);
    v.setUint16(NET_HDR.HDR_LEN, fields.hdrLen ?? 0, true);
    v.setUint16(NET_HDR.GSO_SIZE, fields.gsoSize ?? 0, true);
    v.setUint16(NET_HDR.CSUM_START, fields.csumStart ?? 0, true);
    v.setUint16(NET_HDR.CSUM_OFFSET, fields.csumOffset ?? 0, true);
    if (h.length >= 12) v.setUint16(NET_HDR.NUM_BUFFERS, fields.numBuffers ?? 0, true);
    return h;
  }

  /** Sends one control command (class, command, data) and resolves with the device's ack byte. */
  control(cls: number, cmd: number, data: Uint8Array = new Uint8Array(0)): Promise<number> {
    const q = this.queues[this.ctrlIndex];
    const addr = this.allocator.alloc(2 + data.length + 1, 8);
    const m = this.transport.memory;
    m.writeU8(addr, cls);
    m.writeU8(addr + 1, cmd);
    m.write(addr + 2, data);
    const ackAddr = addr + 2 + data.length;
    m.writeU8(ackAddr, 0xee);
    return new Promise<number>((resolve) => {
      if (q.begin().addReadable(addr, 2 + data.length).addWritable(ackAddr, 1).commit({ kind: 'ctrl', addr, len: 0, ack: resolve, ackAddr }) < 0) throw new Error('control queue full');
      this.kick(q);
    });
  }

  private collect(q: DriverQueue<PeerToken>): void {
    let rx = false;
    do {
      let t: PeerToken | undefined;
      while ((t = q.getUsed()) !== undefined) {
        const len = q.lastLen;
        if (t.kind === 'rx') this.takeRx(t, len, q.index);
        else if (t.kind === 'ctrl') t.ack!(this.transport.memory.readU8(t.ackAddr!));
        this.allocator.release(t.addr);
        // Keep the receive queue full: one new buffer for each one used.
        if (t.kind === 'rx' && this.refill) {
          rx = true;
          const addr = this.allocator.alloc(t.len, 8);
          q.begin().addWritable(addr, t.len).commit({ kind: 'rx', addr, len: t.len });
        }
      }
    } while (q.enableInterrupts() && !q.broken);
    if (rx) this.kick(q);
  }

  private takeRx(t: PeerToken, len: number, queue: number): void {
    const bytes = new Uint8Array(len);
    this.transport.memory.read(t.addr, bytes);
    const hl = this.headerLength;
    if (this.partial !== null) {
      const f = this.partial;
      const joined = new Uint8Array(f.frame.length + len);
      joined.set(f.frame);
      joined.set(bytes, f.frame.length);
      f.frame = joined;
      f.lens.push(len);
      if (--this.partialLeft === 0) this.finish(f);
      return;
    }
    const f: PeerFrame = { header: bytes.slice(0, hl), frame: bytes.slice(hl), lens: [len], queue };
    const n = this.negotiated(F.MRG_RXBUF) && len >= hl ? new DataView(f.header.buffer).getUint16(NET_HDR.NUM_BUFFERS, true) : 1;
    if (n > 1) {
      this.partial = f;
      this.partialLeft = n - 1;
      return;
    }
    this.finish(f);
  }

  private finish(f: PeerFrame): void {
    this.partial = null;
    this.received.push(f);
    this.onReceive?.(f);
  }
}
