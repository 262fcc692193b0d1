/**
 * vhost-user back-end (Node): serves one VirtioDevice to a front-end (QEMU) over a connected
 * unix socket. The parts, each in its module:
 *
 *   connection.ts  the socket: message framing, replies with back-pressure
 *   protocol.ts    the wire codec: every message validated before anything acts on it
 *   handler.ts     one method per message, over the session's state:
 *     ring.ts        each ring's state (size, addresses, base, kick/call/err fds, started, paused)
 *     mem-slots.ts   guest memory from the front-end's fds
 *     dirty-log.ts   dirty logging for live migration
 *     inflight.ts    the inflight buffer, for back-end restarts
 *
 * This class puts them together for one connection at a time: it decodes each message, runs
 * its method, sends the answer (or a non-zero REPLY_ACK for a refusal the front-end asked to
 * hear of), holds later messages while an answer waits for requests in progress, and is the
 * device's DeviceHost (interrupts on the call eventfds, configuration changes on the back-end
 * request channel, a device error ending the connection). A connection that ends, for any
 * reason, leaves the device reset and nothing mapped: the next one starts clean.
 */
import type { DeviceHost, VirtioDevice } from '../../device/device.js';
import { native, type NativeAddon } from '../../native/index.js';
import { Connection, FRONT_END_CLOSED } from './connection.js';
import { asVhostUserError, VhostUserError } from './errors.js';
import { MessageFds, SETTLE_TIMEOUT_MS, VhostUserHandler, type Answer, type SessionHost } from './handler.js';
import { decode, encodeReply, requestName, u64Payload, type Decoded, type Header } from './protocol.js';
import type { VhostUserRing } from './ring.js';


/** Where the back-end says what it does: each line with fields for structured logs (`kind` for errors). */
export interface BackendLog {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
}

/** How a connection ended: the reason as logged, and the error (null when the front-end hung up between messages, or close() was called without one). */
export interface ConnectionEnd {
  reason: string;
  error: VhostUserError | null;
}

const QUIET: BackendLog = { info: () => undefined, warn: () => undefined };

export class VhostUserBackend implements DeviceHost {
  private readonly n: NativeAddon = native();
  private conn: Connection | null = null;
  private session: VhostUserHandler | null = null;
  /** Set when the device entered DEVICE_NEEDS_RESET: nothing more is read; the connection ends. */
  private failing: string | null = null;
  /** Counts connections, so a deferred close does not end a later one. */
  private connection = 0;
  /** The addon's count of absorbed guest-memory faults when last checked (checkFaults). */
  private faultsSeen = 0;
  /** The wait for requests in progress, while an answer waits for them. */
  private settling: ReturnType<typeof setTimeout> | null = null;
  /** Why the last connection ended ('' while none has; tests and logs). */
  lastError = '';
  /** The error that ended the last connection, or null (see ConnectionEnd). */
  lastFailure: VhostUserError | null = null;
  /** Called when a connection ends (after the device was reset). */
  onClose: (end: ConnectionEnd) => void = () => undefined;
  /** Called when the device enters DEVICE_NEEDS_RESET while a front-end is connected (its connection then ends). */
  onDeviceError: (reason: string) => void = () => undefined;

  constructor(
    readonly device: VirtioDevice,
    private readonly log: BackendLog = QUIET,
  ) {}

  /** Serves one connected socket fd until it closes, sends something that ends it, or close() (a connection still open is closed first). */
  serve(fd: number): void {
    if (this.conn?.open) this.close('replaced by a new connection');
    this.connection++;
    this.failing = null;
    this.lastError = '';
    this.lastFailure = null;
    const host: SessionHost = {
      deviceHost: this,
      end: (reason, error) => this.close(reason, error),
      guard: (what, fn) => this.guarded(what, fn),
      info: (m) => this.log.info(m),
      warn: (m) => this.log.warn(m),
    };
    this.session = new VhostUserHandler(this.device, this.n, host);
    this.conn = new Connection(this.n, fd, {
      message: (h, payload, fds) => this.message(h, payload, fds),
      ended: (reason, error) => this.ended(reason, error),
      guard: (what, fn) => this.guarded(what, fn),
      warn: (m) => this.log.warn(m),
    });
  }

  /** Whether a front-end is connected. */
  get connected(): boolean {
    return this.conn?.open === true;
  }

  /** The rings of the current connection (none between connections). */
  get rings(): readonly VhostUserRing[] {
    return this.session?.rings ?? [];
  }

  /** The features the front-end set (SET_FEATURES, without the vhost-user bits). */
  get features(): bigint {
    return this.session?.acknowledgedFeatures ?? 0n;
  }

  /** Ends the connection: fds closed, rings stopped, memory unmapped, device reset. */
  close(reason = 'closed', error: VhostUserError | null = null, extraFds: number[] = []): void {
    if (this.conn === null) {
      for (const fd of extraFds) this.n.close(fd);
      return;
    }
    this.conn.end(reason, error, extraFds);
  }

  // ---------------------------------------------------------------- DeviceHost

  interrupt(index: number): void {
    this.checkFaults(); // completions wrote guest memory outside any fd callback
    this.session?.rings[index]?.signal();
  }

  configChanged(): void {
    this.session?.configChanged();
  }

  /**
   * The device entered DEVICE_NEEDS_RESET (a chain it cannot serve, or any violation in strict
   * mode). Its configuration change notification went out first (CONFIG_CHANGE_MSG on the
   * back-end request channel, when negotiated and the device is live); now the started rings'
   * error eventfds are signalled and the connection ends with the reason logged, as
   * libvhost-user's vu_panic does: the front-end sees the back-end go and no ring is left
   * waiting. The end is deferred: the device is still inside its work.
   */
  deviceError(reason: string): void {
    if (!this.connected || this.failing !== null) return;
    this.failing = reason;
    for (const ring of this.rings) ring.signalError();
    this.conn!.stopReading();
    this.onDeviceError(reason);
    const connection = this.connection;
    setImmediate(() => {
      if (this.connection === connection) this.close(`device error: ${reason}`, new VhostUserError('device-error', reason));
    });
  }

  // ---------------------------------------------------------------- messages

  /** One message: decoded, handled, answered; a refusal is NACKed when the front-end asked to hear, anything else ends the connection. */
  private message(h: Header, payload: Uint8Array, fds: number[]): void {
    const session = this.session!;
    let d: Decoded;
    try {
      d = decode(h, payload, fds.length, session.session);
    } catch (err) {
      const e = asVhostUserError(err);
      return this.close(e.message, e, fds);
    }
    try {
      this.answer(d, session.handle(d, new MessageFds(fds)));
    } catch (err) {
      const e = asVhostUserError(err);
      const reason = `${requestName(h.request)}: ${e.message}`;
      if (e.refused && d.needReply) {
        // Refused before it acted, and the front-end asked to hear: it is told, and may go on.
        this.log.warn(`vhost-user: ${reason}; refused (non-zero REPLY_ACK)`, { kind: e.kind, request: requestName(h.request) });
        this.conn?.send(encodeReply(h.request, u64Payload(1)));
        return;
      }
      this.close(reason, e);
    }
  }

  private answer(d: Decoded, a: Answer): void {
    switch (a.kind) {
      case 'ack':
        if (d.needReply) this.conn?.send(encodeReply(d.header.request, u64Payload(0)));
        return;
      case 'reply':
        this.conn?.send(encodeReply(d.header.request, a.payload), a.fds);
        return;
      case 'after-settled':
        return this.afterSettled(d, a);
    }
  }

  /**
   * Answers once the device has no request in progress, or after SETTLE_TIMEOUT_MS (the
   * answer then says so). Meanwhile the socket is not read: later messages wait in it until
   * the answer. What the answer throws after a wait ends the connection, named by its `what`.
   */
  private afterSettled(d: Decoded, a: Extract<Answer, { kind: 'after-settled' }>): void {
    if (this.device.settled()) return this.answer(d, a.then(true));
    const conn = this.conn!;
    const deadline = Date.now() + SETTLE_TIMEOUT_MS;
    const poll = () => {
      this.settling = null;
      if (!conn.open) return; // the connection ended meanwhile
      const settled = this.device.settled();
      if (!settled && Date.now() < deadline) {
        this.settling = setTimeout(poll, 1);
        return;
      }
      try {
        this.answer(d, a.then(settled));
      } catch (err) {
        const e = asVhostUserError(err);
        return this.close(`${a.what}: ${e.message}`, e);
      }
      conn.resume(); // the messages that waited
      this.checkFaults();
    };
    conn.pause();
    this.settling = setTimeout(poll, 1);
  }

  /** The connection ended (Connection.end): the session's fds and mappings go, the device is reset. */
  private ended(reason: string, error: VhostUserError | null): void {
    this.lastError = reason;
    this.lastFailure = error;
    if (reason !== FRONT_END_CLOSED && reason !== 'closed') this.log.warn(`vhost-user: ${reason}; closing the connection`, { kind: error?.kind });
    if (this.settling !== null) clearTimeout(this.settling);
    this.settling = null;
    this.session?.close();
    this.session = null;
    this.conn = null;
    this.onClose({ reason, error });
  }

  /**
   * A callback the event loop runs for an fd: whatever it throws (a socket error, a bug) ends
   * the connection with the reason. An exception escaping a native watch callback would end
   * the whole process.
   */
  private guarded(what: string, fn: (events: number) => void): (events: number) => void {
    return (events: number) => {
      try {
        fn(events);
        this.checkFaults();
      } catch (err) {
        const e = asVhostUserError(err);
        this.close(`${what}: ${e.message}`, e);
      }
    };
  }

  /**
   * The addon absorbs a SIGBUS in a guest mapping (a page past its file's end: the front-end
   * shrank a file it could not be kept from shrinking) by mapping a zero page there, and counts
   * it. Checked after every callback that may have touched guest memory: if one of this
   * connection's mappings faulted, the front-end took memory it had given away; what the device
   * read there was zeros and what it wrote is lost, so the session ends (a device error).
   */
  private checkFaults(): void {
    const count = this.n.faultCount();
    if (count === this.faultsSeen) return;
    this.faultsSeen = count;
    if (this.session === null) return;
    if (!this.session.mappings().some((b) => b.byteLength > 0 && this.n.faulted(b))) return;
    const reason = 'guest memory shrank under its mapping (the front-end truncated a file it had given; SIGBUS absorbed)';
    this.device.needsReset(reason);
    if (this.failing === null) this.deviceError(reason);
  }
}
