/**
 * `virtio-ts probe`: drive a vhost-user back-end and report what it did (src/probe/). Flags
 * and output only; runProbe does the work.
 *
 * Exit codes (exit-codes.ts): 0 clean (every check passed or could not run, every hostile case
 * fine), 1 violations found (a failed check or hostile case), 2 usage error, 3 the back-end
 * cannot be reached at all (no socket, connection refused) or the report file exists.
 */
import { existsSync } from 'node:fs';
import { native } from '../native/index.js';
import { HOSTILE_CASES } from '../probe/hostile.js';
import { PROBE_TYPES, ProbeUsageError, runProbe } from '../probe/probe.js';
import { formatProbeReport } from '../probe/report.js';
import { VHOST_USER_RULES } from '../probe/rules.js';
import { CliError, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_VIOLATIONS } from './exit-codes.js';
import { checkNewReport, writeNewReport } from './report-file.js';

/** The flags of `virtio-ts probe`, as commander parses them. */
export interface ProbeCliOptions {
  socketPath?: string;
  type?: string;
  hostile?: boolean;
  case?: string[];
  json?: boolean;
  report?: string;
  waitMs?: number;
  settleMs?: number;
  timeout?: number;
  write?: boolean;
  listCases?: boolean;
  listRules?: boolean;
  verbose?: boolean;
}

interface Writable {
  write(s: string): unknown;
}

/** The probe's device types, for --help. */
export const PROBE_TYPE_NAMES = Object.keys(PROBE_TYPES);

/** Runs the command; returns its exit code. */
export async function runProbeCli(opts: ProbeCliOptions, out: Writable, err: Writable): Promise<number> {
  try {
    return await probe(opts, out, err);
  } catch (e) {
    if (e instanceof ProbeUsageError) {
      err.write(`virtio-ts probe: ${e.message}\n`);
      return EXIT_USAGE;
    }
    if (!(e instanceof CliError)) throw e;
    err.write(`virtio-ts probe: ${e.message}\n`);
    return e.code;
  }
}

async function probe(opts: ProbeCliOptions, out: Writable, err: Writable): Promise<number> {
  if (opts.listCases) {
    for (const c of HOSTILE_CASES) out.write(`${c.id.padEnd(32)} ${c.class.padEnd(10)} ${c.title}${c.needsRequests ? ' (blk, rng)' : ''}\n`);
    return EXIT_OK;
  }
  if (opts.listRules) {
    for (const r of VHOST_USER_RULES) out.write(`${r.id.padEnd(30)} ${r.text} (vhost-user.rst: ${r.section})\n`);
    return EXIT_OK;
  }
  // Usage errors (exit 2), all before the socket is touched.
  if (opts.socketPath === undefined) throw new CliError(EXIT_USAGE, 'give --socket-path PATH: the back-end\'s listening unix socket');
  if (opts.type === undefined) throw new CliError(EXIT_USAGE, `give --type TYPE: the device type behind the socket (one of ${PROBE_TYPE_NAMES.join(', ')}); vhost-user does not say`);
  // The runtime conditions (exit 3).
  checkNewReport('probe', opts.report);
  try {
    native();
  } catch (e) {
    throw new CliError(EXIT_RUNTIME, `probe needs the native addon (unix sockets with fd passing, memfd, eventfd): ${e instanceof Error ? e.message : String(e)}`);
  }
  if (!existsSync(opts.socketPath)) throw new CliError(EXIT_RUNTIME, `--socket-path ${opts.socketPath}: no such file (is the back-end running?)`);
  const report = await runProbe({
    socketPath: opts.socketPath,
    type: opts.type,
    hostile: opts.hostile === true,
    ...(opts.case !== undefined ? { cases: opts.case } : {}),
    ...(opts.waitMs !== undefined ? { waitMs: opts.waitMs } : {}),
    ...(opts.settleMs !== undefined ? { settleMs: opts.settleMs } : {}),
    ...(opts.timeout !== undefined ? { timeoutMs: opts.timeout * 1000 } : {}),
    write: opts.write === true,
    onProgress: opts.verbose ? (line) => err.write(`probe: ${line}\n`) : undefined,
  });
  const json = writeNewReport(opts.report, report);
  out.write(opts.json ? json : formatProbeReport(report));
  if (!report.target.connected) {
    err.write(`virtio-ts probe: could not connect to the back-end at ${opts.socketPath}: ${report.sessions[0]?.result ?? 'no session'}\n`);
    return EXIT_RUNTIME;
  }
  return report.summary.clean ? EXIT_OK : EXIT_VIOLATIONS;
}
