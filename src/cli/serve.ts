/**
 * `virtio-ts serve <rng|blk>`: a vhost-user back-end on a unix socket (or an inherited fd),
 * following vhost-user.rst "Backend program conventions": --print-capabilities, one
 * front-end at a time, served again after it reconnects, SIGTERM/SIGINT end cleanly and
 * remove the socket file. SIGHUP reloads: `serve blk` measures its image again and, when the
 * size changed, resizes the disk live (see reloadImageSize).
 */
import { existsSync, unlinkSync } from 'node:fs';
import { native } from '../native/index.js';
import { Monitor, formatVerdict } from '../conformance/monitor.js';
import { loadDeviations } from './deviations.js';
import { RngDevice } from '../devices/rng.js';
import { BlkDevice } from '../devices/blk.js';
import { FileBlockBackend } from '../backends/file-block.js';
import type { VirtioDevice } from '../core/device.js';
import { VhostUserBackend } from '../transports/vhost-user/backend.js';
import { pino, type Logger } from 'pino';
import { Status } from '../core/constants.js';

export interface ServeOptions {
  socketPath?: string;
  fd?: number;
  printCapabilities?: boolean;
  image?: string;
  readOnly?: boolean;
  numQueues?: number;
  queueSize?: number;
  /** blk: seg_max to advertise (default: defaultSegMax, 126). */
  segMax?: number;
  io?: 'auto' | 'async' | 'sync';
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
    // A verdict on a clause of catalogue/deviations.tsv is logged as a known deviation of a
    // real driver (still a violation, acted on in strict mode).
    onVerdict: (v) => logger.warn({ verdict: v, knownDeviation: v.deviation !== undefined }, `${v.deviation ? 'known deviation: ' : ''}verdict ${formatVerdict(v)}`),
    deviations: loadDeviations(),
    // Over vhost-user the front-end (QEMU's packed=on|off) picks the ring format, not the guest.
    ignore: ['reserved.bits.driver.6'],
  });
  let device: VirtioDevice;
  let image: FileBlockBackend | undefined;
  try {
    if (type === 'blk') image = await FileBlockBackend.open(opts.image!, { readOnly: opts.readOnly, io: opts.io });
    device =
      image !== undefined
        ? new BlkDevice({
            backend: image,
            readOnly: opts.readOnly,
            numQueues: opts.numQueues ?? 1,
            queueMaxSize: opts.queueSize ?? 1024,
            // seg_max: by default 126 whatever --queue-size says, so Linux's chains (seg_max + 2
            // descriptors) fit QEMU's default queue size of 128 (see defaultSegMax).
            segMax: opts.segMax,
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
  // SIGHUPs are handled one at a time, in order (measuring a device node takes a few reads).
  let reloads: Promise<void> = Promise.resolve();
  const onHangup = () => {
    reloads = reloads
      .then(() =>
        device instanceof BlkDevice && image !== undefined
          ? reloadImageSize(device, image, opts.image!, logger)
          : logger.info({ signal: 'SIGHUP' }, `SIGHUP: nothing to reload for ${type}`),
      )
      .catch((e: unknown) => logger.error({ signal: 'SIGHUP', reason: String(e) }, `SIGHUP: reload failed (${String(e)})`));
  };
  return new Promise<number>((resolve) => {
    const stop = (code: number) => {
      watch?.close();
      if (busy) backend.close('shutting down');
      // Only a socket this server made is removed (not one a live server listens on).
      if (listenFd >= 0) {
        n.close(listenFd);
        if (opts.socketPath !== undefined && existsSync(opts.socketPath)) unlinkSync(opts.socketPath);
      }
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      process.off('SIGHUP', onHangup);
      resolve(code);
    };
    const onSignal = () => stop(0);
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    process.on('SIGHUP', onHangup);
    if (opts.fd !== undefined) {
      backend.onClose = () => stop(0);
      busy = true;
      backend.serve(opts.fd);
      return;
    }
    try {
      listenFd = listenReplacingStale(opts.socketPath!, (m) => logger.warn({ socketPath: opts.socketPath }, m));
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
        let c: number;
        try {
          c = n.accept(listenFd);
        } catch (e) {
          // Out of fds, say: the front-end's connect fails, the server goes on.
          logger.error({ reason: String(e) }, `accept failed: ${String(e)}`);
          return;
        }
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

/**
 * SIGHUP for `serve blk`: the image (resized in place: truncate, qemu-img resize on a raw file,
 * a grown block device) is measured again; a new size becomes the disk's capacity, and a live
 * driver gets a configuration change notification (vhost-user CONFIG_CHANGE_MSG: QEMU re-reads
 * the config space and interrupts the guest, whose virtio_blk reads the new capacity).
 *
 * - Grow: applied.
 * - Shrink: applied too, with a warning. The sectors past the new end are gone for the guest;
 *   requests there fail with IOERR. A request the guest sent before it saw the change is not
 *   held against it (BlkDevice.shrunkFrom); reads already in flight past the end read zeroes.
 * - Read-only (--read-only): resized the same way; it stays read-only.
 * - Unmeasurable (gone below one sector, I/O error): an error line; the size stays as it was.
 * Nothing here throws: a reload never ends the server.
 */
async function reloadImageSize(device: BlkDevice, image: FileBlockBackend, path: string, logger: Logger): Promise<void> {
  const before = device.capacitySectors;
  let after: number;
  try {
    after = (await image.refreshSize()).after / 512;
  } catch (e) {
    const reason = e instanceof Error ? e.message : String(e);
    logger.error({ signal: 'SIGHUP', image: path, capacity: before, reason }, `SIGHUP: ${path} not resized (${reason}); capacity stays ${before} sectors`);
    return;
  }
  // The device notifies a driver that has set DRIVER_OK; any other reads capacity as it initializes.
  const notified = (device.status & Status.DRIVER_OK) !== 0;
  const fields = { signal: 'SIGHUP', image: path, before, capacity: after, readOnly: device.readOnly, notified };
  if (after === before) {
    logger.info(fields, `SIGHUP: ${path} still holds ${after} sectors; capacity unchanged`);
    return;
  }
  try {
    device.resize();
  } catch (e) {
    const reason = e instanceof Error ? e.message : String(e);
    logger.error({ ...fields, reason }, `SIGHUP: resizing to ${after} sectors failed (${reason})`);
    return;
  }
  const told = notified ? 'config change notification sent to the driver' : 'no live driver: it reads the capacity when it initializes';
  if (after > before) {
    logger.info(fields, `resized ${path}: capacity ${before} -> ${after} sectors of 512 bytes; ${told}`);
  } else {
    logger.warn(fields, `resized ${path} smaller: capacity ${before} -> ${after} sectors of 512 bytes; sectors ${after}..${before - 1} are gone for the guest (requests there fail with IOERR); ${told}`);
  }
}

/**
 * Listens on `path`. A socket file left by a server that died (nothing accepts on it: connect
 * is refused) is replaced, so a crashed back-end can be restarted on the same path and the
 * front-end reconnects (QEMU: -chardev socket,...,reconnect=N). A live server's socket is not
 * touched: that is an error.
 */
function listenReplacingStale(path: string, warn: (m: string) => void): number {
  const n = native();
  try {
    return n.listen(path);
  } catch (e) {
    // The addon's errors carry the errno name as their code.
    const code = (x: unknown) => (x as { code?: unknown }).code;
    if (code(e) !== 'EADDRINUSE') throw e;
    let probe = -1;
    try {
      probe = n.connect(path);
    } catch (c) {
      if (code(c) !== 'ECONNREFUSED') throw e;
      warn(`${path} was left by a server that is gone; replacing it`);
      unlinkSync(path);
      return n.listen(path);
    }
    n.close(probe);
    throw new Error(`another server is listening on ${path}`);
  }
}
