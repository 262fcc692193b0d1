/**
 * Guest memory of a vhost-user session: the regions the front-end gave as fds (SET_MEM_TABLE,
 * the whole table; or, with VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS, ADD_MEM_REG and
 * REM_MEM_REG one region at a time), mapped here through the native addon and joined into one
 * GuestMemory the device works on.
 *
 * What the front-end claims is not trusted: an fd is checked to hold the range before it is
 * mapped (a page past the end of its file raises SIGBUS when touched), and sealed against
 * shrinking where it can be (sealAgainstShrink). Every check comes before anything changes:
 * `check*` methods only look, the others act.
 */
import { fstatSync } from 'node:fs';
import { GuestMemory, type MemoryRegionInit } from '../../memory/guest-memory.js';
import type { NativeAddon } from '../../native/index.js';
import { refusal, VhostUserError, messageOf } from './errors.js';
import type { MemRegion } from './protocol.js';

/**
 * Memory regions accepted at once (GET_MAX_MEM_SLOTS). 509 is what KVM gives an x86 VM (and
 * what libvhost-user answers): a VM QEMU can build on KVM is never refused for its memory
 * layout. A slot costs one entry in GuestMemory's sorted region list (looked up by binary
 * search) and its mappings, nothing per slot we do not use.
 */
export const MAX_MEM_SLOTS = 509;

/** Largest piece of a memory region mapped into one ArrayBuffer. */
export const MAP_CHUNK = 1 << 30;

export function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

/** A guest address range (a region, or where a ring lives). */
export interface GuestRange {
  guestAddr: number;
  size: number;
}

/** One memory region the front-end gave, mapped in pieces. */
export interface Slot extends GuestRange {
  userAddr: number;
  maps: ArrayBuffer[];
  /** The region's offset in its fd and the fd's file (device, inode): what makes an ADD_MEM_REG the same region again. */
  mmapOffset: number;
  file: string;
  /**
   * How many times the front-end added this same region and has not removed it: QEMU 7.2's
   * multiqueue vhost-user-net drives one connection with one vhost device per queue pair, and
   * each adds (and later removes) every region itself. Unmapped when the last one goes.
   */
  refs: number;
}

/** The fd's file as "device:inode" (an ADD_MEM_REG of the same region comes with a new fd of the same file). */
function fileOf(fd: number): string {
  try {
    const st = fstatSync(fd);
    return `${st.dev}:${st.ino}`;
  } catch {
    return `fd ${fd}`;
  }
}

/**
 * Checks that [offset, offset + size) of `fd` exists before it is mapped (a refusal of kind
 * 'bad-fd' otherwise): touching a page of a mapping past the end of its file raises SIGBUS,
 * which would kill the process. Character and block devices (DAX, hugetlbfs) have no size to
 * compare with; mmap itself refuses what they cannot map. Anything else is not memory.
 */
export function checkFdRange(fd: number, offset: number, size: number, what: string): void {
  let st;
  try {
    st = fstatSync(fd);
  } catch (err) {
    throw refusal('bad-fd', `${what}: fstat of its fd failed (${messageOf(err)})`);
  }
  if (st.isFile()) {
    if (offset + size > st.size) {
      throw refusal('bad-fd', `${what} [offset ${hex(offset)}, +${hex(size)}) goes past the end of its fd (${hex(st.size)} bytes): mapping it would fault`);
    }
  } else if (!st.isCharacterDevice() && !st.isBlockDevice()) {
    throw refusal('bad-fd', `${what}: its fd is not a file (mode 0o${st.mode.toString(8)})`);
  }
}

/**
 * fstat checked the file before it was mapped; a front-end could still shrink it afterwards,
 * and the next touch of the mapping past the new end raises SIGBUS. A memfd is sealed against
 * shrinking (F_SEAL_SHRINK; QEMU's memory-backend-memfd is sealed already, seal=on), which a
 * correct front-end never notices: it does not shrink memory it gave away. Other files
 * (memory-backend-file on hugetlbfs or /dev/shm) cannot be sealed: `unsealable` is called (the
 * session logs it once). The addon absorbs a SIGBUS there anyway (see checkFaults in backend.ts).
 */
export function sealAgainstShrink(n: NativeAddon, fd: number, what: string, unsealable: (what: string) => void): void {
  if (n.sealShrink(fd) !== 1) unsealable(what);
}

const overlaps = (a: GuestRange, b: GuestRange) => a.guestAddr < b.guestAddr + b.size && b.guestAddr < a.guestAddr + a.size;

export class MemorySlots {
  private list: Slot[] = [];
  private mem: GuestMemory | null = null;

  constructor(
    private readonly n: NativeAddon,
    /** Called for an fd that cannot be sealed against shrinking (see sealAgainstShrink). */
    private readonly unsealable: (what: string) => void,
    /**
     * Map every region PROT_READ only and leave the fds as they came (no seal): for an observer
     * such as the monitor proxy (src/proxy/), which must never write guest memory nor change
     * the front-end's fds. A stray write through such a mapping faults instead of corrupting.
     */
    private readonly readOnly = false,
  ) {}

  /** The guest memory the regions make, or null before the first one. */
  get memory(): GuestMemory | null {
    return this.mem;
  }

  get slots(): readonly Slot[] {
    return this.list;
  }

  /** Every mapping of guest memory (to ask the addon whether one of them faulted). */
  mappings(): ArrayBuffer[] {
    return this.list.flatMap((slot) => slot.maps);
  }

  /** SET_MEM_TABLE's checks: regions that do not overlap, fds that hold them. */
  checkTable(regions: readonly MemRegion[], fds: readonly number[]): void {
    const sorted = [...regions].sort((a, b) => a.guestAddr - b.guestAddr);
    for (let i = 1; i < sorted.length; i++) {
      if (sorted[i].guestAddr < sorted[i - 1].guestAddr + sorted[i - 1].size) throw refusal('memory-table', `regions overlap at ${hex(sorted[i].guestAddr)}`);
    }
    regions.forEach((r, i) => checkFdRange(fds[i], r.mmapOffset, r.size, `region ${i}`));
  }

  /** SET_MEM_TABLE: every region replaced (checked with checkTable first); returns the new memory. */
  replaceTable(regions: readonly MemRegion[], fds: readonly number[]): GuestMemory {
    this.clear();
    const inits: MemoryRegionInit[] = [];
    regions.forEach((r, i) => this.list.push(this.map(r, fds[i], inits)));
    this.mem = new GuestMemory(inits);
    return this.mem;
  }

  /** The slot that is exactly this region again (same addresses, size, file and offset), if any. */
  same(r: MemRegion, fd: number): Slot | undefined {
    const slot = this.list.find((s) => s.guestAddr === r.guestAddr && s.size === r.size && s.userAddr === r.userAddr && s.mmapOffset === r.mmapOffset);
    return slot !== undefined && slot.file === fileOf(fd) ? slot : undefined;
  }

  /** ADD_MEM_REG's checks: a free slot, no overlap, an fd that holds the region (the same region again is fine: see Slot.refs). */
  checkAdd(r: MemRegion, fd: number): void {
    if (this.same(r, fd) !== undefined) return;
    if (this.list.length >= MAX_MEM_SLOTS) throw refusal('memory-table', `no free memory slot: all ${MAX_MEM_SLOTS} are in use`);
    const clash = this.list.find((s) => overlaps(r, s));
    if (clash !== undefined) {
      throw refusal('memory-table', `region [${hex(r.guestAddr)}, +${hex(r.size)}) overlaps the region at [${hex(clash.guestAddr)}, +${hex(clash.size)})`);
    }
    checkFdRange(fd, r.mmapOffset, r.size, `region [${hex(r.guestAddr)}, +${hex(r.size)})`);
  }

  /**
   * ADD_MEM_REG (checked with checkAdd first): one more region, added in place. Returns the
   * memory, and whether it was made now (the first region: the device is to be attached).
   */
  add(r: MemRegion, fd: number): { memory: GuestMemory; created: boolean; again: boolean } {
    const again = this.same(r, fd);
    if (again !== undefined && this.mem !== null) {
      again.refs++;
      return { memory: this.mem, created: false, again: true };
    }
    const inits: MemoryRegionInit[] = [];
    this.list.push(this.map(r, fd, inits));
    if (this.mem !== null) {
      this.mem.addRegions(inits);
      return { memory: this.mem, created: false, again: false };
    }
    this.mem = new GuestMemory(inits);
    return { memory: this.mem, created: true, again: false };
  }

  /** REM_MEM_REG's lookup: the slot with this guest address, size and front-end address. */
  find(r: MemRegion): Slot {
    const slot = this.list.find((s) => s.guestAddr === r.guestAddr && s.size === r.size && s.userAddr === r.userAddr);
    if (slot === undefined) throw new VhostUserError('memory-table', `no region at guest ${hex(r.guestAddr)}, size ${hex(r.size)}, front-end address ${hex(r.userAddr)}`);
    return slot;
  }

  /** Removes a slot (from find()) from the memory and unmaps it; false when it was added more than once and stays (one reference less). */
  remove(slot: Slot): boolean {
    const at = this.list.indexOf(slot);
    if (at < 0) return true;
    if (slot.refs > 1) {
      slot.refs--;
      return false;
    }
    this.mem?.removeRegions(slot.guestAddr, slot.size);
    this.list.splice(at, 1);
    for (const b of slot.maps) this.n.munmap(b);
    return true;
  }

  /** Every region unmapped; no memory. */
  clear(): void {
    for (const slot of this.list) for (const b of slot.maps) this.n.munmap(b);
    this.list = [];
    this.mem = null;
  }

  /**
   * Maps one region from its fd (the caller closes the fd; the mapping stays). Big regions are
   * mapped in 1 GiB pieces, which GuestMemory joins back (copies and chains cross piece
   * boundaries), so ArrayBuffers stay well under Node's limits. The pieces go into `inits`. A
   * mapping the kernel refuses (an offset it cannot map) is a 'memory-table' error.
   */
  private map(r: MemRegion, fd: number, inits: MemoryRegionInit[]): Slot {
    if (!this.readOnly) sealAgainstShrink(this.n, fd, `memory region at ${hex(r.guestAddr)}`, this.unsealable);
    const slot: Slot = { guestAddr: r.guestAddr, size: r.size, userAddr: r.userAddr, maps: [], mmapOffset: r.mmapOffset, file: fileOf(fd), refs: 1 };
    try {
      for (let off = 0; off < r.size; off += MAP_CHUNK) {
        const len = Math.min(MAP_CHUNK, r.size - off);
        const buffer = this.n.mmap(fd, r.mmapOffset + off, len, !this.readOnly);
        slot.maps.push(buffer);
        inits.push({ guestAddr: r.guestAddr + off, size: len, buffer, userAddr: r.userAddr + off, concurrent: true });
      }
    } catch (err) {
      for (const b of slot.maps) this.n.munmap(b);
      throw new VhostUserError('memory-table', `region [${hex(r.guestAddr)}, +${hex(r.size)}): ${messageOf(err)}`, { cause: err });
    }
    return slot;
  }
}
