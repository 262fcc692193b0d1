// The unix datagram frame port (src/node/net/dgram-port.ts, QEMU's -netdev dgram framing): two
// ports back to back exchange frames byte for byte; frames to a peer that is not there yet are
// dropped and counted, and flow once it binds; datagrams that cannot be frames are counted and
// dropped; the local path is never replaced and is removed at close only while it is the
// socket made here. And `virtio-ts switch --dgram/--tap`: usage errors exit 2, runtime 3.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DgramFramePort } from '../../src/node/net/dgram-port.js';
import { native } from '../../src/native/index.js';
import { NetPortError } from '../../src/node/net/errors.js';
import { bin } from '../cli/helpers.js';
import { until } from '../wait.js';
import { ether, MAC_A, MAC_B, pattern } from './frames.js';

function withDir(fn: (dir: string) => Promise<void> | void): () => Promise<void> {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-dgram-'));
    try {
      await fn(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

test('dgram port: two ports back to back, frames both ways byte for byte; a peer not there yet drops, then flows', withDir(async (dir) => {
  const pa = join(dir, 'a');
  const pb = join(dir, 'b');
  const a = DgramFramePort.open(pa, pb);
  assert.equal(a.peerConnected, false);
  assert.equal(a.send(ether(MAC_B, MAC_A, 0x88b5, pattern(50))), false, 'no peer yet: dropped');
  assert.equal(a.counters.dropped, 1);
  const b = DgramFramePort.open(pb, pa);
  assert.equal(b.peerConnected, true);
  const atA: Uint8Array[] = [];
  const atB: Uint8Array[] = [];
  a.onFrame = (f) => atA.push(f.slice());
  b.onFrame = (f) => atB.push(f.slice());
  const out = Array.from({ length: 50 }, (_, i) => ether(MAC_B, MAC_A, 0x88b5, pattern(46 + ((i * 397) % 9000), i)));
  // One at a time: a unix datagram queue holds net.unix.max_dgram_qlen (10) datagrams; more are dropped.
  for (const [i, f] of out.entries()) {
    assert.equal(a.send(f), true);
    await until(() => atB.length === i + 1, `frame ${i} at b`);
  }
  assert.deepEqual(atB, out);
  const back = ether(MAC_A, MAC_B, 0x88b5, pattern(1500, 3));
  assert.equal(b.send(back), true);
  await until(() => atA.length === 1, 'the reply at a');
  assert.deepEqual(atA[0], back);
  // Not frames: a 5-byte datagram is counted and dropped, nothing reaches onFrame.
  b.send(new Uint8Array(5));
  await until(() => a.counters.malformed === 1, 'the runt counted');
  b.send(back);
  await until(() => atA.length === 2, 'the frame after the runt');
  assert.equal(a.counters.malformed, 1);
  a.close();
  b.close();
  assert.equal(existsSync(pa) || existsSync(pb), false, 'both socket files removed');
  assert.equal(a.linkUp, false);
  assert.equal(a.send(back), false);
}));

test('dgram port: a peer that goes away and comes back (a QEMU restarting) is reached again', withDir(async (dir) => {
  const pa = join(dir, 'a');
  const pb = join(dir, 'b');
  const a = DgramFramePort.open(pa, pb);
  let b = DgramFramePort.open(pb, pa);
  const f = ether(MAC_B, MAC_A, 0x88b5, pattern(100));
  assert.equal(a.send(f), true);
  b.close();
  a.send(f); // refused: the peer is gone (counted, nothing thrown)
  b = DgramFramePort.open(pb, pa);
  const got: Uint8Array[] = [];
  b.onFrame = (x) => got.push(x.slice());
  await until(() => (a.send(f), got.length > 0), 'a frame at the new peer');
  assert.deepEqual(got[0], f);
  a.close();
  b.close();
}));

test('dgram port: a peer that does not read fills its queue; the rest is dropped and counted, send says false, nothing waits', withDir((dir) => {
  const n = native();
  const peerPath = join(dir, 'peer');
  const peer = n.dgramBind(peerPath); // bound, never read
  const a = DgramFramePort.open(join(dir, 'a'), peerPath);
  const f = ether(MAC_B, MAC_A, 0x88b5, pattern(100));
  let refused = 0;
  for (let i = 0; i < 100; i++) if (!a.send(f)) refused++;
  assert.ok(refused > 0, 'a full queue refuses');
  assert.equal(a.counters.dropped, refused);
  assert.equal(a.counters.txFrames, 100 - refused);
  a.close();
  n.close(peer);
}));

test('dgram port: an existing local path is never replaced (path-in-use); bad paths are refused', withDir((dir) => {
  const file = join(dir, 'taken');
  writeFileSync(file, 'keep me');
  assert.throws(() => DgramFramePort.open(file, join(dir, 'x')), (e: unknown) => e instanceof NetPortError && e.kind === 'path-in-use');
  assert.equal(readFileSync(file, 'utf8'), 'keep me');
  assert.throws(() => DgramFramePort.open('', join(dir, 'x')), (e: unknown) => e instanceof NetPortError && e.kind === 'bad-path');
  assert.throws(() => DgramFramePort.open(join(dir, 'y'), '/' + 'x'.repeat(200)), (e: unknown) => e instanceof NetPortError && e.kind === 'bad-path');
}));

test('virtio-ts switch --dgram/--tap: usage errors exit 2, an existing path exits 3 and is kept', withDir((dir) => {
  const run = (...a: string[]) => spawnSync(process.execPath, [bin, 'switch', ...a], { encoding: 'utf8' });
  assert.equal(run('--dgram', join(dir, 'only-one')).status, 2, 'LOCAL,REMOTE needed');
  assert.equal(run('--tap', 'a/b').status, 2, 'not an interface name');
  const file = join(dir, 'taken');
  writeFileSync(file, 'keep me');
  const r = run('--dgram', `${file},${join(dir, 'peer')}`);
  assert.equal(r.status, 3, r.stderr);
  assert.match(r.stderr, /never replaced|exists already/);
  assert.equal(readFileSync(file, 'utf8'), 'keep me');
  // A TAP that cannot be had (lo is no TAP): exit 3, and the dgram port opened before it is closed again.
  const local = join(dir, 'sw');
  const t = run('--dgram', `${local},${join(dir, 'peer')}`, '--tap', 'lo');
  assert.equal(t.status, 3, t.stderr);
  assert.equal(existsSync(local), false, 'the datagram socket opened first was removed');
}));
