// A user-written block store, served to QEMU with the library API: the README's example, run by
// custom-device.test.ts against a real guest. A user's copy imports from 'virtio-ts/node'; the
// code below the import is the same.
import { BlkDevice, serveVhostUser, type BlockStorage } from '../../src/node.js';

/** A disk held in a JS Map: sector number -> its 512 bytes. Sectors never written read as zeros. */
export class MapDisk implements BlockStorage {
  readonly sectors = new Map<number, Uint8Array>();
  readonly readOnly = false;
  constructor(readonly size: number) {}

  async read(offset: number, views: readonly Uint8Array[]) {
    this.each(offset, views, (sector, at, piece) => piece.set(sector?.subarray(at, at + piece.length) ?? new Uint8Array(piece.length)));
  }

  async write(offset: number, views: readonly Uint8Array[]) {
    this.each(offset, views, (sector, at, piece, n) => {
      if (sector === undefined) this.sectors.set(n, (sector = new Uint8Array(512)));
      sector.set(piece, at);
    });
  }

  async writeZeroes(offset: number, length: number) {
    await this.write(offset, [new Uint8Array(length)]);
  }

  async flush() {}

  /** Calls `fn` for each piece of `views` that falls in one sector, from byte `offset` of the disk. */
  private each(offset: number, views: readonly Uint8Array[], fn: (sector: Uint8Array | undefined, at: number, piece: Uint8Array, n: number) => void) {
    for (const view of views) {
      for (let i = 0; i < view.length; ) {
        const n = Math.floor((offset + i) / 512);
        const at = (offset + i) % 512;
        const piece = view.subarray(i, i + Math.min(512 - at, view.length - i));
        fn(this.sectors.get(n), at, piece, n);
        i += piece.length;
      }
      offset += view.length;
    }
  }
}

/** Serves a 64 MiB MapDisk on `socketPath` (QEMU: -device vhost-user-blk-pci,chardev=...). */
export function serveMapDisk(socketPath: string) {
  const disk = new MapDisk(64 << 20);
  const daemon = serveVhostUser(new BlkDevice({ storage: disk }), { socket: socketPath });
  return { disk, daemon };
}
