// `virtio-ts monitor` as a command: usage errors (exit 2), paths it must not touch (exit 3), and a
// run between the project's front-end and `serve blk`: live JSON verdict lines (none here),
// SIGTERM ends it, the report is written (schema virtio-ts/monitor-report@1), exit 0.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { DeviceId } from '../../src/spec/constants.js';
import { BlkDriver } from '../../src/drivers/blk.js';
import type { MonitorReport } from '../../src/proxy/report.js';
import { bin, run } from '../cli/helpers.js';
import { closeFrontEnds, connectFrontEnd, makeImage, pattern, scratch, startServe, type Peer } from '../vhost-user/frontend-peers.js';
import { until } from '../wait.js';

test('virtio-ts monitor: usage errors exit 2 before anything is touched', () => {
  assert.equal(run('monitor').code, 2);
  assert.equal(run('monitor', '--listen', '/tmp/x.sock').code, 2);
  assert.equal(run('monitor', '--connect', '/tmp/x.sock').code, 2);
  assert.equal(run('monitor', '--listen', 'a', '--connect', 'b', '--poll-min-ms', '60', '--poll-max-ms', '50').code, 2);
  assert.equal(run('monitor', '--listen', 'a', '--connect', 'b', '--poll-min-ms', '1x').code, 2);
});

test('virtio-ts monitor: an existing report file or a --listen path that is not a socket: exit 3, the file untouched', () => {
  const s = scratch('vt-monitor-cli-');
  try {
    const file = `${s.dir}/report.json`;
    writeFileSync(file, 'mine');
    const r = run('monitor', '--listen', `${s.dir}/l.sock`, '--connect', `${s.dir}/b.sock`, '--report', file);
    assert.equal(r.code, 3, r.err);
    assert.match(r.err, /exists/);
    assert.equal(readFileSync(file, 'utf8'), 'mine');
    const r2 = run('monitor', '--listen', file, '--connect', `${s.dir}/b.sock`);
    assert.equal(r2.code, 3, r2.err);
    assert.equal(readFileSync(file, 'utf8'), 'mine');
  } finally {
    s.remove();
  }
});

test('virtio-ts monitor --json --report: a clean run between BlkDriver and serve blk; SIGTERM writes the report and exits 0', async () => {
  const s = scratch('vt-monitor-cli-');
  let p: Peer | null = null;
  const listen = `${s.dir}/monitor.sock`;
  const reportFile = `${s.dir}/report.json`;
  const child = spawn(process.execPath, [bin, 'monitor', '--listen', listen, '--connect', `${s.dir}/serve.sock`, '--json', '--report', reportFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
  try {
    makeImage(`${s.dir}/disk.img`, 8 << 20);
    p = await startServe('blk', `${s.dir}/serve.sock`, ['--image', `${s.dir}/disk.img`, '--format', 'raw']);
    await until(() => err.includes('listening on'), `the monitor listens: ${err}`);
    const fe = await connectFrontEnd({ socketPath: listen, deviceId: DeviceId.BLOCK });
    const blk = new BlkDriver(fe);
    await blk.start();
    await Promise.all(Array.from({ length: 16 }, (_, i) => blk.write(i * 4096, pattern(i, 4096))));
    const back = new Uint8Array(4096);
    await blk.read(5 * 4096, back);
    assert.deepEqual(back, pattern(5, 4096));
    await blk.shutdown();
    await fe.close();
    await until(() => /session 1 ended/.test(err), `the session ends: ${err}`);
    child.kill('SIGTERM');
    assert.equal(await exited, 0, err);
    assert.equal(out, '', 'no verdict line');
    assert.ok(existsSync(reportFile));
    const report = JSON.parse(readFileSync(reportFile, 'utf8')) as MonitorReport;
    assert.equal(report.schema, 'virtio-ts/monitor-report@1');
    assert.equal(report.target.listen, listen);
    assert.equal(report.sessions.length, 1);
    assert.ok(report.sessions[0].messages.frontEnd > 10 && report.sessions[0].messages.backEnd > 3, JSON.stringify(report.sessions[0]));
    assert.ok(report.sessions[0].rings.some((r) => r.index === 0 && r.used > 0), JSON.stringify(report.sessions[0].rings));
    assert.deepEqual(report.summary, { total: 0, violations: 0, knownDeviations: 0, warnings: 0, clean: true });
    assert.equal(existsSync(listen), false, 'the socket file it made is removed');
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    await closeFrontEnds();
    await p?.stop();
    s.remove();
  }
});
