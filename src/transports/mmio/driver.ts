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
  /** The device's interrupt line: `handler(true)` when it goes up (and false when it goes down, where the bus knows). */
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
      if (level) this.servicer.trigger();
    });
  }

  /**
   * Probes the device at `bus` as 4.2.3.1 says: MagicValue and Version first, then DeviceID
   * (mmio.device-init.driver.1/.2). A window with no virtio device, or an empty slot
   * (DeviceID 0), is an MmioError and no other register is touched (mmio.device-init.driver.3).
   */
  static async open(bus: MmioBus, memory: GuestMemory, options: MmioTransportOptions = {}): Promise<MmioTransport> {
    const magic = await bus.read(MmioReg.MagicValue, 4);
    if (magic !== MMIO_MAGIC) throw new MmioError('not-virtio', `MagicValue is 0x${magic.toString(16)}, not 0x${MMIO_MAGIC.toString(16)}: no virtio-mmio device here`);
    const version = await bus.read(MmioReg.Version, 4);
    if (version !== 1 && version !== 2) throw new MmioError('unsupported-version', `virtio-mmio Version ${version}: this driver knows 1 (legacy) and 2`);
    const id = await bus.read(MmioReg.DeviceID, 4);
    if (id === 0) throw new MmioError('no-device', 'DeviceID 0: an empty virtio-mmio slot');
    const t = new MmioTransport(bus, memory, version, id, options);
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
      this.enabled.clear();
      if (this.version === 2) {
        // mmio.device-register-layout.device.5: a reset clears InterruptStatus and every QueueReady.
        const isr = await this.bus.read(MmioReg.InterruptStatus, 4);
        if (isr !== 0) this.deviceVerdict('mmio.device-register-layout.device.5', `InterruptStatus reads 0x${isr.toString(16)} after a reset`, { isr });
      }
    }
  }

  async getDeviceFeatures(): Promise<bigint> {
    await this.bus.write(MmioReg.DeviceFeaturesSel, 4, 1);
    const high = await this.bus.read(MmioReg.DeviceFeatures, 4);
    await this.bus.write(MmioReg.DeviceFeaturesSel, 4, 0);
    const low = await this.bus.read(MmioReg.DeviceFeatures, 4);
    return (BigInt(this.version === 1 ? 0 : high) << 32n) | BigInt(low);
  }

  async setDriverFeatures(features: bigint): Promise<void> {
    await this.bus.write(MmioReg.DriverFeaturesSel, 4, 1);
    await this.bus.write(MmioReg.DriverFeatures, 4, this.version === 1 ? 0 : Number((features >> 32n) & 0xffffffffn));
    await this.bus.write(MmioReg.DriverFeaturesSel, 4, 0);
    await this.bus.write(MmioReg.DriverFeatures, 4, Number(features & 0xffffffffn));
  }

  async configGeneration(): Promise<number> {
    return this.version === 1 ? 0 : this.bus.read(MmioReg.ConfigGeneration, 4);
  }

  /** mmio.device-register-layout.driver.3: 8/16/32-bit accesses; a 64-bit field as two 32-bit halves. */
  async readConfig(offset: number, size: 1 | 2 | 4 | 8): Promise<number | bigint> {
    if (size === 8) {
      const low = await this.bus.read(MmioReg.Config + offset, 4);
      const high = await this.bus.read(MmioReg.Config + offset + 4, 4);
      return (BigInt(high) << 32n) | BigInt(low);
    }
    return this.bus.read(MmioReg.Config + offset, size);
  }

  async writeConfig(offset: number, size: 1 | 2 | 4 | 8, value: number | bigint): Promise<void> {
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

  async enableQueue(index: number): Promise<void> {
    if (this.version === 1) return; // QueuePFN enabled it
    await this.bus.write(MmioReg.QueueSel, 4, index);
    await this.bus.write(MmioReg.QueueReady, 4, 1);
    this.enabled.add(index);
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
    if (!pending && this.resetting.delete(index) && (await this.bus.read(MmioReg.QueueReady, 4)) !== 0) {
      this.deviceVerdict('mmio.device-register-layout.device.12', `queue ${index}: QueueReset reads 0 but QueueReady still reads 1 after the reset`, { queue: index });
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
    if (bits === 0) return;
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
