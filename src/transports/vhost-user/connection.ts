/**
 * The socket of one vhost-user connection: messages in (a 12-byte header, then exactly the
 * payload it announces, with the fds that came along), replies out through a queue that never
 * blocks, and back-pressure both ways. Framing only: what a message means is the back-end's.
 *
 * Reading stops while the back-end waits for requests in progress (pause/resume: later
 * messages wait in the socket, in order), for good once the device failed (stopReading), and
 * while more than OUT_LIMIT bytes of replies wait for a front-end that does not read them.
 * One fd watch follows what is wanted (libuv allows one watch per fd).
 */
import { POLL_WRITABLE, type NativeAddon } from '../../native/index.js';
import { asVhostUserError, VhostUserError } from './errors.js';
import { HEADER_SIZE, MAX_PAYLOAD, parseHeader, requestName, type Header } from './protocol.js';

/**
 * Bytes of replies queued for a front-end that is not reading before the back-end stops
 * reading its messages (back-pressure). A message is answered by at most one reply of a few
 * KiB, so the queue never holds much more than this.
 */
export const OUT_LIMIT = 64 * 1024;

/** The reason a connection ends when the front-end closes it between messages (not an error). */
export const FRONT_END_CLOSED = 'front-end closed the connection';

export interface ConnectionHandlers {
  /** A whole message; `fds` are the callee's (it closes those it does not keep). */
  message(header: Header, payload: Uint8Array, fds: number[]): void;
  /** The socket is closed: why, and the error (null for a front-end that hung up between messages or a close() without one). */
  ended(reason: string, error: VhostUserError | null): void;
  /** Runs the socket's event callback; whatever it throws ends the connection (see VhostUserBackend.guarded). */
  guard(what: string, fn: (events: number) => void): (events: number) => void;
  /** Says once per connection that the front-end is not reading its replies. */
  warn(message: string): void;
}

export class Connection {
  private watch: { close(): void } | null = null;
  /** What the watch waits for now. */
  private watching = { read: false, write: false };
  /** Replies the socket has not taken yet, oldest first (fds: closed once sent). */
  private out: { data: Uint8Array; fds: number[] }[] = [];
  private outBytes = 0;
  /** pause() calls not yet resumed. */
  private holds = 0;
  private stopped = false;
  private pauseLogged = false;
  private readonly header = new Uint8Array(HEADER_SIZE);
  private readonly payload = new Uint8Array(MAX_PAYLOAD);

  constructor(
    private readonly n: NativeAddon,
    private fd: number,
    private readonly handlers: ConnectionHandlers,
  ) {
    this.update();
  }

  get open(): boolean {
    return this.fd >= 0;
  }

  /** Queues a message for the front-end and sends what the socket takes now (the fds are closed once sent). */
  send(data: Uint8Array, fds: number[] = []): void {
    if (this.fd < 0) {
      for (const fd of fds) this.n.close(fd);
      return;
    }
    this.out.push({ data, fds });
    this.outBytes += data.length;
    this.flush();
  }

  /** No messages are read until resume() (calls nest). */
  pause(): void {
    this.holds++;
    this.update();
  }

  /** Undoes one pause(); the messages that waited are read now. */
  resume(): void {
    if (this.holds > 0) this.holds--;
    this.update();
    if (this.watching.read) this.readable();
  }

  /** No more messages are read on this connection (the device failed; the connection is about to end). */
  stopReading(): void {
    this.stopped = true;
    this.update();
  }

  /**
   * Closes the socket: replies still queued go out if the socket takes them now (a NACK before a
   * refusal's close), then everything is released and `ended` runs. `extraFds` (received with a
   * message that was not handed on) are closed too.
   */
  end(reason: string, error: VhostUserError | null, extraFds: number[] = []): void {
    for (const fd of extraFds) this.n.close(fd);
    if (this.fd < 0) return;
    try {
      if (reason !== FRONT_END_CLOSED) this.flush();
    } catch {
      // the front-end is gone
    }
    for (const o of this.out) for (const fd of o.fds) this.n.close(fd);
    this.out = [];
    this.outBytes = 0;
    this.watch?.close();
    this.watch = null;
    this.watching = { read: false, write: false };
    this.n.close(this.fd);
    this.fd = -1;
    this.handlers.ended(reason, error);
  }

  private get canRead(): boolean {
    return this.fd >= 0 && this.holds === 0 && !this.stopped && this.outBytes <= OUT_LIMIT;
  }

  /** (Re)creates the watch for what is wanted now: readable while reading is allowed, writable while replies wait. */
  private update(): void {
    const read = this.canRead;
    const write = this.fd >= 0 && this.out.length > 0;
    if (this.watch !== null && read === this.watching.read && write === this.watching.write) return;
    if (!read && this.outBytes > OUT_LIMIT && !this.pauseLogged) {
      this.pauseLogged = true;
      this.handlers.warn(`vhost-user: the front-end is not reading its replies (${this.outBytes} bytes queued); its messages wait in the socket until it does`);
    }
    this.watch?.close();
    this.watch = null;
    this.watching = { read, write };
    if (!read && !write) return;
    this.watch = this.n.watch(
      this.fd,
      read,
      write,
      this.handlers.guard('socket', (events) => {
        if (events < 0) return this.end('socket error', new VhostUserError('connection-closed', 'socket error'));
        if (events & POLL_WRITABLE) this.flush();
        if (events & ~POLL_WRITABLE && this.watching.read) this.readable();
      }),
    );
  }

  /** Sends queued replies until the socket is full (then its writability is watched). */
  private flush(): void {
    if (this.fd >= 0) this.outBytes -= sendQueued(this.n, this.fd, this.out);
    if (this.fd >= 0) this.update();
  }

  /** Reads whole messages while reading is allowed; each goes to the handlers as it arrives. */
  private readable(): void {
    while (this.canRead) {
      const got = this.n.recvmsg(this.fd, this.header);
      if (got.bytes === -1) break;
      if (got.bytes === 0) return this.end(FRONT_END_CLOSED, null);
      if (got.bytes !== HEADER_SIZE) return this.fail(new VhostUserError('malformed-message', `short header (${got.bytes} bytes)`), got.fds);
      let h: Header;
      try {
        h = parseHeader(this.header);
      } catch (err) {
        return this.fail(asVhostUserError(err), got.fds);
      }
      const payload = this.payload.subarray(0, h.size);
      const fds = got.fds;
      let have = 0;
      while (have < h.size) {
        const more = this.n.recvmsg(this.fd, payload.subarray(have));
        fds.push(...more.fds);
        if (more.bytes === 0) return this.fail(new VhostUserError('connection-closed', 'front-end closed mid-message'), fds);
        // A front-end sends a message in one piece: a payload that is not there is malformed.
        if (more.bytes < 0) return this.fail(new VhostUserError('malformed-message', `${requestName(h.request)}: ${h.size - have} payload bytes missing`), fds);
        have += more.bytes;
      }
      this.handlers.message(h, payload.slice(), fds);
    }
    if (this.fd >= 0) this.update();
  }

  private fail(error: VhostUserError, fds: number[]): void {
    this.end(error.message, error, fds);
  }
}

/**
 * Sends queued messages on non-blocking socket `fd`, oldest first, until the queue is empty or
 * the socket is full (a message cut short keeps its rest at the head of the queue). A message's
 * fds go with its first byte and are closed here once sent (the peer has its own copies).
 * Returns the bytes sent; a send error is thrown as the addon throws it.
 */
export function sendQueued(n: NativeAddon, fd: number, out: { data: Uint8Array; fds: number[] }[]): number {
  let total = 0;
  while (out.length > 0) {
    const head = out[0];
    const sent = n.sendmsg(fd, head.data, head.fds);
    if (sent < 0) break;
    for (const f of head.fds) n.close(f);
    head.fds = [];
    total += sent;
    if (sent < head.data.length) {
      head.data = head.data.subarray(sent);
      break;
    }
    out.shift();
  }
  return total;
}
