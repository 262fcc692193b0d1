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
import { Feature, Status } from '../../spec/constants.js';
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
  transitionalType,
} from './layout.js';

/** Reports a device's broken clause on the driver's monitor (the driver is the device's observer). */
function reportDevice(monitor: Monitor, clause: string, message: string, context: Record<string, unknown>): void {
  monitor.report(clause, message, context);
}

/** How many device_status reads a reset may take before it is judged (a hang guard, not a time). */
const RESET_POLLS = 100;

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
  /**
   * True when a message the function sent before it served an access is delivered before that
   * access settles (the in-process bus). Only then can the driver tell a message sent after it
   * unmapped a vector from one still on its way (pci.used-buffer-notif.device.1).
   */
  readonly orderedInterrupts?: boolean;
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
    orderedInterrupts: true,
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
  /** The device's features as last read, and what the driver last wrote (the checks that depend on them). */
  private offered: bigint | null = null;
  private accepted: bigint | null = null;
  private notifyChecked = false;
  private pastLastChecked = false;
  /** A reset completed since open (what a reset clears is judged from then on), and queues set up since. */
  private resetSeen = false;
  private resetEpoch = 0;
  private readonly setUpSinceReset = new Set<number>();
  /** Device configuration reads under the current config_generation, and those since the last generation read. */
  private configGen = -1;
  private readonly configSeen = new Map<string, number | bigint>();
  private readonly configPending: [string, number | bigint][] = [];
  private readonly legacyChecked = new Set<string>();
  /** Queues being reset: `pending` once queue_reset read 1, `judged` when the reset itself was judged. */
  private readonly queueResets = new Map<number, 'pending' | 'judged'>();
  /** Vectors whose only events the driver unmapped at close(), and which kind of event used them. */
  private readonly unmapped = new Map<number, 'queue' | 'config'>();

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
    const monitor = options.monitor ?? new Monitor();
    const vendor = await bus.configRead(PciCfg.VendorId, 2);
    const did = await bus.configRead(PciCfg.DeviceId, 2);

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
            // cap_len counts every byte from cap_vndr on: 16, 20 with the notify multiplier or the PCI_CFG window.
            const need = cfgType === VirtioPciCap.Notify || cfgType === VirtioPciCap.PciCfg ? 20 : 16;
            const capLen = await bus.configRead(at + CapField.Len, 1);
            if (capLen < need) reportDevice(monitor, 'pci.virtio-struct-pci-capabilities.device.1', `capability at 0x${at.toString(16)} (cfg_type ${cfgType}) has cap_len ${capLen}, less than its ${need} bytes`, { at, cfgType, capLen });
          }
        }
        at = next;
      }
    }
    const first = (type: number) => caps.find((c) => c.cfgType === type);

    // pci.device-discovery.driver.1/.2: 0x1af4 with 0x1040-0x107f, or a transitional id 0x1000-0x103f; any revision (driver.3).
    if (vendor !== VIRTIO_PCI_VENDOR || did < 0x1000 || did > 0x107f) {
      // A function that presents the virtio structures is a virtio device, whatever its ids say.
      if (first(VirtioPciCap.Common) !== undefined) {
        if (vendor !== VIRTIO_PCI_VENDOR) reportDevice(monitor, 'pci.device-discovery.device.1', `a function with the virtio capabilities has vendor id 0x${vendor.toString(16)}, not 0x1af4`, { vendor, deviceId: did });
        else reportDevice(monitor, 'pci.device-discovery.device.2', `a virtio function (it has the virtio capabilities) has device id 0x${did.toString(16)}, outside 0x1000-0x107f`, { deviceId: did });
      }
      throw new PciError('not-virtio', `PCI function ${vendor.toString(16)}:${did.toString(16)} is not a virtio device`);
    }
    const transitional = did < VIRTIO_PCI_MODERN_BASE;
    const revision = await bus.configRead(PciCfg.Revision, 1);
    const subsystem = await bus.configRead(PciCfg.SubsystemId, 2);
    // As Linux's virtio_pci, a transitional function's type is its subsystem id (what legacy drivers read).
    const id = transitional ? subsystem : did - VIRTIO_PCI_MODERN_BASE;
    if (transitional) {
      const type = transitionalType(did);
      if (type === undefined) reportDevice(monitor, 'pci.device-discovery.device.2', `device id 0x${did.toString(16)} is in the transitional range but is no type's transitional id`, { deviceId: did });
      else if (subsystem !== type) reportDevice(monitor, 'pci.legacy-device-discovery.device.2', `transitional device id 0x${did.toString(16)} (type ${type}) with subsystem device id ${subsystem}, not ${type}`, { deviceId: did, subsystem });
      if (revision !== 0) reportDevice(monitor, 'pci.legacy-device-discovery.device.1', `transitional device (id 0x${did.toString(16)}) has revision ${revision}, not 0`, { revision });
    } else {
      if (revision === 0) reportDevice(monitor, 'pci.device-discovery.device.5', `modern-only device (id 0x${did.toString(16)}) has revision 0`, { revision });
      if (subsystem < 0x40) reportDevice(monitor, 'pci.device-discovery.device.6', `modern-only device (id 0x${did.toString(16)}) has subsystem device id 0x${subsystem.toString(16)}, below 0x40`, { subsystem });
    }

    // pci.virtio-struct-pci-capabilities.driver.2: the first of each type.
    const modernCaps = first(VirtioPciCap.Common) !== undefined && first(VirtioPciCap.Notify) !== undefined && first(VirtioPciCap.Isr) !== undefined;
    const bar0 = await bus.configRead(PciCfg.Bar0, 4);
    const bar0Io = (bar0 & 1) === 1;
    if (!modernCaps && (!transitional || caps.length > 0)) {
      // A 1.x device presents the structures; only a legacy (pre-1.0) one, with a transitional id, has none.
      if (caps.length === 0 && bar0Io) {
        reportDevice(monitor, 'pci.legacy-device-discovery.device.3', `device id 0x${did.toString(16)} has no virtio capabilities but an I/O BAR0: a legacy interface behind a non-transitional id`, { deviceId: did });
      } else {
        if (first(VirtioPciCap.Common) === undefined) reportDevice(monitor, 'pci.common-config-struct-layout.device.2', 'the function presents no common configuration capability', {});
        if (first(VirtioPciCap.Notify) === undefined) reportDevice(monitor, 'pci.notif-cap.device.1', 'the function presents no notification capability', {});
        if (first(VirtioPciCap.Isr) === undefined) reportDevice(monitor, 'pci.isr-status-cap.device.1', 'the function presents no ISR status capability', {});
      }
    }
    const wanted = options.mode ?? 'auto';
    let mode: 'modern' | 'legacy';
    if (wanted === 'legacy' || (wanted === 'auto' && !modernCaps)) {
      // pci.legacy-device-layout-detection.driver.2: no capabilities, a legacy device (only a transitional id has one).
      if (!transitional) throw new PciError('no-interface', 'a non-transitional virtio device without the virtio capabilities (pci.legacy-device-layout-detection.driver.4)');
      mode = 'legacy';
    } else {
      if (!modernCaps) throw new PciError('no-interface', 'the function lacks the common, notify or ISR capability');
      mode = 'modern';
      const common = first(VirtioPciCap.Common);
      if (common !== undefined && common.offset % 4 !== 0) reportDevice(monitor, 'pci.common-config-struct-layout.device.1', `common configuration capability offset 0x${common.offset.toString(16)} is not 4-byte aligned`, { offset: common.offset });
      const dev = first(VirtioPciCap.Device);
      if (dev !== undefined && dev.offset % 4 !== 0) reportDevice(monitor, 'pci.device-specific-config.device.1', `device configuration capability offset 0x${dev.offset.toString(16)} is not 4-byte aligned`, { offset: dev.offset });
      if (first(VirtioPciCap.PciCfg) === undefined) reportDevice(monitor, 'pci.config-access-cap.device.1', 'the function presents no PCI configuration access capability', {});
      if (transitional && !bar0Io) {
        reportDevice(monitor, 'pci.device-discovery.device.4', `device id 0x${did.toString(16)} is a transitional id but BAR0 is no I/O BAR: a function without the legacy interface should use 0x1040 + type`, { deviceId: did });
      }
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
      if (!bar0Io) {
        // The same rule stated twice (4.1.4.8 and 4.1.5.1.1): the legacy registers live in an I/O BAR0.
        reportDevice(monitor, 'pci.legacy-device-layout.device.1', 'BAR0 of a transitional device driven through the legacy interface is not an I/O BAR', { bar0 });
        reportDevice(monitor, 'pci.legacy-device-layout-detection.device.1', 'a transitional device offers no legacy register set in an I/O BAR0', { bar0 });
        throw new PciError('no-interface', 'BAR0 of a transitional device is not an I/O BAR (pci.legacy-device-layout.device.1)');
      }
      const bar = await mapper.map(0);
      structs.legacy = { io: true, address: bar.address, length: bar.size };
      // The device configuration seen through the modern structure too, to compare (pci.legacy-device-layout.device.3).
      const dev = first(VirtioPciCap.Device);
      if (dev !== undefined && dev.bar !== 0) {
        const b = await mapper.map(dev.bar);
        structs.device = { io: b.io, address: b.address + dev.offset, length: dev.length };
      }
    }
    const t = new PciTransport(bus, memory, id, mode, caps, structs, multiplier, { ...options, monitor });
    const useMsix = msixCap >= 0 && options.msix !== false;
    if (useMsix) await mapper.map((await bus.configRead(msixCap + 4, 4)) & 7);
    await mapper.enable();
    if (useMsix) await t.setupMsix(msixCap, mapper);
    if (mode === 'modern') await t.checkConfigWindow();
    return t;
  }

  /**
   * The PCI configuration access capability (4.1.4.9): reads device_feature_select through the
   * window after writing it through the BAR, then writes it through the window and reads it
   * through the BAR (pci.config-access-cap.device.2/.3). The driver does not otherwise use the
   * window; a broken one is a verdict, and the driver goes on.
   */
  private async checkConfigWindow(): Promise<void> {
    const cap = this.capabilities.find((c) => c.cfgType === VirtioPciCap.PciCfg);
    const common = this.capabilities.find((c) => c.cfgType === VirtioPciCap.Common);
    if (cap === undefined || common === undefined) return;
    const b = this.bus;
    await b.configWrite(cap.at + CapField.Bar, 1, common.bar);
    await b.configWrite(cap.at + CapField.Offset, 4, common.offset + CommonCfg.DeviceFeatureSelect);
    await b.configWrite(cap.at + CapField.Length, 4, 4);
    await this.setCommon(CommonCfg.DeviceFeatureSelect, 4, 1);
    const read = await b.configRead(cap.at + CapField.PciCfgData, 4);
    if (read !== 1) this.deviceVerdict('pci.config-access-cap.device.3', `pci_cfg_data read ${read} where device_feature_select (BAR ${common.bar}, offset 0x${common.offset.toString(16)}) holds 1`, { read });
    await b.configWrite(cap.at + CapField.PciCfgData, 4, 0);
    const after = await this.common(CommonCfg.DeviceFeatureSelect, 4);
    if (after !== 0) this.deviceVerdict('pci.config-access-cap.device.2', `a pci_cfg_data write of 0 to device_feature_select left it reading ${after} through the BAR`, { after });
  }

  /** A verdict about the device: recorded, the transport goes on unless the caller refuses the device. */
  private deviceVerdict(clause: string, message: string, context: Record<string, unknown>): void {
    reportDevice(this.monitor, clause, message, context);
  }

  /** MSI-X (4.1.5.1.2): program the table (one vector per event where the table is large enough) and enable it. */
  private async setupMsix(cap: number, mapper: BarMapper): Promise<void> {
    const b = this.bus;
    const control = await b.configRead(cap + 2, 2);
    // pci.msi-x-vector-config.driver.1: any table size 0 to 0x7ff (table size - 1).
    const tableSize = (control & 0x7ff) + 1;
    if (tableSize < 2) this.deviceVerdict('pci.msi-x-vector-config.device.1', `the MSI-X table has ${tableSize} vector, fewer than 2`, { tableSize });
    const table = await b.configRead(cap + 4, 4);
    const bar = await mapper.map(table & 7);
    if (bar.io) return; // MSI-X structures live in memory space; a function that says otherwise gets INTx
    const base = bar.address + (table & ~7);
    let used = Math.min(tableSize, 2048);
    // The Table Size field is the number of vectors the device has: the table must hold them in its BAR.
    const room = Math.floor((bar.size - (table & ~7)) / 16);
    if (room < tableSize) {
      this.deviceVerdict('pci.msi-x-vector-config.device.2', `Table Size says ${tableSize} vectors but BAR${table & 7} holds ${Math.max(room, 0)} table entries from offset 0x${(table & ~7).toString(16)}`, { tableSize, room });
      used = Math.max(0, Math.min(used, room));
      if (used === 0) return;
    }
    const address = this.bus.msiAddress ?? 0xfee00000;
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
      this.configSeen.clear();
      this.configPending.length = 0;
      this.accepted = null;
      this.resetEpoch++;
      if (await this.awaitReset()) {
        this.resetSeen = true;
        this.setUpSinceReset.clear();
        await this.checkAfterReset();
      }
    } else if (this.msixVectors > 0 && this.configVector === VIRTIO_MSI_NO_VECTOR && (status & 0x80) === 0) {
      // Out of reset (which unmaps every vector): bind the configuration vector first.
      await this.bindConfigVector();
    }
    if (status & Status.DRIVER_OK && this.msixVectors > 0) await this.checkBoundVectors();
  }

  /**
   * After writing 0 to device_status: a bounded wait (a hang guard, counted in reads) for the
   * device to read 0 (pci.common-config-struct-layout.device.7). The driver core waits again and
   * gives up (basic.reset.device.1); here the reset is only judged.
   */
  private async awaitReset(): Promise<boolean> {
    if (this.mode === 'legacy') return (await this.legacyReg(LegacyReg.DeviceStatus, 1)) === 0;
    let s = 0;
    for (let i = 0; i < RESET_POLLS; i++) {
      s = await this.common(CommonCfg.DeviceStatus, 1);
      if (s === 0) return true;
    }
    this.deviceVerdict('pci.common-config-struct-layout.device.7', `device_status reads 0x${s.toString(16)} after ${RESET_POLLS} reads following a write of 0`, { status: s });
    return false;
  }

  /**
   * What a reset must have cleared: the configuration vector is unmapped
   * (pci.msi-x-vector-config.device.7); without MSI-X, a read clears the ISR
   * (pci.isr-status-cap.device.5) and the PCI status Interrupt bit mirrors it
   * (pci.isr-status-cap.device.4). A device at status 0 has nothing to notify, so a second ISR
   * read finds what the first left behind.
   */
  private async checkAfterReset(): Promise<void> {
    if (this.msixVectors > 0) {
      const v = await this.readVector('config');
      if (v !== VIRTIO_MSI_NO_VECTOR) this.deviceVerdict('pci.msi-x-vector-config.device.7', `config_msix_vector reads ${v} after a reset, not NO_VECTOR`, { vector: v });
      return;
    }
    const first = await this.readIsr();
    const second = await this.readIsr();
    if ((first & second) !== 0) this.deviceVerdict('pci.isr-status-cap.device.5', `the ISR still reads 0x${second.toString(16)} after a read (first read 0x${first.toString(16)})`, { first, second });
    else if (second === 0 && (await this.bus.configRead(PciCfg.Status, 2)) & PciStatus.Interrupt) {
      this.deviceVerdict('pci.isr-status-cap.device.4', 'the PCI status Interrupt bit is set while the ISR reads 0 (after a reset, MSI-X off)', {});
    }
  }

  private readIsr(): Promise<number> {
    return this.mode === 'legacy' ? this.legacyReg(LegacyReg.Isr, 1) : this.read(this.structs.isr, 0, 1);
  }

  /**
   * pci.msi-x-vector-config.driver.5: write the vector, read it back; NO_VECTOR means the device
   * refused (pci.msi-x-vector-config.device.8), any other value is no way to refuse
   * (pci.msi-x-vector-config.device.9). The driver gives up on the device either way.
   */
  private async bindConfigVector(): Promise<void> {
    const v = this.vectorFor('config');
    this.configVector = await this.writeVector('config', v);
    this.unmapped.delete(v);
    if (this.configVector !== v) {
      this.vectorRefused(v, this.configVector, 'configuration changes', false);
      throw new PciError('msix', `the device refused MSI-X vector ${v} for configuration changes (reads ${this.configVector})`);
    }
  }

  /** A mapping that did not read back: which rule the device broke (see bindConfigVector). */
  private vectorRefused(v: number, read: number, event: string, acceptedElsewhere: boolean): void {
    if (read !== VIRTIO_MSI_NO_VECTOR) this.deviceVerdict('pci.msi-x-vector-config.device.9', `mapping ${event} to vector ${v} reads back ${read}: neither the vector nor NO_VECTOR`, { vector: v, read });
    else if (acceptedElsewhere) this.deviceVerdict('pci.msi-x-vector-config.device.4', `the device refused vector ${v} for ${event}, a valid vector it accepted for another event`, { vector: v });
    else this.deviceVerdict('pci.msi-x-vector-config.device.8', `the device refused the valid vector ${v} (of ${this.msixVectors}) for ${event}`, { vector: v });
  }

  /** config_msix_vector, or queue `event`'s queue_msix_vector (selected first), in the interface in use. */
  private async readVector(event: number | 'config'): Promise<number> {
    const legacy = this.mode === 'legacy';
    if (event === 'config') return legacy ? this.legacyReg(LegacyReg.ConfigMsixVector, 2) : this.common(CommonCfg.ConfigMsixVector, 2);
    if (legacy) await this.setLegacy(LegacyReg.QueueSelect, 2, event);
    else await this.setCommon(CommonCfg.QueueSelect, 2, event);
    return legacy ? this.legacyReg(LegacyReg.QueueMsixVector, 2) : this.common(CommonCfg.QueueMsixVector, 2);
  }

  /** Writes the vector field of `event` (a queue's: selected first) and reads it back. */
  private async writeVector(event: number | 'config', vector: number): Promise<number> {
    const legacy = this.mode === 'legacy';
    if (event === 'config') {
      if (legacy) await this.setLegacy(LegacyReg.ConfigMsixVector, 2, vector);
      else await this.setCommon(CommonCfg.ConfigMsixVector, 2, vector);
      return this.readVector('config');
    }
    if (legacy) {
      await this.setLegacy(LegacyReg.QueueSelect, 2, event);
      await this.setLegacy(LegacyReg.QueueMsixVector, 2, vector);
      return this.legacyReg(LegacyReg.QueueMsixVector, 2);
    }
    await this.setCommon(CommonCfg.QueueSelect, 2, event);
    await this.setCommon(CommonCfg.QueueMsixVector, 2, vector);
    return this.common(CommonCfg.QueueMsixVector, 2);
  }

  /** At DRIVER_OK: every mapping still reads back, each queue's its own (pci.msi-x-vector-config.device.6). */
  private async checkBoundVectors(): Promise<void> {
    for (const [q, v] of this.queueVectorOf) {
      const read = await this.readVector(q);
      if (read !== v) this.deviceVerdict('pci.msi-x-vector-config.device.6', `queue ${q} was mapped to vector ${v} but queue_msix_vector now reads ${read}`, { queue: q, vector: v, read });
    }
  }

  async getDeviceFeatures(): Promise<bigint> {
    if (this.mode === 'legacy') return BigInt(await this.legacyReg(LegacyReg.HostFeatures, 4));
    const window = async (select: number) => {
      await this.setCommon(CommonCfg.DeviceFeatureSelect, 4, select);
      return this.common(CommonCfg.DeviceFeature, 4);
    };
    // Window 0, 1, 1 again, 0, 0 again: a device_feature that does not follow device_feature_select
    // (one that lags a select behind, or drifts) reads differently for the same window.
    const low = await window(0);
    const high = await window(1);
    const high2 = await window(1);
    const low2 = await window(0);
    const low3 = await window(0);
    if (high2 !== high || low2 !== low || low3 !== low) {
      this.deviceVerdict('pci.common-config-struct-layout.device.3', `device_feature does not follow device_feature_select: window 0 read 0x${low.toString(16)}, 0x${low2.toString(16)}, 0x${low3.toString(16)}; window 1 0x${high.toString(16)}, 0x${high2.toString(16)}`, { low, low2, low3, high, high2 });
    }
    const offered = (BigInt(high) << 32n) | BigInt(low);
    this.offered = offered;
    this.checkNotifyCap(offered);
    return offered;
  }

  /** The notification capability against what the device offers (4.1.4.4, pci.notif-cap.device.2-.4, .6-.8); once. */
  private checkNotifyCap(offered: bigint): void {
    if (this.notifyChecked) return;
    this.notifyChecked = true;
    const cap = this.capabilities.find((c) => c.cfgType === VirtioPciCap.Notify);
    if (cap === undefined) return;
    const m = this.notifyMultiplier;
    const pow2 = m !== 0 && (m & (m - 1)) === 0;
    if (offered & (1n << BigInt(Feature.NOTIFICATION_DATA))) {
      if (cap.offset % 4 !== 0) this.deviceVerdict('pci.notif-cap.device.7', `notification capability offset 0x${cap.offset.toString(16)} is not 4-byte aligned (VIRTIO_F_NOTIFICATION_DATA offered)`, { offset: cap.offset });
      if (m !== 0 && (!pow2 || m % 4 !== 0)) this.deviceVerdict('pci.notif-cap.device.6', `notify_off_multiplier ${m} is neither 0 nor a power of 2 that is a multiple of 4`, { multiplier: m });
      if (cap.length < 4) this.deviceVerdict('pci.notif-cap.device.8', `notification capability length ${cap.length} is less than 4`, { length: cap.length });
    } else {
      if (cap.offset % 2 !== 0) this.deviceVerdict('pci.notif-cap.device.2', `notification capability offset 0x${cap.offset.toString(16)} is not 2-byte aligned`, { offset: cap.offset });
      if (m !== 0 && (!pow2 || m < 2)) this.deviceVerdict('pci.notif-cap.device.3', `notify_off_multiplier ${m} is neither 0 nor an even power of 2`, { multiplier: m });
      if (cap.length < 2) this.deviceVerdict('pci.notif-cap.device.4', `notification capability length ${cap.length} is less than 2`, { length: cap.length });
    }
  }

  async setDriverFeatures(features: bigint): Promise<void> {
    this.accepted = features;
    if (this.mode === 'legacy') {
      await this.setLegacy(LegacyReg.GuestFeatures, 4, Number(features & 0xffffffffn));
      return;
    }
    const words = [Number(features & 0xffffffffn), Number((features >> 32n) & 0xffffffffn)];
    for (let w = 0; w < 2; w++) {
      await this.setCommon(CommonCfg.DriverFeatureSelect, 4, w);
      await this.setCommon(CommonCfg.DriverFeature, 4, words[w]);
    }
    // Read back: the valid bits written (those the device offers) must be there (device.4; device.5 lets others show).
    const offered = this.offered ?? 0n;
    for (let w = 0; w < 2; w++) {
      await this.setCommon(CommonCfg.DriverFeatureSelect, 4, w);
      const read = await this.common(CommonCfg.DriverFeature, 4);
      const valid = words[w] & Number((offered >> BigInt(32 * w)) & 0xffffffffn);
      if ((read & valid) >>> 0 !== valid >>> 0) {
        this.deviceVerdict('pci.common-config-struct-layout.device.4', `driver_feature window ${w} reads 0x${read.toString(16)} after the driver wrote 0x${words[w].toString(16)} (offered bits 0x${valid.toString(16)} must read back)`, { window: w, written: words[w], read });
      }
    }
  }

  /** A feature the driver accepted (its last write; the device's FEATURES_OK decides, the driver core checks that). */
  private acceptedFeature(bit: number): boolean {
    return this.accepted !== null && (this.accepted & (1n << BigInt(bit))) !== 0n;
  }

  /**
   * config_generation (4.1.4.3.1): the reads made between two equal generation reads are kept;
   * a later read of the same field with the same generation that differs means the device
   * changed its configuration without a new generation (pci.common-config-struct-layout.device.6).
   */
  async configGeneration(): Promise<number> {
    if (this.mode === 'legacy') return 0;
    const g = await this.common(CommonCfg.ConfigGeneration, 1);
    if (g !== this.configGen) {
      this.configGen = g;
      this.configSeen.clear();
    } else {
      for (const [key, value] of this.configPending) {
        const before = this.configSeen.get(key);
        if (before !== undefined && before !== value) {
          this.deviceVerdict('pci.common-config-struct-layout.device.6', `device configuration at ${key} changed from ${before} to ${value} while config_generation stayed ${g}`, { at: key, before: String(before), after: String(value), generation: g });
        }
        this.configSeen.set(key, value);
      }
    }
    this.configPending.length = 0;
    return g;
  }

  private get configStruct(): { s: Mapped | undefined; base: number } {
    if (this.mode === 'modern') return { s: this.structs.device, base: 0 };
    return { s: this.structs.legacy, base: this.msixVectors > 0 ? LEGACY_CONFIG.msix : LEGACY_CONFIG.plain };
  }

  /** pci.device-layout.driver.1/.2: natural widths; a 64-bit field as two 32-bit halves. */
  async readConfig(offset: number, size: 1 | 2 | 4 | 8): Promise<number | bigint> {
    const { s, base } = this.configStruct;
    let value: number | bigint;
    if (size === 8) {
      const low = await this.read(s, base + offset, 4);
      const high = await this.read(s, base + offset + 4, 4);
      value = (BigInt(high) << 32n) | BigInt(low);
    } else value = await this.read(s, base + offset, size);
    if (this.mode === 'modern') this.configPending.push([`${offset}/${size}`, value]);
    else if (size !== 8) await this.checkLegacyConfig(offset, size, Number(value));
    return value;
  }

  /**
   * The legacy interface's device configuration, the first time each field is read: byte by
   * byte it must read the same (pci.legacy-device-layout.device.2), and where the function also
   * has the modern device configuration structure, that must hold the same value at the same
   * offset (it is the same configuration, placed after the legacy header:
   * pci.legacy-device-layout.device.3). A mismatch is judged only when a second natural read
   * agrees with the first (the configuration did not just change).
   */
  private async checkLegacyConfig(offset: number, size: 1 | 2 | 4, value: number): Promise<void> {
    const key = `${offset}/${size}`;
    if (this.legacyChecked.has(key)) return;
    this.legacyChecked.add(key);
    const { s, base } = this.configStruct;
    let bytes = 0;
    for (let i = size - 1; i >= 0; i--) bytes = bytes * 256 + (await this.read(s, base + offset + i, 1));
    const modern = this.structs.device !== undefined && offset + size <= this.structs.device.length ? await this.read(this.structs.device, offset, size) : value;
    if (bytes === value && modern === value) return;
    if ((await this.read(s, base + offset, size)) !== value) return;
    if (bytes !== value) this.deviceVerdict('pci.legacy-device-layout.device.2', `legacy device configuration at ${offset} reads 0x${value.toString(16)} as ${size} bytes but 0x${bytes.toString(16)} byte by byte`, { offset, size, value, bytes });
    else this.deviceVerdict('pci.legacy-device-layout.device.3', `legacy device configuration at 0x${(base + offset).toString(16)} reads 0x${value.toString(16)}, the modern device configuration at ${offset} 0x${modern.toString(16)}: the legacy copy is not right after the legacy header`, { offset, value, modern });
  }

  async writeConfig(offset: number, size: 1 | 2 | 4 | 8, value: number | bigint): Promise<void> {
    const { s, base } = this.configStruct;
    this.configSeen.clear(); // the driver changed the configuration itself
    if (size === 8) {
      const v = BigInt(value);
      await this.write(s, base + offset, 4, Number(v & 0xffffffffn));
      await this.write(s, base + offset + 4, 4, Number(v >> 32n));
      return;
    }
    await this.write(s, base + offset, size, Number(value));
  }

  async numQueues(): Promise<number> {
    if (this.mode === 'modern') {
      const n = await this.common(CommonCfg.NumQueues, 2);
      await this.checkPastLastQueue(n);
      return n;
    }
    this.queueCount ??= await probeQueueCount((i) => this.queueMaxSize(i));
    return this.queueCount;
  }

  /**
   * Once, with the device's features known: the first index past num_queues is no queue, so
   * queue_size must read 0 there (pci.common-config-struct-layout.device.14); admin queues
   * (VIRTIO_F_ADMIN_VQ offered) live past num_queues, so not then.
   */
  private async checkPastLastQueue(n: number): Promise<void> {
    if (this.pastLastChecked || this.offered === null || (this.offered & (1n << BigInt(Feature.ADMIN_VQ))) !== 0n) return;
    this.pastLastChecked = true;
    await this.setCommon(CommonCfg.QueueSelect, 2, n);
    const size = await this.common(CommonCfg.QueueSize, 2);
    if (size !== 0) this.deviceVerdict('pci.common-config-struct-layout.device.14', `queue_size of queue ${n} (num_queues is ${n}) reads ${size}, not 0`, { queue: n, size });
  }

  async queueMaxSize(index: number): Promise<number> {
    if (this.mode === 'legacy') {
      await this.setLegacy(LegacyReg.QueueSelect, 2, index);
      return this.legacyReg(LegacyReg.QueueSize, 2);
    }
    const n = await this.common(CommonCfg.NumQueues, 2);
    if (index >= n) return 0;
    await this.checkPastLastQueue(n);
    await this.setCommon(CommonCfg.QueueSelect, 2, index);
    const size = await this.common(CommonCfg.QueueSize, 2);
    if (this.accepted !== null && !this.acceptedFeature(Feature.RING_PACKED) && (size & (size - 1)) !== 0) {
      // The driver core takes the power of two below it: safe.
      this.deviceVerdict('pci.common-config-struct-layout.device.15', `queue ${index}: queue_size ${size} is not a power of 2 (no VIRTIO_F_RING_PACKED)`, { queue: index, size });
    }
    return size;
  }

  /** Binds queue `index` to `vector` and reads it back (pci.msi-x-vector-config.driver.5); a refusal ends the setup. */
  private async bindQueueVector(index: number, vector: number): Promise<void> {
    const got = await this.writeVector(index, vector);
    if (got !== vector) {
      const elsewhere = this.configVector === vector || [...this.queueVectorOf.values()].includes(vector);
      this.vectorRefused(vector, got, `queue ${index}`, elsewhere);
      throw new PciError('msix', `the device refused MSI-X vector ${vector} for queue ${index}`);
    }
    this.queueVectorOf.set(index, vector);
    this.unmapped.delete(vector);
  }

  async setupQueue(index: number, size: number, addrs: RingAddresses): Promise<void> {
    const vector = this.vectorFor(index);
    const fresh = this.resetSeen && !this.setUpSinceReset.has(index);
    this.setUpSinceReset.add(index);
    if (this.mode === 'legacy') {
      await this.setLegacy(LegacyReg.QueueSelect, 2, index);
      if (this.msixVectors > 0) {
        const before = await this.legacyReg(LegacyReg.QueueMsixVector, 2);
        if (fresh && before !== VIRTIO_MSI_NO_VECTOR) this.deviceVerdict('pci.msi-x-vector-config.device.7', `queue ${index}: queue_msix_vector reads ${before} after a reset, not NO_VECTOR`, { queue: index, vector: before });
        await this.bindQueueVector(index, vector);
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
    if (fresh) {
      // What a reset left (4.1.4.3.2): the queue disabled, not resetting, unmapped.
      const enable = await this.common(CommonCfg.QueueEnable, 2);
      if (enable !== 0) this.deviceVerdict('pci.common-config-struct-layout.device.8', `queue ${index}: queue_enable reads ${enable} after a reset`, { queue: index, enable });
      if (this.acceptedFeature(Feature.RING_RESET)) {
        const r = await this.common(CommonCfg.QueueReset, 2);
        if (r !== 0) this.deviceVerdict('pci.common-config-struct-layout.device.9', `queue ${index}: queue_reset reads ${r} after a reset (VIRTIO_F_RING_RESET)`, { queue: index, reset: r });
      }
      if (this.msixVectors > 0) {
        const v = await this.common(CommonCfg.QueueMsixVector, 2);
        if (v !== VIRTIO_MSI_NO_VECTOR) this.deviceVerdict('pci.msi-x-vector-config.device.7', `queue ${index}: queue_msix_vector reads ${v} after a reset, not NO_VECTOR`, { queue: index, vector: v });
      }
    }
    await this.setCommon(CommonCfg.QueueSize, 2, size);
    if (this.msixVectors > 0) {
      await this.bindQueueVector(index, vector);
    }
    const fields = [
      [CommonCfg.QueueDesc, addrs.desc],
      [CommonCfg.QueueDriver, addrs.avail],
      [CommonCfg.QueueDevice, addrs.used],
    ] as const;
    for (const [field, addr] of fields) {
      await this.setCommon(field, 4, addr % 2 ** 32);
      await this.setCommon(field + 4, 4, Math.floor(addr / 2 ** 32));
    }
    // Each 32-bit half read back: a device that does not keep the halves apart would have the device use other rings.
    for (const [field, addr] of fields) {
      const low = await this.common(field, 4);
      const high = await this.common(field + 4, 4);
      if (low !== addr % 2 ** 32 || high !== Math.floor(addr / 2 ** 32)) {
        this.deviceVerdict('pci.device-layout.device.1', `queue ${index}: the 64-bit field at 0x${field.toString(16)} reads 0x${high.toString(16)}:${low.toString(16).padStart(8, '0')} after its halves were written as 0x${addr.toString(16)}`, { queue: index, field, addr });
        throw new PciError('no-interface', `queue ${index}: the device does not keep the ring address written (pci.device-layout.device.1)`);
      }
    }
    const off = await this.common(CommonCfg.QueueNotifyOff, 2);
    const data = this.offered !== null && (this.offered & (1n << BigInt(Feature.NOTIFICATION_DATA))) !== 0n;
    const notify = this.structs.notify;
    if (notify !== undefined && off * this.notifyMultiplier + (data ? 4 : 2) > notify.length) {
      // The notification then lands past the capability; the driver still writes it (the BAR decodes it or drops it).
      this.deviceVerdict(data ? 'pci.notif-cap.device.9' : 'pci.notif-cap.device.5', `queue ${index}: queue_notify_off ${off} * multiplier ${this.notifyMultiplier} + ${data ? 4 : 2} exceeds the notification capability length ${notify.length}`, { queue: index, off, length: notify.length });
    }
    this.notifyAddr.set(index, off * this.notifyMultiplier);
  }

  async enableQueue(index: number): Promise<void> {
    if (this.mode === 'legacy') return; // the queue address enabled it
    await this.setCommon(CommonCfg.QueueSelect, 2, index);
    await this.setCommon(CommonCfg.QueueEnable, 2, 1);
    this.enabled.add(index);
    if (this.acceptedFeature(Feature.RING_RESET)) {
      const r = await this.common(CommonCfg.QueueReset, 2);
      if (r !== 0) this.deviceVerdict('pci.common-config-struct-layout.device.10', `queue ${index}: queue_reset reads ${r} after the queue was enabled`, { queue: index, reset: r });
    }
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

  /**
   * Writes 1 to queue_reset and looks at once: a queue that reads reset done (0) but still
   * enabled was not reset at all (pci.common-config-struct-layout.device.11).
   */
  async resetQueue(index: number): Promise<void> {
    this.enabled.delete(index);
    await this.setCommon(CommonCfg.QueueSelect, 2, index);
    await this.setCommon(CommonCfg.QueueReset, 2, 1);
    const pending = await this.common(CommonCfg.QueueReset, 2);
    if (pending !== 0) {
      this.queueResets.set(index, 'pending');
      return;
    }
    if ((await this.common(CommonCfg.QueueEnable, 2)) !== 0) {
      this.deviceVerdict('pci.common-config-struct-layout.device.11', `queue ${index}: after a write of 1 to queue_reset, queue_reset reads 0 and queue_enable still 1`, { queue: index });
      this.queueResets.set(index, 'judged');
    }
  }

  /**
   * pci.common-config-struct-layout.driver.7: complete only when queue_reset reads 0. Once it
   * does, queue_enable must read 0 (device.13) and queue_reset must stay 0 (a 1 again means the
   * reset was still going on: device.12; the driver waits on).
   */
  async queueResetPending(index: number): Promise<boolean> {
    await this.setCommon(CommonCfg.QueueSelect, 2, index);
    if ((await this.common(CommonCfg.QueueReset, 2)) !== 0) {
      if (!this.queueResets.has(index)) this.queueResets.set(index, 'pending');
      return true;
    }
    const state = this.queueResets.get(index);
    this.queueResets.delete(index);
    if (state === 'judged') return false;
    if ((await this.common(CommonCfg.QueueEnable, 2)) !== 0 && state === 'pending') {
      this.deviceVerdict('pci.common-config-struct-layout.device.13', `queue ${index}: queue_reset reads 0 (reset done) but queue_enable still reads 1`, { queue: index });
      return false;
    }
    if ((await this.common(CommonCfg.QueueReset, 2)) !== 0) {
      this.deviceVerdict('pci.common-config-struct-layout.device.12', `queue ${index}: queue_reset read 0, then 1 again with no new write: the reset was still going on`, { queue: index });
      this.queueResets.set(index, 'pending');
      return true;
    }
    return false;
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
      const was = this.bus.orderedInterrupts === true ? this.unmapped.get(vector) : undefined;
      if (was !== undefined && vector !== this.configVector && ![...this.queueVectorOf.values()].includes(vector)) {
        // Messages arrive in order with register replies: this one was sent after the device read back NO_VECTOR.
        if (was === 'queue') this.deviceVerdict('pci.used-buffer-notif.device.1', `an MSI-X message on vector ${vector}, which only a queue used, after the driver unmapped it (NO_VECTOR)`, { vector });
        else this.deviceVerdict('pci.notif-of-device-config-changes.device.1', `an MSI-X message on vector ${vector}, the configuration vector, after the driver unmapped it (NO_VECTOR)`, { vector });
        return;
      }
      // pci.notif-of-device-config-changes.driver.1: one vector may mean both a configuration change and used buffers.
      for (const [q, v] of this.queueVectorOf) if (v === vector && this.enabled.has(q)) this.events?.used(q);
      if (vector === this.configVector) this.events?.config();
      return;
    }
    if (irq.level) this.intx.trigger();
  }

  /**
   * INTx: read (and so clear) the ISR, then hand its events to the driver. The PCI status
   * register is read first: its Interrupt bit set while the ISR then reads 0 (nothing else
   * reads the ISR meanwhile) breaks pci.isr-status-cap.device.4.
   */
  private readonly intx = new InterruptServicer(async () => {
    const epoch = this.resetEpoch;
    const status = this.msixVectors === 0 ? await this.bus.configRead(PciCfg.Status, 2) : 0;
    const isr = await this.readIsr();
    if (isr === 0 && status & PciStatus.Interrupt && epoch === this.resetEpoch) {
      this.deviceVerdict('pci.isr-status-cap.device.4', 'the PCI status Interrupt bit was set but the ISR read 0 (MSI-X off)', { status });
    }
    if (isr & ISR_QUEUE) for (const q of this.enabled) this.events?.used(q);
    if (isr & ISR_CONFIG) this.events?.config();
  });

  /**
   * Unmaps the vectors still mapped, as Linux's virtio_pci does when it lets a device go, and
   * reads each back: it must read NO_VECTOR (pci.msi-x-vector-config.device.5). After a reset
   * there is nothing to unmap. From then on a message on a vector only an unmapped event used
   * is the device interrupting for an event with NO_VECTOR (see onInterrupt).
   */
  async close(): Promise<void> {
    this.events = null;
    if (this.msixVectors === 0) return;
    try {
      for (const [q, v] of [...this.queueVectorOf]) {
        const read = await this.writeVector(q, VIRTIO_MSI_NO_VECTOR);
        this.queueVectorOf.delete(q);
        if (read !== VIRTIO_MSI_NO_VECTOR) this.deviceVerdict('pci.msi-x-vector-config.device.5', `queue ${q}: queue_msix_vector reads ${read} after the driver unmapped it`, { queue: q, read });
        else this.unmapped.set(v, 'queue');
      }
      const cv = this.configVector;
      if (cv !== VIRTIO_MSI_NO_VECTOR) {
        const read = await this.writeVector('config', VIRTIO_MSI_NO_VECTOR);
        this.configVector = VIRTIO_MSI_NO_VECTOR;
        if (read !== VIRTIO_MSI_NO_VECTOR) this.deviceVerdict('pci.msi-x-vector-config.device.5', `config_msix_vector reads ${read} after the driver unmapped it`, { read });
        else this.unmapped.set(cv, 'config');
      }
    } catch {
      // The bus went away: nothing to unmap.
    }
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
