// The library daemon (serveVhostUser, exported from virtio-ts/node) in this process, against the
// test front-end on a real unix socket: one front-end at a time, the next one served after it
// leaves (the device reset in between), a device per connection from a factory, an inherited
// connected fd, close() and an AbortSignal, the socket-path rules, and its events. Every wait is
// for an event, with a bound.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { closeSync, existsSync, lstatSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serveVhostUser, VhostUserError, type DaemonEnd, type VhostUserDaemon } from '../../src/node.js';
import { RngDevice } from '../../src/devices/rng/device.js';
import { Monitor } from '../../src/monitor/monitor.js';
import { Feature, Status } from '../../src/spec/constants.js';
import { bit } from '../../src/spec/features.js';
import { ProtocolFeature, Req } from '../../src/transports/vhost-user/protocol.js';
import { SocketFrontEnd, n, readable, until, type SplitTestRing } from './front-end.js';

const WRITE = 2;
const PROTOCOL = (1n << BigInt(ProtocolFeature.MQ)) | (1n << BigInt(ProtocolFeature.BACKEND_REQ)) | (1n << BigInt(ProtocolFeature.STATUS));

/** A session up to a live split ring, then one 64-byte entropy request served; returns the bytes (the ring in `lastRing`). */
let lastRing: SplitTestRing;
async function oneRequest(fe: SocketFrontEnd): Promise<Uint8Array> {
  await fe.negotiate(bit(Feature.VERSION_1), PROTOCOL);
  const ring = await fe.splitRing(0, 16, 0x1000);
  ring.desc(0, 0x20000, 64, WRITE);
  ring.offer(0);
  await ring.waitUsed(1);
  assert.deepEqual(ring.used(0), [0, 64], 'the request used, 64 bytes written');
  lastRing = ring;
  return fe.bytes.slice(0x20000, 0x20000 + 64);
}

/** Runs `fn` with a fresh directory, removed afterwards, and closes the daemons it made. */
async function inDir(fn: (dir: string, track: (d: VhostUserDaemon) => VhostUserDaemon) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-daemon-'));
  const daemons: VhostUserDaemon[] = [];
  try {
    await fn(dir, (d) => (daemons.push(d), d));
  } finally {
    for (const d of daemons) await d.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

test('serveVhostUser: a device served on a socket path, front-end after front-end (reset between), one at a time; close() removes the socket', () =>
  inDir(async (dir, track) => {
    const path = join(dir, 'rng.sock');
    let counter = 0;
    const device = new RngDevice({ monitor: new Monitor(), source: (d) => d.fill(++counter) });
    const daemon = track(serveVhostUser(device, { socket: path }));
    assert.equal(daemon.path, path);
    assert.ok(lstatSync(path).isSocket(), 'listening on the path when it returns');
    const events: string[] = [];
    daemon.on('connect', (e) => events.push(`connect ${e.device === device}`));
    daemon.on('disconnect', (e) => events.push(`disconnect ${e.error?.kind ?? 'none'}`));

    const first = new SocketFrontEnd(path);
    try {
      assert.ok((await oneRequest(first)).every((b) => b === 1), 'the first front-end served by the device');
      // A second front-end while the first is served is turned away: its connection ends unanswered.
      const second = new SocketFrontEnd(path);
      try {
        assert.equal((await second.ended()).replies.length, 0, 'turned away');
      } finally {
        second.close();
      }
      assert.ok(daemon.connected);
    } finally {
      first.close();
    }
    await until(() => !daemon.connected, 'the first front-end gone');
    assert.equal(device.getStatus(), 0, 'the device reset when its front-end left');
    // The next front-end is served (QEMU reconnecting).
    const third = new SocketFrontEnd(path);
    try {
      assert.ok((await oneRequest(third)).every((b) => b === 2), 'the next front-end served by the same device');
    } finally {
      third.close();
    }
    await until(() => events.length === 4, 'four events');
    assert.deepEqual(events, ['connect true', 'disconnect none', 'connect true', 'disconnect none']);
    const end = await daemon.close('test done');
    assert.deepEqual(end, { reason: 'test done', socketFile: 'removed' } satisfies DaemonEnd);
    assert.equal(existsSync(path), false, 'its socket removed');
    assert.equal(await daemon.closed, end, 'closed resolves with the same end');
  }));

test('serveVhostUser: a device factory makes a new device for each connection; reconnect: false ends the daemon with its first front-end', () =>
  inDir(async (dir, track) => {
    const path = join(dir, 'rng.sock');
    const made: RngDevice[] = [];
    const daemon = track(
      serveVhostUser(
        () => {
          const d = new RngDevice({ monitor: new Monitor(), source: (b) => b.fill(0x10 + made.length) });
          made.push(d);
          return d;
        },
        { socket: path, reconnect: false },
      ),
    );
    const fe = new SocketFrontEnd(path);
    try {
      assert.ok((await oneRequest(fe)).every((b) => b === 0x11), 'served by the device made for it');
    } finally {
      fe.close();
    }
    const end = await daemon.closed;
    assert.equal(made.length, 1);
    assert.match(end.reason, /^front-end gone: front-end closed the connection$/);
    assert.equal(end.socketFile, 'removed');
  }));

test('serveVhostUser: an already connected socket ({ fd }) is served once; the daemon ends when that front-end leaves', async () => {
  const [front, back] = n.socketpair();
  const device = new RngDevice({ monitor: new Monitor(), source: (d) => d.fill(7) });
  const daemon = serveVhostUser(device, { socket: { fd: back } });
  const connected = once(daemon, 'connect');
  assert.equal(daemon.path, undefined);
  await connected;
  // The test front-end on the other end of the pair: GET_FEATURES answered.
  n.sendmsg(front, new Uint8Array([Req.GET_FEATURES, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]));
  assert.ok(await readable(front), 'a reply');
  const reply = new Uint8Array(20);
  assert.equal(n.recvmsg(front, reply).bytes, 20);
  assert.ok(new DataView(reply.buffer).getBigUint64(12, true) & bit(Feature.VERSION_1));
  n.close(front);
  const end = await daemon.closed;
  assert.equal(end.reason, 'front-end gone: front-end closed the connection');
  assert.equal(end.socketFile, undefined, 'no socket file of its own');
});

test('serveVhostUser: an AbortSignal closes the daemon and ends the connection it serves (the device reset)', () =>
  inDir(async (dir, track) => {
    const path = join(dir, 'rng.sock');
    const device = new RngDevice({ monitor: new Monitor() });
    const ac = new AbortController();
    const daemon = track(serveVhostUser(device, { socket: path, signal: ac.signal }));
    const fe = new SocketFrontEnd(path);
    try {
      await oneRequest(fe);
      assert.ok(device.getStatus() & Status.DRIVER_OK);
      const disconnected = once(daemon, 'disconnect');
      ac.abort();
      const [end] = (await disconnected) as [{ reason: string }];
      assert.equal(end.reason, 'shutting down');
      assert.equal((await daemon.closed).reason, 'aborted');
      assert.equal(device.getStatus(), 0);
      await fe.ended();
    } finally {
      fe.close();
    }
    assert.equal(existsSync(path), false);
  }));

test('serveVhostUser: a chain outside guest memory is a verdict, then a device error, then the end of the connection: each an event', () =>
  inDir(async (dir, track) => {
    const path = join(dir, 'rng.sock');
    const device = new RngDevice({ monitor: new Monitor() });
    const daemon = track(serveVhostUser(device, { socket: path }));
    const fe = new SocketFrontEnd(path);
    try {
      await oneRequest(fe);
      const verdict = once(daemon, 'verdict');
      const deviceError = once(daemon, 'deviceError');
      const disconnect = once(daemon, 'disconnect');
      // The guest's driver offers a buffer 16 MiB up, in a guest of 1 MiB.
      const ring = lastRing;
      ring.desc(1, 0x1000000, 64, WRITE);
      ring.offer(1);
      const [v] = (await verdict) as [{ clause: string }];
      assert.equal(v.clause, 'struct.buffer-range.driver.1');
      const [e] = (await deviceError) as [{ device: RngDevice; reason: string }];
      assert.equal(e.device, device);
      assert.match(e.reason, /^struct\.buffer-range\.driver\.1: /);
      const [end] = (await disconnect) as [{ reason: string; error: VhostUserError | null }];
      assert.equal(end.error?.kind, 'device-error');
      assert.match(end.reason, /^device error: struct\.buffer-range\.driver\.1: .*outside guest memory/);
      await fe.ended();
    } finally {
      fe.close();
    }
    assert.ok(!daemon.connected);
  }));

test('serveVhostUser: the socket path rules: a file that is not a socket and a live server\'s socket are refused and left as they were; a stale socket is replaced', () =>
  inDir(async (dir, track) => {
    const file = join(dir, 'disk.img');
    writeFileSync(file, 'precious');
    const kindOf = (fn: () => unknown) => {
      try {
        fn();
      } catch (err) {
        assert.ok(err instanceof VhostUserError, String(err));
        return [err.kind, err.message];
      }
      return assert.fail('no error');
    };
    const [kind, message] = kindOf(() => serveVhostUser(new RngDevice({ monitor: new Monitor() }), { socket: file }));
    assert.equal(kind, 'socket-path');
    assert.match(message, /is a regular file \(8 bytes\), not a socket: refusing to replace it/);
    assert.equal(readFileSync(file, 'utf8'), 'precious', 'the file untouched');

    const live = join(dir, 'live.sock');
    const first = track(serveVhostUser(new RngDevice({ monitor: new Monitor() }), { socket: live }));
    const before = lstatSync(live).ino;
    assert.equal(kindOf(() => serveVhostUser(new RngDevice({ monitor: new Monitor() }), { socket: live }))[0], 'socket-busy');
    assert.equal(lstatSync(live).ino, before, 'the live server keeps its socket');
    assert.ok(first.path === live && !first.connected);

    // A socket nobody listens on any more (made by the addon directly, its fd closed): replaced, with a warning.
    const stale = join(dir, 'stale.sock');
    n.close(n.listen(stale));
    const warnings: string[] = [];
    track(serveVhostUser(new RngDevice({ monitor: new Monitor() }), { socket: stale, logger: { info: () => undefined, warn: (m) => warnings.push(m) } }));
    assert.match(warnings.join('\n'), /was left by a server that is gone \(connect refused\); replacing it/);
    assert.notEqual(lstatSync(stale).ino, undefined);

    // An fd that is not a socket, and one that is not open.
    const fileFd = openSync(file, 'r');
    try {
      assert.deepEqual(kindOf(() => serveVhostUser(new RngDevice({ monitor: new Monitor() }), { socket: { fd: fileFd } })), ['bad-fd', `fd ${fileFd} is not a socket (vhost-user needs a connected unix socket)`]);
    } finally {
      closeSync(fileFd);
    }
    assert.deepEqual(kindOf(() => serveVhostUser(new RngDevice({ monitor: new Monitor() }), { socket: { fd: 99999 } })), ['bad-fd', 'fd 99999: not an open file descriptor']);
  }));
