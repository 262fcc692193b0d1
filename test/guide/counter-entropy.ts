// counter-entropy.ts
import { ChainWriter, DescriptorChain, DeviceId, type DeviceContext, type DeviceQueue, type DeviceType } from '../../src/index.js';

/**
 * An entropy device (device ID 4) whose "random" bytes count up: 0, 1, 2, ... 255, 0, ...
 * A test double for software that reads a hardware RNG; never a source of real entropy.
 */
export class CounterEntropy implements DeviceType {
  readonly deviceId = DeviceId.ENTROPY;
  readonly name = 'counter-rng';
  readonly numQueues = 1; // the entropy device's one queue, requestq
  readonly queueMaxSize = 64;
  /** The next byte to hand out. */
  next = 0;
  // Allocated once: the hot path allocates nothing per request.
  private readonly chain = DescriptorChain.forQueue(this.queueMaxSize);
  private readonly writer = new ChainWriter();
  private readonly count = (bytes: Uint8Array): void => {
    for (let i = 0; i < bytes.length; i++) bytes[i] = this.next++ & 0xff;
  };

  process(queue: DeviceQueue, ctx: DeviceContext): void {
    queue.disableNotifications();
    do {
      while (queue.pop(this.chain)) {
        const chain = this.chain;
        if (chain.readable > 0) {
          // The driver broke a rule of spec 5.4: the monitor names it, and in strict mode
          // the core puts the device in DEVICE_NEEDS_RESET.
          ctx.violation('entropy.device-operation.driver.1', `chain ${chain.head} has device-readable buffers`);
          if (!ctx.live) return;
        }
        const n = chain.writableBytes;
        this.writer.reset(ctx.memory, chain).produce(n, this.count); // straight into guest memory
        queue.addUsed(chain.head, n); // n bytes written into the buffer
      }
      ctx.complete(queue); // one used-index update, and a notification if the driver wants one
    } while (queue.enableNotifications()); // buffers that came meanwhile: go round again
  }

  /** A reset starts the count again. */
  reset(): void {
    this.next = 0;
  }
}
