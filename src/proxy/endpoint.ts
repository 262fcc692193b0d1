/**
 * One socket of the monitor proxy: whole vhost-user messages in (the 12-byte header, then the
 * payload it announces, with every fd that came along), whole messages out through a queue that
 * never blocks. Framing only, and no judgement: the bytes of a message are handed on exactly as
 * they arrived, whatever they say (the session judges them, the peer refuses them).
 *
 * Back-pressure both ways: the session stops reading one side while the other side's queue is
 * over OUT_LIMIT (a peer that does not read makes its partner wait in its socket, in order, and
 * the proxy never holds more than about OUT_LIMIT of it).
 *
 * One fd watch follows what is wanted (libuv allows one watch per fd).
 */
import { POLL_WRITABLE, type NativeAddon } from '../native/index.js';
import { HEADER_SIZE } from '../transports/vhost-user/protocol.js';

/**
 * The largest payload the proxy frames. vhost-user payloads are at most a few KiB (MAX_PAYLOAD,
 * 4096, for requests); a larger announced size is still framed and forwarded (the peer refuses
 * it, the session reports it) up to this bound, past which the stream cannot be trusted and the
 * session ends.
 */
export const MAX_FRAMED_PAYLOAD = 64 * 1024;

/** Bytes queued for a peer that does not read before its partner is no longer read. */
export const OUT_LIMIT = 256 * 1024;

/** One whole message as it arrived: its bytes (header and payload) and the fds that came with it. */
export interface Frame {
  /** Header and payload, exactly as received. */
  bytes: Uint8Array;
  /** request, flags and size from the header (little-endian u32s). */
  request: number;
  flags: number;
  size: number;
  /** The payload (a view of `bytes`). */
  payload: Uint8Array;
  /** Fds that came with the message: the receiver's to forward or close. */
  fds: number[];
}

/** What an endpoint tells its owner. */
export interface EndpointHandlers {
  /** A whole message. */
  message(frame: Frame): void;
  /** The socket ended: why (`clean`: end of stream between messages). Called once. */
  closed(reason: string, clean: boolean): void;
  /** The out queue went from over OUT_LIMIT back under it (the partner may be read again). */
  drained(): void;
}

/** A connected socket framed as vhost-user messages, both ways. */
export class Endpoint {
  private watch: { close(): void } | null = null;
  private watching = { read: false, write: false };
  private readonly header = new Uint8Array(HEADER_SIZE);
  private readonly headerView = new DataView(this.header.buffer);
  private frame: Uint8Array | null = null;
  private have = 0;
  private fds: number[] = [];
  private out: { data: Uint8Array; fds: number[] }[] = [];
  /** Bytes waiting in the out queue. */
  outBytes = 0;
  private paused = false;
  private ended = false;

  /** Starts reading `fd` (now the endpoint's: closed when it ends). */
  constructor(
    private readonly n: NativeAddon,
    readonly fd: number,
    private readonly handlers: EndpointHandlers,
  ) {
    this.update();
  }

  /** Whether the socket is still open. */
  get open(): boolean {
    return !this.ended;
  }

  /** Whether the out queue is over OUT_LIMIT (its partner should not be read). */
  get congested(): boolean {
    return this.outBytes > OUT_LIMIT;
  }

  /** Queues a message (its fds are sent with its first byte, then closed here) and sends what the socket takes now. */
  send(data: Uint8Array, fds: number[]): void {
    if (this.ended) {
      closeFds(this.n, fds);
      return;
    }
    this.out.push({ data, fds });
    this.outBytes += data.length;
    this.flush();
  }

  /** Stops (true) or resumes (false) reading: back-pressure from the partner. */
  pause(paused: boolean): void {
    if (this.paused === paused) return;
    this.paused = paused;
    this.update();
    if (!paused && !this.ended) this.readable(0);
  }

  /** Closes the socket (once): fds still queued or half-received are closed, `closed` runs. */
  close(reason: string, clean = false): void {
    if (this.ended) return;
    this.ended = true;
    this.watch?.close();
    this.watch = null;
    for (const o of this.out) closeFds(this.n, o.fds);
    this.out = [];
    this.outBytes = 0;
    closeFds(this.n, this.fds);
    this.fds = [];
    try {
      this.n.close(this.fd);
    } catch {
      // closed already
    }
    this.handlers.closed(reason, clean);
  }

  private update(): void {
    if (this.ended) return;
    const read = !this.paused;
    const write = this.out.length > 0;
    if (this.watch !== null && read === this.watching.read && write === this.watching.write) return;
    this.watch?.close();
    this.watch = null;
    this.watching = { read, write };
    if (!read && !write) return;
    this.watch = this.n.watch(this.fd, read, write, (events) => {
      if (events < 0) return this.close('socket error');
      if (events & POLL_WRITABLE) this.flush();
      if (events & ~POLL_WRITABLE && this.watching.read) this.readable(events);
    });
  }

  private flush(): void {
    const was = this.congested;
    while (this.out.length > 0 && !this.ended) {
      const head = this.out[0];
      let sent: number;
      try {
        sent = this.n.sendmsg(this.fd, head.data, head.fds);
      } catch (err) {
        this.close(`send failed: ${err instanceof Error ? err.message : String(err)}`);
        return;
      }
      if (sent < 0) break;
      closeFds(this.n, head.fds); // the peer has its own copies now
      head.fds = [];
      this.outBytes -= sent;
      if (sent < head.data.length) {
        head.data = head.data.subarray(sent);
        break;
      }
      this.out.shift();
    }
    this.update();
    if (was && !this.congested && !this.ended) this.handlers.drained();
  }

  /** Reads whole messages while reading is allowed. */
  private readable(events: number): void {
    while (!this.ended && !this.paused) {
      const into = this.frame === null ? this.header.subarray(this.have) : this.frame.subarray(HEADER_SIZE + this.have);
      let r: { bytes: number; fds: number[] };
      try {
        r = into.length === 0 ? { bytes: 0, fds: [] } : this.n.recvmsg(this.fd, into);
      } catch (err) {
        this.close(`receive failed: ${err instanceof Error ? err.message : String(err)}`);
        return;
      }
      for (const f of r.fds) this.fds.push(f);
      if (into.length > 0) {
        if (r.bytes === 0) {
          const clean = this.frame === null && this.have === 0;
          this.close(clean ? 'closed the connection' : 'closed the connection in the middle of a message', clean);
          return;
        }
        if (r.bytes < 0) {
          if (events < 0) this.close('socket error');
          break;
        }
        this.have += r.bytes;
      }
      if (this.frame === null) {
        if (this.have < HEADER_SIZE) continue;
        const size = this.headerView.getUint32(8, true);
        if (size > MAX_FRAMED_PAYLOAD) {
          this.close(`a message announcing ${size} payload bytes (the proxy frames at most ${MAX_FRAMED_PAYLOAD})`);
          return;
        }
        this.frame = new Uint8Array(HEADER_SIZE + size);
        this.frame.set(this.header);
        this.have = 0;
      }
      const frame = this.frame;
      if (this.have < frame.length - HEADER_SIZE) continue;
      const fds = this.fds;
      this.frame = null;
      this.have = 0;
      this.fds = [];
      const v = new DataView(frame.buffer);
      this.handlers.message({ bytes: frame, request: v.getUint32(0, true), flags: v.getUint32(4, true), size: v.getUint32(8, true), payload: frame.subarray(HEADER_SIZE), fds });
    }
    this.update();
  }
}

/** Closes fds, ignoring ones already closed. */
export function closeFds(n: NativeAddon, fds: readonly number[]): void {
  for (const fd of fds) {
    try {
      n.close(fd);
    } catch {
      // closed already
    }
  }
}
