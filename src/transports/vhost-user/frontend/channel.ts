/**
 * One vhost-user socket seen from the front-end: whole messages in and out (header, exact
 * payload, the fds that came with it), requests one at a time, every reply checked against
 * what was asked (vhost-user.rst "Message specification": the reply flag, the request code,
 * the payload size, the fds) and every wait bounded. A back-end that never answers ends the
 * request with a FrontEndError of kind 'timeout' and the connection is closed: a late answer
 * could not be told from the answer to the next request.
 *
 * The same reader serves the back-end request channel (SET_BACKEND_REQ_FD), where the
 * back-end asks and the front-end answers.
 */
import { fdReady, type NativeAddon } from '../../../native/index.js';
import { FLAG_NEED_REPLY, FLAG_REPLY, FLAG_VERSION_MASK, HEADER_SIZE, VERSION, encodeMessage, requestName } from '../protocol.js';
import { FrontEndError } from './errors.js';

/** A message as it arrived: header fields, payload, and the fds that came with it (now ours). */
export interface RawMessage {
  request: number;
  flags: number;
  payload: Uint8Array;
  fds: number[];
}

/** The largest payload the front-end takes from a back-end (the largest reply is GET_CONFIG's 12 + 256 bytes). */
export const MAX_INCOMING_PAYLOAD = 4096;

/** Closes fds the front-end does not keep (extra fds that came with a message). */
export function closeAll(n: NativeAddon, fds: readonly number[]): void {
  for (const fd of fds) {
    try {
      n.close(fd);
    } catch {
      // closed already
    }
  }
}

/**
 * A socket that reads whole messages as they arrive (an fd watch on the event loop, no
 * polling) and writes whole messages, waiting (bounded) while the socket is full.
 */
export class MessageSocket {
  private readonly header = new Uint8Array(HEADER_SIZE);
  private readonly headerView = new DataView(this.header.buffer);
  private payload: Uint8Array | null = null;
  private have = 0;
  private fds: number[] = [];
  private readonly watch: { close(): void };
  /** Why the socket closed (null while open). */
  closedBy: FrontEndError | null = null;

  /** Reads `fd` from now on; `onMessage` gets each whole message, `onClose` the reason once it ends. */
  constructor(
    readonly fd: number,
    private readonly n: NativeAddon,
    private readonly onMessage: (m: RawMessage) => void,
    private readonly onClose: (err: FrontEndError) => void,
  ) {
    this.watch = n.watch(fd, true, false, (events) => this.readable(events));
  }

  private readable(events: number): void {
    while (this.closedBy === null) {
      if (this.payload !== null && this.have === this.payload.length) {
        const m: RawMessage = {
          request: this.headerView.getUint32(0, true),
          flags: this.headerView.getUint32(4, true),
          payload: this.payload,
          fds: this.fds,
        };
        this.payload = null;
        this.have = 0;
        this.fds = [];
        this.onMessage(m);
        continue;
      }
      const into = this.payload === null ? this.header.subarray(this.have) : this.payload.subarray(this.have);
      let r: { bytes: number; fds: number[] };
      try {
        r = this.n.recvmsg(this.fd, into);
      } catch (err) {
        this.close(new FrontEndError('disconnected', `the back-end connection failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err }));
        return;
      }
      for (const f of r.fds) this.fds.push(f);
      if (r.bytes === 0) {
        this.close(new FrontEndError('disconnected', this.have === 0 && this.payload === null ? 'the back-end closed the connection' : 'the back-end closed the connection in the middle of a message'));
        return;
      }
      if (r.bytes < 0) {
        if (events < 0) this.close(new FrontEndError('disconnected', 'the back-end connection failed'));
        return;
      }
      this.have += r.bytes;
      if (this.payload === null && this.have === HEADER_SIZE) {
        const size = this.headerView.getUint32(8, true);
        if (size > MAX_INCOMING_PAYLOAD) {
          this.close(new FrontEndError('bad-reply', `${requestName(this.headerView.getUint32(0, true))}: a payload of ${size} bytes (at most ${MAX_INCOMING_PAYLOAD})`));
          return;
        }
        this.payload = new Uint8Array(size);
        this.have = 0;
      }
    }
  }

  /** Sends one message (fds with its first byte); waits, at most until `deadline`, while the socket is full. */
  async write(data: Uint8Array, fds: readonly number[], deadline: number): Promise<void> {
    let at = 0;
    while (at < data.length) {
      if (this.closedBy !== null) throw new FrontEndError('disconnected', `the connection is closed: ${this.closedBy.message}`);
      let sent: number;
      try {
        sent = this.n.sendmsg(this.fd, data.subarray(at), at === 0 ? [...fds] : []);
      } catch (err) {
        const e = new FrontEndError('disconnected', `the back-end connection failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
        this.close(e);
        throw e;
      }
      if (sent > 0) {
        at += sent;
        continue;
      }
      // Full: wait until it drains (an fd watch), never longer than the deadline.
      if (!(await this.writable(deadline - Date.now()))) {
        const e = new FrontEndError('timeout', `the back-end took ${at} of ${data.length} bytes and no more`);
        this.close(e);
        throw e;
      }
    }
  }

  private writable(timeoutMs: number): Promise<boolean> {
    if (timeoutMs <= 0) return Promise.resolve(false);
    return fdReady(this.n, this.fd, false, true, timeoutMs);
  }

  /** Closes the socket (once); `onClose` hears why. Fds of a message cut short are closed. */
  close(reason: FrontEndError): void {
    if (this.closedBy !== null) return;
    this.closedBy = reason;
    this.watch.close();
    closeAll(this.n, this.fds);
    this.fds = [];
    try {
      this.n.close(this.fd);
    } catch {
      // closed already
    }
    this.onClose(reason);
  }
}

/** What a reply must look like: its payload size (exact, or a check), and how many fds come with it. */
export interface ReplyShape {
  /** The payload size: exact, or a check returning why a size is wrong (null when right). */
  size: number | ((size: number) => string | null);
  /** File descriptors that come with the reply (default 0). */
  fds?: number;
}

/** A checked reply: its payload (and a view of it) and the fds that came with it. */
export interface Reply {
  payload: Uint8Array;
  view: DataView;
  fds: number[];
}

interface Waiter {
  request: number;
  shape: ReplyShape;
  resolve: (r: Reply) => void;
  reject: (e: FrontEndError) => void;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * The front-end's side of the main socket: requests in order, one at a time; replies matched
 * to the request that asked. Nothing arrives unasked on this socket (back-end requests have
 * their own channel): an unasked message is a 'bad-reply' and ends the connection.
 */
export class RequestChannel {
  private readonly socket: MessageSocket;
  private waiter: Waiter | null = null;
  private chain: Promise<unknown> = Promise.resolve();
  /** REPLY_ACK negotiated: requests without a reply of their own ask for one (FLAG_NEED_REPLY). */
  replyAck = false;

  /** A channel over connected socket `fd`; `onClose` hears once why it ended. */
  constructor(
    fd: number,
    private readonly n: NativeAddon,
    readonly timeoutMs: number,
    private readonly onClose: (err: FrontEndError) => void,
  ) {
    this.socket = new MessageSocket(
      fd,
      n,
      (m) => this.arrived(m),
      (err) => this.closed(err),
    );
  }

  /** Why the connection ended, or null while it is open. */
  get closedBy(): FrontEndError | null {
    return this.socket.closedBy;
  }

  /** Ends the connection (pending requests fail with `reason`). */
  close(reason = new FrontEndError('disconnected', 'the front-end closed the connection')): void {
    this.socket.close(reason);
  }

  private closed(err: FrontEndError): void {
    const w = this.waiter;
    this.waiter = null;
    if (w !== null) {
      clearTimeout(w.timer);
      w.reject(err.kind === 'timeout' || err.kind === 'bad-reply' ? err : new FrontEndError(err.kind, `${requestName(w.request)}: ${err.message}`, { cause: err }));
    }
    this.onClose(err);
  }

  private arrived(m: RawMessage): void {
    const w = this.waiter;
    const name = requestName(m.request);
    if (w === null) {
      closeAll(this.n, m.fds);
      this.socket.close(new FrontEndError('bad-reply', `${name}: a message nobody asked for (flags 0x${m.flags.toString(16)}, ${m.payload.length} bytes)`));
      return;
    }
    this.waiter = null;
    clearTimeout(w.timer);
    const problem = replyProblem(w.request, w.shape, m);
    if (problem !== null) {
      closeAll(this.n, m.fds);
      // The stream is still whole (the message was read to its announced end), but a back-end
      // that answers wrongly is not one to go on with.
      const err = new FrontEndError('bad-reply', `${requestName(w.request)}: ${problem}`);
      w.reject(err);
      this.socket.close(err);
      return;
    }
    w.resolve({ payload: m.payload, view: new DataView(m.payload.buffer, m.payload.byteOffset, m.payload.length), fds: m.fds });
  }

  /** Runs `op` after every request before it has finished (requests never interleave). */
  private serial<T>(op: () => Promise<T>): Promise<T> {
    const run = this.chain.then(op, op);
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** Sends `request` and waits (bounded) for its reply, checked against `shape`. */
  ask(request: number, payload: Uint8Array | undefined, shape: ReplyShape, fds: readonly number[] = []): Promise<Reply> {
    return this.serial(() => this.exchange(request, VERSION, payload, fds, shape));
  }

  /**
   * Sends a request that has no reply of its own. With REPLY_ACK it asks for one and waits
   * (a non-zero ack is a 'refused' error); without, it returns once the message is written.
   */
  tell(request: number, payload?: Uint8Array, fds: readonly number[] = []): Promise<void> {
    return this.serial(async () => {
      if (!this.replyAck) {
        await this.send(request, VERSION, payload, fds);
        return;
      }
      const r = await this.exchange(request, VERSION | FLAG_NEED_REPLY, payload, fds, { size: 8 });
      const status = r.view.getBigUint64(0, true);
      if (status !== 0n) throw new FrontEndError('refused', `${requestName(request)}: the back-end refused it (REPLY_ACK ${status})`);
    });
  }

  private async send(request: number, flags: number, payload: Uint8Array | undefined, fds: readonly number[]): Promise<void> {
    const closed = this.socket.closedBy;
    if (closed !== null) throw new FrontEndError('disconnected', `${requestName(request)}: the connection is closed (${closed.message})`);
    await this.socket.write(encodeMessage(request, flags, payload), fds, Date.now() + this.timeoutMs);
  }

  private exchange(request: number, flags: number, payload: Uint8Array | undefined, fds: readonly number[], shape: ReplyShape): Promise<Reply> {
    return new Promise<Reply>((resolve, reject) => {
      const closed = this.socket.closedBy;
      if (closed !== null) {
        reject(new FrontEndError('disconnected', `${requestName(request)}: the connection is closed (${closed.message})`));
        return;
      }
      const timer = setTimeout(() => {
        this.socket.close(new FrontEndError('timeout', `${requestName(request)}: no reply in ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.waiter = { request, shape, resolve, reject, timer };
      this.send(request, flags, payload, fds).catch((err: FrontEndError) => {
        if (this.waiter?.request !== request) return;
        clearTimeout(timer);
        this.waiter = null;
        reject(err);
      });
    });
  }
}

/** Why a reply to `request` is not one (null when it is), per vhost-user.rst's header rules and `shape`. */
export function replyProblem(request: number, shape: ReplyShape, m: RawMessage): string | null {
  if ((m.flags & FLAG_VERSION_MASK) !== VERSION) return `reply with protocol version ${m.flags & FLAG_VERSION_MASK}, not ${VERSION}`;
  if ((m.flags & FLAG_REPLY) === 0) return `reply without the reply flag (flags 0x${m.flags.toString(16)})`;
  if (m.flags & ~(FLAG_VERSION_MASK | FLAG_REPLY)) return `reply with unknown or request-only flags 0x${m.flags.toString(16)}`;
  if (m.request !== request) return `the reply is for ${requestName(m.request)}`;
  const size = m.payload.length;
  const sizeProblem = typeof shape.size === 'number' ? (size === shape.size ? null : `a reply of ${size} payload bytes, expected ${shape.size}`) : shape.size(size);
  if (sizeProblem !== null) return sizeProblem;
  const fds = shape.fds ?? 0;
  if (m.fds.length !== fds) return `${m.fds.length} file descriptors with the reply, expected ${fds}`;
  return null;
}
