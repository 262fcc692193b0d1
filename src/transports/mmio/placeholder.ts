/**
 * A virtio-mmio window with no device behind it, for emulators that lay out a fixed set of
 * virtio-mmio slots (as QEMU's microvm and arm virt machines do) and fill only some. Two kinds:
 *
 * - `empty`: a placeholder (4.2.2): MagicValue and Version read as a virtio-mmio version 2
 *   device, DeviceID reads 0. A driver must read the three and leave the slot alone, without
 *   an error (mmio.device-register-layout.driver.8, mmio.device-init.driver.3).
 * - `absent`: no virtio-mmio device at all: every register reads 0, so MagicValue is not
 *   "virt" and a driver must ignore the window (mmio.device-register-layout.driver.4).
 *
 * Every access past the identification is a verdict on the driver and has no effect (reads 0,
 * writes ignored); nothing throws. Browser-safe: no Node import.
 */
import type { Monitor } from '../../monitor/monitor.js';
import { MMIO_MAGIC, MmioReg } from './registers.js';

/** What a {@link VirtioMmioPlaceholder} shows: an empty slot (DeviceID 0) or no device (MagicValue 0). */
export type MmioPlaceholderKind = 'empty' | 'absent';

/**
 * An unpopulated virtio-mmio window. Map `read`/`write` at the slot's address as for a
 * {@link VirtioMmioDevice}; `monitor` receives the verdicts on drivers that do not leave it alone.
 */
export class VirtioMmioPlaceholder {
  /** Register accesses served. */
  readonly counts = { reads: 0, writes: 0 };
  /** One verdict per window: a driver that goes on goes on for many accesses. */
  private judged = false;

  /** A placeholder of `kind` (default `empty`) judged by `monitor`. */
  constructor(
    readonly monitor: Monitor,
    readonly kind: MmioPlaceholderKind = 'empty',
  ) {}

  /** A guest load; never throws. */
  read(offset: number, size: number): number | bigint {
    this.counts.reads++;
    const value = this.kind === 'absent' ? 0 : offset === MmioReg.MagicValue ? MMIO_MAGIC : offset === MmioReg.Version ? 2 : 0;
    // Reading the identification is what the driver must do; anything else is judged (the
    // width of an access is not: that rule, mmio.device-register-layout.driver.2, is the device model's).
    const identification = this.kind === 'absent' ? offset === MmioReg.MagicValue : offset === MmioReg.MagicValue || offset === MmioReg.Version || offset === MmioReg.DeviceID;
    if (!identification) this.judge(offset, size, 'read');
    return size === 8 ? BigInt(value) : value;
  }

  /** A guest store; ignored (and judged); never throws. */
  write(offset: number, size: number, _value: number | bigint): void {
    this.counts.writes++;
    this.judge(offset, size, 'wrote');
  }

  private judge(offset: number, size: number, verb: string): void {
    if (this.judged) return;
    this.judged = true;
    const at = `${size} byte(s) at 0x${offset.toString(16)}`;
    if (this.kind === 'absent') {
      this.monitor.report('mmio.device-register-layout.driver.4', `driver ${verb} ${at} of a window whose MagicValue is not 0x${MMIO_MAGIC.toString(16)}: it must ignore it`, { offset, size });
    } else if (verb === 'wrote') {
      // A store puts the slot to use (a status, a feature, a queue): the slot is not ignored.
      this.monitor.report('mmio.device-register-layout.driver.8', `driver ${verb} ${at} of a placeholder slot (DeviceID 0): it must ignore it`, { offset, size });
    } else {
      this.monitor.report('mmio.device-init.driver.3', `driver ${verb} ${at} of a placeholder slot after DeviceID read 0: no register but MagicValue, Version and DeviceID may be accessed`, { offset, size });
    }
  }
}
