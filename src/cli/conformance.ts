/**
 * `virtio-ts conformance`: coverage of the clause catalogue, per part and side, or as JSON; the
 * enforced-of-checkable metric (issue 17's goal: at least 90 % per implemented part); and with
 * `--html FILE` a browsable report (conformance-html.ts) that can also show the verdicts of real
 * runs (`--report FILE`, repeatable: what `serve --report`, `monitor --report` and
 * `probe --report` write, told apart by their `schema`, or a `serve --log-format json` log).
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { allClauses, partOf, type ClauseEntry, type CoverageStatus } from '../monitor/catalogue.js';
import { RUN_REPORT_SCHEMA, RunReportRecorder, type RunReport } from '../monitor/run-report.js';
import type { Verdict } from '../monitor/monitor.js';
import { PROBE_REPORT_SCHEMA, type ProbeReport } from '../probe/report.js';
import { MONITOR_REPORT_SCHEMA, type MonitorReport } from '../proxy/report.js';
import type { ProxyVerdict } from '../proxy/proxy.js';
import { clauseInfo } from '../monitor/catalogue.js';
import { CliError, EXIT_RUNTIME, EXIT_USAGE, describeError } from './exit-codes.js';
import { renderConformanceHtml, type SpecText } from './conformance-html.js';

const STATUSES: CoverageStatus[] = ['enforced', 'tested', 'not-checkable', 'unsupported', 'open'];
/** The spec's parts, in the order the report lists them. */
export const PARTS = ['basic', 'init', 'split', 'packed', 'reserved', 'pci', 'mmio', 'blk', 'console', 'entropy', 'net', 'vsock', 'fs'];
/**
 * The parts the project implements, whose checkable rows must be at least 90 % enforced (issue
 * 17). A part not listed counts as implemented as soon as one of its clauses is enforced (a
 * device type as it lands).
 */
export const IMPLEMENTED_PARTS = ['basic', 'init', 'split', 'packed', 'reserved', 'blk', 'console', 'entropy', 'mmio', 'pci'];
/** The goal: enforced / checkable, per implemented part. */
export const ENFORCED_GOAL = 0.9;

export interface ConformanceOptions {
  json?: boolean;
  part?: string;
  status?: string;
  list?: boolean;
  /** Only the enforced-of-checkable table (with --json: its object). */
  summary?: boolean;
  /** Write the HTML report to this file. */
  html?: string;
  /** Run reports to show (serve/monitor/probe --report files, serve JSON logs). */
  report?: string[];
}

interface Writable {
  write(s: string): unknown;
}

/** The JSON form: one object per spec clause (all 795 unless filtered). */
export function conformanceJson(clauses: readonly ClauseEntry[]): object[] {
  return clauses.map((c) => ({
    id: c.id,
    side: c.side,
    level: c.level,
    status: c.status,
    reason: c.reason,
    tests: c.tests,
    checks: c.checks,
    summary: c.summary,
    declared: c.declared,
    sites: c.sites,
    negatives: c.negatives,
    conditions: c.conditions,
  }));
}

/** One row of the enforced-of-checkable metric: a part and a side, or a part overall (`side: 'both'`). */
export interface CoverageRow {
  part: string;
  side: 'device' | 'driver' | 'both';
  enforced: number;
  tested: number;
  notCheckable: number;
  unsupported: number;
  open: number;
  total: number;
  /** enforced + tested + open: the rows that are neither not-checkable nor unsupported. */
  checkable: number;
  /** enforced / checkable, 0 to 1; null when nothing is checkable. */
  ratio: number | null;
  /** Whether the part is implemented (IMPLEMENTED_PARTS, or one of its clauses is enforced). */
  implemented: boolean;
  /** On `both` rows of implemented parts: ratio >= ENFORCED_GOAL. Null elsewhere. */
  goalMet: boolean | null;
}

/** The metric's JSON (`conformance --summary --json`, and in the HTML report). */
export interface CoverageSummary {
  goal: number;
  rows: CoverageRow[];
  /** The implemented parts that miss the goal. */
  missed: string[];
}

function row(part: string, side: CoverageRow['side'], clauses: readonly ClauseEntry[], implemented: boolean): CoverageRow {
  const n = (s: CoverageStatus) => clauses.filter((c) => c.status === s).length;
  const enforced = n('enforced');
  const checkable = enforced + n('tested') + n('open');
  const ratio = checkable === 0 ? null : enforced / checkable;
  return {
    part,
    side,
    enforced,
    tested: n('tested'),
    notCheckable: n('not-checkable'),
    unsupported: n('unsupported'),
    open: n('open'),
    total: clauses.length,
    checkable,
    ratio,
    implemented,
    goalMet: side === 'both' && implemented ? ratio !== null && ratio >= ENFORCED_GOAL : null,
  };
}

/** Enforced / checkable per part and side and per part overall, for the spec's clauses. */
export function coverageSummary(clauses: readonly ClauseEntry[] = allClauses()): CoverageSummary {
  const spec = clauses.filter((c) => c.spec);
  const rows: CoverageRow[] = [];
  for (const part of PARTS) {
    const inPart = spec.filter((c) => partOf(c.id) === part);
    if (inPart.length === 0) continue;
    const implemented = IMPLEMENTED_PARTS.includes(part) || inPart.some((c) => c.status === 'enforced');
    for (const side of ['device', 'driver'] as const) {
      const s = inPart.filter((c) => c.side === side);
      if (s.length > 0) rows.push(row(part, side, s, implemented));
    }
    rows.push(row(part, 'both', inPart, implemented));
  }
  return { goal: ENFORCED_GOAL, rows, missed: rows.filter((r) => r.goalMet === false).map((r) => r.part) };
}

/** `78.6 %`, or `n/a` when nothing is checkable. */
export function percent(ratio: number | null): string {
  return ratio === null ? 'n/a' : `${(ratio * 100).toFixed(1)} %`;
}

function table(header: string[], rows: string[][], left: number): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((v, i) => (i < left ? v.padEnd(widths[i]) : v.padStart(widths[i]))).join('  ').trimEnd() + '\n';
  return line(header) + line(widths.map((w) => '-'.repeat(w))) + rows.map(line).join('');
}

/** The metric as a text table. */
export function formatCoverageSummary(s: CoverageSummary): string {
  const rows = s.rows.map((r) => [
    r.part,
    r.side,
    String(r.enforced),
    String(r.checkable),
    percent(r.ratio),
    r.goalMet === null ? (r.side === 'both' && !r.implemented ? 'not implemented' : '') : r.goalMet ? 'met' : 'MISSED',
  ]);
  return (
    `Enforced of checkable (checkable = enforced + tested + open), goal >= ${s.goal * 100} % per implemented part:\n` +
    table(['part', 'side', 'enforced', 'checkable', 'enforced/checkable', 'goal'], rows, 2) +
    (s.missed.length > 0 ? `goal missed by: ${s.missed.join(', ')}\n` : 'goal met by every implemented part\n')
  );
}

/** `[off-by-default: ...]`: what limits a clause's checks, for the listing. */
function conditionNote(c: ClauseEntry): string {
  return c.conditions.map((k) => `  [${k.kind}: ${k.note}]`).join('');
}

/** The package's catalogue/spec-text.tsv (dist/src/cli/ -> the package root). */
export const SPEC_TEXT_FILE = new URL('../../../catalogue/spec-text.tsv', import.meta.url);

/** The spec's normative statements (catalogue/spec-text.tsv): id -> text and LaTeX source. */
export function loadSpecText(file: string | URL = SPEC_TEXT_FILE): Map<string, SpecText> {
  const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l.length > 0 && !l.startsWith('#'));
  const out = new Map<string, SpecText>();
  for (const l of lines.slice(1)) {
    const [id, source, text] = l.split('\t');
    if (id && text) out.set(id, { source: source ?? '', text });
  }
  return out;
}

/** A run's verdicts as the report shows them, whatever file they came from. */
export interface LoadedRun {
  file: string;
  /** `run-report` (serve --report), `monitor-report` (monitor --report), `probe-report`, or `serve-log` (a serve JSON log). */
  format: 'run-report' | 'monitor-report' | 'probe-report' | 'serve-log';
  /** The run-report form: monitor reports and serve logs are converted to it; absent for probe reports. */
  run?: RunReport;
  probe?: ProbeReport;
}

/**
 * Reads a report file, telling its format by its `schema` field (a JSON document) or by its
 * lines (a pino JSON log of `virtio-ts serve`, whose verdict lines carry `verdict`). Anything
 * else is a CliError naming the formats it knows.
 */
export function loadRun(file: string): LoadedRun {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new CliError(EXIT_RUNTIME, `--report ${file}: cannot read it: ${describeError(e)}`);
  }
  const known = `${RUN_REPORT_SCHEMA} (serve --report), ${MONITOR_REPORT_SCHEMA} (monitor --report), ${PROBE_REPORT_SCHEMA} (probe --report), or a serve JSON log (--log-format json)`;
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    doc = undefined;
  }
  if (doc !== undefined) {
    const schema = typeof doc === 'object' && doc !== null ? (doc as { schema?: unknown }).schema : undefined;
    if (schema === RUN_REPORT_SCHEMA && Array.isArray((doc as RunReport).clauses)) return { file, format: 'run-report', run: doc as RunReport };
    if (schema === PROBE_REPORT_SCHEMA && Array.isArray((doc as ProbeReport).checks)) return { file, format: 'probe-report', probe: doc as ProbeReport };
    if (schema === MONITOR_REPORT_SCHEMA && Array.isArray((doc as MonitorReport).clauses) && Array.isArray((doc as MonitorReport).verdicts)) {
      return { file, format: 'monitor-report', run: fromMonitorReport(doc as MonitorReport) };
    }
    throw new CliError(EXIT_USAGE, `--report ${file}: not a report format virtio-ts knows (schema ${JSON.stringify(schema ?? null)}); it reads ${known}`);
  }
  // A serve JSON log: one pino object per line; the verdict lines carry `verdict`.
  const lines = text.split('\n').filter((l) => l.trim().length > 0);
  const objects: Record<string, unknown>[] = [];
  for (const l of lines) {
    let o: unknown;
    try {
      o = JSON.parse(l);
    } catch {
      o = undefined;
    }
    if (typeof o === 'object' && o !== null && 'msg' in o && 'time' in o) objects.push(o as Record<string, unknown>);
  }
  if (lines.length === 0 || objects.length !== lines.length) throw new CliError(EXIT_USAGE, `--report ${file}: not a report format virtio-ts knows; it reads ${known}`);
  // The recorder's clock is the log's: each verdict at its line's time.
  let now = typeof objects[0].time === 'number' ? objects[0].time : 0;
  const start = objects.find((o) => o.event === 'start');
  const mode = typeof start?.mode === 'string' ? start.mode : undefined;
  const rec = new RunReportRecorder('serve', { log: file, type: start?.type, socketPath: start?.socketPath, image: start?.image }, mode, () => new Date(now));
  for (const o of objects) {
    now = typeof o.time === 'number' ? o.time : now;
    const v = o.verdict as Verdict | undefined;
    if (v !== undefined && typeof v === 'object' && typeof v.clause === 'string') rec.record(v);
  }
  return { file, format: 'serve-log', run: rec.report() };
}

/**
 * A `virtio-ts monitor` report in the run-report form: its per-clause counts, and each clause's
 * first and last kept verdict with where the proxy saw it (session, ring, position, message).
 */
export function fromMonitorReport(m: MonitorReport): RunReport {
  const occurrence = (v: ProxyVerdict | undefined, fallback: { message: string; side: 'device' | 'driver'; severity: 'violation' | 'warning' }) => {
    if (v === undefined) return { at: m.started, message: fallback.message, observer: fallback.side === 'device' ? ('driver' as const) : ('device' as const), severity: fallback.severity };
    const context: Record<string, unknown> = { session: v.session };
    if (v.queue !== undefined) context.queue = v.queue;
    if (v.position !== undefined) context.position = v.position;
    if (v.cause !== undefined) context.cause = v.cause;
    if (v.context !== undefined) Object.assign(context, v.context);
    return {
      at: v.time,
      message: v.message,
      observer: v.observer,
      severity: v.severity,
      context,
      ...(v.deviation !== undefined ? { deviation: v.deviation } : {}),
      source: v.side === 'driver' ? 'front-end' : 'back-end',
    };
  };
  const clauses = m.clauses.map((c) => {
    const kept = m.verdicts.filter((v) => v.clause === c.clause && v.side === c.side);
    const entry = {
      clause: c.clause,
      side: c.side,
      level: clauseInfo(c.clause)?.level ?? (c.severity === 'violation' ? 'MUST' : 'SHOULD'),
      count: c.count,
      // Per clause the monitor keeps the first verdict's severity; kept verdicts tell the rest.
      violations: c.severity === 'violation' ? c.count : kept.filter((v) => v.severity === 'violation').length,
      first: occurrence(kept[0], { message: c.first, side: c.side, severity: c.severity }),
    } as RunReport['clauses'][number];
    if (c.count > 1 && kept.length > 1) entry.last = occurrence(kept[kept.length - 1], { message: c.first, side: c.side, severity: c.severity });
    return entry;
  });
  const ended = new Date(Date.parse(m.started) + m.durationMs).toISOString();
  return {
    schema: RUN_REPORT_SCHEMA,
    tool: 'monitor',
    target: { ...m.target, sessions: m.sessions.length },
    started: m.started,
    ended,
    totals: { verdicts: m.summary.total, violations: m.summary.violations, warnings: m.summary.warnings, knownDeviations: m.summary.knownDeviations, clauses: m.clauses.length },
    clauses,
  };
}

/** The runs' verdicts as text: clause by clause, with counts and the first occurrence. */
function formatRuns(runs: readonly LoadedRun[]): string {
  let out = '';
  for (const r of runs) {
    if (r.run) {
      const t = r.run.totals;
      out += `\n${r.file} (${r.format}, ${r.run.tool}, ${r.run.started} to ${r.run.ended}): ${t.verdicts} verdicts on ${t.clauses} clauses (${t.violations} violations, ${t.knownDeviations} of them known deviations, ${t.warnings} warnings)\n`;
      for (const c of [...r.run.clauses].sort((a, b) => b.count - a.count)) out += `  ${String(c.count).padStart(7)}x  ${c.clause.padEnd(44)} ${c.side} ${c.level}: ${c.first.message}\n`;
    } else if (r.probe) {
      const p = r.probe;
      out += `\n${r.file} (${r.format}, ${p.target.type} back-end at ${p.target.socketPath}, ${p.started}): ${p.summary.pass} passed, ${p.summary.fail} failed, ${p.summary.notRun} not run\n`;
      for (const c of p.checks.filter((x) => x.status === 'fail')) out += `  FAIL  ${c.id.padEnd(44)} ${c.detail ?? ''}${c.session ? ` [${c.session}]` : ''}\n`;
      for (const h of (p.hostile ?? []).filter((x) => !x.ok && x.outcome !== 'skipped')) out += `  FAIL  hostile ${h.id}: ${h.outcome}${h.clause ? ` breaks ${h.clause}` : ''}${h.note ? ` - ${h.note}` : ''}\n`;
    }
  }
  return out;
}

/** The package version, for the report's header. */
function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

export function runConformance(opts: ConformanceOptions, out: Writable): number {
  try {
    return conformance(opts, out);
  } catch (e) {
    if (!(e instanceof CliError)) throw e;
    process.stderr.write(`virtio-ts conformance: ${e.message}\n`);
    return e.code;
  }
}

function conformance(opts: ConformanceOptions, out: Writable): number {
  if (opts.part !== undefined && !PARTS.includes(opts.part)) throw new CliError(EXIT_USAGE, `unknown part "${opts.part}" (one of ${PARTS.join(', ')})`);
  if (opts.status !== undefined && !STATUSES.includes(opts.status as CoverageStatus)) {
    throw new CliError(EXIT_USAGE, `unknown status "${opts.status}" (one of ${STATUSES.join(', ')})`);
  }
  // Never overwrite a file the program did not make.
  if (opts.html !== undefined && existsSync(opts.html)) throw new CliError(EXIT_RUNTIME, `--html ${opts.html}: the file exists; conformance writes only a new file (it never overwrites one it did not make)`);
  const runs = (opts.report ?? []).map(loadRun);
  const clauses = allClauses().filter(
    (c) => c.spec && (opts.part === undefined || partOf(c.id) === opts.part) && (opts.status === undefined || c.status === opts.status),
  );
  const summary = coverageSummary(opts.part === undefined ? allClauses() : allClauses().filter((c) => partOf(c.id) === opts.part));
  if (opts.html !== undefined) {
    const html = renderConformanceHtml({
      clauses: allClauses().filter((c) => opts.part === undefined || partOf(c.id) === opts.part || !c.spec),
      summary,
      specText: loadSpecText(),
      runs,
      version: packageVersion(),
      generated: new Date().toISOString(),
      parts: PARTS,
    });
    try {
      writeFileSync(opts.html, html, { flag: 'wx' });
    } catch (e) {
      throw new CliError(EXIT_RUNTIME, `--html ${opts.html}: cannot create it: ${describeError(e)}`);
    }
    out.write(`wrote ${opts.html} (${(Buffer.byteLength(html) / 1024).toFixed(0)} KiB: ${clauses.length} clauses${runs.length > 0 ? `, ${runs.length} run report(s)` : ''})\n`);
    return 0;
  }
  if (opts.summary) {
    out.write(opts.json ? JSON.stringify(summary, null, 2) + '\n' : formatCoverageSummary(summary));
    return 0;
  }
  if (opts.json) {
    out.write(JSON.stringify(conformanceJson(clauses), null, 2) + '\n');
    return 0;
  }
  if (opts.list) {
    for (const c of clauses) {
      const sites = c.sites.length > 0 ? `  {${c.sites.map((x) => `${x.file}:${x.line}${x.uncaught !== undefined ? ' (uncaught by tests)' : ''}`).join(', ')}}` : '';
      out.write(`${c.id.padEnd(48)} ${c.status.padEnd(13)} ${c.level.padEnd(10)} ${c.summary}${c.reason ? `  [${c.reason}]` : ''}${conditionNote(c)}${sites}\n`);
    }
    return 0;
  }
  out.write('VIRTIO 1.4 cs01 normative statements: coverage by virtio-ts\n');
  out.write('enforced = a named check site reports the clause through the monitor + a negative test claims it\n');
  out.write('           (scripts/check-sites.mjs; proved by npm run audit:mutation); tested = test only\n\n');
  const header = ['part', 'side', ...STATUSES, 'total'];
  const rows: string[][] = [];
  const totals = new Map<string, number>();
  for (const part of PARTS) {
    for (const side of ['device', 'driver'] as const) {
      const inPart = clauses.filter((c) => partOf(c.id) === part && c.side === side);
      if (inPart.length === 0) continue;
      const counts = STATUSES.map((s) => inPart.filter((c) => c.status === s).length);
      STATUSES.forEach((s, i) => totals.set(s, (totals.get(s) ?? 0) + counts[i]));
      rows.push([part, side, ...counts.map(String), String(inPart.length)]);
    }
  }
  rows.push(['all', '', ...STATUSES.map((s) => String(totals.get(s) ?? 0)), String(clauses.length)]);
  out.write(table(header, rows, 2));
  out.write('\n' + formatCoverageSummary(summary));
  const limited = clauses.filter((c) => c.status === 'enforced' && c.conditions.length > 0);
  if (limited.length > 0) {
    out.write(`\nEnforced, with conditions or a narrower scope (${limited.length}; catalogue/conditions.tsv):\n`);
    for (const c of limited) for (const k of c.conditions) out.write(`  ${c.id.padEnd(44)} ${k.kind.padEnd(27)} ${k.note}\n`);
  }
  if (runs.length > 0) out.write(`\nVerdicts of the runs (--report), by clause:${formatRuns(runs)}`);
  out.write('\nvirtio-ts conformance --list        every clause with its status, summary, conditions and check sites\n');
  out.write('virtio-ts conformance --json        the same as JSON ({id, side, level, status, reason, tests, sites, negatives, conditions})\n');
  out.write('virtio-ts conformance --summary     the enforced-of-checkable table only (--json: as an object)\n');
  out.write('virtio-ts conformance --html FILE   a browsable report (spec text, check sites, tests; --report FILE adds a run\'s verdicts)\n');
  return 0;
}
