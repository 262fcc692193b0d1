/**
 * Hybrid vsock (the convention of Firecracker's docs/vsock.md and Cloud Hypervisor): the host
 * side of a guest's vsock device as unix sockets.
 *
 * - Host-initiated: a host application connects to the unix socket `udsPath` and writes
 *   `CONNECT <port>\n`; once the guest accepted it reads `OK <hostport>\n` (the host-side port
 *   of the flow), then the byte stream. If the guest refuses, the unix connection is closed.
 * - Guest-initiated: the guest connects to CID 2 port P; the device connects to the unix
 *   listener `<udsPath>_<P>` and answers RESPONSE once that connection is made (RST if nothing
 *   listens there).
 *
 * Bytes flow with backpressure both ways (socket.pipe / stream.pipe over {@link VsockStream}):
 * the guest's credit holds a fast host writer (the unix socket is paused, the host application
 * blocks), reading slowly on the host holds the guest. A unix peer that ends its stream sends
 * SHUTDOWN SEND; one that vanishes with an error (ECONNRESET, EPIPE) resets the flow: RST, and
 * the guest sees the reset.
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { existsSync, lstatSync, unlinkSync } from 'node:fs';
import type { VsockDevice } from '../../devices/vsock/device.js';
import { VsockError } from '../../vsock/engine.js';
import { VsockStream } from './streams.js';

/** How hybrid vsock is served. */
export interface HybridVsockOptions {
  /** The unix socket host applications connect to (CONNECT <port>); `<udsPath>_<port>` for the guest's connections. */
  udsPath: string;
  /** Log lines (connections, refusals). */
  log?: (message: string, fields?: Record<string, unknown>) => void;
  /** Longest CONNECT line accepted (default 64 bytes); a longer or malformed one closes the connection. */
  maxLine?: number;
}

/** A running hybrid vsock server. */
export interface HybridVsock {
  /** The listening unix server. */
  readonly server: Server;
  /** Flows made so far, both directions. */
  readonly stats: { hostInitiated: number; guestInitiated: number; refused: number };
  /** Stops listening and removes the socket file this server made; open flows stay until they end. */
  close(): void;
}

/** Joins a unix socket and a vsock stream both ways, with backpressure, ends and resets. */
export function splice(sock: Socket, stream: VsockStream): void {
  sock.pipe(stream);
  stream.pipe(sock);
  // An error on either side resets the other (RST to the guest / the socket destroyed).
  sock.on('error', (err) => stream.destroy(new VsockError('reset', `unix peer: ${err.message}`)));
  stream.on('error', () => sock.destroy());
  // A socket closed before its stream ended (a vanished peer without an error): RST.
  sock.on('close', () => {
    if (!stream.destroyed && !(stream.writableEnded || stream.writableFinished)) stream.destroy(new VsockError('reset', 'unix peer closed'));
  });
  stream.on('close', () => {
    if (!sock.destroyed && !sock.writableEnded) sock.end();
  });
}

/**
 * Serves the host side of `device` as hybrid vsock unix sockets. A VsockError `port-in-use`-
 * like Error (EADDRINUSE) when `udsPath` exists: an existing file is never replaced.
 */
export async function serveHybridVsock(device: VsockDevice, options: HybridVsockOptions): Promise<HybridVsock> {
  const { udsPath } = options;
  const log = options.log ?? (() => undefined);
  const maxLine = options.maxLine ?? 64;
  const stats = { hostInitiated: 0, guestInitiated: 0, refused: 0 };

  // Guest-initiated: CID 2 port P -> <udsPath>_<P>.
  device.type.onRequest = (conn) => {
    const path = `${udsPath}_${conn.localPort}`;
    const sock = createConnection({ path, allowHalfOpen: true });
    sock.once('connect', () => {
      sock.removeAllListeners('error');
      const stream = new VsockStream(conn);
      device.engine.accept(conn);
      stats.guestInitiated++;
      log(`guest port ${conn.peerPort} connected to ${path}`, { event: 'guest-connect', port: conn.localPort, guestPort: conn.peerPort });
      splice(sock, stream);
    });
    sock.once('error', (err) => {
      stats.refused++;
      log(`guest connection to port ${conn.localPort} refused: ${path}: ${err.message}`, { event: 'guest-refused', port: conn.localPort });
      device.engine.refuse(conn);
    });
    return true;
  };

  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (sock) => hostConnection(sock));
  function hostConnection(sock: Socket): void {
    let line = Buffer.alloc(0);
    sock.on('error', () => undefined);
    const onData = (chunk: Buffer) => {
      line = Buffer.concat([line, chunk]);
      const nl = line.indexOf(0x0a);
      if (nl < 0) {
        if (line.length > maxLine) sock.destroy();
        return;
      }
      sock.off('data', onData);
      sock.pause();
      const m = /^CONNECT (\d{1,10})\r?$/.exec(line.subarray(0, nl).toString('latin1'));
      const port = m ? Number(m[1]) : NaN;
      if (!(port >= 0 && port <= 0xffffffff)) {
        log(`bad hybrid vsock request ${JSON.stringify(line.subarray(0, Math.min(nl, maxLine)).toString('latin1'))}`, { event: 'bad-request' });
        sock.destroy();
        return;
      }
      const rest = line.subarray(nl + 1);
      let stream: VsockStream;
      try {
        stream = new VsockStream(device.connect(port));
      } catch (err) {
        log(`CONNECT ${port}: ${err instanceof Error ? err.message : String(err)}`, { event: 'connect-failed', port });
        sock.destroy();
        return;
      }
      stream.once('connect', () => {
        stats.hostInitiated++;
        log(`host connected to guest port ${port}`, { event: 'host-connect', port, hostPort: stream.localPort });
        sock.write(`OK ${stream.localPort}\n`);
        if (rest.length > 0) stream.write(rest);
        splice(sock, stream);
        sock.resume();
      });
      stream.once('error', (err) => {
        if (stream.listenerCount('connect') > 0) {
          stats.refused++;
          log(`CONNECT ${port} refused by the guest`, { event: 'host-refused', port, kind: (err as VsockError).kind });
          sock.destroy();
        }
      });
    };
    sock.on('data', onData);
    sock.resume();
  }

  if (existsSync(udsPath)) throw Object.assign(new Error(`${udsPath} exists: not replacing a file this process did not make`), { code: 'EADDRINUSE' });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(udsPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const made = lstatSync(udsPath);
  return {
    server,
    stats,
    close: () => {
      device.type.onRequest = null;
      // Stops accepting now; flows already made end on their own (close's callback would wait for them).
      server.close();
      // Node removes the socket file on close; remove it only if it is still ours otherwise.
      try {
        const now = lstatSync(udsPath);
        if (now.ino === made.ino && now.dev === made.dev) unlinkSync(udsPath);
      } catch {
        // gone already
      }
    },
  };
}
