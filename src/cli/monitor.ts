/**
 * `virtio-ts monitor --listen PATH --connect PATH [--json] [--report FILE]`: the monitor proxy
 * (src/proxy/) between a vhost-user front-end and back-end. Flags and output only.
 *
 * stdout: each verdict as it is made (one line of text, or one JSON object per line with
 * --json); at the end (SIGTERM, SIGINT) the summary (text only). stderr: sessions and notes.
 * Exit codes (exit-codes.ts): 0 no violation but catalogued known deviations, 1 violations,
 * 2 usage error, 3 the listening path cannot be used, the report file exists, no addon.
 */
import { native } from '../native/index.js';
import { Monitor } from '../monitor/monitor.js';
import { loadDeviations } from '../node/deviations.js';
import { MonitorProxy } from '../proxy/proxy.js';
import { ProxyError } from '../proxy/errors.js';
import { buildMonitorReport, formatMonitorReport, formatProxyVerdict } from '../proxy/report.js';
import type { Command } from 'commander';
import { CliError, EXIT_CODES_HELP, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_VIOLATIONS } from './exit-codes.js';
import { intInRange } from './args.js';
import { checkNewReport, writeNewReport } from './report-file.js';

/** The flags of `virtio-ts monitor`, as commander parses them. */
export interface MonitorCliOptions {
  listen?: string;
  connect?: string;
  json?: boolean;
  report?: string;
  pollMinMs?: number;
  pollMaxMs?: number;
  backendWaitMs?: number;
  quiet?: boolean;
}

interface Writable {
  write(s: string): unknown;
}

/** Runs the command until SIGTERM or SIGINT (or `stop` aborts); returns its exit code. */
export async function runMonitorCli(opts: MonitorCliOptions, out: Writable, err: Writable, stop?: AbortSignal): Promise<number> {
  try {
    return await monitor(opts, out, err, stop);
  } catch (e) {
    if (!(e instanceof CliError)) throw e;
    err.write(`virtio-ts monitor: ${e.message}\n`);
    return e.code;
  }
}

async function monitor(opts: MonitorCliOptions, out: Writable, err: Writable, stop?: AbortSignal): Promise<number> {
  if (opts.listen === undefined) throw new CliError(EXIT_USAGE, 'give --listen PATH: the unix socket the front-end (QEMU -chardev socket,path=PATH) connects to');
  if (opts.connect === undefined) throw new CliError(EXIT_USAGE, "give --connect PATH: the back-end's listening unix socket");
  if ((opts.pollMinMs ?? 1) > (opts.pollMaxMs ?? 50)) throw new CliError(EXIT_USAGE, `--poll-min-ms ${opts.pollMinMs ?? 1} is above --poll-max-ms ${opts.pollMaxMs ?? 50}`);
  checkNewReport('monitor', opts.report);
  try {
    native();
  } catch (e) {
    throw new CliError(EXIT_RUNTIME, `monitor needs the native addon (unix sockets with fd passing, mmap): ${e instanceof Error ? e.message : String(e)}`);
  }
  const started = new Date();
  const target = { listen: opts.listen, connect: opts.connect };
  let proxy: MonitorProxy;
  try {
    proxy = new MonitorProxy({
      ...target,
      monitor: new Monitor({ mode: 'tolerant', deviations: loadDeviations() }),
      onVerdict: (v) => out.write(opts.json ? `${JSON.stringify(v)}\n` : `${formatProxyVerdict(v)}\n`),
      log: opts.quiet ? undefined : (level, m) => err.write(`virtio-ts monitor: ${level === 'warn' ? 'warning: ' : ''}${m}\n`),
      ...(opts.pollMinMs !== undefined ? { pollMinMs: opts.pollMinMs } : {}),
      ...(opts.pollMaxMs !== undefined ? { pollMaxMs: opts.pollMaxMs } : {}),
      ...(opts.backendWaitMs !== undefined ? { backendWaitMs: opts.backendWaitMs } : {}),
    });
  } catch (e) {
    if (e instanceof ProxyError) throw new CliError(EXIT_RUNTIME, e.message);
    throw e;
  }
  await new Promise<void>((res) => {
    const done = () => {
      for (const s of ['SIGTERM', 'SIGINT'] as const) process.off(s, done);
      stop?.removeEventListener('abort', done);
      res();
    };
    for (const s of ['SIGTERM', 'SIGINT'] as const) process.on(s, done);
    stop?.addEventListener('abort', done);
  });
  proxy.close();
  const report = buildMonitorReport(proxy, target, started);
  writeNewReport(opts.report, report);
  if (!opts.json) out.write(formatMonitorReport(report));
  return report.summary.clean ? EXIT_OK : EXIT_VIOLATIONS;
}

/** Adds `virtio-ts monitor` to the program (its one registration line in main.ts). */
export function registerMonitor(program: Command, out: Writable): void {
  program
    .command('monitor')
    .description('a vhost-user proxy between a front-end (QEMU, DPDK, ...) and a back-end (qemu-storage-daemon, virtiofsd, virtio-ts serve): forwards everything unchanged and reports every clause either side breaks')
    .option('--listen <path>', 'the unix socket the front-end connects to (a stale socket there is replaced; anything else is refused, untouched)')
    .option('--connect <path>', "the back-end's listening unix socket (connected once per front-end connection)")
    .option('--json', 'print each verdict as one JSON object per line (nothing else on stdout)')
    .option('--report <file>', 'at the end, write the JSON report (schema virtio-ts/monitor-report@1) to this new file (an existing file is not overwritten)')
    .option('--poll-min-ms <ms>', 'shortest interval between two looks at the rings, used while a quarter of a ring or more moves between looks (default 1)', intInRange('--poll-min-ms', 0, 1000))
    .option('--poll-max-ms <ms>', 'longest interval between two looks, used while the rings are still or move slowly (default 50)', intInRange('--poll-max-ms', 1, 10_000))
    .option('--backend-wait-ms <ms>', 'how long a front-end is held while the back-end cannot be reached (restarting) before it is closed (default 30000)', intInRange('--backend-wait-ms', 0, 3_600_000))
    .option('--quiet', 'no session lines on stderr')
    .addHelpText(
      'after',
      `
Signals:
  SIGTERM, SIGINT  end every session, remove the socket file this process made,
                   print the summary (and write --report), exit 0 (1 if a
                   violation other than a catalogued known deviation was seen)
${EXIT_CODES_HELP}`,
    )
    .action(async (opts: MonitorCliOptions) => {
      process.exitCode = await runMonitorCli(opts, out, process.stderr);
    });
}
