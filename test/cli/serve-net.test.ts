// `virtio-ts serve net` and `virtio-ts switch`: flags, exit codes, and a serve net process
// joining a switch process (its device's frames reach the switch socket once a front-end runs
// it: the guest tests do that; here the join and the clean shutdown).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bin, until } from './helpers.js';

/** Resolves with the exit code, also when the process has already ended. */
const exited = (c: ChildProcess) => (c.exitCode !== null || c.signalCode !== null ? Promise.resolve(c.exitCode) : new Promise<number | null>((r) => c.once('exit', r)));

const run = (...a: string[]) => spawnSync(process.execPath, [bin, ...a], { encoding: 'utf8' });

test('virtio-ts serve net and switch: usage errors exit 2, runtime failures 3, each saying why', () => {
  const sock = '/tmp/virtio-ts-never.sock';
  assert.equal(run('serve', 'net', '--socket-path', sock, '--mac', 'zz:00:00:00:00:00').status, 2, 'not a MAC');
  assert.equal(run('serve', 'net', '--socket-path', sock, '--mac', '01:00:5e:00:00:01').status, 2, 'a multicast MAC');
  assert.equal(run('serve', 'net', '--socket-path', sock, '--mtu', '40').status, 2, 'mtu below 68');
  assert.equal(run('serve', 'net', '--socket-path', sock, '--switch', 'a', '--tap', 'b').status, 2, 'two back-ends');
  assert.equal(run('serve', 'rng', '--socket-path', sock, '--mac', '52:54:00:00:00:01').status, 2, '--mac is for net');
  // --queues N is served (test/guest/net-mq.test.ts); outside 1..16 it is a usage error.
  for (const n of ['0', '17']) {
    const q = run('serve', 'net', '--socket-path', sock, '--queues', n);
    assert.equal(q.status, 2, `--queues ${n}`);
    assert.match(q.stderr, /--queues/);
  }
  // Interfaces that exist everywhere and are no TAP: the kernel refuses them (nothing is changed,
  // no interface is made on this host); a name the kernel could not take is a usage error.
  const tap = run('serve', 'net', '--socket-path', sock, '--tap', 'lo');
  assert.equal(tap.status, 3, 'lo is not a TAP: a runtime failure, said');
  assert.match(tap.stderr, /--tap lo: .*not a single-queue TAP|--tap lo: .*\/dev\/net\/tun|--tap lo: .*CAP_NET_ADMIN/);
  assert.equal(run('serve', 'net', '--socket-path', sock, '--tap', 'a/b').status, 2, 'not an interface name');
  assert.equal(run('serve', 'net', '--socket-path', sock, '--switch', '/nonexistent-dir/sw.sock').status, 3, 'no switch there');
  assert.equal(existsSync(sock), false, 'nothing listened');
  assert.equal(run('switch').status, 2, 'switch needs --socket');
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-switch-'));
  try {
    const file = join(dir, 'taken');
    writeFileSync(file, 'keep me');
    assert.equal(run('switch', '--socket', file).status, 3, 'an existing file is never replaced');
    assert.equal(readFileSync(file, 'utf8'), 'keep me');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const caps = run('serve', 'net', '--print-capabilities');
  assert.deepEqual(JSON.parse(caps.stdout), { type: 'net', features: [] });
});

test('virtio-ts serve net joins virtio-ts switch; SIGTERM ends both, their sockets removed, the report written', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-switch-'));
  const swSock = join(dir, 'sw.sock');
  const netSock = join(dir, 'net.sock');
  const report = join(dir, 'report.json');
  let swLog = '';
  let netLog = '';
  const sw = spawn(process.execPath, [bin, 'switch', '--socket', swSock, '--log-format', 'json'], { stdio: ['ignore', 'ignore', 'pipe'] });
  sw.stderr!.on('data', (d) => (swLog += d));
  let net: ChildProcess | undefined;
  try {
    await until(() => existsSync(swSock), 'the switch listens');
    net = spawn(process.execPath, [bin, 'serve', 'net', '--socket-path', netSock, '--switch', swSock, '--mac', '52:54:00:00:00:42', '--report', report, '--log-format', 'json'], { stdio: ['ignore', 'ignore', 'pipe'] });
    net.stderr!.on('data', (d) => (netLog += d));
    // The startup line is awaited too: the socket and the switch's line can be there before
    // serve's own stderr has reached this process (a loaded CI machine showed it).
    await until(() => existsSync(netSock) && swLog.includes('a port joined (1 now)') && /serving net 52:54:00:00:00:42/.test(netLog), 'serve net listens, joined the switch and said so');
    net.kill('SIGTERM');
    assert.equal(await exited(net), 0);
    assert.equal(existsSync(netSock), false);
    const r = JSON.parse(readFileSync(report, 'utf8')) as { schema: string; totals: { violations: number; verdicts: number }; counters: { txFrames: number } };
    assert.deepEqual([r.schema, r.totals.violations, r.totals.verdicts, r.counters.txFrames], ['virtio-ts/run-report@1', 0, 0, 0]);
  } finally {
    if (net !== undefined && net.exitCode === null && net.signalCode === null) {
      net.kill('SIGKILL');
      await exited(net);
    }
    sw.kill('SIGTERM');
    assert.equal(await exited(sw), 0, swLog);
    assert.equal(existsSync(swSock), false, 'the switch removed its socket');
    rmSync(dir, { recursive: true, force: true });
  }
});
