/**
 * What the split and packed driver queues share: the chain builder (begin / addReadable /
 * addWritable), the record of each buffer in flight (its token, its writable bytes, whether the
 * device can have seen it), the indirect-table pool, the end of a commit and of a getUsed
 * (the used length held to what the driver gave), taking buffers back after a reset, and
 * verdicts. The ring formats differ in everything else (descriptor placement, publishing, the
 * kick decision, reading used entries); their classes extend this one, as the device queues
 * extend DeviceQueueBase.
 *
 * Hot path: nothing here allocates per buffer. Tokens live in an array indexed by buffer id,
 * the builder's arrays are preallocated, and the helpers are small enough to be inlined into
 * each format's commit() and getUsed().
 */
import type { GuestMemory, MemoryRegion } from '../memory/guest-memory.js';
import type { Monitor } from '../monitor/monitor.js';
import { ChainBuilder } from './chain.js';
import type { RingFormat, ViolationSink } from './queue.js';

/** Options both ring formats take. */
export interface DriverRingOptions {
  /** VIRTIO_F_EVENT_IDX negotiated. */
  eventIdx: boolean;
  /** VIRTIO_F_INDIRECT_DESC negotiated. */
  indirect: boolean;
  /** Guest address of a pool of `size * indirectMax` descriptors for indirect tables. */
  indirectPool?: number;
  /** Entries per indirect table (default 32, at most the queue size). */
  indirectMax?: number;
  /** VIRTIO_F_IN_ORDER: buffers come back in the order made available, maybe batched (2.7.9, 2.8.9). */
  inOrder?: boolean;
  /**
   * Hash every device-readable buffer when it is exposed and again when it comes back, to catch
   * a device writing where it may only read (split.desc-table.device.1, packed.desc-table.device.1).
   * Costs a pass over the data each way; off by default.
   */
  auditReadable?: boolean;
}

/** The size of one descriptor in an indirect table, in both formats (2.7.5.3, 2.8.7). */
const INDIRECT_DESC_SIZE = 16;

/**
 * `T` is the type of the token a driver attaches to each buffer and gets back with it. Never
 * undefined: getUsed() answers undefined when no buffer is used.
 */
export abstract class DriverQueueBase<T extends {} | null> {
  abstract readonly format: RingFormat;
  /** Free descriptors (split) or free ring slots (packed). */
  numFree: number;
  /** Buffers made available and not yet collected. */
  inFlightCount = 0;
  /** A fatal verdict was made about the device's use of this queue; nothing more goes in or out. */
  broken = false;
  /** Length the device reported for the buffer last returned by getUsed() (held to its writable bytes). */
  lastLen = 0;
  /** Id of the buffer last returned by getUsed() (split: its head descriptor; packed: its buffer id). */
  lastId = 0;
  /** Used-buffer notifications received for this queue (the driver core counts them). */
  usedNotifications = 0;

  /** Per buffer id: the token committed with it, its device-writable bytes, whether it is out. */
  protected readonly tokens: (T | undefined)[];
  protected readonly writableLen: Float64Array;
  protected readonly inFlight: Uint8Array;
  /** Set at publish(): the device can have seen the buffer. */
  protected readonly exposed: Uint8Array;
  protected readonly inOrder: boolean;
  /** IN_ORDER batch being handed out: buffers left, and the length of its last one. */
  protected batchLeft = 0;
  protected batchLastLen = 0;
  /** Entries per indirect table (0: no indirect tables), and the pool they come from. */
  protected readonly indirectMax: number;
  protected readonly pool: number;
  protected readonly poolRegion: MemoryRegion | null;
  /** Chain under construction. */
  protected readonly seg: ChainBuilder;

  constructor(
    readonly mem: GuestMemory,
    readonly index: number,
    readonly size: number,
    readonly options: DriverRingOptions,
    readonly monitor: Monitor,
    private readonly sink: ViolationSink,
  ) {
    this.numFree = size;
    this.tokens = new Array<T | undefined>(size).fill(undefined);
    this.writableLen = new Float64Array(size);
    this.inFlight = new Uint8Array(size);
    this.exposed = new Uint8Array(size);
    this.inOrder = options.inOrder === true;
    // split.indirect-descs.driver.3 / packed.indirect-descs.driver.3: no chain longer than the
    // queue, indirect ones included.
    this.indirectMax = options.indirect && options.indirectPool !== undefined ? Math.min(options.indirectMax ?? 32, size) : 0;
    this.pool = options.indirectPool ?? 0;
    this.poolRegion = this.indirectMax > 0 ? mem.region(this.pool, size * this.indirectMax * INDIRECT_DESC_SIZE) : null;
    this.seg = new ChainBuilder(Math.max(size, this.indirectMax));
  }

  /** Starts a new chain. */
  begin(): this {
    this.seg.clear();
    return this;
  }

  /** Appends a device-readable buffer. */
  addReadable(addr: number, len: number): this {
    this.seg.add(addr, len, 0, this.index);
    return this;
  }

  /** Appends a device-writable buffer. */
  addWritable(addr: number, len: number): this {
    this.seg.add(addr, len, 1, this.index);
    return this;
  }

  /**
   * The start of commit(): the chain under construction is one the driver may make available
   * (not empty; device-readable buffers first, `framingClause`), and whether it goes into an
   * indirect table (asked for, or by default, when the queue has them and the chain fits one).
   */
  protected checkChain(framingClause: string, options: { indirect?: boolean } | undefined): boolean {
    const seg = this.seg;
    const n = seg.count;
    if (n === 0) throw new RangeError('empty chain');
    if (seg.readableAfterWritable) throw new RangeError(`device-readable buffers must come before device-writable ones (${framingClause})`);
    // No default object for `options`: an object literal per call is the hot path's only allocation.
    return (options?.indirect ?? true) && this.indirectMax > 0 && n > 1 && n <= this.indirectMax;
  }

  /** The end of commit(): buffer `id` is out, carrying `token`; the builder is empty again. */
  protected committed(id: number, token: T, writable: number): void {
    this.tokens[id] = token;
    this.writableLen[id] = writable;
    this.inFlight[id] = 1;
    this.inFlightCount++;
    this.seg.count = 0;
  }

  /** Whether the device may name `id` in a used entry: a buffer in flight that it can have seen. */
  protected isOut(id: number): boolean {
    return id < this.size && this.inFlight[id] === 1 && this.exposed[id] === 1;
  }

  /**
   * The length the device reported for buffer `id`, held to the buffer's writable bytes: more
   * breaks `clause` (never trust the device past the buffer it was given).
   */
  protected usedLen(id: number, len: number, clause: string): number {
    if (len <= this.writableLen[id]) return len;
    this.report(clause, `used length ${len} for buffer ${id} exceeds the ${this.writableLen[id]} writable bytes the driver provided`, { id, len, writable: this.writableLen[id] }, false);
    return this.writableLen[id];
  }

  /** The end of getUsed(): buffer `id` is back with `len` bytes written; its token. */
  protected handBack(id: number, len: number): T | undefined {
    const token = this.tokens[id];
    this.release(id);
    this.lastId = id;
    this.lastLen = len;
    return token;
  }

  /** Buffer `id` is no longer out: the format frees its descriptors, then calls forget(). */
  protected abstract release(id: number): void;

  /** The format-neutral part of release(): `slots` descriptors free again, the record cleared. */
  protected forget(id: number, slots: number): void {
    this.numFree += slots;
    this.inFlight[id] = 0;
    this.exposed[id] = 0;
    this.inFlightCount--;
    this.tokens[id] = undefined;
  }

  /**
   * After a device or queue reset: every buffer back, tokens in buffer-id order
   * (init.cleanup.driver.2: only once the device is reset).
   */
  drainAfterReset(): T[] {
    this.batchLeft = 0;
    this.forgetProgress();
    const out: T[] = [];
    for (let id = 0; id < this.size; id++) {
      if (this.inFlight[id]) {
        out.push(this.tokens[id] as T);
        this.release(id);
      }
    }
    return out;
  }

  /** drainAfterReset(): the format's own state of buffers in progress, cleared. */
  protected forgetProgress(): void {}

  /**
   * Synchronous transports: audits a used-buffer notification that just arrived. Formats with
   * no rule for it (packed: 2.8.10 states none for the device) leave it at this.
   */
  auditUsedNotification(): void {}

  /** Synchronous transports: the device's used position before a notify (for auditMissedNotification). */
  usedMark(): number {
    return 0;
  }

  /** Synchronous transports, after a notify that brought no notification back: audits whether one was due. */
  auditMissedNotification(_mark: number): void {}

  /** A verdict about the device's use of this queue; a fatal one breaks the queue. */
  protected report(clause: string, message: string, context: Record<string, unknown>, fatal: boolean): void {
    const v = this.monitor.report(clause, `queue ${this.index}: ${message}`, { queue: this.index, ...context });
    if (fatal) this.broken = true;
    this.sink(v, fatal);
  }
}
