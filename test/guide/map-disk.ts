// map-disk.ts
import { BlkDevice, BlkDriver, GuestMemory, LoopbackTransport, type BlockStorage } from '../../src/index.js';

const SECTOR = 512;

/** A sparse disk in a Map: sector number -> 512 bytes; sectors never written read as zeroes. */
export class MapBlockStorage implements BlockStorage {
  readonly sectors = new Map<number, Uint8Array>();
  readonly readOnly = false;
  readonly serial = 'map-disk';

  constructor(readonly size: number) {}

  // The block device checks every request against `size` and the sector size first: offsets
  // and lengths here are whole sectors inside the disk.
  async read(offset: number, views: readonly Uint8Array[]): Promise<void> {
    for (const view of views) {
      for (let at = 0; at < view.length; at += SECTOR, offset += SECTOR) {
        const sector = this.sectors.get(offset / SECTOR);
        if (sector === undefined) view.fill(0, at, at + SECTOR);
        else view.set(sector, at);
      }
    }
  }

  async write(offset: number, views: readonly Uint8Array[]): Promise<void> {
    for (const view of views) {
      for (let at = 0; at < view.length; at += SECTOR, offset += SECTOR) {
        this.sectors.set(offset / SECTOR, view.slice(at, at + SECTOR));
      }
    }
  }

  async flush(): Promise<void> {} // nothing is volatile here

  async writeZeroes(offset: number, length: number): Promise<void> {
    for (let at = offset; at < offset + length; at += SECTOR) this.sectors.delete(at / SECTOR);
  }

  async discard(offset: number, length: number): Promise<void> {
    await this.writeZeroes(offset, length);
  }
}

export async function runMapDisk() {
  const storage = new MapBlockStorage(1 << 20); // 1 MiB: 2048 sectors
  const disk = new BlkDevice({ storage });
  const blk = new BlkDriver(new LoopbackTransport(disk, GuestMemory.create(4 << 20), { mode: 'async' }));
  await blk.start();
  await blk.write(4096, new Uint8Array(1024).fill(7)); // byte offset 4096: sectors 8 and 9
  const back = new Uint8Array(1536);
  await blk.read(4096, back); // sectors 8, 9 and the never written 10
  return { back, stored: [...storage.sectors.keys()], capacity: blk.capacity, id: await blk.getId() };
}
