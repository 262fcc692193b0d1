// Broken virtio-pci devices for the driver-side checks (the pci device clauses PciTransport
// judges): a VirtioPciDevice with one configuration space field, capability field or register
// behaviour overridden, behind the in-process bus. Each negative case breaks one clause.
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Monitor } from '../../src/monitor/monitor.js';
import { BlkDevice } from '../../src/devices/blk/device.js';
import { MemoryBlockStorage } from '../../src/devices/blk/storage.js';
import { Feature, Status } from '../../src/spec/constants.js';
import { bit } from '../../src/spec/features.js';
import { VirtioPciDevice, type PciDeviceOptions } from '../../src/transports/pci/device.js';
import { PciTransport, directPciBus, type PciInterrupt } from '../../src/transports/pci/driver.js';
import { CapField, CommonCfg, PciCfg, VirtioPciCap } from '../../src/transports/pci/layout.js';

/** Where a virtio structure is: its capability's config space offset, BAR and offset in the BAR, length. */
export interface CapPlace {
  at: number;
  bar: number;
  offset: number;
  length: number;
}

/** The hooks a case installs on the model before the driver opens it. */
export interface Patcher {
  model: VirtioPciDevice;
  /** Configuration space bytes at `offset` read as `value` (little-endian, `size` bytes). */
  setConfig(offset: number, size: number, value: number): void;
  /** A BAR read hook: return a number to replace what the model read. */
  onRead(hook: (bar: number, offset: number, size: number, value: number) => number | undefined): void;
  /** A BAR write hook: return true to swallow the write. */
  onWrite(hook: (bar: number, offset: number, size: number, value: number) => boolean | undefined): void;
  /** A configuration space write hook: return true to swallow the write. */
  onConfigWrite(hook: (offset: number, size: number, value: number) => boolean | undefined): void;
  /** A configuration space read hook: return a number to replace what the model read. */
  onConfigRead(hook: (offset: number, size: number, value: number) => number | undefined): void;
  /** The (unpatched) place of the first capability of `cfgType`. */
  cap(cfgType: number): CapPlace;
  /** BAR and offset of a common configuration field. */
  common(field: number): { bar: number; offset: number };
  /** Whether a BAR access at (bar, offset) is the common configuration field `field`. */
  isCommon(bar: number, offset: number, field: number): boolean;
  /** The queue the driver last selected (queue_select writes seen). */
  selected(): number;
  /** The structure of `cfgType` moved `delta` bytes up in its BAR (the capability says so, accesses follow). */
  shift(cfgType: number, delta: number): void;
}

export function patcher(model: VirtioPciDevice): Patcher {
  const bytes = new Map<number, number>();
  const reads: ((bar: number, offset: number, size: number, value: number) => number | undefined)[] = [];
  const writes: ((bar: number, offset: number, size: number, value: number) => boolean | undefined)[] = [];
  const cfgWrites: ((offset: number, size: number, value: number) => boolean | undefined)[] = [];
  const cfgReads: ((offset: number, size: number, value: number) => number | undefined)[] = [];
  const configRead = model.configRead.bind(model);
  const configWrite = model.configWrite.bind(model);
  const barRead = model.barRead.bind(model);
  const barWrite = model.barWrite.bind(model);
  let select = 0;
  const place = (cfgType: number): CapPlace => {
    for (let at = configRead(PciCfg.CapabilitiesPointer, 1); at !== 0; at = configRead(at + 1, 1)) {
      if (configRead(at, 1) === 9 && configRead(at + CapField.CfgType, 1) === cfgType) {
        return { at, bar: configRead(at + CapField.Bar, 1), offset: configRead(at + CapField.Offset, 4), length: configRead(at + CapField.Length, 4) };
      }
    }
    throw new Error(`no capability of cfg_type ${cfgType}`);
  };
  const common = place(VirtioPciCap.Common);
  model.configRead = (offset, size) => {
    let v = configRead(offset, size);
    for (let i = 0; i < size; i++) {
      const b = bytes.get(offset + i);
      if (b !== undefined) v = (v & ~(0xff << (8 * i))) | (b << (8 * i));
    }
    v >>>= 0;
    for (const h of cfgReads) {
      const r = h(offset, size, v);
      if (r !== undefined) return r;
    }
    return v;
  };
  model.configWrite = (offset, size, value) => {
    for (const h of cfgWrites) if (h(offset, size, value) === true) return;
    configWrite(offset, size, value);
  };
  model.barRead = (bar, offset, size) => {
    const v = barRead(bar, offset, size);
    for (const h of reads) {
      const r = h(bar, offset, size, v);
      if (r !== undefined) return r;
    }
    return v;
  };
  model.barWrite = (bar, offset, size, value) => {
    const n = Number(value);
    if (bar === common.bar && offset === common.offset + CommonCfg.QueueSelect) select = n;
    for (const h of writes) if (h(bar, offset, size, n) === true) return;
    barWrite(bar, offset, size, value);
  };
  const p: Patcher = {
    model,
    setConfig(offset, size, value) {
      for (let i = 0; i < size; i++) bytes.set(offset + i, Math.floor(value / 2 ** (8 * i)) & 0xff);
    },
    onRead: (h) => void reads.push(h),
    onWrite: (h) => void writes.push(h),
    onConfigWrite: (h) => void cfgWrites.push(h),
    onConfigRead: (h) => void cfgReads.push(h),
    cap: place,
    common: (field) => ({ bar: common.bar, offset: common.offset + field }),
    isCommon: (bar, offset, field) => bar === common.bar && offset === common.offset + field,
    selected: () => select,
    shift(cfgType, delta) {
      const c = place(cfgType);
      const window = place(VirtioPciCap.PciCfg);
      p.setConfig(c.at + CapField.Offset, 4, c.offset + delta);
      const inside = (bar: number, offset: number) => bar === c.bar && offset >= c.offset + delta && offset < c.offset + delta + c.length;
      // Accesses through the moved window reach the structure where the model keeps it.
      reads.unshift((bar, offset, size) => (inside(bar, offset) ? barRead(bar, offset - delta, size) : undefined));
      writes.unshift((bar, offset, size, value) => {
        if (!inside(bar, offset)) return undefined;
        barWrite(bar, offset - delta, size, value);
        return true;
      });
      // So do the PCI configuration access capability's.
      cfgWrites.unshift((offset, size, value) => {
        if (offset !== window.at + CapField.Offset || value < c.offset + delta || value >= c.offset + delta + c.length) return undefined;
        configWrite(offset, size, value - delta);
        return true;
      });
    },
  };
  return p;
}

/** What kind of function the case builds and how the driver opens it. */
export type Kind = 'modern' | 'modern-intx' | 'transitional-modern' | 'transitional-legacy' | 'legacy-intx';

/** A blk device behind a patched model, and what the driver side needs. */
export async function openPatched(
  kind: Kind,
  patch: (p: Patcher) => void = () => undefined,
  options: { pci?: PciDeviceOptions; numQueues?: number; withhold?: bigint } = {},
) {
  const memory = GuestMemory.create(8 << 20);
  const device = new BlkDevice({ storage: new MemoryBlockStorage(1 << 20, false), numQueues: options.numQueues ?? 1 });
  if (options.withhold !== undefined) device.withholdFeatures(options.withhold);
  const model = new VirtioPciDevice(device, memory, { transitional: kind.startsWith('transitional') || kind === 'legacy-intx', ...options.pci });
  const p = patcher(model);
  patch(p);
  const bus = directPciBus(model);
  // The test can raise the function's interrupt itself (a spurious INTx).
  let handler: (irq: PciInterrupt) => void = () => undefined;
  const onInterrupt = bus.onInterrupt.bind(bus);
  bus.onInterrupt = (h) => {
    handler = h;
    onInterrupt(h);
  };
  const drvMon = new Monitor({ mode: 'tolerant' });
  const open = () =>
    PciTransport.open(bus, memory, {
      monitor: drvMon,
      mode: kind === 'transitional-legacy' || kind === 'legacy-intx' ? 'legacy' : 'modern',
      msix: kind !== 'modern-intx' && kind !== 'legacy-intx',
    });
  return { memory, model, device, drvMon, open, raise: (irq: PciInterrupt) => handler(irq) };
}

/** Queue rings at fixed places (the legacy layout where the interface needs it). */
export function rings(index: number, size = 16) {
  const desc = 0x100000 + index * 0x10000;
  const avail = desc + 16 * size;
  const used = Math.ceil((avail + 6 + 2 * size) / 4096) * 4096;
  return { desc, avail, used };
}

/** The features a driver accepts here: what the device offers of VERSION_1, RING_RESET, NOTIFICATION_DATA (never RING_PACKED). */
export const ACCEPT = bit(Feature.VERSION_1) | bit(Feature.RING_RESET) | bit(Feature.NOTIFICATION_DATA);

/**
 * The initialization sequence through the transport alone (3.1.1), up to DRIVER_OK with
 * `queues` queues, as the driver core would do it.
 */
export async function bringUp(t: PciTransport, queues = 1, accept = ACCEPT): Promise<void> {
  await t.setStatus(0);
  await t.setStatus(Status.ACKNOWLEDGE);
  await t.setStatus(Status.ACKNOWLEDGE | Status.DRIVER);
  const offered = await t.getDeviceFeatures();
  await t.setDriverFeatures(offered & accept);
  if (t.mode === 'modern') await t.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
  await t.numQueues();
  for (let q = 0; q < queues; q++) {
    const max = await t.queueMaxSize(q);
    const size = t.mode === 'legacy' ? max : 16;
    await t.setupQueue(q, size, rings(q, size));
    await t.enableQueue(q);
  }
  await t.setStatus((t.mode === 'modern' ? Status.FEATURES_OK : 0) | Status.ACKNOWLEDGE | Status.DRIVER | Status.DRIVER_OK);
}
