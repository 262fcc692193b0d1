/**
 * basic.config.driver.2 (2.5, 4.1.4.3, 4.2.2), judged where the register models see the
 * driver's accesses: a driver should bracket a read of configuration space that takes more than
 * one access (a field wider than 32 bits read in halves, several fields) with reads of
 * config_generation, and repeat it until the generation is the same before and after.
 *
 * One access of a field up to 32 bits is atomic, so a single read needs no bracket (Linux reads
 * such fields bare, e.g. virtio_net's status on a configuration change): only a run of two or
 * more device configuration reads in a row is judged, and only when a configuration change
 * could have torn it, i.e. the generation moved without the driver reading it:
 * - before: the run starts after a change the driver has not read the generation since;
 * - after: the generation moved during the run and the driver went on (a register access other
 *   than a configuration or generation read) without reading the generation again.
 * Interrupt traffic (the ISR, InterruptStatus / InterruptACK, notifications) neither starts nor
 * ends a run: an interrupt handler can run in the middle of a well-bracketed read.
 */
import type { VirtioDevice } from './device.js';

/** Tracks the driver's configuration reads against config_generation for one register model. */
export class ConfigReadWatch {
  /** The generation the driver last read (or the one at the last device reset). */
  private seen: number;
  /** Device configuration reads since the last generation read or other register access. */
  private run = 0;
  /** The run began after a change the driver had not read the generation since. */
  private staleAtStart = false;
  /** This run has its verdict (one per run). */
  private judged = false;

  constructor(private readonly device: VirtioDevice) {
    this.seen = device.configGeneration;
  }

  /** A device reset (status 0): a new driver starts with the current generation. */
  reset(): void {
    this.seen = this.device.configGeneration;
    this.run = 0;
  }

  /** The driver read config_generation (ConfigGeneration): a run is bracketed here. */
  generationRead(): void {
    this.seen = this.device.configGeneration;
    this.run = 0;
  }

  /** The driver read device configuration space. */
  configRead(offset: number): void {
    const stale = this.seen !== this.device.configGeneration;
    if (++this.run === 1) {
      this.staleAtStart = stale;
      this.judged = false;
      return;
    }
    if (this.run === 2 && this.staleAtStart) {
      this.judge(`driver read device configuration in several accesses (the second at offset ${offset}) after a configuration change without reading config_generation first`, offset);
    }
  }

  /** Any other register access of the driver (interrupt traffic excluded): a run ends here. */
  otherAccess(): void {
    if (this.run >= 2 && this.seen !== this.device.configGeneration) {
      this.judge(`driver read device configuration in ${this.run} accesses while the configuration changed and did not read config_generation after them`, -1);
    }
    this.run = 0;
  }

  private judge(message: string, offset: number): void {
    if (this.judged) return;
    this.judged = true;
    // A SHOULD: a warning, never acted on in strict mode.
    this.device.monitor.report('basic.config.driver.2', message, { generation: this.device.configGeneration, driverSaw: this.seen, accesses: this.run, offset });
  }
}
