/**
 * Block storage: what a block device keeps its sectors in. The device stays browser-safe:
 * this module has the interface and an in-memory disk; storage over a file or a block device
 * node (Node) is FileBlockStorage in src/node/file-block.ts. Implement BlockStorage for any
 * other place (a network disk, a Map of sectors, a copy-on-write overlay).
 *
 * Errors: a promise that rejects fails that one request with VIRTIO_BLK_S_IOERR; the device
 * goes on. Adapters here reject with a DeviceError ('read-only', 'storage-io').
 *
 * A storage that can answer at once (memory, the page cache) may also implement the optional
 * synchronous methods (readSync, writeSync, flushSync, ...): the device then serves a request
 * from pop to used entry in one go, with no promise and no allocation; a storage without them,
 * or one that declines a request (returns false), is served through the promise methods.
 */
import { PageViews } from './views.js';

/**
 * Where a block device keeps its sectors. Every call is asynchronous; a rejection fails that
 * one request with VIRTIO_BLK_S_IOERR. Offsets and lengths are in bytes and stay inside `size`
 * (the device checks requests against the capacity first).
 */
export interface BlockStorage {
  /** Size in bytes (a multiple of 512). */
  readonly size: number;
  /** Writes are refused; the device offers VIRTIO_BLK_F_RO. */
  readonly readOnly: boolean;
  /** Reads into the views, in order, from byte `offset`. */
  read(offset: number, views: readonly Uint8Array[]): Promise<void>;
  /** Writes the views, in order, at byte `offset`. */
  write(offset: number, views: readonly Uint8Array[]): Promise<void>;
  /** Makes every completed write durable (fdatasync for files). */
  flush(): Promise<void>;
  /** Forgets [offset, offset+length) (may read back as anything); default: nothing. */
  discard?(offset: number, length: number): Promise<void>;
  /** Zeroes [offset, offset+length); `unmap` allows deallocation. */
  writeZeroes(offset: number, length: number, unmap: boolean): Promise<void>;
  /** Up to 20 bytes of serial number (VIRTIO_BLK_T_GET_ID). */
  readonly serial?: string;

  // Optional synchronous capability. The device calls these first, on its own thread, inside
  // the driver's notification: implement them only for what costs no waiting (memory, data
  // already in the page cache), never for a read or a sync that may wait for a disk (that
  // would stall every queue of the device and everything else on the event loop). Each
  // returns true when it did the whole job; false declines: the device then serves the whole
  // request with the promise methods above (a read or write it began synchronously is done
  // again from the start, so a partial job before a false is harmless). A throw fails the
  // request with VIRTIO_BLK_S_IOERR, like a rejected promise. `into` and `from` are views of
  // guest memory (a whole memory region, `at` bytes in): keep no reference to them.

  /** Reads `length` bytes from byte `offset` into `into[at, at + length)`, or declines (false). */
  readSync?(offset: number, into: Uint8Array, at: number, length: number): boolean;
  /** Writes `from[at, at + length)` at byte `offset`, or declines (false). */
  writeSync?(offset: number, from: Uint8Array, at: number, length: number): boolean;
  /** Makes every completed write durable now, or declines (false). */
  flushSync?(): boolean;
  /** {@link discard} done now, or declined (false). */
  discardSync?(offset: number, length: number): boolean;
  /** {@link writeZeroes} done now, or declined (false). */
  writeZeroesSync?(offset: number, length: number, unmap: boolean): boolean;
  /**
   * Releases what the storage holds (a file handle). The device never calls it: whoever made
   * the storage closes it after the device is done with it (stopped or reset).
   */
  close?(): Promise<void>;
}

/** A disk in memory (tests, demos, browsers). */
export class MemoryBlockStorage implements BlockStorage {
  readonly bytes: Uint8Array;
  flushes = 0;

  /**
   * A zero-filled disk of `size` bytes (a positive multiple of 512, else a RangeError), read-only
   * when `readOnly`; `serial` is what VIRTIO_BLK_T_GET_ID returns.
   */
  constructor(
    size: number,
    readonly readOnly = false,
    readonly serial = 'virtio-ts-mem',
  ) {
    if (!Number.isSafeInteger(size) || size <= 0 || size % 512 !== 0) throw new RangeError(`disk size ${size} is not a positive multiple of 512`);
    this.bytes = new Uint8Array(size);
    this.pages = new PageViews(this.bytes);
  }

  get size(): number {
    return this.bytes.length;
  }

  /** Views of `bytes` a page at a time: copies out of the disk allocate nothing (see PageViews). */
  private readonly pages: PageViews;

  async read(offset: number, views: readonly Uint8Array[]): Promise<void> {
    for (const v of views) {
      v.set(this.bytes.subarray(offset, offset + v.length));
      offset += v.length;
    }
  }

  async write(offset: number, views: readonly Uint8Array[]): Promise<void> {
    for (const v of views) {
      this.bytes.set(v, offset);
      offset += v.length;
    }
  }

  async flush(): Promise<void> {
    this.flushes++;
  }

  async discard(offset: number, length: number): Promise<void> {
    this.bytes.fill(0, offset, offset + length);
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.bytes.fill(0, offset, offset + length);
  }

  // The synchronous methods answer at once, the disk being memory, unless a subclass (written
  // before they existed) overrides the promise method and not its synchronous twin: then they
  // decline, and the device calls the override as it always did.

  /** Answers at once (declines when a subclass overrides read but not readSync). */
  readSync(offset: number, into: Uint8Array, at: number, length: number): boolean {
    if (this.read !== P.read && this.readSync === P.readSync) return false;
    this.pages.copyOut(offset, into, at, length);
    return true;
  }

  /** Answers at once (declines when a subclass overrides write but not writeSync). */
  writeSync(offset: number, from: Uint8Array, at: number, length: number): boolean {
    if (this.write !== P.write && this.writeSync === P.writeSync) return false;
    this.pages.copyIn(offset, from, at, length);
    return true;
  }

  /** Nothing to make durable; counted in `flushes` (declines when a subclass overrides flush but not flushSync). */
  flushSync(): boolean {
    if (this.flush !== P.flush && this.flushSync === P.flushSync) return false;
    this.flushes++;
    return true;
  }

  /** Answers at once (declines when a subclass overrides discard but not discardSync). */
  discardSync(offset: number, length: number): boolean {
    if (this.discard !== P.discard && this.discardSync === P.discardSync) return false;
    this.bytes.fill(0, offset, offset + length);
    return true;
  }

  /** Answers at once (declines when a subclass overrides writeZeroes but not writeZeroesSync). */
  writeZeroesSync(offset: number, length: number): boolean {
    if (this.writeZeroes !== P.writeZeroes && this.writeZeroesSync === P.writeZeroesSync) return false;
    this.bytes.fill(0, offset, offset + length);
    return true;
  }
}

/** MemoryBlockStorage's own methods, to tell a subclass's overrides from them. */
const P = MemoryBlockStorage.prototype;

/** @deprecated Renamed: use {@link BlockStorage} ("backend" also named the vhost-user server). */
export type BlockBackend = BlockStorage;
/** @deprecated Renamed: use {@link MemoryBlockStorage}. */
export const MemoryBlockBackend = MemoryBlockStorage;
/** @deprecated Renamed: use {@link MemoryBlockStorage}. */
export type MemoryBlockBackend = MemoryBlockStorage;
