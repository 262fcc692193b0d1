/**
 * Block driver (spec 5.2): the API an application uses — read, write, flush, discard,
 * writeZeroes, secureErase, getId — over any transport, on every request queue the device
 * offers, with many requests in flight. A non-OK status becomes a BlkError.
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

/** BlkDriver's options: the driver core's (all optional here) and how many request queues to use. */
export interface BlkDriverOptions extends Partial<VirtioDriverOptions> {
  /** Queues to use (at most what the device offers with VIRTIO_BLK_F_MQ). */
  numQueues?: number;
}

const DRIVER_BLK_FEATURES = (() => {
  const f = BLK_FEATURES;
  return [f.SIZE_MAX, f.SEG_MAX, f.GEOMETRY, f.RO, f.BLK_SIZE, f.FLUSH, f.TOPOLOGY, f.CONFIG_WCE, f.MQ, f.DISCARD, f.WRITE_ZEROES, f.SECURE_ERASE].reduce((a, b) => a | bit(b), 0n);
})();

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
  private readonly pending = new Set<BlkRequestToken>();
  private readonly roomWaiters: { resolve: () => void; reject: (err: Error) => void }[] = [];
  private readonly wantQueues: number;

  /** A block driver over `transport`; start() initializes the device. */
  constructor(transport: DriverTransport, options: BlkDriverOptions = {}) {
    super(transport, { deviceId: DeviceId.BLOCK, deviceFeatures: DRIVER_BLK_FEATURES, queueSize: 256, ...options });
    this.wantQueues = options.numQueues ?? 1;
    this.onUsed = (q) => this.collect(q);
    this.onConfigChange = () => {
      // blk.device-operation.driver.1: the capacity may have changed.
      void this.readConfig((read) => read(BlkConfig.capacity, 8)).then((c) => (this.capacity = Number(c)), () => undefined);
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
  async read(offset: number, into: Uint8Array): Promise<void> {
    this.checkIo(offset, into.length);
    const chunk = this.maxIo();
    for (let done = 0; done < into.length; done += chunk) {
      const part = into.subarray(done, Math.min(into.length, done + chunk));
      await this.request(BlkType.IN, (offset + done) / SECTOR, null, part);
    }
  }

  /** Writes `data` (a multiple of 512 bytes) at byte `offset`; durable only after flush() in writeback mode. */
  async write(offset: number, data: Uint8Array): Promise<void> {
    this.checkIo(offset, data.length);
    const chunk = this.maxIo();
    const parts: Promise<void>[] = [];
    for (let done = 0; done < data.length; done += chunk) {
      parts.push(this.request(BlkType.OUT, (offset + done) / SECTOR, data.subarray(done, Math.min(data.length, done + chunk)), null));
    }
    await Promise.all(parts);
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

  private checkIo(offset: number, length: number): void {
    if (offset % SECTOR !== 0 || length % SECTOR !== 0) throw new RangeError(`offset ${offset} and length ${length} must be multiples of 512 (blk.device-operation.driver.6)`);
    // blk.device-operation.driver.2: never beyond capacity.
    if (offset < 0 || offset + length > this.capacity * SECTOR) throw new RangeError(`[${offset}, +${length}) is beyond the ${this.capacity * SECTOR}-byte disk`);
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

  /** Request buffers (header | data | status) kept for reuse, by size: the allocator stays off the hot path. */
  private readonly guestBufs = new Map<number, number[]>();

  private takeGuest(size: number): number {
    return this.guestBufs.get(size)?.pop() ?? this.allocator.alloc(size, 16);
  }

  private giveGuest(addr: number, size: number): void {
    let list = this.guestBufs.get(size);
    if (list === undefined) this.guestBufs.set(size, (list = []));
    if (list.length < 256 && size <= 1 << 17) list.push(addr);
    else this.allocator.release(addr);
  }

  /** One request: header, optional driver->device data, optional device->driver data, status. */
  private async request(type: number, sector: number, out: Uint8Array | null, into: Uint8Array | null): Promise<void> {
    const dataLen = (out?.length ?? 0) + (into?.length ?? 0);
    for (;;) {
      if (this.state === 'suspended') await this.whenRunning();
      if (this.state !== 'live' || this.requestQueues.length === 0) throw this.failure ?? new DriverError('not-started', 'block driver is not started');
      const q = this.requestQueues[this.next++ % this.requestQueues.length];
      const mem = this.takeGuest(16 + dataLen + 1);
      const g = this.transport.memory;
      g.writeU32(mem, type);
      g.writeU32(mem + 4, 0);
      g.writeU32(mem + 8, sector >>> 0);
      g.writeU32(mem + 12, Math.floor(sector / 2 ** 32));
      if (out !== null) g.write(mem + 16, out);
      let req!: BlkRequestToken;
      const done = new Promise<number>((resolve, reject) => (req = { mem, dataLen, resolve, reject }));
      const b = q.begin().addReadable(mem, 16);
      const data = mem + 16;
      // Data in descriptors of at most size_max bytes (VIRTIO_BLK_F_SIZE_MAX).
      for (let off = 0; off < dataLen; off += this.sizeMax) {
        const n = Math.min(this.sizeMax, dataLen - off);
        if (out !== null) b.addReadable(data + off, n);
        else b.addWritable(data + off, n);
      }
      b.addWritable(mem + 16 + dataLen, 1);
      if (q.commit(req) < 0) {
        this.giveGuest(mem, 16 + dataLen + 1);
        await new Promise<void>((resolve, reject) => this.roomWaiters.push({ resolve, reject }));
        continue;
      }
      this.pending.add(req);
      this.kick(q);
      let status: number;
      try {
        status = await done;
        if (status === BlkStatus.OK && into !== null) g.read(mem + 16, into);
      } finally {
        this.giveGuest(mem, 16 + dataLen + 1);
      }
      if (status === BlkStatus.OK && this.readOnly && type !== BlkType.IN && type !== BlkType.GET_ID && type !== BlkType.FLUSH) {
        this.deviceViolation('blk.device-operation.device.3', `read-only device completed a request of type ${type} with OK instead of IOERR`, { type, sector });
      }
      if (status !== BlkStatus.OK) {
        throw new BlkError(`block request type ${type} at sector ${sector} failed: ${status === BlkStatus.IOERR ? 'I/O error' : status === BlkStatus.UNSUPP ? 'unsupported' : `status ${status}`}`, status);
      }
      return;
    }
  }

  private collect(q: DriverQueue<BlkRequestToken>): void {
    do {
      let req: BlkRequestToken | undefined;
      while ((req = q.getUsed()) !== undefined) {
        this.pending.delete(req);
        const status = this.transport.memory.readU8(req.mem + 16 + req.dataLen);
        req.resolve(status);
      }
    } while (q.enableInterrupts() && !q.broken);
    for (const w of this.roomWaiters.splice(0)) w.resolve();
  }

  protected override onBroken(err: DriverError): void {
    for (const req of this.pending) req.reject(err);
    this.pending.clear();
    for (const w of this.roomWaiters.splice(0)) w.reject(err);
  }
}

