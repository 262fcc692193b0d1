/**
 * A console port backed by a Node stream: a Duplex (TCP or unix socket), a readable/writable
 * pair (stdin/stdout), or, with {@link listenConsole}, whoever connects to a socket path or
 * TCP port. Bytes the driver transmits are written to the stream (a full stream holds the
 * transmitq until 'drain'); bytes read from the stream are pushed to the driver (the stream
 * is paused while the device's buffer is over its high-water mark). With MULTIPORT the
 * driver hears PORT_OPEN 1 / 0 as streams connect and end.
 */
import type { Readable, Writable } from 'node:stream';
import { createServer, type Server, type Socket } from 'node:net';
import type { ConsoleHostPort, ConsolePortEndpoint } from '../devices/console/device.js';

/** A Duplex, or the two halves of a terminal. */
export type ConsoleStream = (Readable & Writable) | { readable: Readable; writable: Writable };

/** How a {@link StreamConsoleEndpoint} tells its user about the driver and treats a stream it lets go. */
export interface StreamConsoleEndpointOptions {
  /** Called when the driver opens or closes the port. */
  onGuestOpen?: (open: boolean) => void;
  /** End the writable side when the stream is replaced or disconnected (default true for a Duplex). */
  endOnDisconnect?: boolean;
}

/**
 * A console port endpoint over a Node stream, which can be swapped or let go while the device
 * runs ({@link StreamConsoleEndpoint.connect}, {@link StreamConsoleEndpoint.disconnect}): the
 * driver's bytes are written to it, its bytes are pushed to the driver, with backpressure both ways.
 */
export class StreamConsoleEndpoint implements ConsolePortEndpoint {
  private host: ConsoleHostPort | null = null;
  private readable: Readable | null = null;
  private writable: Writable | null = null;
  private duplex = false;
  private cleanup: (() => void) | null = null;
  /** Bytes written to the stream, and read from it. */
  readonly stats = { written: 0, read: 0 };

  /**
   * An endpoint over `stream`, or with none yet (null: the host side is closed until
   * {@link connect}). Bytes the stream yields before the port is attached wait in the paused stream.
   */
  constructor(
    stream: ConsoleStream | null = null,
    private readonly options: StreamConsoleEndpointOptions = {},
  ) {
    if (stream !== null) this.connect(stream);
  }

  /** Whether a stream is connected. */
  get connected(): boolean {
    return this.readable !== null;
  }

  /** Uses `stream` from now on (a previous one is let go). */
  connect(stream: ConsoleStream): void {
    this.disconnect();
    const pair = 'readable' in stream && typeof stream.readable === 'object' && stream.readable !== null && 'writable' in stream && typeof stream.writable === 'object';
    const readable = pair ? (stream as { readable: Readable }).readable : (stream as Readable);
    const writable = pair ? (stream as { writable: Writable }).writable : (stream as unknown as Writable);
    this.readable = readable;
    this.writable = writable;
    this.duplex = !pair;
    const onData = (chunk: Buffer | string): void => {
      const bytes = typeof chunk === 'string' ? new TextEncoder().encode(chunk) : new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length);
      this.stats.read += bytes.length;
      if (this.host !== null && !this.host.push(bytes)) readable.pause();
    };
    const onEnd = (): void => {
      if (this.readable === readable) this.disconnect();
    };
    const onError = (): void => onEnd();
    readable.on('data', onData);
    readable.on('end', onEnd);
    readable.on('close', onEnd);
    readable.on('error', onError);
    writable.on('error', onError);
    this.cleanup = () => {
      readable.off('data', onData);
      readable.off('end', onEnd);
      readable.off('close', onEnd);
      readable.off('error', onError);
      writable.off('error', onError);
    };
    if (this.host === null) readable.pause();
    this.host?.setHostOpen(true);
  }

  /** Lets go of the stream; the driver hears the host side closed (with MULTIPORT). */
  disconnect(): void {
    const w = this.writable;
    if (this.readable === null) return;
    this.cleanup?.();
    this.cleanup = null;
    this.readable = null;
    this.writable = null;
    if (w !== null && (this.options.endOnDisconnect ?? this.duplex) && !w.writableEnded) w.end();
    this.host?.setHostOpen(false);
  }

  // ---------------------------------------------------------------- ConsolePortEndpoint

  attach(port: ConsoleHostPort): void {
    this.host = port;
    port.setHostOpen(this.readable !== null);
    this.readable?.resume();
  }

  detach(): void {
    this.host = null;
    this.readable?.pause();
  }

  drain(): void {
    this.readable?.resume();
  }

  guestOpen(open: boolean): void {
    this.options.onGuestOpen?.(open);
  }

  write(bytes: Uint8Array): void | Promise<void> {
    const w = this.writable;
    if (w === null || w.destroyed || w.writableEnded) return; // nobody connected: the bytes go nowhere
    this.stats.written += bytes.length;
    if (w.write(bytes)) return;
    return new Promise<void>((resolve) => {
      const done = (): void => {
        w.off('drain', done);
        w.off('close', done);
        w.off('error', done);
        resolve();
      };
      w.on('drain', done);
      w.on('close', done);
      w.on('error', done);
    });
  }
}

/** An endpoint on this process's stdin and stdout. */
export function stdioConsoleEndpoint(options: StreamConsoleEndpointOptions = {}): StreamConsoleEndpoint {
  return new StreamConsoleEndpoint({ readable: process.stdin, writable: process.stdout }, { endOnDisconnect: false, ...options });
}

/**
 * Serves a port on a unix socket path or TCP port: each connection becomes the endpoint's
 * stream (one at a time; a new one replaces the old). Resolves once listening.
 */
export function listenConsole(endpoint: StreamConsoleEndpoint, where: string | number | { port: number; host?: string }): Promise<Server> {
  const server = createServer((socket: Socket) => endpoint.connect(socket));
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    const ready = (): void => {
      server.off('error', reject);
      resolve(server);
    };
    if (typeof where === 'string') server.listen(where, ready);
    else if (typeof where === 'number') server.listen(where, '127.0.0.1', ready);
    else server.listen(where.port, where.host ?? '127.0.0.1', ready);
  });
}

/** @deprecated Renamed: use {@link StreamConsoleEndpoint} ("backend" also named the vhost-user server). */
export const StreamConsoleBackend = StreamConsoleEndpoint;
/** @deprecated Renamed: use {@link StreamConsoleEndpoint}. */
export type StreamConsoleBackend = StreamConsoleEndpoint;
/** @deprecated Renamed: use {@link StreamConsoleEndpointOptions}. */
export type StreamConsoleBackendOptions = StreamConsoleEndpointOptions;
/** @deprecated Renamed: use {@link stdioConsoleEndpoint}. */
export const stdioConsoleBackend = stdioConsoleEndpoint;
