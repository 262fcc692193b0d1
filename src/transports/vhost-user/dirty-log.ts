/**
 * Dirty logging for live migration (vhost-user.rst "Migration"): VHOST_F_LOG_ALL is offered,
 * and with VHOST_USER_PROTOCOL_F_LOG_SHMFD the front-end's log is mapped (SET_LOG_BASE): one
 * bit per 4 KiB page of guest memory, shared with the front-end, which reads and clears it
 * while it copies memory. While LOG_ALL is negotiated and a log is mapped, every device write to
 * guest memory goes through GuestMemory.onWrite and sets its pages' bits; writes to a used ring
 * the front-end set VHOST_VRING_F_LOG on are marked at its log address instead.
 *
 * The front-end sizes the log for its whole memory; a write the log cannot hold would be lost to
 * the migration, so coverage is checked whenever the log, a region or a logged ring arrives.
 */
import type { GuestMemory } from '../../memory/guest-memory.js';
import type { NativeAddon } from '../../native/index.js';
import { VhostUserError } from './errors.js';
import { hex, MAP_CHUNK, type GuestRange } from './mem-slots.js';
import { LOG_PAGE } from './protocol.js';

/** Where the device writes for one ring, and where those writes are logged (VHOST_VRING_F_LOG). */
export interface LoggedRing {
  readonly index: number;
  readonly logUsed: boolean;
  readonly logAddr: number;
  /** Guest address of the device area (split: used ring; packed: device event suppression). */
  readonly used: number;
  /** Bytes of the device area. */
  readonly deviceAreaLength: number;
}

interface Mapped {
  buffer: ArrayBuffer;
  bytes: Uint8Array;
  /** Writes logged since it was mapped (for the log line when logging ends). */
  writes: number;
}

export class DirtyLog {
  private mapped: Mapped | null = null;
  /** VHOST_F_LOG_ALL is in the front-end's features. */
  private all = false;
  private memory: GuestMemory | null = null;
  private readonly hook = (addr: number, len: number) => this.write(addr, len);

  constructor(
    private readonly n: NativeAddon,
    /** The session's rings (read at each write: their log addresses change with SET_VRING_ADDR). */
    private readonly rings: () => readonly LoggedRing[],
    /** A write beyond the log (checked against, so not reached with a sound front-end): the session ends. */
    private readonly overrun: (error: VhostUserError) => void,
  ) {}

  /** Whether writes are being logged: VHOST_F_LOG_ALL negotiated and a log mapped. */
  get logging(): boolean {
    return this.all && this.mapped !== null;
  }

  get logAll(): boolean {
    return this.all;
  }

  /** Bytes of the mapped log, or undefined. */
  get size(): number | undefined {
    return this.mapped?.bytes.length;
  }

  /** Writes logged since the log was mapped. */
  get writes(): number {
    return this.mapped?.writes ?? 0;
  }

  /** The memory whose writes are logged (GuestMemory calls the log for every write while logging; a null check otherwise). */
  attach(memory: GuestMemory | null): void {
    this.memory = memory;
    this.update();
  }

  /**
   * Why a log of `logBytes` bytes cannot cover `regions` and the used rings logged at their log
   * address, as a 'dirty-log' error; null when it can (or there is no log).
   */
  coverageProblem(logBytes: number | undefined, regions: readonly GuestRange[], rings: readonly LoggedRing[] = this.rings()): VhostUserError | null {
    if (logBytes === undefined) return null;
    const covers = logBytes * 8 * LOG_PAGE;
    for (const r of regions) {
      if (r.guestAddr + r.size > covers) {
        return new VhostUserError('dirty-log', `the dirty log (${logBytes} bytes) covers guest addresses below ${hex(covers)}; the region at [${hex(r.guestAddr)}, +${hex(r.size)}) is beyond it`);
      }
    }
    for (const ring of rings) {
      if (ring.logUsed && ring.logAddr + ring.deviceAreaLength > covers) {
        return new VhostUserError('dirty-log', `the dirty log (${logBytes} bytes) covers guest addresses below ${hex(covers)}; ring ${ring.index}'s used ring is logged at ${hex(ring.logAddr)}, beyond it`);
      }
    }
    return null;
  }

  /** SET_LOG_BASE's checks for a log of `size` bytes over `regions` (the fd is checked by the caller). */
  checkBase(size: number, regions: readonly GuestRange[]): void {
    if (size > MAP_CHUNK) throw new VhostUserError('dirty-log', `a dirty log of ${size} bytes (at most ${MAP_CHUNK}, enough for ${hex(MAP_CHUNK * 8 * LOG_PAGE)} bytes of memory)`);
    const problem = this.coverageProblem(size, regions);
    if (problem !== null) throw problem;
  }

  /** SET_LOG_BASE (checked with checkBase first): maps the log, replacing any earlier one. */
  map(fd: number, offset: number, size: number): void {
    const buffer = this.n.mmap(fd, offset, size, true);
    this.unmap();
    this.mapped = { buffer, bytes: new Uint8Array(buffer), writes: 0 };
    this.update();
  }

  /** LOG_ALL on or off (SET_FEATURES); off unmaps the log (the migration ended). */
  setLogAll(on: boolean): void {
    if (!on && this.all) this.unmap();
    this.all = on;
    this.update();
  }

  /** The mapping, while one is (to ask the addon whether it faulted). */
  mapping(): ArrayBuffer | null {
    return this.mapped?.buffer ?? null;
  }

  unmap(): void {
    if (this.mapped === null) return;
    this.n.munmap(this.mapped.buffer);
    this.mapped = null;
    this.update();
  }

  private update(): void {
    if (this.memory !== null) this.memory.onWrite = this.logging ? this.hook : null;
  }

  /**
   * Marks the pages of a guest write dirty: bit (addr / 4096) of the log, little-endian bit
   * order in bytes (log[page / 8] |= 1 << page % 8), with atomic ORs (the front-end reads and
   * clears the log concurrently). Writes to a used ring logged with VHOST_VRING_F_LOG are
   * marked at its log address.
   */
  private write(addr: number, len: number): void {
    const log = this.mapped;
    if (log === null || len <= 0) return;
    for (const ring of this.rings()) {
      if (ring.logUsed && addr >= ring.used && addr < ring.used + ring.deviceAreaLength) {
        addr = ring.logAddr + (addr - ring.used);
        break;
      }
    }
    log.writes++;
    const bytes = log.bytes;
    const last = Math.floor((addr + len - 1) / LOG_PAGE);
    for (let page = Math.floor(addr / LOG_PAGE); page <= last; ) {
      const byte = Math.floor(page / 8);
      const upto = Math.min(last, byte * 8 + 7);
      if (byte >= bytes.length) {
        // Checked when the log, a region or a ring arrived: not reached with a sound front-end.
        this.overrun(new VhostUserError('dirty-log', `a write at ${hex(addr)} (+${len}) is beyond the dirty log (${bytes.length} bytes): the migration would miss it`));
        return;
      }
      Atomics.or(bytes, byte, ((1 << ((upto % 8) + 1)) - 1) & ~((1 << (page % 8)) - 1));
      page = upto + 1;
    }
  }
}
