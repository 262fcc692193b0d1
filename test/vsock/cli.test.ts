// `virtio-ts serve vsock`: its flags (usage errors before anything is touched) and --print-capabilities.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const bin = join(fileURLToPath(import.meta.url), '../../../src/cli/main.js');
const run = (...args: string[]) => spawnSync(process.execPath, [bin, 'serve', ...args], { encoding: 'utf8' });

test('serve vsock --print-capabilities: {"type":"vsock","features":[]}', () => {
  const r = run('vsock', '--print-capabilities');
  assert.equal(r.status, 0);
  assert.deepEqual(JSON.parse(r.stdout), { type: 'vsock', features: [] });
});

test('serve vsock needs --guest-cid and --uds-path; a reserved CID and the flags on other types are usage errors (exit 2)', () => {
  assert.equal(run('vsock', '--socket-path', '/tmp/x.sock', '--uds-path', '/tmp/v').status, 2);
  assert.equal(run('vsock', '--socket-path', '/tmp/x.sock', '--guest-cid', '3').status, 2);
  assert.equal(run('vsock', '--socket-path', '/tmp/x.sock', '--guest-cid', '2', '--uds-path', '/tmp/v').status, 2);
  assert.equal(run('rng', '--socket-path', '/tmp/x.sock', '--guest-cid', '3').status, 2);
  const long = run('vsock', '--socket-path', '/tmp/x.sock', '--guest-cid', '3', '--uds-path', '/tmp/' + 'a'.repeat(100));
  assert.equal(long.status, 2);
  assert.match(long.stderr, /--uds-path must be 1 to \d+ bytes/);
});
