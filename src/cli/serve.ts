/**
 * `virtio-ts serve <rng|blk|net>`: a vhost-user back-end on a unix socket (or an inherited fd),
 * following vhost-user.rst "Backend program conventions": --print-capabilities, one
 * front-end at a time, served again after it reconnects, SIGTERM/SIGINT end cleanly and
 * remove the socket file (only the one this process made). SIGHUP reloads: `serve blk`
 * measures its image again and, when the size changed, resizes the disk live (see
 * reloadImageSize).
 *
 * The serving is the library's (serveVhostUser, transports/vhost-user/daemon.ts); this is the
 * command around it: flags, the device they describe, the log, signals and exit codes.
 * Every check a user can fail happens before the socket exists, each with its exit code
 * (exit-codes.ts): usage errors (2) first, then runtime failures (3): the native addon, the
 * image (image.ts), the fd, the socket path (the daemon's VhostUserError, worded for the flag).
 */
import { native } from '../native/index.js';
import { Monitor, formatVerdict } from '../monitor/monitor.js';
import { RunReportRecorder } from '../monitor/run-report.js';
import { loadDeviations } from '../node/deviations.js';
import { RngDevice } from '../devices/rng/device.js';
import { BlkDevice } from '../devices/blk/device.js';
import { FileBlockStorage } from '../node/file-block.js';
import { NetDevice } from '../devices/net/device.js';
import { formatMac, parseMac } from '../net/mac.js';
import { StreamFramePort } from '../node/net/stream-port.js';
import { TapFramePort, interfaceNameProblem } from '../node/net/tap-port.js';
import { NetPortError } from '../node/net/errors.js';
import { connectPorts } from '../net/switch.js';
import { VsockDevice } from '../devices/vsock/device.js';
import { serveHybridVsock, type HybridVsock } from '../node/vsock/hybrid.js';
import { FsDevice } from '../devices/fs/device.js';
import { MemoryFs } from '../fs/memory.js';
import { HostDirFs } from '../node/fs/host-dir.js';
import { FsError, type FsProvider } from '../fs/vfs.js';
import { errnoName } from '../fs/errno.js';
import type { FuseOpStats } from '../fs/fuse/server.js';
import { opName } from '../fs/fuse/wire.js';
import type { VirtioDevice } from '../device/device.js';
import { serveVhostUser, type DaemonLogger, type VhostUserDaemon } from '../transports/vhost-user/daemon.js';
import { VhostUserError } from '../transports/vhost-user/errors.js';
import { MAX_SOCKET_PATH } from '../transports/vhost-user/socket-path.js';
import { LONG_CHAIN_CAP } from '../virtqueue/chain.js';
import type { Logger } from 'pino';
import { Status } from '../spec/constants.js';
import { CliError, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_VIOLATIONS, describeError } from './exit-codes.js';
import { checkImage, type ImageFacts } from './image.js';
import { checkNewReport, writeNewReport } from './report-file.js';
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
  /** blk: size_max to advertise (bytes). */
  sizeMax?: number;
  io?: 'auto' | 'async' | 'sync';
  strict?: boolean;
  tolerant?: boolean;
  logLevel?: string;
  logFormat?: LogFormat;
  /** net: the MAC address. */
  mac?: string;
  /** net: join the `virtio-ts switch` listening on this unix socket. */
  switch?: string;
  /** net: a TAP interface as the back-end. */
  tap?: string;
  /** net: the mtu to offer (VIRTIO_NET_F_MTU). */
  mtu?: number;
  /** net: queue pairs. */
  queues?: number;
  /** Write the run's verdicts, grouped by clause (schema virtio-ts/run-report@1), to this new file at shutdown. */
  report?: string;
  /** vsock: the guest's CID. */
  guestCid?: number;
  /** vsock: the hybrid vsock unix socket (and the PREFIX of <path>_<port> listeners). */
  udsPath?: string;
  /** fs: the tag the guest mounts. */
  tag?: string;
  /** fs: serve an in-memory file system. */
  memory?: boolean;
  /** fs: serve this host directory. */
  sharedDir?: string;
  /** fs --shared-dir: FOPEN_DIRECT_IO on every open (the guest keeps no page cache of file data). */
  directIo?: boolean;
  /** fs: true (`--xattr`): extended attributes served; otherwise answered ENOSYS (virtiofsd's default no_xattr). */
  xattr?: boolean;
  /** fs: true (`--posix-locks`): fcntl locks held on the host; otherwise the guest's kernel keeps them (virtiofsd's default no_posix_lock). */
  posixLocks?: boolean;
}

interface Writable {
  write(s: string): unknown;
}

const TYPES: Record<string, string> = { rng: 'rng', blk: 'block', net: 'net', vsock: 'vsock', fs: 'fs' };

/**
 * --print-capabilities, as vhost-user.json's VHostUserBackendCapabilities: the type and, for
 * block, the options of vhost-user.rst's vhost-user-blk section that serve supports
 * (VHostUserBackendBlockFeature: "read-only" is --read-only, "blk-file" is --blk-file PATH).
 * The schema defines no features for rng.
 */
export function capabilities(type: string): { type: string; features: string[] } {
  return type === 'blk' ? { type: 'block', features: ['read-only', 'blk-file'] } : { type: TYPES[type], features: [] };
}

/** Checks the addon loads, or a CliError saying why serve cannot run without it and how to build it. */
function loadAddon(): void {
  try {
    native();
  } catch (err) {
    // NativeAddonError's message already says why and how to get the addon.
    throw new CliError(EXIT_RUNTIME, `serve needs the native addon (unix sockets with fd passing, mmap, eventfd): ${err instanceof Error ? err.message : String(err)} demo and conformance work without it.`);
  }
}

/**
 * A daemon error worded for the flag the user gave: the library says "socket path X" and
 * "fd N" where the command line has --socket-path X and --fd N.
 */
function flagWording(message: string): string {
  return message.replace(/^(cannot (?:use|listen on) )?socket path /, '$1--socket-path ').replace(/^fd /, '--fd ');
}

/** FUSE requests and error replies by opcode, the ones seen: `{ opLOOKUP: 10, errLOOKUP: 2 }`. */
function opCounters(s: FuseOpStats): Record<string, number> {
  const out: Record<string, number> = {};
  for (let op = 0; op < s.requests.length; op++) {
    if (s.requests[op] > 0) out[`op${opName(op)}`] = s.requests[op];
    if (s.errors[op] > 0) out[`err${opName(op)}`] = s.errors[op];
  }
  return out;
}

/** `{ requests: 1 }` as `{ fuseRequests: 1 }`. */
const prefixed = (prefix: string, o: object): Record<string, number> =>
  Object.fromEntries(Object.entries(o).map(([k, v]) => [prefix + k[0].toUpperCase() + k.slice(1), v as number]));

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
  if (type !== 'blk' && opts.sizeMax !== undefined) throw new CliError(EXIT_USAGE, `--size-max is for blk, not ${type}`);
  if (type !== 'net') {
    for (const [flag, v] of [['--mac', opts.mac], ['--switch', opts.switch], ['--tap', opts.tap], ['--mtu', opts.mtu], ['--queues', opts.queues]] as const) {
      if (v !== undefined) throw new CliError(EXIT_USAGE, `${flag} is for net, not ${type}`);
    }
  }
  if (opts.switch !== undefined && opts.tap !== undefined) throw new CliError(EXIT_USAGE, 'give one of --switch SOCKET or --tap IFNAME');
  if (opts.tap !== undefined && interfaceNameProblem(opts.tap) !== undefined) throw new CliError(EXIT_USAGE, `--tap: ${interfaceNameProblem(opts.tap)}`);
  if (opts.mac !== undefined && (parseMac(opts.mac) === null || (parseMac(opts.mac)![0] & 1) !== 0)) throw new CliError(EXIT_USAGE, `--mac ${opts.mac} is not a unicast MAC address (like 52:54:00:12:34:56)`);
  if (type === 'vsock' && (opts.guestCid === undefined || opts.udsPath === undefined)) throw new CliError(EXIT_USAGE, 'serve vsock needs --guest-cid N and --uds-path PATH');
  if (type !== 'vsock' && (opts.guestCid !== undefined || opts.udsPath !== undefined)) throw new CliError(EXIT_USAGE, `--guest-cid and --uds-path are for vsock, not ${type}`);
  if (opts.udsPath !== undefined && (opts.udsPath === '' || Buffer.byteLength(opts.udsPath) + 11 > MAX_SOCKET_PATH)) {
    // <path>_<port> must fit sun_path too: up to 11 more bytes.
    throw new CliError(EXIT_USAGE, `--uds-path must be 1 to ${MAX_SOCKET_PATH - 11} bytes long (<path>_<port> must fit a unix socket path)`);
  }
  if (type === 'fs') {
    if (opts.tag === undefined) throw new CliError(EXIT_USAGE, 'serve fs needs --tag TAG (the name the guest mounts)');
    const tagLen = Buffer.byteLength(opts.tag);
    if (tagLen === 0 || tagLen > 36 || opts.tag.includes('\0')) throw new CliError(EXIT_USAGE, `--tag must be 1 to 36 bytes of UTF-8 (got ${tagLen})`);
    if ((opts.memory === true) === (opts.sharedDir !== undefined)) throw new CliError(EXIT_USAGE, 'serve fs needs exactly one of --memory or --shared-dir DIR');
    if (opts.directIo === true && opts.sharedDir === undefined) throw new CliError(EXIT_USAGE, '--direct-io is for --shared-dir');
    if (opts.numQueues !== undefined && opts.numQueues > 64) throw new CliError(EXIT_USAGE, `--num-queues ${opts.numQueues}: fs serves 1 to 64 request queues`);
  } else {
    for (const [flag, v] of [['--tag', opts.tag], ['--memory', opts.memory], ['--shared-dir', opts.sharedDir], ['--direct-io', opts.directIo]] as const) {
      if (v !== undefined) throw new CliError(EXIT_USAGE, `${flag} is for fs, not ${type}`);
    }
    if (opts.xattr !== undefined) throw new CliError(EXIT_USAGE, `--${opts.xattr ? '' : 'no-'}xattr is for fs, not ${type}`);
    if (opts.posixLocks !== undefined) throw new CliError(EXIT_USAGE, `--${opts.posixLocks ? '' : 'no-'}posix-locks is for fs, not ${type}`);
  }
  const mode = opts.strict ? 'strict' : 'tolerant';
  const readOnly = opts.readOnly === true;
  // Never overwrite a file serve did not make: refused before anything is served.
  checkNewReport('serve', opts.report);

  // Runtime failures (exit 3): the addon, the image; the fd and the socket path when the daemon starts.
  loadAddon();
  // This process measures no event-loop utilization: without libuv's idle-time metrics each
  // wakeup (a kick, one per request at queue depth 1) waits in one epoll_pwait, not two.
  native().loopIdleMetrics(false);
  let facts: ImageFacts | undefined;
  if (type === 'blk') facts = await checkImage(imagePath!, { readOnly, raw: opts.format === 'raw' });

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
  const recorder = opts.report !== undefined ? new RunReportRecorder('serve', { type, socketPath: opts.socketPath, fd: opts.fd, image: imagePath }, mode) : undefined;
  const monitor = new Monitor({
    mode,
    onVerdict: (v) => {
      recorder?.record(v);
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
  let provider: FsProvider | undefined;
  if (type === 'fs') {
    if (opts.sharedDir !== undefined) {
      // The host directory, confined to it (src/node/fs/host-dir.ts: README "Sharing a host directory").
      try {
        provider = HostDirFs.open(opts.sharedDir, { readOnly, directIo: opts.directIo === true });
      } catch (e) {
        throw new CliError(EXIT_RUNTIME, `cannot share --shared-dir ${opts.sharedDir}: ${e instanceof FsError && e.cause === undefined ? `${e.message} (${errnoName(e.errno)})` : describeError(e instanceof FsError ? e.cause : e)}`);
      }
    } else provider = new MemoryFs({ readOnly });
  }
  let netPort: StreamFramePort | TapFramePort | undefined;
  if (type === 'net' && opts.switch !== undefined) {
    try {
      netPort = await StreamFramePort.connect(opts.switch);
    } catch (e) {
      throw new CliError(EXIT_RUNTIME, `cannot join --switch ${opts.switch}: ${describeError(e)}`);
    }
  }
  if (type === 'net' && opts.tap !== undefined) {
    // Attached by name, made if absent; the interface is the user's to configure (ip addr, ip
    // link set up): serve never changes an interface, and the kernel refuses non-TAP names.
    try {
      netPort = TapFramePort.open(opts.tap);
    } catch (e) {
      if (e instanceof NetPortError) throw new CliError(EXIT_RUNTIME, `--tap ${opts.tap}: ${e.message}`);
      throw e;
    }
  }
  const device: VirtioDevice =
    type === 'net'
      ? // Over vhost-user the control queue is the front-end's (QEMU serves it and forwards none of
        // its feature bits but MQ): the device has rx/tx queues only, and with --queues N the pairs
        // in use follow the rings QEMU enables for the guest's MQ_VQ_PAIRS_SET (ctrl 'front-end').
        // The front-end also acks only the bits it forwards, so declining MAC/MTU is not the
        // driver's choice.
        new NetDevice({ mac: opts.mac, mtu: opts.mtu, queuePairs: opts.queues ?? 1, queueMaxSize, monitor, linkUp: netPort !== undefined, ctrl: 'front-end', judgeFeatureChoice: false })
      : type === 'fs'
      ? new FsDevice({ provider: provider!, tag: opts.tag!, numRequestQueues: numQueues, queueMaxSize, monitor, xattr: opts.xattr === true, posixLocks: opts.posixLocks === true })
      : type === 'vsock'
      ? new VsockDevice({ guestCid: opts.guestCid!, monitor, queueMaxSize })
      : image !== undefined
      ? // seg_max: by default 126 whatever --queue-size says, so Linux's chains (seg_max + 2
        // descriptors) fit QEMU's default queue size of 128 (see defaultSegMax).
        new BlkDevice({ storage: image, readOnly, numQueues, queueMaxSize, segMax: opts.segMax, sizeMax: opts.sizeMax, monitor })
      : new RngDevice({ monitor, queueMaxSize });
  /** The daemon's lines go to the same log, their fields with them. */
  const daemonLog: DaemonLogger = {
    info: (m, fields) => logger.info(fields ?? {}, m),
    warn: (m, fields) => logger.warn(fields ?? {}, m),
    error: (m, fields) => logger.error(fields ?? {}, m),
  };
  /** The startup line: what is served, how, and where. */
  const logStart = () => {
    const on = opts.socketPath !== undefined ? `on ${opts.socketPath}` : `on fd ${opts.fd}`;
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
    } else if (device instanceof NetDevice) {
      const mac = formatMac(device.type.mac);
      const backend =
        netPort instanceof TapFramePort
          ? `TAP ${netPort.name}${netPort.vnetHdr ? ' (virtio_net_hdr: offloads passed to the kernel)' : ''}; bring it up yourself: ip link set ${netPort.name} up`
          : netPort !== undefined
            ? `switch ${opts.switch}`
            : 'no back-end (link down: give --switch SOCKET or --tap IFNAME)';
      logger.info(
        { event: 'start', type, mac, queuePairs: device.type.maxPairs, mtu: device.type.mtu || undefined, queueSize: queueMaxSize, backend, mode, socketPath: opts.socketPath, fd: opts.fd, logFormat },
        `serving net ${mac}: ${plural(device.type.maxPairs, 'queue pair')} of up to ${queueMaxSize}${device.type.mtu ? `, mtu ${device.type.mtu}` : ''}, ${backend}, monitor ${mode}, ${on}`,
      );
    } else if (device instanceof FsDevice) {
      const what = opts.memory ? 'an in-memory file system' : `${opts.sharedDir}${opts.directIo === true ? ' (direct I/O: no guest page cache)' : ''}`;
      logger.info(
        { event: 'start', type, tag: opts.tag, provider: opts.memory ? 'memory' : 'shared-dir', sharedDir: opts.sharedDir, readOnly, xattr: opts.xattr === true, posixLocks: opts.posixLocks === true, numRequestQueues: numQueues, queueSize: queueMaxSize, mode, socketPath: opts.socketPath, fd: opts.fd, logFormat },
        `serving fs "${opts.tag}": ${what}, ${readOnly ? 'read-only' : 'read-write'}, ${opts.xattr === true ? 'xattrs' : 'no xattrs'}, ${opts.posixLocks === true ? 'host POSIX locks' : 'guest-local POSIX locks'}, ${plural(numQueues, 'request queue')} of up to ${queueMaxSize}, monitor ${mode}, ${on}`,
      );
    } else {
      logger.info({ event: 'start', type, numQueues: 1, queueSize: queueMaxSize, mode, socketPath: opts.socketPath, fd: opts.fd, logFormat }, `serving ${type}: 1 queue of up to ${queueMaxSize}, monitor ${mode}, ${on}`);
    }
  };

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
  let daemon: VhostUserDaemon | null = null;
  let signal: NodeJS.Signals | undefined;
  const onSignal = (s: NodeJS.Signals) => {
    signal ??= s;
    void daemon?.close(s);
  };
  const signals = (on: boolean) => {
    for (const s of ['SIGTERM', 'SIGINT'] as const) (on ? process.on : process.off).call(process, s, onSignal);
    (on ? process.on : process.off).call(process, 'SIGHUP', onHangup);
  };
  // The handlers come first: a signal that arrives once the socket exists finds them there
  // (SIGHUP's default action would end the process, SIGTERM's would leave the socket behind).
  signals(true);
  try {
    daemon = serveVhostUser(device, { socket: opts.socketPath ?? { fd: opts.fd! }, logger: daemonLog });
  } catch (e) {
    signals(false);
    // The socket path or the fd (checked here: an open socket), or the addon.
    if (e instanceof VhostUserError) throw new CliError(EXIT_RUNTIME, flagWording(e.message));
    throw e;
  }
  if (device instanceof NetDevice && netPort !== undefined) {
    const port = netPort;
    const what = port instanceof TapFramePort ? `TAP ${port.name}` : 'the switch connection';
    connectPorts(device.port, port, {
      a: (up) => {
        device.setLink(up);
        if (!up) logger.warn({ switch: opts.switch, tap: opts.tap, reason: port.endReason }, `${what} ended (${port.endReason}): link down`);
      },
      // Once the guest is live its offload features are known: the kernel may then hand over
      // frames with partial checksums and unsegmented TCP/UDP (TUNSETOFFLOAD), as QEMU's tap does.
      b: (up) => {
        if (!up || !(port instanceof TapFramePort)) return;
        try {
          const set = port.setReceiveOffloads(device.port.accepts);
          logger.info({ tap: port.name, receiveOffloads: set }, `TAP ${port.name}: the kernel may pass ${Object.entries(set).filter(([, v]) => v).map(([k]) => k).join(', ') || 'no'} offloads to the guest`);
        } catch (e) {
          logger.warn({ tap: port.name, reason: describeError(e) }, `TAP ${port.name}: TUNSETOFFLOAD failed (${describeError(e)}); frames arrive whole`);
        }
      },
    });
  }
  logStart();
  if (opts.socketPath !== undefined) logger.info({ socketPath: opts.socketPath }, `listening on ${opts.socketPath}`);
  let hybrid: HybridVsock | undefined;
  if (device instanceof VsockDevice) {
    try {
      hybrid = await serveHybridVsock(device, { udsPath: opts.udsPath!, log: (m, fields) => logger.info(fields ?? {}, m) });
    } catch (e) {
      await daemon.close('hybrid vsock socket failed');
      signals(false);
      throw new CliError(EXIT_RUNTIME, `cannot listen on --uds-path ${opts.udsPath}: ${describeError(e)}`);
    }
    logger.info({ udsPath: opts.udsPath, guestCid: opts.guestCid }, `hybrid vsock: guest CID ${opts.guestCid}; host programs connect to ${opts.udsPath} (CONNECT <port>); guest connections to port P go to ${opts.udsPath}_P`);
  }
  const end = await daemon.closed;
  hybrid?.close();
  signals(false);
  netPort?.close();
  // Exit 1 when the run saw a violation (in either mode): a conformance run can check $?.
  let code = violations > 0 ? EXIT_VIOLATIONS : EXIT_OK;
  if (recorder !== undefined) {
    try {
      const report = recorder.report();
      // The net device's frame counters ride along (a guest test checks frames really moved).
      if (device instanceof NetDevice) report.counters = { ...device.counters, ...pairCounters(device), ...(netPort instanceof TapFramePort ? tapCounters(netPort) : {}), ...(netPort instanceof StreamFramePort ? { switchSendDropped: netPort.dropped } : {}) };
      // The fs device's request counters and the FUSE session's (a guest test checks requests were served).
      if (device instanceof FsDevice) report.counters = { ...device.type.stats, ...prefixed('fuse', device.server.stats), ...(provider instanceof MemoryFs ? { memoryBytes: provider.bytesUsed, memoryNodes: provider.nodeCount } : {}), ...(provider instanceof HostDirFs ? { ...prefixed('hostDir', provider.stats), hostDirNodes: provider.counts.nodes, hostDirHandles: provider.counts.handles } : {}), ...opCounters(device.server.opStats) };
      writeNewReport(opts.report, report);
      logger.info({ report: opts.report }, `wrote the run report (verdicts by clause) to ${opts.report}`);
    } catch (e) {
      logger.error({ report: opts.report, reason: describeError(e) }, describeError(e));
      code = EXIT_RUNTIME;
    }
  }
  // The shared directory's fds (after the report, which reads its counters).
  if (provider instanceof HostDirFs) provider.close();
  const socketFile = end.socketFile;
  const reason = signal === undefined ? end.reason : undefined;
  const socketNote =
    socketFile === undefined ? '' : socketFile === 'removed' ? '; socket removed' : socketFile === 'replaced' ? `; ${opts.socketPath} is no longer this server's socket, left alone` : socketFile === 'gone' ? '' : `; socket ${socketFile}`;
  logger.info(
    { event: 'stop', signal, reason, violations, knownDeviations, warnings, exitCode: code, socketFile },
    // The counts are the conformance monitor's verdicts on the peers (JSON `violations`,
    // `knownDeviations`, `warnings`), not serve's own log warnings (an image's unseen tail,
    // a --seg-max longer than the queue), which the line says nothing about.
    `${signal !== undefined ? `${signal}: ` : ''}shutting down${reason ? ` (${reason})` : ''}; monitor verdicts in this run: ${plural(violations, 'violation')}, ` +
      `${knownDeviations > 0 ? `${plural(knownDeviations, 'known deviation')}, ` : ''}${plural(warnings, 'warning')}; exit ${code}${socketNote}`,
  );
  return code;
}

/** The net device's frames per queue pair for the run report: txFramesPair1, rxFramesPair1, txFramesPair2, ... (pairs counted from 1 as the spec's queue names). */
function pairCounters(device: NetDevice): Record<string, number> {
  const c = device.type.pairCounters;
  const out: Record<string, number> = {};
  for (let p = 0; p < c.txFrames.length; p++) {
    out[`txFramesPair${p + 1}`] = c.txFrames[p];
    out[`rxFramesPair${p + 1}`] = c.rxFrames[p];
  }
  return out;
}

/** A TAP port's counters for the run report, named tapRxFrames, tapTxFrames, ... */
function tapCounters(port: TapFramePort): Record<string, number> {
  return Object.fromEntries(Object.entries(port.counters).map(([k, v]) => [`tap${k[0].toUpperCase()}${k.slice(1)}`, v]));
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
