// The virtio-fs device with no guest: the project's FsDriver over the loopback transport, a
// FUSE client on top. A provider that answers with Promises (as a host directory or a
// browser store does) keeps each request's buffer until it settles while the queues go on;
// many requests in flight on two request queues all come back right.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Monitor } from '../../src/monitor/monitor.js';
import { LoopbackTransport } from '../../src/transports/loopback/loopback.js';
import { FsDevice } from '../../src/devices/fs/device.js';
import { FsDriver } from '../../src/drivers/fs.js';
import { FuseClient } from '../../src/fs/fuse/client.js';
import { MemoryFs } from '../../src/fs/memory.js';
import { Errno, FsError, LockType, type FsProvider } from '../../src/fs/vfs.js';

/** `fs` with every answer a Promise settled on a later turn, in scrambled order. */
function slow(fs: MemoryFs): FsProvider {
  let n = 0;
  return new Proxy(fs, {
    get(target, prop, recv) {
      const v = Reflect.get(target, prop, recv) as unknown;
      if (typeof v !== 'function' || prop === 'forget') return v;
      return (...args: unknown[]) => {
        const delay = n++ % 3;
        return new Promise((resolve, reject) => {
          const go = () => {
            try {
              resolve((v as (...a: unknown[]) => unknown).apply(target, args));
            } catch (e) {
              reject(e);
            }
          };
          if (delay === 0) setImmediate(go);
          else setTimeout(go, delay);
        });
      };
    },
  });
}

test('an asynchronous provider through the device: 200 files written and read back concurrently on two request queues, no verdict', async () => {
  const monitor = new Monitor({ mode: 'strict' });
  const mem = new MemoryFs();
  const device = new FsDevice({ provider: slow(mem), tag: 'async', numRequestQueues: 2, monitor });
  const driver = new FsDriver(new LoopbackTransport(device, GuestMemory.create(16 << 20), { mode: 'async' }), { monitor: new Monitor({ mode: 'strict' }), requestQueues: 2, queueSize: 256 });
  await driver.start();
  const c = new FuseClient(driver.fuseSend);
  await c.init();
  const dir = await c.mkdir(1, 'd');
  const body = (i: number) => new TextEncoder().encode(`file ${i} `.repeat(100 + i));
  await Promise.all(
    Array.from({ length: 200 }, async (_, i) => {
      const { entry, fh } = await c.create(dir.nodeid, `f${i}`);
      assert.equal(await c.write(entry.nodeid, fh, 0, body(i)), body(i).length);
      await c.release(entry.nodeid, fh);
    }),
  );
  const names = (await c.list(dir.nodeid, true)).map((e) => e.name).filter((n) => n.startsWith('f'));
  assert.equal(names.length, 200);
  const reads = await Promise.all(
    Array.from({ length: 200 }, async (_, i) => {
      const e = await c.lookup(dir.nodeid, `f${i}`);
      const fh = await c.open(e.nodeid, 0);
      const got = await c.read(e.nodeid, fh, 0, 1 << 16);
      await c.release(e.nodeid, fh);
      return Buffer.from(got).equals(Buffer.from(body(i)));
    }),
  );
  assert.ok(reads.every(Boolean), 'every file reads back as written');
  assert.deepEqual(monitor.verdicts.map((v) => v.clause), []);
  assert.ok(device.type.stats.async > 800, `requests answered later: ${device.type.stats.async}`);
  assert.equal(device.type.inProgress(), 0, 'nothing left in flight');
});

test('a SETLKW waiting for a lock does not hold up a ring stop: asked to settle, the device ends the wait (EINTR) and settles', async () => {
  const device = new FsDevice({ provider: new MemoryFs(), tag: 'locks', monitor: new Monitor({ mode: 'strict' }) });
  const driver = new FsDriver(new LoopbackTransport(device, GuestMemory.create(16 << 20), { mode: 'async' }), { monitor: new Monitor({ mode: 'strict' }), queueSize: 64 });
  await driver.start();
  const c = new FuseClient(driver.fuseSend);
  await c.init();
  const { entry, fh } = await c.create(1, 'f');
  const whole = { start: 0, end: Infinity, type: LockType.F_WRLCK, pid: 1 };
  await c.setlk(entry.nodeid, fh, 1n, whole);
  let outcome = 'waiting';
  const before = device.type.stats.async;
  const waiting = c.setlk(entry.nodeid, fh, 2n, { ...whole, pid: 2 }, true).then(
    () => (outcome = 'granted'),
    (e: unknown) => (outcome = e instanceof FsError ? `errno ${e.errno}` : String(e)),
  );
  for (let i = 0; i < 500 && device.type.stats.async === before; i++) await new Promise((r) => setTimeout(r, 1));
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(outcome, 'waiting', 'owner 2 waits for owner 1');
  // What a vhost-user GET_VRING_BASE does: poll settled() (the transport gives up after 30 s).
  let settled = device.settled();
  for (let i = 0; i < 500 && !settled; i++) {
    await new Promise((r) => setTimeout(r, 1));
    settled = device.settled();
  }
  assert.ok(settled, 'the device settled while owner 1 still holds the lock');
  await waiting;
  assert.equal(outcome, `errno ${Errno.EINTR}`, 'the wait ended with EINTR, as an interrupt ends it');
  await c.setlk(entry.nodeid, fh, 1n, { ...whole, type: LockType.F_UNLCK });
});
