/**
 * vsock connections as Node Duplex streams, on either side: the host side of a served guest
 * (a {@link VsockDevice}) or the guest side of a {@link VsockDriver} (a driver <-> device pair
 * over loopback needs no guest). `vsockStreams(side).connect(port)` is a Duplex at once
 * ('connect' when the peer accepted, an error of VsockError kind `refused` when it did not);
 * `listen(port)` gives a {@link VsockListener} whose 'connection' events carry Duplexes.
 *
 * Backpressure both ways: reading from the Duplex is what frees receive space (the engine's
 * fwd_cnt, so a peer that writes faster than the application reads is held by its credit), and
 * a write's callback waits while the connection's queue is over its high-water mark (so an
 * application writing faster than the peer reads is held too: a guest that stops reading never
 * makes the host buffer without bound).
 */
import { Duplex } from 'node:stream';
import { EventEmitter } from 'node:events';
import { VsockType } from '../../spec/vsock.js';
import { VsockError, type VsockAcceptHandler, type VsockConnection } from '../../vsock/engine.js';

/** Either side of a vsock transport: a VsockDevice (host side) or a VsockDriver (guest side). */
export interface VsockSideApi {
  /** Accepts the peer's connections to `port`. */
  listen(port: number, onConnection: VsockAcceptHandler): void;
  /** Stops accepting on `port`. */
  unlisten(port: number): void;
  /** Connects to the peer's `port` (VIRTIO_VSOCK_TYPE_STREAM by default). */
  connect(port: number, type?: number): VsockConnection;
}

/**
 * One vsock connection as a Duplex. Seqpacket: each write is one message and each chunk read
 * is one message. `end()` sends SHUTDOWN SEND once the queue is out; `destroy()` sends RST.
 */
export class VsockStream extends Duplex {
  /** The engine's connection (ports, state, credit counters). */
  readonly connection: VsockConnection;
  private wantRead = false;
  private ended = false;
  private pumping = false;
  /** _final's callback, until the SHUTDOWN went out. */
  private finalCb: ((err?: Error | null) => void) | null = null;

  /** A Duplex over `conn` (the stream takes over its callbacks). */
  constructor(conn: VsockConnection) {
    super({ allowHalfOpen: true });
    this.connection = conn;
    conn.onConnect = () => this.emit('connect');
    conn.onReadable = () => {
      if (this.wantRead) this.pump();
    };
    conn.onEnd = () => {
      if (this.wantRead) this.pump();
    };
    conn.onShutdownSent = () => {
      const cb = this.finalCb;
      this.finalCb = null;
      cb?.();
    };
    conn.onClose = (err) => {
      const cb = this.finalCb;
      this.finalCb = null;
      cb?.(err);
      if (err !== null) {
        this.destroy(err);
        return;
      }
      // A clean close: what was received can still be read; then the stream ends.
      this.pump();
      if (this.readableEnded) this.destroy();
      else this.once('end', () => this.destroy());
    };
  }

  /** Our port. */
  get localPort(): number {
    return this.connection.localPort;
  }

  /** The peer's port. */
  get remotePort(): number {
    return this.connection.peerPort;
  }

  private pump(): void {
    // read() may call back (onEnd) into pump: one pump at a time.
    if (this.pumping || this.ended) return;
    this.pumping = true;
    try {
      const conn = this.connection;
      for (;;) {
        const chunk = conn.read();
        if (chunk === null) break;
        if (!this.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length))) {
          this.wantRead = false;
          return;
        }
      }
      if (conn.rxBuffered === 0 && (conn.peerShutSend || conn.state === 'closed')) {
        this.ended = true;
        this.push(null);
      }
    } finally {
      this.pumping = false;
    }
  }

  /** Duplex: the consumer wants more (reading is what frees receive space). */
  override _read(): void {
    this.wantRead = true;
    this.pump();
  }

  /** @internal Duplex: one chunk from the application. */
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    const conn = this.connection;
    let ok: boolean;
    try {
      // A copy: the caller may reuse its buffer once the callback ran, before the bytes went out.
      ok = conn.write(Uint8Array.prototype.slice.call(chunk));
    } catch (err) {
      cb(err as Error);
      return;
    }
    if (ok) cb();
    else
      conn.onDrain = () => {
        conn.onDrain = null;
        cb(conn.state === 'closed' && conn.error !== null ? conn.error : null);
      };
  }

  /** @internal end(): the callback waits until the queue and the SHUTDOWN went out (a destroy after 'finish' loses nothing). */
  override _final(cb: (err?: Error | null) => void): void {
    const conn = this.connection;
    if (conn.state === 'closed') {
      cb(conn.error);
      return;
    }
    this.finalCb = cb;
    conn.end();
  }

  /** @internal Duplex: destroyed (RST unless the connection closed already). */
  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    const conn = this.connection;
    if (conn.state !== 'closed') conn.destroy(err instanceof VsockError ? err : null);
    cb(err);
  }
}

/** Accepts connections on one port: a 'connection' event per Duplex. */
export class VsockListener extends EventEmitter<{ connection: [VsockStream] }> {
  private closed = false;
  private readonly waiting: VsockStream[] = [];
  private readonly takers: ((s: VsockStream) => void)[] = [];

  /** @internal made by vsockStreams().listen */
  constructor(
    private readonly side: VsockSideApi,
    /** The port listened on. */
    readonly port: number,
  ) {
    super();
    side.listen(port, (conn) => {
      const s = new VsockStream(conn);
      const taker = this.takers.shift();
      if (taker !== undefined) taker(s);
      else if (this.listenerCount('connection') > 0) this.emit('connection', s);
      else this.waiting.push(s);
    });
  }

  /** The next connection (those that came with no 'connection' listener wait here). */
  accept(): Promise<VsockStream> {
    const s = this.waiting.shift();
    if (s !== undefined) return Promise.resolve(s);
    return new Promise((resolve) => this.takers.push(resolve));
  }

  /** Stops listening (connections made stay open). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.side.unlisten(this.port);
  }
}

/** Duplex streams over a vsock side: `listen(port)` and `connect(port)`. */
export interface VsockStreams {
  /** Accepts the peer's connections to `port`. */
  listen(port: number): VsockListener;
  /** Connects to the peer's `port`; `seqpacket` for a SOCK_SEQPACKET flow (VIRTIO_VSOCK_F_SEQPACKET). */
  connect(port: number, options?: { seqpacket?: boolean }): VsockStream;
}

/** Duplex streams over a VsockDevice (host side) or a VsockDriver (guest side). */
export function vsockStreams(side: VsockSideApi): VsockStreams {
  return {
    listen: (port) => new VsockListener(side, port),
    connect: (port, options = {}) => new VsockStream(side.connect(port, options.seqpacket === true ? VsockType.SEQPACKET : VsockType.STREAM)),
  };
}
