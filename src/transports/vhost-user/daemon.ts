/**
 * A vhost-user daemon: serves a VirtioDevice to a front-end (QEMU's vhost-user-blk-pci,
 * vhost-user-rng-pci, ...) on a unix socket, as a library call.
 *
 *   const daemon = serveVhostUser(device, { socket: '/tmp/dev.sock' });
 *   await daemon.closed;
 *
 * It listens on the path (a socket a dead server left there is replaced; nothing else ever is:
 * see socket-path.ts), serves one front-end at a time (another that connects meanwhile is
 * turned away), and when the front-end goes, resets the device and waits for the next one
 * (QEMU with `-chardev socket,...,reconnect=1` comes back by itself). With `{ fd }` it serves
 * one already connected socket (vhost-user.rst's "--fd" convention) and ends when that
 * front-end leaves.
 *
 * Signals are the caller's: the daemon installs no process handler. Stop it with close(), or
 * an AbortSignal (`signal`); either stops listening, ends the connection (the device is
 * reset), removes the socket file it made (only if the path still names it) and resolves
 * `closed`.
 */
import { fstatSync } from 'node:fs';
import { EventEmitter } from 'node:events';
import type { VirtioDevice } from '../../device/device.js';
import type { Verdict } from '../../monitor/monitor.js';
import { native, type NativeAddon } from '../../native/index.js';
import { describeError, errnoOf } from '../../native/errno.js';
import { VhostUserBackend, type ConnectionEnd } from './backend.js';
import { messageOf, VhostUserError } from './errors.js';
import { listenUnixSocket, type ListeningSocket } from './socket-path.js';

/** Where the daemon says what it does: one line per event, with fields for structured logs. `console` will do. */
export interface DaemonLogger {
  /** What the daemon does (a front-end connected, a ring started, ...). */
  info(message: string, fields?: Record<string, unknown>): void;
  /** What went wrong on the front-end's side (a message refused, a connection ended for a reason). */
  warn(message: string, fields?: Record<string, unknown>): void;
  /** What went wrong on this side (accept failed); warn() when absent. */
  error?(message: string, fields?: Record<string, unknown>): void;
}

/** How serveVhostUser serves: where, what happens when a front-end leaves, where it logs, what stops it. */
export interface VhostUserDaemonOptions {
  /**
   * A unix socket path to listen on, or an already connected socket (`{ fd }`) to serve that
   * one front-end.
   */
  socket: string | { fd: number };
  /**
   * After a front-end leaves, wait for the next one (default true). False: the daemon closes
   * when its first front-end leaves. A connected `{ fd }` is always served once.
   */
  reconnect?: boolean;
  /** Log lines of the daemon and its back-end (default: none). */
  logger?: DaemonLogger;
  /** Closes the daemon when aborted (the caller's SIGTERM handler, say). */
  signal?: AbortSignal;
}

/** Why the daemon closed, and what became of its socket file. */
export interface DaemonEnd {
  reason: string;
  /**
   * With a path: 'removed' (the daemon's own socket), 'gone' (someone removed it), 'replaced'
   * (the path names another file now: left alone), or 'not removed (why)'.
   */
  socketFile?: string;
}

/** The daemon's events (it is an EventEmitter): `daemon.on('disconnect', (e) => ...)`. */
export interface VhostUserDaemonEvents {
  /** A front-end connected and is served by `device`. */
  connect: [{ device: VirtioDevice }];
  /** The front-end left, or its connection was ended (`error` says why; null for a front-end that hung up between messages). */
  disconnect: [ConnectionEnd & { device: VirtioDevice }];
  /** A verdict of the device's conformance monitor. */
  verdict: [Verdict];
  /** The device entered DEVICE_NEEDS_RESET; its connection ends. */
  deviceError: [{ device: VirtioDevice; reason: string }];
  /** The daemon stopped (as `closed` resolves). */
  close: [DaemonEnd];
}

/** One device for every connection (reset between them), or a new one per connection. */
export type DeviceSource = VirtioDevice | (() => VirtioDevice);

/**
 * A running vhost-user daemon (made by serveVhostUser): its `closed` promise, close(), and its
 * events (VhostUserDaemonEvents).
 */
export class VhostUserDaemon extends EventEmitter<VhostUserDaemonEvents> {
  /** Resolves when the daemon has stopped (close(), the signal, or its `{ fd }` front-end leaving). */
  readonly closed: Promise<DaemonEnd>;
  /** The socket path listened on, or undefined for `{ fd }`. */
  readonly path: string | undefined;
  private resolveClosed!: (end: DaemonEnd) => void;
  private readonly n: NativeAddon;
  private readonly log: DaemonLogger;
  private listening: ListeningSocket | null = null;
  private watch: { close(): void } | null = null;
  private backend: VhostUserBackend | null = null;
  private shared: VhostUserBackend | null = null;
  private unsubscribe: (() => void) | null = null;
  private ending: DaemonEnd | null = null;
  /** A connected `{ fd }` not served yet. */
  private pendingFd = -1;
  private readonly onAbort = () => void this.close('aborted');

  /** Listens (or takes `{ fd }`) at once; use serveVhostUser(), which says what it throws. */
  constructor(
    private readonly source: DeviceSource,
    private readonly options: VhostUserDaemonOptions,
  ) {
    super();
    this.closed = new Promise((res) => (this.resolveClosed = res));
    this.log = options.logger ?? { info: () => undefined, warn: () => undefined };
    try {
      this.n = native();
    } catch (err) {
      throw new VhostUserError('addon-missing', messageOf(err), { cause: err });
    }
    const socket = options.socket;
    this.path = typeof socket === 'string' ? socket : undefined;
    if (typeof socket === 'string') {
      this.listening = listenUnixSocket(this.n, socket, (m) => this.log.warn(m, { socketPath: socket }));
      const listenFd = this.listening.fd;
      this.watch = this.n.watch(listenFd, true, false, () => this.accept(listenFd));
    } else {
      checkConnectedSocket(socket.fd);
      // Served on the next turn of the loop: the caller subscribes to the events first. The fd
      // is the daemon's from now on (closed when its connection ends, or by a close() before).
      this.pendingFd = socket.fd;
      setImmediate(() => {
        if (this.pendingFd < 0) return;
        this.pendingFd = -1;
        this.serve(socket.fd);
      });
    }
    if (options.signal !== undefined) {
      if (options.signal.aborted) setImmediate(this.onAbort);
      else options.signal.addEventListener('abort', this.onAbort, { once: true });
    }
  }

  /** Whether a front-end is being served. */
  get connected(): boolean {
    return this.backend?.connected === true;
  }

  /**
   * Stops: no more front-ends, the current one's connection ended (its device reset), the
   * socket file removed if it is still the one made here. Resolves as `closed` does; calling it
   * again changes nothing.
   */
  close(reason = 'closed'): Promise<DaemonEnd> {
    if (this.ending !== null) return this.closed;
    const end: DaemonEnd = { reason };
    this.ending = end;
    this.options.signal?.removeEventListener('abort', this.onAbort);
    this.watch?.close();
    this.watch = null;
    if (this.pendingFd >= 0) this.n.close(this.pendingFd);
    this.pendingFd = -1;
    if (this.backend?.connected) this.backend.close('shutting down');
    if (this.listening !== null) {
      this.n.close(this.listening.fd);
      try {
        end.socketFile = this.listening.remove();
      } catch (err) {
        end.socketFile = `not removed (${messageOf(err)})`;
      }
      this.listening = null;
    }
    this.resolveClosed(end);
    this.emit('close', end);
    return this.closed;
  }

  /** Takes every waiting connection: the first is served, the rest turned away while one is. */
  private accept(listenFd: number): void {
    for (;;) {
      let fd: number;
      try {
        fd = this.n.accept(listenFd);
      } catch (err) {
        // Out of fds, say: the front-end's connect fails, the daemon goes on.
        (this.log.error ?? this.log.warn).call(this.log, `accept failed: ${describeError(err)}`, { reason: describeError(err) });
        return;
      }
      if (fd < 0) return;
      if (this.connected || this.ending !== null) {
        this.n.close(fd); // one front-end at a time
        continue;
      }
      this.log.info('front-end connected', { fd });
      this.serve(fd);
    }
  }

  private serve(fd: number): void {
    const backend = this.backendFor();
    this.backend = backend;
    const device = backend.device;
    this.unsubscribe = device.monitor.onVerdict((v) => this.emit('verdict', v));
    backend.onClose = (end) => this.disconnected(backend, end);
    backend.onDeviceError = (reason) => this.emit('deviceError', { device, reason });
    backend.serve(fd);
    this.emit('connect', { device });
  }

  /** The back-end for the next connection: the one device's, or a new device's. */
  private backendFor(): VhostUserBackend {
    // The daemon's logger is already a BackendLog (info and warn with fields).
    if (typeof this.source !== 'function') return (this.shared ??= new VhostUserBackend(this.source, this.log));
    return new VhostUserBackend(this.source(), this.log);
  }

  private disconnected(backend: VhostUserBackend, end: ConnectionEnd): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
    this.emit('disconnect', { ...end, device: backend.device });
    if (this.ending !== null) return;
    const gone = `front-end gone${end.reason ? `: ${end.reason}` : ''}`;
    if (this.listening === null || this.options.reconnect === false) {
      void this.close(gone);
      return;
    }
    this.log.info(`front-end gone${end.reason ? ` (${end.reason})` : ''}; waiting for the next one`, { reason: end.reason });
  }
}

/** `fd` must be an open socket (vhost-user runs on a connected unix stream socket): a 'bad-fd' error otherwise. */
function checkConnectedSocket(fd: number): void {
  let st;
  try {
    st = fstatSync(fd);
  } catch (err) {
    throw new VhostUserError('bad-fd', `fd ${fd}: ${errnoOf(err) === 'EBADF' ? 'not an open file descriptor' : describeError(err)}`, { cause: err });
  }
  if (!st.isSocket()) throw new VhostUserError('bad-fd', `fd ${fd} is not a socket (vhost-user needs a connected unix socket)`);
}

/**
 * Serves `device` (or a device made per connection) over vhost-user; see the module comment.
 * Listening happens before it returns: a path that cannot be used throws a VhostUserError
 * ('socket-busy', 'socket-path'), as does a missing native addon ('addon-missing') or an fd
 * that is not a socket ('bad-fd').
 */
export function serveVhostUser(device: DeviceSource, options: VhostUserDaemonOptions): VhostUserDaemon {
  return new VhostUserDaemon(device, options);
}
