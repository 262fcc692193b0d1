#!/usr/bin/env node
/**
 * The `virtio-ts` command. Exit codes (design.md CLI contract): 0 ok, 1 verdicts of level
 * violation found, 2 usage error.
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { runDemo } from './demo.js';
import { runConformance } from './conformance.js';
import { runServe } from './serve.js';
import { clauseInfo } from '../conformance/catalogue.js';

export const EXIT_OK = 0;
export const EXIT_VIOLATIONS = 1;
export const EXIT_USAGE = 2;

function positiveInt(name: string, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n <= 0 || n > max) throw new InvalidArgumentError(`${name} must be a whole number from 1 to ${max}`);
    return n;
  };
}

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
    .showHelpAfterError()
    .exitOverride();

  program
    .command('demo')
    .description('run an entropy driver and device over the loopback transport: negotiation, traffic and the conformance verdicts')
    .option('--bytes <n>', 'random bytes the driver reads', positiveInt('--bytes', 1 << 24), 4096)
    .addOption(new Option('--mode <mode>', 'loopback delivery').choices(['sync', 'async']).default('sync'))
    .addOption(new Option('--ring <format>', 'virtqueue format the driver negotiates').choices(['split', 'packed']).default('packed'))
    .option('--misbehave <clause-id>', 'make the driver or device break this clause on purpose and show the verdict', clauseId)
    .option('--list-misbehaviours', 'list the clauses --misbehave can break')
    .addOption(new Option('--strict', 'strict mode, the default: a broken rule -> DEVICE_NEEDS_RESET / driver gives up').conflicts('tolerant'))
    .option('--tolerant', 'record verdicts and go on, instead of strict mode (DEVICE_NEEDS_RESET / driver gives up)')
    .option('--json', 'print one JSON object instead of text')
    .action(async (opts) => {
      process.exitCode = await runDemo(opts, process.stdout);
    });

  program
    .command('serve')
    .description('serve a device to a vhost-user front-end (QEMU) on a unix socket')
    .argument('<type>', 'device type: rng or blk')
    .option('--socket-path <path>', 'listen on this unix socket path')
    .option('--fd <n>', 'serve an already connected socket fd', (v: string) => positiveInt('--fd', 1 << 20)(v))
    .option('--print-capabilities', 'print the back-end capability JSON and exit')
    .option('--image <file>', 'blk: the disk image (a file or a block device node)')
    .option('--read-only', 'blk: offer the disk read-only')
    .option('--num-queues <n>', 'blk: request queues', positiveInt('--num-queues', 64))
    .option('--queue-size <n>', 'largest queue size the front-end may set (default 1024, QEMU\'s maximum)', positiveInt('--queue-size', 32768))
    .option('--seg-max <n>', 'blk: seg_max to advertise (default 126: a request of seg_max + 2 descriptors fits QEMU\'s default queue size 128; larger lets Linux build chains longer than such a queue)', positiveInt('--seg-max', 32766))
    .addOption(
      new Option('--io <mode>', 'blk: where disk I/O runs. auto: reads already in the page cache on the event loop (preadv2 RWF_NOWAIT), the rest and all writes on the thread pool; async: all on the thread pool; sync: all on the event loop (a slow disk stalls the server)')
        .choices(['auto', 'async', 'sync'])
        .default('auto'),
    )
    .addOption(new Option('--strict', 'strict mode, the default: a broken rule by the guest driver -> DEVICE_NEEDS_RESET').conflicts('tolerant'))
    .option('--tolerant', 'record verdicts and go on (default: strict, DEVICE_NEEDS_RESET)')
    .addOption(new Option('--log-level <level>', 'structured (JSON) log level on stderr').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'))
    .addHelpText(
      'after',
      `
Signals:
  SIGTERM, SIGINT  close the connection, remove the socket file, exit 0
  SIGHUP           reload. blk: measure --image again (resized in place, e.g.
                   \`truncate -s 96M disk.img\`, or a grown block device); a new
                   size becomes the disk's capacity live and the guest is told
                   (configuration change notification). A shrink is applied
                   with a warning: requests past the new end fail with IOERR.
                   Each resize is logged. rng: nothing to reload.`,
    )
    .action(async (type: string, opts) => {
      process.exitCode = await runServe(type, opts, process.stdout, process.stderr);
    });

  program
    .command('conformance')
    .description('print the coverage of the clause catalogue (795 normative statements of VIRTIO 1.4)')
    .option('--json', 'print an array of {id, side, level, status, reason, tests}')
    .option('--part <part>', 'only this part (basic, split, packed, init, pci, mmio, reserved, net, blk, console, entropy, vsock, fs)')
    .option('--status <status>', 'only clauses with this status (enforced, tested, not-checkable, unsupported, open)')
    .option('--list', 'list every clause (id, status, summary) instead of the summary table')
    .action((opts) => {
      process.exitCode = runConformance(opts, process.stdout);
    });

  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version exit 0; everything else commander rejects is a usage error.
      return err.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    }
    process.stderr.write(`virtio-ts: ${err instanceof Error ? err.message : String(err)}\n`);
    return EXIT_USAGE;
  }
  return typeof process.exitCode === 'number' ? process.exitCode : EXIT_OK;
}

main(process.argv).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`virtio-ts: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 70;
  },
);
