/**
 * Block device (spec 5.2): requests on one or more queues, served by a {@link BlockStorage}
 * with bounded requests in flight, completions batched per tick. Every request gets a status:
 * OK, IOERR (out of range, malformed, read-only, storage error) or UNSUPP (unknown type or
 * flags). A write is acknowledged only when it is where the driver was promised it is:
 * FLUSH and writethrough mode wait for the storage's flush (fdatasync) first.
 *
 * The request is parsed by request.ts (shape only); this module judges and executes it.
 * Browser-safe: the storage interface hides files.
 */
import { DeviceId, Status } from '../../spec/constants.js';
import { VirtioDevice, type VirtioDeviceOptions } from '../../device/device.js';
import { DeviceError } from '../../device/errors.js';
import type { DeviceContext, DeviceType } from '../../device/type.js';
import { bit, hasFeature } from '../../spec/features.js';
import { BLK_FEATURES, BlkConfig, BlkStatus, BlkType } from '../../spec/blk.js';
import { ChainReader, DescriptorChain } from '../../virtqueue/chain.js';
import type { DeviceQueue } from '../../virtqueue/queue.js';
import type { Monitor } from '../../monitor/monitor.js';
import type { BlockStorage } from './storage.js';
import { parseBlkRequest, SEGMENT_SIZE, type Range, type Segment } from './request.js';

const SECTOR = 512;
const ID_BYTES = 20;

/** Where the disk's sectors are: `storage` (`backend` is its old name). */
export type BlkStorageOption =
  | { storage: BlockStorage; backend?: undefined }
  | {
      /** @deprecated Renamed: use `storage`. */
      backend: BlockStorage;
      storage?: undefined;
    };

/** Everything a block device is built from: its storage and the {@link BlkOptions} tuning it. */
export type BlkDeviceOptions = BlkStorageOption & BlkOptions;

/**
 * How a block device presents its storage (read-only, queues, limits the config space
 * advertises, cache mode) and how much work it takes on at once (spec 5.2.4).
 */
export interface BlkOptions {
  /** Offer the disk read-only even if the storage could write (`--read-only`). */
  readOnly?: boolean;
  /** BlkDevice only: the device's monitor. */
  monitor?: Monitor;
  /** BlkDevice only: more options for the device core. */
  core?: VirtioDeviceOptions;
  /** Request queues (VIRTIO_BLK_F_MQ when more than one). */
  numQueues?: number;
  /** Largest queue the driver may set up (default 256). */
  queueMaxSize?: number;
  /**
   * Most data segments per request (seg_max); default min(queueMaxSize, 128) - 2 (see
   * defaultSegMax). A larger value lets a driver that honours only seg_max build chains longer
   * than a 128-entry queue (split.indirect-descs.driver.3, packed.indirect-descs.driver.3).
   */
  segMax?: number;
  /** Largest segment in bytes (size_max). */
  sizeMax?: number;
  /** Logical block size reported in blk_size. */
  blkSize?: number;
  /** Start in writeback mode (with VIRTIO_BLK_F_CONFIG_WCE the driver may switch). */
  writeback?: boolean;
  /** Requests the device works on at once, all queues together. */
  maxInFlight?: number;
  /** Segments per discard / write zeroes / secure erase request. */
  maxSegments?: number;
}

/**
 * The queue size this device assumes a front-end uses when it must say seg_max: QEMU's default
 * for vhost-user-blk (and virtio-blk) queue-size. Over vhost-user the config space (seg_max)
 * is read with GET_CONFIG when QEMU realizes the device, long before SET_VRING_NUM tells the
 * ring sizes, and the driver reads seg_max before it sets up its queues.
 */
export const ASSUMED_QUEUE_SIZE = 128;

/**
 * seg_max a conforming driver can honour on any queue the front-end is likely to set up.
 *
 * A virtio-blk request is one chain: the 16-byte header, the data segments, the status byte.
 * Linux 6.1 (drivers/block/virtio_blk.c, virtblk_probe) takes seg_max as the block queue's
 * max_segments (clamped to VIRTIO_BLK_MAX_SG_ELEMS - 2 only) and sets no sector limit
 * (max_hw_sectors UINT_MAX); virtio_ring puts every request of more than one segment in one
 * indirect table, of seg_max + 2 descriptors at most, whatever the queue size. So the only
 * bound on its chains is seg_max + 2, and split.indirect-descs.driver.3 /
 * packed.indirect-descs.driver.3 (no chain longer than the queue size) hold for every queue of
 * at least seg_max + 2 entries. With seg_max = queue size - 2 from `--queue-size 1024`, Linux's
 * 1 MiB requests became 258-descriptor tables on QEMU's default 128-entry queue (issue 10).
 *
 * 128 - 2 = 126 is what qemu-storage-daemon advertises (block/export/vhost-user-blk-server.c:
 * seg_max = 128 - 2) and QEMU's virtio-blk without seg-max-adjust: chains of at most 128
 * descriptors fit QEMU's default queue size and every larger one. Requests stay large: 126
 * segments of up to size_max (1 MiB) each; a 1 MiB write of scattered pages is two requests.
 * A front-end configured with a queue smaller than 128 (queue-size=64) gets this device's
 * queueMaxSize - 2 only if `--queue-size` says so.
 */
export function defaultSegMax(queueMaxSize: number): number {
  return Math.max(1, Math.min(queueMaxSize, ASSUMED_QUEUE_SIZE) - 2);
}

interface Pending {
  q: DeviceQueue;
  head: number;
  epoch: number;
}

/**
 * The block device type: hand it to a {@link VirtioDevice}, or use {@link BlkDevice}, which
 * does that from the same options. One per device (it keeps the requests in flight).
 */
export class BlkDeviceType implements DeviceType {
  readonly deviceId = DeviceId.BLOCK;
  readonly name = 'virtio-blk';
  readonly numQueues: number;
  readonly queueMaxSize: number;
  readonly features: bigint;
  readonly configSize = BlkConfig.size;
  /** Where the sectors are. */
  readonly storage: BlockStorage;
  private readonly reader = new ChainReader();
  private readonly chain: DescriptorChain;
  private readonly maxInFlight: number;
  private readonly maxSegments: number;
  private readonly options: BlkOptions;
  /** seg_max as advertised in the config space (what a driver reads; serve logs it). */
  readonly segMax: number;
  private inFlight = 0;
  private epoch = 0;
  private writeback: boolean;
  private readonly initialWriteback: boolean;
  private readonly toPublish = new Set<DeviceQueue>();
  private publishScheduled = false;
  private ctx: DeviceContext | null = null;
  /** Requests served, by outcome (tests and logs). */
  readonly stats = { ok: 0, ioerr: 0, unsupp: 0, flushes: 0 };

  /**
   * A type for one device over `options.storage`; a TypeError without one. The offer is fixed
   * here: VIRTIO_BLK_F_DISCARD only when the storage can discard, RO when it or `readOnly` says
   * so, MQ with more than one queue. `monitor` and `core` are ignored (they are {@link BlkDevice}'s).
   */
  constructor(options: BlkDeviceOptions) {
    const b = options.storage ?? options.backend;
    if (b === undefined) throw new TypeError('a block device needs options.storage');
    this.storage = b;
    this.options = options;
    this.numQueues = options.numQueues ?? 1;
    this.queueMaxSize = options.queueMaxSize ?? 256;
    const f = BLK_FEATURES;
    let features =
      bit(f.SIZE_MAX) | bit(f.SEG_MAX) | bit(f.GEOMETRY) | bit(f.BLK_SIZE) | bit(f.FLUSH) | bit(f.TOPOLOGY) | bit(f.CONFIG_WCE) | bit(f.WRITE_ZEROES) | bit(f.SECURE_ERASE);
    if (b.discard !== undefined) features |= bit(f.DISCARD);
    if (b.readOnly || options.readOnly) features |= bit(f.RO);
    if (this.numQueues > 1) features |= bit(f.MQ);
    this.features = features;
    this.chain = DescriptorChain.forQueue(this.queueMaxSize);
    this.maxInFlight = options.maxInFlight ?? 128;
    this.maxSegments = options.maxSegments ?? 1;
    this.segMax = options.segMax ?? defaultSegMax(this.queueMaxSize);
    this.writeback = this.initialWriteback = options.writeback ?? true;
  }

  /** The initial configuration space. */
  init(ctx: DeviceContext): void {
    if (this.ctx !== null) throw new DeviceError('type-in-use', 'this BlkDeviceType already serves a device: make one per device');
    this.ctx = ctx;
    const options = this.options;
    const v = ctx.config;
    const sectors = Math.floor(this.storage.size / SECTOR);
    v.setBigUint64(BlkConfig.capacity, BigInt(sectors), true);
    // size_max bounds the bytes of one segment, not the number of descriptors: Linux takes it as
    // max_segment_size (min with its DMA limit) and merges adjacent pages up to it. It plays no
    // part in fitting the queue (seg_max does); 1 MiB keeps a large request in few segments.
    // virtio-blk has no max_sectors field: Linux sets max_hw_sectors to UINT_MAX and its block
    // layer's default max_sectors_kb (1280 in 6.1) splits larger requests.
    v.setUint32(BlkConfig.sizeMax, options.sizeMax ?? 1 << 20, true);
    v.setUint32(BlkConfig.segMax, this.segMax, true);
    // A legacy CHS geometry for guests that want one: 16 heads, 63 sectors per track.
    v.setUint16(BlkConfig.geometry, Math.min(0xffff, Math.floor(sectors / (16 * 63))), true);
    v.setUint8(BlkConfig.geometry + 2, 16);
    v.setUint8(BlkConfig.geometry + 3, 63);
    v.setUint32(BlkConfig.blkSize, options.blkSize ?? SECTOR, true);
    v.setUint8(BlkConfig.topology, 0); // physical_block_exp
    v.setUint16(BlkConfig.topology + 2, 1, true); // min_io_size, in blocks
    v.setUint32(BlkConfig.topology + 4, 0, true); // opt_io_size: none suggested
    v.setUint8(BlkConfig.writeback, this.writeback ? 1 : 0);
    v.setUint16(BlkConfig.numQueues, this.numQueues, true);
    const maxSectors = Math.min(sectors, 0xffffffff);
    v.setUint32(BlkConfig.maxDiscardSectors, maxSectors, true);
    v.setUint32(BlkConfig.maxDiscardSeg, this.maxSegments, true);
    v.setUint32(BlkConfig.discardSectorAlignment, 1, true);
    v.setUint32(BlkConfig.maxWriteZeroesSectors, maxSectors, true);
    v.setUint32(BlkConfig.maxWriteZeroesSeg, this.maxSegments, true);
    // blk.device-operation.device.10: set only if a write zeroes can deallocate; no storage here does.
    v.setUint8(BlkConfig.writeZeroesMayUnmap, 0);
    v.setUint32(BlkConfig.maxSecureEraseSectors, maxSectors, true);
    v.setUint32(BlkConfig.maxSecureEraseSeg, this.maxSegments, true);
    v.setUint32(BlkConfig.secureEraseSectorAlignment, 1, true);
  }

  /** The context init() was given (every path that needs it runs after init). */
  private get context(): DeviceContext {
    if (this.ctx === null) throw new DeviceError('not-attached', 'this BlkDeviceType is not part of a VirtioDevice yet');
    return this.ctx;
  }

  /** The storage's current size in 512-byte sectors; the config space's capacity catches up on {@link resize}. */
  get capacitySectors(): number {
    return Math.floor(this.storage.size / SECTOR);
  }

  /** Whether completed writes are only volatile until a FLUSH. */
  get writebackMode(): boolean {
    return this.writeback;
  }

  configRead(offset: number, size: number, ctx: DeviceContext): void {
    // blk.device-init.driver.4: writeback is read only after FEATURES_OK.
    if (offset <= BlkConfig.writeback && BlkConfig.writeback < offset + size && !(ctx.status & Status.FEATURES_OK)) {
      ctx.violation('blk.device-init.driver.4', 'driver read the writeback field before FEATURES_OK', { offset, size });
    }
  }

  configWrite(offset: number, size: number, value: number | bigint, ctx: DeviceContext): void {
    // blk.device-operation.driver.12: with CONFIG_WCE the driver may switch the cache mode.
    if (offset === BlkConfig.writeback && size === 1 && ctx.negotiated(BLK_FEATURES.CONFIG_WCE)) {
      this.writeback = (Number(value) & 1) === 1;
      ctx.config.setUint8(BlkConfig.writeback, this.writeback ? 1 : 0);
    }
  }

  featuresOk(features: bigint, ctx: DeviceContext): void {
    if (hasFeature(ctx.offered, BLK_FEATURES.RO) && !hasFeature(features, BLK_FEATURES.RO)) {
      ctx.violation('blk.device-operation.driver.3', 'driver did not accept VIRTIO_BLK_F_RO, which the device offers', {});
    }
    // blk.device-init.device.3: CONFIG_WCE without FLUSH starts in writethrough; without FLUSH
    // at all the driver could never make a write durable, so writethrough it is.
    if (!hasFeature(features, BLK_FEATURES.FLUSH)) {
      this.writeback = false;
      ctx.config.setUint8(BlkConfig.writeback, 0);
    }
  }

  /**
   * After a live shrink, the largest capacity in bytes the driver was shown before it (0: none
   * since the last reset). The driver learns of a shrink only when it handles the config change
   * notification, so a request it sent before may reach past the new end: such a request fails
   * with IOERR but is no verdict against the driver (blk.device-operation.driver.2 binds it to the
   * capacity it has read). Cleared on reset, where the driver reads the capacity again.
   */
  private shrunkFrom = 0;

  /** Changes the disk size (the storage grew or shrank): capacity and a config change notification (blk.device-operation.device.2). */
  resize(): void {
    const ctx = this.context;
    const shown = Number(ctx.config.getBigUint64(BlkConfig.capacity, true)) * SECTOR;
    if (this.storage.size < shown) this.shrunkFrom = Math.max(this.shrunkFrom, shown);
    const sectors = BigInt(Math.floor(this.storage.size / SECTOR));
    ctx.updateConfig((v) => v.setBigUint64(BlkConfig.capacity, sectors, true));
  }

  reset(ctx: DeviceContext): void {
    this.shrunkFrom = 0;
    this.writeback = this.initialWriteback;
    ctx.config.setUint8(BlkConfig.writeback, this.writeback ? 1 : 0);
  }

  stop(): void {
    this.epoch++;
    this.inFlight = 0;
    this.toPublish.clear();
  }

  inProgress(): number {
    return this.inFlight;
  }

  queueReset(): void {
    // Requests of that queue still in the storage finish, but their answers are dropped
    // (the queue no longer holds them: isInFlight turns false).
  }

  process(q: DeviceQueue, ctx: DeviceContext): void {
    const chain = this.chain;
    q.disableNotifications();
    do {
      while (this.inFlight < this.maxInFlight && q.pop(chain)) this.start(q, chain, ctx);
      if (this.inFlight >= this.maxInFlight) return; // resumed when a request completes
    } while (q.enableNotifications());
  }

  /** Parses one request and hands it to the storage. */
  private start(q: DeviceQueue, chain: DescriptorChain, ctx: DeviceContext): void {
    const p: Pending = { q, head: chain.head, epoch: this.epoch };
    const req = parseBlkRequest(ctx.memory, chain, this.reader);
    if (req.kind === 'no-status') {
      // No room for a status byte: nothing can be reported to the driver.
      ctx.violation('struct.blk-status.driver.1', `request ${chain.head} has no device-writable status byte`, { head: chain.head });
      q.addUsed(chain.head, 0);
      this.schedulePublish(q);
      return;
    }
    const statusAddr = req.statusAddr;
    if (req.kind === 'short') {
      this.finish(p, statusAddr, BlkStatus.IOERR, 0);
      return;
    }
    const { type, sector, dataOut, dataIn, inRanges, outData, segs } = req;
    this.inFlight++;
    const result = type === BlkType.IN ? this.takeBuffer(dataIn) : new Uint8Array(type === BlkType.GET_ID ? Math.max(dataIn, ID_BYTES) : 0);
    const run = async (): Promise<[number, number]> => {
      switch (type) {
        case BlkType.IN:
          return this.readRequest(chain.head, sector, result);
        case BlkType.OUT:
          return this.writeRequest(chain.head, sector, outData!);
        case BlkType.FLUSH:
          if (sector !== 0) ctx.violation('blk.device-operation.driver.4', `FLUSH request ${chain.head} has sector ${sector}, not 0`, { head: chain.head, sector });
          if (dataOut > 0 || dataIn > 0) ctx.violation('blk.device-operation.driver.5', `FLUSH request ${chain.head} carries ${dataOut + dataIn} data bytes`, { head: chain.head });
          if (!ctx.negotiated(BLK_FEATURES.FLUSH)) return [BlkStatus.UNSUPP, 0];
          await this.storage.flush();
          this.stats.flushes++;
          return [BlkStatus.OK, 0];
        case BlkType.GET_ID:
          return this.getId(chain.head, result, dataIn);
        case BlkType.DISCARD:
        case BlkType.WRITE_ZEROES:
        case BlkType.SECURE_ERASE:
          return this.segmentRequest(chain.head, type, dataOut, segs);
        default:
          return [BlkStatus.UNSUPP, 0];
      }
    };
    run().then(
      ([status, written]) => {
        this.inFlight--;
        this.finish(p, statusAddr, status, written, written > 0 ? { ranges: inRanges, data: result } : undefined);
        if (type === BlkType.IN) this.giveBuffer(result);
      },
      () => {
        this.inFlight--;
        this.finish(p, statusAddr, BlkStatus.IOERR, 0);
        if (type === BlkType.IN) this.giveBuffer(result);
      },
    );
  }

  /** Host buffers for IN data, by length, reused once the storage is done with them (never zeroed: a read fills them). */
  private readonly hostBuffers = new Map<number, Uint8Array[]>();

  private takeBuffer(len: number): Uint8Array {
    return this.hostBuffers.get(len)?.pop() ?? new Uint8Array(len);
  }

  private giveBuffer(b: Uint8Array): void {
    if (b.length === 0 || b.length > 1 << 20) return;
    let list = this.hostBuffers.get(b.length);
    if (list === undefined) this.hostBuffers.set(b.length, (list = []));
    if (list.length < this.maxInFlight) list.push(b);
  }

  private checkRange(head: number, sector: number, bytes: number): boolean {
    if (sector * SECTOR + bytes > this.storage.size || !Number.isSafeInteger(sector * SECTOR)) {
      // Past the end of a disk that shrank while live, but inside what the driver was shown: see shrunkFrom.
      if (sector * SECTOR + bytes <= this.shrunkFrom) return false;
      this.context.violation('blk.device-operation.driver.2', `request ${head} reaches sector ${sector} + ${bytes} bytes, beyond the capacity of ${this.capacitySectors} sectors`, { head, sector, bytes });
      return false;
    }
    return true;
  }

  private async readRequest(head: number, sector: number, into: Uint8Array): Promise<[number, number]> {
    const bytes = into.length;
    if (bytes % SECTOR !== 0) {
      this.context.violation('blk.device-operation.driver.6', `IN request ${head} has ${bytes} data bytes, not a multiple of 512`, { head, bytes });
      return [BlkStatus.IOERR, 0];
    }
    if (!this.checkRange(head, sector, bytes)) return [BlkStatus.IOERR, 0];
    await this.storage.read(sector * SECTOR, [into]);
    return [BlkStatus.OK, bytes];
  }

  private async writeRequest(head: number, sector: number, data: Uint8Array): Promise<[number, number]> {
    const bytes = data.length;
    if (bytes % SECTOR !== 0) {
      this.context.violation('blk.device-operation.driver.6', `OUT request ${head} has ${bytes} data bytes, not a multiple of 512`, { head, bytes });
      return [BlkStatus.IOERR, 0];
    }
    // blk.device-operation.device.3/.4: a read-only disk fails writes and writes nothing.
    if (this.refusesWrites()) return [BlkStatus.IOERR, 0];
    if (!this.checkRange(head, sector, bytes)) return [BlkStatus.IOERR, 0];
    await this.storage.write(sector * SECTOR, [data]);
    await this.stable();
    return [BlkStatus.OK, 0];
  }

  /** Read-only: the storage cannot write, or VIRTIO_BLK_F_RO is offered (then the driver may not write). */
  protected refusesWrites(): boolean {
    return this.storage.readOnly || hasFeature(this.context.offered, BLK_FEATURES.RO);
  }

  /** blk.device-operation.device.13: in writethrough mode a write is durable before it completes. */
  private async stable(): Promise<void> {
    if (!this.writeback) {
      await this.storage.flush();
      this.stats.flushes++;
    }
  }

  private async getId(head: number, into: Uint8Array, bytes: number): Promise<[number, number]> {
    if (bytes !== ID_BYTES) {
      this.context.violation('blk.device-operation.driver.8', `GET_ID request ${head} has ${bytes} data bytes, not 20`, { head, bytes });
      if (bytes < ID_BYTES) return [BlkStatus.IOERR, 0];
    }
    const text = new TextEncoder().encode(this.storage.serial ?? '');
    into.set(text.subarray(0, ID_BYTES)); // shorter ids are NUL-terminated by the zero fill
    return [BlkStatus.OK, ID_BYTES];
  }

  private async segmentRequest(head: number, type: number, bytes: number, segs: Segment[]): Promise<[number, number]> {
    const f = BLK_FEATURES;
    const ctx = this.context;
    const feature = type === BlkType.DISCARD ? f.DISCARD : type === BlkType.WRITE_ZEROES ? f.WRITE_ZEROES : f.SECURE_ERASE;
    if (!ctx.negotiated(feature)) return [BlkStatus.UNSUPP, 0];
    if (bytes % SEGMENT_SIZE !== 0 || segs.length === 0) {
      ctx.violation('blk.device-operation.driver.7', `request ${head} has ${bytes} bytes of segments, not a non-zero multiple of 16`, { head, bytes });
      return [BlkStatus.IOERR, 0];
    }
    if (segs.length > this.maxSegments) {
      const clause = type === BlkType.DISCARD ? 'blk.device-operation.driver.9' : type === BlkType.SECURE_ERASE ? 'blk.device-operation.driver.10' : 'blk.device-operation.driver.11';
      ctx.violation(clause, `request ${head} has ${segs.length} segments, more than the ${this.maxSegments} allowed`, { head, segments: segs.length });
      return [BlkStatus.IOERR, 0];
    }
    for (const s of segs) {
      // blk.device-operation.device.5 / .6: unknown flags, or unmap on a discard: UNSUPP.
      if (s.flags & ~1) return [BlkStatus.UNSUPP, 0];
      if (type !== BlkType.WRITE_ZEROES && s.flags & 1) {
        if (type === BlkType.DISCARD) ctx.violation('blk.device-operation.driver.14', `discard request ${head} sets the unmap flag`, { head });
        return [BlkStatus.UNSUPP, 0];
      }
    }
    if (this.refusesWrites()) return [BlkStatus.IOERR, 0];
    for (const s of segs) if (!this.checkRange(head, s.sector, s.sectors * SECTOR)) return [BlkStatus.IOERR, 0];
    for (const s of segs) {
      const off = s.sector * SECTOR;
      const len = s.sectors * SECTOR;
      if (type === BlkType.DISCARD && this.storage.discard !== undefined) await this.storage.discard(off, len);
      else await this.storage.writeZeroes(off, len, type === BlkType.WRITE_ZEROES && (s.flags & 1) === 1); // device.9: zeroes read back
    }
    await this.stable();
    return [BlkStatus.OK, 0];
  }

  /** Writes the status byte, returns the buffer, and publishes with the next batch. */
  private finish(p: Pending, statusAddr: number, status: number, written: number, copy?: { ranges: Range[]; data: Uint8Array }): void {
    if (p.epoch !== this.epoch || !p.q.isInFlight(p.head)) return; // reset meanwhile: drop
    const mem = this.context.memory;
    if (copy !== undefined) {
      let off = 0;
      for (const [addr, len] of copy.ranges) {
        const n = Math.min(len, written - off);
        if (n <= 0) break;
        mem.write(addr, copy.data.subarray(off, off + n)); // through GuestMemory: dirty logging sees it
        off += n;
      }
    }
    mem.writeU8(statusAddr, status);
    if (status === BlkStatus.OK) this.stats.ok++;
    else if (status === BlkStatus.IOERR) this.stats.ioerr++;
    else this.stats.unsupp++;
    p.q.addUsed(p.head, written + 1);
    this.schedulePublish(p.q);
  }

  /** One used-index write and at most one notification per queue per tick. */
  private schedulePublish(q: DeviceQueue): void {
    this.toPublish.add(q);
    if (this.publishScheduled) return;
    this.publishScheduled = true;
    queueMicrotask(this.publishTask);
  }

  private readonly publishTask = (): void => {
    this.publishScheduled = false;
    const ctx = this.context;
    const queues = [...this.toPublish];
    this.toPublish.clear();
    for (const pq of queues) if (pq.active) ctx.complete(pq);
    // Room again: take more requests.
    for (const pq of ctx.queues) if (this.inFlight < this.maxInFlight) ctx.resume(pq);
  };

  /** Whether the disk is offered read-only. */
  get readOnly(): boolean {
    return hasFeature(this.context.offered, BLK_FEATURES.RO);
  }

  /** Negotiated multi-queue count. */
  get activeQueues(): number {
    return hasFeature(this.context.driverFeatures, BLK_FEATURES.MQ) ? this.numQueues : 1;
  }
}

/**
 * A block device: a {@link VirtioDevice} of {@link BlkDeviceType}, built from its options. The
 * disk's host-side API (resize, capacity, stats) is the type's, here for convenience.
 */
export class BlkDevice extends VirtioDevice<BlkDeviceType> {
  /** A device of a new {@link BlkDeviceType} from `options`, judged by `options.monitor` (default: a new strict one). */
  constructor(options: BlkDeviceOptions) {
    super(new BlkDeviceType(options), { monitor: options.monitor, ...options.core });
  }

  /** Where the sectors are. */
  get storage(): BlockStorage {
    return this.type.storage;
  }
  /** @deprecated Renamed: use {@link storage}. */
  get backend(): BlockStorage {
    return this.type.storage;
  }
  /** seg_max as advertised in the config space. */
  get segMax(): number {
    return this.type.segMax;
  }
  /** Requests served, by outcome. */
  get stats(): BlkDeviceType['stats'] {
    return this.type.stats;
  }
  /** The storage's size in 512-byte sectors. */
  get capacitySectors(): number {
    return this.type.capacitySectors;
  }
  /** Whether completed writes are only volatile until a FLUSH. */
  get writebackMode(): boolean {
    return this.type.writebackMode;
  }
  /** Whether the disk is offered read-only. */
  get readOnly(): boolean {
    return this.type.readOnly;
  }
  /** Negotiated multi-queue count. */
  get activeQueues(): number {
    return this.type.activeQueues;
  }
  /** The storage changed size: the new capacity and a configuration change notification. */
  resize(): void {
    this.type.resize();
  }
}

// The wire constants live in spec/blk.ts; re-exported for users of this module.
export { BlkConfig, BlkStatus, BlkType } from '../../spec/blk.js';
