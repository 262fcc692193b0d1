/**
 * The driver side of virtio over PCI (spec 4.1.5): a {@link DriverTransport} over a PCI bus
 * interface, as a guest kernel's virtio_pci does it. It finds the virtio capabilities, sizes
 * and maps the BARs it needs in the bus's address windows, enables decoding, assigns MSI-X
 * vectors (config and per queue, verified by reading back) or falls back to INTx and the ISR,
 * and speaks the modern common configuration or the legacy I/O layout of a transitional
 * device.
 *
 * The bus is asynchronous: a register access may cross a socket (QEMU's qtest protocol).
 *
 * Browser-safe: no Node import.
 */
import type { DriverTransport, TransportEvents } from '../../driver/transport.js';
import type { GuestMemory } from '../../memory/guest-memory.js';
import { Monitor } from '../../monitor/monitor.js';
import { InterruptServicer, probeQueueCount } from '../../driver/register-transport.js';
import type { RingAddresses } from '../../spec/ring.js';
import { PciError, type VirtioPciDevice } from './device.js';
import {
  CapField,
  CommonCfg,
  ISR_CONFIG,
  ISR_QUEUE,
  LEGACY_CONFIG,
  LEGACY_PAGE,
  LegacyReg,
  PciCapId,
  PciCfg,
  PciCommand,
  PciStatus,
  VIRTIO_MSI_NO_VECTOR,
  VIRTIO_PCI_MODERN_BASE,
  VIRTIO_PCI_VENDOR,
  VirtioPciCap,
} from './layout.js';

/** An interrupt from the function: INTx level, or an MSI-X message (the address and data the driver programmed). */
export type PciInterrupt = { kind: 'intx'; level: boolean } | { kind: 'msi'; address: number; data: number };

/** An address window the driver may place BARs in. */
export interface PciWindow {
  base: number;
  size: number;
}

/**
 * One PCI function as a driver reaches it: its configuration space, the memory and I/O address
 * spaces, and its interrupts. Accesses are performed in call order, each promise settling once
 * done.
 */
export interface PciBus {
  /** A read of the function's configuration space. */
  configRead(offset: number, size: 1 | 2 | 4): Promise<number>;
  /** A write of the function's configuration space. */
  configWrite(offset: number, size: 1 | 2 | 4, value: number): Promise<void>;
  /** A load from memory space (a memory BAR the driver mapped). */
  memRead(address: number, size: 1 | 2 | 4): Promise<number>;
  /** A store to memory space. */
  memWrite(address: number, size: 1 | 2 | 4, value: number): Promise<void>;
  /** A read of I/O space (an I/O BAR). */
  ioRead(port: number, size: 1 | 2 | 4): Promise<number>;
  /** A write of I/O space. */
  ioWrite(port: number, size: 1 | 2 | 4, value: number): Promise<void>;
  /** Where the driver may place memory and I/O BARs. */
  readonly windows: { memory: PciWindow; io: PciWindow };
  /** The address MSI-X messages go to (an x86 LAPIC address by default: 0xfee00000). */
  readonly msiAddress?: number;
  /** Registers the handler of the function's interrupts (INTx level changes, MSI-X messages). */
  onInterrupt(handler: (irq: PciInterrupt) => void): void;
}

/**
 * A bus wired straight to a {@link VirtioPciDevice} in the same process: it decodes memory and
 * I/O addresses with the BARs the driver programmed (and the command register's enables), as a
 * host bridge does. Interrupts arrive from a microtask.
 */
export function directPciBus(model: VirtioPciDevice, windows: { memory: PciWindow; io: PciWindow } = { memory: { base: 0xe0000000, size: 0x10000000 }, io: { base: 0xc000, size: 0x4000 } }): PciBus & { traps: number } {
  let handler: (irq: PciInterrupt) => void = () => undefined;
  const find = (address: number, kind: 'io' | 'memory') => {
    for (const b of model.bars) {
      if (b.kind !== kind || !model.barEnabled(b.index)) continue;
      const base = model.barAddress(b.index);
      if (base !== 0 && address >= base && address < base + b.size) return { bar: b.index, offset: address - base };
    }
    return null;
  };
  const bus = {
    traps: 0,
    windows,
    async configRead(offset: number, size: 1 | 2 | 4) {
      bus.traps++;
      return model.configRead(offset, size);
    },
    async configWrite(offset: number, size: 1 | 2 | 4, value: number) {
      bus.traps++;
      model.configWrite(offset, size, value);
    },
    async memRead(address: number, size: 1 | 2 | 4) {
      bus.traps++;
      const hit = find(address, 'memory');
      return hit === null ? (size === 4 ? 0xffffffff : (1 << (size * 8)) - 1) : model.barRead(hit.bar, hit.offset, size);
    },
    async memWrite(address: number, size: 1 | 2 | 4, value: number) {
      bus.traps++;
      const hit = find(address, 'memory');
      if (hit !== null) model.barWrite(hit.bar, hit.offset, size, value);
    },
    async ioRead(port: number, size: 1 | 2 | 4) {
      bus.traps++;
      const hit = find(port, 'io');
      return hit === null ? (size === 4 ? 0xffffffff : (1 << (size * 8)) - 1) : model.barRead(hit.bar, hit.offset, size);
    },
    async ioWrite(port: number, size: 1 | 2 | 4, value: number) {
      bus.traps++;
      const hit = find(port, 'io');
      if (hit !== null) model.barWrite(hit.bar, hit.offset, size, value);
    },
    onInterrupt(h: (irq: PciInterrupt) => void) {
      handler = h;
    },
  };
  model.connectInterrupts({
    intx: (level) => queueMicrotask(() => handler({ kind: 'intx', level })),
    msi: (address, data) => queueMicrotask(() => handler({ kind: 'msi', address, data })),
  });
  return bus;
}

/** How a {@link PciTransport} is set up. */
export interface PciTransportOptions {
  /**
   * `modern` (the virtio capabilities), `legacy` (the I/O BAR0 of a transitional device), or
   * `auto` (default): modern when the capabilities are there, else legacy
   * (pci.legacy-device-layout-detection.driver.2).
   */
  mode?: 'auto' | 'modern' | 'legacy';
  /** Use MSI-X when the function has it (default true); false: INTx and the ISR. */
  msix?: boolean;
  /** Judges the device (default: a new strict monitor; the transport records verdicts and goes on). */
  monitor?: Monitor;
}

/** Where a structure is: the BAR's kind and the address of its start. */
interface Mapped {
  io: boolean;
  address: number;
  length: number;
}

/** A virtio structure capability as found in configuration space. */
export interface VirtioPciCapability {
  /** Configuration space offset of the capability. */
  at: number;
  cfgType: number;
  bar: number;
  offset: number;
  length: number;
}

/** The driver side of one virtio PCI function. Make it with {@link PciTransport.open}. */
export class PciTransport implements DriverTransport {
  readonly monitor: Monitor;
  readonly synchronous = false;
  readonly notificationData: boolean;
  readonly legacy?: { readonly queueAlign: number; readonly fixedQueueSize: boolean };
  /** `modern` or `legacy`: the interface in use. */
  readonly mode: 'modern' | 'legacy';
  /** The virtio capabilities found (reserved types and BARs skipped). */
  readonly capabilities: readonly VirtioPciCapability[];
  /** MSI-X vectors in use (0: INTx). */
  msixVectors = 0;
  private events: TransportEvents | null = null;
  private readonly enabled = new Set<number>();
  private readonly notifyAddr = new Map<number, number>();
  private readonly queueVectorOf = new Map<number, number>();
  private configVector = VIRTIO_MSI_NO_VECTOR;
  private queueCount: number | null = null;

  private constructor(
    readonly bus: PciBus,
    readonly memory: GuestMemory,
    readonly virtioDeviceId: number,
    mode: 'modern' | 'legacy',
    capabilities: VirtioPciCapability[],
    private readonly structs: { common?: Mapped; notify?: Mapped; isr?: Mapped; device?: Mapped; legacy?: Mapped },
    private readonly notifyMultiplier: number,
    options: PciTransportOptions,
  ) {
    this.monitor = options.monitor ?? new Monitor();
    this.mode = mode;
    this.capabilities = capabilities;
    this.notificationData = mode === 'modern';
    if (mode === 'legacy') this.legacy = { queueAlign: LEGACY_PAGE, fixedQueueSize: true };
    bus.onInterrupt((irq) => this.onInterrupt(irq));
  }

  /**
   * Discovers the function on `bus` (4.1.2, 4.1.4, 4.1.5.1): checks the ids, walks the
   * capability list, maps the BARs it needs and enables decoding and bus mastering, then sets
   * up MSI-X when there is one (vectors are bound to events as queues are set up).
   */
  static async open(bus: PciBus, memory: GuestMemory, options: PciTransportOptions = {}): Promise<PciTransport> {
    const vendor = await bus.configRead(PciCfg.VendorId, 2);
    const did = await bus.configRead(PciCfg.DeviceId, 2);
    // pci.device-discovery.driver.1/.2: 0x1af4 with 0x1040-0x107f, or a transitional id 0x1000-0x103f; any revision (driver.3).
    if (vendor !== VIRTIO_PCI_VENDOR || did < 0x1000 || did > 0x107f) throw new PciError('not-virtio', `PCI function ${vendor.toString(16)}:${did.toString(16)} is not a virtio device`);
    const transitional = did < VIRTIO_PCI_MODERN_BASE;
    const id = transitional ? await bus.configRead(PciCfg.SubsystemId, 2) : did - VIRTIO_PCI_MODERN_BASE;

    // ---- capabilities (4.1.4)
    const caps: VirtioPciCapability[] = [];
    let msixCap = -1;
    let multiplier = 0;
    const status = await bus.configRead(PciCfg.Status, 2);
    if (status & PciStatus.CapList) {
      let at = (await bus.configRead(PciCfg.CapabilitiesPointer, 1)) & 0xfc;
      for (let guard = 0; at !== 0 && guard < 48; guard++) {
        const id8 = await bus.configRead(at, 1);
        const next = (await bus.configRead(at + 1, 1)) & 0xfc;
        if (id8 === PciCapId.MsiX && msixCap < 0) msixCap = at;
        if (id8 === PciCapId.Vendor) {
          const cfgType = await bus.configRead(at + CapField.CfgType, 1);
          const bar = await bus.configRead(at + CapField.Bar, 1);
          // pci.virtio-struct-pci-capabilities.driver.1/.4: reserved types and BARs are ignored.
          const known = cfgType >= VirtioPciCap.Common && cfgType <= VirtioPciCap.PciCfg;
          if (known && (bar <= 5 || cfgType === VirtioPciCap.PciCfg)) {
            const cap = { at, cfgType, bar, offset: await bus.configRead(at + CapField.Offset, 4), length: await bus.configRead(at + CapField.Length, 4) };
            caps.push(cap);
            if (cfgType === VirtioPciCap.Notify && !caps.some((c) => c.cfgType === VirtioPciCap.Notify && c !== cap)) multiplier = await bus.configRead(at + CapField.NotifyMultiplier, 4);
          }
        }
        at = next;
      }
    }
    // pci.virtio-struct-pci-capabilities.driver.2: the first of each type.
    const first = (type: number) => caps.find((c) => c.cfgType === type);
    const modernCaps = first(VirtioPciCap.Common) !== undefined && first(VirtioPciCap.Notify) !== undefined && first(VirtioPciCap.Isr) !== undefined;
    const wanted = options.mode ?? 'auto';
    let mode: 'modern' | 'legacy';
    if (wanted === 'legacy' || (wanted === 'auto' && !modernCaps)) {
      // pci.legacy-device-layout-detection.driver.2: no capabilities, a legacy device (only a transitional id has one).
      if (!transitional) throw new PciError('no-interface', 'a non-transitional virtio device without the virtio capabilities (pci.legacy-device-layout-detection.driver.4)');
      mode = 'legacy';
    } else {
      if (!modernCaps) throw new PciError('no-interface', 'the function lacks the common, notify or ISR capability');
      mode = 'modern';
    }

    // ---- BARs
    const mapper = new BarMapper(bus);
    const structs: { common?: Mapped; notify?: Mapped; isr?: Mapped; device?: Mapped; legacy?: Mapped } = {};
    if (mode === 'modern') {
      for (const [name, type] of [
        ['common', VirtioPciCap.Common],
        ['notify', VirtioPciCap.Notify],
        ['isr', VirtioPciCap.Isr],
        ['device', VirtioPciCap.Device],
      ] as const) {
        const cap = first(type);
        if (cap === undefined) continue;
        const bar = await mapper.map(cap.bar);
        // pci.virtio-struct-pci-capabilities.driver.5/.6: only as much as the structure needs; a larger length is fine.
        structs[name] = { io: bar.io, address: bar.address + cap.offset, length: cap.length };
      }
    } else {
      const bar = await mapper.map(0);
      if (!bar.io) throw new PciError('no-interface', 'BAR0 of a transitional device is not an I/O BAR (pci.legacy-device-layout.device.1)');
      structs.legacy = { io: true, address: bar.address, length: bar.size };
    }
    const t = new PciTransport(bus, memory, id, mode, caps, structs, multiplier, options);
    const useMsix = msixCap >= 0 && options.msix !== false;
    if (useMsix) await mapper.map((await bus.configRead(msixCap + 4, 4)) & 7);
    await mapper.enable();
    if (useMsix) await t.setupMsix(msixCap, mapper);
    return t;
  }

  /** MSI-X (4.1.5.1.2): program the table (one vector per event where the table is large enough) and enable it. */
  private async setupMsix(cap: number, mapper: BarMapper): Promise<void> {
    const b = this.bus;
    const control = await b.configRead(cap + 2, 2);
    // pci.msi-x-vector-config.driver.1: any table size 0 to 0x7ff (table size - 1).
    const tableSize = (control & 0x7ff) + 1;
    const table = await b.configRead(cap + 4, 4);
    const bar = await mapper.map(table & 7);
    if (bar.io) return; // MSI-X structures live in memory space; a function that says otherwise gets INTx
    const base = bar.address + (table & ~7);
    const address = this.bus.msiAddress ?? 0xfee00000;
    const used = Math.min(tableSize, 2048);
    for (let v = 0; v < used; v++) {
      await b.memWrite(base + 16 * v, 4, address % 2 ** 32);
      await b.memWrite(base + 16 * v + 4, 4, Math.floor(address / 2 ** 32));
      await b.memWrite(base + 16 * v + 8, 4, v);
      await b.memWrite(base + 16 * v + 12, 4, 0); // unmasked
    }
    await b.configWrite(cap + 2, 2, (control & ~0x4000) | 0x8000);
    this.msixVectors = used;
  }

  /** The vector for queue `index`: its own when the table is large enough, else shared (pci.msi-x-vector-config.driver.3). */
  private vectorFor(queue: number | 'config'): number {
    if (this.msixVectors === 0) return VIRTIO_MSI_NO_VECTOR;
    if (queue === 'config') return 0;
    if (this.msixVectors === 1) return 0;
    return Math.min(1 + queue, this.msixVectors - 1);
  }

  // ---------------------------------------------------------------- register access

  private read(s: Mapped | undefined, offset: number, size: 1 | 2 | 4): Promise<number> {
    if (s === undefined) return Promise.resolve(0);
    return s.io ? this.bus.ioRead(s.address + offset, size) : this.bus.memRead(s.address + offset, size);
  }

  private write(s: Mapped | undefined, offset: number, size: 1 | 2 | 4, value: number): Promise<void> {
    if (s === undefined) return Promise.resolve();
    return s.io ? this.bus.ioWrite(s.address + offset, size, value) : this.bus.memWrite(s.address + offset, size, value);
  }

  private common(offset: number, size: 1 | 2 | 4): Promise<number> {
    return this.read(this.structs.common, offset, size);
  }

  private setCommon(offset: number, size: 1 | 2 | 4, value: number): Promise<void> {
    return this.write(this.structs.common, offset, size, value);
  }

  private legacyReg(offset: number, size: 1 | 2 | 4): Promise<number> {
    return this.read(this.structs.legacy, offset, size);
  }

  private setLegacy(offset: number, size: 1 | 2 | 4, value: number): Promise<void> {
    return this.write(this.structs.legacy, offset, size, value);
  }

  // ---------------------------------------------------------------- DriverTransport

  listen(events: TransportEvents): void {
    this.events = events;
  }

  async deviceId(): Promise<number> {
    return this.virtioDeviceId;
  }

  async getStatus(): Promise<number> {
    return this.mode === 'legacy' ? this.legacyReg(LegacyReg.DeviceStatus, 1) : this.common(CommonCfg.DeviceStatus, 1);
  }

  async setStatus(status: number): Promise<void> {
    if (this.mode === 'legacy') await this.setLegacy(LegacyReg.DeviceStatus, 1, status);
    else await this.setCommon(CommonCfg.DeviceStatus, 1, status);
    if (status === 0) {
      this.enabled.clear();
      this.configVector = VIRTIO_MSI_NO_VECTOR;
      this.queueVectorOf.clear();
    } else if (this.msixVectors > 0 && this.configVector === VIRTIO_MSI_NO_VECTOR && (status & 0x80) === 0) {
      // Out of reset (which unmaps every vector): bind the configuration vector first.
      await this.bindConfigVector();
    }
  }

  /** pci.msi-x-vector-config.driver.5: write the vector, read it back; NO_VECTOR means the device refused. */
  private async bindConfigVector(): Promise<void> {
    const v = this.vectorFor('config');
    if (this.mode === 'legacy') {
      await this.setLegacy(LegacyReg.ConfigMsixVector, 2, v);
      this.configVector = await this.legacyReg(LegacyReg.ConfigMsixVector, 2);
    } else {
      await this.setCommon(CommonCfg.ConfigMsixVector, 2, v);
      this.configVector = await this.common(CommonCfg.ConfigMsixVector, 2);
    }
    if (this.configVector !== v) throw new PciError('msix', `the device refused MSI-X vector ${v} for configuration changes (reads ${this.configVector})`);
  }

  async getDeviceFeatures(): Promise<bigint> {
    if (this.mode === 'legacy') return BigInt(await this.legacyReg(LegacyReg.HostFeatures, 4));
    await this.setCommon(CommonCfg.DeviceFeatureSelect, 4, 0);
    const low = await this.common(CommonCfg.DeviceFeature, 4);
    await this.setCommon(CommonCfg.DeviceFeatureSelect, 4, 1);
    const high = await this.common(CommonCfg.DeviceFeature, 4);
    return (BigInt(high) << 32n) | BigInt(low);
  }

  async setDriverFeatures(features: bigint): Promise<void> {
    if (this.mode === 'legacy') {
      await this.setLegacy(LegacyReg.GuestFeatures, 4, Number(features & 0xffffffffn));
      return;
    }
    await this.setCommon(CommonCfg.DriverFeatureSelect, 4, 0);
    await this.setCommon(CommonCfg.DriverFeature, 4, Number(features & 0xffffffffn));
    await this.setCommon(CommonCfg.DriverFeatureSelect, 4, 1);
    await this.setCommon(CommonCfg.DriverFeature, 4, Number((features >> 32n) & 0xffffffffn));
  }

  async configGeneration(): Promise<number> {
    return this.mode === 'legacy' ? 0 : this.common(CommonCfg.ConfigGeneration, 1);
  }

  private get configStruct(): { s: Mapped | undefined; base: number } {
    if (this.mode === 'modern') return { s: this.structs.device, base: 0 };
    return { s: this.structs.legacy, base: this.msixVectors > 0 ? LEGACY_CONFIG.msix : LEGACY_CONFIG.plain };
  }

  /** pci.device-layout.driver.1/.2: natural widths; a 64-bit field as two 32-bit halves. */
  async readConfig(offset: number, size: 1 | 2 | 4 | 8): Promise<number | bigint> {
    const { s, base } = this.configStruct;
    if (size === 8) {
      const low = await this.read(s, base + offset, 4);
      const high = await this.read(s, base + offset + 4, 4);
      return (BigInt(high) << 32n) | BigInt(low);
    }
    return this.read(s, base + offset, size);
  }

  async writeConfig(offset: number, size: 1 | 2 | 4 | 8, value: number | bigint): Promise<void> {
    const { s, base } = this.configStruct;
    if (size === 8) {
      const v = BigInt(value);
      await this.write(s, base + offset, 4, Number(v & 0xffffffffn));
      await this.write(s, base + offset + 4, 4, Number(v >> 32n));
      return;
    }
    await this.write(s, base + offset, size, Number(value));
  }

  async numQueues(): Promise<number> {
    if (this.mode === 'modern') return this.common(CommonCfg.NumQueues, 2);
    this.queueCount ??= await probeQueueCount((i) => this.queueMaxSize(i));
    return this.queueCount;
  }

  async queueMaxSize(index: number): Promise<number> {
    if (this.mode === 'legacy') {
      await this.setLegacy(LegacyReg.QueueSelect, 2, index);
      return this.legacyReg(LegacyReg.QueueSize, 2);
    }
    if (index >= (await this.common(CommonCfg.NumQueues, 2))) return 0;
    await this.setCommon(CommonCfg.QueueSelect, 2, index);
    return this.common(CommonCfg.QueueSize, 2);
  }

  async setupQueue(index: number, size: number, addrs: RingAddresses): Promise<void> {
    const vector = this.vectorFor(index);
    if (this.mode === 'legacy') {
      await this.setLegacy(LegacyReg.QueueSelect, 2, index);
      if (this.msixVectors > 0) {
        await this.setLegacy(LegacyReg.QueueMsixVector, 2, vector);
        if ((await this.legacyReg(LegacyReg.QueueMsixVector, 2)) !== vector) throw new PciError('msix', `the device refused MSI-X vector ${vector} for queue ${index}`);
        this.queueVectorOf.set(index, vector);
      }
      const used = Math.ceil((addrs.avail + 6 + 2 * size) / LEGACY_PAGE) * LEGACY_PAGE;
      if (addrs.desc % LEGACY_PAGE !== 0 || addrs.avail !== addrs.desc + 16 * size || addrs.used !== used) {
        throw new PciError('bad-option', `queue ${index}: rings not in the legacy layout (4096-byte pages and alignment)`);
      }
      await this.setLegacy(LegacyReg.QueueAddress, 4, addrs.desc / LEGACY_PAGE);
      this.notifyAddr.set(index, LegacyReg.QueueNotify);
      this.enabled.add(index);
      return;
    }
    await this.setCommon(CommonCfg.QueueSelect, 2, index);
    await this.setCommon(CommonCfg.QueueSize, 2, size);
    if (this.msixVectors > 0) {
      await this.setCommon(CommonCfg.QueueMsixVector, 2, vector);
      if ((await this.common(CommonCfg.QueueMsixVector, 2)) !== vector) throw new PciError('msix', `the device refused MSI-X vector ${vector} for queue ${index}`);
      this.queueVectorOf.set(index, vector);
    }
    for (const [field, addr] of [
      [CommonCfg.QueueDesc, addrs.desc],
      [CommonCfg.QueueDriver, addrs.avail],
      [CommonCfg.QueueDevice, addrs.used],
    ] as const) {
      await this.setCommon(field, 4, addr % 2 ** 32);
      await this.setCommon(field + 4, 4, Math.floor(addr / 2 ** 32));
    }
    const off = await this.common(CommonCfg.QueueNotifyOff, 2);
    this.notifyAddr.set(index, off * this.notifyMultiplier);
  }

  async enableQueue(index: number): Promise<void> {
    if (this.mode === 'legacy') return; // the queue address enabled it
    await this.setCommon(CommonCfg.QueueSelect, 2, index);
    await this.setCommon(CommonCfg.QueueEnable, 2, 1);
    this.enabled.add(index);
  }

  /** pci.avail-buffer-notif.driver.1-.4: the queue index in 16 bits, or the 2.9 value in 32. */
  notify(index: number, data?: number): void {
    const at = this.notifyAddr.get(index);
    if (at === undefined) return;
    const p =
      this.mode === 'legacy'
        ? this.setLegacy(LegacyReg.QueueNotify, 2, index)
        : data === undefined
          ? this.write(this.structs.notify, at, 2, index)
          : this.write(this.structs.notify, at, 4, data);
    p.catch(() => undefined);
  }

  async resetQueue(index: number): Promise<void> {
    this.enabled.delete(index);
    await this.setCommon(CommonCfg.QueueSelect, 2, index);
    await this.setCommon(CommonCfg.QueueReset, 2, 1);
  }

  /** pci.common-config-struct-layout.driver.7: complete only when queue_reset reads 0. */
  async queueResetPending(index: number): Promise<boolean> {
    await this.setCommon(CommonCfg.QueueSelect, 2, index);
    return (await this.common(CommonCfg.QueueReset, 2)) !== 0;
  }

  async queueEnabled(index: number): Promise<boolean> {
    if (this.mode === 'legacy') {
      await this.setLegacy(LegacyReg.QueueSelect, 2, index);
      return (await this.legacyReg(LegacyReg.QueueAddress, 4)) !== 0;
    }
    await this.setCommon(CommonCfg.QueueSelect, 2, index);
    return (await this.common(CommonCfg.QueueEnable, 2)) !== 0;
  }

  // ---------------------------------------------------------------- interrupts

  private onInterrupt(irq: PciInterrupt): void {
    if (irq.kind === 'msi') {
      const vector = irq.data;
      // pci.notif-of-device-config-changes.driver.1: one vector may mean both a configuration change and used buffers.
      for (const [q, v] of this.queueVectorOf) if (v === vector && this.enabled.has(q)) this.events?.used(q);
      if (vector === this.configVector) this.events?.config();
      return;
    }
    if (irq.level) this.intx.trigger();
  }

  /** INTx: read (and so clear) the ISR, then hand its events to the driver. */
  private readonly intx = new InterruptServicer(async () => {
    const isr = this.mode === 'legacy' ? await this.legacyReg(LegacyReg.Isr, 1) : await this.read(this.structs.isr, 0, 1);
    if (isr & ISR_QUEUE) for (const q of this.enabled) this.events?.used(q);
    if (isr & ISR_CONFIG) this.events?.config();
  });

  async close(): Promise<void> {
    this.events = null;
  }
}

/** Sizes BARs and assigns them addresses in the bus's windows (what firmware or a guest kernel does). */
class BarMapper {
  private readonly mapped = new Map<number, { io: boolean; address: number; size: number }>();
  private nextMem: number;
  private nextIo: number;
  private command = 0;

  constructor(private readonly bus: PciBus) {
    this.nextMem = bus.windows.memory.base;
    this.nextIo = bus.windows.io.base;
  }

  /** The BAR's address (mapped now if it was not): sized by writing all ones and reading back. */
  async map(index: number): Promise<{ io: boolean; address: number; size: number }> {
    const known = this.mapped.get(index);
    if (known !== undefined) return known;
    const b = this.bus;
    const reg = PciCfg.Bar0 + 4 * index;
    const original = await b.configRead(reg, 4);
    await b.configWrite(reg, 4, 0xffffffff);
    const probe = await b.configRead(reg, 4);
    const io = (original & 1) === 1;
    const is64 = !io && (original & 6) === 4;
    let size: number;
    if (io) size = ((~(probe & 0xfffffffc) >>> 0) & 0xffff) + 1;
    else {
      let high = 0xffffffff;
      if (is64) {
        await b.configWrite(reg + 4, 4, 0xffffffff);
        high = await b.configRead(reg + 4, 4);
      }
      const mask = high * 2 ** 32 + ((probe & 0xfffffff0) >>> 0);
      size = 2 ** 64 - mask; // two's complement of the size mask
      if (!is64) size = (~(probe & 0xfffffff0) >>> 0) + 1;
    }
    if (probe === 0 || size <= 0) throw new PciError('bar-space', `BAR${index} is not implemented`);
    const window = io ? b.windows.io : b.windows.memory;
    const next = io ? this.nextIo : this.nextMem;
    const address = Math.ceil(next / size) * size;
    if (address + size > window.base + window.size) throw new PciError('bar-space', `BAR${index} (${size} bytes) does not fit the ${io ? 'I/O' : 'memory'} window`);
    if (io) this.nextIo = address + size;
    else this.nextMem = address + size;
    await b.configWrite(reg, 4, address % 2 ** 32);
    if (is64) await b.configWrite(reg + 4, 4, Math.floor(address / 2 ** 32));
    this.command |= io ? PciCommand.Io : PciCommand.Memory;
    const m = { io, address, size };
    this.mapped.set(index, m);
    return m;
  }

  /** Enables decoding of what was mapped and bus mastering (the device reads and writes guest memory). */
  async enable(): Promise<void> {
    const old = await this.bus.configRead(PciCfg.Command, 2);
    await this.bus.configWrite(PciCfg.Command, 2, old | this.command | PciCommand.BusMaster);
  }
}
