/**
 * PCI over qtest: configuration space through the x86 configuration mechanism #1 (ports 0xcf8 /
 * 0xcfc), and the work firmware does before an OS runs, done here because a qtest QEMU runs no
 * firmware: find the functions on bus 0, size and place their BARs, turn on memory and I/O
 * decoding and bus mastering, and route INTx (the PIIX3's PIRQ routing on `pc`; ICH9 on `q35`
 * wires PIRQ A-H to I/O APIC inputs 16-23 by itself).
 *
 * Interrupts are INTx: QEMU reports I/O APIC line changes (irq_intercept_in ioapic) and every
 * function on the raised line is asked to look (read its ISR). MSI-X stays disabled: with no
 * CPU running, an MSI is a memory write to 0xfeexxxxx that only a local APIC sees.
 *
 * Node only.
 */
import type { QtestClient } from './client.js';

/** One BAR as placed: its index, kind, guest address (memory) or port (I/O), and size. */
export interface QtestPciBar {
  /** BAR number (0-5). */
  index: number;
  /** Memory or I/O space. */
  kind: 'memory' | 'io';
  /** Where it was placed: a guest-physical address, or an I/O port. */
  address: number;
  /** Bytes it decodes. */
  size: number;
  /** A 64-bit memory BAR (takes index and index + 1). */
  is64: boolean;
}

/** PCI configuration registers this file uses (PCI Local Bus 3.0, 6.1). */
const PCI_VENDOR_ID = 0x00;
const PCI_COMMAND = 0x04;
const PCI_HEADER_TYPE = 0x0e;
const PCI_BAR0 = 0x10;
const PCI_INTERRUPT_LINE = 0x3c;
const PCI_INTERRUPT_PIN = 0x3d;
const COMMAND_IO = 1;
const COMMAND_MEMORY = 2;
const COMMAND_MASTER = 4;

/** Where BARs go: above guest RAM, below the I/O APIC (0xfec00000) and q35's MMCONFIG window (0xb0000000-0xbfffffff). */
const MMIO_WINDOW = { start: 0xc0000000, end: 0xfec00000 };
/** I/O BARs: from 0xc000, as SeaBIOS places them. */
const IO_WINDOW = { start: 0xc000, end: 0x10000 };
/** ISA IRQs the PIIX3 routes PIRQ A-D to (SeaBIOS's choice: 10, 10, 11, 11). */
const PIIX_PIRQ_IRQS = [10, 10, 11, 11];

/** One PCI function on a qtest QEMU: configuration space, BARs, and its INTx line. */
export class QtestPciFunction {
  /** Placed BARs, by index (64-bit BARs appear at their first index). */
  readonly bars: QtestPciBar[] = [];
  /** The I/O APIC input INTx arrives on, or -1 when unknown (every raise then asks it). */
  gsi = -1;
  private readonly interruptHandlers: ((level: boolean) => void)[] = [];

  /** The function at bus:device.function of `qtest`. */
  constructor(
    readonly qtest: QtestClient,
    readonly bus: number,
    readonly device: number,
    readonly fn: number,
  ) {}

  /** PCI vendor id. */
  async vendorId(): Promise<number> {
    return (await this.configRead(PCI_VENDOR_ID, 2)) as number;
  }

  /** PCI device id. */
  async deviceId(): Promise<number> {
    return (await this.configRead(2, 2)) as number;
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
  }

  /** The placed BAR `index` (an Error when the function has none there). */
  bar(index: number): QtestPciBar {
    const b = this.bars[index];
    if (b === undefined) throw new RangeError(`PCI ${this.address()} has no BAR ${index}`);
    return b;
  }

  /** Reads 1, 2, 4 or 8 bytes at `offset` in BAR `index` (memory or I/O). */
  async barRead(index: number, offset: number, size: 1 | 2 | 4 | 8): Promise<number | bigint> {
    const b = this.bar(index);
    if (b.kind === 'memory') return this.qtest.readSized(b.address + offset, size);
    if (size === 8) {
      const lo = await this.qtest.inl(b.address + offset);
      const hi = await this.qtest.inl(b.address + offset + 4);
      return (BigInt(hi) << 32n) | BigInt(lo);
    }
    return this.qtest.inSized(b.address + offset, size);
  }

  /** Writes 1, 2, 4 or 8 bytes at `offset` in BAR `index`. */
  async barWrite(index: number, offset: number, size: 1 | 2 | 4 | 8, value: number | bigint): Promise<void> {
    const b = this.bar(index);
    if (b.kind === 'memory') return this.qtest.writeSized(b.address + offset, size, value);
    if (size === 8) {
      const v = BigInt.asUintN(64, BigInt(value));
      await this.qtest.outl(b.address + offset, Number(v & 0xffffffffn));
      await this.qtest.outl(b.address + offset + 4, Number(v >> 32n));
      return;
    }
    return this.qtest.outSized(b.address + offset, size, Number(value));
  }

  /**
   * Registers a handler called with true when the function's INTx line goes up (the handler
   * reads its ISR), false when it goes down.
   */
  onInterrupt(handler: (level: boolean) => void): void {
    this.interruptHandlers.push(handler);
  }

  /** @internal The machine calls this when the function's line changes. */
  interrupt(level: boolean): void {
    for (const h of this.interruptHandlers) h(level);
  }

  /** bb:dd.f */
  address(): string {
    const hex = (n: number, w: number) => n.toString(16).padStart(w, '0');
    return `${hex(this.bus, 2)}:${hex(this.device, 2)}.${this.fn}`;
  }
}

/** The placement state: next free address of each window. */
interface Allocator {
  mmio: number;
  io: number;
}

function alignUp(n: number, align: number): number {
  return Math.ceil(n / align) * align;
}

/**
 * Sizes and places the BARs of `f` (writing all ones and reading back, PCI 6.2.5.1), then
 * enables decoding and bus mastering.
 */
async function placeBars(f: QtestPciFunction, next: Allocator): Promise<void> {
  let command = COMMAND_MASTER;
  for (let i = 0; i < 6; i++) {
    const reg = PCI_BAR0 + 4 * i;
    const original = await f.configRead(reg, 4);
    await f.configWrite(reg, 4, 0xffffffff);
    const mask = await f.configRead(reg, 4);
    await f.configWrite(reg, 4, original);
    if (mask === 0) continue;
    if (original & 1) {
      const size = (~(mask & 0xfffffffc) & 0xffff) + 1;
      const address = alignUp(next.io, size);
      if (address + size > IO_WINDOW.end) throw new RangeError(`no I/O space left for BAR ${i} of PCI ${f.address()}`);
      next.io = address + size;
      await f.configWrite(reg, 4, address);
      f.bars[i] = { index: i, kind: 'io', address, size, is64: false };
      command |= COMMAND_IO;
      continue;
    }
    const is64 = ((original >> 1) & 3) === 2;
    let size = (~(mask & 0xfffffff0) >>> 0) + 1;
    if (is64) {
      const hiReg = reg + 4;
      const hiOriginal = await f.configRead(hiReg, 4);
      await f.configWrite(hiReg, 4, 0xffffffff);
      const hiMask = await f.configRead(hiReg, 4);
      await f.configWrite(hiReg, 4, hiOriginal);
      if (hiMask !== 0xffffffff) throw new RangeError(`BAR ${i} of PCI ${f.address()} needs more than 4 GiB`);
      if ((mask & 0xfffffff0) === 0) throw new RangeError(`BAR ${i} of PCI ${f.address()} needs more than 4 GiB`);
      size = (~(mask & 0xfffffff0) >>> 0) + 1;
    }
    const address = alignUp(next.mmio, size);
    if (address + size > MMIO_WINDOW.end) throw new RangeError(`no memory space left for BAR ${i} of PCI ${f.address()}`);
    next.mmio = address + size;
    await f.configWrite(reg, 4, address);
    if (is64) await f.configWrite(reg + 4, 4, 0);
    f.bars[i] = { index: i, kind: 'memory', address, size, is64 };
    command |= COMMAND_MEMORY;
    if (is64) i++;
  }
  await f.configWrite(PCI_COMMAND, 2, ((await f.configRead(PCI_COMMAND, 2)) | command) & ~0x400); // INTx enabled (bit 10 clear)
}

/**
 * Finds the functions of bus 0, places their BARs, enables them and routes INTx (what firmware
 * would have done). `chipset` is `pc` (i440FX + PIIX3) or `q35` (ICH9).
 */
export async function enumeratePci(qtest: QtestClient, chipset: 'pc' | 'q35'): Promise<QtestPciFunction[]> {
  const found: QtestPciFunction[] = [];
  const next: Allocator = { mmio: MMIO_WINDOW.start, io: IO_WINDOW.start };
  if (chipset === 'pc') {
    // PIIX3 (00:01.0) PIRQRC[A-D] at 0x60-0x63: route the four PCI interrupt lines to ISA IRQs.
    const piix = new QtestPciFunction(qtest, 0, 1, 0);
    for (let p = 0; p < 4; p++) await piix.configWrite(0x60 + p, 1, PIIX_PIRQ_IRQS[p]);
  }
  for (let dev = 0; dev < 32; dev++) {
    const f0 = new QtestPciFunction(qtest, 0, dev, 0);
    if ((await f0.vendorId()) === 0xffff) continue;
    const multi = ((await f0.configRead(PCI_HEADER_TYPE, 1)) & 0x80) !== 0;
    for (let fn = 0; fn < (multi ? 8 : 1); fn++) {
      const f = fn === 0 ? f0 : new QtestPciFunction(qtest, 0, dev, fn);
      if (fn > 0 && (await f.vendorId()) === 0xffff) continue;
      found.push(f);
    }
  }
  for (const f of found) {
    // Only endpoints (header type 0) with an interrupt pin are ours to set up; bridges and the
    // host bridge keep what QEMU gave them.
    if (((await f.configRead(PCI_HEADER_TYPE, 1)) & 0x7f) !== 0) continue;
    if (chipset === 'q35' && f.device === 0x1f) continue; // the LPC bridge, SMBus, SATA of ICH9: not ours
    if (chipset === 'pc' && f.device <= 1) continue; // i440FX host bridge, PIIX3 functions
    await placeBars(f, next);
    const pin = await f.configRead(PCI_INTERRUPT_PIN, 1);
    if (pin === 0) continue;
    if (chipset === 'pc') {
      // The i440FX swizzle (QEMU's pci_slot_get_pirq for piix): PIRQ = (slot + pin - 1) mod 4.
      f.gsi = PIIX_PIRQ_IRQS[(f.device + pin - 1) & 3];
      await f.configWrite(PCI_INTERRUPT_LINE, 1, f.gsi);
    }
    // q35: ICH9's per-slot routing registers decide the PIRQ (16-23); f.gsi stays -1 and every
    // raise on 16-23 asks the function to look at its ISR (reading it is harmless).
  }
  return found;
}
