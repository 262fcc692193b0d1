/**
 * Console driver (spec 5.3): ports as objects an application writes to and reads from.
 *
 * Single port: port 0 exists once the driver is started. With VIRTIO_CONSOLE_F_MULTIPORT the
 * driver sets up the queues of every port up to max_nr_ports (or `maxPorts`), sends
 * VIRTIO_CONSOLE_DEVICE_READY, and follows the device's control messages: DEVICE_ADD (posts
 * the port's receive buffers, answers PORT_READY), PORT_NAME, CONSOLE_PORT (answers PORT_OPEN
 * 1), PORT_OPEN (the host side connected or not), RESIZE and DEVICE_REMOVE. The device's
 * messages are checked against 5.3.6.2.1.
 *
 * Every receiveq keeps its buffers posted; a port whose reader falls behind by more than
 * `inboxLimit` bytes stops getting them back until it catches up, which holds the device (and
 * its host) back instead of losing bytes. Writes are split into transmit buffers of at most
 * `transmitChunk` bytes and resolve when the device has used all of them.
 *
 * Browser-safe: no Node import.
 */
import { DeviceId, Status, statusNames } from '../spec/constants.js';
import { DriverError, VirtioDriver, type VirtioDriverOptions } from '../driver/driver.js';
import { bit, hasFeature } from '../spec/features.js';
import type { DriverTransport } from '../driver/transport.js';
import type { DriverQueue } from '../virtqueue/queue.js';
import { VirtioTsError } from '../errors.js';
import {
  CONSOLE_FEATURES,
  CONTROL_HEADER_SIZE,
  CONTROL_RECEIVEQ,
  CONTROL_TRANSMITQ,
  ConsoleConfig,
  ConsoleEvent,
  consoleQueueRole,
  encodeControl,
  receiveQueueOf,
  transmitQueueOf,
  type ConsoleSize,
} from '../spec/console.js';

/** ConsoleDriver's options: the driver core's (all optional here), buffer sizes and counts, ports, and how far a reader may fall behind. */
export interface ConsoleDriverOptions extends Partial<VirtioDriverOptions> {
  /** Bytes per port receive buffer (default 4096). */
  receiveBufferSize?: number;
  /** Receive buffers kept posted per receiveq (default 16, at most the queue size). */
  receiveBuffers?: number;
  /** Bytes per control receive buffer (default 1024: room for a long PORT_NAME). */
  controlBufferSize?: number;
  /** Largest transmit buffer (default 4096). */
  transmitChunk?: number;
  /** Ports to set up queues for at most (default: max_nr_ports). */
  maxPorts?: number;
  /** Bytes a port holds for its reader before its receive buffers are withheld (default 1 MiB). */
  inboxLimit?: number;
}

const DRIVER_CONSOLE_FEATURES = bit(CONSOLE_FEATURES.SIZE) | bit(CONSOLE_FEATURES.MULTIPORT) | bit(CONSOLE_FEATURES.EMERG_WRITE);

/**
 * What went wrong with a console port (the driver's own failures are DriverErrors):
 * - `port-removed`: the device removed the port (DEVICE_REMOVE): writes to it fail, and so do
 *   writes still waiting for room in its transmitq (those already in the ring complete).
 */
export type ConsoleErrorKind = 'port-removed';

export class ConsoleError extends VirtioTsError<ConsoleErrorKind> {
  /** A ConsoleError of `kind` about port `port`. */
  constructor(
    kind: ConsoleErrorKind,
    message: string,
    /** The port the error is about. */
    readonly port: number,
  ) {
    super(kind, message);
  }
}

/** A receive buffer of the console driver (a receiveq's token): `size` bytes at guest `addr`. */
export interface ConsoleReceiveBuffer {
  kind: 'receive';
  /** The receiveq it belongs to. */
  queue: number;
  addr: number;
  size: number;
}

/** One write to a port, cut into transmit buffers; resolved once the device used them all. */
export interface ConsoleWrite {
  data: Uint8Array;
  /** Bytes of `data` put into transmit buffers so far. */
  off: number;
  /** Its transmit buffers the device has not used yet. */
  outstanding: number;
  /** Settles the request with nothing, once the device used every buffer. */
  resolve: () => void;
  /** Fails the request (the driver gave up, the queue was reset, ...). */
  reject: (err: Error) => void;
}

/** A transmit buffer of the console driver (a transmitq's token): part of `write`, at guest `addr`. */
export interface ConsoleTransmitBuffer {
  kind: 'transmit';
  item: ConsoleWrite;
  addr: number;
}

/**
 * What the console driver's queues carry: receive buffers on receiveqs, transmit buffers on
 * transmitqs (the driver's own; read them, do not commit them).
 */
export type ConsoleToken = ConsoleReceiveBuffer | ConsoleTransmitBuffer;

/** Bytes waiting for one transmit queue, in order. */
class Outbox {
  /** Items not yet fully in the ring (the first may be partly). */
  readonly waiting: ConsoleWrite[] = [];
  /** Items not yet resolved. */
  readonly pending = new Set<ConsoleWrite>();
  /** Buffers in the ring. */
  readonly inRing = new Set<ConsoleTransmitBuffer>();
  constructor(
    readonly queue: number,
    readonly chunk: number,
  ) {}
}

/** What a port needs from its driver. */
interface PortOwner {
  write(port: ConsolePort, bytes: Uint8Array): Promise<void>;
  setOpen(port: ConsolePort, open: boolean): Promise<void>;
  inboxDrained(port: ConsolePort): void;
}

/** One console port as the application sees it. */
export class ConsolePort {
  /** Name from PORT_NAME (null until the device names it; single port: never). */
  name: string | null = null;
  /** Nominated as a console port (CONSOLE_PORT; single port: true). */
  console = false;
  /** The host side is connected (PORT_OPEN from the device; single port: always). */
  hostOpen = false;
  /** The driver has the port open (PORT_OPEN 1 sent; single port: always). */
  isOpen = false;
  /** Console size (VIRTIO_CONSOLE_F_SIZE for port 0, RESIZE messages), null when unknown. */
  size: ConsoleSize | null = null;
  /** The device removed the port (DEVICE_REMOVE). */
  removed = false;
  /** Called when the port's size changes (RESIZE, or the config space for port 0). */
  onResize: ((size: ConsoleSize) => void) | null = null;
  /** Called when the host side connects (true) or goes away (false): PORT_OPEN from the device. */
  onHostOpen: ((open: boolean) => void) | null = null;
  /** Called when the device removes the port (DEVICE_REMOVE). */
  onRemove: (() => void) | null = null;
  /** Bytes received and not yet taken by a reader. */
  inboxBytes = 0;
  private handler: ((bytes: Uint8Array) => void) | null = null;
  private readonly inbox: Uint8Array[] = [];
  private readonly readers: ((bytes: Uint8Array | null) => void)[] = [];

  /**
   * Made by the console driver when the device adds a port.
   * @internal
   */
  constructor(
    readonly id: number,
    private readonly owner: PortOwner,
  ) {}

  /** Called with every chunk the device sends; setting it hands over what is waiting. */
  get onData(): ((bytes: Uint8Array) => void) | null {
    return this.handler;
  }
  /** Installs the handler (null: bytes wait in the inbox for read()); what is waiting goes to it at once. */
  set onData(fn: ((bytes: Uint8Array) => void) | null) {
    this.handler = fn;
    if (fn === null || this.inbox.length === 0) return;
    const waiting = this.inbox.splice(0);
    this.inboxBytes = 0;
    for (const b of waiting) fn(b);
    this.owner.inboxDrained(this);
  }

  /** Sends bytes (or UTF-8 text) to the host; resolves when the device has taken them all. */
  write(data: Uint8Array | string): Promise<void> {
    return this.owner.write(this, typeof data === 'string' ? new TextEncoder().encode(data) : data);
  }

  /** Opens the port (PORT_OPEN 1 with MULTIPORT): the device sends data only to open ports. */
  open(): Promise<void> {
    return this.owner.setOpen(this, true);
  }

  /** Closes the port (PORT_OPEN 0 with MULTIPORT). */
  close(): Promise<void> {
    return this.owner.setOpen(this, false);
  }

  /** The next chunk from the device, or null once the port is removed and drained. */
  read(): Promise<Uint8Array | null> {
    const b = this.inbox.shift();
    if (b !== undefined) {
      this.inboxBytes -= b.length;
      this.owner.inboxDrained(this);
      return Promise.resolve(b);
    }
    if (this.removed) return Promise.resolve(null);
    return new Promise((resolve) => this.readers.push(resolve));
  }

  /** The chunks the device sends, until the port is removed (for await ... of port). */
  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array, void, undefined> {
    for (;;) {
      const b = await this.read();
      if (b === null) return;
      yield b;
    }
  }

  /** Driver side: bytes arrived for this port. */
  receive(bytes: Uint8Array): void {
    if (this.handler !== null) this.handler(bytes);
    else {
      const reader = this.readers.shift();
      if (reader !== undefined) reader(bytes);
      else {
        this.inbox.push(bytes);
        this.inboxBytes += bytes.length;
      }
    }
  }

  /** Driver side: the size changed (calls onResize only on a change). */
  resized(size: ConsoleSize): void {
    if (this.size !== null && this.size.cols === size.cols && this.size.rows === size.rows) return;
    this.size = size;
    this.onResize?.(size);
  }

  /** Driver side: the port is gone; readers get null. */
  end(): void {
    this.removed = true;
    this.isOpen = false;
    for (const r of this.readers.splice(0)) r(null);
  }
}

export class ConsoleDriver extends VirtioDriver<ConsoleToken> {
  readonly ports = new Map<number, ConsolePort>();
  /** max_nr_ports (1 without MULTIPORT). */
  maxNrPorts = 1;
  /** cols/rows of the configuration space (VIRTIO_CONSOLE_F_SIZE), applying to port 0. */
  size: ConsoleSize | null = null;
  /** Called when a port is added (after PORT_READY; its name may come later). */
  onPort: ((port: ConsolePort) => void) | null = null;
  /** Bytes that arrived for ports that do not exist (any more). */
  droppedBytes = 0;

  private readonly rxSize: number;
  private readonly rxCount: number;
  private readonly ctrlSize: number;
  private readonly txChunk: number;
  private readonly wantPorts: number;
  private readonly inboxLimit: number;
  /** Receive buffers each receiveq owns (posted or withheld), so a re-added port does not get more. */
  private readonly rxOwned = new Map<number, number>();
  /** Used receive buffers not posted again yet, per queue. */
  private readonly withheld = new Map<number, ConsoleReceiveBuffer[]>();
  private allRx: ConsoleReceiveBuffer[] = [];
  private readonly outboxes = new Map<number, Outbox>();
  private readonly dirty = new Set<number>();
  private busy = false;
  private readonly toKick = new Set<number>();
  private kickScheduled = false;
  private resumeScheduled = false;
  private portWaiters: { test: (p: ConsolePort) => boolean; resolve: (p: ConsolePort) => void; reject: (err: Error) => void }[] = [];
  private readonly owner: PortOwner;

  /** A console driver over `transport`; start() initializes the device and its ports. */
  constructor(transport: DriverTransport, options: ConsoleDriverOptions = {}) {
    super(transport, { deviceId: DeviceId.CONSOLE, deviceFeatures: DRIVER_CONSOLE_FEATURES, queueSize: 64, ...options });
    this.rxSize = options.receiveBufferSize ?? 4096;
    this.rxCount = options.receiveBuffers ?? 16;
    this.ctrlSize = Math.max(CONTROL_HEADER_SIZE + 4, options.controlBufferSize ?? 1024);
    this.txChunk = options.transmitChunk ?? 4096;
    this.wantPorts = options.maxPorts ?? Infinity;
    this.inboxLimit = options.inboxLimit ?? 1 << 20;
    this.owner = {
      write: (port, bytes) => this.writePort(port, bytes),
      setOpen: (port, open) => this.setPortOpen(port, open),
      inboxDrained: (port) => {
        if (port.inboxBytes < this.inboxLimit) this.refill(receiveQueueOf(port.id));
      },
    };
    this.onUsed = (q) => this.used(q);
    this.onConfigChange = () => this.configChanged();
  }

  /** Whether VIRTIO_CONSOLE_F_MULTIPORT was negotiated (ports come and go by control messages). */
  get multiport(): boolean {
    return this.negotiated(CONSOLE_FEATURES.MULTIPORT);
  }

  /** Initializes the device (3.1.1), sets up the queues and, with MULTIPORT, sends DEVICE_READY. */
  async start(): Promise<void> {
    // Started again: reset first, so the device no longer touches the buffers let go of.
    if (this.state !== 'idle') await this.reset();
    this.forget(new DriverError('cancelled', 'the console driver was started again'));
    await this.init({
      setup: async () => {
        const f = CONSOLE_FEATURES;
        const cfg = await this.readConfig(async (read) => ({
          size: this.negotiated(f.SIZE) ? { cols: Number(await read(ConsoleConfig.cols, 2)), rows: Number(await read(ConsoleConfig.rows, 2)) } : null,
          maxNrPorts: this.negotiated(f.MULTIPORT) ? Number(await read(ConsoleConfig.maxNrPorts, 4)) : 1,
        }));
        this.size = cfg.size;
        this.maxNrPorts = Math.max(1, cfg.maxNrPorts);
        const ports = this.multiport ? Math.min(this.maxNrPorts, this.wantPorts) : 1;
        const indexes = [0, 1];
        if (this.multiport) indexes.push(CONTROL_RECEIVEQ, CONTROL_TRANSMITQ);
        for (let id = 1; id < ports; id++) indexes.push(receiveQueueOf(id), transmitQueueOf(id));
        for (const i of indexes) await this.setupQueue(i);
        for (let id = 0; id < ports; id++) this.outboxes.set(transmitQueueOf(id), new Outbox(transmitQueueOf(id), this.txChunk));
        if (this.multiport) {
          this.outboxes.set(CONTROL_TRANSMITQ, new Outbox(CONTROL_TRANSMITQ, Infinity));
          this.postReceive(CONTROL_RECEIVEQ, this.ctrlSize);
        } else {
          const port = new ConsolePort(0, this.owner);
          port.console = true;
          port.isOpen = true;
          port.hostOpen = true;
          port.size = cfg.size;
          this.ports.set(0, port);
          this.postReceive(0, this.rxSize);
        }
      },
    });
    for (const q of this.queues) if (q !== undefined) this.kick(q);
    if (this.multiport) this.sendDeviceReady();
    else {
      const port = this.ports.get(0);
      if (port !== undefined) this.added(port);
    }
  }

  /** VIRTIO_CONSOLE_DEVICE_READY, value 1 (console.multiport-device-operation.driver.1). */
  protected sendDeviceReady(): void {
    void this.sendControl(0, ConsoleEvent.DEVICE_READY, 1).catch(() => undefined);
  }

  /** Resets the device and ends every port; pending writes fail. */
  override async shutdown(): Promise<void> {
    await super.shutdown();
    this.forget(new DriverError('cancelled', 'the console driver was shut down'));
  }

  /** A port by id or name, once the device has added (and, for a name, named) it. */
  waitForPort(match: number | string): Promise<ConsolePort> {
    const test = (p: ConsolePort) => (typeof match === 'number' ? p.id === match : p.name === match);
    for (const p of this.ports.values()) if (test(p)) return Promise.resolve(p);
    if (this.state === 'broken' || this.state === 'failed') return Promise.reject(this.failure ?? new DriverError('not-started', 'console driver failed'));
    return new Promise((resolve, reject) => this.portWaiters.push({ test, resolve, reject }));
  }

  /**
   * Writes characters through emerg_wr (VIRTIO_CONSOLE_F_EMERG_WRITE): one config write per
   * byte, usable before the queues work, or before the driver is even started.
   */
  async emergWrite(ch: number | string): Promise<void> {
    const offered = this.offered !== 0n ? this.offered : await this.transport.getDeviceFeatures();
    if (!hasFeature(offered, CONSOLE_FEATURES.EMERG_WRITE)) throw new DriverError('not-offered', 'the device does not offer VIRTIO_CONSOLE_F_EMERG_WRITE');
    const bytes = typeof ch === 'number' ? [ch & 0xff] : new TextEncoder().encode(ch);
    const t = this.transport;
    for (const b of bytes) {
      // init.suspend.driver.5: no config writes while suspended.
      if (this.state === 'suspended') await this.whenRunning();
      const before = await t.getStatus();
      await t.writeConfig(ConsoleConfig.emergWr, 4, b);
      if (before & Status.DEVICE_NEEDS_RESET) continue;
      const after = await t.getStatus();
      if (after & Status.DEVICE_NEEDS_RESET) {
        // The device took the write for an error instead of allowing it at any time.
        this.deviceViolation('console.device-init.device.1', `device set DEVICE_NEEDS_RESET on a write to emerg_wr (status ${statusNames(before)} -> ${statusNames(after)})`, { before, after });
        throw this.failure ?? new DriverError('needs-reset', 'the device refused an emergency write (DEVICE_NEEDS_RESET)');
      }
    }
  }

  // ---------------------------------------------------------------- buffers

  /** Whether the driver may expose buffers now (not while suspended, nor after failing). */
  private canExpose(): boolean {
    return this.state === 'live' || this.state === 'initializing';
  }

  /** After a suspend: post what waited. */
  private afterResume(): void {
    if (this.resumeScheduled || this.state !== 'suspended') return;
    this.resumeScheduled = true;
    void this.whenRunning().then(() => {
      this.resumeScheduled = false;
      if (this.state !== 'live') return;
      this.toKick.clear();
      // Buffers committed just before the suspend, then what waited during it.
      for (const q of this.queues) if (q !== undefined) this.kick(q);
      for (const q of this.withheld.keys()) this.refill(q);
      for (const box of this.outboxes.values()) this.pump(box);
    });
  }

  /**
   * Publishes and notifies. Before DRIVER_OK buffers are only committed: no notification is
   * allowed yet (init.sequence.driver.7), so start() publishes them with one once live.
   * Inside a used-buffer handler the device may be in the middle of its own loop (synchronous
   * transports) with notifications suppressed for the moment: publishing then would leave
   * buffers it re-enables notifications over without a kick, so those are published from a
   * microtask, once the device is done.
   */
  private expose(q: DriverQueue<ConsoleToken>): void {
    if (this.state === 'initializing') return;
    if (!this.busy && this.state === 'live') {
      this.kick(q);
      return;
    }
    this.toKick.add(q.index);
    if (this.kickScheduled) return;
    this.kickScheduled = true;
    queueMicrotask(() => {
      this.kickScheduled = false;
      if (this.state !== 'live') {
        this.afterResume(); // suspended: published on resume; failed: never
        return;
      }
      const list = [...this.toKick];
      this.toKick.clear();
      for (const i of list) {
        const dq = this.queues[i];
        if (dq !== undefined) this.kick(dq);
      }
    });
  }

  /** Gives queue `index` up to `receiveBuffers` buffers of `size` bytes. */
  private postReceive(index: number, size: number): void {
    const q = this.queues[index];
    if (q === undefined) return;
    const owned = this.rxOwned.get(index) ?? 0;
    const want = Math.min(this.rxCount, q.size);
    const held = this.heldOf(index);
    for (let i = owned; i < want; i++) {
      const buf: ConsoleReceiveBuffer = { kind: 'receive', queue: index, addr: this.allocator.alloc(size, 8), size };
      this.allRx.push(buf);
      held.push(buf);
    }
    this.rxOwned.set(index, Math.max(owned, want));
    this.refill(index);
  }

  private heldOf(index: number): ConsoleReceiveBuffer[] {
    let held = this.withheld.get(index);
    if (held === undefined) this.withheld.set(index, (held = []));
    return held;
  }

  /** Posts the queue's withheld receive buffers again, unless suspended or its reader is behind. */
  private refill(index: number): void {
    const held = this.withheld.get(index);
    const q = this.queues[index];
    if (held === undefined || held.length === 0 || q === undefined) return;
    if (!this.canExpose()) {
      this.afterResume();
      return;
    }
    const role = consoleQueueRole(index, this.multiport);
    if (role?.kind === 'receive') {
      const port = this.ports.get(role.port);
      if (port !== undefined && port.inboxBytes >= this.inboxLimit) return;
    }
    let n = 0;
    while (held.length > 0 && q.numFree > 0) {
      const buf = held[0];
      if (q.begin().addWritable(buf.addr, buf.size).commit(buf) < 0) break;
      held.shift();
      n++;
    }
    if (n > 0) this.expose(q);
  }

  /** Puts waiting bytes into transmit buffers while the ring has room. */
  private pump(box: Outbox): void {
    const q = this.queues[box.queue];
    if (q === undefined || box.waiting.length === 0) return;
    if (!this.canExpose()) {
      this.afterResume();
      return;
    }
    const mem = this.transport.memory;
    let n = 0;
    while (box.waiting.length > 0 && q.numFree > 0) {
      const item = box.waiting[0];
      const len = Math.min(box.chunk, item.data.length - item.off);
      const addr = this.allocator.alloc(len, 8);
      mem.write(addr, item.data.subarray(item.off, item.off + len));
      const token: ConsoleTransmitBuffer = { kind: 'transmit', item, addr };
      if (q.begin().addReadable(addr, len).commit(token) < 0) {
        this.allocator.release(addr);
        break;
      }
      box.inRing.add(token);
      item.off += len;
      item.outstanding++;
      n++;
      if (item.off >= item.data.length) box.waiting.shift();
    }
    if (n > 0) this.expose(q);
  }

  private enqueue(box: Outbox, data: Uint8Array): Promise<void> {
    if (data.length === 0) return Promise.resolve();
    let item!: ConsoleWrite;
    const done = new Promise<void>((resolve, reject) => (item = { data, off: 0, outstanding: 0, resolve, reject }));
    box.pending.add(item);
    box.waiting.push(item);
    this.pump(box);
    return done;
  }

  /** A control message to the device (5.3.6.2). */
  protected sendControl(id: number, event: number, value: number): Promise<void> {
    const box = this.outboxes.get(CONTROL_TRANSMITQ);
    if (box === undefined) return Promise.reject(new DriverError('not-negotiated', 'VIRTIO_CONSOLE_F_MULTIPORT was not negotiated: no control queue'));
    return this.enqueue(box, encodeControl(id, event, value));
  }

  private writePort(port: ConsolePort, bytes: Uint8Array): Promise<void> {
    if (port.removed) return Promise.reject(new ConsoleError('port-removed', `port ${port.id} was removed`, port.id));
    if (this.state !== 'live' && this.state !== 'suspended') return Promise.reject(this.failure ?? new DriverError('not-started', 'console driver is not started'));
    const box = this.outboxes.get(transmitQueueOf(port.id));
    if (box === undefined) return Promise.reject(new DriverError('no-queue', `port ${port.id} has no transmitq`));
    return this.enqueue(box, bytes);
  }

  private async setPortOpen(port: ConsolePort, open: boolean): Promise<void> {
    if (port.removed) throw new ConsoleError('port-removed', `port ${port.id} was removed`, port.id);
    port.isOpen = open;
    if (this.multiport) await this.sendControl(port.id, ConsoleEvent.PORT_OPEN, open ? 1 : 0);
  }

  // ---------------------------------------------------------------- used buffers

  /** Used-buffer notifications; re-entrant ones (sync transports) are handled by the running loop. */
  private used(q: DriverQueue<ConsoleToken>): void {
    this.dirty.add(q.index);
    if (this.busy) return;
    this.busy = true;
    try {
      while (this.dirty.size > 0) {
        const index = this.dirty.values().next().value as number;
        this.dirty.delete(index);
        const dq = this.queues[index];
        if (dq !== undefined) this.collect(dq);
      }
    } finally {
      this.busy = false;
    }
  }

  private collect(q: DriverQueue<ConsoleToken>): void {
    const role = consoleQueueRole(q.index, this.multiport);
    if (role === null) return;
    const transmit = role.kind === 'transmit' || role.kind === 'control-transmit';
    // Port -1: the control receiveq.
    const port = role.kind === 'receive' ? role.port : -1;
    const box = this.outboxes.get(q.index);
    do {
      let t: ConsoleToken | undefined;
      while ((t = q.getUsed()) !== undefined) {
        if (t.kind === 'transmit') this.transmitted(t, box);
        else this.received(t, q.lastLen, port);
      }
    } while (q.enableInterrupts() && !q.broken);
    if (transmit) {
      if (box !== undefined) this.pump(box);
    } else this.refill(q.index);
  }

  private transmitted(t: ConsoleTransmitBuffer, box: Outbox | undefined): void {
    box?.inRing.delete(t);
    this.allocator.release(t.addr);
    const item = t.item;
    item.outstanding--;
    if (item.outstanding === 0 && item.off >= item.data.length) {
      box?.pending.delete(item);
      item.resolve();
    }
  }

  /** `usedLen` bytes came back in `buf` for port `portId` (-1: the control receiveq); `buf` waits to be posted again. */
  private received(buf: ConsoleReceiveBuffer, usedLen: number, portId: number): void {
    const len = Math.min(usedLen, buf.size);
    const bytes = new Uint8Array(len);
    if (len > 0) this.transport.memory.read(buf.addr, bytes);
    this.heldOf(buf.queue).push(buf);
    if (portId < 0) {
      this.onControl(bytes);
      return;
    }
    const port = this.ports.get(portId);
    if (port === undefined) this.droppedBytes += len;
    else if (len > 0) port.receive(bytes);
  }

  // ---------------------------------------------------------------- control messages

  private onControl(msg: Uint8Array): void {
    if (msg.length < CONTROL_HEADER_SIZE) return; // nothing to act on
    const v = new DataView(msg.buffer, msg.byteOffset, msg.length);
    const id = v.getUint32(0, true);
    const event = v.getUint16(4, true);
    const value = v.getUint16(6, true);
    const payload = msg.subarray(CONTROL_HEADER_SIZE);
    switch (event) {
      case ConsoleEvent.DEVICE_ADD:
        this.deviceAdd(id);
        return;
      case ConsoleEvent.DEVICE_REMOVE:
        this.deviceRemove(id);
        return;
    }
    const port = this.ports.get(id);
    if (port === undefined) return; // about a port the driver does not have: nothing to do
    switch (event) {
      case ConsoleEvent.CONSOLE_PORT:
        // console.multiport-device-operation.driver.2 / .3: a text console, opened with PORT_OPEN 1.
        port.console = true;
        port.isOpen = true;
        void this.sendControl(id, ConsoleEvent.PORT_OPEN, 1).catch(() => undefined);
        return;
      case ConsoleEvent.RESIZE:
        if (payload.length >= 4) port.resized({ cols: v.getUint16(CONTROL_HEADER_SIZE, true), rows: v.getUint16(CONTROL_HEADER_SIZE + 2, true) });
        return;
      case ConsoleEvent.PORT_OPEN: {
        const open = value === 1;
        if (port.hostOpen === open) return;
        port.hostOpen = open;
        port.onHostOpen?.(open);
        return;
      }
      case ConsoleEvent.PORT_NAME: {
        let end = payload.length;
        while (end > 0 && payload[end - 1] === 0) end--;
        port.name = new TextDecoder().decode(payload.subarray(0, end));
        this.portChanged();
        return;
      }
      default:
        return; // DEVICE_READY / PORT_READY are the driver's; unknown events are ignored
    }
  }

  private deviceAdd(id: number): void {
    if (id >= this.maxNrPorts || this.ports.has(id)) {
      this.deviceViolation(
        'console.multiport-device-operation.device.1',
        id >= this.maxNrPorts ? `device sent DEVICE_ADD for port ${id}, not below max_nr_ports ${this.maxNrPorts}` : `device sent DEVICE_ADD for port ${id}, which exists`,
        { id, maxNrPorts: this.maxNrPorts },
      );
      return;
    }
    const rx = receiveQueueOf(id);
    if (this.queues[rx] === undefined || this.queues[transmitQueueOf(id)] === undefined) {
      // Beyond the ports this driver set up (maxPorts): the port cannot be used.
      void this.sendControl(id, ConsoleEvent.PORT_READY, 0).catch(() => undefined);
      return;
    }
    const port = new ConsolePort(id, this.owner);
    if (id === 0 && this.size !== null) port.size = this.size;
    this.ports.set(id, port);
    this.postReceive(rx, this.rxSize);
    void this.sendControl(id, ConsoleEvent.PORT_READY, 1).catch(() => undefined);
    this.added(port);
  }

  private added(port: ConsolePort): void {
    this.onPort?.(port);
    this.portChanged();
  }

  private deviceRemove(id: number): void {
    const port = this.ports.get(id);
    if (port === undefined) {
      this.deviceViolation('console.multiport-device-operation.device.2', `device sent DEVICE_REMOVE for port ${id}, which it never added (or removed already)`, { id });
      return;
    }
    this.ports.delete(id);
    // Writes not in the ring yet fail; buffers in the ring are the device's to use.
    const box = this.outboxes.get(transmitQueueOf(id));
    if (box !== undefined) {
      const err = new ConsoleError('port-removed', `port ${id} was removed`, id);
      for (const item of box.waiting.splice(0)) {
        box.pending.delete(item);
        item.reject(err);
      }
    }
    port.end();
    port.onRemove?.();
  }

  private portChanged(): void {
    if (this.portWaiters.length === 0) return;
    const ports = [...this.ports.values()];
    this.portWaiters = this.portWaiters.filter((w) => {
      const p = ports.find(w.test);
      if (p === undefined) return true;
      w.resolve(p);
      return false;
    });
  }

  /** A configuration change: with VIRTIO_CONSOLE_F_SIZE, port 0's size may be new. */
  private configChanged(): void {
    if (!this.negotiated(CONSOLE_FEATURES.SIZE)) return;
    void this.readConfig(async (read) => ({ cols: Number(await read(ConsoleConfig.cols, 2)), rows: Number(await read(ConsoleConfig.rows, 2)) })).then(
      (size) => {
        this.size = size;
        this.ports.get(0)?.resized(size);
      },
      () => undefined,
    );
  }

  // ---------------------------------------------------------------- failure

  /** Fails whatever waits and lets go of the buffers of an earlier session. */
  private forget(err: Error): void {
    for (const box of this.outboxes.values()) {
      for (const item of box.pending) item.reject(err);
      box.pending.clear();
      box.waiting.length = 0;
      for (const t of box.inRing) this.allocator.release(t.addr);
    }
    this.outboxes.clear();
    for (const p of this.ports.values()) p.end();
    this.ports.clear();
    for (const w of this.portWaiters.splice(0)) w.reject(err);
    // Ring memory is released by the core; receive buffers are ours.
    for (const b of this.allRx) this.allocator.release(b.addr);
    this.allRx = [];
    this.rxOwned.clear();
    this.withheld.clear();
    this.dirty.clear();
    this.toKick.clear();
  }

  protected override onBroken(err: DriverError): void {
    for (const box of this.outboxes.values()) {
      for (const item of box.pending) item.reject(err);
      box.pending.clear();
      box.waiting.length = 0;
    }
    for (const w of this.portWaiters.splice(0)) w.reject(err);
    for (const p of this.ports.values()) p.end();
  }
}
