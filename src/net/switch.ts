// An in-process Ethernet switch (issue 15): any number of frame ports (virtio-net devices of
// several VMs, NetDrivers in Node, TAP devices, unix sockets) joined on one broadcast domain.
// It learns which port each source MAC address sits behind (forgotten after `ageingMs` without
// a frame from it, or when its port goes down or leaves), sends a frame to a known unicast
// address's port only, and floods broadcast, multicast and unknown-destination frames to every
// other port. A frame goes to each receiver in a form it takes: offloads it does not accept are
// completed or segmented in software (offload.ts).
//
// No timers (ageing is judged when an address is looked up) and no Node module: browser-safe.
import type { FramePort, NetOffload } from './frame-port.js';
import { completeOffloads } from './offload.js';

/** Options of a {@link NetSwitch}. */
export interface NetSwitchOptions {
  /** How long a learned address stays without a frame from it (default 300 000 ms, IEEE 802.1D's default). */
  ageingMs?: number;
  /** The clock (ms) ageing is measured with (default performance.now / Date.now). */
  now?: () => number;
  /** At most this many learned addresses (default 4096): a port flooding random sources cannot grow the table without bound. */
  maxAddresses?: number;
}

/** Frame counts of a switch. */
export interface NetSwitchCounters {
  /** Frames received from ports. */
  received: number;
  /** Frames sent to the one port their destination was learned on. */
  unicast: number;
  /** Frames sent to every other port (broadcast, multicast, unknown destination). */
  flooded: number;
  /** Deliveries a port refused (full or closed). */
  dropped: number;
  /** Frames whose destination sits behind the port they came from (not sent back). */
  filtered: number;
}

interface Learned {
  port: number;
  seen: number;
}

interface Attached {
  port: FramePort;
  id: number;
  up: boolean;
  /** The delivery callback for completeOffloads, made once per port. */
  emit: (frame: Uint8Array, offload: NetOffload | undefined) => void;
}

/** The 48-bit MAC address at `at` as a number (exact in a double). */
export function macAt(frame: Uint8Array, at: number): number {
  return (frame[at] * 2 ** 40) + (frame[at + 1] * 2 ** 32) + ((frame[at + 2] << 24) >>> 0) + (frame[at + 3] << 16) + (frame[at + 4] << 8) + frame[at + 5];
}

/** A learning Ethernet switch over frame ports. */
export class NetSwitch {
  readonly counters: NetSwitchCounters = { received: 0, unicast: 0, flooded: 0, dropped: 0, filtered: 0 };
  private readonly ports: (Attached | null)[] = [];
  private readonly table = new Map<number, Learned>();
  private readonly ageingMs: number;
  private readonly now: () => number;
  private readonly maxAddresses: number;
  private nextId = 0;

  /** A switch with no ports. */
  constructor(options: NetSwitchOptions = {}) {
    this.ageingMs = options.ageingMs ?? 300_000;
    this.now = options.now ?? (typeof performance !== 'undefined' ? () => performance.now() : () => Date.now());
    this.maxAddresses = options.maxAddresses ?? 4096;
  }

  /** Ports attached now. */
  get portCount(): number {
    let n = 0;
    for (const p of this.ports) if (p !== null) n++;
    return n;
  }

  /** Addresses learned now (aged ones included until looked up). */
  get addressCount(): number {
    return this.table.size;
  }

  /** The port a MAC address was learned on (null: unknown or aged out). */
  lookup(mac: number): FramePort | null {
    const i = this.portIndexOf(mac);
    return i < 0 ? null : this.ports[i]!.port;
  }

  /**
   * Joins `port` to the switch: its frames are switched to the others from now on (its
   * `onFrame` and `onLinkChange` are the switch's until {@link detach}). Returns a function
   * that detaches it.
   */
  attach(port: FramePort): () => void {
    let slot = this.ports.indexOf(null);
    if (slot < 0) slot = this.ports.push(null) - 1;
    const entry: Attached = {
      port,
      id: this.nextId++,
      up: port.linkUp,
      emit: (frame, offload) => {
        if (!port.send(frame, offload)) this.counters.dropped++;
      },
    };
    this.ports[slot] = entry;
    port.onFrame = (frame, offload) => this.forward(slot, frame, offload);
    port.onLinkChange = (up) => {
      entry.up = up;
      if (!up) this.forget(slot);
    };
    return () => this.detach(port);
  }

  /** Takes `port` off the switch: its learned addresses are forgotten, its callbacks cleared. */
  detach(port: FramePort): void {
    const slot = this.ports.findIndex((p) => p !== null && p.port === port);
    if (slot < 0) return;
    this.ports[slot] = null;
    port.onFrame = null;
    port.onLinkChange = null;
    this.forget(slot);
  }

  /** Detaches every port (the ports are not closed: their owners close them). */
  close(): void {
    for (const p of this.ports) if (p !== null) this.detach(p.port);
  }

  private forget(slot: number): void {
    for (const [mac, l] of this.table) if (l.port === slot) this.table.delete(mac);
  }

  private portIndexOf(mac: number): number {
    const l = this.table.get(mac);
    if (l === undefined) return -1;
    if (this.now() - l.seen > this.ageingMs || this.ports[l.port] === null) {
      this.table.delete(mac);
      return -1;
    }
    return l.port;
  }

  /** One frame from the port in `slot`. */
  private forward(slot: number, frame: Uint8Array, offload: NetOffload | undefined): void {
    if (frame.length < 14) return; // not an Ethernet frame
    this.counters.received++;
    const src = macAt(frame, 6);
    // Learn the source unless it is a group address (a multicast source is malformed).
    if ((frame[6] & 1) === 0) {
      const l = this.table.get(src);
      if (l !== undefined) {
        l.port = slot;
        l.seen = this.now();
      } else if (this.table.size < this.maxAddresses) this.table.set(src, { port: slot, seen: this.now() });
    }
    if ((frame[0] & 1) === 0) {
      const to = this.portIndexOf(macAt(frame, 0));
      if (to === slot) {
        this.counters.filtered++;
        return;
      }
      if (to >= 0) {
        const dst = this.ports[to]!;
        this.counters.unicast++;
        completeOffloads(frame, offload, dst.port.accepts, dst.emit);
        return;
      }
    }
    this.counters.flooded++;
    for (let i = 0; i < this.ports.length; i++) {
      const p = this.ports[i];
      if (p === null || i === slot || !p.up) continue;
      completeOffloads(frame, offload, p.port.accepts, p.emit);
    }
  }
}

/**
 * Wires two ports back to back (a cable): each one's frames go to the other, completed for
 * what the receiver takes, and each learns the other's link state through `onLinkChange`
 * callbacks of its own choosing (`linkA`/`linkB`). Returns a function that unplugs them.
 */
export function connectPorts(a: FramePort, b: FramePort, onLink?: { a?: (up: boolean) => void; b?: (up: boolean) => void }): () => void {
  const toB = (f: Uint8Array, o: NetOffload | undefined) => void b.send(f, o);
  const toA = (f: Uint8Array, o: NetOffload | undefined) => void a.send(f, o);
  a.onFrame = (f, o) => void completeOffloads(f, o, b.accepts, toB);
  b.onFrame = (f, o) => void completeOffloads(f, o, a.accepts, toA);
  a.onLinkChange = (up) => onLink?.b?.(up);
  b.onLinkChange = (up) => onLink?.a?.(up);
  return () => {
    a.onFrame = null;
    b.onFrame = null;
    a.onLinkChange = null;
    b.onLinkChange = null;
  };
}
