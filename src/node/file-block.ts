/**
 * Block storage over a file or a block device node (Node only). Positional vectored I/O,
 * one preadv/pwritev per request, in one of three modes:
 * - 'auto' (default): reads first try preadv2(RWF_NOWAIT) on the event loop, which returns at
 *   once with data already in the page cache; only a read that would wait for the disk goes to
 *   libuv's thread pool. Writes go to the thread pool. Cached reads cost no thread hop, and a
 *   slow disk never blocks the loop.
 * - 'async': everything on the thread pool.
 * - 'sync': everything on the event loop (a slow disk stalls the whole process).
 * Flush is fdatasync, so a FLUSH (or a write in writethrough mode) completes only once the data
 * is on stable storage.
 *
 * The block device's synchronous path (BlockStorage.readSync and the other ...Sync methods)
 * follows the mode: in 'auto' a read the page cache holds is answered at once, straight into
 * guest memory (RWF_NOWAIT says EAGAIN rather than wait for the disk, and the read then takes
 * the thread pool); writes, flushes and zeroing are declined and go to the thread pool, because
 * a pwrite into the page cache can still block (dirty-page throttling, journal locks) and an
 * fdatasync waits for the disk by design. In 'sync' every request is answered synchronously:
 * the caller chose to stall the event loop on the disk. In 'async' nothing is.
 */
import { fdatasyncSync, readvSync, writevSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { basename } from 'node:path';
import type { BlockStorage } from '../devices/blk/storage.js';
import { DeviceError } from '../device/errors.js';
import { native, type NativeAddon } from '../native/index.js';

/**
 * Where a {@link FileBlockStorage} runs its reads and writes: 'auto' tries page-cache reads
 * on the event loop (preadv2 RWF_NOWAIT) and sends the rest to libuv's thread pool, 'async'
 * uses the thread pool for everything, 'sync' the event loop for everything (a slow disk
 * stalls the process).
 */
export type FileIoMode = 'auto' | 'async' | 'sync';

const ZEROES = new Uint8Array(1 << 20);

/**
 * A {@link BlockStorage} over a file or a block device node, made by {@link FileBlockStorage.open}:
 * positional vectored I/O (one preadv/pwritev per request), FLUSH as fdatasync.
 */
export class FileBlockStorage implements BlockStorage {
  /** fdatasync calls made (tests check durability paths). */
  syncs = 0;

  private constructor(
    private readonly fh: FileHandle,
    private bytes: number,
    readonly readOnly: boolean,
    readonly serial: string,
    private readonly path: string,
    /** Where reads and writes run (see the module comment). */
    readonly io: FileIoMode,
  ) {
    if (io === 'auto') {
      try {
        this.nowait = native();
        this.inMemory = this.nowait.fsMemoryFs(fh.fd);
      } catch {
        this.nowait = null; // no addon: the thread pool does every read
      }
    }
  }

  /**
   * 'auto' on a file in memory (tmpfs, ramfs): preadv2 there refuses RWF_NOWAIT (EOPNOTSUPP)
   * although no read waits for a disk, so every read would take the thread pool; reads are
   * plain readv on the event loop instead, as in 'sync' (a swapped-out tmpfs page aside, they
   * never block). Writes still follow 'auto'.
   */
  private inMemory = false;

  /** The addon, while cached reads may be tried with RWF_NOWAIT ('auto'); null otherwise. */
  private nowait: NativeAddon | null = null;
  /** Reads served from the page cache on the event loop / sent to the thread pool ('auto'). */
  readonly stats = { cachedReads: 0, poolReads: 0 };

  /** Size in bytes, a multiple of 512: the file's size when opened or last refreshed. */
  get size(): number {
    return this.bytes;
  }

  /**
   * Opens `path`; its size, rounded down to 512 bytes, is the disk's capacity. A file smaller
   * than one sector is a DeviceError 'storage-too-small'; open(2) errors are Node's (ENOENT, EACCES).
   */
  static async open(path: string, options: { readOnly?: boolean; serial?: string; io?: FileIoMode } = {}): Promise<FileBlockStorage> {
    const readOnly = options.readOnly ?? false;
    const fh = await open(path, readOnly ? 'r' : 'r+');
    try {
      const usable = await usableSize(fh, path);
      return new FileBlockStorage(fh, usable, readOnly, (options.serial ?? basename(path)).slice(0, 20), path, options.io ?? 'auto');
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /**
   * Measures the open file (or block device node) again, for a disk resized while it is served
   * (`virtio-ts serve blk` on SIGHUP): the new size, rounded down to 512 bytes, becomes `size`.
   * Same rule as open(): a file now smaller than one sector throws and the size stays as it was.
   * Returns the size before and after.
   */
  async refreshSize(): Promise<{ before: number; after: number }> {
    const before = this.bytes;
    this.bytes = await usableSize(this.fh, this.path);
    return { before, after: this.bytes };
  }

  /**
   * One preadv/pwritev per request (all its segments at once), on the thread pool or, with
   * `io: 'sync'`, right here on the event loop. Short transfers go on from where they stopped.
   */
  async read(offset: number, views: readonly Uint8Array[]): Promise<void> {
    let rest = views;
    let pooled = false;
    while (rest.length > 0) {
      let n = -1;
      if (this.inMemory) n = readvSync(this.fh.fd, rest, offset);
      else if (this.nowait !== null && !pooled) {
        n = this.nowait.preadvNowait(this.fh.fd, rest, offset);
        if (n === -2) this.nowait = null; // this file system cannot say: the thread pool from now on
        if (n < 0) pooled = true;
      }
      if (n < 0) n = this.io === 'sync' ? readvSync(this.fh.fd, rest, offset) : (await this.fh.readv(rest, offset)).bytesRead;
      if (n === 0) {
        for (const v of rest) v.fill(0); // past the end of a sparse file
        break;
      }
      offset += n;
      rest = advance(rest, n);
    }
    if (pooled) this.stats.poolReads++;
    else if (this.nowait !== null) this.stats.cachedReads++;
  }

  async write(offset: number, views: readonly Uint8Array[]): Promise<void> {
    if (this.readOnly) throw new DeviceError('read-only', `${this.path} is open read-only`);
    let rest = views;
    while (rest.length > 0) {
      const n = this.io === 'sync' ? writevSync(this.fh.fd, rest, offset) : (await this.fh.writev(rest, offset)).bytesWritten;
      if (n === 0) throw new DeviceError('storage-io', `${this.path}: write at byte ${offset} made no progress`);
      offset += n;
      rest = advance(rest, n);
    }
  }

  async flush(): Promise<void> {
    await this.fh.datasync();
    this.syncs++;
  }

  /**
   * A read the device may serve at once: in 'sync' mode always (readv on the event loop); in
   * 'auto' mode when the page cache holds all of it (preadv2 RWF_NOWAIT), else false and the
   * read goes to the thread pool; in 'async' mode never.
   */
  readSync(offset: number, into: Uint8Array, at: number, length: number): boolean {
    if (this.io === 'async' || (this.io === 'auto' && this.nowait === null)) return false;
    let view = into.subarray(at, at + length);
    while (view.length > 0) {
      let n: number;
      if (this.io === 'sync' || this.inMemory) n = readvSync(this.fh.fd, [view], offset);
      else {
        n = this.nowait!.preadvNowait(this.fh.fd, [view], offset);
        if (n === -2) this.nowait = null; // this file system cannot say: the thread pool from now on
        if (n < 0) return false; // (part of) it is not in the page cache: do not wait for the disk here
      }
      if (n === 0) {
        view.fill(0); // past the end of a sparse file
        break;
      }
      offset += n;
      view = view.subarray(n);
    }
    if (this.io === 'auto') this.stats.cachedReads++;
    return true;
  }

  /** In 'sync' mode a pwritev on the event loop; declined otherwise (a write can block). */
  writeSync(offset: number, from: Uint8Array, at: number, length: number): boolean {
    if (this.io !== 'sync') return false;
    if (this.readOnly) throw new DeviceError('read-only', `${this.path} is open read-only`);
    let view = from.subarray(at, at + length);
    while (view.length > 0) {
      const n = writevSync(this.fh.fd, [view], offset);
      if (n === 0) throw new DeviceError('storage-io', `${this.path}: write at byte ${offset} made no progress`);
      offset += n;
      view = view.subarray(n);
    }
    return true;
  }

  /** In 'sync' mode fdatasync on the event loop; declined otherwise. */
  flushSync(): boolean {
    if (this.io !== 'sync') return false;
    fdatasyncSync(this.fh.fd);
    this.syncs++;
    return true;
  }

  /** In 'sync' mode zeroes written on the event loop; declined otherwise. */
  writeZeroesSync(offset: number, length: number): boolean {
    if (this.io !== 'sync') return false;
    for (let done = 0; done < length; done += ZEROES.length) this.writeSync(offset + done, ZEROES, 0, Math.min(ZEROES.length, length - done));
    return true;
  }

  /** Nothing to do, in every mode (see discard). */
  discardSync(): boolean {
    return true;
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    for (let done = 0; done < length; done += ZEROES.length) {
      await this.write(offset + done, [ZEROES.subarray(0, Math.min(ZEROES.length, length - done))]);
    }
  }

  /** Discarded sectors may read back as anything (blk.device-operation.driver.15): nothing to do. */
  async discard(): Promise<void> {}

  /** Closes the file; the storage must not be used afterwards (stop or reset its device first). */
  async close(): Promise<void> {
    await this.fh.close();
  }
}

/** The views left after `n` bytes of them were transferred. */
function advance(views: readonly Uint8Array[], n: number): readonly Uint8Array[] {
  let i = 0;
  while (i < views.length && n >= views[i].length) n -= views[i++].length;
  if (i === views.length) return [];
  const out = views.slice(i);
  out[0] = out[0].subarray(n);
  return out;
}

/** The size of an open file or device node, rounded down to whole 512-byte sectors (at least one). */
async function usableSize(fh: FileHandle, path: string): Promise<number> {
  const st = await fh.stat();
  const size = st.isBlockDevice() ? await blockDeviceSize(fh) : st.size;
  const usable = size - (size % 512);
  if (usable <= 0) throw new DeviceError('storage-too-small', `${path} is smaller than one 512-byte sector`);
  return usable;
}

/** Size of a block device node: read to the end is not an option; seek is not in fs/promises. */
async function blockDeviceSize(fh: FileHandle): Promise<number> {
  // Binary search for the last readable byte (a few dozen 1-byte reads).
  const b = new Uint8Array(1);
  let lo = 0;
  let hi = 2 ** 50;
  while (lo < hi) {
    const mid = Math.floor((lo + hi + 1) / 2);
    const { bytesRead } = await fh.read(b, 0, 1, mid - 1);
    if (bytesRead === 1) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** @deprecated Renamed: use {@link FileBlockStorage} ("backend" also named the vhost-user server). */
export const FileBlockBackend = FileBlockStorage;
/** @deprecated Renamed: use {@link FileBlockStorage}. */
export type FileBlockBackend = FileBlockStorage;
