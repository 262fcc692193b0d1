/**
 * The monitor proxy (`virtio-ts monitor`): a vhost-user proxy between any front-end (QEMU,
 * DPDK, the project's VhostUserFrontEnd) and any back-end (qemu-storage-daemon, virtiofsd,
 * `virtio-ts serve`) that forwards every message and fd unchanged and judges both sides.
 *
 *   front-end --listen PATH--> proxy --connect PATH--> back-end
 *
 * - Messages: every front-end request is validated with the back-end codec (parseHeader,
 *   decode) and every back-end reply is matched to the request it answers and checked against
 *   the probe's vhost-user rules (src/probe/rules.ts); a message that breaks one is a verdict and
 *   is still forwarded as it came (the peer refuses it or not: that is the peer's own business).
 * - Fds: forwarded as they came, with one exception: the back-end request channel
 *   (SET_BACKEND_REQ_FD). The proxy gives the back-end one end of a socket pair of its own and
 *   relays between it and the front-end's socket, so it sees the back-end's own requests
 *   (CONFIG_CHANGE_MSG, ...) and their replies; the bytes and fds on it are relayed unchanged.
 *   Kick, call and error eventfds, memory fds and the inflight and log fds go through untouched.
 * - Rings: guest memory is mapped read-only from the same fds (MemorySlots in read-only mode),
 *   and each started ring is watched passively (rings.ts) on every message and on a timer paced
 *   by how much moved: a look is needed before a ring laps (more than its size moved, and what
 *   went by unseen can no longer be judged), not after every buffer. So the interval halves
 *   (down to `pollMinMs`) when a look finds more than a quarter of some ring moved, and doubles
 *   (up to `pollMaxMs`) when it finds less than a sixteenth of every ring moved: a busy ring is
 *   looked at often enough to see each buffer, a trickle costs a few wake-ups a second. The
 *   data path never goes through the proxy (kick and call eventfds are the peers' own), so the
 *   proxy's cost is its own CPU time, which this bounds. The kick and call eventfds are left
 *   alone: reading one would steal a notification from its peer, and watching one for
 *   readability without reading spins the event loop (level triggered) until the peer reads it.
 * - Sessions: one back-end connection per front-end connection. A back-end that goes (or
 *   cannot be reached) ends its front-end's session (QEMU with `reconnect=1` comes back: the
 *   proxy keeps listening); a front-end that goes ends its back-end connection.
 *
 * Never throws for what a peer does; nothing a peer sends makes it wait without bound.
 */
import { Monitor, type Verdict } from '../monitor/monitor.js';
import { clauseInfo } from '../monitor/catalogue.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { POLL_READABLE, native, type NativeAddon } from '../native/index.js';
import { Feature, Status } from '../spec/constants.js';
import {
  F_PROTOCOL_FEATURES,
  FLAG_REPLY,
  FLAG_VERSION_MASK,
  Req,
  VERSION,
  decode,
  parseHeader,
  requestName,
  type Session as CodecSession,
} from '../transports/vhost-user/protocol.js';
import { VhostUserError } from '../transports/vhost-user/errors.js';
import { MemorySlots } from '../transports/vhost-user/mem-slots.js';
import { listenUnixSocket, type ListeningSocket } from '../transports/vhost-user/socket-path.js';
import { VHOST_USER_RULES } from '../probe/rules.js';
import { FRONT_END_RULES } from './rules.js';
import { Endpoint, type Frame } from './endpoint.js';
import { PackedObserver, SplitObserver, type RingObserver, type RingStats } from './rings.js';
import { ProxyError } from './errors.js';

/** A verdict of the proxy: the monitor's, with where it was seen. */
export interface ProxyVerdict extends Verdict {
  /** The session (front-end connection) it was seen in, from 1. */
  session: number;
  /** Where the id comes from: the clause catalogue, or a vhost-user rule (src/probe/rules.ts, src/proxy/rules.ts). */
  source: 'virtio' | 'vhost-user';
  /** The ring (queue index), for ring-level verdicts. */
  queue?: number;
  /** The ring's position as the proxy had it (split: availIdx/usedIdx; packed: slots and wrap counters). */
  position?: Record<string, number | boolean>;
  /** The message that caused it (a vhost-user request or reply name), for message-level verdicts. */
  cause?: string;
  /** ISO time it was seen. */
  time: string;
}

/** What the proxy knows of one session once it ended (or so far). */
export interface ProxySessionSummary {
  id: number;
  started: string;
  ended?: string;
  /** Why it ended. */
  reason?: string;
  /** Messages relayed: front-end requests, back-end replies, back-end channel both ways. */
  messages: { frontEnd: number; backEnd: number; channel: number };
  /** Rings watched: index, format, size, counters. */
  rings: (RingStats & { index: number; format: 'split' | 'packed'; size: number })[];
  /** What the proxy could not do in this session (map memory, watch a ring), said once each. */
  notes: string[];
}

/** MonitorProxy's options. */
export interface MonitorProxyOptions {
  /** Unix socket path the front-end connects to (a stale socket there is replaced, nothing else is). */
  listen: string;
  /** The back-end's unix socket path. */
  connect: string;
  /** The monitor verdicts go through (default: tolerant, no deviations). */
  monitor?: Monitor;
  /** Every verdict as it is made. */
  onVerdict?: (v: ProxyVerdict) => void;
  /** Session events and notes, for a log. */
  log?: (level: 'info' | 'warn', message: string) => void;
  /** Shortest interval between two looks, for rings that move fast (ms, default 1). */
  pollMinMs?: number;
  /** Longest interval between two looks, for rings that are still or move slowly (ms, default 50). */
  pollMaxMs?: number;
  /** Verdicts kept in memory (default 10000; all are counted and passed to onVerdict). */
  maxKept?: number;
  /** How long a front-end is held while the back-end cannot be reached before it is closed (ms, default 30000; 0: at once). */
  backendWaitMs?: number;
}

/** How often a held front-end's back-end connect is tried again (ms). */
const BACKEND_RETRY_MS = 100;

/** Requests with a reply of their own, and the reply's payload size (null: not checked). */
const REPLIES: Record<number, number | null> = {
  [Req.GET_FEATURES]: 8,
  [Req.GET_PROTOCOL_FEATURES]: 8,
  [Req.GET_QUEUE_NUM]: 8,
  [Req.GET_VRING_BASE]: 8,
  [Req.GET_CONFIG]: null, // the config header plus the size asked: checked against the request
  [Req.GET_INFLIGHT_FD]: 24,
  [Req.GET_MAX_MEM_SLOTS]: 8,
  [Req.GET_STATUS]: 8,
};

interface Expected {
  request: number;
  /** A REPLY_ACK (need_reply on a request without its own reply). */
  ack: boolean;
  payload: Uint8Array;
}

interface RingConfig {
  size: number;
  desc: number;
  avail: number;
  used: number;
  hasAddr: boolean;
  base: number;
  observer: RingObserver | null;
}

const has = (bits: bigint, bit: number) => ((bits >> BigInt(bit)) & 1n) === 1n;
const RULE_IDS = new Set([...VHOST_USER_RULES, ...FRONT_END_RULES].map((r) => r.id));

/** One front-end connection and its back-end connection. */
class ProxySession {
  readonly summary: ProxySessionSummary;
  private readonly front: Endpoint;
  private readonly back: Endpoint;
  private channelFront: Endpoint | null = null;
  private channelBack: Endpoint | null = null;
  private readonly expected: Expected[] = [];
  /** Replies not to judge as unasked: a malformed request may or may not be answered. */
  private lenient = 0;
  private readonly codec: CodecSession = { protocolFeaturesOffered: true, protocolFeatures: 0n, numQueues: 256 };
  private features = 0n;
  private readonly slots: MemorySlots;
  private memory: GuestMemory | null = null;
  private readonly rings = new Map<number, RingConfig>();
  private readonly observers: RingObserver[] = [];
  /** Per observer, its buffer count at the last progress() (what the timer's pace is judged from). */
  private readonly counted = new WeakMap<RingObserver, number>();
  private over = false;
  private readonly noted = new Set<string>();
  /** Every ring watched in this session (its counters are the observer's own, live). */
  private readonly ringRows: { index: number; format: 'split' | 'packed'; size: number; stats: RingStats }[] = [];

  constructor(
    private readonly proxy: MonitorProxy,
    private readonly n: NativeAddon,
    readonly id: number,
    frontFd: number,
    backFd: number,
  ) {
    this.summary = { id, started: new Date().toISOString(), messages: { frontEnd: 0, backEnd: 0, channel: 0 }, rings: [], notes: [] };
    this.slots = new MemorySlots(n, () => undefined, true);
    this.front = new Endpoint(n, frontFd, {
      message: (f) => this.fromFront(f),
      closed: (reason, clean) => this.end(clean ? 'the front-end closed the connection' : `front-end: ${reason}`),
      drained: () => this.back.pause(false),
    });
    this.back = new Endpoint(n, backFd, {
      message: (f) => this.fromBack(f),
      closed: (reason, clean) => this.end(clean ? 'the back-end closed the connection' : `back-end: ${reason}`),
      drained: () => this.front.pause(false),
    });
  }

  /** The summary as of now (ring counters included). */
  snapshot(): ProxySessionSummary {
    this.summary.rings = this.ringRows.map((r) => ({ index: r.index, format: r.format, size: r.size, ...r.stats }));
    return this.summary;
  }

  get ended(): boolean {
    return this.over;
  }

  /** Whether a ring is watched (the poll timer runs only then). */
  get watching(): boolean {
    return this.observers.length > 0;
  }

  /**
   * A bug in the proxy's own judgement must not stop the relay: it is noted, and the session
   * stops watching its rings (forwarding goes on).
   */
  private internal(err: unknown): void {
    this.note(`internal: ${err instanceof Error ? err.message : String(err)} (ring watching stopped for this session)`);
    this.observers.length = 0;
    for (const r of this.rings.values()) r.observer = null;
  }

  private note(message: string): void {
    if (this.noted.has(message) || this.noted.size > 100) return;
    this.noted.add(message);
    this.summary.notes.push(message);
    this.proxy.logLine('warn', `session ${this.id}: ${message}`);
  }

  /** A verdict on the front-end (driver) or back-end (device), with where it was seen. */
  private verdict(clause: string, side: 'driver' | 'device', message: string, extra: Partial<ProxyVerdict> = {}, context?: Record<string, unknown>): void {
    this.proxy.record(this.id, clause, side, message, extra, context);
  }

  // ------------------------------------------------------------------ front-end -> back-end

  private fromFront(f: Frame): void {
    this.summary.messages.frontEnd++;
    let fds = f.fds;
    try {
      fds = this.judgeRequest(f);
    } catch (err) {
      this.internal(err);
    }
    this.back.send(f.bytes, fds);
    if (this.back.congested) this.front.pause(true);
    this.look();
  }

  /** Validates a front-end request (a verdict when it breaks a rule) and follows what it changes; returns the fds to forward. */
  private judgeRequest(f: Frame): number[] {
    const name = requestName(f.request);
    let header;
    try {
      header = parseHeader(f.bytes);
    } catch (err) {
      this.verdict('vhost-user.request.header', 'driver', err instanceof Error ? err.message : String(err), { cause: name });
      this.lenient++;
      return f.fds;
    }
    let decoded;
    try {
      decoded = decode(header, f.payload, f.fds.length, this.codec);
    } catch (err) {
      const e = err instanceof VhostUserError ? err : null;
      if (e?.kind !== 'unsupported-request') this.verdict('vhost-user.request.payload', 'driver', e?.message ?? String(err), { cause: name });
      // Known to the codec but not negotiated: a front-end fault. Unknown to the codec: maybe
      // known to the back-end (IOTLB, SET_VRING_ENDIAN, ...): forwarded without judgement.
      else if (name.startsWith('VHOST_USER_')) this.verdict('vhost-user.request.negotiated', 'driver', e.message, { cause: name });
      this.lenient++;
      return f.fds;
    }
    return this.observeRequest(decoded.message, f, decoded.needReply);
  }

  /** Looks at every watched ring once (after each message, and on the poll); whether any moved. A bug there is noted, never thrown. */
  look(): boolean {
    try {
      return this.scan();
    } catch (err) {
      this.internal(err);
      return false;
    }
  }

  /** What a valid request changes in what the proxy follows; returns the fds to forward (the back-end channel's are replaced). */
  private observeRequest(m: ReturnType<typeof decode>['message'], f: Frame, needReply: boolean): number[] {
    const r = m.request;
    if (REPLIES[r] !== undefined) this.expected.push({ request: r, ack: false, payload: f.payload });
    else if (needReply) this.expected.push({ request: r, ack: true, payload: f.payload });
    else if (r === Req.SET_LOG_BASE) this.expected.push({ request: r, ack: false, payload: f.payload }); // answered when LOG_SHMFD (QEMU reads it)
    switch (r) {
      case Req.SET_FEATURES:
        if (m.kind === 'u64') this.features = m.value;
        break;
      case Req.SET_PROTOCOL_FEATURES:
        if (m.kind === 'u64') this.codec.protocolFeatures = m.value;
        break;
      case Req.SET_MEM_TABLE:
        if (m.kind === 'memory') this.memoryChange(() => this.slots.replaceTable(m.regions, f.fds), () => this.slots.checkTable(m.regions, f.fds));
        break;
      case Req.ADD_MEM_REG:
        if (m.kind === 'region') this.memoryChange(() => this.slots.add(m.region, f.fds[0]).memory, () => this.slots.checkAdd(m.region, f.fds[0]));
        break;
      case Req.REM_MEM_REG:
        if (m.kind === 'region') this.memoryChange(() => (this.slots.remove(this.slots.find(m.region)), this.slots.memory), () => this.slots.find(m.region));
        break;
      case Req.SET_VRING_NUM:
        if (m.kind === 'state') this.ring(m.index).size = m.num;
        break;
      case Req.SET_VRING_ADDR:
        if (m.kind === 'addr') Object.assign(this.ring(m.index), { desc: m.desc, avail: m.avail, used: m.used, hasAddr: true });
        break;
      case Req.SET_VRING_BASE:
        if (m.kind === 'state') this.ring(m.index).base = m.num;
        break;
      case Req.SET_VRING_KICK:
        if (m.kind === 'vring-fd') this.start(m.index);
        break;
      case Req.RESET_OWNER:
      case Req.RESET_DEVICE:
        this.stopAll();
        break;
      case Req.SET_STATUS:
        if (m.kind === 'u64' && (m.value & BigInt(Status.DRIVER_OK)) === 0n) this.stopAll(true);
        break;
      case Req.SET_BACKEND_REQ_FD:
        return this.interposeChannel(f.fds[0]);
    }
    return f.fds;
  }

  private ring(index: number): RingConfig {
    let r = this.rings.get(index);
    if (r === undefined) {
      r = { size: 0, desc: 0, avail: 0, used: 0, hasAddr: false, base: 0, observer: null };
      this.rings.set(index, r);
    }
    return r;
  }

  /** A memory table change: checked, then mapped read-only; running rings are watched again over the new mappings. */
  private memoryChange(apply: () => GuestMemory | null, check: () => unknown): void {
    const running = [...this.rings.entries()].filter(([, r]) => r.observer !== null);
    for (const [, r] of running) this.retire(r, true);
    try {
      check();
      this.memory = apply();
    } catch (err) {
      this.memory = this.slots.memory;
      this.note(`guest memory cannot be mapped: ${err instanceof Error ? err.message : String(err)}`);
    }
    for (const [index] of running) this.start(index);
  }

  private packed(): boolean {
    return has(this.features, Feature.RING_PACKED);
  }

  /** Starts watching ring `index` (its kick fd came): needs memory and addresses. */
  private start(index: number): void {
    const r = this.ring(index);
    this.retire(r, false);
    if (this.memory === null || !r.hasAddr || r.size === 0) return;
    const mem = this.memory;
    let desc: number, avail: number, used: number;
    try {
      desc = mem.userToGuest(r.desc, 1);
      avail = mem.userToGuest(r.avail, 1);
      used = mem.userToGuest(r.used, 1);
    } catch {
      this.note(`ring ${index}: its addresses are in no memory region (not watched)`);
      return;
    }
    const features = { indirect: has(this.features, Feature.INDIRECT_DESC), eventIdx: has(this.features, Feature.EVENT_IDX) };
    const setup = { index, size: r.size, desc, avail, used, base: r.base };
    const packed = this.packed();
    const report = (clause: string, message: string, context: Record<string, unknown>) => {
      const side = clauseInfo(clause)?.side ?? (clause.includes('.device.') ? 'device' : 'driver');
      this.verdict(clause, side, message, { queue: index, position: r.observer?.position() }, context);
    };
    r.observer = packed ? PackedObserver.create(mem, report, features, setup) : SplitObserver.create(mem, report, features, setup);
    if (r.observer !== null) {
      this.observers.push(r.observer);
      this.ringRows.push({ index, format: packed ? 'packed' : 'split', size: r.size, stats: r.observer.stats });
      this.proxy.wake();
    }
  }

  /**
   * Stops watching a ring, after a look (`look`); `last`: the ring's last look in this session,
   * which judges what an observer held for a later look (rings.ts, PackedObserver.hold).
   */
  private retire(r: RingConfig, look: boolean, last = false): void {
    const o = r.observer;
    if (o === null) return;
    if (look) {
      try {
        o.scan();
        if (last) o.scan(true);
      } catch (err) {
        this.internal(err);
      }
    }
    const at = this.observers.indexOf(o);
    if (at >= 0) this.observers.splice(at, 1);
    r.observer = null;
  }

  private stopAll(look = false, last = false): void {
    for (const r of this.rings.values()) this.retire(r, look, last);
  }

  private scan(): boolean {
    let moved = false;
    for (let i = 0; i < this.observers.length; i++) if (this.observers[i].scan()) moved = true;
    return moved;
  }

  /**
   * How much moved since the last call, as the largest fraction of a ring's size over the
   * watched rings (buffers made available, used, or gone by unseen); what paces the timer.
   */
  progress(): number {
    let most = 0;
    for (let i = 0; i < this.observers.length; i++) {
      const o = this.observers[i];
      const count = o.stats.available + o.stats.used + o.stats.unseen;
      const last = this.counted.get(o) ?? 0;
      this.counted.set(o, count);
      const f = (count - last) / o.size;
      if (f > most) most = f;
    }
    return most;
  }

  /**
   * SET_BACKEND_REQ_FD: the back-end gets our end of a new socket pair; we relay between the
   * other end and the front-end's socket, both ways, bytes and fds unchanged.
   */
  private interposeChannel(frontChannel: number): number[] {
    let pair: [number, number];
    try {
      pair = this.n.socketpair();
    } catch (err) {
      this.note(`back-end request channel passed through unwatched: ${err instanceof Error ? err.message : String(err)}`);
      return [frontChannel];
    }
    const [ours, theirs] = pair;
    this.channelFront?.close('replaced');
    this.channelBack?.close('replaced');
    const front = new Endpoint(this.n, frontChannel, {
      message: (f) => {
        this.summary.messages.channel++;
        back.send(f.bytes, f.fds);
      },
      closed: () => back.close('the front-end closed the back-end request channel'),
      drained: () => back.pause(false),
    });
    const back: Endpoint = new Endpoint(this.n, ours, {
      message: (f) => {
        this.summary.messages.channel++;
        const flags = f.flags;
        if ((flags & FLAG_VERSION_MASK) !== VERSION || flags & FLAG_REPLY) {
          this.verdict('vhost-user.request.header', 'device', `back-end request ${f.request} on the back-end request channel has flags 0x${flags.toString(16)}`, { cause: `back-end request ${f.request}` });
        }
        front.send(f.bytes, f.fds);
        this.look();
      },
      closed: () => front.close('the back-end closed the back-end request channel'),
      drained: () => front.pause(false),
    });
    this.channelFront = front;
    this.channelBack = back;
    return [theirs];
  }

  // ------------------------------------------------------------------ back-end -> front-end

  private fromBack(f: Frame): void {
    this.summary.messages.backEnd++;
    const e = this.expected.shift();
    if (e === undefined) {
      if (this.lenient > 0) this.lenient--;
      else this.verdict('vhost-user.reply.unasked', 'device', `${requestName(f.request)} (flags 0x${f.flags.toString(16)}, ${f.size} bytes) answers nothing the front-end asked`, { cause: requestName(f.request) });
    } else {
      if (this.lenient > 0) this.lenient = 0;
      try {
        this.checkReply(e, f);
      } catch (err) {
        this.internal(err);
      }
    }
    this.front.send(f.bytes, f.fds);
    if (this.front.congested) this.back.pause(true);
    this.look();
  }

  private checkReply(e: Expected, f: Frame): void {
    const name = requestName(e.request);
    const cause = `reply to ${name}`;
    if (f.flags !== (VERSION | FLAG_REPLY)) this.verdict('vhost-user.reply.flags', 'device', `the reply to ${name} has flags 0x${f.flags.toString(16)} (0x5 expected)`, { cause });
    if (f.request !== e.request) {
      this.verdict('vhost-user.reply.request', 'device', `the reply to ${name} says ${requestName(f.request)}`, { cause });
      return; // out of step: its payload means something else
    }
    const want = e.ack ? 8 : e.request === Req.GET_CONFIG ? e.payload.length : REPLIES[e.request];
    if (want !== null && want !== undefined && f.size !== want) {
      this.verdict(e.ack ? 'vhost-user.reply-ack.success' : 'vhost-user.reply.size', 'device', `the reply to ${name} has a ${f.size}-byte payload (${want} expected)`, { cause });
      return;
    }
    const fds = e.request === Req.GET_INFLIGHT_FD ? 1 : 0;
    if (e.request !== Req.SET_LOG_BASE && f.fds.length !== fds) this.verdict('vhost-user.reply.fds', 'device', `the reply to ${name} carries ${f.fds.length} fd(s) (${fds} expected)`, { cause });
    const v = new DataView(f.payload.buffer, f.payload.byteOffset, f.payload.length);
    switch (e.request) {
      case Req.GET_FEATURES:
        this.codec.protocolFeaturesOffered = has(v.getBigUint64(0, true), F_PROTOCOL_FEATURES);
        break;
      case Req.GET_QUEUE_NUM: {
        const q = v.getBigUint64(0, true);
        if (q < 1n) this.verdict('vhost-user.queue-num', 'device', `GET_QUEUE_NUM answered ${q}`, { cause });
        else this.codec.numQueues = Number(q > 256n ? 256n : q);
        break;
      }
      case Req.GET_CONFIG: {
        const q = new DataView(e.payload.buffer, e.payload.byteOffset, e.payload.length);
        const off = v.getUint32(0, true);
        const len = v.getUint32(4, true);
        if (off !== q.getUint32(0, true) || len !== q.getUint32(4, true)) {
          this.verdict('vhost-user.config.echo', 'device', `GET_CONFIG (offset ${q.getUint32(0, true)}, size ${q.getUint32(4, true)}) answered offset ${off}, size ${len}`, { cause });
        }
        break;
      }
      case Req.GET_VRING_BASE: {
        // The back-end stopped the ring and wrote every used entry: a last look, then unwatched.
        const index = new DataView(e.payload.buffer, e.payload.byteOffset, 8).getUint32(0, true);
        const r = this.rings.get(index);
        if (r !== undefined) this.retire(r, true);
        break;
      }
    }
  }

  /** Ends the session (once): both connections and the channel closed, memory unmapped. */
  end(reason: string): void {
    if (this.over) return;
    this.over = true;
    this.stopAll(true, true);
    this.front.close(reason);
    this.back.close(reason);
    this.channelFront?.close(reason);
    this.channelBack?.close(reason);
    this.slots.clear();
    this.memory = null;
    this.summary.ended = new Date().toISOString();
    this.summary.reason = reason;
    this.proxy.sessionEnded(this);
  }
}

/**
 * The monitor proxy: listens at `listen`, connects each front-end to `connect`, forwards
 * everything and reports every clause either side breaks (see the module comment).
 */
export class MonitorProxy {
  /** Verdicts kept (at most `maxKept`), oldest first. */
  readonly verdicts: ProxyVerdict[] = [];
  /** Verdicts made, including those past `maxKept`. */
  total = 0;
  private readonly all: ProxySession[] = [];
  readonly monitor: Monitor;
  private readonly listening: ListeningSocket;
  private readonly watch: { close(): void };
  private readonly live = new Set<ProxySession>();
  private nextId = 1;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private ticks = 0;
  private interval: number;
  private readonly pollMin: number;
  private readonly pollMax: number;
  private readonly maxKept: number;
  private closed = false;
  /** Front-ends waiting for the back-end (fd -> retry timer). */
  private readonly held = new Map<number, ReturnType<typeof setTimeout>>();
  private readonly backendWait: number;

  private readonly n: NativeAddon;

  /** Listens now (a ProxyError of kind 'socket-path' when it cannot; a NativeAddonError without the addon). */
  constructor(private readonly options: MonitorProxyOptions) {
    this.n = native();
    const n = this.n;
    this.monitor = options.monitor ?? new Monitor({ mode: 'tolerant' });
    this.pollMin = options.pollMinMs ?? 1;
    this.pollMax = options.pollMaxMs ?? 50;
    this.maxKept = options.maxKept ?? 10_000;
    this.backendWait = options.backendWaitMs ?? 30_000;
    if (!(this.pollMin >= 0 && this.pollMax >= this.pollMin)) throw new ProxyError('options', `poll interval ${this.pollMin}..${this.pollMax} ms: the minimum must be >= 0 and at most the maximum`);
    this.interval = this.pollMin;
    try {
      this.listening = listenUnixSocket(n, options.listen, (m) => this.logLine('warn', m));
    } catch (err) {
      throw new ProxyError('socket-path', err instanceof Error ? err.message : String(err), { cause: err });
    }
    this.watch = n.watch(this.listening.fd, true, false, (events) => {
      if (events & POLL_READABLE || events < 0) this.accept();
    });
    this.logLine('info', `listening on ${options.listen}, forwarding to ${options.connect}`);
  }

  /** Every session so far, oldest first, as of now. */
  get sessions(): ProxySessionSummary[] {
    return this.all.map((s) => s.snapshot());
  }

  /** The path listened on. */
  get path(): string {
    return this.options.listen;
  }

  /** Sessions now open. */
  get openSessions(): number {
    return this.live.size;
  }

  /** @internal Passes a line to the `log` option (sessions use it). */
  logLine(level: 'info' | 'warn', message: string): void {
    this.options.log?.(level, message);
  }

  /**
   * Accepts waiting front-ends and connects each to the back-end. While the back-end cannot be
   * reached (it died and is being restarted), a front-end is held, unread, and the connect is
   * tried again every BACKEND_RETRY_MS up to `backendWaitMs`: the front-end sees a slow
   * back-end rather than a connection closed in the middle of its set-up (QEMU 7.2 does not
   * always recover from that). Past the bound it is closed.
   */
  private accept(): void {
    for (;;) {
      let fd: number;
      try {
        fd = this.n.accept(this.listening.fd);
      } catch (err) {
        this.logLine('warn', `accept failed: ${err instanceof Error ? err.message : String(err)}`);
        return;
      }
      if (fd < 0) return;
      this.pair(fd, Date.now() + this.backendWait);
    }
  }

  private pair(fd: number, deadline: number): void {
    if (this.closed) {
      this.n.close(fd);
      return;
    }
    let back: number;
    try {
      back = this.n.connect(this.options.connect);
    } catch (err) {
      if (Date.now() < deadline) {
        if (!this.held.has(fd)) this.logLine('warn', `front-end held: the back-end at ${this.options.connect} cannot be reached (${err instanceof Error ? err.message : String(err)}); trying again for up to ${this.backendWait} ms`);
        const t = setTimeout(() => {
          this.held.delete(fd);
          this.pair(fd, deadline);
        }, BACKEND_RETRY_MS);
        this.held.set(fd, t);
        return;
      }
      // No back-end: the front-end sees the close (QEMU with reconnect=1 tries again).
      this.logLine('warn', `front-end turned away: the back-end at ${this.options.connect} cannot be reached (${err instanceof Error ? err.message : String(err)})`);
      this.n.close(fd);
      return;
    }
    const s = new ProxySession(this, this.n, this.nextId++, fd, back);
    this.live.add(s);
    this.all.push(s);
    this.logLine('info', `session ${s.id}: front-end connected, back-end connected`);
  }

  /** @internal Records a verdict from a session: through the monitor (catalogue level, known deviations), then to `onVerdict`. */
  record(session: number, clause: string, side: 'driver' | 'device', message: string, extra: Partial<ProxyVerdict>, context?: Record<string, unknown>): void {
    const base = this.monitor.report(clause, message, context);
    const source = RULE_IDS.has(clause) ? 'vhost-user' : 'virtio';
    const v: ProxyVerdict = { ...base, side, observer: side === 'device' ? 'driver' : 'device', session, source, time: new Date().toISOString(), ...extra };
    if (source === 'vhost-user') v.level = 'MUST';
    if (v.position === undefined) delete v.position;
    this.total++;
    if (this.verdicts.length < this.maxKept) this.verdicts.push(v);
    try {
      this.options.onVerdict?.(v);
    } catch {
      // a listener's failure must not stop the relay
    }
  }

  /** @internal A ring started: polling restarts from the shortest interval. */
  wake(): void {
    this.interval = this.pollMin;
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    this.schedule();
  }

  private schedule(): void {
    if (this.timer !== null || this.closed) return;
    let any = false;
    for (const s of this.live) if (s.watching) any = true;
    if (!any) return;
    this.timer = setTimeout(() => this.tick(), this.interval);
  }

  private tick(): void {
    this.timer = null;
    this.ticks++;
    let most = 0;
    for (const s of this.live) {
      s.look();
      const f = s.progress();
      if (f > most) most = f;
    }
    // Paced by coverage (see the module comment): faster when a quarter of a ring moved between
    // two looks, slower when under a sixteenth did; in between the interval holds.
    if (most > 1 / 4) this.interval = Math.max(this.pollMin, Math.floor(this.interval / 2));
    else if (most < 1 / 16) this.interval = Math.min(this.pollMax, Math.max(1, this.interval * 2));
    this.schedule();
  }

  /** Looks the timer made so far (for a report of the proxy's own cost). */
  get looks(): number {
    return this.ticks;
  }

  /** @internal A session ended (it calls this once). */
  sessionEnded(s: ProxySession): void {
    this.live.delete(s);
    this.logLine('info', `session ${s.id} ended: ${s.summary.reason}`);
  }

  /** Stops listening, ends every session, removes the socket file it made. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.watch.close();
    for (const [fd, t] of this.held) {
      clearTimeout(t);
      this.n.close(fd);
    }
    this.held.clear();
    for (const s of [...this.live]) s.end('the proxy is shutting down');
    try {
      this.n.close(this.listening.fd);
    } catch {
      // closed already
    }
    this.listening.remove();
  }
}

