// `virtio-ts serve`: the real binary on a real unix socket; a front-end connects, gets its
// answer, goes, comes back; SIGTERM ends it cleanly and removes the socket file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { native } from '../../src/native/index.js';
import { HEADER_SIZE, Req } from '../../src/transports/vhost-user/protocol.js';

const root = join(fileURLToPath(import.meta.url), '../../../..');
const bin = join(root, 'dist/src/cli/main.js');
const n = native();

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (cond()) return;
    await new Promise((res) => setTimeout(res, 10));
  }
  assert.fail(`timed out waiting for ${what}`);
}

async function getFeatures(path: string): Promise<bigint> {
  const fd = n.connect(path);
  const hdr = new Uint8Array(HEADER_SIZE);
  new DataView(hdr.buffer).setUint32(0, Req.GET_FEATURES, true);
  new DataView(hdr.buffer).setUint32(4, 1, true);
  n.sendmsg(fd, hdr);
  const buf = new Uint8Array(64);
  for (let i = 0; i < 500; i++) {
    const r = n.recvmsg(fd, buf);
    if (r.bytes > 0) {
      n.close(fd);
      return new DataView(buf.buffer).getBigUint64(HEADER_SIZE, true);
    }
    await new Promise((res) => setTimeout(res, 5));
  }
  n.close(fd);
  throw new Error('no reply from the back-end');
}

for (const type of ['rng', 'blk'] as const) {
  test(`virtio-ts serve ${type}: answers a front-end, serves it again after it reconnects, SIGTERM removes the socket`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-serve-'));
    const path = join(dir, `${type}.sock`);
    const image = join(dir, 'disk.img');
    writeFileSync(image, new Uint8Array(1 << 20));
    const args = type === 'blk' ? ['serve', 'blk', '--socket-path', path, '--image', image, '--num-queues', '2'] : ['serve', 'rng', '--socket-path', path];
    const child = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
    try {
      await until(() => existsSync(path), 'the socket file');
      const first = await getFeatures(path);
      assert.ok(first & (1n << 32n), 'VIRTIO_F_VERSION_1 offered');
      assert.ok(first & (1n << 30n), 'VHOST_USER_F_PROTOCOL_FEATURES offered');
      await until(() => /waiting for the next one/.test(stderr), 'the back-end noticing the front-end left');
      assert.equal(await getFeatures(path), first, 'served again after reconnecting');
      const lines = stderr.trim().split('\n').map((l) => JSON.parse(l) as { level: number; msg: string; name: string });
      assert.ok(lines.some((l) => l.msg.startsWith('listening on') && l.name === `virtio-ts serve ${type}`), 'structured JSON logs');
      child.kill('SIGTERM');
      assert.equal(await exited, 0);
      assert.equal(existsSync(path), false, 'socket file removed');
    } finally {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('virtio-ts serve: usage errors exit 2', () => {
  const run = (...a: string[]) => spawnSync(process.execPath, [bin, ...a], { encoding: 'utf8' });
  assert.equal(run('serve', 'blk', '--socket-path', '/tmp/none.sock').status, 2, 'blk needs --image');
  assert.equal(run('serve', 'blk', '--socket-path', '/tmp/none.sock', '--image', '/nonexistent.img').status, 2);
  assert.equal(run('serve', 'rng').status, 2, 'no socket');
  assert.equal(run('serve', 'rng', '--socket-path', '/nonexistent-dir/x.sock').status, 2);
  assert.equal(run('serve', 'rng', '--fd', 'x').status, 2);
  assert.equal(run('serve', 'rng', '--socket-path', '/tmp/x.sock', '--log-level', 'loud').status, 2);
  const caps = run('serve', 'blk', '--print-capabilities');
  assert.equal(caps.status, 0);
  assert.deepEqual(JSON.parse(caps.stdout), { type: 'block', features: [] });
});
