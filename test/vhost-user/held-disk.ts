// Block requests for vhost-user tests whose timing the test controls: a disk that holds its
// reads until told, and a read request made available on a ring of a TestFrontEnd.
import { BlkType } from '../../src/devices/blk/device.js';
import { MemoryBlockBackend } from '../../src/devices/blk/storage.js';
import { WAIT_MS, n, type TestFrontEnd, type TestRing } from './front-end.js';

/** A disk whose reads finish only when the test says so. */
export class HeldBackend extends MemoryBlockBackend {
  held: (() => void)[] = [];
  private waiters: (() => void)[] = [];
  override read(offset: number, views: readonly Uint8Array[]): Promise<void> {
    return new Promise((res) => {
      this.held.push(() => res(super.read(offset, views)));
      for (const w of this.waiters.splice(0)) w();
    });
  }

  /** Reads at once (for a subclass that holds only some reads). */
  protected readNow(offset: number, views: readonly Uint8Array[]): Promise<void> {
    return super.read(offset, views);
  }

  /** Resolves when at least `count` reads are held (an event: each read that arrives); rejects after `timeoutMs`. */
  async whenHeld(count: number, timeoutMs = WAIT_MS): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.held.length < count) {
      await new Promise<void>((res, rej) => {
        const timer = setTimeout(() => rej(new Error(`${this.held.length} of ${count} reads reached the disk in ${timeoutMs} ms`)), Math.max(0, deadline - Date.now()));
        this.waiters.push(() => {
          clearTimeout(timer);
          res();
        });
      });
    }
  }
}

/**
 * Makes a 512-byte read of sector 0 available (token `read${k}`) and kicks: header at
 * 0x30000 + k * 0x1000, status byte at +0x100 (0xff until the device writes it), the data at
 * `data` (default +0x200).
 */
export function blkRead(fe: TestFrontEnd, ring: TestRing, k: number, data = 0x30000 + k * 0x1000 + 0x200): void {
  const hdr = 0x30000 + k * 0x1000;
  const dv = new DataView(fe.ram, hdr, 16);
  dv.setUint32(0, BlkType.IN, true);
  dv.setBigUint64(8, 0n, true);
  fe.bytes(hdr + 0x100, 1)[0] = 0xff;
  ring.queue.begin().addReadable(hdr, 16).addWritable(data, 512).addWritable(hdr + 0x100, 1).commit(`read${k}`);
  ring.queue.publish();
  n.eventfdWrite(ring.kick, 1);
}
