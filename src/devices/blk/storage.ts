/**
 * Block storage: what a block device keeps its sectors in. The device stays browser-safe:
 * this module has the interface and an in-memory disk; storage over a file or a block device
 * node (Node) is FileBlockStorage in src/node/file-block.ts. Implement BlockStorage for any
 * other place (a network disk, a Map of sectors, a copy-on-write overlay).
 *
 * Errors: a promise that rejects fails that one request with VIRTIO_BLK_S_IOERR; the device
 * goes on. Adapters here reject with a DeviceError ('read-only', 'storage-io').
 */

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
  }

  get size(): number {
    return this.bytes.length;
  }

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
}

/** @deprecated Renamed: use {@link BlockStorage} ("backend" also named the vhost-user server). */
export type BlockBackend = BlockStorage;
/** @deprecated Renamed: use {@link MemoryBlockStorage}. */
export const MemoryBlockBackend = MemoryBlockStorage;
/** @deprecated Renamed: use {@link MemoryBlockStorage}. */
export type MemoryBlockBackend = MemoryBlockStorage;
