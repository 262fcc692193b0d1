// A small virtio-net device for NetDriver's tests, written to be bent: it does what a device
// must by default (headers with num_buffers, mergeable buffers filled in order, MAC_ADDR_SET and
// ANNOUNCE_ACK applied before the ack) and each rule can be broken on purpose, so a negative
// test shows NetDriver naming the clause. Transmitted frames are kept (`sent`), and `inject`
// delivers a frame into the receive queue with any header the test wants.
import { VirtioDevice } from '../src/device/device.js';
import type { DeviceContext, DeviceType } from '../src/device/type.js';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { Monitor } from '../src/monitor/monitor.js';
import { DeviceId } from '../src/spec/constants.js';
import { bit } from '../src/spec/features.js';
import { NET_CONFIG, NET_CTRL, NET_FEATURES as F, NET_STATUS } from '../src/spec/net.js';
import { LoopbackTransport } from '../src/transports/loopback/loopback.js';
import { ChainReader, ChainWriter, DescriptorChain } from '../src/virtqueue/chain.js';
import type { DeviceQueue } from '../src/virtqueue/queue.js';
import { NetDriver, type NetDriverOptions } from '../src/drivers/net.js';

/** The header fields a test may set on an injected frame (5.1.6). */
export interface RigHeader {
  flags?: number;
  gsoType?: number;
  hdrLen?: number;
  gsoSize?: number;
  csumStart?: number;
  csumOffset?: number;
  numBuffers?: number;
}

export interface RigOptions {
  features?: bigint;
  mac?: number[];
  status?: number;
  mtu?: number;
  pairs?: number;
  /** max_virtqueue_pairs as the config says it (default: pairs), to break it. */
  configPairs?: number;
  queueMaxSize?: number;
  /** Frames sent are delivered back on receiveq1. */
  echo?: boolean;
  /** Break MAC_ADDR_SET: ack OK without updating config mac. */
  macNotApplied?: boolean;
  /** Break ANNOUNCE_ACK: ack OK with ANNOUNCE still set. */
  announceKept?: boolean;
  /** Answer VIRTIO_NET_ERR to the commands this picks (default: none). */
  ctrlErr?: (cls: number, cmd: number) => boolean;
}

export class RigNetType implements DeviceType {
  readonly deviceId = DeviceId.NET;
  readonly name = 'rig-net';
  readonly features: bigint;
  readonly numQueues: number;
  readonly queueMaxSize: number;
  readonly configSize = NET_CONFIG.SIZE;
  readonly pairs: number;
  /** Frames the driver transmitted: the header bytes and the frame. */
  readonly sent: { hdr: Uint8Array; frame: Uint8Array }[] = [];
  /** Control commands: class, command, data. */
  readonly commands: { cls: number; cmd: number; data: Uint8Array }[] = [];
  ctx!: DeviceContext;
  private readonly chain: DescriptorChain;
  private readonly rxChain: DescriptorChain;
  private readonly reader = new ChainReader();
  private readonly writer = new ChainWriter();

  constructor(readonly o: RigOptions = {}) {
    this.features = o.features ?? (bit(F.MAC) | bit(F.STATUS) | bit(F.MRG_RXBUF) | bit(F.CTRL_VQ) | bit(F.CTRL_RX) | bit(F.CTRL_MAC_ADDR) | bit(F.GUEST_ANNOUNCE) | bit(F.MTU) | bit(F.CSUM) | bit(F.GUEST_CSUM));
    this.pairs = o.pairs ?? 1;
    this.numQueues = 2 * this.pairs + 1;
    this.queueMaxSize = o.queueMaxSize ?? 64;
    this.chain = DescriptorChain.forQueue(this.queueMaxSize);
    this.rxChain = DescriptorChain.forQueue(this.queueMaxSize);
  }

  init(ctx: DeviceContext): void {
    this.ctx = ctx;
    const c = ctx.config;
    (this.o.mac ?? [0x52, 0x54, 0, 0x12, 0x34, 0x56]).forEach((x, i) => c.setUint8(NET_CONFIG.MAC + i, x));
    c.setUint16(NET_CONFIG.STATUS, this.o.status ?? NET_STATUS.LINK_UP, true);
    c.setUint16(NET_CONFIG.MAX_VIRTQUEUE_PAIRS, this.o.configPairs ?? this.pairs, true);
    c.setUint16(NET_CONFIG.MTU, this.o.mtu ?? 1500, true);
  }

  get hdrSize(): number {
    return this.ctx.legacy && !this.ctx.negotiated(F.MRG_RXBUF) ? 10 : 12;
  }

  process(q: DeviceQueue, ctx: DeviceContext): void {
    if (q.index % 2 === 0 && q.index < 2 * this.pairs) return; // receive buffers wait for inject()
    const chain = this.chain;
    while (q.pop(chain)) {
      const all = new Uint8Array(chain.readableBytes);
      this.reader.reset(ctx.memory, chain).read(all);
      if (q.index === 2 * this.pairs) {
        this.control(all, chain, ctx);
        q.addUsed(chain.head, 1);
        continue;
      }
      const h = this.hdrSize;
      const frame = all.slice(h);
      this.sent.push({ hdr: all.slice(0, h), frame });
      q.addUsed(chain.head, 0);
      if (this.o.echo === true) queueMicrotask(() => this.inject(frame));
    }
    ctx.complete(q);
  }

  private control(all: Uint8Array, chain: DescriptorChain, ctx: DeviceContext): void {
    const cls = all[0];
    const cmd = all[1];
    const data = all.slice(2);
    this.commands.push({ cls, cmd, data });
    if (cls === NET_CTRL.MAC && cmd === NET_CTRL.MAC_ADDR_SET && this.o.macNotApplied !== true) data.forEach((x, i) => ctx.config.setUint8(NET_CONFIG.MAC + i, x));
    if (cls === NET_CTRL.ANNOUNCE && this.o.announceKept !== true) ctx.config.setUint16(NET_CONFIG.STATUS, ctx.config.getUint16(NET_CONFIG.STATUS, true) & ~NET_STATUS.ANNOUNCE, true);
    this.writer.reset(ctx.memory, chain).write(Uint8Array.of(this.o.ctrlErr?.(cls, cmd) === true ? NET_CTRL.ERR : NET_CTRL.OK));
  }

  /** Sets status bits and tells the driver (a configuration change). */
  setStatus(status: number): void {
    this.ctx.updateConfig((c) => c.setUint16(NET_CONFIG.STATUS, status, true));
  }

  /**
   * Delivers `frame` on receive queue pair `pair`: header first; with `buffers` > 1 spread over
   * that many buffers (each filled as far as `fill` says, default full); `publishEach` publishes
   * after every buffer (breaking "all buffers of a packet used together"). Returns false when the
   * driver had no buffer there.
   */
  inject(frame: Uint8Array, h: RigHeader = {}, opt: { pair?: number; buffers?: number; fill?: number[]; publishEach?: boolean } = {}): boolean {
    const ctx = this.ctx;
    const q = ctx.queues[2 * (opt.pair ?? 0)];
    const hs = this.hdrSize;
    const hdr = new Uint8Array(hs);
    const v = new DataView(hdr.buffer);
    hdr[0] = h.flags ?? 0;
    hdr[1] = h.gsoType ?? 0;
    v.setUint16(2, h.hdrLen ?? 0, true);
    v.setUint16(4, h.gsoSize ?? 0, true);
    v.setUint16(6, h.csumStart ?? 0, true);
    v.setUint16(8, h.csumOffset ?? 0, true);
    const data = new Uint8Array(hs + frame.length);
    data.set(frame, hs);
    const n = opt.buffers ?? 1;
    if (hs >= 12) v.setUint16(10, h.numBuffers ?? n, true);
    data.set(hdr, 0);
    let off = 0;
    for (let i = 0; i < n; i++) {
      const chain = this.rxChain;
      if (!q.pop(chain)) return false;
      const room = chain.writableBytes;
      const take = i === n - 1 ? data.length - off : Math.min(room, opt.fill?.[i] ?? room);
      new ChainWriter().reset(ctx.memory, chain).writeFrom(data, off, take);
      off += take;
      q.addUsed(chain.head, take);
      if (opt.publishEach === true) ctx.complete(q);
    }
    ctx.complete(q);
    return true;
  }
}

/** A NetDriver and a rig device over the synchronous loopback. */
export function rigPair(o: RigOptions = {}, d: NetDriverOptions = {}, memory = 8 << 20) {
  const devMon = new Monitor({ mode: 'tolerant' });
  const drvMon = new Monitor({ mode: 'tolerant' });
  const type = new RigNetType(o);
  const device = new VirtioDevice(type, { monitor: devMon });
  const transport = new LoopbackTransport(device, GuestMemory.create(memory), { mode: 'sync' });
  const driver = new NetDriver(transport, { monitor: drvMon, queueSize: 64, ...d });
  return { type, device, driver, devMon, drvMon };
}

/** An Ethernet frame: dst, src, ethertype 0x88b5 (local experimental), then `payload`. */
export function ether(dst: number[], src: number[], payload: Uint8Array | string, type = 0x88b5): Uint8Array {
  const p = typeof payload === 'string' ? new TextEncoder().encode(payload) : payload;
  const f = new Uint8Array(Math.max(60, 14 + p.length));
  f.set(dst, 0);
  f.set(src, 6);
  f[12] = type >> 8;
  f[13] = type & 0xff;
  f.set(p, 14);
  return f;
}

/** Clause ids of a monitor's verdicts. */
export const clauseIds = (m: Monitor): string[] => m.verdicts.map((v) => v.clause);
