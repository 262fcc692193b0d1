// `virtio-ts serve`: the real binary on a real unix socket; a front-end connects, gets its
// answer, goes, comes back; SIGTERM ends it cleanly and removes the socket file; SIGHUP
// resizes a blk disk live (a small front-end here sees the CONFIG_CHANGE_MSG and new config).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BackendReq, HEADER_SIZE, ProtocolFeature, Req, statePayload, u64Payload } from '../../src/transports/vhost-user/protocol.js';
import { memTablePayload, message, receive } from '../vhost-user/front-end.js';
import { bin, connection, frontEnd, getFeatures, n, startServe, until } from './helpers.js';
import { Feature, Status } from '../../src/spec/constants.js';
import { bit } from '../../src/spec/features.js';

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
      // Not the socket file: it appears at bind(), before listen(), and a connect in between is refused.
      await until(() => /"msg":"listening on/.test(stderr), 'the server listening');
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

test('virtio-ts serve: usage errors exit 2, runtime failures 3 (exit-codes.test.ts has the full tables)', () => {
  const run = (...a: string[]) => spawnSync(process.execPath, [bin, ...a], { encoding: 'utf8' });
  assert.equal(run('serve', 'blk', '--socket-path', '/tmp/none.sock').status, 2, 'blk needs --image');
  assert.equal(run('serve', 'blk', '--socket-path', '/tmp/none.sock', '--image', '/nonexistent.img').status, 3, 'a missing image is a runtime failure');
  assert.equal(run('serve', 'rng').status, 2, 'no socket');
  assert.equal(run('serve', 'rng', '--socket-path', '/nonexistent-dir/x.sock').status, 3, 'cannot listen: runtime failure');
  assert.equal(run('serve', 'rng', '--fd', 'x').status, 2);
  assert.equal(run('serve', 'rng', '--socket-path', '/tmp/x.sock', '--log-level', 'loud').status, 2);
  const caps = run('serve', 'blk', '--print-capabilities');
  assert.equal(caps.status, 0);
  assert.deepEqual(JSON.parse(caps.stdout), { type: 'block', features: ['read-only', 'blk-file'] });
});

/** A front-end that takes the device live the way QEMU does, with the back-end request channel. */
async function liveFrontEnd(path: string) {
  const { fd, send, ask } = connection(path);
  assert.ok((await ask(Req.GET_FEATURES)).getBigUint64(HEADER_SIZE, true) & (1n << 30n));
  const proto = (1n << BigInt(ProtocolFeature.CONFIG)) | (1n << BigInt(ProtocolFeature.BACKEND_REQ)) | (1n << BigInt(ProtocolFeature.STATUS));
  assert.equal((await ask(Req.GET_PROTOCOL_FEATURES)).getBigUint64(HEADER_SIZE, true) & proto, proto);
  send(Req.SET_PROTOCOL_FEATURES, u64Payload(proto));
  const [channel, channelBack] = n.socketpair();
  send(Req.SET_BACKEND_REQ_FD, undefined, [channelBack]);
  n.close(channelBack);
  send(Req.SET_OWNER);
  send(Req.SET_FEATURES, u64Payload(bit(Feature.VERSION_1) | (1n << 30n)));
  // Guest memory (the device's host only exists once a memory table is attached).
  const memfd = n.memfdCreate('guest', 1 << 20);
  send(Req.SET_MEM_TABLE, memTablePayload(1 << 20), [memfd]);
  n.close(memfd);
  const live = Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK;
  send(Req.SET_STATUS, u64Payload(live));
  assert.equal(Number((await ask(Req.GET_STATUS)).getBigUint64(HEADER_SIZE, true)), live);
  const capacity = async () => {
    const cfg = new Uint8Array(12 + 8);
    new DataView(cfg.buffer).setUint32(4, 8, true); // offset 0 (capacity), 8 bytes, flags 0
    return Number((await ask(Req.GET_CONFIG, cfg)).getBigUint64(HEADER_SIZE + 12, true));
  };
  /** The next back-end request on the channel (its type), or null when none comes soon. */
  const backendRequest = async (waitMs = 2500): Promise<number | null> => {
    try {
      return new DataView((await receive(channel, waitMs)).buffer).getUint32(0, true);
    } catch (err) {
      if (err instanceof Error && /^no reply in/.test(err.message)) return null;
      throw err;
    }
  };
  return { capacity, backendRequest, close: () => [fd, channel].forEach((x) => n.close(x)) };
}

for (const extra of [[], ['--read-only']]) {
  test(`virtio-ts serve blk${extra.length ? ' ' + extra.join(' ') : ''}: SIGHUP after the image grew or shrank resizes the disk live and notifies the front-end`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-serve-'));
    const path = join(dir, 'blk.sock');
    const image = join(dir, 'disk.img');
    writeFileSync(image, new Uint8Array(1 << 20));
    const s = startServe(['serve', 'blk', '--socket-path', path, '--image', image, ...extra]);
    const logged = async (re: RegExp) => {
      await until(() => s.logs().some((l) => re.test(l.msg)), `a log line ${re}`);
      return s.logs().find((l) => re.test(l.msg))!;
    };
    try {
      await s.logged(/^listening on/);
      const fe = await liveFrontEnd(path);
      assert.equal(await fe.capacity(), 2048);

      truncateSync(image, 3 << 20);
      s.child.kill('SIGHUP');
      assert.equal(await fe.backendRequest(), BackendReq.CONFIG_CHANGE_MSG, 'CONFIG_CHANGE_MSG on the back-end request channel');
      assert.equal(await fe.capacity(), 6144, 'GET_CONFIG answers the new capacity');
      const grew = await logged(/^resized .* 2048 -> 6144 sectors/);
      assert.equal(grew.level, 30);
      assert.deepEqual([grew.before, grew.capacity, grew.notified, grew.readOnly], [2048, 6144, true, extra.includes('--read-only')]);

      s.child.kill('SIGHUP'); // the same size again: nothing to tell
      await logged(/still holds 6144 sectors; capacity unchanged/);
      assert.equal(await fe.backendRequest(200), null, 'no notification for an unchanged size');

      truncateSync(image, (1536 << 10) + 100); // 3072 sectors and a partial one
      s.child.kill('SIGHUP');
      assert.equal(await fe.backendRequest(), BackendReq.CONFIG_CHANGE_MSG);
      assert.equal(await fe.capacity(), 3072);
      const shrank = await logged(/smaller: capacity 6144 -> 3072 sectors/);
      assert.equal(shrank.level, 40, 'a shrink is a warning');

      truncateSync(image, 100); // below one sector: refused, logged, still serving
      s.child.kill('SIGHUP');
      const refused = await logged(/not resized \(.*smaller than one 512-byte sector\); capacity stays 3072 sectors/);
      assert.equal(refused.level, 50);
      assert.equal(await fe.capacity(), 3072, 'still serving, capacity as it was');
      assert.equal(s.child.exitCode, null, 'the server is still running');
      assert.doesNotMatch(JSON.stringify(s.logs()), /"severity":"violation"/);
      fe.close();
      s.child.kill('SIGTERM');
      assert.equal(await s.exited, 0);
    } finally {
      s.child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('virtio-ts serve rng: SIGHUP has nothing to reload and the server keeps serving', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-serve-'));
  const path = join(dir, 'rng.sock');
  const s = startServe(['serve', 'rng', '--socket-path', path]);
  try {
    await s.logged(/^listening on/);
    s.child.kill('SIGHUP');
    await until(() => s.logs().some((l) => l.msg === 'SIGHUP: nothing to reload for rng'), 'the SIGHUP log line');
    assert.ok((await getFeatures(path)) & (1n << 32n), 'still answers');
    s.child.kill('SIGTERM');
    assert.equal(await s.exited, 0);
  } finally {
    s.child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('virtio-ts serve blk: the startup line gives the seg_max advertised; a --seg-max whose chains do not fit --queue-size is warned about, per mode', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-segmax-'));
  const image = join(dir, 'disk.img');
  writeFileSync(image, new Uint8Array(1 << 20));
  const cases: { args: string[]; segMax: number; warning: RegExp | null }[] = [
    { args: [], segMax: 126, warning: null }, // the default, with the default --queue-size 1024
    { args: ['--queue-size', '64'], segMax: 62, warning: null },
    { args: ['--queue-size', '64', '--seg-max', '62'], segMax: 62, warning: null }, // 64 descriptors: fits exactly
    {
      args: ['--queue-size', '64', '--seg-max', '100'],
      segMax: 100,
      warning: /^seg_max 100 does not fit --queue-size 64: a driver that honours it builds chains of up to 102 descriptors, longer than the queue \(split\/packed\.indirect-descs\.driver\.3, a known deviation of Linux\); tolerant mode serves them and logs them as a known deviation \(in strict mode they would be a device error\); --seg-max 62 or less fits$/,
    },
    {
      args: ['--queue-size', '64', '--seg-max', '100', '--strict'],
      segMax: 100,
      warning: /^seg_max 100 does not fit --queue-size 64: .*; in strict mode each such chain is a device error; --seg-max 62 or less fits$/,
    },
    {
      args: ['--queue-size', '64', '--seg-max', '2000'],
      segMax: 2000,
      warning: /^seg_max 2000 does not fit --queue-size 64: .*chains of up to 2002 descriptors.*; chains longer than 1024 descriptors are a device error in every mode; /,
    },
  ];
  try {
    for (const [i, c] of cases.entries()) {
      const path = join(dir, `blk${i}.sock`);
      const s = startServe(['serve', 'blk', '--socket-path', path, '--image', image, ...c.args]);
      try {
        const start = await s.logged(/^serving /);
        assert.equal(start.segMax, c.segMax, `${c.args.join(' ')}: JSON segMax`);
        assert.match(start.msg, new RegExp(`, 1 queue of up to ${c.args[1] ?? 1024}, seg_max ${c.segMax}, read-write,`));
        // "listening on" comes after every startup warning: by then the warning is there or never.
        await s.logged(/^listening on /);
        const warnings = s.logs().filter((l) => /does not fit --queue-size/.test(l.msg));
        if (c.warning === null) assert.deepEqual(warnings, [], `${c.args.join(' ')}: no seg_max warning`);
        else {
          assert.equal(warnings.length, 1, `${c.args.join(' ')}: one seg_max warning`);
          assert.equal(warnings[0].level, 40);
          assert.match(warnings[0].msg, c.warning);
          assert.equal(warnings[0].segMax, c.segMax);
        }
        s.child.kill('SIGTERM');
        assert.equal(await s.exited, 0);
      } finally {
        s.child.kill('SIGKILL');
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('virtio-ts serve blk --queue-size 64: QEMU\'s default ring of 128 is refused as too large for the device (naming --queue-size and queue-size=), not as "not a power of two"', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-ringsize-'));
  const image = join(dir, 'disk.img');
  writeFileSync(image, new Uint8Array(1 << 20));
  const path = join(dir, 'blk.sock');
  const s = startServe(['serve', 'blk', '--socket-path', path, '--image', image, '--queue-size', '64']);
  try {
    await s.logged(/^listening on /);
    const fe = await frontEnd(path);
    try {
      fe.send(Req.SET_VRING_NUM, statePayload(0, 128));
      const line = await s.logged(/SET_VRING_NUM: /);
      assert.match(line.msg, /split ring size 128 is larger than the device's largest queue, 64 \(`serve --queue-size 64`; QEMU's queue-size= must not exceed it\)/);
      assert.doesNotMatch(line.msg, /power of two/);
    } finally {
      fe.close();
    }
    s.child.kill('SIGTERM');
    await s.exited;
  } finally {
    s.child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
