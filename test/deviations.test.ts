// catalogue/deviations.tsv (known deviations of real drivers) is consistent with the clause
// catalogue, and the monitor marks verdicts on its clauses without excusing them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseDeviations } from '../src/monitor/deviations.js';
import { MonitorError } from '../src/monitor/errors.js';
import { loadDeviations } from '../src/node/deviations.js';
import { Monitor, formatVerdict } from '../src/monitor/monitor.js';

const root = join(fileURLToPath(import.meta.url), '../../..');

function clausesTsv(): Map<string, Record<string, string>> {
  const [header, ...lines] = readFileSync(join(root, 'catalogue/clauses.tsv'), 'utf8').split('\n').filter((l) => l.length > 0);
  const cols = header.split('\t');
  return new Map(lines.map((l) => {
    const row = Object.fromEntries(l.split('\t').map((v, i) => [cols[i], v]));
    return [row.id, row];
  }));
}

test('deviations.tsv: every row names a driver clause of catalogue/clauses.tsv, a driver, a version and evidence', () => {
  const rows = loadDeviations();
  assert.ok(rows.length >= 2, 'Linux long indirect tables, split and packed');
  const clauses = clausesTsv();
  const seen = new Set<string>();
  for (const d of rows) {
    const c = clauses.get(d.clause);
    assert.ok(c, `${d.clause} is not in catalogue/clauses.tsv`);
    assert.equal(c.side, 'driver', `${d.clause}: a deviation of a driver names a driver clause`);
    assert.match(c.level, /^MUST/, `${d.clause}: a deviation is of a MUST / MUST NOT`);
    const key = `${d.clause}\t${d.driver}`;
    assert.ok(!seen.has(key), `${key} twice`);
    seen.add(key);
    assert.match(d.version, /\d/, `${d.clause}: a version`);
    // Evidence that names a test names one that exists.
    for (const m of d.evidence.matchAll(/test\/[\w/.-]+\.test\.ts/g)) assert.ok(existsSync(join(root, m[0])), `${d.clause}: ${m[0]} exists`);
  }
  assert.ok(rows.some((d) => d.clause === 'split.indirect-descs.driver.3' && /Linux/.test(d.driver)));
  assert.ok(rows.some((d) => d.clause === 'packed.indirect-descs.driver.3' && /Linux/.test(d.driver)));
});

test('parseDeviations refuses a wrong header and a short line, naming the line as numbered in the text', () => {
  const is = (kind: string, line: number) => (e: unknown) => e instanceof MonitorError && e.kind === kind && e.line === line;
  assert.throws(() => parseDeviations('clause\tdriver\n'), is('bad-deviations-header', 1));
  assert.throws(() => parseDeviations('clause\tdriver\tversion\tevidence\tnote\nsplit.indirect-descs.driver.3\tLinux\n'), is('bad-deviations-line', 2));
  assert.throws(() => parseDeviations('clause\tdriver\tversion\tevidence\tnote\n\n\nsplit.indirect-descs.driver.3\tLinux\n'), is('bad-deviations-line', 4), 'blank lines count');
  assert.deepEqual(parseDeviations('clause\tdriver\tversion\tevidence\tnote\n'), []);
});

test('the monitor marks a verdict on a catalogued clause as a known deviation; it stays a violation and strict mode still acts', () => {
  for (const mode of ['strict', 'tolerant'] as const) {
    const m = new Monitor({ mode, deviations: loadDeviations() });
    const v = m.report('split.indirect-descs.driver.3', 'chain from head 0 is longer than the queue size 128');
    assert.equal(v.severity, 'violation');
    assert.ok(v.deviation, 'carries the deviation');
    assert.match(v.deviation.driver, /Linux/);
    assert.match(formatVerdict(v), /^VIOLATION split\.indirect-descs\.driver\.3 .*\[known deviation: Linux .*6\.1/);
    assert.equal(m.shouldAct(v), mode === 'strict');
    assert.equal(m.violations.length, 1, 'counted as a violation');
    const other = m.report('split.desc-table.driver.1', 'a loop');
    assert.equal(other.deviation, undefined);
    assert.doesNotMatch(formatVerdict(other), /known deviation/);
  }
  // Without the option nothing is marked.
  assert.equal(new Monitor().report('split.indirect-descs.driver.3', 'x').deviation, undefined);
});
