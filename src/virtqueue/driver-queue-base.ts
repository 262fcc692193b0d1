/**
 * What the split and packed driver queues share: the chain builder (begin / addReadable /
 * addWritable), the state every driver queue reports (numFree, inFlightCount, broken, lastLen,
 * lastId, usedNotifications), the per-buffer record each format keeps (token, writable bytes,
 * in flight, exposed: declared here, laid out by each format, see below), the indirect-table
 * pool, the used-length clamp, taking every buffer back after a reset (drainAfterReset), the
 * notification audits' defaults and verdicts. The ring formats differ in everything else
 * (descriptor placement, publishing, the kick decision, reading used entries); their classes
 * extend this one, as the device queues extend DeviceQueueBase.
 *
 * Hot path: nothing here allocates per buffer. The few lines that end a commit() and a
 * getUsed() (record the token; hand it back and free the record) are written out in each
 * format rather than called here: as calls into this class they cost about 5% per chain in
 * the ring bench (measured in one process against the code before this class, both formats).
 */
import type { GuestMemory, MemoryRegion } from '../memory/guest-memory.js';
import type { RingAddresses } from '../spec/ring.js';
import type { Monitor } from '../monitor/monitor.js';
import { DESC_SIZE } from '../spec/split-layout.js';
import { PDESC_SIZE } from '../spec/packed-layout.js';
import type { ChainBuilder } from './chain.js';
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

/** The size of one descriptor in an indirect table: the same in both formats (2.7.5.3, 2.8.7). */
const INDIRECT_DESC_SIZE = Math.max(DESC_SIZE, PDESC_SIZE);

/** Entries per indirect table a queue of `size` uses with `options` (0: none). */
export function indirectEntries(options: DriverRingOptions, size: number): number {
  // split.indirect-descs.driver.3 / packed.indirect-descs.driver.3: no chain longer than the
  // queue, indirect ones included.
  return options.indirect && options.indirectPool !== undefined ? Math.min(options.indirectMax ?? 32, size) : 0;
}

/** The guest region of a queue's indirect-table pool, or null without indirect tables. */
export function indirectPoolRegion(mem: GuestMemory, options: DriverRingOptions, size: number): MemoryRegion | null {
  const entries = indirectEntries(options, size);
  return entries > 0 ? mem.region(options.indirectPool ?? 0, size * entries * INDIRECT_DESC_SIZE) : null;
}

/**
 * `T` is the type of the token a driver attaches to each buffer and gets back with it. Never
 * undefined: getUsed() answers undefined when no buffer is used.
 *
 * Object layout: the per-buffer records and the builder below are abstract here and declared
 * by each format among its own fields, where they were before this base existed. Fields are
 * laid out in declaration order, base first; with them declared here, the ring bench measured
 * 3-4% more time per chain on the packed ring (the same code, only the field order differed).
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
  protected abstract readonly tokens: (T | undefined)[];
  protected abstract readonly writableLen: Float64Array;
  protected abstract readonly inFlight: Uint8Array;
  /** Set at publish(): the device can have seen the buffer. */
  protected abstract readonly exposed: Uint8Array;
  /** IN_ORDER batch being handed out: buffers left, and the length of its last one. */
  protected abstract batchLeft: number;
  protected abstract batchLastLen: number;
  /** Entries per indirect table (0: no indirect tables: indirectEntries()), and the pool they come from. */
  protected abstract readonly indirectMax: number;
  protected abstract readonly pool: number;
  protected abstract readonly poolRegion: MemoryRegion | null;
  /** Chain under construction (room for max(size, indirectMax) buffers). */
  protected abstract readonly seg: ChainBuilder;

  /** The queue's place (memory, index, size, addresses), its options, and where verdicts go. */
  constructor(
    readonly mem: GuestMemory,
    readonly index: number,
    readonly size: number,
    readonly addrs: RingAddresses,
    readonly options: DriverRingOptions,
    readonly monitor: Monitor,
    private readonly sink: ViolationSink,
  ) {
    this.numFree = size;
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

  /** Whether the device may name `id` in a used entry: a buffer in flight that it can have seen. */
  protected isOut(id: number): boolean {
    return id < this.size && this.inFlight[id] === 1 && this.exposed[id] === 1;
  }

  /**
   * The length the device reported for buffer `id`, held to the buffer's writable bytes: more
   * breaks `clause` (never trust the device past the buffer it was given). The formats call it
   * only for a length beyond the writable bytes (the check itself stays inline).
   */
  protected usedLen(id: number, len: number, clause: string): number {
    if (len <= this.writableLen[id]) return len;
    this.report(clause, `used length ${len} for buffer ${id} exceeds the ${this.writableLen[id]} writable bytes the driver provided`, { id, len, writable: this.writableLen[id] }, false);
    return this.writableLen[id];
  }

  /** Buffer `id` is no longer out: its descriptors are free again, its record cleared. */
  protected abstract release(id: number): void;

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

  /** Synchronous transports: used buffers not collected that the driver asked to hear of (see DriverQueue). */
  unannouncedUsed(): boolean {
    return false;
  }

  /** A verdict about the device's use of this queue; a fatal one breaks the queue. */
  protected report(clause: string, message: string, context: Record<string, unknown>, fatal: boolean): void {
    const v = this.monitor.report(clause, `queue ${this.index}: ${message}`, { queue: this.index, ...context });
    if (fatal) this.broken = true;
    this.sink(v, fatal);
  }
}
