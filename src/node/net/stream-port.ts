/**
 * A FramePort over a stream socket speaking QEMU's `-netdev stream` framing (net/stream.c,
 * QEMU 7.2+; the same as the older `-netdev socket`): each frame is a 4-byte big-endian length,
 * then the frame (Ethernet header first, no FCS, no virtio-net header). A QEMU guest with a
 * built-in NIC (`-netdev stream,id=n0,server=off,addr.type=unix,addr.path=SOCK`), another
 * virtio-ts process or any tool speaking the framing can join a switch or a NetDriver through it.
 *
 * Hostile input never takes the process down: a length of 0 or beyond {@link STREAM_FRAME_MAX}
 * ends the connection (the stream cannot be resynchronized), with the reason in `error`.
 * Sending never waits: when the socket has more than `highWater` bytes queued the frame is
 * dropped (false), as Ethernet drops.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import { NO_OFFLOADS, type FramePort, type NetOffload, type OffloadSupport } from '../../net/frame-port.js';

/** The largest frame the framing carries here: 64 KiB + an Ethernet header (QEMU's NET_BUFSIZE is 68 KiB). */
export const STREAM_FRAME_MAX = 69632;

/** Counters of one stream port. */
export interface StreamPortCounts {
  rxFrames: number;
  txFrames: number;
  txDropped: number;
}

/** One connection speaking the stream framing. */
export class StreamPort implements FramePort {
  readonly accepts: OffloadSupport = NO_OFFLOADS;
  onFrame: ((frame: Uint8Array, offload: NetOffload | undefined) => void) | null = null;
  onLinkChange: ((up: boolean) => void) | null = null;
  readonly counts: StreamPortCounts = { rxFrames: 0, txFrames: 0, txDropped: 0 };
  /** Why the connection ended, when the peer broke the framing or the socket failed. */
  error: Error | null = null;
  private up = true;
  // Reassembly: a growing buffer of what arrived and is not a whole frame yet.
  private buf = new Uint8Array(STREAM_FRAME_MAX + 4);
  private have = 0;
  private readonly lenBytes = new Uint8Array(4);

  /** Wraps a connected socket; `highWater` is the most bytes queued before frames are dropped (default 1 MiB). */
  constructor(
    readonly socket: Socket,
    readonly name = 'stream',
    private readonly highWater = 1 << 20,
  ) {
    socket.on('data', (chunk: Buffer) => this.take(chunk));
    socket.on('error', (err) => {
      this.error ??= err;
    });
    socket.on('close', () => this.down());
  }

  /** Connects to a unix socket (QEMU's `-netdev stream,server=on,...` listening, or a StreamServer). */
  static connect(path: string, name = `stream:${path}`): Promise<StreamPort> {
    return new Promise((resolve, reject) => {
      const s = connect(path);
      s.once('error', reject);
      s.once('connect', () => {
        s.off('error', reject);
        resolve(new StreamPort(s, name));
      });
    });
  }

  get linkUp(): boolean {
    return this.up;
  }

  /** Queues a frame with its length prefix; false (dropped) when closed, backlogged, too large, or carrying an offload (a stream peer takes whole frames only). */
  send(frame: Uint8Array, offload?: NetOffload): boolean {
    if (!this.up || frame.length === 0 || frame.length > STREAM_FRAME_MAX || this.socket.writableLength > this.highWater || (offload !== undefined && (offload.gso !== undefined || offload.needsCsum !== undefined))) {
      this.counts.txDropped++;
      return false;
    }
    new DataView(this.lenBytes.buffer).setUint32(0, frame.length);
    const out = Buffer.allocUnsafe(4 + frame.length);
    out.set(this.lenBytes, 0);
    out.set(frame, 4);
    this.socket.write(out);
    this.counts.txFrames++;
    return true;
  }

  private take(chunk: Uint8Array): void {
    let off = 0;
    while (off < chunk.length && this.up) {
      // Complete the length, then the frame, in the reassembly buffer (no copy when a chunk holds whole frames).
      if (this.have === 0 && chunk.length - off >= 4) {
        const n = ((chunk[off] << 24) | (chunk[off + 1] << 16) | (chunk[off + 2] << 8) | chunk[off + 3]) >>> 0;
        if (!this.valid(n)) return;
        if (chunk.length - off - 4 >= n) {
          this.deliver(chunk.subarray(off + 4, off + 4 + n));
          off += 4 + n;
          continue;
        }
      }
      const need = this.have < 4 ? 4 - this.have : 4 + this.frameLen() - this.have;
      const take = Math.min(need, chunk.length - off);
      this.buf.set(chunk.subarray(off, off + take), this.have);
      this.have += take;
      off += take;
      if (this.have === 4 && !this.valid(this.frameLen())) return;
      if (this.have >= 4 && this.have === 4 + this.frameLen()) {
        this.deliver(this.buf.subarray(4, this.have));
        this.have = 0;
      }
    }
  }

  private frameLen(): number {
    const b = this.buf;
    return ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0;
  }

  private valid(n: number): boolean {
    if (n > 0 && n <= STREAM_FRAME_MAX) return true;
    this.error = new Error(`${this.name}: the peer sent a frame length of ${n} (1..${STREAM_FRAME_MAX}): the stream cannot be followed, closing it`);
    this.close();
    return false;
  }

  private deliver(frame: Uint8Array): void {
    this.counts.rxFrames++;
    this.onFrame?.(frame, undefined);
  }

  private down(): void {
    if (!this.up) return;
    this.up = false;
    this.onLinkChange?.(false);
  }

  close(): void {
    this.socket.destroy();
    this.down();
  }
}

/** A unix socket server handing each connection over as a StreamPort (QEMU's `-netdev stream,server=off` connects here). */
export class StreamServer {
  private constructor(readonly server: Server, readonly path: string) {}

  /** Listens on `path` (which must not exist); `onPort` gets each connection. */
  static listen(path: string, onPort: (port: StreamPort) => void): Promise<StreamServer> {
    let n = 0;
    const server = createServer((s) => onPort(new StreamPort(s, `stream:${path}#${n++}`)));
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve(new StreamServer(server, path));
      });
    });
  }

  /** Stops listening (Node removes the socket file it made). */
  close(): void {
    this.server.close();
  }
}
