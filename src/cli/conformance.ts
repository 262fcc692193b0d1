/**
 * `virtio-ts conformance`: coverage of the clause catalogue, per part and side, or as JSON.
 */
import { allClauses, partOf, type ClauseEntry, type CoverageStatus } from '../monitor/catalogue.js';

const STATUSES: CoverageStatus[] = ['enforced', 'tested', 'not-checkable', 'unsupported', 'open'];
const PARTS = ['basic', 'split', 'packed', 'init', 'pci', 'mmio', 'reserved', 'net', 'blk', 'console', 'entropy', 'vsock', 'fs'];

export interface ConformanceOptions {
  json?: boolean;
  part?: string;
  status?: string;
  list?: boolean;
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

/** `[off-by-default: ...]`: what limits a clause's checks, for the listing. */
function conditionNote(c: ClauseEntry): string {
  return c.conditions.map((k) => `  [${k.kind}: ${k.note}]`).join('');
}

export function runConformance(opts: ConformanceOptions, out: Writable): number {
  if (opts.part !== undefined && !PARTS.includes(opts.part)) {
    process.stderr.write(`virtio-ts conformance: unknown part "${opts.part}" (one of ${PARTS.join(', ')})\n`);
    return 2;
  }
  if (opts.status !== undefined && !STATUSES.includes(opts.status as CoverageStatus)) {
    process.stderr.write(`virtio-ts conformance: unknown status "${opts.status}" (one of ${STATUSES.join(', ')})\n`);
    return 2;
  }
  const clauses = allClauses().filter(
    (c) => c.spec && (opts.part === undefined || partOf(c.id) === opts.part) && (opts.status === undefined || c.status === opts.status),
  );
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
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((v, i) => (i < 2 ? v.padEnd(widths[i]) : v.padStart(widths[i]))).join('  ') + '\n';
  out.write(line(header));
  out.write(line(widths.map((w) => '-'.repeat(w))));
  for (const r of rows) out.write(line(r));
  const limited = clauses.filter((c) => c.status === 'enforced' && c.conditions.length > 0);
  if (limited.length > 0) {
    out.write(`\nEnforced, with conditions or a narrower scope (${limited.length}; catalogue/conditions.tsv):\n`);
    for (const c of limited) for (const k of c.conditions) out.write(`  ${c.id.padEnd(44)} ${k.kind.padEnd(27)} ${k.note}\n`);
  }
  out.write('\nvirtio-ts conformance --list        every clause with its status, summary, conditions and check sites\n');
  out.write('virtio-ts conformance --json        the same as JSON ({id, side, level, status, reason, tests, sites, negatives, conditions})\n');
  return 0;
}
