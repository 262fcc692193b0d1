/**
 * `virtio-ts serve <rng|blk>`: a vhost-user back-end on a unix socket (or an inherited fd),
 * following vhost-user.rst "Backend program conventions": --print-capabilities, one
 * front-end at a time, served again after it reconnects, SIGTERM/SIGINT end cleanly and
 * remove the socket file.
 */
import { existsSync, unlinkSync } from 'node:fs';
import { native } from '../native/index.js';
import { Monitor, formatVerdict } from '../conformance/monitor.js';
import { RngDevice } from '../devices/rng.js';
import { BlkDevice } from '../devices/blk.js';
import { FileBlockBackend } from '../backends/file-block.js';
import type { VirtioDevice } from '../core/device.js';
import { VhostUserBackend } from '../transports/vhost-user/backend.js';
import { pino } from 'pino';

export interface ServeOptions {
  socketPath?: string;
  fd?: number;
  printCapabilities?: boolean;
  image?: string;
  readOnly?: boolean;
  numQueues?: number;
  queueSize?: number;
  tolerant?: boolean;
  logLevel?: string;
}

interface Writable {
  write(s: string): unknown;
}

const TYPES: Record<string, string> = { rng: 'rng', blk: 'blk' };

export async function runServe(type: string, opts: ServeOptions, out: Writable, err: Writable): Promise<number> {
  if (TYPES[type] === undefined) {
    err.write(`virtio-ts serve: unknown device type "${type}" (one of ${Object.keys(TYPES).join(', ')})\n`);
    return 2;
  }
  if (opts.printCapabilities) {
    out.write(JSON.stringify({ type: type === 'blk' ? 'block' : 'rng', features: [] }) + '\n');
    return 0;
  }
  if ((opts.socketPath === undefined) === (opts.fd === undefined)) {
    err.write('virtio-ts serve: give exactly one of --socket-path PATH or --fd N\n');
    return 2;
  }
  if (type === 'blk' && opts.image === undefined) {
    err.write('virtio-ts serve blk: --image FILE is required\n');
    return 2;
  }
  // Structured logs (JSON lines) on stderr; synchronous so nothing is lost at exit.
  const logger = pino({ name: `virtio-ts serve ${type}`, level: opts.logLevel ?? 'info' }, pino.destination({ dest: 2, sync: true }));
  const monitor = new Monitor({
    mode: opts.tolerant ? 'tolerant' : 'strict',
    onVerdict: (v) => logger.warn({ verdict: v }, `verdict ${formatVerdict(v)}`),
    // Over vhost-user the front-end (QEMU's packed=on|off) picks the ring format, not the guest.
    ignore: ['reserved.bits.driver.6'],
  });
  let device: VirtioDevice;
  try {
    device =
      type === 'blk'
        ? new BlkDevice({
            backend: await FileBlockBackend.open(opts.image!, { readOnly: opts.readOnly }),
            readOnly: opts.readOnly,
            numQueues: opts.numQueues ?? 1,
            queueMaxSize: opts.queueSize ?? 1024,
            monitor,
          })
        : new RngDevice({ monitor, queueMaxSize: opts.queueSize ?? 1024 });
  } catch (e) {
    err.write(`virtio-ts serve: ${e instanceof Error ? e.message : String(e)}\n`);
    return 2;
  }
  const n = native();
  const log = { info: (m: string) => logger.info(m), warn: (m: string) => logger.warn(m) };
  const backend = new VhostUserBackend(device, log);
  let listenFd = -1;
  let watch: { close(): void } | null = null;
  let busy = false;
  return new Promise<number>((resolve) => {
    const stop = (code: number) => {
      watch?.close();
      if (busy) backend.close('shutting down');
      if (listenFd >= 0) n.close(listenFd);
      if (opts.socketPath !== undefined && existsSync(opts.socketPath)) unlinkSync(opts.socketPath);
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      resolve(code);
    };
    const onSignal = () => stop(0);
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    if (opts.fd !== undefined) {
      backend.onClose = () => stop(0);
      busy = true;
      backend.serve(opts.fd);
      return;
    }
    try {
      listenFd = n.listen(opts.socketPath!);
    } catch (e) {
      err.write(`virtio-ts serve: cannot listen on ${opts.socketPath}: ${e instanceof Error ? e.message : String(e)}\n`);
      stop(2);
      return;
    }
    logger.info({ socketPath: opts.socketPath }, `listening on ${opts.socketPath}`);
    backend.onClose = () => {
      busy = false;
      logger.info({ reason: backend.lastError }, `front-end gone${backend.lastError ? ` (${backend.lastError})` : ''}; waiting for the next one`);
    };
    watch = n.watch(listenFd, true, false, () => {
      for (;;) {
        const c = n.accept(listenFd);
        if (c < 0) return;
        if (busy) {
          n.close(c); // one front-end at a time
          continue;
        }
        busy = true;
        logger.info({ fd: c }, 'front-end connected');
        backend.serve(c);
      }
    });
  });
}
