/**
 * The driver side of virtio-mmio (spec 4.2.3): a {@link DriverTransport} over a bus that reads
 * and writes the device's registers, so the project's drivers (BlkDriver, ConsoleDriver,
 * RngDriver, your own VirtioDriver) run on any virtio-mmio device: the register model here, an
 * emulator's, or QEMU's through its qtest protocol.
 *
 * The bus is asynchronous on purpose: a register access may cross a socket.
 *
 * Browser-safe: no Node import.
 */
import type { DriverTransport, TransportEvents } from '../../driver/transport.js';
import type { GuestMemory } from '../../memory/guest-memory.js';
import { Monitor } from '../../monitor/monitor.js';
import { Feature } from '../../spec/constants.js';
import { InterruptServicer, probeQueueCount } from '../../driver/register-transport.js';
import type { RingAddresses } from '../../spec/ring.js';
import { MmioError, legacySplitLayout, type VirtioMmioDevice } from './device.js';
import { MMIO_INT_CONFIG, MMIO_INT_VRING, MMIO_MAGIC, MmioReg } from './registers.js';

/**
 * A virtio-mmio device's register window as a driver reaches it. Accesses are performed in the
 * order they are called (a later call never overtakes an earlier one), each promise settling
 * once its access is done.
 */
export interface MmioBus {
  /** A load of `size` bytes at `offset` from the device's base. */
  read(offset: number, size: 1 | 2 | 4): Promise<number>;
  /** A store of `size` bytes at `offset`. */
  write(offset: number, size: 1 | 2 | 4, value: number): Promise<void>;
  /**
   * The device's interrupt line: `handler(true)` when it goes up (and false when it goes down,
   * where the bus knows). A change that happened before an access completed is reported before
   * that access's promise settles (the transport judges InterruptStatus against the line).
   */
  onInterrupt(handler: (level: boolean) => void): void;
}

/**
 * A bus wired straight to a {@link VirtioMmioDevice} in the same process (tests, a driver and a
 * device model in one page). Interrupts arrive from a microtask, as from a real line: never
 * inside the register access that caused them.
 */
export function directMmioBus(model: VirtioMmioDevice): MmioBus & { traps: number } {
  let handler: (level: boolean) => void = () => undefined;
  const bus = {
    traps: 0,
    read(offset: number, size: 1 | 2 | 4): Promise<number> {
      bus.traps++;
      return Promise.resolve(Number(model.read(offset, size)));
    },
    write(offset: number, size: 1 | 2 | 4, value: number): Promise<void> {
      bus.traps++;
      model.write(offset, size, value);
      return Promise.resolve();
    },
    onInterrupt(h: (level: boolean) => void): void {
      handler = h;
    },
  };
  model.connectInterrupt((level) => queueMicrotask(() => handler(level)));
  return bus;
}

/** How an {@link MmioTransport} is set up. */
export interface MmioTransportOptions {
  /** Judges the device's registers (default: a new strict monitor; verdicts are recorded, the transport goes on). */
  monitor?: Monitor;
  /** Legacy (version 1) page size written to GuestPageSize, also the ring alignment (default 4096). */
  legacyPageSize?: number;
}

/** The driver side of one virtio-mmio device. Make it with {@link MmioTransport.open}. */
export class MmioTransport implements DriverTransport {
  readonly monitor: Monitor;
  readonly legacy?: { readonly queueAlign: number; readonly fixedQueueSize: boolean };
  /** The device's interface version: 2 modern, 1 legacy. */
  readonly version: 1 | 2;
  readonly synchronous = false;
  /** QueueNotify carries the 2.9 value (version 2). */
  readonly notificationData: boolean;
  private events: TransportEvents | null = null;
  private readonly enabled = new Set<number>();
  /** Queues reset and not yet seen complete. */
  private readonly resetting = new Set<number>();
  private queueCount: number | null = null;
  /** The feature bits the driver wrote last (RING_RESET and RING_PACKED decide what is checked). */
  private driverFeatures = 0n;
  /** The interrupt line as the bus last reported it, and whether the bus reports it going down at all. */
  private line = { up: false, reportsLow: false };
  /** ConfigGeneration as last read, the config values read under it, and a value that changed under it (mmio.device-register-layout.device.6). */
  private readonly config = { generation: null as number | null, values: new Map<number, number | bigint>(), changed: null as null | { offset: number; size: number; before: number | bigint; after: number | bigint } };
  /** Per queue set up and not yet enabled: its device area's bytes at setup (mmio.device-register-layout.device.7). */
  private readonly deviceArea = new Map<number, { parts: [number, number][]; bytes: Uint8Array }>();

  private constructor(
    readonly bus: MmioBus,
    readonly memory: GuestMemory,
    version: 1 | 2,
    readonly deviceIdValue: number,
    options: MmioTransportOptions,
  ) {
    this.monitor = options.monitor ?? new Monitor();
    this.version = version;
    this.notificationData = version === 2;
    if (version === 1) this.legacy = { queueAlign: options.legacyPageSize ?? 4096, fixedQueueSize: false };
    bus.onInterrupt((level) => {
      this.line.up = level;
      if (!level) this.line.reportsLow = true;
      if (level) this.servicer.trigger();
    });
  }

  /**
   * Probes the device at `bus` as 4.2.3.1 says: MagicValue and Version first, then DeviceID
   * (mmio.device-init.driver.1/.2). A window with no virtio device, or an empty slot
   * (DeviceID 0), is an MmioError and no other register is touched (mmio.device-init.driver.3).
   */
  static async open(bus: MmioBus, memory: GuestMemory, options: MmioTransportOptions = {}): Promise<MmioTransport> {
    // open() is told a virtio-mmio device is at `bus`: a window that does not identify as one is
    // a verdict on that device (and, as 4.2.2 tells the driver, the window is then left alone).
    const monitor = options.monitor ?? new Monitor();
    const magic = await bus.read(MmioReg.MagicValue, 4);
    if (magic !== MMIO_MAGIC) {
      monitor.report('mmio.device-register-layout.device.1', `MagicValue reads 0x${magic.toString(16)}, not 0x${MMIO_MAGIC.toString(16)}`, { magic });
      throw new MmioError('not-virtio', `MagicValue is 0x${magic.toString(16)}, not 0x${MMIO_MAGIC.toString(16)}: no virtio-mmio device here`);
    }
    const version = await bus.read(MmioReg.Version, 4);
    if (version !== 1 && version !== 2) {
      // Version 1 is the legacy interface (4.2.4), which this driver also drives; anything else is no version at all.
      monitor.report('mmio.device-register-layout.device.2', `Version reads ${version}: 2 (or 1, legacy) only`, { version });
      throw new MmioError('unsupported-version', `virtio-mmio Version ${version}: this driver knows 1 (legacy) and 2`);
    }
    const id = await bus.read(MmioReg.DeviceID, 4);
    if (id === 0) throw new MmioError('no-device', 'DeviceID 0: an empty virtio-mmio slot');
    const t = new MmioTransport(bus, memory, version, id, { ...options, monitor });
    if (version === 1) await bus.write(MmioReg.GuestPageSize, 4, t.legacy!.queueAlign);
    return t;
  }

  listen(events: TransportEvents): void {
    this.events = events;
  }

  async deviceId(): Promise<number> {
    return this.deviceIdValue;
  }

  async getStatus(): Promise<number> {
    return this.bus.read(MmioReg.Status, 4);
  }

  async setStatus(status: number): Promise<void> {
    await this.bus.write(MmioReg.Status, 4, status);
    if (status === 0) {
      const queues = [...new Set([...this.enabled, ...this.resetting])];
      this.enabled.clear();
      this.resetting.clear();
      this.deviceArea.clear();
      this.config.generation = null; // a reset may change the configuration: nothing read before it is compared
      this.config.values.clear();
      this.config.changed = null;
      if (this.version === 2) {
        // mmio.device-register-layout.device.5: a reset clears InterruptStatus and every QueueReady.
        const isr = await this.bus.read(MmioReg.InterruptStatus, 4);
        if (isr !== 0) this.deviceVerdict('mmio.device-register-layout.device.5', `InterruptStatus reads 0x${isr.toString(16)} after a reset`, { isr });
        if (this.ringReset) {
          // mmio.device-register-layout.device.8: with RING_RESET, QueueReset reads 0 after a device
          // reset (the queues in use or being reset when it came: the ones it could have left at 1).
          for (const q of queues) {
            await this.bus.write(MmioReg.QueueSel, 4, q);
            const v = await this.bus.read(MmioReg.QueueReset, 4);
            if (v !== 0) this.deviceVerdict('mmio.device-register-layout.device.8', `queue ${q}: QueueReset reads ${v} after a device reset`, { queue: q, value: v });
          }
        }
      }
      this.driverFeatures = 0n;
    }
  }

  /** VIRTIO_F_RING_RESET as the driver last accepted it (version 2 only: QueueReset is no version 1 register). */
  private get ringReset(): boolean {
    return this.version === 2 && (this.driverFeatures >> BigInt(Feature.RING_RESET)) & 1n ? true : false;
  }

  async getDeviceFeatures(): Promise<bigint> {
    await this.bus.write(MmioReg.DeviceFeaturesSel, 4, 1);
    const high = await this.bus.read(MmioReg.DeviceFeatures, 4);
    await this.bus.write(MmioReg.DeviceFeaturesSel, 4, 0);
    const low = await this.bus.read(MmioReg.DeviceFeatures, 4);
    return (BigInt(this.version === 1 ? 0 : high) << 32n) | BigInt(low);
  }

  async setDriverFeatures(features: bigint): Promise<void> {
    this.driverFeatures = features;
    await this.bus.write(MmioReg.DriverFeaturesSel, 4, 1);
    await this.bus.write(MmioReg.DriverFeatures, 4, this.version === 1 ? 0 : Number((features >> 32n) & 0xffffffffn));
    await this.bus.write(MmioReg.DriverFeaturesSel, 4, 0);
    await this.bus.write(MmioReg.DriverFeatures, 4, Number(features & 0xffffffffn));
  }

  async configGeneration(): Promise<number> {
    if (this.version === 1) return 0;
    const g = await this.bus.read(MmioReg.ConfigGeneration, 4);
    const c = this.config;
    if (g === c.generation && c.changed !== null) {
      // A field read twice, both times between reads of this same generation, gave two values:
      // the configuration changed and ConfigGeneration did not (a driver reading several fields
      // across that change would have taken a torn state for a consistent one).
      const { offset, size, before, after } = c.changed;
      this.deviceVerdict('mmio.device-register-layout.device.6', `configuration at offset ${offset} (${size} bytes) changed from ${before} to ${after} while ConfigGeneration stayed ${g}`, { offset, size, generation: g });
    }
    if (g !== c.generation) c.values.clear();
    c.generation = g;
    c.changed = null;
    return g;
  }

  /** Remembers a configuration value read under the current generation (version 2: legacy has none). */
  private noteConfig(offset: number, size: number, value: number | bigint): void {
    const c = this.config;
    if (this.version === 1 || c.generation === null) return;
    const key = offset * 16 + size;
    const before = c.values.get(key);
    if (before !== undefined && before !== value && c.changed === null) c.changed = { offset, size, before, after: value };
    c.values.set(key, value);
  }

  /** mmio.device-register-layout.driver.3: 8/16/32-bit accesses; a 64-bit field as two 32-bit halves. */
  async readConfig(offset: number, size: 1 | 2 | 4 | 8): Promise<number | bigint> {
    let v: number | bigint;
    if (size === 8) {
      const low = await this.bus.read(MmioReg.Config + offset, 4);
      const high = await this.bus.read(MmioReg.Config + offset + 4, 4);
      v = (BigInt(high) << 32n) | BigInt(low);
    } else {
      v = await this.bus.read(MmioReg.Config + offset, size);
    }
    this.noteConfig(offset, size, v);
    return v;
  }

  async writeConfig(offset: number, size: 1 | 2 | 4 | 8, value: number | bigint): Promise<void> {
    this.config.values.clear(); // the driver's own write changes what it reads next: no device change
    if (size === 8) {
      const v = BigInt(value);
      await this.bus.write(MmioReg.Config + offset, 4, Number(v & 0xffffffffn));
      await this.bus.write(MmioReg.Config + offset + 4, 4, Number((v >> 32n) & 0xffffffffn));
      return;
    }
    await this.bus.write(MmioReg.Config + offset, size, Number(value));
  }

  /** virtio-mmio has no queue count register: queues are probed until QueueSizeMax reads 0. */
  async numQueues(): Promise<number> {
    this.queueCount ??= await probeQueueCount((i) => this.queueMaxSize(i));
    return this.queueCount;
  }

  async queueMaxSize(index: number): Promise<number> {
    await this.bus.write(MmioReg.QueueSel, 4, index);
    return this.bus.read(MmioReg.QueueSizeMax, 4);
  }

  async setupQueue(index: number, size: number, addrs: RingAddresses): Promise<void> {
    const b = this.bus;
    if (this.version === 2) this.noteDeviceArea(index, size, addrs); // the rings are laid out: from here on only the device may change its area
    await b.write(MmioReg.QueueSel, 4, index);
    const inUse = await b.read(this.version === 1 ? MmioReg.QueuePFN : MmioReg.QueueReady, 4);
    if (inUse !== 0) this.deviceVerdict('mmio.device-register-layout.device.5', `queue ${index} reads as in use (${inUse}) before the driver set it up`, { queue: index });
    await b.write(MmioReg.QueueSize, 4, size);
    if (this.version === 1) {
      const page = this.legacy!.queueAlign;
      const { avail, used } = legacySplitLayout(addrs.desc, size, page);
      if (addrs.desc % page !== 0 || addrs.avail !== avail || addrs.used !== used) {
        throw new MmioError('bad-option', `queue ${index}: rings at ${addrs.desc}/${addrs.avail}/${addrs.used} are not in the legacy layout a version 1 device computes from QueuePFN`);
      }
      await b.write(MmioReg.QueueAlign, 4, page);
      await b.write(MmioReg.QueuePFN, 4, addrs.desc / page);
      this.enabled.add(index);
      return;
    }
    const pairs: [number, number][] = [
      [MmioReg.QueueDescLow, addrs.desc],
      [MmioReg.QueueDriverLow, addrs.avail],
      [MmioReg.QueueDeviceLow, addrs.used],
    ];
    for (const [reg, addr] of pairs) {
      await b.write(reg, 4, addr % 2 ** 32);
      await b.write(reg + 4, 4, Math.floor(addr / 2 ** 32));
    }
  }

  /**
   * What only the device writes (split: the used ring; packed: the descriptor ring and the
   * device event suppression structure), copied at setup: until QueueReady is 1 it must stay
   * as it is (mmio.device-register-layout.device.7). Setup is rare: the copy costs nothing that counts.
   */
  private noteDeviceArea(index: number, size: number, addrs: RingAddresses): void {
    const packed = ((this.driverFeatures >> BigInt(Feature.RING_PACKED)) & 1n) === 1n;
    const parts: [number, number][] = packed ? [[addrs.desc, 16 * size], [addrs.used, 4]] : [[addrs.used, 6 + 8 * size]];
    const bytes = this.readParts(parts);
    if (bytes === null) this.deviceArea.delete(index); // rings outside the memory this transport sees: nothing to compare
    else this.deviceArea.set(index, { parts, bytes });
  }

  private readParts(parts: readonly [number, number][]): Uint8Array | null {
    try {
      const bytes = new Uint8Array(parts.reduce((n, [, len]) => n + len, 0));
      let at = 0;
      for (const [addr, len] of parts) {
        this.memory.readInto(addr, bytes, at, len);
        at += len;
      }
      return bytes;
    } catch {
      return null;
    }
  }

  async enableQueue(index: number): Promise<void> {
    if (this.version === 1) return; // QueuePFN enabled it
    await this.bus.write(MmioReg.QueueSel, 4, index);
    const before = this.deviceArea.get(index);
    if (before !== undefined) {
      this.deviceArea.delete(index);
      const now = this.readParts(before.parts);
      if (now !== null && now.some((b, i) => b !== before.bytes[i])) {
        this.deviceVerdict('mmio.device-register-layout.device.7', `queue ${index}: the device wrote its ring (device area at 0x${before.parts[before.parts.length - 1][0].toString(16)}) before QueueReady was 1`, { queue: index });
      }
    }
    await this.bus.write(MmioReg.QueueReady, 4, 1);
    this.enabled.add(index);
    if (this.ringReset) {
      // mmio.device-register-layout.device.9: with RING_RESET, QueueReset reads 0 once the queue is enabled.
      const v = await this.bus.read(MmioReg.QueueReset, 4);
      if (v !== 0) this.deviceVerdict('mmio.device-register-layout.device.9', `queue ${index}: QueueReset reads ${v} after QueueReady 1`, { queue: index, value: v });
    }
  }

  notify(index: number, data?: number): void {
    this.bus.write(MmioReg.QueueNotify, 4, data ?? index).catch(() => undefined);
  }

  async resetQueue(index: number): Promise<void> {
    this.enabled.delete(index);
    this.resetting.add(index);
    await this.bus.write(MmioReg.QueueSel, 4, index);
    await this.bus.write(MmioReg.QueueReset, 4, 1);
  }

  /** mmio.device-register-layout.driver.18: the reset is complete only when QueueReset reads 0. */
  async queueResetPending(index: number): Promise<boolean> {
    await this.bus.write(MmioReg.QueueSel, 4, index);
    const pending = (await this.bus.read(MmioReg.QueueReset, 4)) !== 0;
    if (!pending && this.resetting.has(index)) {
      // Done: read once more. A reset that reads 1 again was still running when it read 0.
      if ((await this.bus.read(MmioReg.QueueReset, 4)) !== 0) {
        this.deviceVerdict('mmio.device-register-layout.device.11', `queue ${index}: QueueReset read 0, then 1 again: the reset was still in progress`, { queue: index });
        return true;
      }
      this.resetting.delete(index);
      if ((await this.bus.read(MmioReg.QueueReady, 4)) !== 0) {
        this.deviceVerdict('mmio.device-register-layout.device.12', `queue ${index}: QueueReset reads 0 but QueueReady still reads 1 after the reset`, { queue: index });
      }
    }
    return pending;
  }

  async queueEnabled(index: number): Promise<boolean> {
    await this.bus.write(MmioReg.QueueSel, 4, index);
    return (await this.bus.read(this.version === 1 ? MmioReg.QueuePFN : MmioReg.QueueReady, 4)) !== 0;
  }

  /**
   * The interrupt line went up: read InterruptStatus, acknowledge what it shows, then hand the
   * events to the driver (mmio.notif-from-the-device.driver.1/.3). A used-buffer bit counts for
   * every enabled queue (driver.2); undefined bits are ignored (driver.15).
   */
  private readonly servicer = new InterruptServicer(async () => {
    const isr = await this.bus.read(MmioReg.InterruptStatus, 4);
    if (isr & ~3) this.deviceVerdict('mmio.device-register-layout.device.4', `InterruptStatus has undefined bits set (0x${isr.toString(16)})`, { isr });
    const bits = isr & (MMIO_INT_VRING | MMIO_INT_CONFIG);
    if (bits === 0) {
      // The line is still up (the bus reports it going down, and has not) yet no event shows:
      // an event that raised it is not presented until acknowledged. The bus reports line
      // changes in order with register replies, so a line our last acknowledgement lowered
      // reads as down here.
      if (this.line.up && this.line.reportsLow) {
        this.deviceVerdict('mmio.device-register-layout.device.3', 'the interrupt line is up but InterruptStatus shows no event', { isr });
      }
      return;
    }
    await this.bus.write(MmioReg.InterruptACK, 4, bits);
    if (bits & MMIO_INT_VRING) for (const q of this.enabled) this.events?.used(q);
    if (bits & MMIO_INT_CONFIG) this.events?.config();
  });

  private deviceVerdict(clause: string, message: string, context: Record<string, unknown>): void {
    this.monitor.report(clause, message, context);
  }

  async close(): Promise<void> {
    this.events = null;
  }
}
