/**
 * Test support (not a test file): a v86 machine (the npm package `v86`, an x86 emulator in JS
 * and wasm) booting the guest scripts/guest/build-v86-guest.sh builds, with virtio-ts register
 * models attached to v86's buses in place of v86's own virtio:
 * - virtio-mmio windows: v86's memory map (`cpu.io.mmap_register`, 128 KiB granules), one
 *   ISA interrupt line each, announced to Linux in an ACPI SSDT prepended to the initramfs
 *   (acpi.ts);
 * - PCI functions: v86's PCI bus (`cpu.devices.pci.register_device`) with I/O BARs on v86's
 *   port table (`cpu.io.register_read` / `register_write`, which v86 moves when the firmware
 *   or Linux reassigns the BAR), INTx through v86's PIIX interrupt routing.
 * Guest memory is v86's RAM (`cpu.mem8`, a view into its wasm memory) wrapped in a GuestMemory;
 * device writes go through `onWrite` to v86's JIT cache invalidation, as v86's own DMA does.
 *
 * v86 is only typed at its public surface; what is reached inside (`emulator.v86.cpu`) is
 * described by the small interfaces below, from v86's sources (src/cpu.js, src/io.js, src/pci.js).
 */
import { readFileSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { V86 } from 'v86';
import { GuestMemory } from '../../src/index.js';
import { newcCpio, virtioMmioSsdt, type MmioWindow } from './acpi.js';

/** A register file as the register models expose it: byte offset, access width in bytes. */
export interface Registers {
  /** The value a guest load of `size` bytes at `offset` gets. */
  read(offset: number, size: number): number;
  /** A guest store of `size` bytes of `value` at `offset`. */
  write(offset: number, size: number, value: number): void;
}

/** A PCI function's configuration space (VirtioPciDevice has these). */
export interface PciConfig {
  configRead(offset: number, size: number): number;
  configWrite(offset: number, size: number, value: number): void;
}

interface V86Io {
  ports: unknown[];
  register_read(port: number, device: object, r8?: (port: number) => number, r16?: (port: number) => number, r32?: (port: number) => number): void;
  register_write(port: number, device: object, w8?: (v: number) => void, w16?: (v: number) => void, w32?: (v: number) => void): void;
  mmap_register(addr: number, size: number, r8: (addr: number) => number, w8: (addr: number, v: number) => void, r32?: (addr: number) => number, w32?: (addr: number, v: number) => void): void;
}
interface V86Pci {
  pci_write8(address: number, value: number): void;
  pci_write16(address: number, value: number): void;
  pci_write32(address: number, value: number): void;
  register_device(device: { pci_id: number; pci_space: number[]; pci_bars: ({ size: number } | undefined)[]; name: string }): Int32Array;
  raise_irq(pciId: number): void;
  lower_irq(pciId: number): void;
}
interface V86Cpu {
  mem8: Uint8Array;
  wasm_memory: { readonly buffer: ArrayBuffer };
  io: V86Io;
  devices: { pci: V86Pci };
  device_raise_irq(line: number): void;
  device_lower_irq(line: number): void;
  jit_dirty_cache(start: number, end: number): void;
}

/** Where the guest files are (scripts/guest/build-v86-guest.sh's output). */
export const V86_GUEST_DIR = join(dirname(new URL(import.meta.url).pathname), '../../../.guest/v86');
const GUEST_FILES = ['bzImage', 'initramfs.cpio', 'bios.bin', 'vgabios.bin'] as const;

/** Why the v86 guest cannot boot here (null: it can). */
export function v86GuestMissing(dir = V86_GUEST_DIR): string | null {
  const missing = GUEST_FILES.filter((f) => !existsSync(join(dir, f)));
  return missing.length === 0 ? null : `${missing.join(', ')} not in ${dir} (scripts/guest/build-v86-guest.sh builds them)`;
}

/** v86's wasm next to its module (the package ships build/v86.wasm). */
function wasmPath(): string {
  const req = createRequire(import.meta.url);
  return join(dirname(req.resolve('v86')), 'v86.wasm');
}

const bytes = (path: string): ArrayBuffer => {
  const b = readFileSync(path);
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
};

/** How a machine is built. */
export interface V86MachineOptions {
  /** Kernel command line (the console and the init's v86.* options). */
  cmdline: string;
  /** RAM in bytes (default 128 MiB). */
  memorySize?: number;
  /** virtio-mmio windows to announce in the SSDT (their models are mapped with {@link V86Machine.mapMmio}). */
  mmio?: readonly MmioWindow[];
  /** The guest directory (default {@link V86_GUEST_DIR}). */
  guestDir?: string;
}

/** A loaded v86 machine, not yet running: attach devices, then {@link V86Machine.start}. */
export class V86Machine {
  /** v86's RAM as guest memory for the register models. */
  readonly memory: GuestMemory;
  /** Everything the guest wrote to its first serial port. */
  console = '';
  /** performance.now() at start(). */
  startedAt = 0;
  private readonly lines: string[] = [];
  private partial = '';
  private waiters: { re: RegExp; resolve: (line: string) => void }[] = [];
  private nextPort = 0xa000;

  private constructor(
    readonly emulator: V86,
    readonly cpu: V86Cpu,
  ) {
    const ram = cpu.mem8;
    const offset = ram.byteOffset;
    const size = ram.length;
    this.memory = new GuestMemory([{ guestAddr: 0, size, buffer: ram.buffer, offset, concurrent: false }]);
    // v86's wasm memory grows while it runs (its JIT allocates), and every growth detaches the
    // ArrayBuffer the region's views were made over; a device completing a request after that
    // would write through a dead view. The views are therefore re-made, on access, whenever the
    // memory's buffer has changed (queues keep the region, not its views).
    const wasm = cpu.wasm_memory;
    const region = this.memory.regions[0];
    let buffer = wasm.buffer;
    let views = { bytes: region.bytes, view: region.view, u32: region.u32 };
    const fresh = () => {
      if (wasm.buffer !== buffer) {
        buffer = wasm.buffer;
        views = { bytes: new Uint8Array(buffer, offset, size), view: new DataView(buffer, offset, size), u32: new Uint32Array(buffer, offset, size >> 2) };
      }
      return views;
    };
    for (const key of ['bytes', 'view', 'u32'] as const) Object.defineProperty(region, key, { get: () => fresh()[key] });
    // Device writes into guest RAM: v86 drops JIT code compiled from those pages (cpu.write_blob does the same).
    this.memory.onWrite = (addr, length) => cpu.jit_dirty_cache(addr, addr + length);
    emulator.add_listener('serial0-output-byte', (b: number) => {
      const c = String.fromCharCode(b);
      this.console += c;
      if (c !== '\n') {
        this.partial += c;
        return;
      }
      const line = this.partial.replace(/\r$/, '');
      this.partial = '';
      this.lines.push(line);
      this.waiters = this.waiters.filter((w) => {
        if (!w.re.test(line)) return true;
        w.resolve(line);
        return false;
      });
    });
  }

  /** Loads v86 with the guest and an SSDT for `options.mmio`; resolves once its CPU and buses exist. */
  static async load(options: V86MachineOptions): Promise<V86Machine> {
    const dir = options.guestDir ?? V86_GUEST_DIR;
    const base = new Uint8Array(bytes(join(dir, 'initramfs.cpio')));
    // The SSDT goes first, in its own uncompressed archive: where ACPI_TABLE_UPGRADE looks.
    const early = options.mmio?.length ? newcCpio([{ name: 'kernel/firmware/acpi/virtio-mmio.aml', data: virtioMmioSsdt(options.mmio) }]) : new Uint8Array(0);
    const initrd = new Uint8Array(early.length + base.length);
    initrd.set(early);
    initrd.set(base, early.length);
    const emulator = new V86({
      wasm_path: wasmPath(),
      bios: { buffer: bytes(join(dir, 'bios.bin')) },
      vga_bios: { buffer: bytes(join(dir, 'vgabios.bin')) },
      bzimage: { buffer: bytes(join(dir, 'bzImage')) },
      initrd: { buffer: initrd.buffer },
      cmdline: options.cmdline,
      memory_size: options.memorySize ?? 128 << 20,
      // ACPI (the firmware's tables, and with them the IOAPIC) only for virtio-mmio windows, which
      // the SSDT adds to them: under v86's ACPI, Linux 6.1 stops registering PCI functions after
      // the first one or two (test/v86/linux.test.ts says more), so PCI boots without it and
      // routes INTx through the firmware's PIRQ table and the 8259s.
      acpi: (options.mmio?.length ?? 0) > 0,
      autostart: false,
      disable_keyboard: true,
      disable_mouse: true,
      disable_speaker: true,
    });
    await new Promise<void>((resolve) => emulator.add_listener('emulator-loaded', () => resolve()));
    const cpu = (emulator as unknown as { v86: { cpu: V86Cpu } }).v86.cpu;
    return new V86Machine(emulator, cpu);
  }

  /** The level of ISA interrupt line `line` (what a virtio-mmio model's interrupt callback drives). */
  irqLine(line: number): (level: boolean) => void {
    return (level) => (level ? this.cpu.device_raise_irq(line) : this.cpu.device_lower_irq(line));
  }

  /**
   * Maps `regs` at `window.base` (a multiple of 128 KiB, v86's memory-map granule); loads and
   * stores past `window.size` in the granule read all ones and are dropped. v86 splits 16-bit
   * accesses to mapped memory into two byte accesses (cpu.js mmap_write16, memory.rs read16).
   */
  mapMmio(window: MmioWindow, regs: Registers): void {
    const GRANULE = 1 << 17;
    if (window.base % GRANULE !== 0 || window.size > GRANULE) throw new RangeError(`virtio-mmio window at 0x${window.base.toString(16)}: v86 maps 128 KiB-aligned granules`);
    // v86 hands the handlers the address as a signed 32-bit integer.
    const offset = (addr: number, size: number) => {
      const o = (addr >>> 0) - window.base;
      return o >= 0 && o + size <= window.size ? o : -1;
    };
    this.cpu.io.mmap_register(
      window.base,
      GRANULE,
      (addr) => {
        const o = offset(addr, 1);
        return o < 0 ? 0xff : regs.read(o, 1) & 0xff;
      },
      (addr, v) => {
        const o = offset(addr, 1);
        if (o >= 0) regs.write(o, 1, v & 0xff);
      },
      (addr) => {
        const o = offset(addr, 4);
        return o < 0 ? -1 : regs.read(o, 4) | 0;
      },
      (addr, v) => {
        const o = offset(addr, 4);
        if (o >= 0) regs.write(o, 4, v >>> 0);
      },
    );
  }

  /**
   * Puts `fn` on bus 0 as device number `slot`. v86 keeps its own copy of each function's
   * configuration space and answers the guest's config reads from it, so the copy is taken
   * from `fn` now and, after every config write v86 takes (outside the BARs and the ROM
   * address, which v86 handles itself), the write is passed to `fn` and the dword re-read from
   * it: read-only bits stay read-only and the function sees its command register. `ioBars`
   * become I/O BARs on v86's port table (sizes powers of two, at most 256 bytes; v86 moves the
   * port handlers when the firmware or Linux reassigns a BAR). Returns the INTx line setter.
   */
  addPci(slot: number, fn: PciConfig, ioBars: readonly { bar: number; size: number; regs: Registers }[], name = 'virtio-ts'): (level: boolean) => void {
    // The PCI configuration access capability's data field (4.1.4.9) is a window onto the BARs:
    // reading it is an access through the capability, so the copy leaves it out (v86 could not
    // serve that window anyway: it answers config reads from its copy).
    let pciCfgData = -1;
    for (let cap = fn.configRead(0x34, 1) & 0xfc, n = 0; cap !== 0 && n < 48; cap = fn.configRead(cap + 1, 1) & 0xfc, n++) {
      if (fn.configRead(cap, 1) === 0x09 && fn.configRead(cap + 3, 1) === 5) pciCfgData = cap + 16;
    }
    const space: number[] = [];
    for (let o = 0; o < 256; o += 4) {
      const v = o === pciCfgData ? 0 : fn.configRead(o, 4) >>> 0;
      space.push(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24);
    }
    const device = { pci_id: slot << 3, pci_space: space, pci_bars: [] as ({ size: number } | undefined)[], name };
    for (const { bar, size, regs } of ioBars) {
      if (size & (size - 1) || size > 256) throw new RangeError(`I/O BAR ${bar}: size ${size} is not a power of two up to 256`);
      const port = this.nextPort;
      this.nextPort += 0x100;
      for (let o = 0; o < size; o++) {
        this.cpu.io.register_read(
          port + o,
          device,
          () => regs.read(o, 1) & 0xff,
          () => regs.read(o, 2) & 0xffff,
          () => regs.read(o, 4) | 0,
        );
        this.cpu.io.register_write(
          port + o,
          device,
          (v) => regs.write(o, 1, v & 0xff),
          (v) => regs.write(o, 2, v & 0xffff),
          (v) => regs.write(o, 4, v >>> 0),
        );
      }
      space.splice(0x10 + 4 * bar, 4, (port & 0xfc) | 1, (port >>> 8) & 0xff, 0, 0);
      device.pci_bars[bar] = { size };
    }
    const copy = this.cpu.devices.pci.register_device(device);
    const pci = this.cpu.devices.pci;
    const bdf = slot << 3;
    for (const size of [1, 2, 4] as const) {
      const key = `pci_write${size * 8}` as 'pci_write8' | 'pci_write16' | 'pci_write32';
      const v86Write = pci[key].bind(pci);
      pci[key] = (address: number, value: number) => {
        v86Write(address, value);
        const reg = address & 0xff;
        if (((address >> 8) & 0xffff) !== bdf || (reg >= 0x10 && reg < 0x28) || (reg >= 0x30 && reg < 0x34)) return;
        fn.configWrite(reg, size, size === 4 ? value >>> 0 : value & ((1 << (size * 8)) - 1));
        if ((reg & ~3) !== pciCfgData) copy[reg >> 2] = fn.configRead(reg & ~3, 4) | 0;
      };
    }
    return (level) => (level ? pci.raise_irq(device.pci_id) : pci.lower_irq(device.pci_id));
  }

  /** Runs the machine. */
  async start(): Promise<void> {
    this.startedAt = performance.now();
    await this.emulator.run();
  }

  /** The first console line (past or future) matching `re`; fails after `timeoutMs` with the console's tail. */
  waitForLine(re: RegExp, timeoutMs: number): Promise<string> {
    const seen = this.lines.find((l) => re.test(l));
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done);
        reject(new Error(`v86 guest: no line matching ${re} within ${timeoutMs / 1000} s; console tail:\n${this.console.slice(-3000)}`));
      }, timeoutMs);
      const done = (line: string) => {
        clearTimeout(timer);
        resolve(line);
      };
      this.waiters.push({ re, resolve: done });
    });
  }

  /** The lines printed so far. */
  get output(): readonly string[] {
    return this.lines;
  }

  /** Stops and frees the emulator. */
  async destroy(): Promise<void> {
    await this.emulator.destroy();
  }
}
