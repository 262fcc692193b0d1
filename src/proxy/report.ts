/**
 * What `virtio-ts monitor` reports at the end (`--report FILE`, and the summary it prints): the
 * sessions it relayed, every verdict with where it was seen, and the verdicts grouped by clause.
 * The JSON shape is stable like the probe's (src/probe/report.ts): `schema` names its version,
 * fields are only ever added under the same version.
 */
import { formatVerdict } from '../monitor/monitor.js';
import type { MonitorProxy, ProxySessionSummary, ProxyVerdict } from './proxy.js';

/** The version of the report's shape. */
export const MONITOR_REPORT_SCHEMA = 'virtio-ts/monitor-report@1';

/** One clause (or vhost-user rule) that was broken, with how often and its first verdict. */
export interface MonitorReportClause {
  clause: string;
  source: 'virtio' | 'vhost-user';
  side: 'driver' | 'device';
  severity: 'violation' | 'warning';
  /** Verdicts on it (kept or not). */
  count: number;
  /** Whether it is a catalogued deviation of a real driver (catalogue/deviations.tsv). */
  known: boolean;
  /** The first verdict's message. */
  first: string;
}

/** The whole report. */
export interface MonitorReport {
  schema: typeof MONITOR_REPORT_SCHEMA;
  /** What was relayed: the path front-ends connect to, the back-end's path. */
  target: { listen: string; connect: string };
  /** ISO time the proxy started. */
  started: string;
  durationMs: number;
  sessions: ProxySessionSummary[];
  /** The verdicts kept, oldest first (`summary.total` counts them all). */
  verdicts: ProxyVerdict[];
  /** The verdicts grouped by clause, most frequent first. */
  clauses: MonitorReportClause[];
  summary: {
    total: number;
    violations: number;
    /** Violations on catalogued known deviations of real drivers (counted in `violations` too). */
    knownDeviations: number;
    warnings: number;
    /** No violation other than known deviations. */
    clean: boolean;
  };
}

/** The report of `proxy` as of now (it may still be running). */
export function buildMonitorReport(proxy: MonitorProxy, target: { listen: string; connect: string }, started: Date): MonitorReport {
  const clauses = new Map<string, MonitorReportClause>();
  let violations = 0;
  let known = 0;
  let warnings = 0;
  for (const v of proxy.verdicts) {
    if (v.severity === 'violation') violations++;
    else warnings++;
    if (v.severity === 'violation' && v.deviation !== undefined) known++;
    const key = `${v.clause}/${v.side}`;
    const c = clauses.get(key);
    if (c !== undefined) c.count++;
    else clauses.set(key, { clause: v.clause, source: v.source, side: v.side, severity: v.severity, count: 1, known: v.deviation !== undefined, first: v.message });
  }
  return {
    schema: MONITOR_REPORT_SCHEMA,
    target,
    started: started.toISOString(),
    durationMs: Date.now() - started.getTime(),
    sessions: proxy.sessions,
    verdicts: [...proxy.verdicts],
    clauses: [...clauses.values()].sort((a, b) => b.count - a.count || a.clause.localeCompare(b.clause)),
    summary: { total: proxy.total, violations, knownDeviations: known, warnings, clean: violations === known },
  };
}

/** One verdict on one line, with where it was seen (the live output without --json). */
export function formatProxyVerdict(v: ProxyVerdict): string {
  const where = [`session ${v.session}`];
  if (v.queue !== undefined) where.push(`ring ${v.queue}`);
  if (v.position !== undefined) where.push(Object.entries(v.position).map(([k, x]) => `${k} ${String(x)}`).join(' '));
  if (v.cause !== undefined) where.push(v.cause);
  return `${formatVerdict(v)} [${v.side === 'driver' ? 'front-end' : 'back-end'}; ${where.join('; ')}]`;
}

/** The report as text, for a person: the sessions, the clauses broken, the totals. */
export function formatMonitorReport(r: MonitorReport): string {
  const out: string[] = [`virtio-ts monitor: ${r.target.listen} -> ${r.target.connect}, ${r.sessions.length} session(s) in ${(r.durationMs / 1000).toFixed(1)} s`];
  for (const s of r.sessions) {
    const rings = s.rings.map((x) => `ring ${x.index} ${x.format}/${x.size}: ${x.available} available, ${x.used} used${x.unseen ? `, ${x.unseen} not seen in time` : ''}`).join('; ');
    out.push(`  session ${s.id}: ${s.messages.frontEnd} requests, ${s.messages.backEnd} replies, ${s.messages.channel} on the back-end channel; ${rings || 'no ring watched'}${s.reason ? `; ended: ${s.reason}` : ''}`);
    for (const n of s.notes) out.push(`    note: ${n}`);
  }
  if (r.clauses.length > 0) {
    out.push('', 'Clauses broken:');
    for (const c of r.clauses) out.push(`  ${c.severity === 'violation' ? 'VIOLATION' : 'WARNING  '} ${c.clause} by the ${c.side === 'driver' ? 'front-end (driver)' : 'back-end (device)'}: ${c.count}x${c.known ? ' [known deviation]' : ''} - ${c.first}`);
  }
  const s = r.summary;
  out.push('', `${s.clean ? 'CLEAN' : 'VIOLATIONS'}: ${s.violations} violation(s) (${s.knownDeviations} known deviation(s)), ${s.warnings} warning(s)`);
  return out.join('\n') + '\n';
}
