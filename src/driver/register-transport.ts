/**
 * What the register-based driver transports (virtio-mmio, virtio-pci) share.
 *
 * @packageDocumentation
 */

/**
 * Serialised interrupt handling for register-based driver transports (virtio-mmio, virtio-pci
 * INTx): an interrupt starts one asynchronous pass (read the status register, acknowledge,
 * deliver); an interrupt that arrives during a pass makes it run once more when it ends, so
 * none is lost and two passes never interleave their register accesses.
 */
export class InterruptServicer {
  private running = false;
  private again = false;

  /** `pass` reads what the device says and delivers it; a rejection (the bus went away) ends the pass quietly. */
  constructor(private readonly pass: () => Promise<void>) {}

  /** An interrupt arrived. */
  trigger(): void {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    void this.loop();
  }

  private async loop(): Promise<void> {
    try {
      do {
        this.again = false;
        await this.pass();
      } while (this.again);
    } catch {
      // The bus went away: nothing more to deliver.
    } finally {
      this.running = false;
    }
  }
}

/**
 * Counts queues on a transport without a queue count register (virtio-mmio, the PCI legacy
 * layout): queues are numbered from 0 and the first that reports a maximum size of 0 ends them.
 */
export async function probeQueueCount(maxSize: (index: number) => Promise<number>, limit = 1024): Promise<number> {
  let n = 0;
  while (n < limit && (await maxSize(n)) > 0) n++;
  return n;
}
