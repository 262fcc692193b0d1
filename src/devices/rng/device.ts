/**
 * Entropy device (spec 5.4): one queue, `requestq`; the driver posts device-writable
 * buffers and the device fills them with random bytes from a pluggable source
 * (crypto.getRandomValues by default, in Node and in browsers).
 *
 * An asynchronous source holds the request until its bytes arrive (into a host buffer, so a
 * late answer never lands in guest memory the driver got back by a reset).
 */
import { DeviceId } from '../../spec/constants.js';
import { VirtioDevice, type VirtioDeviceOptions } from '../../device/device.js';
import { DeviceError } from '../../device/errors.js';
import type { DeviceContext, DeviceType } from '../../device/type.js';
import { ChainWriter, DescriptorChain } from '../../virtqueue/chain.js';
import type { DeviceQueue } from '../../virtqueue/queue.js';
import type { Monitor } from '../../monitor/monitor.js';

/** Fills `dst` with random bytes. */
export type EntropySource = (dst: Uint8Array) => void;
/** Fills `dst` with random bytes by the time the promise resolves (a slow or remote source). */
export type AsyncEntropySource = (dst: Uint8Array) => Promise<void>;

/** crypto.getRandomValues, 64 KiB at a time (its per-call limit). */
export const cryptoEntropy: EntropySource = (dst) => {
  for (let off = 0; off < dst.length; off += 65536) globalThis.crypto.getRandomValues(dst.subarray(off, Math.min(dst.length, off + 65536)));
};

/** How an entropy device gets its bytes and how much it gives per request; shared by {@link RngDeviceType} and {@link RngDevice}. */
export interface RngDeviceOptions {
  /** Where the bytes come from (default {@link cryptoEntropy}). */
  source?: EntropySource;
  /** Used instead of `source` when set: requests are held until it resolves. */
  asyncSource?: AsyncEntropySource;
  /** Bytes given per request at most (the device MAY use less than the buffer: entropy.device-operation.device.2). */
  maxBytesPerRequest?: number;
  /** Largest queue the driver may set up (default 64). */
  queueMaxSize?: number;
  /** RngDevice only: the device's monitor. */
  monitor?: Monitor;
  /** RngDevice only: more options for the device core (tests use this to offer other transport bits). */
  core?: VirtioDeviceOptions;
}

/**
 * The entropy device type: hand it to a {@link VirtioDevice}, or use {@link RngDevice}, which
 * does that from the same options.
 */
export class RngDeviceType implements DeviceType {
  readonly deviceId = DeviceId.ENTROPY;
  readonly name = 'virtio-rng';
  readonly numQueues = 1;
  readonly queueMaxSize: number;
  private readonly source: EntropySource;
  private readonly asyncSource: AsyncEntropySource | undefined;
  private readonly maxBytes: number;
  private readonly chain: DescriptorChain;
  private readonly writer = new ChainWriter();
  private ctx: DeviceContext | null = null;
  /** Bumped on reset: late answers of an asynchronous source are dropped. */
  private epoch = 0;
  /** Bytes handed out since creation. */
  bytesServed = 0;
  /** Requests waiting for an asynchronous source. */
  held = 0;

  /** A type for one device; `monitor` and `core` are ignored here (they are {@link RngDevice}'s). */
  constructor(options: RngDeviceOptions = {}) {
    this.queueMaxSize = options.queueMaxSize ?? 64;
    this.source = options.source ?? cryptoEntropy;
    this.asyncSource = options.asyncSource;
    this.maxBytes = options.maxBytesPerRequest ?? 65536;
    this.chain = DescriptorChain.forQueue(this.queueMaxSize);
  }

  init(ctx: DeviceContext): void {
    if (this.ctx !== null) throw new DeviceError('type-in-use', 'this RngDeviceType already serves a device: make one per device');
    this.ctx = ctx;
  }

  process(q: DeviceQueue, ctx: DeviceContext): void {
    const chain = this.chain;
    q.disableNotifications();
    do {
      while (q.pop(chain)) {
        if (chain.readable > 0) {
          // entropy.device-operation.driver.1: the request queue takes device-writable buffers only.
          ctx.violation('entropy.device-operation.driver.1', `driver placed ${chain.readable} device-readable buffer(s) in the entropy queue (chain ${chain.head})`, { head: chain.head });
          if (!ctx.live) return;
        }
        // entropy.device-operation.device.1/.2: one or more bytes, up to the buffer (or our cap).
        const n = Math.min(chain.writableBytes, this.maxBytes);
        if (this.asyncSource !== undefined) {
          this.holdUntil(q, chain, n, this.asyncSource, ctx);
          continue;
        }
        this.writer.reset(ctx.memory, chain).produce(n, this.source);
        this.bytesServed += n;
        q.addUsed(chain.head, n);
      }
      ctx.complete(q);
    } while (q.enableNotifications());
  }

  /** An asynchronous source: fill a host buffer, then copy into the chain if still current. */
  private holdUntil(q: DeviceQueue, chain: DescriptorChain, n: number, source: AsyncEntropySource, ctx: DeviceContext): void {
    const saved = new DescriptorChain(chain.count);
    saved.clear(chain.head);
    saved.count = chain.count;
    saved.readable = chain.readable;
    saved.writableBytes = chain.writableBytes;
    saved.addrs.set(chain.addrs.subarray(0, chain.count));
    saved.lens.set(chain.lens.subarray(0, chain.count));
    const epoch = this.epoch;
    const bytes = new Uint8Array(n);
    this.held++;
    source(bytes).then(
      () => {
        this.held--;
        if (epoch !== this.epoch || !ctx.live || !q.isInFlight(saved.head)) return;
        new ChainWriter().reset(ctx.memory, saved).write(bytes);
        this.bytesServed += n;
        q.addUsed(saved.head, n);
        ctx.complete(q);
      },
      (err: unknown) => {
        this.held--;
        if (epoch === this.epoch) ctx.needsReset(`entropy source failed: ${err instanceof Error ? err.message : String(err)}`);
      },
    );
  }

  stop(): void {
    this.epoch++;
  }
}

/**
 * An entropy device: a {@link VirtioDevice} of {@link RngDeviceType}, built from its options.
 * `bytesServed` and `held` are the type's, here for convenience.
 */
export class RngDevice extends VirtioDevice<RngDeviceType> {
  /** A device of a new {@link RngDeviceType} from `options`, judged by `options.monitor` (default: a new strict one). */
  constructor(options: RngDeviceOptions = {}) {
    super(new RngDeviceType(options), { monitor: options.monitor, ...options.core });
  }

  /** Bytes handed out since creation. */
  get bytesServed(): number {
    return this.type.bytesServed;
  }

  /** Requests waiting for an asynchronous source. */
  get held(): number {
    return this.type.held;
  }
}
