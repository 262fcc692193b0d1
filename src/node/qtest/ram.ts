/**
 * Guest RAM shared between this process and a qtest QEMU: a memfd that QEMU maps as its RAM
 * (`-object memory-backend-file,mem-path=/dev/fd/3,share=on -machine memory-backend=...`) and
 * this process maps through the native addon. The project's GuestMemory over that mapping IS the
 * memory QEMU's device models DMA into: rings and buffers are shared, not copied (no b64read /
 * b64write syncing). A memfd leaves no file anywhere to clean up; it goes when both sides close it.
 *
 * Node only (the native addon).
 */
import { native } from '../../native/index.js';
import { GuestMemory } from '../../memory/guest-memory.js';

/**
 * Where the driver's part of guest memory starts. Below 1 MiB, x86 machines overlay RAM with the
 * firmware ROM (0xe0000-0xfffff on pc/q35, qboot on microvm) and the legacy VGA window: DMA to
 * there would not land in RAM. Rings and buffers live above.
 */
export const QTEST_RAM_BASE = 0x100000;

/** Bytes at the top of RAM kept out of the drivers' region (MSI-X mailboxes: 8 KiB per PCI function). */
export const QTEST_RAM_RESERVED = 0x40000;

/** The memory-backend object's id on QEMU's command line. */
const BACKEND_ID = 'virtio-ts-ram';

/** A memfd of `size` bytes mapped here, to give QEMU as guest RAM. */
export class QtestRam {
  /** The memfd (QEMU inherits it). */
  readonly fd: number;
  /** Bytes of guest RAM (from guest address 0). */
  readonly size: number;
  /**
   * Guest memory over the shared mapping: the drivers' region from {@link QTEST_RAM_BASE} (the
   * first region) and the reserved top of RAM.
   */
  readonly memory: GuestMemory;
  private readonly mapping: ArrayBuffer;
  private closed = false;

  /** `size` bytes (a multiple of 2 MiB, at least 4 MiB). */
  constructor(size = 64 << 20) {
    if (!Number.isSafeInteger(size) || size < 4 << 20 || size % (2 << 20) !== 0) throw new RangeError(`guest RAM size ${size} is not a multiple of 2 MiB of at least 4 MiB`);
    const addon = native();
    this.size = size;
    this.fd = addon.memfdCreate('virtio-ts-qtest-ram', size);
    try {
      this.mapping = addon.mmap(this.fd, 0, size, true);
    } catch (err) {
      addon.close(this.fd);
      throw err;
    }
    // Two regions: the drivers' (the first: a driver's default allocator takes all of it) and,
    // at the top of RAM, what the machine keeps for itself (MSI-X mailboxes).
    // QEMU's device models run on other threads (block I/O completion): ring indices go through Atomics.
    this.reserved = { address: size - QTEST_RAM_RESERVED, size: QTEST_RAM_RESERVED };
    this.memory = new GuestMemory([
      { guestAddr: QTEST_RAM_BASE, size: this.reserved.address - QTEST_RAM_BASE, buffer: this.mapping, offset: QTEST_RAM_BASE, concurrent: true },
      { guestAddr: this.reserved.address, size: QTEST_RAM_RESERVED, buffer: this.mapping, offset: this.reserved.address, concurrent: true },
    ]);
  }

  /** The top of RAM the machine keeps for itself (not in the drivers' region): MSI-X mailboxes. */
  readonly reserved: { address: number; size: number };

  /**
   * QEMU's arguments for this RAM as the machine's memory, when the memfd is QEMU's fd `fdIndex`
   * (3: the first of QtestLaunchOptions.fds), and the `-machine` property to add.
   */
  qemuArgs(fdIndex = 3): { args: string[]; machineProperty: string } {
    return {
      args: ['-m', `${this.size / (1 << 20)}M`, '-object', `memory-backend-file,id=${BACKEND_ID},size=${this.size},mem-path=/dev/fd/${fdIndex},share=on`],
      machineProperty: `memory-backend=${BACKEND_ID}`,
    };
  }

  /** Unmaps and closes the memfd (after QEMU is gone; the GuestMemory is unusable afterwards). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const addon = native();
    addon.munmap(this.mapping);
    addon.close(this.fd);
  }
}
