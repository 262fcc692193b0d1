/**
 * `virtio-ts switch --socket PATH`: a NetSwitch (MAC learning, flooding, offload completion)
 * listening on a unix stream socket in QEMU's `-netdev stream` framing. `virtio-ts serve net
 * --switch PATH` processes and QEMU guests with a built-in NIC
 * (`-netdev stream,id=n0,server=off,addr.type=unix,addr.path=PATH`) join it; each connection is
 * a port until it closes. SIGTERM/SIGINT: close every connection, remove the socket file this
 * process made, exit 0. The socket path must not exist: nothing is replaced.
 */
import { NetSwitch } from '../net/switch.js';
import { listenSwitch } from '../node/net/stream-port.js';
import { MAX_SOCKET_PATH } from '../transports/vhost-user/socket-path.js';
import { CliError, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, describeError } from './exit-codes.js';
import { createLogger, defaultLogFormat, type LogFormat } from './log.js';

/** Flags of `virtio-ts switch`. */
export interface SwitchOptions {
  socket?: string;
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
    if (opts.socket === undefined || opts.socket === '' || Buffer.byteLength(opts.socket) > MAX_SOCKET_PATH) {
      throw new CliError(EXIT_USAGE, `--socket PATH is needed, 1 to ${MAX_SOCKET_PATH} bytes long`);
    }
    const logFormat = opts.logFormat ?? defaultLogFormat(process.stderr.isTTY === true);
    const logger = createLogger('virtio-ts switch', opts.logLevel ?? 'info', logFormat, process.stderr.isTTY === true);
    const sw = new NetSwitch({ ageingMs: (opts.ageing ?? 300) * 1000 });
    let server;
    try {
      server = await listenSwitch(opts.socket, sw);
    } catch (e) {
      throw new CliError(EXIT_RUNTIME, `cannot listen on --socket ${opts.socket}: ${describeError(e)} (an existing file is never replaced)`);
    }
    server.server.on('connection', () => logger.info({ ports: sw.portCount }, `a port joined (${sw.portCount} now)`));
    logger.info({ event: 'start', socket: opts.socket, logFormat }, `switch listening on ${opts.socket}`);
    const signal = await new Promise<NodeJS.Signals>((resolve) => {
      const on = (s: NodeJS.Signals) => {
        process.off('SIGTERM', on);
        process.off('SIGINT', on);
        resolve(s);
      };
      process.on('SIGTERM', on);
      process.on('SIGINT', on);
    });
    await server.close();
    logger.info({ event: 'stop', signal, counters: sw.counters }, `${signal}: switch stopped; ${sw.counters.received} frames in, ${sw.counters.unicast} unicast, ${sw.counters.flooded} flooded, ${sw.counters.dropped} dropped`);
    return EXIT_OK;
  } catch (e) {
    if (!(e instanceof CliError)) throw e;
    err.write(`virtio-ts switch: ${e.message}\n`);
    return e.code;
  }
}
