/**
 * A frame port over a unix stream socket in QEMU's `-netdev stream` framing (net/stream.c:
 * each frame is a 4-byte big-endian length and the frame, no virtio-net header), and a server
 * that joins every connection to a {@link NetSwitch}: `virtio-ts switch --socket PATH`, which
 * QEMU guests with a built-in NIC (`-netdev stream,addr.type=unix,addr.path=PATH`) and
 * `virtio-ts serve net --switch PATH` processes join.
 *
 * Written for issue 15 by the net-device helper as the minimal framing `serve net --switch`
 * needs; net-driver's unix stream/dgram ports may replace it (same framing, same interface).
 *
 * Hostile input: a length above {@link MAX_STREAM_FRAME} (QEMU's NET_BUFSIZE) ends the
 * connection (the port's link goes down); a peer that reads slower than frames come has them
 * dropped once `maxQueuedBytes` wait in the socket (Ethernet semantics: nobody waits, memory
 * stays bounded).
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { lstatSync, unlinkSync } from 'node:fs';
import type { FramePort, NetOffload, OffloadSupport } from '../../net/frame-port.js';
import { NO_OFFLOADS } from '../../net/frame-port.js';
import { completeOffloads } from '../../net/offload.js';
import type { NetSwitch } from '../../net/switch.js';

/** The largest frame the stream framing carries (QEMU's NET_BUFSIZE: 4096 + 65536). */
export const MAX_STREAM_FRAME = 4096 + 65536;

/** Options of a {@link StreamFramePort}. */
export interface StreamPortOptions {
  /** Bytes queued in the socket beyond which frames are dropped (default 4 MiB). */
  maxQueuedBytes?: number;
}

/** One end of a `-netdev stream` connection as a frame port (takes no offloads: the framing has no header). */
export class StreamFramePort implements FramePort {
  readonly accepts: OffloadSupport = NO_OFFLOADS;
  onFrame: ((frame: Uint8Array, offload: NetOffload | undefined) => void) | null = null;
  onLinkChange: ((up: boolean) => void) | null = null;
  /** Frames dropped because the socket was backed up or closed. */
  dropped = 0;
  /** Why the connection ended ('' while up). */
  endReason = '';
  private up = true;
  private readonly partial = Buffer.allocUnsafe(4 + MAX_STREAM_FRAME);
  /** The same bytes as a plain Uint8Array: what onFrame gets (a Buffer's slice() would not copy). */
  private readonly frames = new Uint8Array(this.partial.buffer, this.partial.byteOffset, this.partial.length);
  private have = 0;
  private readonly maxQueued: number;
  private readonly emitOne = (f: Uint8Array) => this.write(f);

  /** A port over a connected socket. */
  constructor(readonly name: string, private readonly socket: Socket, options: StreamPortOptions = {}) {
    this.maxQueued = options.maxQueuedBytes ?? 4 << 20;
    socket.setNoDelay?.(true);
    socket.on('data', (chunk: Buffer) => this.take(chunk));
    socket.on('error', (err) => this.down(err.message));
    socket.on('close', () => this.down('closed'));
  }

  /** Connects to a unix stream socket (a `virtio-ts switch`, a QEMU `-netdev stream,server=on`). */
  static connect(path: string, options: StreamPortOptions = {}): Promise<StreamFramePort> {
    return new Promise((resolve, reject) => {
      const s = createConnection({ path });
      const fail = (err: Error) => reject(err);
      s.once('error', fail);
      s.once('connect', () => {
        s.off('error', fail);
        resolve(new StreamFramePort(`stream:${path}`, s, options));
      });
    });
  }

  get linkUp(): boolean {
    return this.up;
  }

  send(frame: Uint8Array, offload?: NetOffload): boolean {
    if (!this.up) {
      this.dropped++;
      return false;
    }
    // The framing carries no header: offloads are finished here (a no-op for plain frames).
    // false when the socket was backed up (the switch counts it as a drop).
    const before = this.dropped;
    return completeOffloads(frame, offload, NO_OFFLOADS, this.emitOne) > 0 && this.dropped === before;
  }

  private write(frame: Uint8Array): void {
    if (this.socket.writableLength > this.maxQueued) {
      this.dropped++;
      return;
    }
    // socket.write keeps the buffer until it is written: one buffer per frame, header included.
    const b = Buffer.allocUnsafe(4 + frame.length);
    b.writeUInt32BE(frame.length, 0);
    b.set(frame, 4);
    // The frames of one run (a device's transmit batch, a switch's burst) leave in one writev:
    // uncorked, every frame was its own write(2) (bench:net profile, the switch hop).
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(this.uncork);
    }
    this.socket.write(b);
  }

  private corked = false;
  private readonly uncork = (): void => {
    this.corked = false;
    this.socket.uncork();
  };

  /** Incoming bytes: whole frames go to onFrame, a partial one waits in the preallocated buffer. */
  private take(chunk: Buffer): void {
    let off = 0;
    while (off < chunk.length && this.up) {
      if (this.have < 4) {
        const n = Math.min(4 - this.have, chunk.length - off);
        chunk.copy(this.partial, this.have, off, off + n);
        this.have += n;
        off += n;
        if (this.have < 4) return;
        const len = this.partial.readUInt32BE(0);
        if (len > MAX_STREAM_FRAME) {
          this.down(`frame length ${len} is over ${MAX_STREAM_FRAME}`);
          this.socket.destroy();
          return;
        }
      }
      const len = this.partial.readUInt32BE(0);
      const n = Math.min(4 + len - this.have, chunk.length - off);
      chunk.copy(this.partial, this.have, off, off + n);
      this.have += n;
      off += n;
      if (this.have === 4 + len) {
        this.have = 0;
        if (len > 0) this.onFrame?.(this.frames.subarray(4, 4 + len), undefined);
      }
    }
  }

  private down(reason: string): void {
    if (!this.up) return;
    this.up = false;
    this.endReason = reason;
    this.onLinkChange?.(false);
  }

  close(): void {
    this.down('closed here');
    this.socket.destroy();
  }
}

/** A listening switch socket: every connection is a port of `sw`. */
export interface SwitchServer {
  readonly server: Server;
  readonly path: string;
  /** Ports connected now. */
  readonly ports: ReadonlySet<StreamFramePort>;
  /** Stops listening, closes every connection, removes the socket file if it is still the one made here. */
  close(): Promise<void>;
}

/**
 * Listens on `path` (which must not exist: nothing is ever replaced) and joins each connection
 * to `sw` as a {@link StreamFramePort} until it closes.
 */
export function listenSwitch(path: string, sw: NetSwitch, options: StreamPortOptions = {}): Promise<SwitchServer> {
  const ports = new Set<StreamFramePort>();
  let n = 0;
  const server = createServer((socket) => {
    const port = new StreamFramePort(`stream:${path}#${++n}`, socket, options);
    ports.add(port);
    const detach = sw.attach(port);
    const onLink = port.onLinkChange;
    port.onLinkChange = (up) => {
      onLink?.(up);
      if (!up) {
        detach();
        ports.delete(port);
      }
    };
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ path, exclusive: true }, () => {
      server.off('error', reject);
      const made = lstatSync(path);
      resolve({
        server,
        path,
        ports,
        close: () =>
          new Promise<void>((res) => {
            for (const p of ports) p.close();
            server.close(() => res());
            try {
              const now = lstatSync(path);
              if (now.ino === made.ino && now.dev === made.dev) unlinkSync(path);
            } catch {
              // gone already
            }
          }),
      });
    });
  });
}
