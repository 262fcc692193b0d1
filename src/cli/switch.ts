/**
 * `virtio-ts switch --socket PATH`: a NetSwitch (MAC learning, flooding, offload completion)
 * listening on a unix stream socket in QEMU's `-netdev stream` framing. `virtio-ts serve net
 * --switch PATH` processes and QEMU guests with a built-in NIC
 * (`-netdev stream,id=n0,server=off,addr.type=unix,addr.path=PATH`) join it; each connection is
 * a port until it closes. SIGTERM/SIGINT: close every connection, remove the socket file this
 * process made, exit 0. The socket path must not exist: nothing is replaced.
 *
 * Fixed ports besides: `--dgram LOCAL,REMOTE` (repeatable) is a unix datagram port in QEMU's
 * `-netdev dgram` framing (bound to LOCAL, sending to REMOTE: QEMU's local.path=REMOTE,
 * remote.path=LOCAL), `--tap IFNAME` (repeatable) a TAP interface (attached by name, made if
 * absent, never configured: the user brings it up).
 */
import { NetSwitch } from '../net/switch.js';
import { listenSwitch, type SwitchServer } from '../node/net/stream-port.js';
import { DgramFramePort } from '../node/net/dgram-port.js';
import { TapFramePort, interfaceNameProblem } from '../node/net/tap-port.js';
import type { FramePort } from '../net/frame-port.js';
import { MAX_SOCKET_PATH } from '../transports/vhost-user/socket-path.js';
import { CliError, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, describeError } from './exit-codes.js';
import { createLogger, defaultLogFormat, type LogFormat } from './log.js';

/** Flags of `virtio-ts switch`. */
export interface SwitchOptions {
  socket?: string;
  /** Unix datagram ports, each "LOCAL,REMOTE" (QEMU -netdev dgram framing). */
  dgram?: string[];
  /** TAP interfaces as ports. */
  tap?: string[];
  /** Seconds a learned address is kept without a frame from it. */
  ageing?: number;
  logLevel?: string;
  logFormat?: LogFormat;
}

interface Writable {
  write(s: string): unknown;
}

/** Runs the switch until SIGTERM/SIGINT; the exit code. */
export async function runSwitch(opts: SwitchOptions, err: Writable): Promise<number> {
  try {
    const dgrams = (opts.dgram ?? []).map((v) => {
      const parts = v.split(',');
      if (parts.length !== 2 || parts.some((p) => p === '' || Buffer.byteLength(p) > MAX_SOCKET_PATH)) {
        throw new CliError(EXIT_USAGE, `--dgram ${v}: give LOCAL,REMOTE (two socket paths of 1 to ${MAX_SOCKET_PATH} bytes, no comma in them)`);
      }
      return { local: parts[0], remote: parts[1] };
    });
    for (const t of opts.tap ?? []) {
      const problem = interfaceNameProblem(t);
      if (problem !== undefined) throw new CliError(EXIT_USAGE, `--tap: ${problem}`);
    }
    if (opts.socket === undefined && dgrams.length === 0 && (opts.tap ?? []).length === 0) {
      throw new CliError(EXIT_USAGE, `give --socket PATH (1 to ${MAX_SOCKET_PATH} bytes), --dgram LOCAL,REMOTE or --tap IFNAME`);
    }
    if (opts.socket !== undefined && (opts.socket === '' || Buffer.byteLength(opts.socket) > MAX_SOCKET_PATH)) {
      throw new CliError(EXIT_USAGE, `--socket PATH must be 1 to ${MAX_SOCKET_PATH} bytes long`);
    }
    const logFormat = opts.logFormat ?? defaultLogFormat(process.stderr.isTTY === true);
    const logger = createLogger('virtio-ts switch', opts.logLevel ?? 'info', logFormat, process.stderr.isTTY === true);
    const sw = new NetSwitch({ ageingMs: (opts.ageing ?? 300) * 1000 });
    // The fixed ports first (each can fail with the reason); what was opened is closed on failure.
    const fixed: FramePort[] = [];
    const closeFixed = () => {
      for (const p of fixed) p.close();
    };
    try {
      for (const d of dgrams) {
        try {
          fixed.push(DgramFramePort.open(d.local, d.remote));
        } catch (e) {
          throw new CliError(EXIT_RUNTIME, `--dgram ${d.local},${d.remote}: ${describeError(e)}`);
        }
      }
      for (const t of opts.tap ?? []) {
        try {
          fixed.push(TapFramePort.open(t));
        } catch (e) {
          throw new CliError(EXIT_RUNTIME, `--tap ${t}: ${describeError(e)}`);
        }
      }
    } catch (e) {
      closeFixed();
      throw e;
    }
    for (const p of fixed) sw.attach(p);
    let server: SwitchServer | undefined;
    if (opts.socket !== undefined) {
      try {
        server = await listenSwitch(opts.socket, sw);
      } catch (e) {
        closeFixed();
        throw new CliError(EXIT_RUNTIME, `cannot listen on --socket ${opts.socket}: ${describeError(e)} (an existing file is never replaced)`);
      }
      server.server.on('connection', () => logger.info({ ports: sw.portCount }, `a port joined (${sw.portCount} now)`));
    }
    const names = fixed.map((p) => (p instanceof DgramFramePort ? `dgram ${p.localPath} -> ${p.remotePath}` : `TAP ${p.name}`));
    logger.info(
      { event: 'start', socket: opts.socket, dgram: opts.dgram, tap: opts.tap, logFormat },
      `switch ${opts.socket !== undefined ? `listening on ${opts.socket}` : 'up'}${names.length > 0 ? `; ports: ${names.join(', ')}` : ''}`,
    );
    const signal = await new Promise<NodeJS.Signals>((resolve) => {
      const on = (s: NodeJS.Signals) => {
        process.off('SIGTERM', on);
        process.off('SIGINT', on);
        resolve(s);
      };
      process.on('SIGTERM', on);
      process.on('SIGINT', on);
    });
    await server?.close();
    closeFixed();
    logger.info({ event: 'stop', signal, counters: sw.counters }, `${signal}: switch stopped; ${sw.counters.received} frames in, ${sw.counters.unicast} unicast, ${sw.counters.flooded} flooded, ${sw.counters.dropped} dropped`);
    return EXIT_OK;
  } catch (e) {
    if (!(e instanceof CliError)) throw e;
    err.write(`virtio-ts switch: ${e.message}\n`);
    return e.code;
  }
}
