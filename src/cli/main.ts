#!/usr/bin/env node
/**
 * The `virtio-ts` command. Exit codes (exit-codes.ts, the same for every command): 0 ok,
 * 1 violations found, 2 usage error, 3 runtime failure, 70 internal error.
 *
 * stdout closed early by its reader (`virtio-ts conformance | head -1`): the rest of the
 * output is dropped quietly (no EPIPE stack trace) and the command exits with the code it
 * would have had.
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { runDemo } from './demo.js';
import { runConformance } from './conformance.js';
import { PROBE_TYPE_NAMES, runProbeCli } from './probe.js';
import { capabilities, runServe } from './serve.js';
import { registerMonitor } from './monitor.js';
import { runSwitch } from './switch.js';
import { clauseInfo } from '../monitor/catalogue.js';
import { CliError, EXIT_CODES_HELP, EXIT_INTERNAL, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, errnoOf } from './exit-codes.js';
import { MAX_NUM_QUEUES, intInRange, queueSize } from './args.js';

export { EXIT_OK, EXIT_VIOLATIONS, EXIT_USAGE, EXIT_RUNTIME, EXIT_INTERNAL } from './exit-codes.js';

/**
 * process.stdout as the commands write to it. Once the reader has gone (EPIPE), writes are
 * dropped: a pipe that closes early (`| head -1`) is the reader's choice, not a failure.
 */
let stdoutClosed = false;
const stdout = {
  write(s: string): boolean {
    if (stdoutClosed) return false;
    return process.stdout.write(s);
  },
};
process.stdout.on('error', (err: unknown) => {
  const code = errnoOf(err);
  if (code === 'EPIPE' || code === 'ERR_STREAM_DESTROYED') {
    stdoutClosed = true;
    return;
  }
  stdoutClosed = true;
  process.stderr.write(`virtio-ts: cannot write to stdout: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = EXIT_RUNTIME;
});
// stderr closed by its reader too (`virtio-ts ... 2>&1 | head -1`): messages are dropped, the
// exit code stays the command's.
process.stderr.on('error', () => undefined);

function clauseId(value: string): string {
  if (clauseInfo(value) === undefined) throw new InvalidArgumentError(`"${value}" is not a clause id of the catalogue (try: virtio-ts conformance)`);
  return value;
}

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('virtio-ts')
    .description('The OASIS VIRTIO specification in TypeScript: devices, drivers, transports and a conformance monitor.')
    .version('0.1.0')
    .showHelpAfterError('(virtio-ts --help, or virtio-ts <command> --help, for usage)')
    .addHelpText('after', EXIT_CODES_HELP)
    .exitOverride();

  program
    .command('demo')
    .description('run an entropy driver and device over the loopback transport: negotiation, traffic and the conformance verdicts')
    .option('--bytes <n>', 'random bytes the driver reads (1 to 16777216)', intInRange('--bytes', 1, 1 << 24), 4096)
    .addOption(new Option('--mode <mode>', 'loopback delivery').choices(['sync', 'async']).default('sync'))
    .addOption(new Option('--ring <format>', 'virtqueue format the driver negotiates').choices(['split', 'packed']).default('packed'))
    .option('--misbehave <clause-id>', 'make the driver or device break this clause on purpose and show the verdict', clauseId)
    .option('--list-misbehaviours', 'list the clauses --misbehave can break')
    .addOption(new Option('--strict', 'strict mode, the default: a broken rule -> DEVICE_NEEDS_RESET / driver gives up').conflicts('tolerant'))
    .option('--tolerant', 'record verdicts and go on, instead of strict mode (DEVICE_NEEDS_RESET / driver gives up)')
    .option('--json', 'print one JSON object instead of text')
    .action(async (opts) => {
      process.exitCode = await runDemo(opts, stdout);
    });

  program
    .command('serve')
    .description('serve a device to a vhost-user front-end (QEMU) on a unix socket')
    .argument('<type>', 'device type: rng, blk, net, vsock or fs')
    .option('--socket-path <path>', 'listen on this unix socket path (an existing socket is replaced only when stale: connect refused; anything else there is refused, untouched)')
    .option('--fd <n>', 'serve an already connected socket fd', intInRange('--fd', 0, 1 << 20))
    .option('--guest-cid <n>', 'vsock: the guest\'s CID (3 to 4294967294)', intInRange('--guest-cid', 3, 0xfffffffe))
    .option('--uds-path <path>', 'vsock: hybrid vsock unix socket: host programs connect here and write "CONNECT <port>\\n"; a guest connection to host port P goes to <path>_<P>')
    .option('--print-capabilities', 'print the back-end capability JSON (vhost-user.json) and exit')
    .option('--tag <tag>', 'fs: the tag the guest mounts (mount -t virtiofs TAG /mnt; give QEMU the same: vhost-user-fs-pci,tag=TAG), 1 to 36 bytes')
    .option('--memory', 'fs: serve an in-memory file system (empty at start, gone at exit)')
    .option('--shared-dir <dir>', 'fs: serve this host directory (nothing outside it is reachable from the guest)')
    .option('--direct-io', 'fs --shared-dir: the guest keeps no page cache of file data (FOPEN_DIRECT_IO, as virtiofsd -o cache=none)')
    .option('--xattr', 'fs: serve the guest\'s extended attributes (user.* names; as virtiofsd -o xattr). Costs a GETXATTR(security.capability) round trip before the first write of every file')
    .option('--no-xattr', 'fs: no extended attributes (the default, as virtiofsd\'s no_xattr): the guest\'s xattr requests get ENOSYS and Linux stops sending them')
    .option('--posix-locks', 'fs: fcntl locks held on the host (open file description locks, seen by host programs; as virtiofsd -o posix_lock). Costs a FLUSH round trip at every close')
    .option('--no-posix-locks', 'fs: fcntl locks kept by the guest\'s kernel (the default, as virtiofsd\'s no_posix_lock): closes need no FLUSH (FOPEN_NOFLUSH)')
    .option('--image <file>', 'blk: the disk image, raw (a regular file or a block device node)')
    .option('--blk-file <file>', 'blk: the same as --image (the name vhost-user.rst gives it)')
    .addOption(new Option('--format <format>', 'blk: the image format. Without it a qcow2, vmdk, vdi, vhdx, vhd, qed, parallels or bochs image is refused; "raw" says the file is raw and skips that probe').choices(['raw']))
    .option('--read-only', 'blk: offer the disk read-only (VIRTIO_BLK_F_RO); fs: refuse every change (EROFS)')
    .option('--num-queues <n>', `blk: request queues (1 to ${MAX_NUM_QUEUES}, default 1); fs: request queues (num_request_queues, 1 to 64; QEMU: vhost-user-fs-pci,num-request-queues=N)`, intInRange('--num-queues', 1, MAX_NUM_QUEUES))
    .option('--queue-size <n>', 'largest queue size the front-end may set: a power of two from 2 to 32768 (default 1024, QEMU\'s maximum)', queueSize)
    .option('--seg-max <n>', 'blk: seg_max to advertise (default 126: a request of seg_max + 2 descriptors fits QEMU\'s default queue size 128; larger lets Linux build chains longer than such a queue)', intInRange('--seg-max', 1, 32766))
    .option('--size-max <bytes>', 'blk: size_max to advertise, the largest segment in bytes (default 1 MiB; 4096 makes every page its own segment)', intInRange('--size-max', 512, 0x7fffffff))
    .addOption(
      new Option('--io <mode>', 'blk: where disk I/O runs. auto: reads already in the page cache on the event loop (preadv2 RWF_NOWAIT), the rest and all writes on the thread pool; async: all on the thread pool; sync: all on the event loop (a slow disk stalls the server)')
        .choices(['auto', 'async', 'sync'])
        .default('auto'),
    )
    .option('--mac <mac>', 'net: the MAC address (default: a random locally administered one; give QEMU the same with virtio-net-pci,mac=...)')
    .option('--switch <socket>', 'net: join the `virtio-ts switch` on this unix socket (QEMU -netdev stream framing)')
    .option('--tap <ifname>', 'net: a TAP interface as the back-end')
    .option('--mtu <n>', 'net: offer VIRTIO_NET_F_MTU with this mtu (68 to 65535)', intInRange('--mtu', 68, 65535))
    .option('--queues <n>', 'net: queue pairs (1 to 16, default 1; QEMU: -netdev vhost-user,queues=N and virtio-net-pci,mq=on)', intInRange('--queues', 1, 16))
    .addOption(new Option('--strict', 'stop on any violation: a broken rule by the guest driver -> device error (DEVICE_NEEDS_RESET); for conformance runs').conflicts('tolerant'))
    .option('--tolerant', 'the default, fit to run a production VM: a servable violation is logged and served; an unservable one -> device error')
    .addOption(new Option('--log-level <level>', 'log level on stderr').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'))
    .option('--report <file>', 'at shutdown, write the verdicts of the run grouped by clause (JSON, schema virtio-ts/run-report@1; serve net adds its frame counters) to this new file (an existing file is not overwritten); virtio-ts conformance --html renders it')
    .addOption(new Option('--log-format <format>', 'log format on stderr: json (one object per line) or pretty (human-readable). Default: pretty when stderr is a terminal, else json').choices(['json', 'pretty']))
    .addHelpText(
      'after',
      `
Signals:
  SIGTERM, SIGINT  close the connection, remove the socket file this process
                   made, log a shutdown line, exit 0 (1 if a violation was
                   logged during the run)
  SIGHUP           reload. blk: measure --image again (resized in place, e.g.
                   \`truncate -s 96M disk.img\`, or a grown block device); a new
                   size becomes the disk's capacity live and the guest is told
                   (configuration change notification). A shrink is applied
                   with a warning: requests past the new end fail with IOERR.
                   Each resize is logged. rng: nothing to reload.
${EXIT_CODES_HELP}`,
    )
    .action(async (type: string, opts) => {
      process.exitCode = await runServe(type, opts, stdout, process.stderr);
    });

  program
    .command('conformance')
    .description('print the coverage of the clause catalogue (795 normative statements of VIRTIO 1.4), or write it as an HTML report')
    .option('--json', 'print an array of {id, side, level, status, reason, tests}')
    .option('--part <part>', 'only this part (basic, split, packed, init, pci, mmio, reserved, net, blk, console, entropy, vsock, fs)')
    .option('--status <status>', 'only clauses with this status (enforced, tested, not-checkable, unsupported, open)')
    .option('--list', 'list every clause (id, status, summary) instead of the summary table')
    .option('--summary', 'only the enforced-of-checkable table per part and side (goal: 90 % per implemented part); with --json as an object')
    .option('--html <file>', 'write a browsable HTML report to this new file: coverage bars, each clause\'s spec text, status, reason, conditions, check sites and negative tests')
    .option('--report <file>', 'a run report to show (serve/monitor/probe --report, or a serve --log-format json log): its verdicts grouped by clause; repeatable', (v: string, prev: string[] | undefined) => [...(prev ?? []), v])
    .action((opts) => {
      process.exitCode = runConformance(opts, stdout);
    });

  program
    .command('switch')
    .description('an Ethernet switch on a unix stream socket (QEMU -netdev stream framing) that serve net processes and VMs join, with unix datagram (-netdev dgram) and TAP ports')
    .option('--socket <path>', 'listen on this unix socket path (must not exist)')
    .option('--dgram <local,remote>', 'a port on a unix datagram socket bound to LOCAL, sending to REMOTE (QEMU -netdev dgram: local.path=REMOTE,remote.path=LOCAL); repeatable', (v: string, prev: string[] | undefined) => [...(prev ?? []), v])
    .option('--tap <ifname>', 'a port on this TAP interface (made if absent; bring it up yourself); repeatable', (v: string, prev: string[] | undefined) => [...(prev ?? []), v])
    .option('--ageing <seconds>', 'forget a learned address after this long without a frame from it (default 300)', intInRange('--ageing', 1, 86_400))
    .addOption(new Option('--log-level <level>', 'log level on stderr').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'))
    .addOption(new Option('--log-format <format>', 'log format on stderr').choices(['json', 'pretty']))
    .action(async (opts) => {
      process.exitCode = await runSwitch(opts, process.stderr);
    });

  program
    .command('probe')
    .description('drive a vhost-user back-end through a scripted session (and with --hostile, fault injection) and report, rule by rule and clause by clause, what it did')
    .option('--socket-path <path>', "the back-end's listening unix socket")
    .addOption(new Option('--type <type>', 'the device type behind the socket (vhost-user does not say)').choices(PROBE_TYPE_NAMES))
    .option('--hostile', 'also inject faults: malformed messages, bad memory tables, bad rings and chains, floods, disconnects')
    .option('--case <id>', 'run only this hostile case (repeatable; see --list-cases)', (v: string, prev: string[] | undefined) => [...(prev ?? []), v])
    .option('--json', 'print the report as one JSON object (schema virtio-ts/probe-report@1)')
    .option('--report <file>', 'also write the JSON report to this new file (an existing file is not overwritten)')
    .option('--wait-ms <ms>', 'the bound of each wait for the back-end (default 5000)', intInRange('--wait-ms', 1, 600_000))
    .option('--settle-ms <ms>', 'how long to watch for a reaction that has no event of its own (default 500)', intInRange('--settle-ms', 0, 60_000))
    .option('--timeout <seconds>', 'the bound of the whole run (default 300); cases not reached are reported skipped', intInRange('--timeout', 1, 86_400))
    .option('--write', 'blk: also write a sector back with its own bytes and read it back (off by default: the disk is not changed)')
    .option('--list-cases', 'list the hostile cases and exit')
    .option('--list-rules', 'list the vhost-user rules checked (ids, vhost-user.rst sections) and exit')
    .option('--verbose', 'print each step on stderr')
    .addHelpText('after', EXIT_CODES_HELP)
    .action(async (opts) => {
      process.exitCode = await runProbeCli(opts, stdout, process.stderr);
    });

  registerMonitor(program, stdout);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  // vhost-user.rst, --print-capabilities: "Other options and arguments should be ignored, and
  // the back-end program should not perform its normal function." So it answers before any
  // other flag is parsed (or refused).
  const [command, type, ...rest] = argv.slice(2);
  if (command === 'serve' && (type === 'rng' || type === 'blk' || type === 'net' || type === 'vsock' || type === 'fs') && rest.includes('--print-capabilities')) {
    stdout.write(JSON.stringify(capabilities(type)) + '\n');
    return EXIT_OK;
  }
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version exit 0; everything else commander rejects is a usage error.
      return err.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    }
    if (err instanceof CliError) {
      process.stderr.write(`virtio-ts: ${err.message}\n`);
      return err.code;
    }
    throw err;
  }
  return typeof process.exitCode === 'number' ? process.exitCode : EXIT_OK;
}

main(process.argv).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`virtio-ts: internal error (a bug; please report it): ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = EXIT_INTERNAL;
  },
);
