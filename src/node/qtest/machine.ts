/**
 * A qtest QEMU set up the way firmware would leave it, ready for the project's drivers: guest
 * RAM shared with this process ({@link QtestRam}), I/O APIC lines intercepted, and the virtio
 * transports found: virtio-mmio windows on `microvm`, PCI functions with placed BARs on `pc` and
 * `q35`.
 *
 * Node only.
 */
import { writeSync } from 'node:fs';
import { QtestClient } from './client.js';
import { native } from '../../native/index.js';
import { QtestRam } from './ram.js';
import { findMmioTransports, type QtestMmioWindow } from './mmio.js';
import { enumeratePci, MAILBOX_VECTORS, type QtestPciFunction } from './pci.js';
import type { GuestMemory } from '../../memory/guest-memory.js';
import type { Monitor } from '../../monitor/monitor.js';
import { MmioTransport } from '../../transports/mmio/driver.js';
import { PciTransport } from '../../transports/pci/driver.js';
import { PciCfg, VIRTIO_PCI_MODERN_BASE, VIRTIO_PCI_VENDOR } from '../../transports/pci/layout.js';

/**
 * The firmware QEMU gets instead of SeaBIOS / qboot: 64 KiB with `cli; hlt; jmp .-1` at the
 * reset vector (0xfffffff0, offset 0xfff0 of the image QEMU maps below 4 GiB). QEMU builds
 * without the qtest accelerator (Debian's 7.2 has tcg and kvm only) run a real CPU under qtest;
 * real firmware would enumerate PCI, place BARs and even drive virtio-blk itself, racing this
 * process. This CPU halts with interrupts off at its first instruction and never touches a device.
 * A memfd (QEMU opens /dev/fd/4): no file to create or remove.
 */
function haltFirmware(): number {
  const addon = native();
  const fd = addon.memfdCreate('virtio-ts-qtest-firmware', 0x10000);
  const image = new Uint8Array(0x10000);
  image.set([0xfa, 0xf4, 0xeb, 0xfd], 0xfff0); // cli; hlt; jmp -3 (back to hlt)
  try {
    writeSync(fd, image, 0, image.length, 0);
  } catch (err) {
    addon.close(fd);
    throw err;
  }
  return fd;
}

/** The x86 machines the qtest buses know: `microvm` (virtio-mmio), `pc` and `q35` (virtio-pci). */
export type QtestMachineType = 'microvm' | 'pc' | 'q35';

/** How to start a {@link QtestMachine}. */
export interface QtestMachineOptions {
  /** Machine type. */
  machine: QtestMachineType;
  /** Device and back-end arguments (`-device virtio-rng-pci`, `-drive ...`, `-chardev ...`). */
  args: readonly string[];
  /** Guest RAM bytes (default 64 MiB). */
  ramSize?: number;
  /**
   * microvm: virtio-mmio version 1 (legacy) instead of version 2. QEMU 7.2's microvm defaults to
   * legacy (virtio-mmio's `force-legacy=true`); this class asks for modern unless told.
   */
  legacyMmio?: boolean;
  /** QEMU binary (default qemu-system-x86_64, or $QEMU). */
  qemu?: string;
  /** Bound of each qtest request (default 30000 ms). */
  timeoutMs?: number;
}

/** One virtio-mmio transport found on a microvm. */
export interface QtestMmioTransport {
  /** Its register window and interrupt line. */
  window: QtestMmioWindow;
  /** The virtio device id (5). */
  deviceId: number;
  /** virtio-mmio Version register: 2 modern, 1 legacy. */
  version: number;
}

/** A running qtest QEMU with shared RAM and its virtio transports found. */
export class QtestMachine {
  /** The protocol to QEMU. */
  readonly qtest: QtestClient;
  /** Guest RAM shared with QEMU. */
  readonly ram: QtestRam;
  /** The machine type. */
  readonly type: QtestMachineType;
  /** microvm: the virtio-mmio transports with a device behind them (first -device first). */
  mmio: QtestMmioTransport[] = [];
  /** pc / q35: the PCI endpoints of bus 0 (BARs placed, decoding and bus mastering on). */
  pci: QtestPciFunction[] = [];

  private constructor(qtest: QtestClient, ram: QtestRam, type: QtestMachineType) {
    this.qtest = qtest;
    this.ram = ram;
    this.type = type;
  }

  /** Guest memory the drivers place rings and buffers in (QEMU's RAM from 1 MiB up). */
  get memory(): GuestMemory {
    return this.ram.memory;
  }

  /** Starts QEMU and finds its transports. QtestError when QEMU cannot start or refuses the arguments. */
  static async launch(options: QtestMachineOptions): Promise<QtestMachine> {
    const ram = new QtestRam(options.ramSize);
    let firmware: number;
    try {
      firmware = haltFirmware();
    } catch (err) {
      ram.close();
      throw err;
    }
    const { args: ramArgs, machineProperty } = ram.qemuArgs(3);
    // No PIT or HPET: nothing but the devices raises I/O APIC lines (they would only be noise).
    const machineArg =
      options.machine === 'microvm'
        ? // ioapic2=off, acpi=on: 8 transports on the first I/O APIC, inputs 16 + slot; no PIC/RTC/serial either.
          `microvm,ioapic2=off,acpi=on,pit=off,pic=off,rtc=off,isa-serial=off,${machineProperty}`
        : `${options.machine},pit=off,hpet=off,${machineProperty}`;
    const args = ['-machine', machineArg, ...ramArgs, '-bios', '/dev/fd/4', '-display', 'none', '-nodefaults', '-no-user-config'];
    if (options.machine === 'microvm' && options.legacyMmio !== true) args.push('-global', 'virtio-mmio.force-legacy=false');
    args.push(...options.args);
    let qtest: QtestClient;
    try {
      qtest = await QtestClient.launch({ qemu: options.qemu, args, fds: [ram.fd, firmware], timeoutMs: options.timeoutMs });
    } catch (err) {
      ram.close();
      throw err;
    } finally {
      native().close(firmware); // QEMU has its own copy of the descriptor (or failed)
    }
    const m = new QtestMachine(qtest, ram, options.machine);
    try {
      await qtest.irqInterceptIn('ioapic');
      qtest.onIrq((line, raised) => m.dispatchInterrupt(line, raised));
      if (options.machine === 'microvm') m.mmio = await findMmioTransports(qtest);
      else {
        const perFunction = 4 * MAILBOX_VECTORS;
        m.pci = await enumeratePci(qtest, options.machine, (slot) => {
          const address = ram.reserved.address + slot * perFunction;
          if (address + perFunction > ram.reserved.address + ram.reserved.size) throw new RangeError('more PCI functions than MSI-X mailboxes');
          ram.memory.bytes(address, perFunction).fill(0xff); // MAILBOX_EMPTY in every slot
          return { address, memory: ram.memory };
        });
      }
    } catch (err) {
      await m.close();
      throw err;
    }
    return m;
  }

  private dispatchInterrupt(line: number, raised: boolean): void {
    for (const t of this.mmio) if (t.window.gsi === line) t.window.interrupt(raised);
    for (const f of this.pci) if (f.gsi === line || (f.gsi === -1 && line >= 16)) f.intx(raised);
  }

  /**
   * The virtio device ids behind the machine's transports, in their order ({@link mmio} or
   * {@link pci}; 0 for a PCI function that is not virtio).
   */
  async deviceIds(): Promise<number[]> {
    if (this.type === 'microvm') return this.mmio.map((t) => t.deviceId);
    const ids: number[] = [];
    for (const f of this.pci) {
      const vendor = await f.configRead(PciCfg.VendorId, 2);
      const did = await f.configRead(PciCfg.DeviceId, 2);
      if (vendor !== VIRTIO_PCI_VENDOR || did < 0x1000 || did > 0x107f) ids.push(0);
      else ids.push(did >= VIRTIO_PCI_MODERN_BASE ? did - VIRTIO_PCI_MODERN_BASE : await f.configRead(PciCfg.SubsystemId, 2));
    }
    return ids;
  }

  /**
   * The driver side of the `nth` (default first) device of virtio type `deviceId`, ready for a
   * driver (RngDriver, BlkDriver, ConsoleDriver, a VirtioDriver): an MmioTransport on microvm, a
   * PciTransport on pc / q35 (`pci.mode`: modern, or the legacy I/O BAR of a transitional device;
   * `pci.msix`: MSI-X or INTx). A RangeError when the machine has no such device.
   */
  async transport(deviceId: number, options: { nth?: number; monitor?: Monitor; pci?: { mode?: 'auto' | 'modern' | 'legacy'; msix?: boolean } } = {}): Promise<MmioTransport | PciTransport> {
    const ids = await this.deviceIds();
    const index = ids.map((id, i) => (id === deviceId ? i : -1)).filter((i) => i >= 0)[options.nth ?? 0];
    if (index === undefined) throw new RangeError(`the machine has no virtio device of type ${deviceId} (it has ${ids.join(', ') || 'none'})`);
    if (this.type === 'microvm') return MmioTransport.open(this.mmio[index].window, this.memory, { monitor: options.monitor });
    return PciTransport.open(this.pci[index], this.memory, { monitor: options.monitor, mode: options.pci?.mode, msix: options.pci?.msix });
  }

  /** Stops QEMU (SIGKILL), waits for it, and frees the shared RAM. */
  async close(): Promise<void> {
    for (const f of this.pci) f.stop();
    await this.qtest.close();
    this.ram.close();
  }
}
