/**
 * Console device (spec 5.3): one port (receiveq 0, transmitq 1) or, with
 * VIRTIO_CONSOLE_F_MULTIPORT, up to max_nr_ports ports managed over two control queues
 * (control receiveq 2, control transmitq 3; port N >= 1 on queues 2N+2 / 2N+3).
 * VIRTIO_CONSOLE_F_SIZE gives cols/rows (config change for port 0, RESIZE messages per port);
 * VIRTIO_CONSOLE_F_EMERG_WRITE makes emerg_wr a one-character output register that works at
 * any time, even on an unconfigured device.
 *
 * The host side of each port is a {@link ConsolePortEndpoint} (a terminal, a socket, a log):
 * what the driver transmits goes to its `write`; what the host has for the driver is pushed
 * through the {@link ConsoleHostPort} the device hands the endpoint, and waits in a bounded
 * buffer until the driver gives receive buffers (push returns false over the high-water mark;
 * `drain` says when to go on).
 *
 * Receive buffers are taken from the ring as soon as the driver makes them available (the
 * usual consume-all-then-re-enable-notifications loop) and held until host bytes arrive.
 * Held receive buffers are not work in progress: a suspend does not wait for them, and host
 * bytes not delivered yet survive a reset.
 *
 * Browser-safe: no Node import.
 */
import { DeviceId, Status } from '../../spec/constants.js';
import { VirtioDevice, type VirtioDeviceOptions } from '../../device/device.js';
import { DeviceError } from '../../device/errors.js';
import type { ConditionalConfigField, DeviceContext, DeviceType } from '../../device/type.js';
import { bit, hasFeature } from '../../spec/features.js';
import {
  CONSOLE_FEATURES,
  ConsoleConfig,
  ConsoleEvent,
  consoleEventName,
  CONTROL_HEADER_SIZE,
  CONTROL_RECEIVEQ,
  receiveQueueOf,
  consoleQueueRole,
  encodeControl,
  encodeResize,
  type ConsoleSize,
} from '../../spec/console.js';
import { ChainReader, ChainWriter, DescriptorChain } from '../../virtqueue/chain.js';
import type { DeviceQueue } from '../../virtqueue/queue.js';
import type { Monitor } from '../../monitor/monitor.js';

/** What the device gives a port's endpoint: the way into the driver. */
export interface ConsoleHostPort {
  readonly id: number;
  /**
   * Queues host bytes for the driver (the device keeps a reference: do not reuse the array).
   * Returns false when the buffer is over its high-water mark: stop until the endpoint's
   * `drain` is called. Bytes beyond the hard limit are dropped (counted in `dropped`).
   */
  push(bytes: Uint8Array): boolean;
  /** The host side connected (true) or went away (false): PORT_OPEN to the driver with MULTIPORT. */
  setHostOpen(open: boolean): void;
  /** Bytes waiting for receive buffers. */
  readonly buffered: number;
  /** Bytes dropped because the buffer was at its hard limit. */
  readonly dropped: number;
  /** Whether the driver has the port open (single port: whenever the device is live). */
  readonly guestOpen: boolean;
  /** Whether the host side is connected. */
  readonly hostOpen: boolean;
}

/** The host side of a port (a terminal, a socket, a log): where its bytes go and come from. */
export interface ConsolePortEndpoint {
  /**
   * Bytes the driver transmitted, in order. A returned promise holds the transmit buffer
   * (and the rest of that transmitq) until it settles: backpressure on the driver.
   */
  write(bytes: Uint8Array): void | Promise<void>;
  /** The port was added to a device: keep `port` to push host bytes. */
  attach?(port: ConsoleHostPort): void;
  /** The port was removed from the device. */
  detach?(): void;
  /** After `push` returned false: the buffer went below the low-water mark. */
  drain?(): void;
  /** The driver opened or closed the port (PORT_OPEN from the driver). */
  guestOpen?(open: boolean): void;
}

/** @deprecated Renamed: use {@link ConsolePortEndpoint} ("backend" also named the vhost-user server). */
export type ConsolePortBackend = ConsolePortEndpoint;

/** The host side of a port: `endpoint` (`backend` is its old name). */
export type ConsolePortEndpointOption =
  | { endpoint: ConsolePortEndpoint; backend?: undefined }
  | {
      /** @deprecated Renamed: use `endpoint`. */
      backend: ConsolePortEndpoint;
      endpoint?: undefined;
    };

/** One port of a console device: its host-side endpoint and the {@link ConsolePortOptions} the driver is told. */
export type ConsolePortConfig = ConsolePortEndpointOption & ConsolePortOptions;

/** What the driver learns about a port beyond its bytes: name, console role, open state and size (5.3.6.2). */
export interface ConsolePortOptions {
  /** Sent to the driver in PORT_NAME (multiport). */
  name?: string;
  /** Nominated as a console port with CONSOLE_PORT (multiport). Default: true for port 0. */
  console?: boolean;
  /** Whether the host side starts connected (default true; the endpoint may change it). */
  hostOpen?: boolean;
  /** Console size of this port (port 0: the cols/rows configuration fields). */
  size?: ConsoleSize;
}

/**
 * How a console device is built: its ports and their endpoints, which features it offers
 * (MULTIPORT, SIZE, EMERG_WRITE; 5.3.3) and how much host data it buffers per port.
 */
export interface ConsoleDeviceOptions {
  /** Ports present from the start, by id (port 0 first; holes allowed with MULTIPORT). */
  ports?: (ConsolePortConfig | undefined)[];
  /** Shorthand for `ports: [{ endpoint }]`. */
  endpoint?: ConsolePortEndpoint;
  /** @deprecated Renamed: use `endpoint`. */
  backend?: ConsolePortEndpoint;
  /** max_nr_ports (default: the number of ports given). More than 1 offers MULTIPORT. */
  maxPorts?: number;
  /** Offer VIRTIO_CONSOLE_F_MULTIPORT even with max_nr_ports 1. */
  multiport?: boolean;
  /** Offer VIRTIO_CONSOLE_F_SIZE with this size of port 0 (default 80 x 25; null: not offered). */
  size?: ConsoleSize | null;
  /**
   * VIRTIO_CONSOLE_F_EMERG_WRITE: false to not offer it; a function to receive the bytes;
   * default true: they go to port 0's endpoint.
   */
  emergencyWrite?: boolean | ((byte: number) => void);
  /** Buffered host bytes per port at which push() says stop (default 64 KiB). */
  highWater?: number;
  /** Buffered host bytes per port beyond which push() drops (default 4 MiB). */
  maxBuffered?: number;
  /** Largest queue the driver may set up (default 128). */
  queueMaxSize?: number;
  /** ConsoleDevice only: the device's monitor. */
  monitor?: Monitor;
  /** ConsoleDevice only: more options for the device core (tests use this to offer other transport bits). */
  core?: VirtioDeviceOptions;
}

interface PortState {
  readonly id: number;
  readonly config: ConsolePortConfig;
  readonly endpoint: ConsolePortEndpoint;
  readonly host: ConsoleHostPort;
  size: ConsoleSize | null;
  hostOpen: boolean;
  /** This session: DEVICE_ADD sent. */
  added: boolean;
  /** PORT_READY with value 1 received. */
  ready: boolean;
  /** PORT_OPEN 1 from the driver (single port: always). */
  guestOpen: boolean;
  /** CONSOLE_PORT delivered; the driver's answer (PORT_OPEN 1) not seen yet. */
  consoleAwaitingOpen: boolean;
  /** Host bytes for the driver: chunks[0] from `offset` on. */
  chunks: Uint8Array[];
  offset: number;
  buffered: number;
  dropped: number;
  /** push() returned false: call drain() when below the low-water mark. */
  stopped: boolean;
  /** An endpoint write promise is pending: the transmitq waits. */
  txHeld: boolean;
}

/** What a port's host view reaches of the device (closures over the port's state). */
interface PortOps {
  state(): PortState;
  push(bytes: Uint8Array): boolean;
  setHostOpen(open: boolean): void;
  guestOpen(): boolean;
}

/**
 * A port's host view (a class, not an object literal with accessors, which V8 keeps in
 * dictionary mode: a hash lookup on every push).
 */
class PortHost implements ConsoleHostPort {
  constructor(
    readonly id: number,
    private readonly ops: PortOps,
  ) {}
  push(bytes: Uint8Array): boolean {
    return this.ops.push(bytes);
  }
  setHostOpen(open: boolean): void {
    this.ops.setHostOpen(open);
  }
  get buffered(): number {
    return this.ops.state().buffered;
  }
  get dropped(): number {
    return this.ops.state().dropped;
  }
  get guestOpen(): boolean {
    return this.ops.guestOpen();
  }
  get hostOpen(): boolean {
    return this.ops.state().hostOpen;
  }
}

/**
 * The console device type: hand it to a {@link VirtioDevice}, or use {@link ConsoleDevice},
 * which does that from the same options. One per device (it keeps the ports). The ports given
 * in the options are added (and their endpoints attached) when the device is made.
 */
export class ConsoleDeviceType implements DeviceType {
  readonly deviceId = DeviceId.CONSOLE;
  readonly name = 'virtio-console';
  readonly numQueues: number;
  readonly queueMaxSize: number;
  readonly features: bigint;
  readonly configSize = ConsoleConfig.size;
  readonly conditionalFields: readonly ConditionalConfigField[] = [
    { name: 'cols', offset: ConsoleConfig.cols, size: 2, feature: CONSOLE_FEATURES.SIZE },
    { name: 'rows', offset: ConsoleConfig.rows, size: 2, feature: CONSOLE_FEATURES.SIZE },
    { name: 'max_nr_ports', offset: ConsoleConfig.maxNrPorts, size: 4, feature: CONSOLE_FEATURES.MULTIPORT },
    { name: 'emerg_wr', offset: ConsoleConfig.emergWr, size: 4, feature: CONSOLE_FEATURES.EMERG_WRITE },
  ];
  readonly maxPorts: number;
  private readonly ports = new Map<number, PortState>();
  private readonly initialPorts: (ConsolePortConfig | undefined)[];
  private readonly size: ConsoleSize | null;
  private readonly chain: DescriptorChain;
  private readonly reader = new ChainReader();
  private readonly writer = new ChainWriter();
  private readonly highWater: number;
  private readonly maxBuffered: number;
  private readonly emergency: ((byte: number) => void) | null;
  private ctx: DeviceContext | null = null;
  /** Control messages for the driver, waiting for control receive buffers. */
  private ctrlOut: Uint8Array[] = [];
  /** This session: a DEVICE_READY arrived (any value) / with value 1. */
  private readySeen = false;
  private deviceReady = false;
  /** Bumped on reset: late endpoint answers are dropped. */
  private epoch = 0;
  /** Receive buffers taken and not used yet, per queue, oldest first. */
  private readonly stash = new Map<number, DescriptorChain[]>();
  private held = 0;
  /** Queues to look at (re-entrant notifications are deferred to the running loop). */
  private readonly dirty = new Set<number>();
  private running = false;
  /** Counters for tests and logs. */
  readonly stats = { toDriver: 0, fromDriver: 0, emergency: 0, controlIn: 0, controlOut: 0, ignoredControl: 0, droppedTx: 0 };

  /**
   * A type for one device. Port 0 is required (`ports[0]` or `endpoint`), a TypeError without
   * it; more ports than `maxPorts` are a RangeError. The offer follows the options: MULTIPORT
   * when `maxPorts` > 1 or `multiport`, SIZE unless `size` is null, EMERG_WRITE unless
   * `emergencyWrite` is false. `monitor` and `core` are ignored (they are {@link ConsoleDevice}'s).
   */
  constructor(options: ConsoleDeviceOptions = {}) {
    const first = options.endpoint ?? options.backend;
    const ports = options.ports ?? (first !== undefined ? [{ endpoint: first }] : []);
    if (ports[0] === undefined) throw new TypeError('a console device needs port 0 (options.ports[0] or options.endpoint)');
    const maxPorts = Math.max(1, options.maxPorts ?? ports.length);
    if (ports.length > maxPorts) throw new RangeError(`${ports.length} ports given, max_nr_ports is ${maxPorts}`);
    const multiport = maxPorts > 1 || options.multiport === true;
    const size = options.size === undefined ? { cols: 80, rows: 25 } : options.size;
    const emerg = options.emergencyWrite ?? true;
    const f = CONSOLE_FEATURES;
    let features = 0n;
    if (size !== null) features |= bit(f.SIZE);
    if (multiport) features |= bit(f.MULTIPORT);
    if (emerg !== false) features |= bit(f.EMERG_WRITE);
    this.features = features;
    this.numQueues = multiport ? 2 * maxPorts + 2 : 2;
    this.queueMaxSize = options.queueMaxSize ?? 128;
    this.maxPorts = maxPorts;
    this.size = size;
    this.initialPorts = ports;
    this.chain = DescriptorChain.forQueue(this.queueMaxSize);
    this.highWater = options.highWater ?? 64 * 1024;
    this.maxBuffered = Math.max(this.highWater, options.maxBuffered ?? 4 << 20);
    this.emergency = typeof emerg === 'function' ? emerg : null;
  }

  /** The initial configuration space; the ports given in the options are added. */
  init(ctx: DeviceContext): void {
    if (this.ctx !== null) throw new DeviceError('type-in-use', 'this ConsoleDeviceType already serves a device: make one per device');
    this.ctx = ctx;
    const v = ctx.config;
    const size = this.size;
    if (size !== null) {
      v.setUint16(ConsoleConfig.cols, size.cols, true);
      v.setUint16(ConsoleConfig.rows, size.rows, true);
    }
    if (this.offers(CONSOLE_FEATURES.MULTIPORT)) v.setUint32(ConsoleConfig.maxNrPorts, this.maxPorts, true);
    this.initialPorts.forEach((p, id) => {
      if (p !== undefined) this.addPort(id, id === 0 && size !== null ? { size, ...p } : p);
    });
  }

  /** The context init() was given. */
  private get context(): DeviceContext {
    if (this.ctx === null) throw new DeviceError('not-attached', 'this ConsoleDeviceType is not part of a VirtioDevice yet');
    return this.ctx;
  }

  /** Whether the device offers a console feature. */
  private offers(featureBit: number): boolean {
    return hasFeature(this.ctx?.offered ?? this.features, featureBit);
  }

  // ---------------------------------------------------------------- host API

  /** Whether MULTIPORT was negotiated (the control queues are in use). */
  get multiport(): boolean {
    return this.ctx?.negotiated(CONSOLE_FEATURES.MULTIPORT) ?? false;
  }

  /** Port ids present on the host side. */
  get portIds(): number[] {
    return [...this.ports.keys()].sort((a, b) => a - b);
  }

  /** The host view of port `id` (undefined when there is none). */
  port(id: number): ConsoleHostPort | undefined {
    return this.ports.get(id)?.host;
  }

  /**
   * Adds a port (hot-plug). With MULTIPORT, once the driver sent DEVICE_READY, the driver
   * hears of it with DEVICE_ADD. A port id must be below max_nr_ports and not in use.
   */
  addPort(id: number, config: ConsolePortConfig): ConsoleHostPort {
    if (!Number.isInteger(id) || id < 0 || id >= this.maxPorts) throw new RangeError(`port ${id} is outside max_nr_ports ${this.maxPorts}`);
    if (this.ports.has(id)) throw new DeviceError('port-exists', `port ${id} exists`);
    if (id > 0 && !this.offers(CONSOLE_FEATURES.MULTIPORT)) throw new DeviceError('no-multiport', 'ports other than 0 need VIRTIO_CONSOLE_F_MULTIPORT');
    const endpoint = config.endpoint ?? config.backend;
    if (endpoint === undefined) throw new TypeError(`port ${id} needs an endpoint`);
    const self = this;
    const state: PortState = {
      id,
      config,
      endpoint,
      size: config.size ?? null,
      hostOpen: config.hostOpen ?? true,
      added: false,
      ready: false,
      guestOpen: false,
      consoleAwaitingOpen: false,
      chunks: [],
      offset: 0,
      buffered: 0,
      dropped: 0,
      stopped: false,
      txHeld: false,
      host: new PortHost(id, {
        state: () => state,
        push: (bytes) => self.push(state, bytes),
        setHostOpen: (open) => self.setHostOpen(state, open),
        guestOpen: () => self.isGuestOpen(state),
      }),
    };
    this.ports.set(id, state);
    endpoint.attach?.(state.host);
    if (this.multiport && this.deviceReady && this.context.live) this.announce(state);
    return state.host;
  }

  /** Removes a port (hot-unplug): DEVICE_REMOVE to the driver if it was told of the port. */
  removePort(id: number): void {
    const p = this.ports.get(id);
    if (p === undefined) throw new DeviceError('no-such-port', `port ${id} does not exist`);
    if (!this.offers(CONSOLE_FEATURES.MULTIPORT)) throw new DeviceError('no-multiport', 'ports can be removed only with VIRTIO_CONSOLE_F_MULTIPORT');
    this.ports.delete(id);
    if (p.added && this.multiport) this.sendControl(id, ConsoleEvent.DEVICE_REMOVE, 0);
    p.endpoint.detach?.();
  }

  /**
   * The console of port `id` changed size. Port 0: the cols/rows fields and a configuration
   * change notification (VIRTIO_CONSOLE_F_SIZE); with MULTIPORT, a RESIZE message as well.
   */
  resize(cols: number, rows: number, id = 0): void {
    const p = this.ports.get(id);
    if (p === undefined) throw new DeviceError('no-such-port', `port ${id} does not exist`);
    p.size = { cols, rows };
    if (id === 0 && this.offers(CONSOLE_FEATURES.SIZE)) {
      this.context.updateConfig((v) => {
        v.setUint16(ConsoleConfig.cols, cols, true);
        v.setUint16(ConsoleConfig.rows, rows, true);
      });
    }
    if (this.multiport && p.ready) this.sendControl(id, ConsoleEvent.RESIZE, 0, encodeResize(cols, rows));
  }

  // ---------------------------------------------------------------- emergency write

  /**
   * emerg_wr: with VIRTIO_CONSOLE_F_EMERG_WRITE offered, a write is accepted at any time,
   * before or without negotiation, even after FAILED (console.device-init.device.1), and its
   * lower byte goes out (console.device-init.device.2). Other writes go the usual way.
   */
  writeRegister(offset: number, size: number, value: number | bigint): boolean {
    if (offset === ConsoleConfig.emergWr && (size === 1 || size === 2 || size === 4) && this.offers(CONSOLE_FEATURES.EMERG_WRITE)) {
      this.emergencyWrite(typeof value === 'bigint' ? Number(value & 0xffn) : value & 0xff);
      return true;
    }
    return false;
  }

  private emergencyWrite(byte: number): void {
    this.stats.emergency++;
    if (this.emergency !== null) {
      this.emergency(byte);
      return;
    }
    const p = this.ports.get(0);
    if (p === undefined) return;
    const r = p.endpoint.write(Uint8Array.of(byte));
    if (r instanceof Promise) r.catch(() => undefined);
  }

  // ---------------------------------------------------------------- host bytes to the driver

  private push(p: PortState, bytes: Uint8Array): boolean {
    if (bytes.length > 0 && this.ports.get(p.id) === p) {
      const room = this.maxBuffered - p.buffered;
      if (room <= 0) p.dropped += bytes.length;
      else {
        const take = bytes.length <= room ? bytes : bytes.subarray(0, room);
        p.dropped += bytes.length - take.length;
        p.chunks.push(take);
        p.buffered += take.length;
        this.wake(this.rxIndex(p.id));
      }
    }
    const ok = p.buffered < this.highWater;
    if (!ok) p.stopped = true;
    return ok;
  }

  private setHostOpen(p: PortState, open: boolean): void {
    if (p.hostOpen === open) return;
    p.hostOpen = open;
    if (this.multiport && p.ready && this.ports.get(p.id) === p) this.sendControl(p.id, ConsoleEvent.PORT_OPEN, open ? 1 : 0);
  }

  private isGuestOpen(p: PortState): boolean {
    const s = this.ctx?.status ?? 0; // running or suspended, not failed
    if (!(s & (Status.DRIVER_OK | Status.SUSPEND)) || s & (Status.FAILED | Status.DEVICE_NEEDS_RESET)) return false;
    return this.multiport ? p.guestOpen : p.id === 0;
  }

  private rxIndex(port: number): number {
    return receiveQueueOf(port);
  }

  /** Runs a queue's handler when the device may touch it. */
  private wake(index: number): void {
    const ctx = this.ctx;
    const q = ctx?.queues[index];
    if (q !== undefined) ctx!.resume(q);
  }

  // ---------------------------------------------------------------- queues

  process(q: DeviceQueue, ctx: DeviceContext): void {
    this.dirty.add(q.index);
    if (this.running) return; // the loop below picks it up
    this.running = true;
    try {
      while (this.dirty.size > 0) {
        const index = this.dirty.values().next().value as number;
        this.dirty.delete(index);
        const dq = ctx.queues[index];
        if (dq === undefined || !dq.active || !ctx.accepting) continue;
        this.handle(dq);
      }
    } finally {
      this.running = false;
    }
  }

  private handle(q: DeviceQueue): void {
    const role = consoleQueueRole(q.index, this.multiport);
    if (role === null) return; // a queue this configuration does not use
    switch (role.kind) {
      case 'receive':
        this.deliver(q, this.ports.get(role.port));
        return;
      case 'transmit':
        this.transmit(q, role.port);
        return;
      case 'control-receive':
        this.deliverControl(q);
        return;
      case 'control-transmit':
        this.receiveControl(q);
        return;
    }
  }

  /** Whether port bytes may go to the driver now. */
  private deliverable(p: PortState): boolean {
    if (!this.multiport) return p.id === 0;
    return p.added && p.ready && p.guestOpen;
  }

  /**
   * Takes every available buffer of a receiveq (port or control) into its stash. False when a
   * verdict stopped the device.
   */
  private takeAll(q: DeviceQueue, what: string): boolean {
    const list = this.stashOf(q.index);
    const chain = this.chain;
    while (q.pop(chain)) {
      if (chain.readable > 0) {
        this.context.violation('console.device-operation.driver.1', `driver put ${chain.readable} device-readable buffer(s) in the ${what} (queue ${q.index}, chain ${chain.head})`, {
          queue: q.index,
          head: chain.head,
        });
        if (!this.context.live) return false;
      }
      list.push(DescriptorChain.copyOf(chain));
      this.held++;
    }
    return true;
  }

  private stashOf(index: number): DescriptorChain[] {
    let list = this.stash.get(index);
    if (list === undefined) this.stash.set(index, (list = []));
    return list;
  }

  /** The oldest held buffer of a receiveq, now to be used. */
  private nextHeld(list: DescriptorChain[]): DescriptorChain {
    this.held--;
    return list.shift()!;
  }

  /** Fills held receive buffers with the port's buffered bytes (port undefined: only takes buffers). */
  private deliver(q: DeviceQueue, p: PortState | undefined): void {
    const list = this.stashOf(q.index);
    q.disableNotifications();
    do {
      if (!this.takeAll(q, `receiveq of port ${(q.index === 0 ? 0 : (q.index - 2) >> 1)}`)) return;
      while (p !== undefined && p.buffered > 0 && list.length > 0 && this.deliverable(p)) {
        const chain = this.nextHeld(list);
        const w = this.writer.reset(this.context.memory, chain);
        let n = 0;
        while (w.remaining > 0 && p.buffered > 0) {
          const c = p.chunks[0];
          const take = Math.min(c.length - p.offset, w.remaining);
          w.write(c.subarray(p.offset, p.offset + take));
          n += take;
          p.offset += take;
          p.buffered -= take;
          if (p.offset === c.length) {
            p.chunks.shift();
            p.offset = 0;
          }
        }
        this.stats.toDriver += n;
        q.addUsed(chain.head, n);
      }
      this.context.complete(q);
    } while (q.enableNotifications());
    if (p !== undefined && p.stopped && p.buffered < this.highWater / 2) {
      p.stopped = false;
      p.endpoint.drain?.();
    }
  }

  /** Takes the driver's bytes to the port's endpoint, in order; a pending endpoint write holds the queue. */
  private transmit(q: DeviceQueue, port: number): void {
    const chain = this.chain;
    const first = this.ports.get(port);
    if (first?.txHeld) return;
    q.disableNotifications();
    do {
      while (q.pop(chain)) {
        if (chain.count > chain.readable) {
          this.context.violation('console.device-operation.driver.2', `driver put ${chain.count - chain.readable} device-writable buffer(s) in the transmitq of port ${port} (queue ${q.index}, chain ${chain.head})`, {
            queue: q.index,
            head: chain.head,
          });
          if (!this.context.live) return;
        }
        const bytes = new Uint8Array(chain.readableBytes);
        this.reader.reset(this.context.memory, chain).read(bytes);
        const p = this.ports.get(port);
        if (p === undefined) {
          // No such port (never added, or removed): the bytes have nowhere to go.
          this.stats.droppedTx += bytes.length;
          q.addUsed(chain.head, 0);
          continue;
        }
        this.stats.fromDriver += bytes.length;
        const r = bytes.length > 0 ? p.endpoint.write(bytes) : undefined;
        if (r instanceof Promise) {
          this.hold(q, p, chain.head, r);
          this.context.complete(q);
          return;
        }
        q.addUsed(chain.head, 0);
      }
      this.context.complete(q);
    } while (q.enableNotifications());
  }

  /** An endpoint write in progress: its buffer is used, and the queue resumes, when it settles. */
  private hold(q: DeviceQueue, p: PortState, head: number, pending: Promise<void>): void {
    p.txHeld = true;
    const epoch = this.epoch;
    const settle = (): void => {
      p.txHeld = false;
      if (epoch !== this.epoch || !q.active || !q.isInFlight(head)) return;
      q.addUsed(head, 0);
      this.context.complete(q);
      this.wake(q.index);
    };
    pending.then(settle, settle);
  }

  // ---------------------------------------------------------------- control queues (MULTIPORT)

  /** Queues a control message for the driver (MULTIPORT). Protected for test peers that send what they must not. */
  protected sendControl(id: number, event: number, value: number, payload?: Uint8Array): void {
    this.ctrlOut.push(encodeControl(id, event, value, payload));
    this.wake(CONTROL_RECEIVEQ);
  }

  /** DEVICE_ADD for a port the driver does not know yet. */
  private announce(p: PortState): void {
    if (p.added) return;
    p.added = true;
    this.sendControl(p.id, ConsoleEvent.DEVICE_ADD, 0);
  }

  private deliverControl(q: DeviceQueue): void {
    const list = this.stashOf(q.index);
    q.disableNotifications();
    do {
      if (!this.takeAll(q, 'control receiveq')) return;
      while (this.ctrlOut.length > 0 && list.length > 0) {
        const chain = this.nextHeld(list);
        const msg = this.ctrlOut.shift()!;
        const n = Math.min(msg.length, chain.writableBytes);
        this.writer.reset(this.context.memory, chain).write(msg.subarray(0, n));
        q.addUsed(chain.head, n);
        this.stats.controlOut++;
        this.sent(msg);
      }
      this.context.complete(q);
    } while (q.enableNotifications());
  }

  /** Bookkeeping for a message the driver now has. */
  private sent(msg: Uint8Array): void {
    const v = new DataView(msg.buffer, msg.byteOffset, msg.length);
    if (v.getUint16(4, true) !== ConsoleEvent.CONSOLE_PORT) return;
    const p = this.ports.get(v.getUint32(0, true));
    if (p !== undefined) p.consoleAwaitingOpen = true;
  }

  private receiveControl(q: DeviceQueue): void {
    const chain = this.chain;
    q.disableNotifications();
    do {
      while (q.pop(chain)) {
        if (chain.count > chain.readable) {
          this.context.violation('console.device-operation.driver.2', `driver put ${chain.count - chain.readable} device-writable buffer(s) in the control transmitq (chain ${chain.head})`, { queue: q.index, head: chain.head });
          if (!this.context.live) return;
        }
        const head = chain.head;
        if (chain.readableBytes < CONTROL_HEADER_SIZE) {
          // Too short to be a message: nothing to act on.
          this.stats.ignoredControl++;
          q.addUsed(head, 0);
          continue;
        }
        const r = this.reader.reset(this.context.memory, chain);
        const id = r.readU32();
        const event = r.readU16();
        const value = r.readU16();
        q.addUsed(head, 0);
        this.stats.controlIn++;
        this.onControl(id, event, value);
        if (!this.context.live) return;
      }
      this.context.complete(q);
    } while (q.enableNotifications());
  }

  /** A control message from the driver. */
  private onControl(id: number, event: number, value: number): void {
    if (event === ConsoleEvent.DEVICE_READY) {
      if (this.readySeen && this.deviceReady) return; // said twice: nothing new
      this.readySeen = true;
      this.deviceReady = value === 1;
      if (this.deviceReady) for (const id of this.portIds) this.announce(this.ports.get(id)!);
      return;
    }
    if (event !== ConsoleEvent.PORT_READY && event !== ConsoleEvent.PORT_OPEN) {
      // DEVICE_ADD, CONSOLE_PORT, ... are the device's messages; unknown events have no meaning.
      this.stats.ignoredControl++;
      return;
    }
    if (!this.readySeen) {
      this.context.violation('console.multiport-device-operation.driver.1', `driver sent ${consoleEventName(event)} for port ${id} without having sent VIRTIO_CONSOLE_DEVICE_READY`, { id, event, value });
      if (!this.context.live) return;
    }
    const p = this.ports.get(id);
    if (p === undefined || !p.added) {
      // No such port, or one the driver was not told of: no clause covers it; ignored.
      this.stats.ignoredControl++;
      return;
    }
    if (event === ConsoleEvent.PORT_READY) {
      if (value !== 1) {
        p.ready = false;
        return;
      }
      if (p.ready) return;
      p.ready = true;
      if (p.config.console ?? p.id === 0) this.sendControl(id, ConsoleEvent.CONSOLE_PORT, 1);
      if (p.size !== null) this.sendControl(id, ConsoleEvent.RESIZE, 0, encodeResize(p.size.cols, p.size.rows));
      if (p.config.name !== undefined) this.sendControl(id, ConsoleEvent.PORT_NAME, 1, new TextEncoder().encode(p.config.name));
      if (p.hostOpen) this.sendControl(id, ConsoleEvent.PORT_OPEN, 1);
      return;
    }
    // PORT_OPEN
    if (p.consoleAwaitingOpen) {
      p.consoleAwaitingOpen = false;
      if (value !== 1) {
        this.context.violation('console.multiport-device-operation.driver.3', `driver answered CONSOLE_PORT for port ${id} with PORT_OPEN value ${value}, not 1`, { id, value });
        if (!this.context.live) return;
      }
    }
    const open = value === 1;
    if (p.guestOpen === open) return;
    p.guestOpen = open;
    p.endpoint.guestOpen?.(open);
    if (open) this.wake(this.rxIndex(id));
  }

  // ---------------------------------------------------------------- life cycle

  /** Held receive buffers wait for host bytes: they are not work a suspend waits for. */
  inProgress(ctx: DeviceContext): number {
    let n = 0;
    for (const q of ctx.queues) n += q.inFlightCount;
    return n - this.held;
  }

  queueReset(index: number): void {
    this.held -= this.stash.get(index)?.length ?? 0;
    this.stash.delete(index);
  }

  /**
   * A reset ends the session: with MULTIPORT negotiated, a driver that ran the device and
   * never sent DEVICE_READY broke console.multiport-device-operation.driver.1. Judged on
   * synchronous transports only (elsewhere the message may still be on its way), and only
   * recorded: the device is being reset anyway.
   */
  stop(reason: 'reset' | 'failed', ctx: DeviceContext): void {
    const s = ctx.status;
    if (reason === 'reset' && ctx.synchronous && this.multiport && s & Status.DRIVER_OK && !(s & (Status.FAILED | Status.DEVICE_NEEDS_RESET)) && !this.readySeen) {
      ctx.monitor.report('console.multiport-device-operation.driver.1', 'driver ran the device with VIRTIO_CONSOLE_F_MULTIPORT and reset it without ever sending VIRTIO_CONSOLE_DEVICE_READY', {});
    }
    this.epoch++;
    this.stash.clear();
    this.held = 0;
    this.dirty.clear();
    this.ctrlOut = [];
    this.readySeen = false;
    this.deviceReady = false;
    for (const p of this.ports.values()) {
      p.added = false;
      p.ready = false;
      p.consoleAwaitingOpen = false;
      p.txHeld = false;
      if (p.guestOpen) {
        p.guestOpen = false;
        p.endpoint.guestOpen?.(false);
      }
      // Host bytes not delivered yet stay: the next driver gets them.
    }
  }
}

/**
 * A console device: a {@link VirtioDevice} of {@link ConsoleDeviceType}, built from its
 * options. The ports' host-side API (add, remove, resize, the host view of a port) is the
 * type's, here for convenience.
 */
export class ConsoleDevice extends VirtioDevice<ConsoleDeviceType> {
  /** A device of a new {@link ConsoleDeviceType} from `options`, judged by `options.monitor` (default: a new strict one). */
  constructor(options: ConsoleDeviceOptions = {}) {
    super(new ConsoleDeviceType(options), { monitor: options.monitor, ...options.core });
  }

  /** max_nr_ports. */
  get maxPorts(): number {
    return this.type.maxPorts;
  }
  /** Whether MULTIPORT was negotiated (the control queues are in use). */
  get multiport(): boolean {
    return this.type.multiport;
  }
  /** Port ids present on the host side. */
  get portIds(): number[] {
    return this.type.portIds;
  }
  /** Counters for tests and logs. */
  get stats(): ConsoleDeviceType['stats'] {
    return this.type.stats;
  }
  /** The host view of port `id` (undefined when there is none). */
  port(id: number): ConsoleHostPort | undefined {
    return this.type.port(id);
  }
  /** Adds a port (hot-plug): see {@link ConsoleDeviceType.addPort}. */
  addPort(id: number, config: ConsolePortConfig): ConsoleHostPort {
    return this.type.addPort(id, config);
  }
  /** Removes a port (hot-unplug): see {@link ConsoleDeviceType.removePort}. */
  removePort(id: number): void {
    this.type.removePort(id);
  }
  /** The console of port `id` changed size: see {@link ConsoleDeviceType.resize}. */
  resize(cols: number, rows: number, id = 0): void {
    this.type.resize(cols, rows, id);
  }
}

/** A copy of a chain to keep while its buffers are held. */

/**
 * An in-memory port endpoint (tests, demos, browsers): keeps what the driver wrote and sends
 * what it is given.
 */
export class MemoryConsoleEndpoint implements ConsolePortEndpoint {
  host: ConsoleHostPort | null = null;
  readonly chunks: Uint8Array[] = [];
  length = 0;
  /** Called with every chunk the driver wrote. */
  onWrite: ((bytes: Uint8Array) => void) | null = null;
  /** Called when the driver opens or closes the port. */
  onGuestOpen: ((open: boolean) => void) | null = null;
  drains = 0;

  write(bytes: Uint8Array): void {
    this.chunks.push(bytes);
    this.length += bytes.length;
    this.onWrite?.(bytes);
  }

  attach(port: ConsoleHostPort): void {
    this.host = port;
  }

  detach(): void {
    this.host = null;
  }

  drain(): void {
    this.drains++;
  }

  guestOpen(open: boolean): void {
    this.onGuestOpen?.(open);
  }

  /** Sends bytes (or UTF-8 text) to the driver; false means the device buffer is full. */
  send(data: Uint8Array | string): boolean {
    if (this.host === null) throw new DeviceError('not-attached', 'this endpoint is not attached to a console port');
    return this.host.push(typeof data === 'string' ? new TextEncoder().encode(data) : data);
  }

  /** Everything the driver wrote, as one array. */
  get bytes(): Uint8Array {
    const out = new Uint8Array(this.length);
    let off = 0;
    for (const c of this.chunks) {
      out.set(c, off);
      off += c.length;
    }
    return out;
  }

  /** Everything the driver wrote, decoded as UTF-8 (invalid sequences become U+FFFD). */
  get text(): string {
    return new TextDecoder().decode(this.bytes);
  }
}

// The wire constants live in spec/console.ts; re-exported for users of this module.
export { ConsoleConfig, ConsoleEvent, type ConsoleSize } from '../../spec/console.js';

/** @deprecated Renamed: use {@link MemoryConsoleEndpoint}. */
export const MemoryConsoleBackend = MemoryConsoleEndpoint;
/** @deprecated Renamed: use {@link MemoryConsoleEndpoint}. */
export type MemoryConsoleBackend = MemoryConsoleEndpoint;
