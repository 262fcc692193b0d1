/**
 * Entropy device (spec 5.4): one queue, `requestq`; the driver posts device-writable
 * buffers and the device fills them with random bytes from a pluggable source
 * (crypto.getRandomValues by default, in Node and in browsers).
 */
import { DeviceId } from '../core/constants.js';
import { VirtioDevice, type VirtioDeviceOptions } from '../core/device.js';
import { ChainWriter, DescriptorChain } from '../core/virtqueue/chain.js';
import type { SplitDeviceQueue } from '../core/virtqueue/split-device.js';
import type { Monitor } from '../conformance/monitor.js';

/** Fills `dst` with random bytes. */
export type EntropySource = (dst: Uint8Array) => void;

/** crypto.getRandomValues, 64 KiB at a time (its per-call limit). */
export const cryptoEntropy: EntropySource = (dst) => {
  for (let off = 0; off < dst.length; off += 65536) globalThis.crypto.getRandomValues(dst.subarray(off, Math.min(dst.length, off + 65536)));
};

export interface RngDeviceOptions {
  source?: EntropySource;
  /** Bytes given per request at most (the device MAY use less than the buffer: entropy.device-operation.device.2). */
  maxBytesPerRequest?: number;
  queueMaxSize?: number;
  monitor?: Monitor;
  /** Extra options for the device core (tests use this to offer other transport bits). */
  core?: Partial<VirtioDeviceOptions>;
}

export class RngDevice extends VirtioDevice {
  private readonly source: EntropySource;
  private readonly maxBytes: number;
  private readonly chain: DescriptorChain;
  private readonly writer = new ChainWriter();
  /** Bytes handed out since creation. */
  bytesServed = 0;

  constructor(options: RngDeviceOptions = {}) {
    super({
      deviceId: DeviceId.ENTROPY,
      numQueues: 1,
      queueMaxSize: options.queueMaxSize ?? 64,
      monitor: options.monitor,
      name: 'virtio-rng',
      ...options.core,
    });
    this.source = options.source ?? cryptoEntropy;
    this.maxBytes = options.maxBytesPerRequest ?? 65536;
    this.chain = new DescriptorChain((options.queueMaxSize ?? 64) + 64);
  }

  protected processQueue(q: SplitDeviceQueue): void {
    const chain = this.chain;
    q.disableNotifications();
    do {
      while (q.pop(chain)) {
        if (chain.readable > 0) {
          // entropy.device-operation.driver.1: the request queue takes device-writable buffers only.
          this.violation('entropy.device-operation.driver.1', `driver placed ${chain.readable} device-readable buffer(s) in the entropy queue (chain ${chain.head})`, { head: chain.head });
          if (!this.live) return;
        }
        const n = Math.min(chain.writableBytes, this.maxBytes);
        const w = this.writer.reset(this.memory, chain);
        w.produce(n, this.source);
        this.bytesServed += n;
        q.addUsed(chain.head, n); // entropy.device-operation.device.1: one or more bytes when there is room
      }
      this.complete(q);
    } while (q.enableNotifications());
  }
}
