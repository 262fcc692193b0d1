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
import type { GuestMemory } from '../../memory/guest-memory.js';
import type { BlockStorage } from './storage.js';
import { BlkRequestHeader, PayloadPieces, SEGMENT_SIZE } from './request.js';

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

/**
 * What a synchronous attempt answers instead of a status byte: the storage declined, so the
 * storage's promise methods serve the request (DEFER: all of it; DEFER_FLUSH: only the
 * writethrough flush after data the storage took synchronously).
 */
const DEFER = -1;
const DEFER_FLUSH = -2;

/**
 * The state of a request the storage serves asynchronously, one per queue entry (queue index,
 * head), made the first time that entry goes asynchronous and reused after: what the request
 * needs once the storage answers, since the chain itself is reused by the next pop. Its two
 * settle handlers are made once with it, so a request costs no closure.
 */
class AsyncRequest {
  q: DeviceQueue | null = null;
  head = 0;
  /** The device's epoch and the queue's generation when it started: a later answer for an older one is dropped. */
  epoch = 0;
  generation = 0;
  busy = false;
  statusAddr = 0;
  type = 0;
  /** Byte offset on the disk and payload bytes. */
  offset = 0;
  bytes = 0;
  /** Only the writethrough flush is left (the data went to the storage synchronously). */
  flushOnly = false;
  /** Outcome: the status byte and the payload bytes written to the driver. */
  status = 0;
  written = 0;
  /** IN / GET_ID: the guest pieces the payload goes to. */
  pieces = 0;
  addrs = new Float64Array(4);
  lens = new Float64Array(4);
  /** The host buffer (IN: read into; OUT: the payload, copied out of guest memory). */
  buf: Uint8Array | null = null;
  /** The one-view array the storage's read and write take. */
  readonly views: Uint8Array[] = [EMPTY];
  /** DISCARD / WRITE_ZEROES / SECURE_ERASE: the segments, in bytes, and how each is done. */
  segCount = 0;
  segOffset = new Float64Array(1);
  segLength = new Float64Array(1);
  /** 1: storage.discard; 2: writeZeroes with unmap; 0: writeZeroes. */
  segOp = new Uint8Array(1);
  readonly onDone: () => void;
  readonly onFail: () => void;

  constructor(settle: (r: AsyncRequest, failed: boolean) => void) {
    this.onDone = () => settle(this, false);
    this.onFail = () => settle(this, true);
  }

  /** Room for `n` pieces. */
  reservePieces(n: number): void {
    if (this.addrs.length >= n) return;
    this.addrs = new Float64Array(n);
    this.lens = new Float64Array(n);
  }

  /** Room for `n` segments. */
  reserveSegments(n: number): void {
    if (this.segOffset.length >= n) return;
    this.segOffset = new Float64Array(n);
    this.segLength = new Float64Array(n);
    this.segOp = new Uint8Array(n);
  }
}

const EMPTY = new Uint8Array(0);

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
  /** Queues (by index) with used entries from asynchronous requests waiting for the next publish. */
  private readonly toPublish: boolean[] = [];
  private publishScheduled = false;
  /** The request being judged (parsed in place: nothing allocated per request). */
  private readonly header: BlkRequestHeader;
  /** Walks a request's payload pieces. */
  private readonly pieces = new PayloadPieces();
  /** Payload bytes a request answered synchronously wrote to the driver. */
  private written = 0;
  /** Asynchronous request state by queue index, then head (see AsyncRequest). */
  private readonly pools: (AsyncRequest | undefined)[][] = [];
  /** Bumped by a queue reset (by queue index): answers for requests of the queue before it are dropped. */
  private readonly generations: number[] = [];
  /** GET_ID's answer, for the serial it was made from. */
  private idBytes: Uint8Array | null = null;
  private idFor: string | undefined = undefined;
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
    this.header = new BlkRequestHeader(this.maxSegments);
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
    // blk.device-init.driver.4: writeback is read only after FEATURES_OK. A legacy driver has
    // no FEATURES_OK step (3.1.2), so the clause is not one it can break.
    if (offset <= BlkConfig.writeback && BlkConfig.writeback < offset + size && !ctx.legacy && !(ctx.status & Status.FEATURES_OK)) {
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
    // The offer is fixed from FEATURES_OK on (withholdFeatures refuses then), and no request
    // comes before it: the requests' read-only test reads this instead of a BigInt each time.
    this.roOffered = hasFeature(ctx.offered, BLK_FEATURES.RO);
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
    this.toPublish.fill(false);
  }

  inProgress(): number {
    return this.inFlight;
  }

  queueReset(index: number): void {
    // Requests of that queue still in the storage finish, but their answers are dropped: the
    // queue's generation moved on (a request the driver makes after re-enabling the queue may
    // reuse the same head).
    this.generations[index] = (this.generations[index] ?? 0) + 1;
  }

  /**
   * Request states made for asynchronous requests so far: one per queue entry that went
   * asynchronous, reused after (one more only for an entry whose old request is still in the
   * storage after a reset). Tests look.
   */
  get pooledRequests(): number {
    return this.statesMade;
  }
  private statesMade = 0;

  /**
   * Guest memory for the requests process() serves, read from the context once per call: the
   * context's `memory` is a getter that optimized code reaches through a generic property load
   * (an inline-cache call), two or three times per request when read where it is used.
   */
  private mem: GuestMemory | null = null;

  process(q: DeviceQueue, ctx: DeviceContext): void {
    const chain = this.chain;
    this.mem = ctx.memory;
    q.disableNotifications();
    do {
      let answered = 0;
      while (this.inFlight < this.maxInFlight && q.pop(chain)) if (this.serve(q, chain, ctx)) answered++;
      // Requests answered synchronously: one used-index write (and at most one notification)
      // for the batch, now. Nothing of this loop's is in use past this point, so a driver that
      // submits again from its notification (a synchronous transport) may re-enter process.
      if (answered > 0 && q.active) ctx.complete(q);
      if (this.inFlight >= this.maxInFlight) return; // resumed when a request completes
    } while (q.enableNotifications());
  }

  /**
   * Serves one popped request: true when it is answered already (status byte written, used
   * entry added), false when the storage took it asynchronously. The synchronous way costs no
   * promise, closure or allocation: the header is parsed in place and the storage copies
   * straight between the disk and guest memory.
   */
  private serve(q: DeviceQueue, chain: DescriptorChain, ctx: DeviceContext): boolean {
    const mem = this.mem!;
    const h = this.header.parse(mem, chain, this.reader);
    if (h.kind === 'no-status') {
      // No room for a status byte: nothing can be reported to the driver.
      ctx.violation('struct.blk-status.driver.1', `request ${chain.head} has no device-writable status byte`, { head: chain.head });
      q.addUsed(chain.head, 0);
      return true;
    }
    this.written = 0;
    const status = h.kind === 'short' ? BlkStatus.IOERR : this.execute(chain, h, ctx);
    if (status < 0) {
      this.startAsync(q, chain, h, status === DEFER_FLUSH, ctx);
      return false;
    }
    mem.writeU8(h.statusAddr, status);
    this.count(status);
    q.addUsed(chain.head, this.written + 1);
    return true;
  }

  /** Judges a request and does it with the storage's synchronous methods: its status, or DEFER / DEFER_FLUSH. */
  private execute(chain: DescriptorChain, h: BlkRequestHeader, ctx: DeviceContext): number {
    switch (h.type) {
      case BlkType.IN:
        return this.readNow(chain, h, ctx);
      case BlkType.OUT:
        return this.writeNow(chain, h, ctx);
      case BlkType.FLUSH:
        if (h.sector !== 0) ctx.violation('blk.device-operation.driver.4', `FLUSH request ${chain.head} has sector ${h.sector}, not 0`, { head: chain.head, sector: h.sector });
        if (h.dataOut > 0 || h.dataIn > 0) ctx.violation('blk.device-operation.driver.5', `FLUSH request ${chain.head} carries ${h.dataOut + h.dataIn} data bytes`, { head: chain.head });
        if (!ctx.negotiated(BLK_FEATURES.FLUSH)) return BlkStatus.UNSUPP;
        return this.flushNow(DEFER);
      case BlkType.GET_ID:
        return this.getId(chain, h, ctx);
      case BlkType.DISCARD:
      case BlkType.WRITE_ZEROES:
      case BlkType.SECURE_ERASE:
        return this.segmentsNow(chain, h, ctx);
      default:
        return BlkStatus.UNSUPP;
    }
  }

  private readNow(chain: DescriptorChain, h: BlkRequestHeader, ctx: DeviceContext): number {
    const bytes = h.dataIn;
    if (bytes % SECTOR !== 0) {
      ctx.violation('blk.device-operation.driver.6', `IN request ${chain.head} has ${bytes} data bytes, not a multiple of 512`, { head: chain.head, bytes });
      return BlkStatus.IOERR;
    }
    if (!this.checkRange(chain.head, h.sector, bytes)) return BlkStatus.IOERR;
    const s = this.storage;
    if (s.readSync === undefined) return DEFER;
    const mem = this.mem!;
    let offset = h.sector * SECTOR;
    const p = this.pieces.in(chain, bytes);
    while (p.next()) {
      const addr = p.addr;
      const n = p.len;
      const r = mem.region(addr, n); // a piece lies in one region (DescriptorChain.append)
      let done = false;
      let failed = false;
      try {
        done = s.readSync(offset, r.bytes, addr - r.guestAddr, n);
      } catch {
        failed = true;
      }
      // Even a storage that declined or failed may have written some of it: dirty logging sees it.
      if (mem.onWrite !== null) mem.onWrite(addr, n);
      if (failed) return BlkStatus.IOERR;
      if (!done) return DEFER;
      offset += n;
    }
    this.written = bytes;
    return BlkStatus.OK;
  }

  private writeNow(chain: DescriptorChain, h: BlkRequestHeader, ctx: DeviceContext): number {
    const bytes = h.dataOut;
    if (bytes % SECTOR !== 0) {
      ctx.violation('blk.device-operation.driver.6', `OUT request ${chain.head} has ${bytes} data bytes, not a multiple of 512`, { head: chain.head, bytes });
      return BlkStatus.IOERR;
    }
    // blk.device-operation.device.3/.4: a read-only disk fails writes and writes nothing.
    if (this.refusesWrites()) return BlkStatus.IOERR;
    if (!this.checkRange(chain.head, h.sector, bytes)) return BlkStatus.IOERR;
    const s = this.storage;
    if (s.writeSync === undefined) return DEFER;
    const mem = this.mem!;
    let offset = h.sector * SECTOR;
    const p = this.pieces.out(chain, bytes);
    while (p.next()) {
      const r = mem.region(p.addr, p.len);
      let done: boolean;
      try {
        done = s.writeSync(offset, r.bytes, p.addr - r.guestAddr, p.len);
      } catch {
        return BlkStatus.IOERR;
      }
      if (!done) return DEFER;
      offset += p.len;
    }
    return this.stableNow();
  }

  /** blk.device-operation.device.13: in writethrough mode a write is durable before it completes. */
  private stableNow(): number {
    return this.writeback ? BlkStatus.OK : this.flushNow(DEFER_FLUSH);
  }

  /** The storage's flush, synchronously: OK, IOERR when it threw, else `declined`. */
  private flushNow(declined: number): number {
    const s = this.storage;
    if (s.flushSync === undefined) return declined;
    let done: boolean;
    try {
      done = s.flushSync();
    } catch {
      return BlkStatus.IOERR;
    }
    if (!done) return declined;
    this.stats.flushes++;
    return BlkStatus.OK;
  }

  private getId(chain: DescriptorChain, h: BlkRequestHeader, ctx: DeviceContext): number {
    const bytes = h.dataIn;
    if (bytes !== ID_BYTES) {
      ctx.violation('blk.device-operation.driver.8', `GET_ID request ${chain.head} has ${bytes} data bytes, not 20`, { head: chain.head, bytes });
      if (bytes < ID_BYTES) return BlkStatus.IOERR;
    }
    const serial = this.storage.serial ?? '';
    if (this.idBytes === null || this.idFor !== serial) {
      const id = new Uint8Array(ID_BYTES); // shorter ids are NUL-terminated by the zero fill
      id.set(new TextEncoder().encode(serial).subarray(0, ID_BYTES));
      this.idBytes = id;
      this.idFor = serial;
    }
    const mem = this.mem!;
    const p = this.pieces.in(chain, ID_BYTES);
    for (let done = 0; p.next(); done += p.len) mem.writeFrom(p.addr, this.idBytes, done, p.len);
    this.written = ID_BYTES;
    return BlkStatus.OK;
  }

  private segmentsNow(chain: DescriptorChain, h: BlkRequestHeader, ctx: DeviceContext): number {
    const f = BLK_FEATURES;
    const head = chain.head;
    const type = h.type;
    const feature = type === BlkType.DISCARD ? f.DISCARD : type === BlkType.WRITE_ZEROES ? f.WRITE_ZEROES : f.SECURE_ERASE;
    if (!ctx.negotiated(feature)) return BlkStatus.UNSUPP;
    const count = h.segmentCount;
    if (h.dataOut % SEGMENT_SIZE !== 0 || count === 0) {
      ctx.violation('blk.device-operation.driver.7', `request ${head} has ${h.dataOut} bytes of segments, not a non-zero multiple of 16`, { head, bytes: h.dataOut });
      return BlkStatus.IOERR;
    }
    if (count > this.maxSegments) {
      const clause = type === BlkType.DISCARD ? 'blk.device-operation.driver.9' : type === BlkType.SECURE_ERASE ? 'blk.device-operation.driver.10' : 'blk.device-operation.driver.11';
      ctx.violation(clause, `request ${head} has ${count} segments, more than the ${this.maxSegments} allowed`, { head, segments: count });
      return BlkStatus.IOERR;
    }
    const seg = h.segments;
    for (let i = 0; i < count; i++) {
      const flags = seg.flags[i];
      // blk.device-operation.device.5 / .6: unknown flags, or unmap on a discard: UNSUPP.
      if (flags & ~1) return BlkStatus.UNSUPP;
      if (type !== BlkType.WRITE_ZEROES && flags & 1) {
        if (type === BlkType.DISCARD) ctx.violation('blk.device-operation.driver.14', `discard request ${head} sets the unmap flag`, { head });
        return BlkStatus.UNSUPP;
      }
    }
    if (this.refusesWrites()) return BlkStatus.IOERR;
    for (let i = 0; i < count; i++) if (!this.checkRange(head, seg.sector[i], seg.sectors[i] * SECTOR)) return BlkStatus.IOERR;
    const s = this.storage;
    for (let i = 0; i < count; i++) {
      const off = seg.sector[i] * SECTOR;
      const len = seg.sectors[i] * SECTOR;
      let done: boolean | undefined;
      try {
        // device.9: zeroes read back after WRITE_ZEROES (and SECURE_ERASE, done as zeroes).
        if (type === BlkType.DISCARD && s.discard !== undefined) done = s.discardSync?.(off, len);
        else done = s.writeZeroesSync?.(off, len, type === BlkType.WRITE_ZEROES && (seg.flags[i] & 1) === 1);
      } catch {
        return BlkStatus.IOERR;
      }
      if (done !== true) return DEFER;
    }
    return this.stableNow();
  }

  /** Hands a request the storage declined to answer synchronously to its promise methods. */
  private startAsync(q: DeviceQueue, chain: DescriptorChain, h: BlkRequestHeader, flushOnly: boolean, ctx: DeviceContext): void {
    const pool = (this.pools[q.index] ??= []);
    let r = pool[chain.head];
    // Busy: a request of this entry from before a reset is still in the storage; it keeps its state.
    if (r === undefined || r.busy) {
      pool[chain.head] = r = new AsyncRequest(this.settle);
      this.statesMade++;
    }
    r.busy = true;
    r.q = q;
    r.head = chain.head;
    r.epoch = this.epoch;
    r.generation = this.generations[q.index] ?? 0;
    r.statusAddr = h.statusAddr;
    r.type = h.type;
    r.offset = h.sector * SECTOR;
    r.flushOnly = flushOnly;
    r.status = BlkStatus.OK;
    r.written = 0;
    r.pieces = 0;
    r.segCount = 0;
    const mem = this.mem!;
    if (h.type === BlkType.IN) {
      r.bytes = h.dataIn;
      r.reservePieces(chain.count - chain.readable);
      const p = this.pieces.in(chain, h.dataIn);
      while (p.next()) {
        r.addrs[r.pieces] = p.addr;
        r.lens[r.pieces++] = p.len;
      }
      // Data moves through a host buffer: a request still in the storage when the device is
      // reset must not touch guest memory the driver got back (basic.reset.device.2).
      r.buf = this.takeBuffer(h.dataIn);
    } else if (h.type === BlkType.OUT) {
      r.bytes = h.dataOut;
      if (!flushOnly) {
        // Copied out now, for the same reason: the driver may reuse the buffer after a reset.
        const buf = (r.buf = this.takeBuffer(h.dataOut));
        const p = this.pieces.out(chain, h.dataOut);
        for (let off = 0; p.next(); off += p.len) mem.readInto(p.addr, buf, off, p.len);
      }
    } else if (h.type !== BlkType.FLUSH) {
      const seg = h.segments;
      const n = h.segmentCount;
      r.reserveSegments(n);
      for (let i = 0; i < n; i++) {
        r.segOffset[i] = seg.sector[i] * SECTOR;
        r.segLength[i] = seg.sectors[i] * SECTOR;
        r.segOp[i] = h.type === BlkType.DISCARD && this.storage.discard !== undefined ? 1 : h.type === BlkType.WRITE_ZEROES && (seg.flags[i] & 1) === 1 ? 2 : 0;
      }
      r.segCount = n;
    }
    this.inFlight++;
    this.runAsync(r).then(r.onDone, r.onFail);
  }

  /** The storage's promise methods for one request; the outcome goes into `r`. */
  private async runAsync(r: AsyncRequest): Promise<void> {
    const s = this.storage;
    switch (r.type) {
      case BlkType.IN:
        r.views[0] = r.buf!;
        await s.read(r.offset, r.views);
        r.written = r.bytes;
        return;
      case BlkType.OUT:
        if (!r.flushOnly) {
          r.views[0] = r.buf!;
          await s.write(r.offset, r.views);
        }
        break;
      case BlkType.FLUSH:
        await s.flush();
        this.stats.flushes++;
        return;
      default:
        if (!r.flushOnly) {
          for (let i = 0; i < r.segCount; i++) {
            if (r.segOp[i] === 1) await s.discard!(r.segOffset[i], r.segLength[i]);
            else await s.writeZeroes(r.segOffset[i], r.segLength[i], r.segOp[i] === 2);
          }
        }
    }
    // blk.device-operation.device.13: in writethrough mode a write is durable before it completes.
    if (!this.writeback || r.flushOnly) {
      await s.flush();
      this.stats.flushes++;
    }
  }

  /** The storage answered an asynchronous request (or failed it: IOERR): its status byte, unless it is stale. */
  private readonly settle = (r: AsyncRequest, failed: boolean): void => {
    r.busy = false;
    r.views[0] = EMPTY;
    const buf = r.buf;
    r.buf = null;
    const q = r.q!;
    r.q = null;
    const current = r.epoch === this.epoch;
    if (current) this.inFlight--;
    if (current && r.generation === (this.generations[q.index] ?? 0) && q.isInFlight(r.head)) {
      if (failed) {
        r.status = BlkStatus.IOERR;
        r.written = 0;
      }
      const mem = this.context.memory;
      if (r.written > 0 && buf !== null) {
        let off = 0;
        for (let i = 0; i < r.pieces && off < r.written; i++) {
          const n = Math.min(r.lens[i], r.written - off);
          mem.writeFrom(r.addrs[i], buf, off, n); // through GuestMemory: dirty logging sees it
          off += n;
        }
      }
      mem.writeU8(r.statusAddr, r.status);
      this.count(r.status);
      q.addUsed(r.head, r.written + 1);
      this.schedulePublish(q);
    } else if (current) {
      this.schedulePublish(q); // no entry to publish, but room for more requests: resume
    }
    if (buf !== null) this.giveBuffer(buf);
  };

  private count(status: number): void {
    if (status === BlkStatus.OK) this.stats.ok++;
    else if (status === BlkStatus.IOERR) this.stats.ioerr++;
    else this.stats.unsupp++;
  }

  /** Host buffers for asynchronous data, by length, reused once the storage is done with them (never zeroed: a read fills them). */
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

  /** VIRTIO_BLK_F_RO offered, as of FEATURES_OK (see featuresOk). */
  private roOffered = false;

  /** Read-only: the storage cannot write, or VIRTIO_BLK_F_RO is offered (then the driver may not write). */
  protected refusesWrites(): boolean {
    return this.storage.readOnly || this.roOffered;
  }

  /** One used-index write and at most one notification per queue per tick, for asynchronous answers. */
  private schedulePublish(q: DeviceQueue): void {
    this.toPublish[q.index] = true;
    if (this.publishScheduled) return;
    this.publishScheduled = true;
    queueMicrotask(this.publishTask);
  }

  private readonly publishTask = (): void => {
    this.publishScheduled = false;
    const ctx = this.context;
    const queues = ctx.queues;
    for (let i = 0; i < queues.length; i++) {
      if (this.toPublish[i] !== true) continue;
      this.toPublish[i] = false;
      if (queues[i].active) ctx.complete(queues[i]);
    }
    // Room again: take more requests.
    for (let i = 0; i < queues.length && this.inFlight < this.maxInFlight; i++) ctx.resume(queues[i]);
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
