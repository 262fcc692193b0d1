/**
 * Block driver (spec 5.2): the API an application uses — read, write, flush, discard,
 * writeZeroes, secureErase, getId — over any transport, on every request queue the device
 * offers, with many requests in flight. A non-OK status becomes a BlkError.
 *
 * Two ways to send requests: the promise methods (one promise per call), and a
 * {@link BlkBatch} (`driver.batch()`): submit many requests, then reap their completions
 * into arrays, with no promise, closure or allocation per request. Both share the queues and a
 * pool of request states and guest buffers, so neither allocates per request in steady state
 * beyond the promise itself.
 */
import { DeviceId } from '../spec/constants.js';
import { DriverError, VirtioDriver, type VirtioDriverOptions } from '../driver/driver.js';
import { bit } from '../spec/features.js';
import type { DriverTransport } from '../driver/transport.js';
import type { DriverQueue } from '../virtqueue/queue.js';
import { BLK_FEATURES, BlkConfig, BlkStatus, BlkType } from '../spec/blk.js';
import { VirtioTsError } from '../errors.js';

const SECTOR = 512;

/**
 * How the device answered a block request that did not succeed (5.2.6, the status byte):
 * - `io-error`: VIRTIO_BLK_S_IOERR (a failed read or write, a write to a read-only device);
 * - `unsupported`: VIRTIO_BLK_S_UNSUPP (a request type the device does not serve);
 * - `bad-status`: a status value the spec does not define (`status` holds it).
 * A request the driver refuses before sending is not a BlkError: offsets and lengths that are
 * not whole sectors, or beyond the capacity, are the caller's mistake (RangeError); a request
 * whose feature was not negotiated is a DriverError (`not-negotiated`); a driver that gave up
 * rejects with its DriverError.
 */
export type BlkErrorKind = 'io-error' | 'unsupported' | 'bad-status';

/** A block request the device answered with a status other than OK. */
export class BlkError extends VirtioTsError<BlkErrorKind> {
  /** A BlkError for a request the device answered with `status`; the kind follows the status. */
  constructor(
    message: string,
    /** The status byte the device wrote. */
    readonly status: number,
  ) {
    super(status === BlkStatus.IOERR ? 'io-error' : status === BlkStatus.UNSUPP ? 'unsupported' : 'bad-status', message);
  }
}

/** A block request in flight (the token of BlkDriver's queues: the driver's own; read it, do not commit it). */
export interface BlkRequestToken {
  /** Guest allocation: header (16 bytes) | data | status (1 byte). */
  mem: number;
  dataLen: number;
  /** Settles the request with the status byte the device wrote. */
  resolve: (status: number) => void;
  /** Fails the request (the driver gave up, the queue was reset, ...). */
  reject: (err: Error) => void;
}

/**
 * A guest buffer for one request, header (16 bytes) | data | status (1 byte), kept for reuse
 * with views made once: `whole` over all of it (the header is written through it), `data` over
 * the data.
 */
interface GuestBuffer {
  addr: number;
  dataLen: number;
  data: Uint8Array;
  whole: DataView;
}

/**
 * A buffer in guest memory for a {@link BlkBatch}'s reads and writes without a copy
 * ({@link BlkBatch.readBuffer}, {@link BlkBatch.writeBuffer}): the device reads and writes its
 * bytes where they are, so a 4 KiB read costs one copy (disk to guest memory) instead of two
 * (disk to guest memory to the caller's buffer). Made by {@link BlkDriver.buffer}, given back
 * with {@link BlkDriver.releaseBuffer}. While a request of it is in flight (queued until its
 * completion is reaped) its bytes are the device's: read a read's data once it is reaped with
 * status OK, and leave a write's data unchanged until then.
 */
export class BlkBuffer {
  /** A request of this buffer is queued or in flight. @internal */
  busy = false;
  /** Given back to the driver (releaseBuffer): no more requests. @internal */
  released = false;

  /** @internal Made by BlkDriver.buffer. */
  constructor(
    /** The driver that made it (a batch takes only its own driver's buffers). @internal */
    readonly owner: object,
    /** Guest-physical address of the first byte. @internal */
    readonly addr: number,
    /** The bytes: a view of guest memory (a whole number of 512-byte sectors). */
    readonly data: Uint8Array,
  ) {}
}

/** Settles one of the driver's own requests: `status` the status byte, or the error that ended it. */
type Settle = (r: OwnRequest, status: number, err: Error | null) => void;

/**
 * One of BlkDriver's own requests (a promise method's, or a slot of a {@link BlkBatch}): the
 * token its queue holds, reused from a pool. Its promise executor and settle path are made once
 * with it, so a request costs no closure.
 */
class OwnRequest implements BlkRequestToken {
  mem = 0;
  dataLen = 0;
  type = 0;
  sector = 0;
  buf: GuestBuffer | null = null;
  /** IN / GET_ID: where the data goes when the request completes. */
  into: Uint8Array | null = null;
  /** A batch request on a {@link BlkBuffer}: the data is there, not in `buf`. */
  direct: BlkBuffer | null = null;
  /** Position in the driver's in-flight list; -1 when not in flight. */
  live = -1;
  /** The driver's submission count when this request went out (write zeroes tracking). */
  seq = 0;
  /** A batch slot: the batch's delivery, the caller's tag, the outcome. */
  deliver: Settle | null = null;
  tag = 0;
  status = 0;
  private res: (() => void) | null = null;
  private rej: ((err: Error) => void) | null = null;
  /** For `new Promise(executor)`: keeps the promise's resolve and reject here. */
  readonly executor = (res: () => void, rej: (err: Error) => void): void => {
    this.res = res;
    this.rej = rej;
  };

  constructor(
    private readonly settle: Settle,
    /** A batch slot's index. */
    readonly index = -1,
  ) {}

  resolve(status: number): void {
    this.settle(this, status, null);
  }

  reject(err: Error): void {
    this.settle(this, -1, err);
  }

  /** Settles the promise (promise requests): the BlkError for a status other than OK. */
  finish(status: number, err: Error | null): void {
    const res = this.res!;
    const rej = this.rej!;
    this.res = this.rej = null;
    if (err !== null) rej(err);
    else if (status !== BlkStatus.OK) {
      rej(new BlkError(`block request type ${this.type} at sector ${this.sector} failed: ${status === BlkStatus.IOERR ? 'I/O error' : status === BlkStatus.UNSUPP ? 'unsupported' : `status ${status}`}`, status));
    } else res();
  }
}

/** What a {@link BlkBatch} uses of its driver (the driver's private parts, handed over at batch()). */
interface BatchPort {
  /** Throws when no request can be sent now (not started, broken); false while suspended. */
  ready(): boolean;
  /** RangeError for an offset or length the device cannot take in one request. */
  check(offset: number, length: number): void;
  /** Puts a request on `q` (not yet published): false when the ring is full. */
  enqueue(q: DriverQueue<BlkRequestToken>, r: OwnRequest, type: number, sector: number, out: Uint8Array | null, into: Uint8Array | null, direct: BlkBuffer | null): boolean;
  /** The driver (whose {@link BlkBuffer}s a batch takes). */
  readonly owner: object;
  /** Publishes `q` and notifies the device. */
  kick(q: DriverQueue<BlkRequestToken>): void;
  /** Whether VIRTIO_BLK_F_FLUSH was negotiated. */
  flushes(): boolean;
  readonly settle: Settle;
  /** Registers a batch's announcer, called after every used-buffer notification's completions. */
  announce(fn: () => void): void;
}

/** BlkDriver's options: the driver core's (all optional here) and how many request queues to use. */
export interface BlkDriverOptions extends Partial<VirtioDriverOptions> {
  /** Queues to use (at most what the device offers with VIRTIO_BLK_F_MQ). */
  numQueues?: number;
}

const DRIVER_BLK_FEATURES = (() => {
  const f = BLK_FEATURES;
  return [f.SIZE_MAX, f.SEG_MAX, f.GEOMETRY, f.RO, f.BLK_SIZE, f.FLUSH, f.TOPOLOGY, f.CONFIG_WCE, f.MQ, f.DISCARD, f.WRITE_ZEROES, f.LIFETIME, f.SECURE_ERASE].reduce((a, b) => a | bit(b), 0n);
})();

/** One discard / write zeroes / secure erase segment (5.2.6): sector u64, num_sectors u32, flags u32. */
const SEGMENT_BYTES = 16;
/** struct virtio_blk_lifetime: three le16. */
const LIFETIME_BYTES = 6;
/** VIRTIO_BLK_PRE_EOL_INFO_URGENT; higher values are reserved. */
const PRE_EOL_MAX = 3;
/** device_lifetime_est_typ_a/b: 11 means lifetime exceeded; higher values are reserved. */
const LIFETIME_EST_MAX = 11;
/** Write zeroes ranges remembered at once (the oldest goes first). */
const ZEROED_SLOTS = 16;
/**
 * `Uint8Array.prototype.set`, called as `copy.call(target, source)`: optimized code reaches
 * `target.set` through a generic property load (a LoadIC call), about 10 ns per request.
 */
const copy = Uint8Array.prototype.set;

/** A little-endian u32 of `b` at `off`. */
function u32(b: Uint8Array, off: number): number {
  return (b[off] | (b[off + 1] << 8) | (b[off + 2] << 16) | (b[off + 3] << 24)) >>> 0;
}

/**
 * The zone request types (5.2.6: VIRTIO_BLK_T_ZONE_APPEND 15, REPORT 16, OPEN 18, CLOSE 20,
 * FINISH 22, RESET 24, RESET_ALL 26), which a device without VIRTIO_BLK_F_ZONED must refuse.
 * The driver has no zone support; a probe sends them through rawRequest.
 */
const ZONE_APPEND = 15;
const ZONE_TYPES: ReadonlySet<number> = new Set([ZONE_APPEND, 16, 18, 20, 22, 24, 26]);

/**
 * The driver side of a virtio-blk device (spec 5.2). Reads and writes take **byte** offsets and
 * lengths (multiples of 512); `capacity` is in 512-byte **sectors**, the spec's unit, so the
 * disk holds `capacity * 512` bytes.
 */
export class BlkDriver extends VirtioDriver<BlkRequestToken> {
  /** Capacity in 512-byte sectors (bytes: `capacity * 512`). */
  capacity = 0;
  blkSize = SECTOR;
  sizeMax = 1 << 20;
  segMax = 1;
  maxDiscardSectors = 0;
  /** VIRTIO_BLK_F_TOPOLOGY: log2 logical blocks per physical block, first aligned block, I/O sizes in blocks. */
  topology = { physicalBlockExp: 0, alignmentOffset: 0, minIoSize: 0, optIoSize: 0 };
  maxWriteZeroesSectors = 0;
  private readonly requestQueues: DriverQueue<BlkRequestToken>[] = [];
  private next = 0;
  /** The driver's own requests in flight (rejected if the driver breaks down). */
  private readonly inflight: OwnRequest[] = [];
  /** Promise requests ready for reuse. */
  private readonly spare: OwnRequest[] = [];
  private readonly roomWaiters: { resolve: () => void; reject: (err: Error) => void }[] = [];
  private readonly wantQueues: number;
  /** VIRTIO_BLK_F_RO, read once the features are negotiated (the completion path looks at it). */
  private ro = false;
  /** Kicks asked for while a kick runs (a synchronous transport answers inside it), by queue index. */
  private kicking = false;
  private readonly kickWanted: boolean[] = [];
  private anyKickWanted = false;
  /** Batches' announcers (see BatchPort.announce). */
  private readonly announcers: (() => void)[] = [];
  /** configNotifications when the `capacity` held was read: a change after it must come with a notification. */
  private capacityNotified = 0;
  /**
   * Ranges a completed write zeroes left zero (blk.device-operation.device.9), [start, end) in
   * sectors, with the submission count at completion; a slot with end 0 is free. Forgotten when
   * any request that may change them is submitted. Preallocated: reads check them without
   * allocating, and only while one is live.
   */
  private readonly zStart = new Float64Array(ZEROED_SLOTS);
  private readonly zEnd = new Float64Array(ZEROED_SLOTS);
  private readonly zSeq = new Float64Array(ZEROED_SLOTS);
  private zLive = 0;
  private zNext = 0;
  /** Requests submitted so far (OwnRequest.seq). */
  private submitted = 0;

  /** A block driver over `transport`; start() initializes the device. */
  constructor(transport: DriverTransport, options: BlkDriverOptions = {}) {
    super(transport, { deviceId: DeviceId.BLOCK, deviceFeatures: DRIVER_BLK_FEATURES, queueSize: 256, ...options });
    this.wantQueues = options.numQueues ?? 1;
    this.onUsed = (q) => this.collect(q);
    this.onConfigChange = () => {
      // blk.device-operation.driver.1: the capacity may have changed.
      const n = this.configNotifications;
      void this.readConfig((read) => read(BlkConfig.capacity, 8)).then(
        (c) => {
          this.capacity = Number(c);
          this.capacityNotified = n;
        },
        () => undefined,
      );
    };
  }

  /** Whether the device is read-only (VIRTIO_BLK_F_RO): writes then fail with IOERR. */
  get readOnly(): boolean {
    return this.negotiated(BLK_FEATURES.RO);
  }

  /** Initializes the device (3.1.1), reads its configuration and sets up the request queues. */
  async start(): Promise<void> {
    await this.init({
      check: (offered) => {
        const f = BLK_FEATURES;
        const has = (b: number) => ((offered >> BigInt(b)) & 1n) === 1n;
        if (has(f.CONFIG_WCE) && !has(f.FLUSH)) this.deviceViolation('blk.device-init.device.2', 'device offers VIRTIO_BLK_F_CONFIG_WCE without VIRTIO_BLK_F_FLUSH', {});
        else if (!has(f.FLUSH)) this.deviceViolation('blk.device-init.device.1', 'device does not offer VIRTIO_BLK_F_FLUSH', {});
      },
      setup: async () => {
        const f = BLK_FEATURES;
        const cfg = await this.readConfig(async (read) => ({
          capacity: Number(await read(BlkConfig.capacity, 8)),
          sizeMax: this.negotiated(f.SIZE_MAX) ? Number(await read(BlkConfig.sizeMax, 4)) : 0,
          segMax: this.negotiated(f.SEG_MAX) ? Number(await read(BlkConfig.segMax, 4)) : 0,
          blkSize: this.negotiated(f.BLK_SIZE) ? Number(await read(BlkConfig.blkSize, 4)) : SECTOR,
          numQueues: this.negotiated(f.MQ) ? Number(await read(BlkConfig.numQueues, 2)) : 1,
          maxDiscard: this.negotiated(f.DISCARD) ? Number(await read(BlkConfig.maxDiscardSectors, 4)) : 0,
          maxWz: this.negotiated(f.WRITE_ZEROES) ? Number(await read(BlkConfig.maxWriteZeroesSectors, 4)) : 0,
        }));
        await this.checkConfig();
        if (this.negotiated(f.TOPOLOGY)) {
          this.topology = await this.readConfig(async (read) => ({
            physicalBlockExp: Number(await read(BlkConfig.topology, 1)),
            alignmentOffset: Number(await read(BlkConfig.topology + 1, 1)),
            minIoSize: Number(await read(BlkConfig.topology + 2, 2)),
            optIoSize: Number(await read(BlkConfig.topology + 4, 4)),
          }));
        }
        this.capacity = cfg.capacity;
        this.capacityNotified = this.configNotifications;
        this.ro = this.negotiated(f.RO);
        if (cfg.sizeMax > 0) this.sizeMax = cfg.sizeMax;
        this.segMax = Math.max(1, cfg.segMax);
        this.blkSize = cfg.blkSize;
        this.maxDiscardSectors = cfg.maxDiscard;
        this.maxWriteZeroesSectors = cfg.maxWz;
        const n = Math.max(1, Math.min(this.wantQueues, cfg.numQueues));
        for (let i = 0; i < n; i++) this.requestQueues.push(await this.setupQueue(i));
      },
    });
  }

  /** Checks the device's config space against what 5.2.5 asks of it. */
  private async checkConfig(): Promise<void> {
    const f = BLK_FEATURES;
    const pads = await this.readConfig(async (read) => [await read(33, 1), await read(57, 1), await read(58, 1), await read(59, 1)]);
    if (pads.some((b) => Number(b) !== 0)) this.deviceViolation('blk.device-init.device.4', `config padding (unused0, unused1) is not zero: ${pads.join(', ')}`, {});
    if (this.negotiated(f.CONFIG_WCE) && !this.negotiated(f.FLUSH)) {
      const wb = Number(await this.transport.readConfig(BlkConfig.writeback, 1));
      if (wb !== 0) this.deviceViolation('blk.device-init.device.3', `writeback reads ${wb} with CONFIG_WCE but no FLUSH negotiated (must start at 0)`, {});
    }
  }

  /** Reads `into.length` bytes (a multiple of 512) from byte `offset` (a multiple of 512). */
  read(offset: number, into: Uint8Array): Promise<void> {
    try {
      this.checkIo(offset, into.length);
    } catch (err) {
      return Promise.reject(err);
    }
    const chunk = this.maxIo();
    if (into.length === 0) return Promise.resolve(); // nothing to ask the device
    // One request (the usual case): its own promise, no async function around it.
    if (into.length <= chunk) return this.request(BlkType.IN, offset / SECTOR, null, into);
    return this.readChunks(offset, into, chunk);
  }

  private async readChunks(offset: number, into: Uint8Array, chunk: number): Promise<void> {
    for (let done = 0; done < into.length; done += chunk) {
      const part = into.subarray(done, Math.min(into.length, done + chunk));
      await this.request(BlkType.IN, (offset + done) / SECTOR, null, part);
    }
  }

  /** Writes `data` (a multiple of 512 bytes) at byte `offset`; durable only after flush() in writeback mode. */
  write(offset: number, data: Uint8Array): Promise<void> {
    try {
      this.checkIo(offset, data.length);
    } catch (err) {
      return Promise.reject(err);
    }
    const chunk = this.maxIo();
    if (data.length === 0) return Promise.resolve();
    if (data.length <= chunk) return this.request(BlkType.OUT, offset / SECTOR, data, null);
    const parts: Promise<void>[] = [];
    for (let done = 0; done < data.length; done += chunk) {
      parts.push(this.request(BlkType.OUT, (offset + done) / SECTOR, data.subarray(done, Math.min(data.length, done + chunk)), null));
    }
    return Promise.all(parts).then(() => undefined);
  }

  /** Makes every completed write durable (VIRTIO_BLK_T_FLUSH: the device fdatasyncs). */
  async flush(): Promise<void> {
    if (!this.negotiated(BLK_FEATURES.FLUSH)) return; // writethrough: every write is durable already
    await this.request(BlkType.FLUSH, 0, null, null);
  }

  /** Discards [offset, offset+length) bytes (VIRTIO_BLK_T_DISCARD; whole sectors; DriverError `not-negotiated` without VIRTIO_BLK_F_DISCARD). */
  async discard(offset: number, length: number): Promise<void> {
    await this.segmentRequest(BlkType.DISCARD, BLK_FEATURES.DISCARD, offset, length, 0);
  }

  /** Zeroes [offset, offset+length) bytes (VIRTIO_BLK_T_WRITE_ZEROES, `unmap` to let the device deallocate; needs VIRTIO_BLK_F_WRITE_ZEROES). */
  async writeZeroes(offset: number, length: number, options: { unmap?: boolean } = {}): Promise<void> {
    await this.segmentRequest(BlkType.WRITE_ZEROES, BLK_FEATURES.WRITE_ZEROES, offset, length, options.unmap ? 1 : 0);
  }

  /** Erases [offset, offset+length) bytes beyond recovery (VIRTIO_BLK_T_SECURE_ERASE; needs VIRTIO_BLK_F_SECURE_ERASE). */
  async secureErase(offset: number, length: number): Promise<void> {
    await this.segmentRequest(BlkType.SECURE_ERASE, BLK_FEATURES.SECURE_ERASE, offset, length, 0);
  }

  /** The device's serial number (VIRTIO_BLK_T_GET_ID). */
  async getId(): Promise<string> {
    const id = new Uint8Array(20);
    await this.request(BlkType.GET_ID, 0, null, id);
    const end = id.indexOf(0);
    return new TextDecoder().decode(end < 0 ? id : id.subarray(0, end));
  }

  /** With VIRTIO_BLK_F_CONFIG_WCE: switch between writeback (true) and writethrough. */
  async setWriteback(on: boolean): Promise<void> {
    if (!this.negotiated(BLK_FEATURES.CONFIG_WCE)) throw new DriverError('not-negotiated', 'VIRTIO_BLK_F_CONFIG_WCE was not negotiated');
    await this.transport.writeConfig(BlkConfig.writeback, 1, on ? 1 : 0);
  }

  /** Whether the device caches writes (writeback: flush() makes them durable) or writes through. */
  async writeback(): Promise<boolean> {
    if (this.negotiated(BLK_FEATURES.CONFIG_WCE)) return Number(await this.transport.readConfig(BlkConfig.writeback, 1)) === 1;
    return this.negotiated(BLK_FEATURES.FLUSH); // blk.device-init.driver.3
  }

  private maxIo(): number {
    const bytes = Math.min(this.sizeMax * this.segMax, 1 << 22);
    return Math.max(SECTOR, bytes - (bytes % SECTOR));
  }

  /**
   * Whole sectors (blk.device-operation.driver.6), within the capacity (driver.2). One throw
   * site, its message made in {@link ioRangeError}: with one template literal per condition
   * here, TurboFan shared their `String(offset)` and placed it before both checks, so every
   * request converted its offset to a string (a new 24-byte string for most offsets).
   */
  private checkIo(offset: number, length: number): void {
    if (offset % SECTOR !== 0 || length % SECTOR !== 0 || offset < 0 || offset + length > this.capacity * SECTOR) throw this.ioRangeError(offset, length);
  }

  /** The RangeError for a request checkIo refuses (the cold path: not inlined into callers' fast paths). */
  private ioRangeError(offset: number, length: number): RangeError {
    if (offset % SECTOR !== 0 || length % SECTOR !== 0) return new RangeError(`offset ${offset} and length ${length} must be multiples of 512 (blk.device-operation.driver.6)`);
    return new RangeError(`[${offset}, +${length}) is beyond the ${this.capacity * SECTOR}-byte disk`);
  }

  private async segmentRequest(type: number, feature: number, offset: number, length: number, flags: number): Promise<void> {
    if (!this.negotiated(feature)) throw new DriverError('not-negotiated', `the device does not support this request (feature bit ${feature} not negotiated)`);
    this.checkIo(offset, length);
    const seg = new Uint8Array(16);
    const v = new DataView(seg.buffer);
    const max = (type === BlkType.DISCARD ? this.maxDiscardSectors : this.maxWriteZeroesSectors) || this.capacity;
    for (let s = offset / SECTOR; s < (offset + length) / SECTOR; s += max) {
      const n = Math.min(max, (offset + length) / SECTOR - s);
      v.setBigUint64(0, BigInt(s), true);
      v.setUint32(8, n, true);
      v.setUint32(12, flags, true);
      await this.request(type, 0, seg, null);
    }
  }

  /**
   * A batch: requests submitted many at a time and reaped into arrays, without a promise per
   * request (see {@link BlkBatch}). On queue `options.queue` (default: the next request queue in
   * turn), with at most `options.depth` requests outstanding (default: the queue size).
   */
  batch(options: { queue?: number; depth?: number } = {}): BlkBatch {
    if (this.requestQueues.length === 0) throw this.failure ?? new DriverError('not-started', 'block driver is not started');
    const index = options.queue ?? this.next++ % this.requestQueues.length;
    const q = this.requestQueues[index];
    if (q === undefined) throw new DriverError('no-queue', `request queue ${index} is not set up (${this.requestQueues.length} are)`);
    const depth = options.depth ?? q.size;
    if (!Number.isSafeInteger(depth) || depth < 1) throw new RangeError(`batch depth ${depth} is not a positive integer`);
    return new BlkBatch(this.port, q, depth);
  }

  /**
   * A buffer of `length` bytes (whole sectors, at most {@link maxRequestBytes}) in guest memory,
   * for a batch's reads and writes without a copy ({@link BlkBatch.readBuffer},
   * {@link BlkBatch.writeBuffer}). Taken from the driver's guest allocator until
   * {@link releaseBuffer}. A RangeError for a bad length; the allocator's error when guest memory is full.
   */
  buffer(length: number): BlkBuffer {
    if (!Number.isSafeInteger(length) || length <= 0 || length % SECTOR !== 0) throw new RangeError(`buffer length ${length} is not a positive multiple of 512`);
    if (length > this.maxIo()) throw this.tooLarge(length);
    const addr = this.allocator.alloc(length, 64);
    return new BlkBuffer(this, addr, this.transport.memory.bytes(addr, length));
  }

  /**
   * Gives a {@link buffer} back to the guest allocator. A DriverError `wrong-state` while a
   * request of it is queued or in flight (its bytes are still the device's), or when it is not
   * this driver's or was released already.
   */
  releaseBuffer(b: BlkBuffer): void {
    if (b.owner !== this) throw new DriverError('wrong-state', 'this buffer was made by another driver');
    if (b.released) throw new DriverError('wrong-state', 'this buffer was released already');
    if (b.busy) throw new DriverError('wrong-state', 'a request of this buffer is in flight: reap it first');
    b.released = true;
    this.allocator.release(b.addr);
  }

  /** The RangeError for a batch request larger than one request may be (a function of its own: see checkIo). */
  private tooLarge(length: number): RangeError {
    return new RangeError(`${length} bytes do not fit one request (at most ${this.maxIo()}: size_max x seg_max)`);
  }

  /** The most bytes one request (and so one batch read or write) carries: size_max x seg_max, at most 4 MiB. */
  get maxRequestBytes(): number {
    return this.maxIo();
  }

  private readonly port: BatchPort = {
    ready: () => {
      if (this.state === 'live' && this.requestQueues.length > 0) return true;
      if (this.state === 'suspended') return false;
      throw this.failure ?? new DriverError('not-started', 'block driver is not started');
    },
    check: (offset, length) => {
      this.checkIo(offset, length);
      if (length > this.maxIo()) throw this.tooLarge(length);
    },
    enqueue: (q, r, type, sector, out, into, direct) => this.enqueue(q, r, type, sector, out, into, direct),
    owner: this,
    kick: (q) => this.kickQueue(q),
    flushes: () => this.negotiated(BLK_FEATURES.FLUSH),
    settle: (r, status, err) => this.settle(r, status, err),
    announce: (fn) => void this.announcers.push(fn),
  };

  /** Request buffers kept for reuse, by data length: the allocator stays off the hot path. */
  private readonly guestBufs = new Map<number, GuestBuffer[]>();
  /** The list of the data length used last (a Map lookup is about 50 instructions; most requests are of one size). */
  private lastLen = -1;
  private lastList: GuestBuffer[] = [];

  /** The pool of buffers of `dataLen` data bytes. */
  private guestList(dataLen: number): GuestBuffer[] {
    if (dataLen === this.lastLen) return this.lastList;
    let list = this.guestBufs.get(dataLen);
    if (list === undefined) this.guestBufs.set(dataLen, (list = []));
    this.lastLen = dataLen;
    this.lastList = list;
    return list;
  }

  private takeGuest(dataLen: number): GuestBuffer {
    const b = this.guestList(dataLen).pop();
    if (b !== undefined) return b;
    const addr = this.allocator.alloc(16 + dataLen + 1, 16);
    const whole = this.transport.memory.bytes(addr, 16 + dataLen + 1);
    return { addr, dataLen, data: whole.subarray(16, 16 + dataLen), whole: new DataView(whole.buffer, whole.byteOffset, whole.byteLength) };
  }

  private giveGuest(b: GuestBuffer): void {
    const list = this.guestList(b.dataLen);
    if (list.length < 256 && b.dataLen <= 1 << 17) list.push(b);
    else this.allocator.release(b.addr);
  }

  /**
   * Puts one request on `q` without publishing it: header, optional driver->device data,
   * optional device->driver data, status. False (and nothing taken) when the ring is full.
   */
  private enqueue(q: DriverQueue<BlkRequestToken>, r: OwnRequest, type: number, sector: number, out: Uint8Array | null, into: Uint8Array | null, direct: BlkBuffer | null): boolean {
    // A BlkBuffer's request: header and status in a pooled 17-byte buffer, the data where it is.
    const dataLen = direct !== null ? direct.data.length : (out?.length ?? 0) + (into?.length ?? 0);
    const buf = this.takeGuest(direct !== null ? 0 : dataLen);
    const mem = buf.addr;
    const g = this.transport.memory;
    // The header through the buffer's own view: no region lookup per field.
    const h = buf.whole;
    h.setUint32(0, type, true);
    h.setUint32(4, 0, true);
    h.setUint32(8, sector >>> 0, true);
    h.setUint32(12, Math.floor(sector / 2 ** 32), true);
    if (g.onWrite !== null) g.onWrite(mem, 16);
    if (out !== null) {
      copy.call(buf.data, out);
      if (g.onWrite !== null) g.onWrite(mem + 16, dataLen);
    }
    // The caller wrote a BlkBuffer's bytes through its view: dirty logging is told here.
    if (direct !== null && type === BlkType.OUT && g.onWrite !== null) g.onWrite(direct.addr, dataLen);
    const b = q.begin().addReadable(mem, 16);
    const data = direct !== null ? direct.addr : mem + 16;
    const toDevice = out !== null || (direct !== null && type === BlkType.OUT);
    // Data in descriptors of at most size_max bytes (VIRTIO_BLK_F_SIZE_MAX).
    for (let off = 0; off < dataLen; off += this.sizeMax) {
      const n = Math.min(this.sizeMax, dataLen - off);
      if (toDevice) b.addReadable(data + off, n);
      else b.addWritable(data + off, n);
    }
    // The status byte after the data (in the pooled buffer: right after the header for a BlkBuffer's request).
    const ownData = direct !== null ? 0 : dataLen;
    b.addWritable(mem + 16 + ownData, 1);
    r.mem = mem;
    r.dataLen = ownData;
    r.buf = buf;
    r.type = type;
    r.sector = sector;
    r.into = into;
    r.seq = ++this.submitted;
    if (this.zLive > 0 && type !== BlkType.IN) this.forgetZeroed(type, sector, out ?? (direct !== null ? direct.data : null));
    if (q.commit(r) < 0) {
      r.buf = null;
      r.into = null;
      this.giveGuest(buf);
      return false;
    }
    if (direct !== null) {
      r.direct = direct;
      direct.busy = true;
    }
    r.live = this.inflight.length;
    this.inflight.push(r);
    return true;
  }

  /**
   * Publishes `q` and notifies the device. On a synchronous transport the device answers inside
   * the notification, and a caller may submit again from the completion (a batch's onReady):
   * such a kick waits for the running one to return, so the stack stays flat however long the
   * exchange goes on.
   */
  private kickQueue(q: DriverQueue<BlkRequestToken>): void {
    if (this.kicking) {
      this.kickWanted[q.index] = true;
      this.anyKickWanted = true;
      return;
    }
    this.kicking = true;
    try {
      this.kick(q);
      while (this.anyKickWanted) {
        this.anyKickWanted = false;
        for (let i = 0; i < this.kickWanted.length; i++) {
          if (!this.kickWanted[i]) continue;
          this.kickWanted[i] = false;
          const wanted = this.queues[i];
          if (wanted !== undefined) this.kick(wanted);
        }
      }
    } finally {
      this.kicking = false;
    }
  }

  /** One promise request: on the fast path a pooled request and one promise, nothing else. */
  private request(type: number, sector: number, out: Uint8Array | null, into: Uint8Array | null): Promise<void> {
    if (this.state === 'live' && this.requestQueues.length > 0) {
      try {
        const sent = this.send(type, sector, out, into);
        if (sent !== null) return sent;
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return this.requestSlow(type, sector, out, into);
  }

  /** Puts a promise request on the next queue and kicks it: its promise, or null when the ring is full. */
  private send(type: number, sector: number, out: Uint8Array | null, into: Uint8Array | null): Promise<void> | null {
    const q = this.requestQueues[this.next++ % this.requestQueues.length];
    const r = this.spare.pop() ?? new OwnRequest(this.settleFn);
    if (!this.enqueue(q, r, type, sector, out, into, null)) {
      this.spare.push(r);
      return null;
    }
    const done = new Promise<void>(r.executor);
    this.kickQueue(q);
    return done;
  }

  /** A request that must wait: while suspended, or for room in a full ring. */
  private async requestSlow(type: number, sector: number, out: Uint8Array | null, into: Uint8Array | null): Promise<void> {
    for (;;) {
      if (this.state === 'suspended') await this.whenRunning();
      if (this.state !== 'live' || this.requestQueues.length === 0) throw this.failure ?? new DriverError('not-started', 'block driver is not started');
      const sent = this.send(type, sector, out, into);
      if (sent !== null) return sent;
      await new Promise<void>((resolve, reject) => this.roomWaiters.push({ resolve, reject }));
    }
  }

  private readonly settleFn: Settle = (r, status, err) => this.settle(r, status, err);

  /** A request of the driver's own came back (or the driver gave up on it). */
  private settle(r: OwnRequest, status: number, err: Error | null): void {
    if (r.live >= 0) {
      // Out of the in-flight list: the last one takes its place.
      const last = this.inflight.pop()!;
      if (last !== r) {
        this.inflight[r.live] = last;
        last.live = r.live;
      }
      r.live = -1;
    }
    const buf = r.buf;
    const type = r.type;
    r.buf = null;
    if (buf !== null) {
      if (err === null && status === BlkStatus.OK && r.into !== null) copy.call(r.into, buf.data);
      // Requests the device must refuse (only a probe's rawRequest sends them): judged before
      // the buffer goes back, while its segments are still there to read.
      if (err === null && status !== BlkStatus.UNSUPP && type >= BlkType.DISCARD) this.checkRefusal(type, status, buf.data);
      if (err === null && status === BlkStatus.OK) {
        if (type === BlkType.WRITE_ZEROES) this.rememberZeroed(buf.data);
        else if (type === BlkType.IN && this.zLive > 0) this.checkZeroed(r.sector, r.seq, buf.data);
      }
      this.giveGuest(buf);
    }
    r.into = null;
    const direct = r.direct;
    if (direct !== null) {
      r.direct = null;
      direct.busy = false;
      if (err === null && status === BlkStatus.OK && type === BlkType.IN && this.zLive > 0) this.checkZeroed(r.sector, r.seq, direct.data);
    }
    // A read or write the device failed: the disk may have shrunk. Look (off the hot path).
    if (err === null && status === BlkStatus.IOERR && type <= BlkType.OUT && this.transport.synchronous === true) void this.recheckCapacity();
    if (err === null && status === BlkStatus.OK && type !== BlkType.IN && type !== BlkType.GET_ID && type !== BlkType.FLUSH && this.ro) {
      this.deviceViolation('blk.device-operation.device.3', `read-only device completed a request of type ${type} with OK instead of IOERR`, { type, sector: r.sector });
    }
    if (r.deliver !== null) {
      r.deliver(r, status, err);
      return;
    }
    r.finish(status, err);
    this.spare.push(r);
  }

  /**
   * A request the device must answer with UNSUPP, answered otherwise (`status`): a zone request
   * without VIRTIO_BLK_F_ZONED (blk.device-operation.device.18); a discard, secure erase or
   * write zeroes segment with an unknown flag (device.5) or a discard segment with unmap
   * (device.6). The request is settled with the device's status as it stands; in strict mode
   * the driver gives up on a device that serves what it must refuse.
   */
  private checkRefusal(type: number, status: number, data: Uint8Array): void {
    if (type >= ZONE_APPEND) {
      if (ZONE_TYPES.has(type) && !this.negotiated(BLK_FEATURES.ZONED)) {
        this.deviceViolation('blk.device-operation.device.18', `device answered zone request type ${type} with status ${status}, not UNSUPP, although VIRTIO_BLK_F_ZONED was not negotiated`, { type, status });
      }
      return;
    }
    if (type !== BlkType.DISCARD && type !== BlkType.WRITE_ZEROES && type !== BlkType.SECURE_ERASE) return;
    for (let off = 0; off + SEGMENT_BYTES <= data.length; off += SEGMENT_BYTES) {
      const flags = u32(data, off + 12);
      if ((flags & ~1) !== 0) {
        this.deviceViolation('blk.device-operation.device.5', `device answered a type ${type} request whose segment has unknown flags 0x${flags.toString(16)} with status ${status}, not UNSUPP`, { type, status, flags });
        return;
      }
      if (type === BlkType.DISCARD && (flags & 1) !== 0) {
        this.deviceViolation('blk.device-operation.device.6', `device answered a discard with the unmap flag set with status ${status}, not UNSUPP`, { type, status });
        return;
      }
    }
  }

  /** A write zeroes completed: its segments' ranges read as zeroes from now on, until written. */
  private rememberZeroed(segs: Uint8Array): void {
    for (let off = 0; off + SEGMENT_BYTES <= segs.length; off += SEGMENT_BYTES) {
      const start = u32(segs, off) + u32(segs, off + 4) * 2 ** 32;
      const n = u32(segs, off + 8);
      if (n === 0) continue;
      const i = this.zNext++ % ZEROED_SLOTS;
      if (this.zEnd[i] === 0) this.zLive++;
      this.zStart[i] = start;
      this.zEnd[i] = start + n;
      this.zSeq[i] = this.submitted;
    }
  }

  /** A request that may change sectors goes out: the zeroed ranges it touches are forgotten (all of them for a type this driver does not know). */
  private forgetZeroed(type: number, sector: number, out: Uint8Array | null): void {
    if (type === BlkType.GET_ID || type === BlkType.FLUSH || type === BlkType.GET_LIFETIME) return;
    if (type === BlkType.OUT) this.forgetRange(sector, sector + (out?.length ?? 0) / SECTOR);
    else if ((type === BlkType.DISCARD || type === BlkType.WRITE_ZEROES || type === BlkType.SECURE_ERASE) && out !== null) {
      for (let off = 0; off + SEGMENT_BYTES <= out.length; off += SEGMENT_BYTES) {
        const start = u32(out, off) + u32(out, off + 4) * 2 ** 32;
        this.forgetRange(start, start + u32(out, off + 8));
      }
    } else this.forgetRange(0, Number.MAX_SAFE_INTEGER);
  }

  private forgetRange(start: number, end: number): void {
    for (let i = 0; i < ZEROED_SLOTS; i++) {
      if (this.zEnd[i] !== 0 && this.zStart[i] < end && start < this.zEnd[i]) {
        this.zEnd[i] = 0;
        this.zLive--;
      }
    }
  }

  /**
   * blk.device-operation.device.9: a read submitted after a write zeroes completed, of sectors
   * nothing has written since, must return zeroes. Checks the overlap of the read with each
   * such range; the read is delivered as the device answered it.
   */
  private checkZeroed(sector: number, seq: number, data: Uint8Array): void {
    const end = sector + data.length / SECTOR;
    for (let i = 0; i < ZEROED_SLOTS; i++) {
      const zEnd = this.zEnd[i];
      if (zEnd === 0 || this.zSeq[i] >= seq || this.zStart[i] >= end || sector >= zEnd) continue;
      const from = (Math.max(sector, this.zStart[i]) - sector) * SECTOR;
      const to = (Math.min(end, zEnd) - sector) * SECTOR;
      for (let b = from; b < to; b++) {
        if (data[b] !== 0) {
          const at = sector + Math.floor(b / SECTOR);
          this.zEnd[i] = 0;
          this.zLive--;
          this.deviceViolation('blk.device-operation.device.9', `sector ${at} reads non-zero data after a completed write zeroes of [${this.zStart[i]}, ${zEnd}) and no write since`, { sector: at });
          return;
        }
      }
    }
  }

  /**
   * After an IOERR on a read or write (synchronous transports): re-reads the capacity. A
   * capacity that changed with no configuration change notification since the driver last
   * read it breaks blk.device-operation.device.2 (the device SHOULD notify); a notification
   * would have arrived with the change. The new capacity is taken either way.
   */
  private async recheckCapacity(): Promise<void> {
    const n = this.configNotifications;
    const before = this.capacity;
    let now: number;
    try {
      now = Number(await this.readConfig((read) => read(BlkConfig.capacity, 8)));
    } catch {
      return;
    }
    // Announced (a notification since the capacity held was read) or already re-read: fine.
    if (now === before || n !== this.capacityNotified || this.capacity !== before) return;
    this.capacity = now;
    this.capacityNotified = n;
    this.deviceViolation('blk.device-operation.device.2', `capacity changed from ${before} to ${now} sectors with no configuration change notification`, { before, now });
  }

  /**
   * Sends one request exactly as given (a conformance probe, or a request type this driver
   * has no method for): `out` is the driver->device data, `inLen` the device->driver bytes.
   * Resolves with the status byte and the bytes the device wrote (OK only); the completion is
   * judged like any other (a request the device must refuse and serves draws a verdict).
   */
  async rawRequest(type: number, sector: number, data: { out?: Uint8Array; inLen?: number } = {}): Promise<{ status: number; data: Uint8Array | null }> {
    const into = data.inLen !== undefined && data.inLen > 0 ? new Uint8Array(data.inLen) : null;
    try {
      await this.request(type, sector, data.out ?? null, into);
      return { status: BlkStatus.OK, data: into };
    } catch (err) {
      if (err instanceof BlkError) return { status: err.status, data: null };
      throw err;
    }
  }

  /**
   * The device's lifetime metrics (VIRTIO_BLK_T_GET_LIFETIME; needs VIRTIO_BLK_F_LIFETIME).
   * Checked: no reserved value (blk.device-operation.device.17), and not all three
   * "undefined" (device.16: a device without lifetime metrics must not offer the feature).
   */
  async lifetime(): Promise<{ preEolInfo: number; slcEstimate: number; mlcEstimate: number }> {
    if (!this.negotiated(BLK_FEATURES.LIFETIME)) throw new DriverError('not-negotiated', 'VIRTIO_BLK_F_LIFETIME was not negotiated');
    const d = new Uint8Array(LIFETIME_BYTES);
    await this.request(BlkType.GET_LIFETIME, 0, null, d);
    const m = { preEolInfo: d[0] | (d[1] << 8), slcEstimate: d[2] | (d[3] << 8), mlcEstimate: d[4] | (d[5] << 8) };
    if (m.preEolInfo > PRE_EOL_MAX || m.slcEstimate > LIFETIME_EST_MAX || m.mlcEstimate > LIFETIME_EST_MAX) {
      this.deviceViolation('blk.device-operation.device.17', `lifetime metrics use reserved values (pre_eol_info ${m.preEolInfo}, estimates ${m.slcEstimate} / ${m.mlcEstimate})`, m);
    } else if (m.preEolInfo === 0 && m.slcEstimate === 0 && m.mlcEstimate === 0) {
      this.deviceViolation('blk.device-operation.device.16', 'device offers VIRTIO_BLK_F_LIFETIME but every lifetime metric reads "undefined" (0): it has none to report', m);
    }
    return m;
  }

  private collect(q: DriverQueue<BlkRequestToken>): void {
    do {
      let req: BlkRequestToken | undefined;
      while ((req = q.getUsed()) !== undefined) {
        const status = this.transport.memory.readU8(req.mem + 16 + req.dataLen);
        req.resolve(status);
      }
    } while (q.enableInterrupts() && !q.broken);
    if (this.roomWaiters.length > 0) for (const w of this.roomWaiters.splice(0)) w.resolve();
    for (let i = 0; i < this.announcers.length; i++) this.announcers[i]();
  }

  protected override onBroken(err: DriverError): void {
    for (const r of this.inflight.splice(0)) {
      r.live = -1;
      this.settle(r, -1, err);
    }
    for (const w of this.roomWaiters.splice(0)) w.reject(err);
    for (let i = 0; i < this.announcers.length; i++) this.announcers[i]();
  }
}

/**
 * Block requests many at a time, without a promise per request: queue reads, writes and
 * flushes (each with a number `tag` of yours), `submit()` them with one notification, and
 * `reap()` the completions into arrays of tags and status bytes. The driver gives you
 * {@link BlkBatch.onReady} when completions arrive. Made by {@link BlkDriver.batch}, on one
 * request queue, with a fixed number of request slots (`depth`): a slot is taken when a
 * request is queued and given back when its completion is reaped, so nothing is allocated per
 * request. The promise methods of the driver keep working beside it, on the same queues.
 *
 * ```ts
 * const batch = driver.batch({ depth: 32 });
 * const tags = new Float64Array(32), statuses = new Int32Array(32);
 * batch.onReady = () => {
 *   const n = batch.reap(tags, statuses);
 *   for (let i = 0; i < n; i++) if (statuses[i] !== BlkStatus.OK) console.log(`request ${tags[i]} failed`);
 *   // ...queue more, then batch.submit()
 * };
 * for (let i = 0; i < 32; i++) batch.read(i * 4096, buffers[i], i);
 * batch.submit();
 * ```
 *
 * A read's data is in its buffer when its completion is reaped with status OK (the buffer must
 * stay untouched until then). On a synchronous transport (the sync loopback) the device answers
 * inside submit(), and onReady runs there: it may queue and submit again (that submit is done
 * when the running one returns, so the stack does not grow).
 */
export class BlkBatch {
  /** Status reported for a request that ended without a status byte: the driver broke down ({@link failure} says why). */
  static readonly FAILED = -1;
  /** Called after completions arrived (a used-buffer notification), and when the driver broke down. An exception from it is rethrown from a microtask: the driver goes on. */
  onReady: (() => void) | null = null;
  /** Why requests ended with {@link BlkBatch.FAILED} (the driver's failure); null until then. */
  failure: Error | null = null;
  private readonly slots: OwnRequest[] = [];
  /** Free slot indices (a stack). */
  private readonly free: Int32Array;
  private nFree: number;
  /** Completed slot indices not yet reaped (a ring). */
  private readonly done: Int32Array;
  private doneHead = 0;
  private doneCount = 0;
  /** Completions since the last onReady. */
  private news = false;
  private unsubmitted = 0;

  /**
   * A batch over `q` with `depth` slots, through its driver's `port`: made by BlkDriver.batch.
   * @internal
   */
  constructor(
    private readonly port: BatchPort,
    private readonly q: DriverQueue<BlkRequestToken>,
    /** Requests outstanding at most (queued, in flight, or completed and not reaped). */
    readonly depth: number,
  ) {
    this.free = new Int32Array(depth);
    this.done = new Int32Array(depth);
    const deliver: Settle = (r, status, err) => this.deliver(r, status, err);
    for (let i = 0; i < depth; i++) {
      const r = new OwnRequest(port.settle, i);
      r.deliver = deliver;
      this.slots.push(r);
      this.free[i] = depth - 1 - i;
    }
    this.nFree = depth;
    port.announce(() => this.announce());
  }

  /** Requests queued or in flight (not yet completed). */
  get inFlight(): number {
    return this.depth - this.nFree - this.doneCount;
  }

  /** Completions waiting for reap(). */
  get ready(): number {
    return this.doneCount;
  }

  /**
   * Queues a read of `into.length` bytes (a multiple of 512, at most the driver's
   * maxRequestBytes) from byte `offset` (a multiple of 512) into `into`. False when it cannot be
   * queued now: every slot is taken (reap first), the ring is full, or the driver is suspended
   * (`await driver.whenRunning()`). A RangeError for a bad offset or length; the driver's error
   * when it is not started or broke down.
   */
  read(offset: number, into: Uint8Array, tag: number): boolean {
    this.port.check(offset, into.length);
    return this.queue(BlkType.IN, offset / SECTOR, null, into, tag, null);
  }

  /** Queues a write of `data` (a multiple of 512 bytes) at byte `offset`; as {@link read}. `data` must stay unchanged until submit() returns. */
  write(offset: number, data: Uint8Array, tag: number): boolean {
    this.port.check(offset, data.length);
    return this.queue(BlkType.OUT, offset / SECTOR, data, null, tag, null);
  }

  /**
   * Queues a read of `buf.data.length` bytes from byte `offset` straight into `buf` (a
   * {@link BlkBuffer} of this batch's driver): the data is in `buf.data` when the completion is
   * reaped with status OK, with one copy fewer than {@link read}. As read otherwise; a
   * DriverError `wrong-state` for a buffer that is in flight already, released, or another driver's.
   */
  readBuffer(offset: number, buf: BlkBuffer, tag: number): boolean {
    this.port.check(offset, buf.data.length);
    this.usable(buf);
    return this.queue(BlkType.IN, offset / SECTOR, null, null, tag, buf);
  }

  /** Queues a write of `buf.data` at byte `offset`, from guest memory where it is; as {@link readBuffer}. Leave `buf.data` unchanged until the completion is reaped. */
  writeBuffer(offset: number, buf: BlkBuffer, tag: number): boolean {
    this.port.check(offset, buf.data.length);
    this.usable(buf);
    return this.queue(BlkType.OUT, offset / SECTOR, null, null, tag, buf);
  }

  private usable(buf: BlkBuffer): void {
    if (buf.owner !== this.port.owner) throw new DriverError('wrong-state', "this buffer was made by another driver: use this batch's driver.buffer()");
    if (buf.released) throw new DriverError('wrong-state', 'this buffer was released');
    if (buf.busy) throw new DriverError('wrong-state', 'a request of this buffer is in flight already');
  }

  /**
   * Queues a FLUSH: completed writes become durable (reaped writes, not those still in
   * flight). Without VIRTIO_BLK_F_FLUSH (writethrough: every write is durable already) it
   * completes at once with OK.
   */
  flush(tag: number): boolean {
    if (!this.port.flushes()) {
      if (this.nFree === 0) return false;
      const r = this.slots[this.free[--this.nFree]];
      r.tag = tag;
      this.deliver(r, BlkStatus.OK, null);
      return true;
    }
    return this.queue(BlkType.FLUSH, 0, null, null, tag, null);
  }

  private queue(type: number, sector: number, out: Uint8Array | null, into: Uint8Array | null, tag: number, direct: BlkBuffer | null): boolean {
    if (!this.port.ready() || this.nFree === 0) return false;
    const r = this.slots[this.free[--this.nFree]];
    r.tag = tag;
    if (!this.port.enqueue(this.q, r, type, sector, out, into, direct)) {
      this.free[this.nFree++] = r.index;
      return false;
    }
    this.unsubmitted++;
    return true;
  }

  /** Publishes the queued requests and notifies the device (if it wants to be notified). */
  submit(): void {
    if (this.unsubmitted === 0) return;
    this.unsubmitted = 0;
    this.port.kick(this.q);
  }

  /**
   * Moves completions into `tags` and `statuses` (the status byte: BlkStatus.OK, IOERR, UNSUPP,
   * or {@link BlkBatch.FAILED}), oldest first, as many as both arrays hold; returns how many.
   * Their slots are free again.
   */
  reap(tags: { [index: number]: number; readonly length: number }, statuses: { [index: number]: number; readonly length: number }): number {
    const n = Math.min(this.doneCount, tags.length, statuses.length);
    for (let i = 0; i < n; i++) {
      const r = this.slots[this.done[this.doneHead]];
      this.doneHead = this.doneHead + 1 === this.depth ? 0 : this.doneHead + 1;
      tags[i] = r.tag;
      statuses[i] = r.status;
      this.free[this.nFree++] = r.index;
    }
    this.doneCount -= n;
    return n;
  }

  private deliver(r: OwnRequest, status: number, err: Error | null): void {
    if (err !== null) {
      this.failure = err;
      status = BlkBatch.FAILED;
    }
    r.status = status;
    let tail = this.doneHead + this.doneCount;
    if (tail >= this.depth) tail -= this.depth;
    this.done[tail] = r.index;
    this.doneCount++;
    this.news = true;
  }

  private announce(): void {
    if (!this.news) return;
    this.news = false;
    const fn = this.onReady;
    if (fn === null) return;
    try {
      fn();
    } catch (err) {
      queueMicrotask(() => {
        throw err;
      });
    }
  }
}
