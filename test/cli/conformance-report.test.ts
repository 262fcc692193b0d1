// Run reports and the HTML report: `serve --report` writes the verdicts of a real run grouped by
// clause (virtio-ts/run-report@1); `conformance --report` reads that, a probe report and a serve
// JSON log, refuses anything else by name; `conformance --html` writes a new file only.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Feature } from '../../src/spec/constants.js';
import { bit } from '../../src/spec/features.js';
import { Req, u64Payload } from '../../src/transports/vhost-user/protocol.js';
import { EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_VIOLATIONS } from '../../src/cli/exit-codes.js';
import { Monitor } from '../../src/monitor/monitor.js';
import { RUN_REPORT_SCHEMA, RunReportRecorder, runReportJson, type RunReport } from '../../src/monitor/run-report.js';
import { PROBE_REPORT_SCHEMA, type ProbeReport } from '../../src/probe/report.js';
import { loadRun } from '../../src/cli/conformance.js';
import { MONITOR_REPORT_SCHEMA, type MonitorReport } from '../../src/proxy/report.js';
import { CliError } from '../../src/cli/exit-codes.js';
import { TestFrontEnd, n } from '../vhost-user/front-end.js';
import { run, startServe, frontEndOver } from './helpers.js';

const tempDir = () => mkdtempSync(join(tmpdir(), 'virtio-ts-report-'));

test('RunReportRecorder: one entry per clause with its count, violations, first and last occurrence; bigints and byte arrays written as JSON', () => {
  let t = Date.UTC(2026, 0, 1);
  const rec = new RunReportRecorder('monitor', { listen: '/x' }, 'tolerant', () => new Date(t));
  const m = new Monitor({ mode: 'tolerant', onVerdict: (v) => rec.record(v, 'back-end') });
  m.report('split.desc-table.driver.1', 'first', { features: 1n << 32n, bytes: new Uint8Array([1, 2]) });
  t += 1000;
  m.report('split.desc-table.driver.1', 'second');
  m.report('init.sequence.driver.5', 'a SHOULD-level clause');
  const r = JSON.parse(runReportJson(rec.report())) as RunReport;
  assert.equal(r.schema, RUN_REPORT_SCHEMA);
  assert.deepEqual(r.totals, { verdicts: 3, violations: 2, warnings: 1, knownDeviations: 0, clauses: 2 });
  const [a, b] = r.clauses;
  assert.equal(a.clause, 'split.desc-table.driver.1');
  assert.equal(a.count, 2);
  assert.equal(a.violations, 2);
  assert.equal(a.first.message, 'first');
  assert.equal(a.first.source, 'back-end');
  assert.deepEqual(a.first.context, { features: '0x100000000', bytes: [1, 2] });
  assert.equal(a.last!.message, 'second');
  assert.equal(a.last!.at, new Date(Date.UTC(2026, 0, 1) + 1000).toISOString());
  assert.equal(b.clause, 'init.sequence.driver.5');
  assert.equal(b.violations, 0);
  assert.equal(b.last, undefined);
});

test('loadRun: each format by its schema or its lines; an unknown schema, other JSON, text or a missing file is refused naming what it reads', () => {
  const dir = tempDir();
  try {
    const probe: ProbeReport = {
      schema: PROBE_REPORT_SCHEMA,
      target: { socketPath: '/s', type: 'blk', connected: true },
      started: '2026-01-01T00:00:00.000Z',
      durationMs: 10,
      checks: [{ id: 'blk.device-init.device.1', source: 'virtio', title: 't', status: 'fail', checked: 1, detail: 'd' }],
      sessions: [],
      summary: { pass: 0, fail: 1, notRun: 0, hostileOk: 0, hostileFailed: 0, hostileSkipped: 0, clean: false },
    };
    // What `virtio-ts monitor --report` writes (typed: a change of its shape fails the build here).
    const verdict = (message: string, time: string, position: number) => ({
      clause: 'split.avail-ring.driver.1', side: 'driver' as const, level: 'MUST NOT' as const, severity: 'violation' as const, message, observer: 'device' as const,
      session: 2, source: 'virtio' as const, queue: 0, position: { availIdx: position }, time,
    });
    const monitor: MonitorReport = {
      schema: MONITOR_REPORT_SCHEMA,
      target: { listen: '/l.sock', connect: '/c.sock' },
      started: '2026-01-01T00:00:00.000Z',
      durationMs: 5000,
      sessions: [],
      verdicts: [verdict('first', '2026-01-01T00:00:01.000Z', 7), verdict('second', '2026-01-01T00:00:02.000Z', 9)],
      clauses: [
        { clause: 'split.avail-ring.driver.1', source: 'virtio', side: 'driver', severity: 'violation', count: 3, known: false, first: 'first' },
        { clause: 'vhost-user.reply.flags', source: 'vhost-user', side: 'device', severity: 'violation', count: 1, known: false, first: 'no reply flag' },
      ],
      summary: { total: 4, violations: 4, knownDeviations: 0, warnings: 0, clean: false },
    };
    const files: Record<string, string> = {
      probe: JSON.stringify(probe),
      monitor: JSON.stringify(monitor),
      unknown: JSON.stringify({ schema: 'virtio-ts/other@9', clauses: [] }),
      array: '[1,2]',
      text: 'hello\nworld\n',
      empty: '',
    };
    for (const [name, body] of Object.entries(files)) writeFileSync(join(dir, name), body);
    assert.equal(loadRun(join(dir, 'probe')).format, 'probe-report');
    const m = loadRun(join(dir, 'monitor'));
    assert.equal(m.format, 'monitor-report');
    assert.equal(m.run!.tool, 'monitor');
    assert.deepEqual(m.run!.totals, { verdicts: 4, violations: 4, warnings: 0, knownDeviations: 0, clauses: 2 });
    const [ring, rule] = m.run!.clauses;
    assert.equal(ring.count, 3);
    assert.deepEqual(ring.first, { at: '2026-01-01T00:00:01.000Z', message: 'first', observer: 'device', severity: 'violation', context: { session: 2, queue: 0, position: { availIdx: 7 } }, source: 'front-end' });
    assert.equal(ring.last!.message, 'second');
    assert.equal(ring.level, 'MUST NOT');
    assert.deepEqual([rule.clause, rule.count, rule.first.message, rule.last], ['vhost-user.reply.flags', 1, 'no reply flag', undefined]);
    const html = join(dir, 'm.html');
    assert.equal(run('conformance', '--html', html, '--report', join(dir, 'monitor')).code, EXIT_OK);
    assert.match(readFileSync(html, 'utf8'), /<h3>monitor run: <code>[^<]*monitor<\/code> <small>\(monitor-report\)<\/small><\/h3>/);
    for (const name of ['unknown', 'array', 'text', 'empty']) {
      assert.throws(() => loadRun(join(dir, name)), (e: unknown) => e instanceof CliError && e.code === EXIT_USAGE && /run-report@1.*monitor-report@1.*probe-report@1.*serve JSON log/.test(e.message), name);
    }
    assert.throws(() => loadRun(join(dir, 'missing')), (e: unknown) => e instanceof CliError && e.code === EXIT_RUNTIME);
    const r = run('conformance', '--report', join(dir, 'unknown'));
    assert.equal(r.code, EXIT_USAGE);
    assert.match(r.err, /not a report format virtio-ts knows \(schema "virtio-ts\/other@9"\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('serve --report: a real run\'s verdicts by clause; conformance --report reads it and the same run\'s JSON log alike, and --html renders both', async () => {
  const dir = tempDir();
  const path = join(dir, 'rng.sock');
  const report = join(dir, 'run.json');
  const s = startServe(['serve', 'rng', '--socket-path', path, '--report', report]);
  let fe: TestFrontEnd | null = null;
  try {
    await s.logged(/^listening on/);
    fe = frontEndOver(path);
    fe.send(Req.SET_OWNER);
    fe.send(Req.SET_FEATURES, u64Payload(bit(Feature.VERSION_1)));
    fe.sendMemTable();
    const ring = fe.setRing(0, 'split', 16, 0x1000, 0, { eventIdx: false });
    // entropy.device-operation.driver.1: the driver MUST NOT place driver-readable buffers in the queue.
    ring.queue.begin().addReadable(0x20000, 64).commit('bad');
    ring.queue.publish();
    n.eventfdWrite(ring.kick, 1);
    await s.logged(/entropy\.device-operation\.driver\.1/);
    s.child.kill('SIGTERM');
    assert.equal(await s.exited, EXIT_VIOLATIONS);
    const r = JSON.parse(readFileSync(report, 'utf8')) as RunReport;
    assert.equal(r.schema, RUN_REPORT_SCHEMA);
    assert.equal(r.tool, 'serve');
    assert.equal(r.mode, 'tolerant');
    assert.equal(r.target.type, 'rng');
    const c = r.clauses.find((x) => x.clause === 'entropy.device-operation.driver.1')!;
    assert.ok(c, JSON.stringify(r.clauses));
    assert.equal(c.side, 'driver');
    assert.equal(c.first.observer, 'device');
    assert.ok(c.count >= 1 && c.violations >= 1);
    assert.equal(r.totals.verdicts, r.clauses.reduce((a, x) => a + x.count, 0));

    // The same run's JSON log gives the same clauses and counts.
    const log = join(dir, 'serve.log');
    writeFileSync(log, s.stderr());
    const fromLog = loadRun(log);
    assert.equal(fromLog.format, 'serve-log');
    assert.deepEqual(
      fromLog.run!.clauses.map((x) => [x.clause, x.count]),
      r.clauses.map((x) => [x.clause, x.count]),
    );

    const text = run('conformance', '--report', report, '--report', log);
    assert.equal(text.code, EXIT_OK, text.err);
    assert.match(text.out, /Verdicts of the runs/);
    assert.match(text.out, new RegExp(`\\s${c.count}x\\s+entropy\\.device-operation\\.driver\\.1`));

    const html = join(dir, 'report.html');
    const h = run('conformance', '--html', html, '--report', report, '--report', log);
    assert.equal(h.code, EXIT_OK, h.err);
    const page = readFileSync(html, 'utf8');
    assert.equal((page.match(/<section class="run"/g) ?? []).length, 2);
    assert.match(page, /<tr data-clause="entropy\.device-operation\.driver\.1"><td><a href="#c-entropy\.device-operation\.driver\.1">/);
    assert.match(page, /id="c-entropy\.device-operation\.driver\.1" data-status="enforced" data-side="driver" data-hits="[1-9]/);

    // Files that exist are never overwritten: --html, and serve --report (refused before serving).
    const again = run('conformance', '--html', html);
    assert.equal(again.code, EXIT_RUNTIME);
    assert.match(again.err, /the file exists/);
    assert.equal(readFileSync(html, 'utf8'), page);
    const refused = run('serve', 'rng', '--socket-path', join(dir, 'other.sock'), '--report', report);
    assert.equal(refused.code, EXIT_RUNTIME);
    assert.match(refused.err, /--report .*the file exists/);
    assert.equal(existsSync(join(dir, 'other.sock')), false);
  } finally {
    fe?.close();
    s.child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
