// `virtio-ts serve fs`: flags, exit codes, the startup line, and a clean SIGTERM with the run
// report (the guest tests serve real guests through it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bin, until } from './helpers.js';

const run = (...a: string[]) => spawnSync(process.execPath, [bin, ...a], { encoding: 'utf8' });

test('virtio-ts serve fs: usage errors exit 2, each saying why; --print-capabilities', () => {
  const sock = '/tmp/virtio-ts-never-fs.sock';
  const cases: [string[], RegExp][] = [
    [['--memory'], /--tag/],
    [['--tag', 'vt'], /--memory or --shared-dir/],
    [['--tag', 'vt', '--memory', '--shared-dir', '/tmp'], /exactly one/],
    [['--tag', 'x'.repeat(37), '--memory'], /1 to 36 bytes/],
    [['--tag', 'vt', '--memory', '--num-queues', '65'], /1 to 64/],
  ];
  for (const [args, why] of cases) {
    const r = run('serve', 'fs', '--socket-path', sock, ...args);
    assert.equal(r.status, 2, args.join(' '));
    assert.match(r.stderr, why);
  }
  assert.equal(run('serve', 'rng', '--socket-path', sock, '--tag', 'vt').status, 2, '--tag is for fs');
  assert.equal(run('serve', 'blk', '--socket-path', sock, '--image', '/dev/null', '--memory').status, 2, '--memory is for fs');
  for (const flag of ['--xattr', '--no-xattr', '--posix-locks', '--no-posix-locks']) {
    const r = run('serve', 'rng', '--socket-path', sock, flag);
    assert.equal(r.status, 2, `${flag} is for fs`);
    assert.match(r.stderr, new RegExp(`${flag} is for fs, not rng`));
  }
  assert.equal(existsSync(sock), false, 'nothing listened');
  assert.deepEqual(JSON.parse(run('serve', 'fs', '--print-capabilities').stdout), { type: 'fs', features: [] });
});

test('virtio-ts serve fs --memory: says what it serves, ends on SIGTERM with exit 0, the socket removed and the report written', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-serve-fs-'));
  try {
    const sock = join(dir, 'fs.sock');
    const report = join(dir, 'report.json');
    const child = spawn(process.execPath, [bin, 'serve', 'fs', '--socket-path', sock, '--tag', 'vt', '--memory', '--num-queues', '2', '--report', report, '--log-format', 'json'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    child.stderr!.on('data', (d) => (log += d));
    await until(() => existsSync(sock) && log.includes('listening on'), 'serve fs listening');
    const start = JSON.parse(log.split('\n').find((l) => l.includes('"event":"start"'))!) as Record<string, unknown>;
    assert.deepEqual([start.tag, start.provider, start.numRequestQueues, start.readOnly], ['vt', 'memory', 2, false]);
    child.kill('SIGTERM');
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    assert.equal(code, 0, log);
    assert.equal(existsSync(sock), false, 'the socket is removed');
    const r = JSON.parse(readFileSync(report, 'utf8')) as { schema: string; counters: Record<string, number> };
    assert.equal(r.schema, 'virtio-ts/run-report@1');
    assert.equal(r.counters.requests, 0, 'no front-end, no request');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
