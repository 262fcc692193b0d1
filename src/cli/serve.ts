/**
 * `virtio-ts serve <rng|blk>`: a vhost-user back-end on a unix socket (or an inherited fd),
 * following vhost-user.rst "Backend program conventions": --print-capabilities, one
 * front-end at a time, served again after it reconnects, SIGTERM/SIGINT end cleanly and
 * remove the socket file (only the one this process made). SIGHUP reloads: `serve blk`
 * measures its image again and, when the size changed, resizes the disk live (see
 * reloadImageSize).
 *
 * Every check a user can fail happens before the socket exists, each with its exit code
 * (exit-codes.ts): usage errors (2) first, then runtime failures (3): the native addon, the
 * image (image.ts), the fd or the socket path (socket.ts).
 */
import { fstatSync } from 'node:fs';
import { native, type NativeAddon } from '../native/index.js';
import { Monitor, formatVerdict } from '../monitor/monitor.js';
import { loadDeviations } from '../node/deviations.js';
import { RngDevice } from '../devices/rng/device.js';
import { BlkDevice } from '../devices/blk/device.js';
import { FileBlockStorage } from '../node/file-block.js';
import type { VirtioDevice } from '../device/device.js';
import { VhostUserBackend } from '../transports/vhost-user/backend.js';
import { LONG_CHAIN_CAP } from '../virtqueue/chain.js';
import type { Logger } from 'pino';
import { Status } from '../spec/constants.js';
import { CliError, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_VIOLATIONS, describeError, errnoOf } from './exit-codes.js';
import { checkImage, type ImageFacts } from './image.js';
import { listenSafely, type ListeningSocket } from './socket.js';
import { createLogger, defaultLogFormat, type LogFormat } from './log.js';

export interface ServeOptions {
  socketPath?: string;
  fd?: number;
  printCapabilities?: boolean;
  image?: string;
  /** vhost-user.rst's name for --image. */
  blkFile?: string;
  /** 'raw': the user says the image is raw; no format probe. */
  format?: 'raw';
  readOnly?: boolean;
  numQueues?: number;
  queueSize?: number;
  /** blk: seg_max to advertise (default: defaultSegMax, 126). */
  segMax?: number;
  io?: 'auto' | 'async' | 'sync';
  strict?: boolean;
  tolerant?: boolean;
  logLevel?: string;
  logFormat?: LogFormat;
}

interface Writable {
  write(s: string): unknown;
}

const TYPES: Record<string, string> = { rng: 'rng', blk: 'block' };

/**
 * --print-capabilities, as vhost-user.json's VHostUserBackendCapabilities: the type and, for
 * block, the options of vhost-user.rst's vhost-user-blk section that serve supports
 * (VHostUserBackendBlockFeature: "read-only" is --read-only, "blk-file" is --blk-file PATH).
 * The schema defines no features for rng.
 */
export function capabilities(type: string): { type: string; features: string[] } {
  return type === 'blk' ? { type: 'block', features: ['read-only', 'blk-file'] } : { type: TYPES[type], features: [] };
}

/** The addon, or a CliError saying why serve cannot run without it and how to build it. */
function loadAddon(): NativeAddon {
  try {
    return native();
  } catch (err) {
    throw new CliError(
      EXIT_RUNTIME,
      `serve needs the native addon (unix sockets with fd passing, mmap, eventfd), which is not built: ${err instanceof Error ? err.message : String(err)}. ` +
        'Build it with `npm install` in the virtio-ts package (or `npx node-gyp rebuild`; it needs python3, make and a C compiler). demo and conformance work without it.',
    );
  }
}

/** Checks --fd: an open socket (vhost-user runs on a unix stream socket). */
function checkFd(fd: number): void {
  let st;
  try {
    st = fstatSync(fd);
  } catch (err) {
    throw new CliError(EXIT_RUNTIME, `--fd ${fd}: ${errnoOf(err) === 'EBADF' ? 'not an open file descriptor' : describeError(err)}`);
  }
  if (!st.isSocket()) throw new CliError(EXIT_RUNTIME, `--fd ${fd} is not a socket (vhost-user needs a connected unix socket)`);
}

/** Longest unix socket path: sun_path is 108 bytes, with its NUL. */
const MAX_SOCKET_PATH = 107;

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

export async function runServe(type: string, opts: ServeOptions, out: Writable, err: Writable): Promise<number> {
  try {
    return await serve(type, opts, out, err);
  } catch (e) {
    if (!(e instanceof CliError)) throw e;
    err.write(`virtio-ts serve: ${e.message}\n`);
    return e.code;
  }
}

async function serve(type: string, opts: ServeOptions, out: Writable, err: Writable): Promise<number> {
  // Usage errors (exit 2): all of them before anything is touched.
  if (TYPES[type] === undefined) throw new CliError(EXIT_USAGE, `unknown device type "${type}" (one of ${Object.keys(TYPES).join(', ')})`);
  if (opts.printCapabilities) {
    // vhost-user.rst: "Output to stdout the back-end capabilities in JSON format, and then exit successfully."
    out.write(JSON.stringify(capabilities(type)) + '\n');
    return EXIT_OK;
  }
  if ((opts.socketPath === undefined) === (opts.fd === undefined)) throw new CliError(EXIT_USAGE, 'give exactly one of --socket-path PATH or --fd N');
  if (opts.socketPath !== undefined && (opts.socketPath === '' || Buffer.byteLength(opts.socketPath) > MAX_SOCKET_PATH)) {
    // sockaddr_un.sun_path holds 108 bytes with the terminating NUL (unix(7)).
    throw new CliError(EXIT_USAGE, `--socket-path must be 1 to ${MAX_SOCKET_PATH} bytes long, the limit of a unix socket path (got ${Buffer.byteLength(opts.socketPath)})`);
  }
  if (opts.image !== undefined && opts.blkFile !== undefined && opts.image !== opts.blkFile) throw new CliError(EXIT_USAGE, '--image and --blk-file name the same thing: give one');
  const imagePath = opts.image ?? opts.blkFile;
  if (type === 'blk' && imagePath === undefined) throw new CliError(EXIT_USAGE, 'serve blk needs --image FILE (or --blk-file FILE)');
  if (type !== 'blk' && imagePath !== undefined) throw new CliError(EXIT_USAGE, `--image is for blk, not ${type}`);
  if (type !== 'blk' && opts.segMax !== undefined) throw new CliError(EXIT_USAGE, `--seg-max is for blk, not ${type}`);
  const mode = opts.strict ? 'strict' : 'tolerant';
  const readOnly = opts.readOnly === true;

  // Runtime failures (exit 3): the addon, the image, the fd, the socket path.
  const n = loadAddon();
  let facts: ImageFacts | undefined;
  if (type === 'blk') facts = await checkImage(imagePath!, { readOnly, raw: opts.format === 'raw' });
  if (opts.fd !== undefined) checkFd(opts.fd);

  const logFormat = opts.logFormat ?? defaultLogFormat(process.stderr.isTTY === true);
  const logger = createLogger(`virtio-ts serve ${type}`, opts.logLevel ?? 'info', logFormat, process.stderr.isTTY === true);
  // Violations seen in this run decide the exit code at shutdown (exit-codes.ts: 1). A known
  // deviation of a real driver (a verdict the monitor marks with `deviation`, from
  // catalogue/deviations.tsv) is logged as a violation but, in tolerant mode, served and not
  // held against the run: a production VM running a stock kernel ends with 0. In strict mode it
  // counts like any violation.
  let violations = 0;
  let knownDeviations = 0;
  let warnings = 0;
  const monitor = new Monitor({
    mode,
    onVerdict: (v) => {
      const known = v.deviation !== undefined;
      if (v.severity !== 'violation') warnings++;
      else if (known && mode === 'tolerant') knownDeviations++;
      else violations++;
      logger.warn({ verdict: v, knownDeviation: known }, `${known ? 'known deviation: ' : ''}verdict ${formatVerdict(v)}`);
    },
    // catalogue/deviations.tsv: verdicts on these clauses carry `deviation` (still violations).
    deviations: loadDeviations(),
    // Over vhost-user the front-end (QEMU's packed=on|off) picks the ring format, not the guest.
    ignore: ['reserved.bits.driver.6'],
  });

  let image: FileBlockStorage | undefined;
  const numQueues = opts.numQueues ?? 1;
  const queueMaxSize = opts.queueSize ?? 1024;
  try {
    if (type === 'blk') image = await FileBlockStorage.open(imagePath!, { readOnly, io: opts.io });
  } catch (e) {
    throw new CliError(EXIT_RUNTIME, `cannot open --image ${imagePath}: ${describeError(e)}`);
  }
  const device: VirtioDevice =
    image !== undefined
      ? // seg_max: by default 126 whatever --queue-size says, so Linux's chains (seg_max + 2
        // descriptors) fit QEMU's default queue size of 128 (see defaultSegMax).
        new BlkDevice({ storage: image, readOnly, numQueues, queueMaxSize, segMax: opts.segMax, monitor })
      : new RngDevice({ monitor, queueMaxSize });
  const log = { info: (m: string) => logger.info(m), warn: (m: string) => logger.warn(m) };
  const backend = new VhostUserBackend(device, log);
  let listening: ListeningSocket | null = null;
  /** The startup line: what is served, how, and where. */
  const logStart = () => {
    const on = listening !== null ? `on ${listening.path}` : `on fd ${opts.fd}`;
    if (device instanceof BlkDevice && image !== undefined && facts !== undefined) {
      const sectors = device.capacitySectors;
      const fields = {
        event: 'start', type, image: imagePath, capacityBytes: image.size, capacitySectors: sectors, numQueues, queueSize: queueMaxSize,
        segMax: device.segMax, readOnly, io: image.io, mode, format: opts.format ?? 'raw (probed)', socketPath: opts.socketPath, fd: opts.fd, logFormat,
      };
      logger.info(
        fields,
        `serving ${imagePath}: ${sectors} sectors of 512 bytes (${image.size} bytes), ${plural(numQueues, 'queue')} of up to ${queueMaxSize}, seg_max ${device.segMax}, ` +
          `${readOnly ? 'read-only' : 'read-write'}, io ${image.io}, monitor ${mode}, ${on}`,
      );
      if (device.segMax + 2 > queueMaxSize) {
        // A driver that honours seg_max alone (Linux 6.1's virtio_blk) builds requests of up to
        // seg_max data descriptors + header + status, through an indirect table whatever the
        // queue size: chains longer than the queue break split/packed.indirect-descs.driver.3
        // (catalogue/deviations.tsv). Said once at startup so the operator can pick a seg_max
        // that fits instead of finding violations (or, in strict mode, device errors) later.
        const chain = device.segMax + 2;
        const cap = Math.max(queueMaxSize, LONG_CHAIN_CAP);
        logger.warn(
          { segMax: device.segMax, queueSize: queueMaxSize, chainDescriptors: chain, mode },
          `seg_max ${device.segMax} does not fit --queue-size ${queueMaxSize}: a driver that honours it builds chains of up to ${chain} descriptors, ` +
            `longer than the queue (split/packed.indirect-descs.driver.3, a known deviation of Linux); ` +
            (chain > cap
              ? `chains longer than ${cap} descriptors are a device error in every mode`
              : mode === 'strict'
                ? 'in strict mode each such chain is a device error'
                : 'tolerant mode serves them and logs them as a known deviation (in strict mode they would be a device error)') +
            (queueMaxSize > 2 ? `; --seg-max ${queueMaxSize - 2} or less fits` : ''),
        );
      }
      if (facts.tail !== 0) {
        logger.warn(
          { image: imagePath, bytes: facts.bytes, tail: facts.tail },
          `${imagePath} is ${facts.bytes} bytes, not a multiple of 512: the last ${facts.tail} bytes are not visible to the guest`,
        );
      }
    } else {
      logger.info({ event: 'start', type, numQueues: 1, queueSize: queueMaxSize, mode, socketPath: opts.socketPath, fd: opts.fd, logFormat }, `serving ${type}: 1 queue of up to ${queueMaxSize}, monitor ${mode}, ${on}`);
    }
  };

  let watch: { close(): void } | null = null;
  let busy = false;
  // SIGHUPs are handled one at a time, in order (measuring a device node takes a few reads).
  let reloads: Promise<void> = Promise.resolve();
  const onHangup = () => {
    reloads = reloads
      .then(() =>
        device instanceof BlkDevice && image !== undefined
          ? reloadImageSize(device, image, imagePath!, logger)
          : logger.info({ signal: 'SIGHUP' }, `SIGHUP: nothing to reload for ${type}`),
      )
      .catch((e: unknown) => logger.error({ signal: 'SIGHUP', reason: String(e) }, `SIGHUP: reload failed (${String(e)})`));
  };
  return new Promise<number>((resolve, reject) => {
    let stopped = false;
    const stop = (why: { signal?: string; reason?: string }) => {
      if (stopped) return;
      stopped = true;
      watch?.close();
      if (busy) backend.close('shutting down');
      let socketFile: string | undefined;
      if (listening !== null) {
        n.close(listening.fd);
        try {
          socketFile = listening.remove();
        } catch (e) {
          socketFile = `not removed (${e instanceof Error ? e.message : String(e)})`;
        }
      }
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      process.off('SIGHUP', onHangup);
      // Exit 1 when the run saw a violation (in either mode): a conformance run can check $?.
      const code = violations > 0 ? EXIT_VIOLATIONS : EXIT_OK;
      const socketNote =
        socketFile === undefined ? '' : socketFile === 'removed' ? '; socket removed' : socketFile === 'replaced' ? `; ${listening!.path} is no longer this server's socket, left alone` : socketFile === 'gone' ? '' : `; socket ${socketFile}`;
      logger.info(
        { event: 'stop', signal: why.signal, reason: why.reason, violations, knownDeviations, warnings, exitCode: code, socketFile },
        // The counts are the conformance monitor's verdicts on the peers (JSON `violations`,
        // `knownDeviations`, `warnings`), not serve's own log warnings (an image's unseen tail,
        // a --seg-max longer than the queue), which the line says nothing about.
        `${why.signal !== undefined ? `${why.signal}: ` : ''}shutting down${why.reason ? ` (${why.reason})` : ''}; monitor verdicts in this run: ${plural(violations, 'violation')}, ` +
          `${knownDeviations > 0 ? `${plural(knownDeviations, 'known deviation')}, ` : ''}${plural(warnings, 'warning')}; exit ${code}${socketNote}`,
      );
      resolve(code);
    };
    const onSignal = (signal: NodeJS.Signals) => stop({ signal });
    // The handlers come first: a signal that arrives once the socket exists finds them there
    // (SIGHUP's default action would end the process, SIGTERM's would leave the socket behind).
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    process.on('SIGHUP', onHangup);
    if (opts.socketPath !== undefined) {
      try {
        listening = listenSafely(n, opts.socketPath, (m) => logger.warn({ socketPath: opts.socketPath }, m));
      } catch (e) {
        process.off('SIGTERM', onSignal);
        process.off('SIGINT', onSignal);
        process.off('SIGHUP', onHangup);
        reject(e);
        return;
      }
    }
    logStart();
    if (opts.fd !== undefined) {
      backend.onClose = () => stop({ reason: `front-end gone${backend.lastError ? `: ${backend.lastError}` : ''}` });
      busy = true;
      backend.serve(opts.fd);
      return;
    }
    const listenFd = listening!.fd;
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
async function reloadImageSize(device: BlkDevice, image: FileBlockStorage, path: string, logger: Logger): Promise<void> {
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
