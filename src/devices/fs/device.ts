/**
 * File system device (spec 5.11): queue 0 is hiprio (FORGET, BATCH_FORGET, INTERRUPT), queues
 * 1..n are request queues (no notification queue: VIRTIO_FS_F_NOTIFICATION is not offered).
 * Each request's device-readable part is a FUSE request, its device-writable part gets the
 * reply; the FUSE session is a {@link FuseServer} over any {@link FsProvider}.
 *
 * Requests are served as they come on every queue, each independently: a request whose provider
 * answers later (a Promise) keeps its buffer while the queue goes on (its reply is written and
 * the buffer used when it settles), so no queue waits for another and hiprio is never held up
 * by request-queue work (fs.high-priority-queue.device.1). Over vhost-user QEMU keeps the
 * configuration space (tag, num_request_queues) itself; the device's copy serves the other
 * transports.
 *
 * Checked of the driver: config writes (fs.device-config-layout.driver.1), FORGET,
 * BATCH_FORGET and INTERRUPT only on hiprio and nothing else there
 * (fs.high-priority-queue.driver.1/.2; tolerant mode serves the request anyway). Every FUSE
 * request is validated by the server (see FuseServer).
 *
 * Browser-safe: no Node import.
 */
import { DeviceId } from '../../spec/constants.js';
import { FS_FEATURE_NAMES, FS_FEATURES, FS_HIPRIO_QUEUE, FsConfig } from '../../spec/fs.js';
import { VirtioDevice, type VirtioDeviceOptions } from '../../device/device.js';
import { DeviceError } from '../../device/errors.js';
import type { ConditionalConfigField, DeviceContext, DeviceType } from '../../device/type.js';
import { ChainReader, ChainWriter, DescriptorChain } from '../../virtqueue/chain.js';
import type { DeviceQueue } from '../../virtqueue/queue.js';
import type { Monitor } from '../../monitor/monitor.js';
import { FuseServer, errorReply, type FuseReply, type FuseServerOptions } from '../../fs/fuse/server.js';
import { Errno } from '../../fs/errno.js';
import { isHighPriority, opName, Size } from '../../fs/fuse/wire.js';
import type { FsProvider } from '../../fs/vfs.js';

/** How a virtio-fs device is built. */
export interface FsDeviceOptions extends FuseServerOptions {
  /** The file system served. */
  provider: FsProvider;
  /** The tag the guest mounts (`mount -t virtiofs TAG`): 1 to 36 bytes of UTF-8. */
  tag: string;
  /** Request queues (num_request_queues, 1 to 64; default 1). */
  numRequestQueues?: number;
  /** Largest queue the driver may set up (default 1024). */
  queueMaxSize?: number;
  /** FsDevice only: the device's monitor. */
  monitor?: Monitor;
  /** FsDevice only: more options for the device core. */
  core?: VirtioDeviceOptions;
}


/** Checks a tag: its UTF-8 bytes, or a RangeError. */
function tagBytes(tag: string): Uint8Array {
  const b = new TextEncoder().encode(tag);
  if (b.length === 0 || b.length > FsConfig.tagSize) throw new RangeError(`virtio-fs tag "${tag}" is ${b.length} bytes of UTF-8: 1 to ${FsConfig.tagSize}`);
  if (b.includes(0)) throw new RangeError('virtio-fs tag contains a NUL byte');
  return b;
}

/** Counters, for tests and logs. */
export interface FsDeviceStats {
  requests: number;
  hiprio: number;
  /** Requests answered later (the provider returned a Promise). */
  async: number;
  /** Requests with no room for even a reply header, or too long to take. */
  refused: number;
}

/**
 * The virtio-fs device type: hand it to a {@link VirtioDevice}, or use {@link FsDevice}. One
 * per device.
 */
export class FsDeviceType implements DeviceType {
  readonly deviceId = DeviceId.FS;
  readonly name = 'virtio-fs';
  readonly numQueues: number;
  readonly queueMaxSize: number;
  readonly features = 0n;
  readonly featureNames = FS_FEATURE_NAMES;
  readonly configSize = FsConfig.size;
  readonly conditionalFields: readonly ConditionalConfigField[] = [{ name: 'notify_buf_size', offset: FsConfig.notifyBufSize, size: 4, feature: FS_FEATURES.NOTIFICATION }];
  /** The FUSE session. */
  readonly server: FuseServer;
  readonly tag: string;
  readonly numRequestQueues: number;
  readonly stats: FsDeviceStats = { requests: 0, hiprio: 0, async: 0, refused: 0 };
  private readonly tagBytes: Uint8Array;
  private ctx: DeviceContext | null = null;
  private readonly chain: DescriptorChain;
  private readonly reader = new ChainReader();
  private readonly writer = new ChainWriter();
  /** Request bytes: reused while requests finish synchronously; one lent to each request that goes asynchronous. */
  private scratch: Uint8Array | null = null;
  private readonly spare: Uint8Array[] = [];
  private readonly header = new Uint8Array(Size.inHeader);
  /** Bumped at reset: answers of an older session are dropped. */
  private epoch = 0;
  private readonly generations: number[] = [];
  private inFlight = 0;

  /** A type for one device. */
  constructor(options: FsDeviceOptions) {
    this.tagBytes = tagBytes(options.tag);
    this.tag = options.tag;
    const n = options.numRequestQueues ?? 1;
    // fs.device-config-layout.device.1: at least one request queue.
    if (!Number.isInteger(n) || n < 1 || n > 64) throw new RangeError(`numRequestQueues ${n}: 1 to 64`);
    this.numRequestQueues = n;
    this.numQueues = 1 + n;
    this.queueMaxSize = options.queueMaxSize ?? 1024;
    this.chain = DescriptorChain.forQueue(this.queueMaxSize);
    this.server = new FuseServer(options.provider, options);
  }

  init(ctx: DeviceContext): void {
    if (this.ctx !== null) throw new DeviceError('type-in-use', 'this FsDeviceType already serves a device: make one per device');
    this.ctx = ctx;
    new Uint8Array(ctx.config.buffer, ctx.config.byteOffset + FsConfig.tag, FsConfig.tagSize).set(this.tagBytes);
    ctx.config.setUint32(FsConfig.numRequestQueues, this.numRequestQueues, true);
  }

  configWrite(offset: number, size: number, _value: number | bigint, ctx: DeviceContext): void {
    // fs.device-config-layout.driver.1: every field is the device's.
    ctx.violation('fs.device-config-layout.driver.1', `driver wrote ${size} byte(s) at fs config offset ${offset}`, { offset, size });
  }

  process(q: DeviceQueue, ctx: DeviceContext): void {
    const chain = this.chain;
    q.disableNotifications();
    do {
      while (ctx.accepting && q.pop(chain)) {
        this.request(q, chain, ctx);
        if (!ctx.live) return;
      }
      ctx.complete(q);
    } while (q.enableNotifications());
  }

  private request(q: DeviceQueue, chain: DescriptorChain, ctx: DeviceContext): void {
    this.stats.requests++;
    const hiprio = q.index === FS_HIPRIO_QUEUE;
    if (hiprio) this.stats.hiprio++;
    const server = this.server;
    const len = chain.readableBytes;
    const room = chain.writableBytes;
    const r = this.reader.reset(ctx.memory, chain);
    if (len > server.maxRequest) {
      // Longer than any request the server takes: not copied; an error names its unique.
      this.stats.refused++;
      r.readInto(this.header, 0, Size.inHeader);
      const unique = new DataView(this.header.buffer).getBigUint64(8, true);
      this.finish(q, chain, ctx, room >= Size.outHeader ? errorReply(unique, Errno.EINVAL) : null);
      return;
    }
    let buf = this.scratch;
    if (buf === null) buf = this.scratch = this.spare.pop() ?? new Uint8Array(server.maxRequest);
    r.readInto(buf, 0, len);
    const req = buf.subarray(0, len);
    if (len >= Size.inHeader) {
      // fuse_in_header.opcode (u32 LE at 4), read without a DataView per request.
      const op = (buf[4] | (buf[5] << 8) | (buf[6] << 16) | (buf[7] << 24)) >>> 0;
      const high = isHighPriority(op);
      if (hiprio && !high) {
        ctx.violation('fs.high-priority-queue.driver.2', `driver put ${opName(op)}, a normal request, on the hiprio queue`, { opcode: op, queue: q.index });
      } else if (!hiprio && high) {
        ctx.violation('fs.high-priority-queue.driver.1', `driver put ${opName(op)} on request queue ${q.index}: it goes on hiprio only`, { opcode: op, queue: q.index });
      }
      if (!ctx.live) return;
    }
    const out = server.handle(req, room);
    if (out === null || typeof (out as Promise<unknown>).then !== 'function') {
      this.finish(q, chain, ctx, out as FuseReply | null);
      return;
    }
    // Answered later: the chain and the request bytes are kept until then.
    this.stats.async++;
    this.scratch = null;
    const kept = DescriptorChain.copyOf(chain);
    const epoch = this.epoch;
    const generation = this.generations[q.index] ?? 0;
    this.inFlight++;
    void (out as Promise<FuseReply | null>).then((reply) => {
      if (this.spare.length < 4) this.spare.push(buf);
      if (epoch !== this.epoch) return; // reset since: the driver has these buffers back
      this.inFlight--;
      if (generation !== (this.generations[q.index] ?? 0) || !q.isInFlight(kept.head) || !ctx.live) return;
      this.finish(q, kept, ctx, reply);
      ctx.complete(q);
    });
  }

  /** Writes the reply (if any) and returns the buffer. */
  private finish(q: DeviceQueue, chain: DescriptorChain, ctx: DeviceContext, reply: FuseReply | null): void {
    if (reply === null) {
      q.addUsed(chain.head, 0);
      return;
    }
    const w = this.writer.reset(ctx.memory, chain);
    w.write(reply.head);
    if (reply.data !== null && reply.data.length > 0) w.write(reply.data);
    q.addUsed(chain.head, reply.length);
  }

  /**
   * Requests being answered. Asked while a suspend or a vhost-user ring stop waits for them:
   * SETLKW requests still waiting for a lock are ended first (answered EINTR), so the stop
   * never waits on a lock the guest's own processes hold (otherwise bounded only by the
   * transport's settle timeout, with the front-end blocked meanwhile).
   */
  inProgress(): number {
    if (this.inFlight > 0) this.server.interruptWaits();
    return this.inFlight;
  }

  stop(): void {
    // Reset or failure: waits end (their answers are dropped with the session's buffers).
    this.server.interruptWaits();
    this.epoch++;
    this.inFlight = 0;
  }

  queueReset(index: number): void {
    this.generations[index] = (this.generations[index] ?? 0) + 1;
  }

  /** The device's context (a DeviceError before it is part of a VirtioDevice). */
  get context(): DeviceContext {
    if (this.ctx === null) throw new DeviceError('not-attached', 'this FsDeviceType is not part of a VirtioDevice yet');
    return this.ctx;
  }
}

/** A virtio-fs device: a {@link VirtioDevice} of {@link FsDeviceType}. */
export class FsDevice extends VirtioDevice<FsDeviceType> {
  /** A device of a new {@link FsDeviceType} from `options`, judged by `options.monitor`. */
  constructor(options: FsDeviceOptions) {
    super(new FsDeviceType(options), { monitor: options.monitor, ...options.core });
  }

  /** The FUSE session. */
  get server(): FuseServer {
    return this.type.server;
  }
}
