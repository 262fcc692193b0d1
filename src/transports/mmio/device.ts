/**
 * The device side of virtio-mmio (spec 4.2): a register model an emulator maps at a guest
 * physical address. The emulator forwards each guest load and store in the device's window to
 * {@link VirtioMmioDevice.read} / {@link VirtioMmioDevice.write} and wires the interrupt line;
 * the model drives a {@link VirtioDevice} (any device type, unchanged) the way the loopback
 * transport does.
 *
 * Version 2 is the modern interface; version 1 the legacy one (4.2.4: GuestPageSize, QueuePFN,
 * QueueAlign and the legacy split ring layout; no FEATURES_OK). Every guest access is answered:
 * an access the spec forbids (a width other than 32 bits on a control register, a read of a
 * write-only register, a queue register written while the queue is ready) is a monitor verdict
 * naming its `mmio.` clause, and then has a defined effect (reads give 0, writes are ignored),
 * never an exception.
 *
 * Browser-safe: no Node import.
 */
import type { DeviceHost, VirtioDevice } from '../../device/device.js';
import { ConfigReadWatch } from '../../device/config-watch.js';
import type { GuestMemory } from '../../memory/guest-memory.js';
import { Feature } from '../../spec/constants.js';
import { VirtioTsError } from '../../errors.js';
import { MMIO_INT_CONFIG, MMIO_INT_VRING, MMIO_MAGIC, MmioReg, mmioRegisterAccess } from './registers.js';

/** What can be wrong with how an embedder set the model up (MmioError's `kind`). */
export type MmioErrorKind = 'bad-option' | 'not-virtio' | 'no-device' | 'unsupported-version';

/**
 * The virtio-mmio layer's one error: an embedder's option that cannot work (`bad-option`), or,
 * on the driver side, a window that holds no usable device (`not-virtio`: wrong MagicValue;
 * `no-device`: DeviceID 0; `unsupported-version`: a Version other than 1 or 2). Nothing a
 * guest driver does throws: that is a verdict.
 */
export class MmioError extends VirtioTsError<MmioErrorKind> {}

/** A shared memory region (2.10) the device exposes through SHMSel / SHMLen / SHMBase. */
export interface SharedMemoryRegion {
  /** The region's id (what SHMSel selects; unique per device). */
  id: number;
  /** Guest-physical base address. */
  base: bigint;
  /** Length in bytes. */
  length: bigint;
}

/** How a {@link VirtioMmioDevice} is set up. */
export interface MmioDeviceOptions {
  /** 2 (modern, default) or 1 (legacy). */
  version?: 1 | 2;
  /** VendorID (default 0x1af4). */
  vendorId?: number;
  /**
   * The interrupt line: called with true when InterruptStatus becomes non-zero and with false
   * when the driver acknowledged every bit (level-triggered, as on a real platform).
   */
  interrupt?: (level: boolean) => void;
  /** Shared memory regions (version 2 only). */
  sharedMemory?: readonly SharedMemoryRegion[];
}

/** The largest page size / alignment a legacy driver may choose (beyond it a value is refused). */
const LEGACY_MAX_PAGE = 1 << 16;

/**
 * A virtio device behind the virtio-mmio register layout. Construct it with the device and
 * guest memory (the device is attached at once), map `read`/`write` at the device's window:
 *
 * ```ts
 * const mmio = new VirtioMmioDevice(new RngDevice(), memory, { interrupt: (level) => cpu.setIrq(5, level) });
 * bus.map(0xd0000000, 0x200, { read: (off, size) => mmio.read(off, size), write: (off, size, v) => mmio.write(off, size, v) });
 * ```
 */
export class VirtioMmioDevice implements DeviceHost {
  readonly version: 1 | 2;
  readonly vendorId: number;
  /** Register accesses served (`reads`, `writes`), interrupts raised (`interrupts`: line went high). */
  readonly counts = { reads: 0, writes: 0, interrupts: 0 };
  private irq: (level: boolean) => void;
  private readonly shm: readonly SharedMemoryRegion[];
  private isr = 0;
  private deviceFeaturesSel = 0;
  private driverFeaturesSel = 0;
  private driverFeatures = 0n;
  private queueSel = 0;
  private shmSel = 0;
  private pageSize = 4096;
  private queueAlign = 4096;
  /** Per queue: QueueSize as written (default: the maximum), legacy QueuePFN. */
  private readonly queueSize: number[] = [];
  private readonly queuePfn: number[] = [];
  /** Per queue: the driver wrote QueueReady 0 to a running queue: it takes no new buffers until a reset. */
  private readonly stopped: boolean[] = [];
  /** What the driver did that later accesses are judged by (mmio.device-register-layout.driver.10/.11/.14/.18, device-init, notif). */
  /** The driver's configuration reads against ConfigGeneration (basic.config.driver.2; version 2 only). */
  private readonly configWatch: ConfigReadWatch;
  private readonly seen = {
    magic: false,
    version: false,
    deviceId: false,
    initialized: false,
    deviceFeaturesSel: false,
    driverFeaturesSel: false,
    /** InterruptStatus was read since the line last went up. */
    statusRead: true,
    /** Queue whose QueueReady 0 must be read back next (-1: none). */
    stopReadBack: -1,
    /** Queues reset with QueueReset and not yet read back as 0. */
    resetPending: new Set<number>(),
  };

  /** Puts `device` behind the registers, over `memory` (the device is attached now). */
  constructor(
    readonly device: VirtioDevice,
    readonly memory: GuestMemory,
    options: MmioDeviceOptions = {},
  ) {
    const version = options.version ?? 2;
    if (version !== 1 && version !== 2) throw new MmioError('bad-option', `virtio-mmio version ${String(version)}: only 1 (legacy) and 2 (modern) exist`);
    this.version = version;
    this.configWatch = new ConfigReadWatch(device);
    this.vendorId = options.vendorId ?? 0x1af4;
    this.irq = options.interrupt ?? (() => undefined);
    this.shm = options.sharedMemory ?? [];
    const ids = new Set(this.shm.map((r) => r.id));
    if (ids.size !== this.shm.length) throw new MmioError('bad-option', 'shared memory region ids must be unique');
    if (version === 1 && this.shm.length > 0) throw new MmioError('bad-option', 'shared memory regions need virtio-mmio version 2');
    this.resetRegisters();
    device.attach(memory, this);
  }

  // ---------------------------------------------------------------- DeviceHost

  /** The driver sees changes only through the registers: it is never synchronous with the device. */
  readonly synchronous = false;
  /** QueueNotify carries the 2.9 value when VIRTIO_F_NOTIFICATION_DATA is negotiated (version 2). */
  get notificationData(): boolean {
    return this.version === 2;
  }
  /** Version 1 is the legacy interface. */
  get legacy(): boolean {
    return this.version === 1;
  }

  /** Used-buffer notification: InterruptStatus bit 0, line up (mmio.device-register-layout.device.3). */
  interrupt(_index: number): void {
    this.raise(MMIO_INT_VRING);
  }

  /** Configuration change notification: InterruptStatus bit 1. */
  configChanged(): void {
    this.raise(MMIO_INT_CONFIG);
  }

  private raise(bit: number): void {
    const was = this.isr;
    this.isr |= bit;
    if (was !== this.isr) this.seen.statusRead = false;
    if (was === 0) {
      this.counts.interrupts++;
      this.irq(true);
    }
  }

  /**
   * Connects (or replaces) the interrupt line after construction: for buses that are made after
   * the device (a test bus, an emulator that wires IRQs last). The line's current level is
   * told at once.
   */
  connectInterrupt(line: (level: boolean) => void): void {
    this.irq = line;
    if (this.isr !== 0) line(true);
  }

  /** InterruptStatus as the device holds it (no side effect): for emulators that poll the line. */
  get interruptStatus(): number {
    return this.isr;
  }

  // ---------------------------------------------------------------- the bus

  /**
   * A guest load of `size` bytes (1, 2, 4 or 8) at `offset` from the device's base. Returns the
   * value (a number; an 8-byte load gives a bigint); never throws.
   */
  read(offset: number, size: number): number | bigint {
    this.counts.reads++;
    if (this.seen.stopReadBack >= 0) this.checkReadBack(offset, true);
    if (offset >= MmioReg.Config) {
      if (this.version === 2) this.configWatch.configRead(offset - MmioReg.Config);
      return this.readConfig(offset - MmioReg.Config, size);
    }
    if (offset === MmioReg.ConfigGeneration) this.configWatch.generationRead();
    else if (offset !== MmioReg.InterruptStatus) this.configWatch.otherAccess();
    if (!this.controlAccess(offset, size, 'read')) return size === 8 ? 0n : 0;
    const access = mmioRegisterAccess(offset, this.version);
    if (access === 'w') {
      this.violation('mmio.device-register-layout.driver.1', `driver read the write-only register at 0x${offset.toString(16)}`, { offset });
      return 0;
    }
    return this.readRegister(offset) >>> 0;
  }

  /** A guest store of `size` bytes at `offset`; never throws. */
  write(offset: number, size: number, value: number | bigint): void {
    this.counts.writes++;
    if (this.seen.stopReadBack >= 0) this.checkReadBack(offset, false);
    if (offset !== MmioReg.InterruptACK && offset !== MmioReg.QueueNotify) this.configWatch.otherAccess();
    if (offset >= MmioReg.Config) {
      this.writeConfig(offset - MmioReg.Config, size, value);
      return;
    }
    if (!this.controlAccess(offset, size, 'wrote')) return;
    const access = mmioRegisterAccess(offset, this.version);
    if (access === 'r') {
      this.violation('mmio.device-register-layout.driver.1', `driver wrote the read-only register at 0x${offset.toString(16)}`, { offset, value: Number(value) });
      return;
    }
    this.writeRegister(offset, Number(BigInt.asUintN(32, toBigInt(value))));
  }

  /** Control registers: 32 bits wide and aligned only (mmio.device-register-layout.driver.2), and only the ones the table has (driver.1). */
  private controlAccess(offset: number, size: number, verb: string): boolean {
    if (size !== 4 || offset % 4 !== 0) {
      this.violation('mmio.device-register-layout.driver.2', `driver ${verb} ${size} byte(s) at control register offset 0x${offset.toString(16)} (only 32-bit aligned accesses)`, { offset, size });
      return false;
    }
    if (mmioRegisterAccess(offset, this.version) === undefined) {
      if (this.version === 1 && mmioRegisterAccess(offset, 2) !== undefined) {
        // A version 2 register on a version 1 device: the driver neither ignored a device whose
        // Version is not 2 nor drove it through the legacy interface (4.2.4) the Version names.
        this.violation('mmio.device-register-layout.driver.6', `driver ${verb} the version 2 register at 0x${offset.toString(16)} of a device whose Version is 1`, { offset });
        return false;
      }
      this.violation('mmio.device-register-layout.driver.1', `driver ${verb} offset 0x${offset.toString(16)}, which is no register of virtio-mmio version ${this.version}`, { offset });
      return false;
    }
    return true;
  }

  /** mmio.device-register-layout.driver.14: QueueReady 0 is read back before anything else. */
  private checkReadBack(offset: number, isRead: boolean): void {
    const q = this.seen.stopReadBack;
    this.seen.stopReadBack = -1;
    if (isRead && offset === MmioReg.QueueReady && this.queueSel === q) return;
    this.violation('mmio.device-register-layout.driver.14', `driver stopped queue ${q} (QueueReady 0) and did not read QueueReady back before going on`, { queue: q, offset });
  }

  private get selected() {
    return this.device.queues[this.queueSel];
  }

  private readRegister(offset: number): number {
    const d = this.device;
    const R = MmioReg;
    switch (offset) {
      case R.MagicValue:
        this.seen.magic = true;
        return MMIO_MAGIC;
      case R.Version:
        this.seen.version = true;
        return this.version;
      case R.DeviceID:
        this.seen.deviceId = true;
        return d.deviceId;
      case R.VendorID:
        return this.vendorId;
      case R.DeviceFeatures: {
        if (!this.seen.deviceFeaturesSel) {
          this.seen.deviceFeaturesSel = true; // one verdict per reset
          this.violation('mmio.device-register-layout.driver.10', 'driver read DeviceFeatures without writing DeviceFeaturesSel first', {});
        }
        // Legacy: bits 32 and up are not there (VERSION_1 and every later transport bit).
        if (this.version === 1 && this.deviceFeaturesSel !== 0) return 0;
        return Number((d.getDeviceFeatures() >> BigInt(this.deviceFeaturesSel * 32)) & 0xffffffffn);
      }
      case R.QueueSizeMax:
        return this.selected === undefined ? 0 : d.queueMaxSize;
      case R.QueueReady: {
        const q = this.selected;
        return q !== undefined && q.enabled && !this.stopped[this.queueSel] ? 1 : 0;
      }
      case R.QueuePFN:
        return this.queuePfn[this.queueSel] ?? 0;
      case R.InterruptStatus:
        this.seen.statusRead = true;
        return this.isr;
      case R.Status:
        return d.readStatus();
      case R.SHMLenLow:
      case R.SHMLenHigh:
      case R.SHMBaseLow:
      case R.SHMBaseHigh: {
        const region = this.shm.find((r) => r.id === this.shmSel);
        // 4.2.2: a region that does not exist reads as length -1 (all ones).
        if (region === undefined) return offset === R.SHMLenLow || offset === R.SHMLenHigh ? 0xffffffff : 0;
        const v = offset === R.SHMLenLow || offset === R.SHMLenHigh ? region.length : region.base;
        return Number(offset === R.SHMLenLow || offset === R.SHMBaseLow ? v & 0xffffffffn : (v >> 32n) & 0xffffffffn);
      }
      case R.QueueReset:
        this.seen.resetPending.delete(this.queueSel);
        // The model resets a queue at once: it never reads 1 (mmio.device-register-layout.device.8, .11, .12).
        return 0;
      case R.ConfigGeneration:
        return d.configGeneration;
      default:
        return 0;
    }
  }

  private writeRegister(offset: number, value: number): void {
    const d = this.device;
    const R = MmioReg;
    switch (offset) {
      case R.DeviceFeaturesSel:
        this.deviceFeaturesSel = value;
        this.seen.deviceFeaturesSel = true;
        return;
      case R.DriverFeaturesSel:
        this.driverFeaturesSel = value;
        this.seen.driverFeaturesSel = true;
        return;
      case R.DriverFeatures: {
        if (!this.seen.driverFeaturesSel) {
          this.seen.driverFeaturesSel = true;
          this.violation('mmio.device-register-layout.driver.11', 'driver wrote DriverFeatures without writing DriverFeaturesSel first', {});
        }
        if (this.driverFeaturesSel > 1) return; // bits past 63: no device has them, nothing to merge
        if (this.version === 1 && this.driverFeaturesSel !== 0) return; // legacy: 32 bits only
        const shift = BigInt(this.driverFeaturesSel * 32);
        this.driverFeatures = (this.driverFeatures & ~(0xffffffffn << shift)) | (BigInt(value) << shift);
        d.setDriverFeatures(this.driverFeatures);
        return;
      }
      case R.GuestPageSize:
        if (this.legacySize('GuestPageSize', value)) this.pageSize = value;
        return;
      case R.QueueSel:
        this.queueSel = value;
        return;
      case R.QueueSize:
        this.writeQueueSize(value);
        return;
      case R.QueueAlign:
        if (this.legacySize('QueueAlign', value)) this.queueAlign = value;
        return;
      case R.QueuePFN:
        this.writeQueuePfn(value);
        return;
      case R.QueueReady:
        this.writeQueueReady(value);
        return;
      case R.QueueNotify:
        this.notify(value);
        return;
      case R.InterruptACK:
        if (value & ~(MMIO_INT_VRING | MMIO_INT_CONFIG)) {
          this.violation('mmio.device-register-layout.driver.17', `driver set undefined bits 0x${(value & ~3).toString(16)} in InterruptACK`, { value });
        } else if (value & ~this.isr) {
          this.violation('mmio.device-register-layout.driver.16', `driver acknowledged event bits 0x${(value & ~this.isr).toString(16)} that are not pending (InterruptStatus 0x${this.isr.toString(16)})`, {
            value,
            status: this.isr,
          });
        }
        if (value & this.isr && !this.seen.statusRead) {
          this.violation('mmio.notif-from-the-device.driver.1', 'driver acknowledged an interrupt without reading InterruptStatus first', { value });
        }
        this.isr &= ~value;
        if (this.isr === 0) this.irq(false);
        return;
      case R.Status:
        this.writeStatus(value);
        return;
      case R.QueueDescLow:
      case R.QueueDescHigh:
      case R.QueueDriverLow:
      case R.QueueDriverHigh:
      case R.QueueDeviceLow:
      case R.QueueDeviceHigh:
        this.writeQueueAddress(offset, value);
        return;
      case R.SHMSel:
        this.shmSel = value;
        return;
      case R.QueueReset:
        if (value === 1) this.resetQueue();
        return;
    }
  }

  /** Legacy GuestPageSize and QueueAlign: a power of 2 up to 64 KiB, else a verdict and the write is ignored. */
  private legacySize(name: string, value: number): boolean {
    if (value !== 0 && value <= LEGACY_MAX_PAGE && (value & (value - 1)) === 0) return true;
    this.violation('mmio.device-register-layout.driver.1', `driver wrote ${name} ${value}, not a power of 2 up to 64 KiB`, { value });
    return false;
  }

  private writeStatus(value: number): void {
    if (!this.seen.initialized) {
      this.seen.initialized = true;
      if (!this.seen.magic || !this.seen.version) {
        this.violation('mmio.device-init.driver.1', 'driver started initializing the device without reading MagicValue and Version first', {});
      } else if (!this.seen.deviceId) {
        // 4.2.3.1: after a valid MagicValue and Version the driver reads DeviceID (0: an empty slot, abort) before anything else.
        this.violation('mmio.device-init.driver.2', 'driver started initializing the device without reading DeviceID after MagicValue and Version', {});
      }
    }
    this.device.setStatus(value);
    if ((value & 0xff) === 0) {
      this.configWatch.reset();
      // mmio.device-register-layout.device.5: InterruptStatus and every QueueReady read 0 after a reset.
      this.resetRegisters();
      if (this.isr !== 0) {
        this.isr = 0;
        this.irq(false);
      }
    }
  }

  private resetRegisters(): void {
    this.deviceFeaturesSel = 0;
    this.driverFeaturesSel = 0;
    this.seen.deviceFeaturesSel = false;
    this.seen.driverFeaturesSel = false;
    this.seen.resetPending.clear();
    this.driverFeatures = 0n;
    this.queueSel = 0;
    this.shmSel = 0;
    for (let i = 0; i < this.device.numQueues; i++) {
      this.queueSize[i] = this.device.queueMaxSize;
      this.queuePfn[i] = 0;
      this.stopped[i] = false;
    }
  }

  /** Whether the selected queue is ready (mmio.device-register-layout.driver.13 forbids its setup registers then). */
  private readyGuard(what: string): boolean {
    const q = this.selected;
    if (q === undefined) return false; // no such queue: the write goes nowhere
    this.resetReadBack(what);
    if (q.enabled && !this.stopped[this.queueSel]) {
      this.violation('mmio.device-register-layout.driver.13', `driver wrote ${what} of queue ${this.queueSel} while QueueReady is 1`, { queue: this.queueSel });
      return false;
    }
    return true;
  }

  private writeQueueSize(value: number): void {
    if (!this.readyGuard('QueueSize')) return;
    if (value > this.device.queueMaxSize) {
      this.violation('mmio.device-register-layout.driver.12', `driver wrote QueueSize ${value} for queue ${this.queueSel}, above QueueSizeMax ${this.device.queueMaxSize}`, {
        queue: this.queueSel,
        value,
      });
      return;
    }
    this.queueSize[this.queueSel] = value;
    this.device.setQueueSize(this.queueSel, value);
  }

  private writeQueueAddress(offset: number, value: number): void {
    if (!this.readyGuard('a ring address')) return;
    const q = this.selected!;
    const R = MmioReg;
    const merge = (old: number, high: boolean) => (high ? value * 2 ** 32 + (old % 2 ** 32) : Math.floor(old / 2 ** 32) * 2 ** 32 + value);
    let { descAddr: desc, availAddr: avail, usedAddr: used } = q;
    if (offset === R.QueueDescLow || offset === R.QueueDescHigh) desc = merge(desc, offset === R.QueueDescHigh);
    else if (offset === R.QueueDriverLow || offset === R.QueueDriverHigh) avail = merge(avail, offset === R.QueueDriverHigh);
    else used = merge(used, offset === R.QueueDeviceHigh);
    this.device.setQueueAddresses(this.queueSel, desc, avail, used);
  }

  private writeQueueReady(value: number): void {
    const q = this.selected;
    if (q === undefined) return;
    if (value !== 0) {
      this.resetReadBack('QueueReady');
      if (q.enabled) return; // already ready
      this.device.enableQueue(this.queueSel);
      return;
    }
    // "Stop using the queue" (4.2.2): the device takes no new buffers from it; buffers in
    // progress still complete. It starts again after a device reset or a queue reset.
    if (q.enabled) {
      q.pause();
      this.stopped[this.queueSel] = true;
    }
    this.seen.stopReadBack = this.queueSel;
  }

  /**
   * A queue reset is complete only once QueueReset reads 0: setting the queue up again or
   * notifying it before that breaks mmio.device-register-layout.driver.18 (the MMIO form) and
   * basic.vq-reset.driver.1 (2.6.1: the driver must verify the reset). The two are distinct
   * statements of the spec (the general duty to verify, and the register that tells), both
   * broken by the one act, so both are named.
   */
  private resetReadBack(what: string, queue = this.queueSel): void {
    if (!this.seen.resetPending.has(queue)) return;
    this.seen.resetPending.delete(queue);
    const message = `driver ${what === 'notified' ? what : `wrote ${what} of`} queue ${queue} after QueueReset without reading QueueReset back as 0`;
    this.violation('mmio.device-register-layout.driver.18', message, { queue });
    this.violation('basic.vq-reset.driver.1', message, { queue });
  }

  private resetQueue(): void {
    const q = this.selected;
    if (q === undefined || !this.device.negotiated(Feature.RING_RESET)) return;
    this.device.resetQueue(this.queueSel);
    this.seen.resetPending.add(this.queueSel);
    this.stopped[this.queueSel] = false;
    this.queueSize[this.queueSel] = this.device.queueMaxSize;
  }

  /** Legacy QueuePFN (4.2.4): the rings' page; 0 stops the queue. */
  private writeQueuePfn(pfn: number): void {
    const q = this.selected;
    if (q === undefined) return;
    const index = this.queueSel;
    if (pfn === 0) {
      this.queuePfn[index] = 0;
      if (q.enabled) {
        q.pause();
        this.stopped[index] = true;
      }
      return;
    }
    if (q.enabled && !this.stopped[index]) {
      this.violation('mmio.device-register-layout.driver.13', `driver wrote QueuePFN of queue ${index} while it is in use`, { queue: index });
      return;
    }
    const num = this.queueSize[index];
    const desc = pfn * this.pageSize;
    const { avail, used } = legacySplitLayout(desc, num, this.queueAlign);
    this.queuePfn[index] = pfn;
    this.device.setQueueSize(index, num);
    this.device.setQueueAddresses(index, desc, avail, used);
    this.device.enableQueue(index);
  }

  private notify(value: number): void {
    const nd = this.device.negotiated(Feature.NOTIFICATION_DATA);
    const index = nd ? value & 0xffff : value;
    this.resetReadBack('notified', index);
    if (this.stopped[index] === true) return; // a stopped queue takes no buffers
    this.device.notify(index, nd ? value : undefined);
  }

  // ---------------------------------------------------------------- configuration space

  /** Device configuration: 8, 16 and 32-bit aligned accesses (mmio.device-register-layout.driver.3). */
  private configAccess(offset: number, size: number, verb: string): boolean {
    if ((size !== 1 && size !== 2 && size !== 4) || offset % size !== 0) {
      if (this.version === 1 && (size === 1 || size === 2 || size === 4 || size === 8)) return true; // legacy: any width
      this.violation('mmio.device-register-layout.driver.3', `driver ${verb} ${size} byte(s) of configuration space at offset ${offset} (8, 16 or 32-bit aligned accesses only)`, {
        offset,
        size,
      });
      return false;
    }
    return true;
  }

  private readConfig(offset: number, size: number): number | bigint {
    if (!this.configAccess(offset, size, 'read')) return size === 8 ? 0n : 0;
    if (offset % size !== 0 && size > 1) return this.readConfigBytes(offset, size);
    return this.device.readConfig(offset, size);
  }

  /** Legacy: an unaligned access reads the bytes one by one (the same result as natural accesses). */
  private readConfigBytes(offset: number, size: number): number | bigint {
    let v = 0n;
    for (let i = size - 1; i >= 0; i--) v = (v << 8n) | BigInt(this.device.readConfig(offset + i, 1));
    return size === 8 ? v : Number(v);
  }

  private writeConfig(offset: number, size: number, value: number | bigint): void {
    if (!this.configAccess(offset, size, 'wrote')) return;
    const v = toBigInt(value);
    this.device.writeConfig(offset, size, size === 8 ? BigInt.asUintN(64, v) : Number(BigInt.asUintN(size * 8, v)));
  }

  // ---------------------------------------------------------------- verdicts

  /** A verdict on the driver; in strict mode the device then needs a reset (as for every core verdict). */
  private violation(clause: string, message: string, context: Record<string, unknown>): void {
    const v = this.device.monitor.report(clause, message, context);
    if (this.device.monitor.shouldAct(v)) this.device.needsReset(`${clause}: ${message}`);
  }
}

/** An emulator's value as a bigint: integers as they are (negative ones two's complement later), anything else 0. */
function toBigInt(value: number | bigint): bigint {
  if (typeof value === 'bigint') return value;
  return Number.isFinite(value) ? BigInt(Math.trunc(value)) : 0n;
}

/**
 * The legacy split ring layout (2.7.2, "Legacy Interfaces: A Note on Virtqueue Layout"): the
 * available ring right after the descriptor table, the used ring at the next `align` boundary.
 */
export function legacySplitLayout(desc: number, size: number, align: number): { avail: number; used: number } {
  const avail = desc + 16 * size;
  const used = Math.ceil((avail + 6 + 2 * size) / align) * align;
  return { avail, used };
}
