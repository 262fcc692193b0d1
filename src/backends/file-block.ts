/**
 * A block backend over a file or a block device node (Node only). Positional vectored I/O on
 * libuv's thread pool, so the event loop never blocks; flush is fdatasync, so a FLUSH (or a
 * write in writethrough mode) completes only once the data is on stable storage.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { basename } from 'node:path';
import type { BlockBackend } from '../devices/blk-backend.js';

const ZEROES = new Uint8Array(1 << 20);

export class FileBlockBackend implements BlockBackend {
  /** fdatasync calls made (tests check durability paths). */
  syncs = 0;

  private constructor(
    private readonly fh: FileHandle,
    private bytes: number,
    readonly readOnly: boolean,
    readonly serial: string,
    private readonly path: string,
  ) {}

  /** Size in bytes, a multiple of 512: the file's size when opened or last refreshed. */
  get size(): number {
    return this.bytes;
  }

  /** Opens `path`; its size, rounded down to 512 bytes, is the disk's capacity. */
  static async open(path: string, options: { readOnly?: boolean; serial?: string } = {}): Promise<FileBlockBackend> {
    const readOnly = options.readOnly ?? false;
    const fh = await open(path, readOnly ? 'r' : 'r+');
    try {
      const usable = await usableSize(fh, path);
      return new FileBlockBackend(fh, usable, readOnly, (options.serial ?? basename(path)).slice(0, 20), path);
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

  async read(offset: number, views: readonly Uint8Array[]): Promise<void> {
    for (const v of views) {
      let done = 0;
      while (done < v.length) {
        const { bytesRead } = await this.fh.read(v, done, v.length - done, offset + done);
        if (bytesRead === 0) {
          v.fill(0, done); // past the end of a sparse file
          break;
        }
        done += bytesRead;
      }
      offset += v.length;
    }
  }

  async write(offset: number, views: readonly Uint8Array[]): Promise<void> {
    if (this.readOnly) throw new Error('read-only disk');
    for (const v of views) {
      let done = 0;
      while (done < v.length) {
        const { bytesWritten } = await this.fh.write(v, done, v.length - done, offset + done);
        done += bytesWritten;
      }
      offset += v.length;
    }
  }

  async flush(): Promise<void> {
    await this.fh.datasync();
    this.syncs++;
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    for (let done = 0; done < length; done += ZEROES.length) {
      await this.write(offset + done, [ZEROES.subarray(0, Math.min(ZEROES.length, length - done))]);
    }
  }

  /** Discarded sectors may read back as anything (blk.device-operation.driver.15): nothing to do. */
  async discard(): Promise<void> {}

  async close(): Promise<void> {
    await this.fh.close();
  }
}

/** The size of an open file or device node, rounded down to whole 512-byte sectors (at least one). */
async function usableSize(fh: FileHandle, path: string): Promise<number> {
  const st = await fh.stat();
  const size = st.isBlockDevice() ? await blockDeviceSize(fh) : st.size;
  const usable = size - (size % 512);
  if (usable <= 0) throw new Error(`${path} is smaller than one 512-byte sector`);
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
