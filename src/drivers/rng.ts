/**
 * Entropy driver (spec 5.4): `read(n)` posts device-writable buffers on the request queue and
 * collects what the device wrote, using only the length it reported
 * (entropy.device-operation.driver.2).
 */
import { DeviceId } from '../spec/constants.js';
import { DriverError, VirtioDriver, type VirtioDriverOptions } from '../driver/driver.js';
import type { DriverTransport } from '../driver/transport.js';
import type { DriverQueue } from '../virtqueue/queue.js';

/** An entropy request in flight (the token of RngDriver's queue: the driver's own; read it, do not commit it). */
export interface RngRequestToken {
  /** The device-writable buffer: `len` bytes at guest `addr`. */
  addr: number;
  len: number;
  /** Settles the request with the bytes the device wrote. */
  resolve: (bytes: Uint8Array) => void;
  /** Fails the request (the driver gave up, the queue was reset, ...). */
  reject: (err: Error) => void;
}

/** RngDriver's options: the driver core's (all optional here) and the largest buffer per request. */
export interface RngDriverOptions extends Partial<VirtioDriverOptions> {
  /** Largest buffer posted per request (default 4096). */
  chunk?: number;
}

export class RngDriver extends VirtioDriver<RngRequestToken> {
  private queue: DriverQueue<RngRequestToken> | null = null;
  private readonly pending = new Set<RngRequestToken>();
  private readonly chunk: number;

  /** An entropy driver over `transport`; start() initializes the device. */
  constructor(transport: DriverTransport, options: RngDriverOptions = {}) {
    super(transport, { deviceId: DeviceId.ENTROPY, queueSize: 64, ...options });
    this.chunk = options.chunk ?? 4096;
    this.onUsed = (q) => this.collect(q);
  }

  /** Initializes the device (3.1.1) with its one request queue. */
  async start(): Promise<void> {
    await this.init({
      setup: async () => {
        this.queue = await this.setupQueue(0);
      },
    });
  }

  /**
   * Returns `n` random bytes from the device. A device that keeps answering with empty buffers
   * (entropy.device-operation.device.1, recorded per buffer) would make this loop forever in a
   * tolerant monitor: after {@link RngDriver.EMPTY_ANSWERS_LIMIT} empty answers in a row the
   * read fails with DriverError `device-violation` instead.
   */
  async read(n: number): Promise<Uint8Array> {
    const out = new Uint8Array(n);
    let got = 0;
    let empty = 0;
    while (got < n) {
      const part = await this.request(Math.min(this.chunk, n - got));
      if (part.length === 0) {
        if (++empty >= RngDriver.EMPTY_ANSWERS_LIMIT) {
          throw new DriverError('device-violation', `the entropy device answered ${empty} requests in a row with no bytes (entropy.device-operation.device.1): giving up instead of asking forever`);
        }
        continue;
      }
      empty = 0;
      out.set(part.subarray(0, Math.min(part.length, n - got)), got);
      got += part.length;
    }
    return out;
  }

  /** How many empty answers in a row `read` takes before it gives up. */
  static readonly EMPTY_ANSWERS_LIMIT = 16;

  /** One request: a single device-writable buffer of `len` bytes (waits while suspended or while the queue is full). */
  async request(len: number): Promise<Uint8Array> {
    for (;;) {
      if (this.state === 'suspended') await this.whenRunning();
      const q = this.queue;
      if (this.state === 'live' && q === null && this.features !== 0n) {
        // The queue is being reset and re-enabled (restartQueue): wait for it.
        await new Promise<void>((resolve, reject) => this.roomWaiters.push({ resolve, reject }));
        continue;
      }
      if (this.state !== 'live' || q === null) throw this.failure ?? new DriverError('not-started', 'entropy driver is not started');
      const addr = this.allocator.alloc(len, 8);
      let req!: RngRequestToken;
      const done = new Promise<Uint8Array>((resolve, reject) => (req = { addr, len, resolve, reject }));
      if (q.begin().addWritable(addr, len).commit(req) >= 0) {
        this.pending.add(req);
        this.kick(q);
        return done;
      }
      // No room: wait until the device returns a buffer, then try again.
      this.allocator.release(addr);
      await new Promise<void>((resolve, reject) => this.roomWaiters.push({ resolve, reject }));
    }
  }

  private readonly roomWaiters: { resolve: () => void; reject: (err: Error) => void }[] = [];

  /**
   * Resets the request queue alone (VIRTIO_F_RING_RESET) and brings it back, optionally with
   * another size. Requests the device had not answered fail with a DriverError.
   */
  async restartQueue(options: { size?: number } = {}): Promise<void> {
    this.queue = null;
    const tokens = await this.resetQueue(0);
    const err = new DriverError('cancelled', 'the entropy queue was reset before the device answered');
    for (const req of tokens) {
      this.pending.delete(req);
      this.allocator.release(req.addr);
      req.reject(err);
    }
    this.queue = await this.reenableQueue(0, options);
    for (const w of this.roomWaiters.splice(0)) w.resolve();
  }

  private collect(q: DriverQueue<RngRequestToken>): void {
    do {
      let req: RngRequestToken | undefined;
      while ((req = q.getUsed()) !== undefined) {
        this.pending.delete(req);
        const len = q.lastLen;
        if (len === 0) {
          this.deviceViolation('entropy.device-operation.device.1', `device returned a ${req.len}-byte entropy buffer with no bytes in it`, { id: q.lastId });
        }
        const bytes = new Uint8Array(len);
        this.transport.memory.read(req.addr, bytes);
        this.allocator.release(req.addr);
        req.resolve(bytes);
      }
    } while (q.enableInterrupts() && !q.broken);
    for (const w of this.roomWaiters.splice(0)) w.resolve();
  }

  protected override onBroken(err: DriverError): void {
    for (const req of this.pending) req.reject(err);
    this.pending.clear();
    for (const w of this.roomWaiters.splice(0)) w.reject(err);
  }
}
