/**
 * Guest RAM of a front-end with no VM: memfd regions mapped into this process, shared with the
 * back-end by passing the memfd (vhost-user.rst "Memory regions description"). Each region has
 * a "user address", the address the front-end gives rings in (SET_VRING_ADDR): the front-end
 * has no guest to take addresses from, so it places region R at USER_BASE + R.guestAddr, one
 * consistent address space the back-end translates as it would QEMU's.
 */
import type { NativeAddon } from '../../../native/index.js';
import { GuestMemory } from '../../../memory/guest-memory.js';
import { MAX_MEM_REGIONS, memRegionPayload, memRegionsPayload } from '../protocol.js';
import { FrontEndError } from './errors.js';

/** Where the front-end's "user" address space puts guest address 0. */
export const USER_BASE = 0x7f0000000000;

/** One region of guest RAM: its memfd, its mapping here, and where it sits. */
export interface RamRegion {
  readonly guestAddr: number;
  readonly size: number;
  readonly userAddr: number;
  readonly memfd: number;
  readonly buffer: ArrayBuffer;
}

/** SET_MEM_TABLE's payload for the regions (mmap offset 0: each region is its own memfd). */
export function memTablePayload(regions: readonly RamRegion[]): Uint8Array {
  return memRegionsPayload(regions.map((r) => [r.guestAddr, r.size, r.userAddr, 0] as const));
}

/** ADD_MEM_REG's / REM_MEM_REG's payload for one region. */
export function singleRegionPayload(r: RamRegion): Uint8Array {
  return memRegionPayload(r.guestAddr, r.size, r.userAddr);
}

/** Guest RAM: memfd regions, and the GuestMemory the drivers place rings and buffers in. */
export class GuestRam {
  readonly memory: GuestMemory;
  private readonly list: RamRegion[] = [];

  /**
   * Guest RAM of one region of `size` bytes at guest address 0 (VhostUserFrontEnd makes it).
   * @internal
   */
  constructor(
    private readonly n: NativeAddon,
    size: number,
  ) {
    const first = this.map(0, size);
    this.list.push(first);
    this.memory = new GuestMemory([{ guestAddr: 0, size, buffer: first.buffer, userAddr: first.userAddr, concurrent: true }]);
  }

  /** The regions, in the order they were added. */
  get regions(): readonly RamRegion[] {
    return this.list;
  }

  private map(guestAddr: number, size: number): RamRegion {
    if (!Number.isSafeInteger(guestAddr) || guestAddr < 0 || !Number.isSafeInteger(size) || size <= 0 || size % 4096 !== 0) {
      throw new RangeError(`a guest RAM region needs a non-negative address and a positive size in whole 4 KiB pages (${guestAddr}, ${size})`);
    }
    if (guestAddr % 4096 !== 0) throw new RangeError(`a guest RAM region starts on a 4 KiB page (${guestAddr})`);
    const memfd = this.n.memfdCreate('virtio-ts-guest', size);
    let buffer: ArrayBuffer;
    try {
      buffer = this.n.mmap(memfd, 0, size);
    } catch (err) {
      this.n.close(memfd);
      throw new FrontEndError('memory', `guest RAM of ${size} bytes cannot be mapped: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    return { guestAddr, size, userAddr: USER_BASE + guestAddr, memfd, buffer };
  }

  /** Adds a region (a new memfd) at `guestAddr`: the drivers' memory sees it at once. */
  add(guestAddr: number, size: number, maxRegions = MAX_MEM_REGIONS): RamRegion {
    if (this.list.length >= maxRegions) throw new FrontEndError('memory', `no free memory slot: ${this.list.length} regions of at most ${maxRegions}`);
    const clash = this.list.find((r) => guestAddr < r.guestAddr + r.size && r.guestAddr < guestAddr + size);
    if (clash !== undefined) throw new FrontEndError('memory', `region [0x${guestAddr.toString(16)}, +0x${size.toString(16)}) overlaps the one at 0x${clash.guestAddr.toString(16)}`);
    const r = this.map(guestAddr, size);
    try {
      this.memory.addRegions([{ guestAddr, size, buffer: r.buffer, userAddr: r.userAddr, concurrent: true }]);
    } catch (err) {
      this.release(r);
      throw new FrontEndError('memory', `region at 0x${guestAddr.toString(16)}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    this.list.push(r);
    return r;
  }

  /** Takes the region at `guestAddr` out of guest memory (its memfd and mapping stay until release()). */
  remove(guestAddr: number): RamRegion {
    const i = this.list.findIndex((r) => r.guestAddr === guestAddr);
    if (i < 0) throw new FrontEndError('memory', `no guest RAM region starts at 0x${guestAddr.toString(16)}`);
    if (i === 0) throw new FrontEndError('memory', 'the first region holds the rings and buffers of the drivers; it stays');
    const [r] = this.list.splice(i, 1);
    this.memory.removeRegions(r.guestAddr, r.size);
    return r;
  }

  /** The user address of guest address `addr` (as SET_VRING_ADDR carries it). */
  userAddr(addr: number, length: number): number {
    const r = this.memory.region(addr, length);
    return (r.userAddr ?? USER_BASE + r.guestAddr) + (addr - r.guestAddr);
  }

  /** Unmaps a region and closes its memfd. */
  release(r: RamRegion): void {
    try {
      this.n.munmap(r.buffer);
    } catch {
      // unmapped already
    }
    try {
      this.n.close(r.memfd);
    } catch {
      // closed already
    }
  }

  /** Unmaps every region and closes the memfds. */
  close(): void {
    for (const r of this.list.splice(0)) this.release(r);
  }
}
