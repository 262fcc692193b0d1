/**
 * The device side of virtio over PCI (spec 4.1): a PCI function an emulator puts on its bus.
 * The emulator forwards configuration space accesses to {@link VirtioPciDevice.configRead} /
 * {@link VirtioPciDevice.configWrite} and accesses inside a BAR (at the address the guest
 * programmed, see {@link VirtioPciDevice.barAddress}) to {@link VirtioPciDevice.barRead} /
 * {@link VirtioPciDevice.barWrite}; it wires INTx and MSI-X delivery. The model drives a
 * {@link VirtioDevice} (any device type, unchanged) as the loopback transport does.
 *
 * What the function has:
 * - a type 0 header with virtio's ids (modern 0x1040 + id, or transitional ids, revision 0 and
 *   the subsystem id of the device type, 4.1.2);
 * - the capability list: MSI-X, then the virtio structures (common, notify with
 *   `notify_off_multiplier`, ISR, device configuration, the PCI configuration access one);
 * - the virtio structures in one BAR, memory (32 or 64-bit) or I/O as the embedder chooses;
 * - the MSI-X table and PBA in their own memory BAR, config and per-queue vectors,
 *   VIRTIO_MSI_NO_VECTOR; INTx through the ISR and the status register's interrupt bit;
 * - for transitional devices the legacy I/O layout in BAR0 (4.1.4.8).
 *
 * A guest access the spec forbids is a monitor verdict with its `pci.` clause and a defined
 * effect (reads give 0, writes are ignored unless said otherwise); nothing throws.
 *
 * Browser-safe: no Node import.
 */
import type { DeviceHost, VirtioDevice } from '../../device/device.js';
import { ConfigReadWatch } from '../../device/config-watch.js';
import type { GuestMemory } from '../../memory/guest-memory.js';
import { VirtioTsError } from '../../errors.js';
import { Feature } from '../../spec/constants.js';
import {
  COMMON_CFG_SIZE,
  COMMON_FIELDS,
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
  TRANSITIONAL_DEVICE_IDS,
  VIRTIO_MSI_NO_VECTOR,
  VIRTIO_PCI_MODERN_BASE,
  VIRTIO_PCI_VENDOR,
  VirtioPciCap,
} from './layout.js';

/** What went wrong in the PCI layer (PciError's `kind`). */
export type PciErrorKind = 'bad-option' | 'not-virtio' | 'no-interface' | 'bar-space' | 'msix';

/**
 * The virtio-pci layer's one error: an embedder option that cannot work (`bad-option`: an I/O
 * BAR too small for the structures, a transitional id for a type that has none), or on the
 * driver side a function that is no usable virtio device (`not-virtio`, `no-interface`), BARs
 * that do not fit the bus's windows (`bar-space`), or an MSI-X mapping the device refused
 * (`msix`). Nothing a guest driver does throws: that is a verdict.
 */
export class PciError extends VirtioTsError<PciErrorKind> {}

/** One BAR of the function: its index, kind and size (the embedder maps it where the guest programs it). */
export interface PciBarInfo {
  index: number;
  kind: 'io' | 'memory';
  /** A 64-bit memory BAR (uses the next BAR register for the high half). */
  is64: boolean;
  size: number;
  /** What it holds. */
  holds: 'legacy' | 'msix' | 'virtio';
}

/** How a {@link VirtioPciDevice} is set up. */
export interface PciDeviceOptions {
  /** Transitional: also the legacy I/O interface in BAR0, transitional ids (default false). */
  transitional?: boolean;
  /** Where the virtio structures live: a 64-bit memory BAR (default), a 32-bit one, or an I/O BAR. */
  virtioBar?: 'memory64' | 'memory' | 'io';
  /** MSI-X table size (default: one vector per queue plus one for configuration changes; 0: no MSI-X). */
  msixVectors?: number;
  /** notify_off_multiplier (default 4; 0 puts every queue's notification at one address). */
  notifyOffMultiplier?: number;
  /** The INTx pin's level changed (INTA#). */
  intx?: (level: boolean) => void;
  /** An MSI-X message: the guest-physical address and data the driver programmed in the table. */
  msi?: (address: number, data: number) => void;
  /**
   * Also list capabilities a driver must pass over (default false; memory BARs only): a second
   * common configuration capability, after the first, over a mirror of the structure (4.1.4: a
   * driver should use the first instance), and one of a reserved cfg_type over a region of its
   * own (a driver must skip it). A driver that uses either region gets a verdict
   * (pci.virtio-struct-pci-capabilities.driver.2, .1). For testing drivers: it is how the device
   * can see which capabilities they took.
   */
  decoyCapabilities?: boolean;
}

/** cfg_type 7: reserved (4.1.4: 1-5, 8 and 9 are defined), for {@link PciDeviceOptions.decoyCapabilities}. */
const RESERVED_CFG_TYPE = 7;

/** Where the virtio structures are inside the virtio BAR. */
interface Region {
  offset: number;
  length: number;
}

/** The virtio structures in the virtio BAR, in the order accesses look for them (hoisted: the notify path allocates nothing). */
const REGION_NAMES = ['notify', 'common', 'isr', 'device'] as const;

const MSIX_ENABLE = 0x8000;
const MSIX_FUNCTION_MASK = 0x4000;

/** Class codes QEMU gives virtio functions (so guests file them where they expect). */
function classCode(deviceId: number): number {
  switch (deviceId) {
    case 1:
      return 0x020000; // network
    case 2:
      return 0x010000; // mass storage (SCSI), as QEMU's virtio-blk
    case 3:
      return 0x078000; // communication, other
    default:
      return 0xff0000;
  }
}

/** An emulator's value as a bigint (a non-finite number is 0). */
const toBigInt = (value: number | bigint): bigint => (typeof value === 'bigint' ? value : Number.isFinite(value) ? BigInt(Math.trunc(value)) : 0n);

const pow2 = (n: number) => 2 ** Math.ceil(Math.log2(Math.max(1, n)));
const align = (n: number, a: number) => Math.ceil(n / a) * a;

/**
 * A virtio device as a PCI function. See the module documentation; in short:
 *
 * ```ts
 * const pci = new VirtioPciDevice(new BlkDevice({ storage }), memory, { msi: (addr, data) => apic.msi(addr, data), intx: (l) => pic.set(11, l) });
 * // config space: pci.configRead(off, size) / pci.configWrite(off, size, v)
 * // BAR i, once the guest mapped it at pci.barAddress(i): pci.barRead(i, off, size) / pci.barWrite(i, off, size, v)
 * ```
 */
export class VirtioPciDevice implements DeviceHost {
  readonly transitional: boolean;
  readonly bars: readonly PciBarInfo[];
  /** MSI-X table size (0: no MSI-X capability). */
  readonly msixVectors: number;
  readonly notifyOffMultiplier: number;
  /** Accesses served: configuration space, BAR reads and writes; interrupts sent (INTx rising edges, MSI-X messages). */
  readonly counts = { config: 0, reads: 0, writes: 0, intx: 0, msi: 0 };

  private readonly cfg = new Uint8Array(256);
  private readonly cfgView = new DataView(this.cfg.buffer);
  private intxLine: (level: boolean) => void;
  private msiLine: (address: number, data: number) => void;
  private readonly virtioBarIndex: number;
  private readonly msixBarIndex: number;
  private readonly regions: { common: Region; isr: Region; device: Region; notify: Region };
  /** The regions of the decoy capabilities (null: none listed). */
  private readonly decoys: { mirror: Region; reserved: Region; reported: { mirror: boolean; reserved: boolean } } | null;
  private readonly caps: { msix: number; common: number; notify: number; isr: number; device: number; pciCfg: number; decoys: number[] };
  private readonly msixTable: DataView;
  private readonly pba: Uint8Array;
  private readonly pbaOffset: number;

  private isr = 0;
  private intxLevel = false;
  private legacyActive = false;
  private deviceFeatureSel = 0;
  private driverFeatureSel = 0;
  private driverFeatures = 0n;
  private queueSel = 0;
  private configVector = VIRTIO_MSI_NO_VECTOR;
  private readonly queueVector: number[] = [];
  private readonly queueSize: number[] = [];
  /** Per queue: which of queue_desc / queue_driver / queue_device the driver wrote (bits 0-2). */
  private readonly queueFieldsWritten: number[] = [];
  private readonly queuePfn: number[] = [];
  /** Queues reset with queue_reset that the driver has not read back yet (pci.common-config-struct-layout.driver.7). */
  private readonly resetPending = new Set<number>();
  /** The driver's configuration reads against config_generation (basic.config.driver.2). */
  private readonly configWatch: ConfigReadWatch;
  /** The driver wrote 0 to device_status and has not read it back yet (driver.5). */
  private resetUnconfirmed = false;
  /** What the driver did that later accesses are judged by (pci.msi-x-vector-config.driver.5, pci.legacy-device-layout*.driver.*). */
  private readonly seen = {
    /** The driver read the capabilities pointer: it searched the capability list. */
    capabilityList: false,
    /** The modern structures were reached once without that search (one verdict). */
    unsearchedReported: false,
    /** A vector mapping written and not read back yet: the config vector (-1) or a queue's. */
    vectorReadBack: null as number | null,
    /** The driver set status, features or a queue through the legacy I/O BAR since the last reset. */
    legacySession: false,
  };

  /** Makes the function for `device` over `memory` (the device is attached now). */
  constructor(
    readonly device: VirtioDevice,
    readonly memory: GuestMemory,
    options: PciDeviceOptions = {},
  ) {
    this.transitional = options.transitional ?? false;
    this.configWatch = new ConfigReadWatch(device);
    const id = device.deviceId;
    if (this.transitional && TRANSITIONAL_DEVICE_IDS[id] === undefined) throw new PciError('bad-option', `device type ${id} has no transitional PCI device id`);
    const nq = device.numQueues;
    this.msixVectors = options.msixVectors ?? nq + 1;
    if (!Number.isInteger(this.msixVectors) || this.msixVectors < 0 || this.msixVectors > 0x800) throw new PciError('bad-option', `msixVectors ${this.msixVectors}: 0 to 2048`);
    this.notifyOffMultiplier = options.notifyOffMultiplier ?? 4;
    const m = this.notifyOffMultiplier;
    // pci.notif-cap.device.6: with NOTIFICATION_DATA offered, a power of 2 that is a multiple of 4 (or 0).
    if (m !== 0 && (m < 4 || (m & (m - 1)) !== 0)) throw new PciError('bad-option', `notifyOffMultiplier ${m}: 0 or a power of 2 of at least 4`);
    this.intxLine = options.intx ?? (() => undefined);
    this.msiLine = options.msi ?? (() => undefined);

    // ---- the virtio BAR's structures (pci.common-config-struct-layout.device.1, pci.device-specific-config.device.1: 4-byte aligned)
    const kind = options.virtioBar ?? 'memory64';
    const configLength = align(device.config.length, 4);
    const notifyLength = m === 0 ? 4 : nq * m + 4; // pci.notif-cap.device.8/.9: room for a 32-bit write at every queue's offset
    let size: number;
    if (kind === 'io') {
      const common = { offset: 0, length: COMMON_CFG_SIZE };
      const isr = { offset: COMMON_CFG_SIZE, length: 4 };
      const dev = { offset: COMMON_CFG_SIZE + 4, length: configLength };
      const notify = { offset: align(dev.offset + configLength, 4), length: notifyLength };
      this.regions = { common, isr, device: dev, notify };
      size = pow2(notify.offset + notify.length);
      if (size > 256) throw new PciError('bad-option', `the virtio structures need ${size} bytes of I/O space: more than an I/O BAR's 256 (use a memory BAR)`);
    } else {
      this.regions = { common: { offset: 0, length: COMMON_CFG_SIZE }, isr: { offset: 0x1000, length: 4 }, device: { offset: 0x2000, length: configLength }, notify: { offset: 0x3000, length: notifyLength } };
      size = pow2(0x3000 + Math.max(0x1000, notifyLength));
    }
    if (options.decoyCapabilities === true && kind === 'io') throw new PciError('bad-option', 'decoyCapabilities needs a memory BAR for the virtio structures');
    // Between the common configuration (at 0) and the ISR (at 0x1000): no structure there.
    this.decoys = options.decoyCapabilities === true ? { mirror: { offset: 0x800, length: COMMON_CFG_SIZE }, reserved: { offset: 0xc00, length: 0x100 }, reported: { mirror: false, reserved: false } } : null;
    const bars: PciBarInfo[] = [];
    if (this.transitional) {
      // pci.legacy-device-layout.device.1 / pci.legacy-device-layout-detection.device.1: the legacy layout in BAR0, I/O.
      const legacySize = pow2(LEGACY_CONFIG.msix + device.config.length);
      bars.push({ index: 0, kind: 'io', is64: false, size: Math.max(32, legacySize), holds: 'legacy' });
    }
    this.msixBarIndex = -1;
    this.pbaOffset = align(16 * this.msixVectors, 8);
    if (this.msixVectors > 0) {
      this.msixBarIndex = 1;
      bars.push({ index: 1, kind: 'memory', is64: false, size: Math.max(4096, pow2(this.pbaOffset + 8 * Math.ceil(this.msixVectors / 64))), holds: 'msix' });
    }
    this.virtioBarIndex = kind === 'io' ? 2 : 4;
    bars.push({ index: this.virtioBarIndex, kind: kind === 'io' ? 'io' : 'memory', is64: kind === 'memory64', size, holds: 'virtio' });
    this.bars = bars;
    this.msixTable = new DataView(new ArrayBuffer(16 * this.msixVectors));
    this.pba = new Uint8Array(8 * Math.ceil(this.msixVectors / 64));

    // ---- configuration space header
    const c = this.cfgView;
    c.setUint16(PciCfg.VendorId, VIRTIO_PCI_VENDOR, true);
    c.setUint16(PciCfg.DeviceId, this.transitional ? TRANSITIONAL_DEVICE_IDS[id] : VIRTIO_PCI_MODERN_BASE + id, true);
    c.setUint16(PciCfg.Status, PciStatus.CapList, true);
    // pci.legacy-device-discovery.device.1 / pci.device-discovery.device.5: revision 0 transitional, 1 modern.
    c.setUint8(PciCfg.Revision, this.transitional ? 0 : 1);
    const cls = classCode(id);
    c.setUint8(0x09, cls & 0xff);
    c.setUint8(0x0a, (cls >> 8) & 0xff);
    c.setUint8(0x0b, (cls >> 16) & 0xff);
    c.setUint16(PciCfg.SubsystemVendorId, VIRTIO_PCI_VENDOR, true);
    // pci.legacy-device-discovery.device.2: the virtio device id; modern: 0x40 or more (pci.device-discovery.device.6).
    c.setUint16(PciCfg.SubsystemId, this.transitional ? id : 0x1100, true);
    c.setUint8(PciCfg.InterruptPin, 1);
    for (const b of bars) this.writeBarRegister(b.index, 0);

    // ---- capability list
    let at = 0x40;
    let prev = PciCfg.CapabilitiesPointer;
    const link = (len: number) => {
      const here = at;
      this.cfg[prev] = here;
      prev = here + 1;
      at = align(at + len, 4);
      return here;
    };
    let msix = -1;
    if (this.msixVectors > 0) {
      msix = link(12);
      c.setUint8(msix, PciCapId.MsiX);
      c.setUint16(msix + 2, this.msixVectors - 1, true);
      c.setUint32(msix + 4, 0 | this.msixBarIndex, true);
      c.setUint32(msix + 8, this.pbaOffset | this.msixBarIndex, true);
    }
    const vcap = (type: number, len: number, region: Region | null) => {
      const here = link(len);
      c.setUint8(here, PciCapId.Vendor);
      c.setUint8(here + CapField.Len, len); // pci.virtio-struct-pci-capabilities.device.1
      c.setUint8(here + CapField.CfgType, type);
      if (region !== null) {
        c.setUint8(here + CapField.Bar, this.virtioBarIndex);
        c.setUint32(here + CapField.Offset, region.offset, true);
        c.setUint32(here + CapField.Length, region.length, true);
      }
      return here;
    };
    const common = vcap(VirtioPciCap.Common, 16, this.regions.common);
    const notify = vcap(VirtioPciCap.Notify, 20, this.regions.notify);
    c.setUint32(notify + CapField.NotifyMultiplier, m, true);
    const isr = vcap(VirtioPciCap.Isr, 16, this.regions.isr);
    const devCap = configLength > 0 ? vcap(VirtioPciCap.Device, 16, this.regions.device) : -1;
    const pciCfg = vcap(VirtioPciCap.PciCfg, 20, null);
    const decoyCaps: number[] = [];
    if (this.decoys !== null) decoyCaps.push(vcap(VirtioPciCap.Common, 16, this.decoys.mirror), vcap(RESERVED_CFG_TYPE, 16, this.decoys.reserved));
    this.caps = { msix, common, notify, isr, device: devCap, pciCfg, decoys: decoyCaps };
    this.resetTransport();
    device.attach(memory, this);
  }

  // ---------------------------------------------------------------- DeviceHost

  readonly synchronous = false;
  /** The notify structure takes 32-bit writes with the 2.9 value (pci.avail-buffer-notif.driver.2). */
  readonly notificationData = true;
  /** The driver uses the legacy I/O interface (the last status or feature write came through BAR0). */
  get legacy(): boolean {
    return this.legacyActive;
  }
  /**
   * The modern interface judges the read-back after a reset itself (writeStatus:
   * pci.common-config-struct-layout.driver.5, the PCI MUST of basic.reset.driver.1's SHOULD);
   * over the legacy I/O interface the core's basic.reset.driver.1 check stands.
   */
  get checksResetReadBack(): boolean {
    return !this.legacyActive;
  }

  /** Used-buffer notification: the queue's MSI-X vector, or ISR bit 0 and INTx (pci.isr-status-cap.device.3). */
  interrupt(index: number): void {
    this.isr |= ISR_QUEUE;
    if (this.msixEnabled) this.sendVector(this.queueVector[index] ?? VIRTIO_MSI_NO_VECTOR);
    else this.updateIntx();
  }

  /** Configuration change: ISR bit 1 first (pci.isr-status-cap.device.2), then the config vector or INTx. */
  configChanged(): void {
    this.isr |= ISR_CONFIG;
    if (this.msixEnabled) this.sendVector(this.configVector);
    else this.updateIntx();
  }

  /**
   * Connects (or replaces) the interrupt outputs after construction (a bus made after the
   * device). The INTx level is told at once.
   */
  connectInterrupts(lines: { intx?: (level: boolean) => void; msi?: (address: number, data: number) => void }): void {
    if (lines.intx !== undefined) {
      this.intxLine = lines.intx;
      if (this.intxLevel) lines.intx(true);
    }
    if (lines.msi !== undefined) this.msiLine = lines.msi;
  }

  // ---------------------------------------------------------------- interrupts

  private get msixControl(): number {
    return this.caps.msix < 0 ? 0 : this.cfgView.getUint16(this.caps.msix + 2, true);
  }

  /** MSI-X is enabled in its capability (the function then does not use INTx). */
  get msixEnabled(): boolean {
    return (this.msixControl & MSIX_ENABLE) !== 0;
  }

  /** Whether INTx is asserted now (ISR non-zero, MSI-X off, not disabled in the command register). */
  get intx(): boolean {
    return this.intxLevel;
  }

  private updateIntx(): void {
    const command = this.cfgView.getUint16(PciCfg.Command, true);
    const level = this.isr !== 0 && !this.msixEnabled && (command & PciCommand.IntxDisable) === 0;
    if (level === this.intxLevel) return;
    this.intxLevel = level;
    if (level) this.counts.intx++;
    this.intxLine(level);
  }

  /** pci.used-buffer-notif.device.1 / pci.notif-of-device-config-changes.device.1: NO_VECTOR sends nothing. */
  private sendVector(vector: number): void {
    if (vector === VIRTIO_MSI_NO_VECTOR || vector >= this.msixVectors) return;
    const masked = (this.msixControl & MSIX_FUNCTION_MASK) !== 0 || (this.msixTable.getUint32(vector * 16 + 12, true) & 1) !== 0;
    if (masked) {
      this.pba[vector >> 3] |= 1 << (vector & 7);
      return;
    }
    this.fire(vector);
  }

  private fire(vector: number): void {
    const t = this.msixTable;
    const address = t.getUint32(vector * 16 + 4, true) * 2 ** 32 + t.getUint32(vector * 16, true);
    this.counts.msi++;
    this.msiLine(address, t.getUint32(vector * 16 + 8, true));
  }

  /** Sends what the PBA holds for vectors no longer masked. */
  private flushPending(): void {
    if (!this.msixEnabled || this.msixControl & MSIX_FUNCTION_MASK) return;
    for (let v = 0; v < this.msixVectors; v++) {
      if (this.pba[v >> 3] & (1 << (v & 7)) && !(this.msixTable.getUint32(v * 16 + 12, true) & 1)) {
        this.pba[v >> 3] &= ~(1 << (v & 7));
        this.fire(v);
      }
    }
  }

  /** Reads and clears the ISR (pci.isr-status-cap.device.5). */
  private readIsr(): number {
    if (this.msixEnabled && !this.legacyActive) {
      // With MSI-X each vector says what happened: reading the ISR there is a wasted (and slow) access.
      this.violation('pci.isr-status-cap.driver.1', 'driver read the ISR status while MSI-X is enabled', {});
    }
    const v = this.isr;
    this.isr = 0;
    this.updateIntx();
    return v;
  }

  // ---------------------------------------------------------------- configuration space

  /** Where the guest mapped BAR `index` (0 until it programs one; I/O BARs give the port). */
  barAddress(index: number): number {
    const b = this.bars.find((x) => x.index === index);
    if (b === undefined) return 0;
    const low = this.cfgView.getUint32(PciCfg.Bar0 + 4 * index, true);
    const high = b.is64 ? this.cfgView.getUint32(PciCfg.Bar0 + 4 * index + 4, true) : 0;
    return high * 2 ** 32 + ((low & (b.kind === 'io' ? 0xfffffffc : 0xfffffff0)) >>> 0);
  }

  /** Whether the command register lets the guest reach BAR `index` now (I/O or memory decoding on). */
  barEnabled(index: number): boolean {
    const b = this.bars.find((x) => x.index === index);
    if (b === undefined) return false;
    const command = this.cfgView.getUint16(PciCfg.Command, true);
    return (command & (b.kind === 'io' ? PciCommand.Io : PciCommand.Memory)) !== 0;
  }

  /** The function's configuration space: a read of 1, 2 or 4 bytes at `offset` (0-255). */
  configRead(offset: number, size: number): number {
    this.counts.config++;
    if (!(size === 1 || size === 2 || size === 4) || offset < 0 || offset + size > 256 || offset % size !== 0) return 0;
    const c = this.cfgView;
    // pci.isr-status-cap.device.4: the status register's interrupt bit follows the ISR while MSI-X is off.
    const status = (c.getUint16(PciCfg.Status, true) & ~PciStatus.Interrupt) | (this.isr !== 0 && !this.msixEnabled ? PciStatus.Interrupt : 0);
    c.setUint16(PciCfg.Status, status, true);
    if (offset <= PciCfg.CapabilitiesPointer && offset + size > PciCfg.CapabilitiesPointer) this.seen.capabilityList = true;
    const data = this.caps.pciCfg + CapField.PciCfgData;
    if (offset < data + 4 && offset + size > data) this.pciCfgAccess(null);
    return size === 1 ? c.getUint8(offset) : size === 2 ? c.getUint16(offset, true) : c.getUint32(offset, true);
  }

  /** A write of 1, 2 or 4 bytes at `offset` of configuration space. Read-only bits stay. */
  configWrite(offset: number, size: number, value: number): void {
    this.counts.config++;
    value = Number(BigInt.asUintN(32, toBigInt(value)));
    if (!(size === 1 || size === 2 || size === 4) || offset < 0 || offset + size > 256 || offset % size !== 0) return;
    const dw = offset & ~3;
    const shift = (offset - dw) * 8;
    const mask = (size === 4 ? 0xffffffff : ((1 << (size * 8)) - 1) << shift) >>> 0;
    const old = this.cfgView.getUint32(dw, true);
    const merged = ((old & ~mask) | ((value << shift) & mask)) >>> 0;
    this.writeDword(dw, merged, offset, size);
  }

  private writeDword(dw: number, v: number, offset: number, size: number): void {
    const c = this.cfgView;
    if (dw === PciCfg.Command) {
      // Command: I/O, memory, bus master, INTx disable; the status half is read-only / write-1-to-clear (nothing to clear here).
      const keep = PciCommand.Io | PciCommand.Memory | PciCommand.BusMaster | PciCommand.IntxDisable;
      c.setUint16(PciCfg.Command, v & keep, true);
      this.updateIntx();
      return;
    }
    if (dw >= PciCfg.Bar0 && dw < PciCfg.Bar0 + 24) {
      this.writeBarRegister((dw - PciCfg.Bar0) / 4, v);
      return;
    }
    if (dw === PciCfg.InterruptLine) {
      c.setUint8(PciCfg.InterruptLine, v & 0xff);
      return;
    }
    const caps = this.caps;
    if (caps.msix >= 0 && dw === caps.msix) {
      const before = this.msixEnabled;
      const control = (c.getUint16(caps.msix + 2, true) & ~(MSIX_ENABLE | MSIX_FUNCTION_MASK)) | ((v >>> 16) & (MSIX_ENABLE | MSIX_FUNCTION_MASK));
      c.setUint16(caps.msix + 2, control, true);
      if (before !== this.msixEnabled) this.updateIntx();
      this.flushPending();
      return;
    }
    if (dw >= caps.pciCfg + CapField.Bar && dw < caps.pciCfg + 20) {
      // VIRTIO_PCI_CAP_PCI_CFG: bar, offset, length and data are the driver's to write.
      if (dw === caps.pciCfg + CapField.Bar) c.setUint8(caps.pciCfg + CapField.Bar, v & 0xff);
      else c.setUint32(dw, v, true);
      if (dw === caps.pciCfg + CapField.PciCfgData) this.pciCfgAccess(v);
      return;
    }
    for (const at of [caps.common, caps.notify, caps.isr, caps.device, caps.pciCfg, ...caps.decoys]) {
      if (at >= 0 && offset < at + this.cfg[at + CapField.Len] && offset + size > at) {
        this.violation('pci.virtio-struct-pci-capabilities.driver.8', `driver wrote ${size} byte(s) at configuration offset 0x${offset.toString(16)}, inside a virtio capability`, { offset, size });
        return;
      }
    }
    // Every other register is read-only: the write is ignored.
  }

  private writeBarRegister(index: number, v: number): void {
    const c = this.cfgView;
    const reg = PciCfg.Bar0 + 4 * index;
    const bar = this.bars.find((b) => b.index === index);
    const upper = this.bars.find((b) => b.is64 && b.index + 1 === index);
    if (upper !== undefined) {
      // The high half of a 64-bit BAR: every bit of the address is writable beyond the size.
      const sizeHigh = Math.floor((upper.size - 1) / 2 ** 32);
      c.setUint32(reg, (v & ~sizeHigh) >>> 0, true);
      return;
    }
    if (bar === undefined) {
      c.setUint32(reg, 0, true); // unimplemented: reads 0, so sizing finds nothing
      return;
    }
    const flags = bar.kind === 'io' ? 1 : bar.is64 ? 4 : 0;
    const low = bar.kind === 'io' ? 3 : 15;
    c.setUint32(reg, ((v & ~(bar.size - 1) & ~low) | flags) >>> 0, true);
  }

  /**
   * VIRTIO_PCI_CAP_PCI_CFG (4.1.4.9): a write of pci_cfg_data (`value`) or a read (null) does
   * that access at cap.offset in BAR cap.bar (pci.config-access-cap.device.2/.3).
   */
  private pciCfgAccess(value: number | null): void {
    const c = this.cfgView;
    const at = this.caps.pciCfg;
    const bar = c.getUint8(at + CapField.Bar);
    const offset = c.getUint32(at + CapField.Offset, true);
    const length = c.getUint32(at + CapField.Length, true);
    // cap.length 0 (never programmed) asks for an access of no bytes: nothing happens. A config
    // space dump (`lspci -xxx`, an emulator copying config space) reads pci_cfg_data that way
    // and breaks no rule.
    if (length === 0) return;
    if (!(length === 1 || length === 2 || length === 4) || offset % length !== 0) {
      this.violation('pci.config-access-cap.driver.1', `driver used the PCI configuration access capability with length ${length} at offset ${offset} (not aligned)`, { bar, offset, length });
      return;
    }
    const r = this.regions;
    const inside = bar === this.virtioBarIndex && [r.common, r.isr, r.device, r.notify].some((g) => offset >= g.offset && offset + length <= g.offset + g.length);
    if (!inside) {
      this.violation('pci.config-access-cap.driver.3', `driver used the PCI configuration access capability for BAR ${bar} offset ${offset}, which no other virtio capability describes`, { bar, offset, length });
      return;
    }
    if (value === null) {
      const read = this.barRead(bar, offset, length);
      c.setUint32(at + CapField.PciCfgData, read >>> 0, true);
    } else {
      this.barWrite(bar, offset, length, value & (length === 4 ? 0xffffffff : (1 << (length * 8)) - 1));
    }
  }

  // ---------------------------------------------------------------- BARs

  /** A read of `size` bytes (1, 2, 4 or 8) at `offset` inside BAR `bar`. Never throws. */
  barRead(bar: number, offset: number, size: number): number {
    this.counts.reads++;
    if (bar === this.virtioBarIndex) return this.virtioRead(offset, size);
    if (bar === this.msixBarIndex) return this.msixRead(offset, size);
    if (bar === 0 && this.transitional) return this.legacyRead(offset, size);
    return 0;
  }

  /** A write of `size` bytes at `offset` inside BAR `bar`. Never throws. */
  barWrite(bar: number, offset: number, size: number, value: number | bigint): void {
    this.counts.writes++;
    const v = toBigInt(value);
    if (bar === this.virtioBarIndex) this.virtioWrite(offset, size, v);
    else if (bar === this.msixBarIndex) this.msixWrite(offset, size, Number(BigInt.asUintN(32, v)));
    else if (bar === 0 && this.transitional) this.legacyWrite(offset, size, Number(BigInt.asUintN(32, v)));
  }

  private msixRead(offset: number, size: number): number {
    if (size !== 4 || offset % 4 !== 0) return 0;
    if (offset < 16 * this.msixVectors) return this.msixTable.getUint32(offset, true);
    const p = offset - this.pbaOffset;
    if (p >= 0 && p + 4 <= this.pba.length) return new DataView(this.pba.buffer).getUint32(p, true);
    return 0;
  }

  private msixWrite(offset: number, size: number, value: number): void {
    if (size !== 4 || offset % 4 !== 0 || offset >= 16 * this.msixVectors) return; // the PBA is read-only
    this.msixTable.setUint32(offset, value, true);
    if (offset % 16 === 12) this.flushPending();
  }

  private region(offset: number): keyof VirtioPciDevice['regions'] | null {
    const r = this.regions;
    for (const name of REGION_NAMES) {
      if (offset >= r[name].offset && offset < r[name].offset + r[name].length) return name;
    }
    return null;
  }

  /**
   * The modern structures are found through the capability list (4.1.5.1.1.1, "Legacy
   * Interface: A Note on Device Layout Detection"): a driver that reaches them without having
   * read the capabilities pointer did not search it. On a transitional function (transitional
   * ids) the driver is a transitional one; on a modern-only function, modern-only or transitional.
   */
  private searched(offset: number): void {
    if (this.seen.capabilityList || this.seen.unsearchedReported) return;
    this.seen.unsearchedReported = true;
    const clause = this.transitional ? 'pci.legacy-device-layout-detection.driver.1' : 'pci.legacy-device-layout-detection.driver.3';
    this.violation(clause, `driver reached the virtio structures (BAR ${this.virtioBarIndex} offset 0x${offset.toString(16)}) without reading the capability list`, { offset });
  }

  /**
   * An access inside a decoy capability's region (PciDeviceOptions.decoyCapabilities): the
   * mirror of the common configuration is served as the real one; the reserved region reads 0.
   * Returns the offset inside the common configuration to serve, or null (nothing to serve).
   */
  private decoy(offset: number): number | 'none' | null {
    const d = this.decoys;
    if (d === null) return 'none';
    const inside = (r: Region) => offset >= r.offset && offset < r.offset + r.length;
    if (inside(d.mirror)) {
      if (!d.reported.mirror) {
        d.reported.mirror = true;
        this.violation('pci.virtio-struct-pci-capabilities.driver.2', `driver used the second common configuration capability (BAR offset 0x${offset.toString(16)}), not the first`, { offset });
      }
      return offset - d.mirror.offset;
    }
    if (inside(d.reserved)) {
      if (!d.reported.reserved) {
        d.reported.reserved = true;
        this.violation('pci.virtio-struct-pci-capabilities.driver.1', `driver used the region of a capability with the reserved cfg_type ${RESERVED_CFG_TYPE} (BAR offset 0x${offset.toString(16)})`, { offset });
      }
      return null;
    }
    return 'none';
  }

  private virtioRead(offset: number, size: number): number {
    const decoy = this.decoy(offset);
    if (decoy === null) return 0;
    if (decoy !== 'none') return this.commonRead(decoy, size);
    const name = this.region(offset);
    if (name === null) return 0;
    this.searched(offset);
    const rel = offset - this.regions[name].offset;
    switch (name) {
      case 'common':
        if (rel === CommonCfg.ConfigGeneration) this.configWatch.generationRead();
        else this.configWatch.otherAccess();
        return this.commonRead(rel, size);
      case 'isr':
        return rel === 0 ? this.readIsr() : 0;
      case 'device':
        this.configWatch.configRead(rel);
        return Number(this.configRead64(rel, size, false));
      default:
        return 0; // the notify structure is written, not read
    }
  }

  private virtioWrite(offset: number, size: number, value: bigint): void {
    const decoy = this.decoy(offset);
    if (decoy === null) return;
    if (decoy !== 'none') {
      this.commonWrite(decoy, size, value);
      return;
    }
    const name = this.region(offset);
    if (name === null) return;
    this.searched(offset);
    const rel = offset - this.regions[name].offset;
    if (name !== 'notify') this.configWatch.otherAccess();
    switch (name) {
      case 'common':
        this.commonWrite(rel, size, value);
        return;
      case 'device':
        this.deviceConfigWrite(rel, size, value, false);
        return;
      case 'notify':
        this.notifyWrite(rel, size, Number(BigInt.asUintN(32, value)));
        return;
      default:
        return; // the ISR is read-only
    }
  }

  // ---------------------------------------------------------------- common configuration (4.1.4.3)

  /** pci.device-layout.driver.1: each field with its natural width (a 64-bit field as 32-bit halves). */
  private commonField(rel: number, size: number, verb: string): (typeof COMMON_FIELDS)[number] | null {
    const f = COMMON_FIELDS.find((x) => rel >= x.offset && rel < x.offset + x.size);
    if (f === undefined) return null;
    const natural = f.size === 8 ? size === 4 && (rel - f.offset) % 4 === 0 : size === f.size && rel === f.offset;
    if (!natural) {
      this.violation('pci.device-layout.driver.1', `driver ${verb} ${size} byte(s) at common configuration offset 0x${rel.toString(16)} (${f.name} is ${f.size * 8}-bit; 64-bit fields as two 32-bit accesses)`, {
        offset: rel,
        size,
        field: f.name,
      });
      return null;
    }
    return f;
  }

  private get selectedQueue() {
    return this.device.queues[this.queueSel];
  }

  private commonRead(rel: number, size: number): number {
    const f = this.commonField(rel, size, 'read');
    if (f === null) return 0;
    const d = this.device;
    const q = this.selectedQueue;
    const high = rel !== f.offset;
    const half = (v: number) => (high ? Math.floor(v / 2 ** 32) : v % 2 ** 32);
    switch (f.offset) {
      case CommonCfg.DeviceFeatureSelect:
        return this.deviceFeatureSel;
      case CommonCfg.DeviceFeature:
        // pci.common-config-struct-layout.device.3
        return this.deviceFeatureSel > 1 ? 0 : Number((d.getDeviceFeatures() >> BigInt(32 * this.deviceFeatureSel)) & 0xffffffffn);
      case CommonCfg.DriverFeatureSelect:
        return this.driverFeatureSel;
      case CommonCfg.DriverFeature:
        // pci.common-config-struct-layout.device.4
        return this.driverFeatureSel > 1 ? 0 : Number((this.driverFeatures >> BigInt(32 * this.driverFeatureSel)) & 0xffffffffn);
      case CommonCfg.ConfigMsixVector:
        if (this.seen.vectorReadBack === -1) this.seen.vectorReadBack = null;
        return this.configVector;
      case CommonCfg.NumQueues:
        return d.numQueues;
      case CommonCfg.DeviceStatus:
        this.resetUnconfirmed = false;
        return d.readStatus();
      case CommonCfg.ConfigGeneration:
        return d.configGeneration & 0xff;
      case CommonCfg.QueueSelect:
        return this.queueSel;
      case CommonCfg.QueueSize:
        return q === undefined ? 0 : this.queueSize[this.queueSel]; // pci.common-config-struct-layout.device.14
      case CommonCfg.QueueMsixVector:
        if (this.seen.vectorReadBack === this.queueSel) this.seen.vectorReadBack = null;
        return q === undefined ? VIRTIO_MSI_NO_VECTOR : this.queueVector[this.queueSel];
      case CommonCfg.QueueEnable:
        return q !== undefined && q.enabled ? 1 : 0;
      case CommonCfg.QueueNotifyOff:
      case CommonCfg.QueueNotifConfigData:
        return q === undefined ? 0 : this.queueSel;
      case CommonCfg.QueueDesc:
        return q === undefined ? 0 : half(q.descAddr);
      case CommonCfg.QueueDriver:
        return q === undefined ? 0 : half(q.availAddr);
      case CommonCfg.QueueDevice:
        return q === undefined ? 0 : half(q.usedAddr);
      case CommonCfg.QueueReset:
        this.resetPending.delete(this.queueSel);
        return 0; // queue resets complete at once (pci.common-config-struct-layout.device.9/.12/.13)
      default:
        return 0; // admin_queue_index / admin_queue_num: no VIRTIO_F_ADMIN_VQ
    }
  }

  private commonWrite(rel: number, size: number, value: bigint): void {
    if (size === 8 && (rel === CommonCfg.QueueDesc || rel === CommonCfg.QueueDriver || rel === CommonCfg.QueueDevice)) {
      // A 64-bit store to a 64-bit field: a verdict (two 32-bit halves are natural), served as the two halves.
      this.commonField(rel, size, 'wrote');
      this.commonWrite(rel, 4, value & 0xffffffffn);
      this.commonWrite(rel + 4, 4, value >> 32n);
      return;
    }
    const f = this.commonField(rel, size, 'wrote');
    if (f === null) return;
    this.beforeWrite(f.name);
    if (this.seen.legacySession && !(f.offset === CommonCfg.DeviceStatus && Number(value & 0xffn) === 0)) {
      // A reset through the modern interface hands the device over (a modern driver after a legacy one starts so).
      this.seen.legacySession = false;
      this.violation('pci.legacy-device-layout.driver.1', `driver wrote ${f.name} in the modern common configuration after setting the device up through the legacy I/O BAR0 (no reset between)`, { field: f.name });
    }
    if (!f.writable) {
      this.violation('pci.common-config-struct-layout.driver.1', `driver wrote the read-only field ${f.name}`, { field: f.name });
      return;
    }
    const v = Number(BigInt.asUintN(32, value));
    const d = this.device;
    const index = this.queueSel;
    const q = this.selectedQueue;
    switch (f.offset) {
      case CommonCfg.DeviceFeatureSelect:
        this.deviceFeatureSel = v;
        return;
      case CommonCfg.DriverFeatureSelect:
        this.driverFeatureSel = v;
        return;
      case CommonCfg.DriverFeature: {
        if (this.driverFeatureSel > 1) return;
        const shift = BigInt(32 * this.driverFeatureSel);
        this.driverFeatures = (this.driverFeatures & ~(0xffffffffn << shift)) | (BigInt(v) << shift);
        this.legacyActive = false;
        d.setDriverFeatures(this.driverFeatures);
        return;
      }
      case CommonCfg.ConfigMsixVector:
        this.configVector = this.mapVector(v, 'config_msix_vector');
        return;
      case CommonCfg.DeviceStatus:
        this.legacyActive = false;
        this.writeStatus(v & 0xff);
        return;
      case CommonCfg.QueueSelect:
        this.queueSel = v;
        return;
      case CommonCfg.QueueMsixVector:
        if (q !== undefined) this.queueVector[index] = this.mapVector(v, 'queue_msix_vector');
        return;
      case CommonCfg.QueueReset:
        if (v === 1 && q !== undefined && d.negotiated(Feature.RING_RESET)) {
          d.resetQueue(index);
          this.queueSize[index] = d.queueMaxSize;
          this.queueFieldsWritten[index] = 0;
          this.resetPending.add(index);
        }
        return;
    }
    if (q === undefined) return; // queue fields of a queue that does not exist go nowhere
    this.resetReadBack(index, `wrote ${f.name} of`);
    switch (f.offset) {
      case CommonCfg.QueueSize: {
        const packed = d.negotiated(Feature.RING_PACKED);
        if (packed && v === 0) {
          this.violation('pci.common-config-struct-layout.driver.2', `driver wrote queue_size 0 for queue ${index} with VIRTIO_F_RING_PACKED`, { queue: index });
          return;
        }
        if (!packed && (v === 0 || (v & (v - 1)) !== 0)) {
          this.violation('pci.common-config-struct-layout.driver.3', `driver wrote queue_size ${v} for queue ${index}, not a power of 2 (split ring)`, { queue: index, value: v });
          return;
        }
        this.queueSize[index] = v;
        d.setQueueSize(index, v);
        return;
      }
      case CommonCfg.QueueEnable:
        if (v === 0) {
          this.violation('pci.common-config-struct-layout.driver.6', `driver wrote 0 to queue_enable of queue ${index}`, { queue: index });
          return;
        }
        if (q.enabled) return;
        if ((this.queueFieldsWritten[index] & 7) !== 7) {
          this.violation('pci.common-config-struct-layout.driver.4', `driver enabled queue ${index} before writing queue_desc, queue_driver and queue_device`, { queue: index });
        }
        d.setQueueSize(index, this.queueSize[index]);
        d.enableQueue(index);
        return;
      case CommonCfg.QueueDesc:
      case CommonCfg.QueueDriver:
      case CommonCfg.QueueDevice: {
        const which = f.offset === CommonCfg.QueueDesc ? 0 : f.offset === CommonCfg.QueueDriver ? 1 : 2;
        this.queueFieldsWritten[index] |= 1 << which;
        const high = rel !== f.offset;
        const merge = (old: number) => (high ? v * 2 ** 32 + (old % 2 ** 32) : Math.floor(old / 2 ** 32) * 2 ** 32 + v);
        let { descAddr: desc, availAddr: avail, usedAddr: used } = q;
        if (which === 0) desc = merge(desc);
        else if (which === 1) avail = merge(avail);
        else used = merge(used);
        d.setQueueAddresses(index, desc, avail, used);
        return;
      }
    }
  }

  /**
   * pci.msi-x-vector-config.driver.5: a mapping is read back before the driver writes anything
   * else (the read shows NO_VECTOR when the device refused it). Called before every write of a
   * common configuration field or legacy register.
   */
  private beforeWrite(what: string): void {
    const pending = this.seen.vectorReadBack;
    if (pending === null) return;
    this.seen.vectorReadBack = null;
    const field = pending === -1 ? 'config_msix_vector' : `queue ${pending}'s queue_msix_vector`;
    this.violation('pci.msi-x-vector-config.driver.5', `driver wrote ${what} before reading back ${field} after mapping it`, { queue: pending });
  }

  /** pci.msi-x-vector-config.driver.4 / device.9: a vector beyond the table is refused and reads NO_VECTOR. */
  private mapVector(v: number, field: string): number {
    if (v === VIRTIO_MSI_NO_VECTOR) return v; // pci.msi-x-vector-config.device.5: unmapping
    this.seen.vectorReadBack = field === 'config_msix_vector' ? -1 : this.queueSel;
    if (v >= this.msixVectors) {
      this.violation('pci.msi-x-vector-config.driver.4', `driver mapped ${field} to vector ${v}, outside the MSI-X table of ${this.msixVectors}`, { field, vector: v });
      return VIRTIO_MSI_NO_VECTOR;
    }
    return v;
  }

  private writeStatus(v: number): void {
    if (v === 0) this.seen.legacySession = false;
    if (v !== 0 && this.resetUnconfirmed) {
      this.resetUnconfirmed = false;
      this.violation('pci.common-config-struct-layout.driver.5', 'driver went on initializing after writing 0 to device_status without reading device_status back as 0', { status: v });
    }
    this.device.setStatus(v);
    if (v === 0) {
      this.resetUnconfirmed = !this.legacyActive;
      this.configWatch.reset();
      this.resetTransport();
    }
  }

  /** Device reset: vectors unmapped (pci.msi-x-vector-config.device.7), ISR 0, selectors 0, queue sizes back to the maximum. */
  private resetTransport(): void {
    this.deviceFeatureSel = 0;
    this.driverFeatureSel = 0;
    this.driverFeatures = 0n;
    this.queueSel = 0;
    this.configVector = VIRTIO_MSI_NO_VECTOR;
    this.resetPending.clear();
    for (let i = 0; i < this.device.numQueues; i++) {
      this.queueVector[i] = VIRTIO_MSI_NO_VECTOR;
      this.queueSize[i] = this.device.queueMaxSize;
      this.queueFieldsWritten[i] = 0;
      this.queuePfn[i] = 0;
    }
    this.isr = 0;
    this.updateIntx();
  }

  // ---------------------------------------------------------------- notifications (4.1.5.2)

  private notifyWrite(rel: number, size: number, value: number): void {
    const m = this.notifyOffMultiplier;
    const nd = this.device.negotiated(Feature.NOTIFICATION_DATA);
    const queue = m === 0 ? (nd ? value & 0xffff : value) : Math.floor(rel / m);
    if (m !== 0 && rel % m !== 0) return; // between queues' addresses: nothing there
    if (nd ? size !== 4 : size !== 2) {
      this.violation(nd ? 'pci.avail-buffer-notif.driver.2' : 'pci.avail-buffer-notif.driver.1', `driver sent a ${size * 8}-bit notification for queue ${queue} (${nd ? '32' : '16'}-bit with VIRTIO_F_NOTIFICATION_DATA ${nd ? '' : 'not '}negotiated)`, {
        queue,
        size,
      });
      return;
    }
    const named = nd ? value & 0xffff : value;
    if (named !== queue) {
      this.violation(nd ? 'pci.avail-buffer-notif.driver.4' : 'pci.avail-buffer-notif.driver.3', `driver notified queue ${queue}'s address with ${nd ? 'vq_index' : 'value'} ${named}`, { queue, value });
      return;
    }
    this.resetReadBack(queue, 'notified');
    this.device.notify(queue, nd ? value : undefined);
  }

  /**
   * A queue reset is complete only once queue_reset reads 0: setting the queue up again or
   * notifying it before that breaks pci.common-config-struct-layout.driver.7 (the PCI form) and
   * basic.vq-reset.driver.1 (2.6.1: the driver must verify the reset). The two are distinct
   * statements of the spec (the general duty to verify, and the PCI register that tells), both
   * broken by the one act, so both are named.
   */
  private resetReadBack(index: number, what: string): void {
    if (!this.resetPending.has(index)) return;
    this.resetPending.delete(index);
    const message = `driver ${what} queue ${index} after queue_reset without reading queue_reset back as 0`;
    this.violation('pci.common-config-struct-layout.driver.7', message, { queue: index });
    this.violation('basic.vq-reset.driver.1', message, { queue: index });
  }

  // ---------------------------------------------------------------- device-specific configuration

  /** Reads `size` bytes of device configuration (legacy: any width, the same bytes as natural accesses). */
  private configRead64(rel: number, size: number, legacy: boolean): number | bigint {
    if (!legacy && !this.deviceConfigWidth(rel, size, 'read')) return 0;
    if (size === 1 || ((size === 2 || size === 4) && rel % size === 0)) return this.device.readConfig(rel, size);
    let v = 0n;
    for (let i = Math.min(size, 8) - 1; i >= 0; i--) v = (v << 8n) | BigInt(this.device.readConfig(rel + i, 1));
    return size === 8 ? Number(v & 0xffffffffn) : Number(v);
  }

  /** pci.device-layout.driver.1 for device configuration: 8, 16 or 32-bit aligned accesses. */
  private deviceConfigWidth(rel: number, size: number, verb: string): boolean {
    if ((size === 1 || size === 2 || size === 4) && rel % size === 0) return true;
    this.violation('pci.device-layout.driver.1', `driver ${verb} ${size} byte(s) of device configuration at offset ${rel} (8, 16 or 32-bit aligned accesses only)`, { offset: rel, size });
    return false;
  }

  private deviceConfigWrite(rel: number, size: number, value: bigint, legacy: boolean): void {
    if (!legacy && !this.deviceConfigWidth(rel, size, 'wrote')) return;
    if (size === 1 || size === 2 || size === 4 || size === 8) this.device.writeConfig(rel, size, size === 8 ? value : Number(value));
  }

  // ---------------------------------------------------------------- legacy I/O layout (4.1.4.8)

  private get legacyConfigStart(): number {
    return this.msixEnabled ? LEGACY_CONFIG.msix : LEGACY_CONFIG.plain;
  }

  private legacyRead(offset: number, size: number): number {
    const start = this.legacyConfigStart;
    if (offset >= start) return Number(this.configRead64(offset - start, size, true)); // pci.legacy-device-layout.device.2/.3
    const d = this.device;
    const q = this.selectedQueue;
    switch (offset) {
      case LegacyReg.HostFeatures:
        // pci.legacy-device-layout.device.4: bits 32 and up do not exist for a legacy driver.
        return Number(d.getDeviceFeatures() & 0xffffffffn);
      case LegacyReg.GuestFeatures:
        return Number(this.driverFeatures & 0xffffffffn);
      case LegacyReg.QueueAddress:
        return this.queuePfn[this.queueSel] ?? 0;
      case LegacyReg.QueueSize:
        return q === undefined ? 0 : d.queueMaxSize;
      case LegacyReg.QueueSelect:
        return this.queueSel;
      case LegacyReg.DeviceStatus:
        return d.readStatus();
      case LegacyReg.Isr:
        return this.readIsr();
      case LegacyReg.ConfigMsixVector:
        if (this.seen.vectorReadBack === -1) this.seen.vectorReadBack = null;
        return this.configVector;
      case LegacyReg.QueueMsixVector:
        if (this.seen.vectorReadBack === this.queueSel) this.seen.vectorReadBack = null;
        return q === undefined ? VIRTIO_MSI_NO_VECTOR : this.queueVector[this.queueSel];
      default:
        return 0;
    }
  }

  private legacyWrite(offset: number, size: number, value: number): void {
    const start = this.legacyConfigStart;
    if (offset >= start) {
      this.deviceConfigWrite(offset - start, size, BigInt(value), true);
      return;
    }
    const d = this.device;
    const index = this.queueSel;
    const q = this.selectedQueue;
    if (offset !== LegacyReg.QueueNotify) this.beforeWrite(`legacy register 0x${offset.toString(16)}`);
    if (offset === LegacyReg.GuestFeatures || offset === LegacyReg.QueueAddress || (offset === LegacyReg.DeviceStatus && (value & 0xff) !== 0)) this.seen.legacySession = true;
    switch (offset) {
      case LegacyReg.GuestFeatures:
        this.legacyActive = true;
        this.driverFeatures = BigInt(value >>> 0);
        d.setDriverFeatures(this.driverFeatures);
        return;
      case LegacyReg.QueueAddress:
        this.legacyActive = true;
        if (q === undefined) return;
        this.queuePfn[index] = value;
        if (value === 0) {
          if (q.enabled) q.pause(); // the driver stopped using the queue
          return;
        }
        {
          const size = d.queueMaxSize;
          const desc = value * LEGACY_PAGE;
          const avail = desc + 16 * size;
          const used = align(avail + 6 + 2 * size, LEGACY_PAGE);
          d.setQueueSize(index, size);
          d.setQueueAddresses(index, desc, avail, used);
          d.enableQueue(index);
        }
        return;
      case LegacyReg.QueueSelect:
        this.queueSel = value & 0xffff;
        return;
      case LegacyReg.QueueNotify:
        if (this.device.queues[value & 0xffff] !== undefined) this.device.notify(value & 0xffff);
        return;
      case LegacyReg.DeviceStatus:
        this.legacyActive = true;
        this.writeStatus(value & 0xff);
        return;
      case LegacyReg.ConfigMsixVector:
        this.configVector = this.mapVector(value & 0xffff, 'config_msix_vector');
        return;
      case LegacyReg.QueueMsixVector:
        if (q !== undefined) this.queueVector[index] = this.mapVector(value & 0xffff, 'queue_msix_vector');
        return;
      default:
        return; // read-only registers (HostFeatures, QueueSize, ISR)
    }
  }

  // ---------------------------------------------------------------- verdicts

  private violation(clause: string, message: string, context: Record<string, unknown>): void {
    const v = this.device.monitor.report(clause, message, context);
    if (this.device.monitor.shouldAct(v)) this.device.needsReset(`${clause}: ${message}`);
  }
}
