// The monitor proxy between the project's own front-end (VhostUserFrontEnd + BlkDriver) and real
// back-ends (`virtio-ts serve blk`, qemu-storage-daemon): every request goes through, the data
// is right, the proxy watched the rings and found nothing; the back-end dying ends the session,
// the proxy serves the next one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DeviceId } from '../../src/spec/constants.js';
import { BlkDriver } from '../../src/drivers/blk.js';
import { closeFrontEnds, connectFrontEnd, haveQsd, makeImage, pattern, RING_FORMATS, scratch, startQsd, startServe, type Peer } from '../vhost-user/frontend-peers.js';
import { show, startProxy, unexpected } from './helpers.js';
import { until } from '../wait.js';
import { missingPrerequisite } from '../prerequisites.js';

const MiB = 1 << 20;

async function workload(socketPath: string, transportFeatures: bigint): Promise<void> {
  const fe = await connectFrontEnd({ socketPath, deviceId: DeviceId.BLOCK });
  const blk = new BlkDriver(fe, { transportFeatures });
  await blk.start();
  // 64 requests in flight at once, then read back one by one.
  await Promise.all(Array.from({ length: 64 }, (_, i) => blk.write(i * 65536, pattern(i, 4096))));
  for (let i = 0; i < 64; i++) {
    const back = new Uint8Array(4096);
    await blk.read(i * 65536, back);
    assert.deepEqual(back, pattern(i, 4096), `request ${i} reads back through the proxy`);
  }
  // A stop and a restart of the ring (GET_VRING_BASE, SET_VRING_BASE) while it is watched.
  await fe.stopQueue(0);
  const back = new Uint8Array(4096);
  const pending = blk.read(3 * 65536, back);
  await fe.startQueue(0);
  await pending;
  assert.deepEqual(back, pattern(3, 4096));
  await blk.flush();
  await blk.shutdown();
  await fe.close();
}

/** A scratch dir with an 8 MiB image and a proxy at proxy.sock forwarding to serve.sock; `body` starts the back-end it needs (into `peer.p`). */
async function withProxy(
  body: (x: ReturnType<typeof startProxy> & { dir: string; args: string[]; peer: { p: Peer | null } }) => Promise<void>,
  o: { backendWaitMs?: number } = {},
): Promise<void> {
  const s = scratch('vt-proxy-');
  makeImage(`${s.dir}/disk.img`, 8 * MiB);
  const x = startProxy(`${s.dir}/proxy.sock`, `${s.dir}/serve.sock`, o);
  const peer: { p: Peer | null } = { p: null };
  try {
    await body({ ...x, dir: s.dir, args: ['--image', `${s.dir}/disk.img`, '--format', 'raw'], peer });
  } finally {
    await closeFrontEnds();
    x.proxy.close();
    await peer.p?.stop();
    s.remove();
  }
}

for (const [format, transportFeatures] of RING_FORMATS) {
  test(`proxy between BlkDriver and virtio-ts serve blk (${format}): the workload is right, the rings were watched, no verdict`, () =>
    withProxy(async ({ proxy, verdicts, lines, dir, args, peer }) => {
      peer.p = await startServe('blk', `${dir}/serve.sock`, args);
      await workload(proxy.path, transportFeatures);
      await until(() => proxy.openSessions === 0, 'the session ends with the front-end');
      const [session] = proxy.sessions;
      assert.equal(session.reason, 'the front-end closed the connection');
      // Ring 0 may have been watched more than once (a row per start: the kick fd, a memory table
      // change); how much each saw depends on when it looked (laps are not judged): only that it watched.
      const rows = session.rings.filter((r) => r.index === 0);
      assert.ok(rows.length > 0 && rows.every((r) => r.format === format), JSON.stringify(session.rings));
      assert.ok(rows.some((r) => r.used > 0), `ring 0 was watched: ${JSON.stringify(session.rings)}`);
      assert.deepEqual(unexpected(verdicts), [], show(verdicts));
      assert.doesNotMatch(lines.join('\n'), /internal/);
    }));
}

test('proxy between BlkDriver and qemu-storage-daemon (split): the workload is right, no verdict', async (t) => {
  if (!haveQsd()) return missingPrerequisite(t, 'qemu-storage-daemon');
  const s = scratch('vt-proxy-');
  makeImage(`${s.dir}/disk.img`, 8 * MiB);
  const { proxy, verdicts } = startProxy(`${s.dir}/proxy.sock`, `${s.dir}/qsd.sock`);
  let p: Peer | null = null;
  try {
    p = await startQsd(`${s.dir}/disk.img`, `${s.dir}/qsd.sock`);
    await workload(proxy.path, RING_FORMATS[0][1]);
    await until(() => proxy.openSessions === 0, 'the session ends with the front-end');
    const ring = proxy.sessions[0].rings.find((r) => r.index === 0)!;
    assert.ok(ring.used > 0, JSON.stringify(proxy.sessions[0]));
    assert.deepEqual(unexpected(verdicts), [], show(verdicts));
  } finally {
    await closeFrontEnds();
    proxy.close();
    await p?.stop();
    s.remove();
  }
});

test('proxy: a back-end that dies ends the session (the front-end sees the close); the next session goes to the restarted back-end', () =>
  withProxy(async ({ proxy, verdicts, lines, dir, args, peer }) => {
    peer.p = await startServe('blk', `${dir}/serve.sock`, args);
    const fe = await connectFrontEnd({ socketPath: proxy.path, deviceId: DeviceId.BLOCK });
    const blk = new BlkDriver(fe);
    await blk.start();
    await blk.write(0, pattern(1, 4096));
    await peer.p.kill();
    await until(() => proxy.openSessions === 0, 'the session ends with the back-end');
    assert.equal(proxy.sessions[0].reason, 'the back-end closed the connection');
    // No back-end at all: a front-end is turned away (closed), not left waiting.
    await assert.rejects(connectFrontEnd({ socketPath: proxy.path, deviceId: DeviceId.BLOCK, timeoutMs: 5000 }));
    assert.match(lines.join('\n'), /front-end turned away: the back-end .* cannot be reached/);
    peer.p = await startServe('blk', `${dir}/serve.sock`, args);
    await workload(proxy.path, RING_FORMATS[0][1]);
    await until(() => proxy.openSessions === 0, 'the second session ends with its front-end');
    assert.equal(proxy.sessions.length, 2);
    assert.deepEqual(unexpected(verdicts), [], show(verdicts));
  }, { backendWaitMs: 0 }));

test('proxy: a front-end that dies ends the back-end connection; the back-end serves the next front-end', () =>
  withProxy(async ({ proxy, dir, args, peer }) => {
    const p = (peer.p = await startServe('blk', `${dir}/serve.sock`, args));
    const fe = await connectFrontEnd({ socketPath: proxy.path, deviceId: DeviceId.BLOCK });
    const blk = new BlkDriver(fe);
    await blk.start();
    await blk.write(0, pattern(1, 4096));
    await fe.close();
    await until(() => proxy.openSessions === 0, 'the session ends with the front-end');
    await until(() => /front-end (left|disconnected|closed)/.test(p.log()), `serve saw its front-end go: ${p.log()}`);
    await workload(proxy.path, RING_FORMATS[0][1]);
  }));

test('proxy: a front-end that comes while the back-end is down is held (bounded) and served once the back-end is back', () =>
  withProxy(async ({ proxy, lines, dir, args, peer }) => {
    const work = workload(proxy.path, RING_FORMATS[0][1]);
    await until(() => lines.some((l) => /front-end held/.test(l)), 'the front-end is held');
    peer.p = await startServe('blk', `${dir}/serve.sock`, args);
    await work;
    assert.equal(proxy.sessions.length, 1);
  }));
