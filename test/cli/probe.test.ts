// `virtio-ts probe` as a user runs it: the real binary against a real `virtio-ts serve rng`
// process. Usage errors exit 2 before anything is touched, an unreachable back-end exits 3, a
// clean back-end 0 (text, --json, --report); the exit 1 of a back-end with violations is in
// test/probe/negative.test.ts.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { n, run } from './helpers.js';
import { startServer, type Server } from '../vhost-user/hostile-cases.js';
import { HOSTILE_CASES } from '../../src/probe/hostile.js';
import { VHOST_USER_RULES } from '../../src/probe/rules.js';
import { PROBE_REPORT_SCHEMA, type ProbeReport } from '../../src/probe/report.js';

describe('virtio-ts probe: usage', () => {
  test('usage errors exit 2 with a message naming the flag', () => {
    const cases: [string[], RegExp][] = [
      [['probe', '--type', 'rng'], /--socket-path/],
      [['probe', '--socket-path', '/nonexistent.sock'], /--type/],
      [['probe', '--socket-path', 'x.sock', '--type', 'floppy'], /--type.*floppy.*Allowed choices/s],
      [['probe', '--socket-path', 'x.sock', '--type', 'rng', '--wait-ms', '12abc'], /--wait-ms must be a whole number/],
      [['probe', '--socket-path', 'x.sock', '--type', 'rng', '--timeout', '0'], /--timeout must be a whole number from 1/],
      [['probe', '--socket-path', 'x.sock', '--type', 'rng', '--bogus'], /unknown option '--bogus'/],
    ];
    for (const [args, message] of cases) {
      const r = run(...args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.err}`);
      assert.match(r.err, message, args.join(' '));
    }
  });

  test('a back-end that is not there exits 3', () => {
    const r = run('probe', '--socket-path', join(tmpdir(), 'no-such-virtio-ts.sock'), '--type', 'blk');
    assert.equal(r.code, 3, r.err);
    assert.match(r.err, /no such file \(is the back-end running\?\)/);
  });

  test('a socket nobody listens on exits 3; one that never answers is a violation (exit 1, vhost-user.reply.each)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-probe-cli-'));
    try {
      const stale = join(dir, 'stale.sock');
      n.close(n.listen(stale)); // the file stays, nothing listens: ECONNREFUSED
      const refused = run('probe', '--socket-path', stale, '--type', 'rng', '--json');
      assert.equal(refused.code, 3, refused.err);
      assert.match(refused.err, /could not connect to the back-end .*ECONNREFUSED/);
      assert.equal((JSON.parse(refused.out) as ProbeReport).target.connected, false);
      // Listening, never accepting (the kernel queues the connection): no reply ever comes.
      const mute = join(dir, 'mute.sock');
      const fd = n.listen(mute);
      try {
        const r = run('probe', '--socket-path', mute, '--type', 'rng', '--json', '--wait-ms', '200');
        assert.equal(r.code, 1, r.err);
        const report = JSON.parse(r.out) as ProbeReport;
        assert.equal(report.target.connected, true);
        assert.equal(report.checks.find((c) => c.id === 'vhost-user.reply.each')?.status, 'fail');
      } finally {
        n.close(fd);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('--list-cases and --list-rules print every case and rule, exit 0', () => {
    const cases = run('probe', '--list-cases');
    assert.equal(cases.code, 0);
    for (const c of HOSTILE_CASES) assert.match(cases.out, new RegExp(`^${c.id.replaceAll('.', '\\.')} `, 'm'));
    const rules = run('probe', '--list-rules');
    assert.equal(rules.code, 0);
    for (const r of VHOST_USER_RULES) assert.ok(rules.out.includes(r.id), r.id);
  });
});

describe('virtio-ts probe against virtio-ts serve rng', () => {
  let dir = '';
  let srv: Server;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'virtio-ts-probe-cli-'));
    srv = await startServer('rng', dir);
  });
  after(async () => {
    srv?.child.kill('SIGKILL');
    await srv?.exited;
    rmSync(dir, { recursive: true, force: true });
  });

  test('text output, exit 0', () => {
    const r = run('probe', '--socket-path', srv.path, '--type', 'rng');
    assert.equal(r.code, 0, r.out + r.err);
    assert.match(r.out, /^virtio-ts probe: rng back-end at /);
    assert.match(r.out, /PASS {4}vhost-user\.reply\.flags/);
    assert.match(r.out, /PASS {4}entropy\.device-operation\.device\.1/);
    assert.match(r.out, /^CLEAN: \d+ passed, 0 failed/m);
  });

  test('--json and --report give the same report; --report never overwrites a file', () => {
    const file = join(dir, 'report.json');
    const r = run('probe', '--socket-path', srv.path, '--type', 'rng', '--json', '--report', file, '--case', 'message.unknown-request', '--case', 'chain.loop');
    assert.equal(r.code, 0, r.err);
    const printed = JSON.parse(r.out) as ProbeReport;
    const written = JSON.parse(readFileSync(file, 'utf8')) as ProbeReport;
    assert.deepEqual(written, printed);
    assert.equal(printed.schema, PROBE_REPORT_SCHEMA);
    assert.deepEqual(
      printed.hostile?.map((h) => [h.id, h.ok]),
      [
        ['message.unknown-request', true],
        ['chain.loop', true],
      ],
    );
    // The file exists now: a second run refuses it (exit 3) and leaves it as it was.
    writeFileSync(file, 'mine');
    const again = run('probe', '--socket-path', srv.path, '--type', 'rng', '--report', file);
    assert.equal(again.code, 3);
    assert.match(again.err, /the file exists/);
    assert.equal(readFileSync(file, 'utf8'), 'mine');
  });

  test('an unknown --case is a usage error', () => {
    const r = run('probe', '--socket-path', srv.path, '--type', 'rng', '--case', 'chain.nope');
    assert.equal(r.code, 2);
    assert.match(r.err, /unknown hostile case\(s\): chain\.nope/);
  });
});
