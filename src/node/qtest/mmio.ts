/**
 * virtio-mmio over qtest on QEMU's `microvm` machine: its transports sit at 0xfeb00000 +
 * 512 * slot; with `ioapic2=off` there are 8 of them, slot i raising I/O APIC input 16 + i with
 * ACPI on (5 + i with acpi=off; 24 transports on a second I/O APIC with ioapic2=on): QEMU's
 * hw/i386/microvm.c, microvm_devices_init (VIRTIO_MMIO_BASE, virtio_irq_base). QEMU plugs the first -device
 * into the LAST slot, the next one below it, and so on: {@link findMmioTransports} reads every
 * slot's MagicValue and DeviceID instead of assuming an order.
 *
 * Node only.
 */
import type { QtestClient } from './client.js';

/** microvm's first virtio-mmio transport. */
export const MICROVM_MMIO_BASE = 0xfeb00000;
/** Bytes between two transports. */
export const MICROVM_MMIO_STRIDE = 0x200;
/** Transports with ioapic2=off. */
export const MICROVM_MMIO_SLOTS = 8;
/** I/O APIC input of slot 0 (ioapic2=off, acpi=on). */
export const MICROVM_MMIO_IRQ_BASE = 16;

const MAGIC = 0x74726976; // "virt"

/** One virtio-mmio transport window on a qtest QEMU. */
export class QtestMmioWindow {
  private readonly interruptHandlers: ((level: boolean) => void)[] = [];

  /** The window at guest address `base`, raising I/O APIC input `gsi`. */
  constructor(
    readonly qtest: QtestClient,
    /** Guest-physical address of the register block. */
    readonly base: number,
    /** I/O APIC input its interrupt arrives on. */
    readonly gsi: number,
  ) {}

  /** Reads 1, 2 or 4 bytes at `offset` in the register block. */
  async read(offset: number, size: 1 | 2 | 4): Promise<number> {
    return (await this.qtest.readSized(this.base + offset, size)) as number;
  }

  /** Writes 1, 2 or 4 bytes at `offset` in the register block. */
  write(offset: number, size: 1 | 2 | 4, value: number): Promise<void> {
    return this.qtest.writeSized(this.base + offset, size, value);
  }

  /** Registers a handler called with true when the transport's interrupt line goes up, false when it goes down. */
  onInterrupt(handler: (level: boolean) => void): void {
    this.interruptHandlers.push(handler);
  }

  /** @internal The machine calls this when the window's line changes. */
  interrupt(level: boolean): void {
    for (const h of this.interruptHandlers) h(level);
  }
}

/** The transports of a microvm that have a device behind them (DeviceID != 0), with their device id and version. */
export async function findMmioTransports(qtest: QtestClient): Promise<{ window: QtestMmioWindow; deviceId: number; version: number }[]> {
  const found = [];
  for (let slot = MICROVM_MMIO_SLOTS - 1; slot >= 0; slot--) {
    const window = new QtestMmioWindow(qtest, MICROVM_MMIO_BASE + slot * MICROVM_MMIO_STRIDE, MICROVM_MMIO_IRQ_BASE + slot);
    if ((await window.read(0, 4)) !== MAGIC) continue;
    const deviceId = (await window.read(8, 4)) as number;
    if (deviceId === 0) continue;
    found.push({ window, deviceId, version: (await window.read(4, 4)) as number });
  }
  return found;
}
