/**
 * The vsock connection engine (spec 5.10.6): one side of a virtio-vsock transport, the same
 * code on the device (host CID 2, peer: the guest) and on the driver (the guest's CID, peer: the
 * host). It keeps the connections, their credit (buf_alloc / fwd_cnt, 5.10.6.3), the
 * REQUEST / RESPONSE / SHUTDOWN / RST state machine (5.10.6.5) and seqpacket message
 * boundaries (EOM/EOR, 5.10.6.6); it judges the peer's packets and names the clause a peer
 * breaks. The transport around it (VsockDeviceType, VsockDriver) moves bytes: `receive` takes
 * one packet from the peer, `produce` fills the next packet for the peer into a header view
 * and returns its payload (a view into what the application wrote: no copy until the
 * transport writes it into the ring).
 *
 * Memory is bounded per connection on both sides:
 * - towards the peer, we never send more RW bytes than the peer's advertised free space
 *   (vsock.buffer-space-management.*.1); what an application writes waits in a queue whose
 *   `write` returns false over `txHighWater` (backpressure onto the application's stream);
 * - from the peer, a connection takes at most `bufAlloc` unread bytes: the space we advertise.
 *   A peer that sends past it breaks buffer-space-management.*.1 and its connection is reset.
 * Control replies (RESPONSE, RST, CREDIT_UPDATE, SHUTDOWN) are flags on their connection and
 * RSTs for unknown flows wait in a bounded list: the tx side keeps being processed while the
 * rx side is full (vsock.virtqueue-flow-control.*.1) without unbounded growth.
 *
 * Browser-safe: no Node import.
 */
import { VirtioTsError } from '../errors.js';
import { VsockHdr, VsockOp, VsockSeq, VsockShutdown, VsockType, vsockOpName } from '../spec/vsock.js';

/** What a {@link VsockError} is about; stable, for callers and tests to branch on. */
export type VsockErrorKind =
  /** The peer reset the connection (RST), or it was reset for breaking the flow control. */
  | 'reset'
  /** The peer answered a REQUEST with RST: nothing listens there. */
  | 'refused'
  /** The transport was reset (TRANSPORT_RESET event, device reset, front-end gone). */
  | 'transport-reset'
  /** A listener exists on that port already. */
  | 'port-in-use'
  /** The connection is closed: no more writes. */
  | 'closed'
  /** No local port left for a new connection. */
  | 'no-ports'
  /** A seqpacket connection asked for when the peer did not negotiate VIRTIO_VSOCK_F_SEQPACKET. */
  | 'not-negotiated';

/** The one error class of the vsock layers (engine, device, driver, Node glue). */
export class VsockError extends VirtioTsError<VsockErrorKind> {}

/** Which side an engine is: it decides which clauses the peer's packets are judged by. */
export type VsockSide = 'device' | 'driver';

/** What the engine needs from its transport. */
export interface VsockEngineHost {
  /** The peer broke `clause` (a monitor verdict). */
  violation(clause: string, message: string, context?: Record<string, unknown>): void;
  /** There is something to send: the transport should call `produce` when it has a buffer. */
  wake(): void;
}

/** How an engine is set up. */
export interface VsockEngineOptions {
  /** Receive space per connection advertised to the peer as buf_alloc (default 256 KiB, Linux's default). */
  bufAlloc?: number;
  /** Bytes an application may queue per connection before `write` says stop (default 256 KiB). */
  txHighWater?: number;
  /** RSTs for unknown flows kept waiting for a buffer, at most (default 1024; more are dropped). */
  maxPendingResets?: number;
  /** First local port for outgoing connections (default 49152; wraps below 2^32). */
  ephemeralPortBase?: number;
}

/** A connection's state. */
export type VsockConnectionState = 'connecting' | 'accepting' | 'established' | 'closing' | 'closed';

const P_REQUEST = 1;
const P_RESPONSE = 2;
const P_SHUTDOWN = 4;
const P_CREDIT_UPDATE = 8;
const P_CREDIT_REQUEST = 16;
const P_RST = 32;

/**
 * One connection (a flow: local port, peer port). The application side: `write`/`end`/
 * `destroy` and `read`, with callbacks for what the peer does. The Node glue
 * (src/node/vsock/) makes a Duplex of it.
 */
export class VsockConnection {
  state: VsockConnectionState;
  /** Why it closed (null: a clean close, or still open). */
  error: VsockError | null = null;
  /** The peer will send no more (SHUTDOWN SEND seen). */
  peerShutSend = false;
  /** The peer will receive no more (SHUTDOWN RCV seen). */
  peerShutRcv = false;
  /** We will send no more (end() called; SHUTDOWN SEND goes once the queue is empty). */
  shutSend = false;

  // Credit, receive side: what we advertise.
  /** Bytes received from the peer (free-running, u32). */
  rxCnt = 0;
  /** Bytes the application consumed (fwd_cnt, free-running, u32). */
  fwdCnt = 0;
  /** fwd_cnt in the last packet we sent. */
  sentFwdCnt = 0;
  /** Received chunks not read yet, oldest first (seqpacket: whole messages). */
  private readonly rx: Uint8Array[] = [];
  /** Bytes in `rx`. */
  rxBuffered = 0;
  /** Seqpacket: fragments of the message being received. */
  private partial: Uint8Array[] = [];
  private partialLen = 0;
  /** Seqpacket: whether each message in rx ended a record (EOR), parallel to rx. */
  private readonly rxEor: boolean[] = [];

  // Credit, send side: what the peer advertised.
  peerBufAlloc = 0;
  peerFwdCnt = 0;
  /** Bytes sent (tx_cnt, free-running, u32). */
  txCnt = 0;
  /** Queued application bytes: chunks (seqpacket: messages), the first from `txOff`. */
  private readonly tx: Uint8Array[] = [];
  private readonly txEor: boolean[] = [];
  private txOff = 0;
  /** Bytes in the tx queue not sent yet. */
  txBuffered = 0;
  /** `write` returned false: call onDrain when below the mark. */
  private txStopped = false;
  /** A CREDIT_REQUEST went out and no credit came since (a starved connection asks once, then waits for the peer). */
  creditAsked = false;

  /** Pending control packets (P_* bits). */
  pending = 0;
  /** In the engine's ready list. */
  queued = false;

  /** Connected (RESPONSE seen, or our RESPONSE queued for an accepted REQUEST). */
  onConnect: (() => void) | null = null;
  /** Data is waiting for `read`. */
  onReadable: (() => void) | null = null;
  /** The peer will send no more and everything it sent was read. */
  onEnd: (() => void) | null = null;
  /** Closed: `error` is null for a clean close, a VsockError otherwise. Called once. */
  onClose: ((error: VsockError | null) => void) | null = null;
  /** end() took effect: every queued byte and the SHUTDOWN went out. */
  onShutdownSent: (() => void) | null = null;
  /** After `write` returned false, the queue went below half of the high-water mark. */
  onDrain: (() => void) | null = null;
  private endReported = false;

  /** @internal made by the engine */
  constructor(
    private readonly engine: VsockEngine,
    /** Our port. */
    readonly localPort: number,
    /** The peer's port. */
    readonly peerPort: number,
    /** VIRTIO_VSOCK_TYPE_STREAM or _SEQPACKET. */
    readonly type: number,
    state: VsockConnectionState,
  ) {
    this.state = state;
  }

  /** Whether message boundaries are kept (seqpacket). */
  get seqpacket(): boolean {
    return this.type === VsockType.SEQPACKET;
  }

  /** Our free receive space as the peer may count it. */
  get rxFree(): number {
    return this.engine.bufAlloc - ((this.rxCnt - this.fwdCnt) >>> 0);
  }

  /** What the peer can take now (peer_free, 5.10.6.3). */
  get peerFree(): number {
    const free = this.peerBufAlloc - ((this.txCnt - this.peerFwdCnt) >>> 0);
    return free > 0 ? free : 0;
  }

  /**
   * Queues bytes for the peer (the engine keeps a reference: do not reuse the array). With
   * seqpacket, each call is one message (`eor`: it ends a record). Returns false when the queue
   * is over the high-water mark: stop until onDrain. A VsockError `closed` after end/close.
   */
  write(bytes: Uint8Array, eor = false): boolean {
    if (this.state === 'closed' || this.state === 'closing' || this.shutSend) throw this.error ?? new VsockError('closed', `vsock connection ${this.localPort}->${this.peerPort} is closed for writing`);
    if (this.peerShutRcv) return true; // the peer receives no more: dropped, as a socket would
    if (bytes.length === 0 && !this.seqpacket) return this.txBuffered < this.engine.txHighWater;
    this.tx.push(bytes);
    this.txEor.push(eor);
    this.txBuffered += bytes.length;
    this.engine.schedule(this);
    const ok = this.txBuffered < this.engine.txHighWater;
    if (!ok) this.txStopped = true;
    return ok;
  }

  /** No more writes: SHUTDOWN SEND once everything queued went out. */
  end(): void {
    if (this.shutSend || this.state === 'closed') return;
    this.shutSend = true;
    if (this.state === 'established' || this.state === 'connecting' || this.state === 'accepting') {
      this.pending |= P_SHUTDOWN;
      this.engine.schedule(this);
    }
  }

  /** Aborts the connection: RST to the peer, closed here. */
  destroy(error: VsockError | null = null): void {
    if (this.state === 'closed') return;
    this.engine.abort(this, error);
  }

  /**
   * The next received chunk (seqpacket: one whole message), or null. Reading is what frees
   * receive space: fwd_cnt advances and, when the peer's view of our space is low, a
   * CREDIT_UPDATE goes out.
   */
  read(): Uint8Array | null {
    const chunk = this.rx.shift();
    if (chunk === undefined) {
      this.maybeEnd();
      return null;
    }
    this.lastEor = this.rxEor.shift() ?? false;
    this.rxBuffered -= chunk.length;
    this.fwdCnt = (this.fwdCnt + chunk.length) >>> 0;
    this.engine.consumed(this);
    if (this.rx.length === 0) this.maybeEnd();
    return chunk;
  }

  /** Seqpacket: whether the message `read` returned last ended a record (EOR). */
  lastEor = false;

  // ------------------------------------------------------------ engine side

  /** @internal a payload from the peer (copied already). */
  deliver(bytes: Uint8Array, flags: number): void {
    this.rxCnt = (this.rxCnt + bytes.length) >>> 0;
    if (!this.seqpacket) {
      if (bytes.length > 0) {
        this.rx.push(bytes);
        this.rxEor.push(false);
        this.rxBuffered += bytes.length;
      }
    } else {
      if (bytes.length > 0) this.partial.push(bytes);
      this.partialLen += bytes.length;
      if (flags & VsockSeq.EOM) {
        let msg: Uint8Array;
        if (this.partial.length === 1) msg = this.partial[0];
        else {
          msg = new Uint8Array(this.partialLen);
          let off = 0;
          for (const p of this.partial) {
            msg.set(p, off);
            off += p.length;
          }
        }
        this.partial = [];
        this.partialLen = 0;
        this.rx.push(msg);
        this.rxEor.push((flags & VsockSeq.EOR) !== 0);
        this.rxBuffered += msg.length;
      } else return; // the message is not whole yet: nothing to read
    }
    this.onReadable?.();
  }

  /** @internal */
  maybeEnd(): void {
    if (this.endReported || !this.peerShutSend || this.rx.length > 0) return;
    this.endReported = true;
    this.onEnd?.();
  }

  /** EOM/EOR of the payload nextPayload returned last. */
  lastFlags = 0;

  /** @internal the next payload to send, at most `max` bytes (null: none now); its EOM/EOR in `lastFlags`. */
  nextPayload(max: number): Uint8Array | null {
    if (this.tx.length === 0) return null;
    const credit = this.peerFree;
    const chunk = this.tx[0];
    const left = chunk.length - this.txOff;
    const n = Math.min(left, max, credit);
    if (n === 0 && left > 0) return null;
    const bytes = n === chunk.length ? chunk : chunk.subarray(this.txOff, this.txOff + n);
    this.txOff += n;
    this.txCnt = (this.txCnt + n) >>> 0;
    this.txBuffered -= n;
    let flags = 0;
    if (this.txOff === chunk.length) {
      this.tx.shift();
      const eor = this.txEor.shift()!;
      this.txOff = 0;
      if (this.seqpacket) flags = VsockSeq.EOM | (eor ? VsockSeq.EOR : 0);
    }
    if (this.txStopped && this.txBuffered <= this.engine.txHighWater >> 1) {
      this.txStopped = false;
      this.engine.later(() => this.onDrain?.());
    }
    this.lastFlags = flags;
    return bytes;
  }

  /** @internal whether data could go now (queued and credit for at least one byte, or an empty seqpacket message). */
  canSend(): boolean {
    if (this.tx.length === 0 || this.state !== 'established') return false;
    return this.peerFree > 0 || this.tx[0].length === 0;
  }

  /** @internal data waits for credit */
  get starved(): boolean {
    return this.tx.length > 0 && this.state === 'established' && this.peerFree === 0 && this.tx[0].length > 0;
  }

  /** @internal asked for credit once per starvation */
  takeCreditAsk(): boolean {
    if (this.creditAsked) return false;
    this.creditAsked = true;
    return true;
  }

  /** @internal the peer told us its credit */
  credit(bufAlloc: number, fwdCnt: number): void {
    if (bufAlloc !== this.peerBufAlloc || fwdCnt !== this.peerFwdCnt) this.creditAsked = false;
    this.peerBufAlloc = bufAlloc;
    this.peerFwdCnt = fwdCnt;
  }

  /** @internal queued application bytes are dropped (closed). */
  dropTx(): void {
    this.tx.length = 0;
    this.txEor.length = 0;
    this.txOff = 0;
    this.txBuffered = 0;
  }

  /** @internal closes for good (no packet): callbacks once. */
  finish(error: VsockError | null): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.error = error;
    this.dropTx();
    this.pending = 0;
    if (error === null) {
      this.peerShutSend = true;
      this.maybeEnd();
    }
    const drain = this.txStopped;
    this.txStopped = false;
    this.engine.later(() => {
      if (drain) this.onDrain?.();
      this.onClose?.(error);
    });
  }

  /** Tells the peer our credit now (CREDIT_UPDATE), without waiting for its view of our space to run low. */
  sendCreditUpdate(): void {
    if (this.state !== 'established') return;
    this.pending |= P_CREDIT_UPDATE;
    this.engine.schedule(this);
  }

  /** Whether all queued bytes went out. */
  get flushed(): boolean {
    return this.tx.length === 0;
  }
}

/** A listener: gets each connection the peer asks for on its port. */
export type VsockAcceptHandler = (conn: VsockConnection) => void;

/**
 * Decides on a REQUEST to a port nobody listens on: call `conn.accept()`-like
 * `engine.accept(conn)` or `engine.refuse(conn)`, now or later (the hybrid vsock glue connects
 * to PREFIX_<port> first). Return false to refuse at once.
 */
export type VsockRequestHandler = (conn: VsockConnection) => boolean;

interface PendingReset {
  localPort: number;
  peerPort: number;
  type: number;
}

/** One side of a vsock transport: its connections, their credit, the packets both ways. */
export class VsockEngine {
  readonly bufAlloc: number;
  readonly txHighWater: number;
  private readonly maxPendingResets: number;
  /** Our CID and the peer's, as written into packets we send (the transport sets them). */
  localCid = 0n;
  peerCid = 0n;
  /** Whether seqpacket was negotiated (the transport sets it). */
  seqpacket = false;
  /**
   * Whether stream flows are served (the transport sets it): STREAM negotiated, or no vsock
   * feature at all, or SEQPACKET without NO_IMPLIED_STREAM (feature-bits.*.2/.3).
   */
  stream = true;
  /** Connections by local port, then peer port. */
  private readonly conns = new Map<number, Map<number, VsockConnection>>();
  private readonly listeners = new Map<number, VsockAcceptHandler>();
  /** REQUESTs to ports without a listener (the hybrid vsock glue). */
  onRequest: VsockRequestHandler | null = null;
  private readonly ready: VsockConnection[] = [];
  private readyHead = 0;
  private readonly resets: PendingReset[] = [];
  private nextPort: number;
  private readonly base: number;
  /** Counters for tests and logs. */
  readonly stats = { packetsIn: 0, packetsOut: 0, bytesIn: 0, bytesOut: 0, resetsDropped: 0, connections: 0 };

  /** An engine for `side`, reporting to `host`. */
  constructor(
    readonly side: VsockSide,
    private readonly host: VsockEngineHost,
    options: VsockEngineOptions = {},
  ) {
    this.bufAlloc = options.bufAlloc ?? 256 * 1024;
    this.txHighWater = options.txHighWater ?? 256 * 1024;
    this.maxPendingResets = options.maxPendingResets ?? 1024;
    this.base = this.nextPort = options.ephemeralPortBase ?? 49152;
  }

  // ------------------------------------------------------------ application side

  /** Accepts connections the peer asks for on `port` (a VsockError `port-in-use` if taken). */
  listen(port: number, onConnection: VsockAcceptHandler): void {
    if (this.listeners.has(port)) throw new VsockError('port-in-use', `vsock port ${port} has a listener already`);
    this.listeners.set(port, onConnection);
  }

  /** Stops accepting on `port` (connections made stay). */
  unlisten(port: number): void {
    this.listeners.delete(port);
  }

  /** Connects to the peer's `port`: REQUEST now, onConnect on RESPONSE, onClose(`refused`) on RST. */
  connect(port: number, type: number = VsockType.STREAM): VsockConnection {
    if (type === VsockType.SEQPACKET && !this.seqpacket) throw new VsockError('not-negotiated', 'seqpacket connections need VIRTIO_VSOCK_F_SEQPACKET negotiated');
    const local = this.freePort(port);
    const conn = new VsockConnection(this, local, port, type, 'connecting');
    this.add(conn);
    conn.pending |= P_REQUEST;
    this.schedule(conn);
    return conn;
  }

  /** Accepts a connection a request handler held (RESPONSE to the peer). */
  accept(conn: VsockConnection): void {
    if (conn.state !== 'accepting') return;
    conn.state = 'established';
    conn.pending |= P_RESPONSE;
    this.schedule(conn);
    this.later(() => conn.onConnect?.());
  }

  /** Refuses a connection a request handler held (RST to the peer). */
  refuse(conn: VsockConnection): void {
    if (conn.state !== 'accepting') return;
    this.abort(conn, new VsockError('refused', `vsock connection to port ${conn.localPort} refused`));
  }

  /** Every open connection. */
  connections(): VsockConnection[] {
    const out: VsockConnection[] = [];
    for (const m of this.conns.values()) for (const c of m.values()) out.push(c);
    return out;
  }

  /** Bytes held for all connections: unread received bytes plus queued bytes to send. */
  get bufferedBytes(): number {
    let n = 0;
    for (const m of this.conns.values()) for (const c of m.values()) n += c.rxBuffered + c.txBuffered;
    return n;
  }

  /**
   * The transport was reset (TRANSPORT_RESET, a device reset, the front-end gone): every
   * connection closes with `transport-reset`, nothing is sent; listeners stay
   * (vsock.device-events.driver.4).
   */
  resetTransport(): void {
    const err = new VsockError('transport-reset', 'the vsock transport was reset');
    for (const c of this.connections()) {
      c.queued = false;
      c.finish(err);
    }
    this.conns.clear();
    this.ready.length = 0;
    this.readyHead = 0;
    this.resets.length = 0;
  }

  // ------------------------------------------------------------ transport side

  /** Whether `produce` has a packet to give. */
  hasOutput(): boolean {
    if (this.resets.length > 0) return true;
    while (this.readyHead < this.ready.length) {
      const c = this.ready[this.readyHead];
      if (c.state !== 'closed' && (c.pending !== 0 || c.canSend() || (c.starved && !c.creditAsked))) return true;
      c.queued = false;
      this.readyHead++;
    }
    this.compact();
    return false;
  }

  /**
   * Fills the next packet: the 44-byte header into `hdr` at `off`; returns its payload (empty
   * for a control packet; a view of application bytes: write it before calling again), or null
   * when there is nothing to send. `maxPayload`: room for payload in the buffer.
   */
  produce(hdr: DataView, off: number, maxPayload: number): Uint8Array | null {
    const reset = this.resets.shift();
    if (reset !== undefined) {
      this.header(hdr, off, reset.localPort, reset.peerPort, reset.type, VsockOp.RST, 0, 0, 0, 0);
      this.stats.packetsOut++;
      return EMPTY;
    }
    while (this.readyHead < this.ready.length) {
      const c = this.ready[this.readyHead++];
      c.queued = false;
      const payload = this.packetOf(c, hdr, off, maxPayload);
      if (payload === null) continue;
      if (c.state !== 'closed' && (c.pending !== 0 || c.canSend())) this.schedule(c);
      this.compact();
      this.stats.packetsOut++;
      this.stats.bytesOut += payload.length;
      return payload;
    }
    this.compact();
    return null;
  }

  /** One packet of `c`, or null when it has nothing now. */
  private packetOf(c: VsockConnection, hdr: DataView, off: number, maxPayload: number): Uint8Array | null {
    if (c.state === 'closed') return null;
    const p = c.pending;
    if (p & P_RST) {
      this.header(hdr, off, c.localPort, c.peerPort, c.type, VsockOp.RST, 0, 0, 0, 0);
      this.remove(c);
      c.pending = 0;
      return EMPTY;
    }
    if (p & P_REQUEST) return this.control(c, hdr, off, VsockOp.REQUEST, P_REQUEST, 0);
    if (p & P_RESPONSE) return this.control(c, hdr, off, VsockOp.RESPONSE, P_RESPONSE, 0);
    if (c.state === 'established' && !c.peerShutRcv) {
      const next = c.nextPayload(maxPayload);
      if (next !== null) {
        this.header(hdr, off, c.localPort, c.peerPort, c.type, VsockOp.RW, next.length, c.lastFlags, this.bufAlloc, c.fwdCnt);
        c.sentFwdCnt = c.fwdCnt;
        c.pending &= ~P_CREDIT_UPDATE;
        return next;
      }
      if (c.starved && c.takeCreditAsk()) return this.control(c, hdr, off, VsockOp.CREDIT_REQUEST, P_CREDIT_REQUEST, 0);
    }
    if (p & P_SHUTDOWN && c.state === 'established' && (c.flushed || c.peerShutRcv)) {
      // Both directions shut: the peer answers with RST (5.10.6.5); we close on it.
      const flags = VsockShutdown.SEND | (c.peerShutSend ? VsockShutdown.RCV : 0);
      const payload = this.control(c, hdr, off, VsockOp.SHUTDOWN, P_SHUTDOWN, flags);
      if (c.peerShutSend) this.closing(c);
      this.later(() => c.onShutdownSent?.());
      return payload;
    }
    if (p & P_CREDIT_UPDATE) return this.control(c, hdr, off, VsockOp.CREDIT_UPDATE, P_CREDIT_UPDATE, 0);
    if (p & P_CREDIT_REQUEST) return this.control(c, hdr, off, VsockOp.CREDIT_REQUEST, P_CREDIT_REQUEST, 0);
    return null;
  }

  /**
   * Both ways shut, SHUTDOWN sent: the peer owes us an RST (5.10.6.5). If none comes within
   * `closeTimeoutMs`, we send one and forget the flow (a peer never keeps it forever).
   */
  private closing(c: VsockConnection): void {
    c.state = 'closing';
    const t = setTimeout(() => {
      if (c.state === 'closing') this.abort(c, null);
    }, this.closeTimeoutMs);
    (t as { unref?: () => void }).unref?.();
  }

  /** How long a closing flow waits for the peer's RST (ms). */
  closeTimeoutMs = 5000;

  private control(c: VsockConnection, hdr: DataView, off: number, op: number, bit: number, flags: number): Uint8Array {
    c.pending &= ~bit;
    this.header(hdr, off, c.localPort, c.peerPort, c.type, op, 0, flags, this.bufAlloc, c.fwdCnt);
    c.sentFwdCnt = c.fwdCnt;
    if (op !== VsockOp.CREDIT_UPDATE) c.pending &= ~P_CREDIT_UPDATE; // this packet carries the credit too
    return EMPTY;
  }

  private header(v: DataView, off: number, localPort: number, peerPort: number, type: number, op: number, len: number, flags: number, bufAlloc: number, fwdCnt: number): void {
    v.setBigUint64(off + VsockHdr.srcCid, this.localCid, true);
    v.setBigUint64(off + VsockHdr.dstCid, this.peerCid, true);
    v.setUint32(off + VsockHdr.srcPort, localPort, true);
    v.setUint32(off + VsockHdr.dstPort, peerPort, true);
    v.setUint32(off + VsockHdr.len, len, true);
    v.setUint16(off + VsockHdr.type, type, true);
    v.setUint16(off + VsockHdr.op, op, true);
    v.setUint32(off + VsockHdr.flags, flags, true);
    v.setUint32(off + VsockHdr.bufAlloc, bufAlloc, true);
    v.setUint32(off + VsockHdr.fwdCnt, fwdCnt, true);
  }

  /**
   * One packet from the peer: its header in `hdr` at `off` (already checked to be whole), its
   * payload bytes (a copy the engine may keep). The transport checked the CIDs (its own
   * clauses); the engine judges the rest. `len`: the header's payload length when the
   * transport did not copy a payload larger than any flow's space (`bufAlloc`): such a packet
   * can only break the credit, and is judged without the copy.
   */
  receive(hdr: DataView, off: number, payload: Uint8Array, len = payload.length): void {
    this.stats.packetsIn++;
    const srcPort = hdr.getUint32(off + VsockHdr.srcPort, true);
    const dstPort = hdr.getUint32(off + VsockHdr.dstPort, true);
    const type = hdr.getUint16(off + VsockHdr.type, true);
    const op = hdr.getUint16(off + VsockHdr.op, true);
    const flags = hdr.getUint32(off + VsockHdr.flags, true);
    const bufAlloc = hdr.getUint32(off + VsockHdr.bufAlloc, true);
    const fwdCnt = hdr.getUint32(off + VsockHdr.fwdCnt, true);
    const known = (type === VsockType.STREAM && this.stream) || (type === VsockType.SEQPACKET && this.seqpacket);
    if (!known) {
      // vsock.receive-and-transmit.*.2: an RST answers a packet of unknown type (never an RST for an RST).
      if (op !== VsockOp.RST) this.queueReset(dstPort, srcPort, type);
      return;
    }
    const c = this.conns.get(dstPort)?.get(srcPort);
    if (c === undefined || c.type !== type) {
      if (op === VsockOp.REQUEST && c === undefined) {
        this.request(dstPort, srcPort, type, bufAlloc, fwdCnt);
        return;
      }
      if (op !== VsockOp.RST) this.queueReset(dstPort, srcPort, type);
      return;
    }
    if (op !== VsockOp.RST) {
      // vsock.buffer-space-management.*.2: fwd_cnt counts what the peer consumed of what we
      // sent: it never runs ahead of our tx_cnt, and it never goes back.
      const advance = (fwdCnt - c.peerFwdCnt) >>> 0;
      const outstanding = (c.txCnt - c.peerFwdCnt) >>> 0;
      if (advance > outstanding) {
        this.host.violation(
          this.side === 'device' ? 'vsock.buffer-space-management.driver.2' : 'vsock.buffer-space-management.device.2',
          `${this.peerName} sent fwd_cnt ${fwdCnt} on flow ${srcPort}->${dstPort}: we sent ${c.txCnt} bytes and it had counted ${c.peerFwdCnt}`,
          { srcPort, dstPort, op: vsockOpName(op), fwdCnt, txCnt: c.txCnt, peerFwdCnt: c.peerFwdCnt },
        );
        this.abort(c, new VsockError('reset', `the peer sent an invalid fwd_cnt on flow ${srcPort}->${dstPort}`));
        return;
      }
      const wasStarved = c.starved;
      c.credit(bufAlloc, fwdCnt);
      if (wasStarved && c.canSend()) this.schedule(c);
    }
    switch (op) {
      case VsockOp.RESPONSE:
        if (c.state === 'connecting') {
          c.state = 'established';
          if (c.shutSend) c.pending |= P_SHUTDOWN;
          this.schedule(c);
          this.later(() => c.onConnect?.());
        } else this.abort(c, new VsockError('reset', `unexpected RESPONSE on flow ${srcPort}->${dstPort}`));
        return;
      case VsockOp.RST:
        this.remove(c);
        c.finish(
          c.state === 'connecting'
            ? new VsockError('refused', `the peer refused the connection to port ${c.peerPort}`)
            : c.state === 'closing' || (c.peerShutSend && c.shutSend)
              ? null
              : new VsockError('reset', `the peer reset the connection ${c.localPort}->${c.peerPort}`),
        );
        return;
      case VsockOp.SHUTDOWN:
        if (flags & VsockShutdown.RCV) {
          c.peerShutRcv = true;
          c.dropTx();
        }
        if (flags & VsockShutdown.SEND) {
          c.peerShutSend = true;
          c.maybeEnd();
        }
        if (c.peerShutRcv && c.peerShutSend) {
          // The peer closed both ways: answer with RST (the clean disconnect of 5.10.6.5).
          this.remove(c);
          this.resetQueued(c);
          c.finish(null);
        }
        return;
      case VsockOp.RW:
        this.rw(c, payload, flags, len);
        return;
      case VsockOp.CREDIT_UPDATE:
        return; // the credit was taken above
      case VsockOp.CREDIT_REQUEST:
        c.pending |= P_CREDIT_UPDATE;
        this.schedule(c);
        return;
      default:
        // REQUEST on an existing flow, INVALID or an unknown op: the flow is aborted.
        this.abort(c, new VsockError('reset', `${vsockOpName(op)} on established flow ${srcPort}->${dstPort}`));
        return;
    }
  }

  /** A packet for a CID this side does not serve: an RST answers it (never one for an RST). */
  unroutable(hdr: DataView, off: number): void {
    this.stats.packetsIn++;
    if (hdr.getUint16(off + VsockHdr.op, true) === VsockOp.RST) return;
    this.queueReset(hdr.getUint32(off + VsockHdr.dstPort, true), hdr.getUint32(off + VsockHdr.srcPort, true), hdr.getUint16(off + VsockHdr.type, true));
  }

  private get peerName(): string {
    return this.side === 'device' ? 'the driver' : 'the device';
  }

  private rw(c: VsockConnection, payload: Uint8Array, flags: number, len: number): void {
    if (c.state !== 'established' && c.state !== 'closing') return;
    if (c.peerShutSend) return; // after SHUTDOWN SEND: ignored
    if (len > c.rxFree) {
      // vsock.buffer-space-management.*.1: the peer sent past the space we advertised. The
      // flow is reset: taking the bytes would let a peer make us buffer without bound.
      this.host.violation(
        this.side === 'device' ? 'vsock.buffer-space-management.driver.1' : 'vsock.buffer-space-management.device.1',
        `${this.peerName} sent ${len} bytes on flow ${c.peerPort}->${c.localPort} with ${c.rxFree} bytes of advertised space left (buf_alloc ${this.bufAlloc})`,
        { srcPort: c.peerPort, dstPort: c.localPort, len, free: c.rxFree, bufAlloc: this.bufAlloc },
      );
      this.abort(c, new VsockError('reset', `the peer overran the receive space on flow ${c.peerPort}->${c.localPort}`));
      return;
    }
    this.stats.bytesIn += len;
    c.deliver(payload, flags);
  }

  private request(localPort: number, peerPort: number, type: number, bufAlloc: number, fwdCnt: number): void {
    const listener = this.listeners.get(localPort);
    if (listener === undefined && this.onRequest === null) {
      this.queueReset(localPort, peerPort, type);
      return;
    }
    const c = new VsockConnection(this, localPort, peerPort, type, 'accepting');
    c.credit(bufAlloc, fwdCnt);
    this.add(c);
    if (listener !== undefined) {
      this.accept(c);
      listener(c);
      return;
    }
    if (!this.onRequest!(c)) this.refuse(c);
  }

  /** @internal the application read: advertise space when the peer's view of it is low. */
  consumed(c: VsockConnection): void {
    if (c.state !== 'established') return;
    const seen = this.bufAlloc - ((c.rxCnt - c.sentFwdCnt) >>> 0);
    if (seen < Math.min(64 * 1024, this.bufAlloc >> 1) && c.fwdCnt !== c.sentFwdCnt) {
      c.pending |= P_CREDIT_UPDATE;
      this.schedule(c);
    }
  }

  /** @internal RST to the peer and closed here. */
  abort(c: VsockConnection, error: VsockError | null): void {
    this.remove(c);
    this.resetQueued(c);
    c.finish(error);
  }

  private resetQueued(c: VsockConnection): void {
    this.queueReset(c.localPort, c.peerPort, c.type);
  }

  private queueReset(localPort: number, peerPort: number, type: number): void {
    if (this.resets.length >= this.maxPendingResets) {
      this.stats.resetsDropped++;
      return;
    }
    this.resets.push({ localPort, peerPort, type });
    this.host.wake();
  }

  /** @internal puts a connection on the ready list. */
  schedule(c: VsockConnection): void {
    if (c.queued || c.state === 'closed') return;
    c.queued = true;
    this.ready.push(c);
    this.host.wake();
  }

  /** @internal callbacks run after the packet at hand is processed (never inside the ring loop). */
  later(fn: () => void): void {
    queueMicrotask(fn);
  }

  private compact(): void {
    if (this.readyHead > 64 && this.readyHead * 2 > this.ready.length) {
      this.ready.splice(0, this.readyHead);
      this.readyHead = 0;
    } else if (this.readyHead === this.ready.length) {
      this.ready.length = 0;
      this.readyHead = 0;
    }
  }

  private add(c: VsockConnection): void {
    let m = this.conns.get(c.localPort);
    if (m === undefined) this.conns.set(c.localPort, (m = new Map()));
    m.set(c.peerPort, c);
    this.stats.connections++;
  }

  private remove(c: VsockConnection): void {
    const m = this.conns.get(c.localPort);
    if (m?.get(c.peerPort) === c) {
      m.delete(c.peerPort);
      if (m.size === 0) this.conns.delete(c.localPort);
    }
  }

  /** A local port no connection to `peerPort` uses and no listener has. */
  private freePort(peerPort: number): number {
    for (let i = 0; i < 65536; i++) {
      const p = this.nextPort;
      this.nextPort = this.nextPort >= 0xfffffffe ? this.base : this.nextPort + 1;
      if (!this.listeners.has(p) && this.conns.get(p)?.get(peerPort) === undefined) return p;
    }
    throw new VsockError('no-ports', 'no free local vsock port');
  }
}

const EMPTY = new Uint8Array(0);
