/**
 * A minimal virtio-fs driver (spec 5.11): sets the device up with its hiprio queue and request
 * queues, reads the tag, and carries FUSE requests: `send` posts the request bytes as one
 * device-readable buffer and, when a reply is expected, a device-writable buffer of `room`
 * bytes, and resolves with what the device wrote (its used length). A {@link FuseClient} over
 * `driver.fuseSend` speaks FUSE through it. Used by the tests (a virtio-fs device with no guest)
 * and by anyone driving a virtio-fs device from JavaScript.
 *
 * Browser-safe.
 */
import { DeviceId } from '../spec/constants.js';
import { FsConfig, FS_HIPRIO_QUEUE } from '../spec/fs.js';
import { DriverError, VirtioDriver, type VirtioDriverOptions } from '../driver/driver.js';
import type { DriverTransport } from '../driver/transport.js';
import type { DriverQueue } from '../virtqueue/queue.js';

/** A request in flight (FsDriver's queue token). */
export interface FsRequestToken {
  addr: number;
  reqLen: number;
  room: number;
  /** Settles the request with the bytes the device wrote (null: none). */
  resolve: (reply: Uint8Array | null) => void;
  /** Fails the request (the driver broke down). */
  reject: (err: Error) => void;
}

/** FsDriver's options: the driver core's and how many request queues to use. */
export interface FsDriverOptions extends Partial<VirtioDriverOptions> {
  /** Request queues to set up (default 1; at most num_request_queues). */
  requestQueues?: number;
}

/** The minimal virtio-fs driver: see the module doc. */
export class FsDriver extends VirtioDriver<FsRequestToken> {
  private readonly fsQueues: (DriverQueue<FsRequestToken> | null)[] = [];
  private readonly pending = new Set<FsRequestToken>();
  private readonly requestQueuesWanted: number;
  /** The device's tag (after start). */
  tag = '';
  /** num_request_queues the device offers (after start). */
  numRequestQueues = 0;
  private next = 0;

  /** A driver over `transport`; start() initializes the device. */
  constructor(transport: DriverTransport, options: FsDriverOptions = {}) {
    super(transport, { deviceId: DeviceId.FS, queueSize: 64, ...options });
    this.requestQueuesWanted = options.requestQueues ?? 1;
    this.onUsed = (q) => this.collect(q);
  }

  /** Initializes the device (3.1.1): reads the config, sets up hiprio and the request queues. */
  async start(): Promise<void> {
    await this.init({
      setup: async () => {
        const cfg = await this.readConfig(async (r) => {
          const tag = new Uint8Array(FsConfig.tagSize);
          for (let i = 0; i < FsConfig.tagSize; i++) tag[i] = Number(await r(FsConfig.tag + i, 1));
          return { tag, n: Number(await r(FsConfig.numRequestQueues, 4)) };
        });
        const end = cfg.tag.indexOf(0);
        this.tag = new TextDecoder().decode(cfg.tag.subarray(0, end < 0 ? cfg.tag.length : end));
        this.numRequestQueues = cfg.n;
        // fs.device-config-layout.device.1: at least one request queue; with none the driver uses one anyway (it cannot work otherwise).
        if (cfg.n < 1) this.deviceViolation('fs.device-config-layout.device.1', `device advertises num_request_queues ${cfg.n}`, { numRequestQueues: cfg.n });
        const use = Math.max(1, Math.min(this.requestQueuesWanted, cfg.n));
        for (let i = 0; i <= use; i++) this.fsQueues[i] = await this.setupQueue(i);
      },
    });
  }

  /**
   * Sends one FUSE request on queue `queue` (default: hiprio for FORGET-type requests when
   * `hiprio`, else the request queues in turn). `room` 0: no device-writable buffer (the
   * request gets no reply). Resolves with the bytes the device wrote, or null for none.
   */
  async send(req: Uint8Array, room: number, hiprio = false, queue?: number): Promise<Uint8Array | null> {
    const index = queue ?? (hiprio ? FS_HIPRIO_QUEUE : 1 + (this.next++ % (this.fsQueues.length - 1)));
    const q = this.fsQueues[index];
    if (this.state !== 'live' || q === null || q === undefined) throw this.failure ?? new DriverError('not-started', `virtio-fs queue ${index} is not set up`);
    const addr = this.allocator.alloc(req.length + room, 8);
    this.transport.memory.write(addr, req);
    let token!: FsRequestToken;
    const done = new Promise<Uint8Array | null>((resolve, reject) => (token = { addr, reqLen: req.length, room, resolve, reject }));
    const b = q.begin().addReadable(addr, req.length);
    if (room > 0) b.addWritable(addr + req.length, room);
    if (b.commit(token) < 0) {
      this.allocator.release(addr);
      throw new DriverError('wrong-state', `virtio-fs queue ${index} is full`);
    }
    this.pending.add(token);
    this.kick(q);
    return done;
  }

  /** `send` in the shape {@link FuseClient} takes. */
  readonly fuseSend = (req: Uint8Array, room: number, hiprio: boolean): Promise<Uint8Array | null> => this.send(req, room, hiprio);

  private collect(q: DriverQueue<FsRequestToken>): void {
    do {
      let t: FsRequestToken | undefined;
      while ((t = q.getUsed()) !== undefined) {
        this.pending.delete(t);
        const len = Math.min(q.lastLen, t.room);
        let reply: Uint8Array | null = null;
        if (t.room > 0 && len > 0) {
          reply = new Uint8Array(len);
          this.transport.memory.read(t.addr + t.reqLen, reply);
        }
        this.allocator.release(t.addr);
        t.resolve(reply);
      }
    } while (q.enableInterrupts() && !q.broken);
  }

  protected override onBroken(err: DriverError): void {
    for (const t of this.pending) t.reject(err);
    this.pending.clear();
  }
}
