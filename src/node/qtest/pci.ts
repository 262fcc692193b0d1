/**
 * PCI over qtest: the {@link PciBus} the project's PciTransport drives, for one function of a
 * qtest QEMU. Configuration space goes through the x86 configuration mechanism #1 (ports 0xcf8 /
 * 0xcfc), memory and I/O space through qtest's read/write and in/out. The driver sizes and
 * places the BARs itself, in the windows this bus gives it (one slice per function, so that two
 * functions never overlap).
 *
 * What firmware would do, done here because a qtest QEMU runs none ({@link enumeratePci}): find
 * the functions of bus 0, and route INTx: the PIIX3's PIRQ routing registers on `pc`; ICH9 on
 * `q35` wires PIRQ A-H to I/O APIC inputs 16-23 by itself.
 *
 * Interrupts, both kinds:
 * - INTx: QEMU reports I/O APIC line changes (irq_intercept_in ioapic); the function's line is
 *   known on `pc` (the i440FX swizzle), and on `q35` every raise of 16-23 is passed on (the
 *   driver reads its ISR, which costs one request and is harmless).
 * - MSI-X: with no interrupt controller of ours, an MSI is a memory write. The bus points each
 *   vector at its own 32-bit mailbox in guest RAM (it rewrites the message address the driver
 *   writes into the table, the way an interrupt-remapping unit would) and watches the mailboxes
 *   in the shared RAM: no qtest traffic. A mailbox holds the vector's data once QEMU signalled
 *   it; the bus clears it and hands the driver the message it programmed.
 *
 * Node only.
 */
import type { QtestClient } from './client.js';
import type { PciBus, PciInterrupt, PciWindow } from '../../transports/pci/driver.js';
import type { GuestMemory } from '../../memory/guest-memory.js';
import { PciCapId, PciCfg, PciStatus } from '../../transports/pci/layout.js';

/** Where BARs go: above guest RAM, below the I/O APIC (0xfec00000) and q35's MMCONFIG window (0xb0000000-0xbfffffff). */
const MMIO_WINDOW_BASE = 0xc0000000;
/** Memory space each function gets for its BARs. */
const MMIO_PER_FUNCTION = 0x1000000;
/** I/O BARs: from 0xc000, as SeaBIOS places them. */
const IO_WINDOW_BASE = 0xc000;
/** I/O space each function gets. */
const IO_PER_FUNCTION = 0x400;
/** ISA IRQs the PIIX3 routes PIRQ A-D to (SeaBIOS's choice: 10, 10, 11, 11). */
const PIIX_PIRQ_IRQS = [10, 10, 11, 11];
/** A mailbox no MSI wrote yet (data values are vector numbers, below 2048). */
const MAILBOX_EMPTY = 0xffffffff;
/** MSI-X vectors a function's mailboxes cover (the most a table can have). */
const MAILBOX_VECTORS = 2048;

/** Where a function's MSI-X mailboxes are in guest RAM (reserved by the machine). */
export interface MsiMailboxes {
  /** Guest address of vector 0's mailbox (vector v: + 4 v). */
  address: number;
  /** Guest memory they are in. */
  memory: GuestMemory;
}

/** One PCI function on a qtest QEMU, as a {@link PciBus}. */
export class QtestPciFunction implements PciBus {
  /** The I/O APIC input INTx arrives on, or -1 when unknown (every raise of 16-23 is passed on). */
  gsi = -1;
  readonly windows: { memory: PciWindow; io: PciWindow };
  /** The address the driver writes into MSI-X entries; the bus remaps it to a mailbox. */
  readonly msiAddress = 0xfee00000;
  private handler: ((irq: PciInterrupt) => void) | null = null;
  /** Message address and data the driver programmed, per vector (what it gets back). */
  private readonly programmed = new Map<number, { address: number; data: number }>();
  private polling: NodeJS.Timeout | null = null;

  /** The function at bus:device.function of `qtest`, the `slot`-th one set up (its windows). */
  constructor(
    readonly qtest: QtestClient,
    readonly bus: number,
    readonly device: number,
    readonly fn: number,
    slot: number,
    private readonly mailboxes: MsiMailboxes | null = null,
  ) {
    this.windows = {
      memory: { base: MMIO_WINDOW_BASE + slot * MMIO_PER_FUNCTION, size: MMIO_PER_FUNCTION },
      io: { base: IO_WINDOW_BASE + slot * IO_PER_FUNCTION, size: IO_PER_FUNCTION },
    };
  }

  /** bb:dd.f */
  address(): string {
    const hex = (n: number, w: number) => n.toString(16).padStart(w, '0');
    return `${hex(this.bus, 2)}:${hex(this.device, 2)}.${this.fn}`;
  }

  private select(offset: number): Promise<void> {
    return this.qtest.outl(0xcf8, (0x80000000 | (this.bus << 16) | (this.device << 11) | (this.fn << 8) | (offset & 0xfc)) >>> 0);
  }

  /** Reads 1, 2 or 4 bytes of configuration space (0xcf8 / 0xcfc). */
  async configRead(offset: number, size: 1 | 2 | 4): Promise<number> {
    await this.select(offset);
    return this.qtest.inSized(0xcfc + (offset & 3), size);
  }

  /** Writes 1, 2 or 4 bytes of configuration space. */
  async configWrite(offset: number, size: 1 | 2 | 4, value: number): Promise<void> {
    await this.select(offset);
    await this.qtest.outSized(0xcfc + (offset & 3), size, value);
    if (this.msixTable !== null) {
      const reg = PciCfg.Bar0 + 4 * this.msixTable.bar;
      if (offset === reg || offset === reg + 4) this.tableMoved = true;
      if (offset === this.msixCap + 2 && size === 2 && value & 0x8000) this.startPolling();
    }
  }

  /** Reads memory space (a BAR the driver placed, or RAM). */
  async memRead(address: number, size: 1 | 2 | 4): Promise<number> {
    return (await this.qtest.readSized(address, size)) as number;
  }

  /** Writes memory space; MSI-X table message addresses are remapped to this function's mailboxes. */
  async memWrite(address: number, size: 1 | 2 | 4, value: number): Promise<void> {
    if (this.tableMoved) await this.locateMsixTable();
    const entry = this.msixEntry(address);
    if (entry !== null && this.mailboxes !== null && size === 4) {
      const p = this.programmed.get(entry.vector) ?? { address: 0, data: 0 };
      this.programmed.set(entry.vector, p);
      const mailbox = this.mailboxes.address + 4 * entry.vector;
      if (entry.field === 0) {
        p.address = (p.address - (p.address % 2 ** 32)) + (value >>> 0);
        value = mailbox;
      } else if (entry.field === 4) {
        p.address = (value >>> 0) * 2 ** 32 + (p.address % 2 ** 32);
        value = 0;
      } else if (entry.field === 8) p.data = value >>> 0;
    }
    await this.qtest.writeSized(address, size, value);
  }

  /** Reads an I/O port. */
  ioRead(port: number, size: 1 | 2 | 4): Promise<number> {
    return this.qtest.inSized(port, size);
  }

  /** Writes an I/O port. */
  ioWrite(port: number, size: 1 | 2 | 4, value: number): Promise<void> {
    return this.qtest.outSized(port, size, value);
  }

  /** Registers the driver's interrupt handler (INTx level changes, MSI-X messages). */
  onInterrupt(handler: (irq: PciInterrupt) => void): void {
    this.handler = handler;
  }

  /** @internal The machine calls this when the function's INTx line changes. */
  intx(level: boolean): void {
    this.handler?.({ kind: 'intx', level });
  }

  // ---------------------------------------------------------------- MSI-X mailboxes

  /** Configuration offset of the MSI-X capability (-1: none), and where its table is once placed. */
  private msixCap = -1;
  private msixTable: { bar: number; offset: number; entries: number } | null = null;
  private msixTableBase = -1;
  /** The driver wrote the table's BAR since the bus last read it. */
  private tableMoved = false;

  /** @internal Finds the MSI-X capability (the machine calls this once, before any driver). */
  async probeMsix(): Promise<void> {
    if (((await this.configRead(PciCfg.Status, 2)) & PciStatus.CapList) === 0) return;
    let at = (await this.configRead(PciCfg.CapabilitiesPointer, 1)) & 0xfc;
    for (let guard = 0; at !== 0 && guard < 48; guard++) {
      if ((await this.configRead(at, 1)) === PciCapId.MsiX) {
        const table = await this.configRead(at + 4, 4);
        this.msixCap = at;
        this.msixTable = { bar: table & 7, offset: table & ~7, entries: ((await this.configRead(at + 2, 2)) & 0x7ff) + 1 };
        return;
      }
      at = (await this.configRead(at + 1, 1)) & 0xfc;
    }
  }

  /** The MSI-X entry and field `address` falls in, or null (the table's BAR is read when first needed: the driver placed it). */
  private msixEntry(address: number): { vector: number; field: number } | null {
    if (this.msixTable === null || this.msixTableBase < 0) return null;
    const rel = address - this.msixTableBase;
    if (rel < 0 || rel >= this.msixTable.entries * 16) return null;
    return { vector: Math.floor(rel / 16), field: rel % 16 };
  }

  /**
   * Learns where the driver placed the MSI-X table: on the first memory write after the driver
   * wrote the table's BAR (a configuration write is too early to read it back: a 64-bit BAR's
   * upper half comes in a second write).
   */
  private async locateMsixTable(): Promise<void> {
    this.tableMoved = false;
    if (this.msixTable === null) return;
    const reg = PciCfg.Bar0 + 4 * this.msixTable.bar;
    const low = await this.configRead(reg, 4);
    const is64 = (low & 6) === 4;
    const high = is64 ? await this.configRead(reg + 4, 4) : 0;
    const base = high * 2 ** 32 + ((low & 0xfffffff0) >>> 0);
    this.msixTableBase = base === 0 ? -1 : base + this.msixTable.offset;
  }

  private startPolling(): void {
    if (this.polling !== null || this.mailboxes === null) return;
    const { memory, address } = this.mailboxes;
    const entries = Math.min(this.msixTable?.entries ?? 0, MAILBOX_VECTORS);
    // Timer turns, not a spin: the mailboxes are in shared RAM, so looking costs no request;
    // a message waits at most one timer turn.
    this.polling = setInterval(() => {
      for (let v = 0; v < entries; v++) {
        const at = address + 4 * v;
        if (memory.readU32(at) === MAILBOX_EMPTY) continue;
        memory.writeU32(at, MAILBOX_EMPTY);
        const p = this.programmed.get(v);
        if (p !== undefined) this.handler?.({ kind: 'msi', address: p.address, data: p.data });
      }
    }, 1);
    this.polling.unref();
  }

  /** Stops watching the mailboxes. */
  stop(): void {
    if (this.polling !== null) clearInterval(this.polling);
    this.polling = null;
  }
}

/**
 * Finds the functions of bus 0 and routes INTx (what firmware would have done). `chipset` is
 * `pc` (i440FX + PIIX3) or `q35` (ICH9). Each function gets its own slice of the BAR windows
 * and, with `mailboxes`, MSI-X mailboxes at `mailboxes(slot)`. Chipset functions (host bridge,
 * PIIX3, ICH9's LPC/SATA/SMBus) are left out.
 */
export async function enumeratePci(qtest: QtestClient, chipset: 'pc' | 'q35', mailboxes: (slot: number) => MsiMailboxes): Promise<QtestPciFunction[]> {
  const found: QtestPciFunction[] = [];
  if (chipset === 'pc') {
    // PIIX3 (00:01.0) PIRQRC[A-D] at 0x60-0x63: route the four PCI interrupt lines to ISA IRQs.
    const piix = new QtestPciFunction(qtest, 0, 1, 0, 0);
    for (let p = 0; p < 4; p++) await piix.configWrite(0x60 + p, 1, PIIX_PIRQ_IRQS[p]);
  }
  for (let dev = 0; dev < 32; dev++) {
    if (chipset === 'pc' && dev <= 1) continue; // i440FX host bridge, PIIX3 functions
    if (chipset === 'q35' && (dev === 0 || dev === 0x1f)) continue; // host bridge; ICH9 LPC, SATA, SMBus
    const probe = new QtestPciFunction(qtest, 0, dev, 0, 0);
    if ((await probe.configRead(PciCfg.VendorId, 2)) === 0xffff) continue;
    const multi = ((await probe.configRead(0x0e, 1)) & 0x80) !== 0;
    for (let fn = 0; fn < (multi ? 8 : 1); fn++) {
      const slot = found.length;
      const f = new QtestPciFunction(qtest, 0, dev, fn, slot, mailboxes(slot));
      if ((await f.configRead(PciCfg.VendorId, 2)) === 0xffff) continue;
      if (((await f.configRead(0x0e, 1)) & 0x7f) !== 0) continue; // bridges are not ours
      await f.probeMsix();
      const pin = await f.configRead(0x3d, 1);
      if (pin !== 0 && chipset === 'pc') {
          // The i440FX swizzle (QEMU's pci_slot_get_pirq for piix, INTA = 0): PIRQ = (slot - 1 + pin - 1) mod 4.
        f.gsi = PIIX_PIRQ_IRQS[(dev + pin - 2) & 3];
        await f.configWrite(0x3c, 1, f.gsi);
      }
      found.push(f);
    }
  }
  return found;
}

export { MAILBOX_EMPTY, MAILBOX_VECTORS };
