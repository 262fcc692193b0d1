// The README's "Embed in your emulator" example, line for line (test/embed.test.ts checks both).
import { BlkDevice, GuestMemory, VirtioMmioDevice, VirtioPciDevice, type BlockStorage } from '../../src/index.js';

/** A toy machine: guest RAM, interrupt lines and a physical address map, as an emulator has them. */
export class Machine {
  readonly ram = GuestMemory.create(64 << 20);
  readonly msis: { address: number; data: number }[] = [];
  private readonly windows: { base: number; size: number; dev: VirtioMmioDevice }[] = [];

  /** `setIrq` is the emulator's interrupt controller input. */
  constructor(readonly setIrq: (line: number, level: boolean) => void) {}

  /** A virtio-mmio disk at `base` on line `irq` (Linux: virtio_mmio.device=512@0xd0000000:5). */
  addMmioDisk(base: number, irq: number, storage: BlockStorage): VirtioMmioDevice {
    const dev = new VirtioMmioDevice(new BlkDevice({ storage }), this.ram, { interrupt: (level) => this.setIrq(irq, level) });
    this.windows.push({ base, size: 0x200, dev });
    return dev;
  }

  /** A virtio-pci disk: the emulator's PCI bus forwards config space and BAR accesses to it. */
  addPciDisk(storage: BlockStorage): VirtioPciDevice {
    return new VirtioPciDevice(new BlkDevice({ storage }), this.ram, {
      virtioBar: 'memory64', // or 'memory', or 'io' for an I/O BAR
      msi: (address, data) => this.msis.push({ address, data }), // deliver to the guest's APIC
      intx: (level) => this.setIrq(11, level), // INTA#, while the guest has MSI-X off
    });
  }

  /** The CPU's loads outside RAM: find the window, forward the access. */
  load(addr: number, size: 1 | 2 | 4): number {
    const w = this.windows.find((x) => addr >= x.base && addr < x.base + x.size);
    return w === undefined ? 0xffffffff : Number(w.dev.read(addr - w.base, size));
  }

  /** The CPU's stores outside RAM. */
  store(addr: number, size: 1 | 2 | 4, value: number): void {
    const w = this.windows.find((x) => addr >= x.base && addr < x.base + x.size);
    w?.dev.write(addr - w.base, size, value);
  }
}
