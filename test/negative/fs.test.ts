// virtio-fs: a driver that breaks the device's rules, judged by the device's monitor (clause
// ids of spec 5.11), and a conforming FUSE session over the same pair (no verdict). The driver
// is the project's FsDriver over the synchronous loopback, misrouting requests on purpose.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Monitor } from '../../src/monitor/monitor.js';
import { LoopbackTransport } from '../../src/transports/loopback/loopback.js';
import { FsDevice } from '../../src/devices/fs/device.js';
import { FsDriver } from '../../src/drivers/fs.js';
import { FuseClient, fuseRequest } from '../../src/fs/fuse/client.js';
import { MemoryFs } from '../../src/fs/memory.js';
import { Op } from '../../src/fs/fuse/wire.js';
import { FsConfig } from '../../src/spec/fs.js';
import { Status } from '../../src/spec/constants.js';

async function pair(mode: 'strict' | 'tolerant' = 'tolerant') {
  const monitor = new Monitor({ mode });
  const device = new FsDevice({ provider: new MemoryFs(), tag: 'neg', numRequestQueues: 2, monitor });
  const transport = new LoopbackTransport(device, GuestMemory.create(8 << 20), { mode: 'sync' });
  const driver = new FsDriver(transport, { monitor: new Monitor({ mode: 'tolerant' }), requestQueues: 2 });
  await driver.start();
  const client = new FuseClient(driver.fuseSend);
  await client.init();
  return { device, driver, client, monitor, transport };
}

const clauses = (m: Monitor) => m.verdicts.map((v) => v.clause);
const forget = () => fuseRequest(Op.FORGET, 99n, 1, [new Uint8Array(8)]);

test('a conforming session through the device: tag and queues read, files made and read back, no verdict', async () => {
  const { driver, client, monitor, device } = await pair('strict');
  assert.equal(driver.tag, 'neg');
  assert.equal(driver.numRequestQueues, 2);
  const { entry, fh } = await client.create(1, 'f');
  await client.write(entry.nodeid, fh, 0, new TextEncoder().encode('through the rings'));
  assert.equal(new TextDecoder().decode(await client.read(entry.nodeid, fh, 0, 100)), 'through the rings');
  await client.forget(entry.nodeid, 1);
  assert.deepEqual(clauses(monitor), []);
  assert.ok(device.type.stats.hiprio >= 1 && device.type.stats.requests >= 5);
});

test('fs.high-priority-queue.driver.1: FORGET on a request queue', async () => {
  const { driver, monitor } = await pair();
  assert.equal(await driver.send(forget(), 0, false, 1), null);
  assert.deepEqual(clauses(monitor), ['fs.high-priority-queue.driver.1']);
});

test('fs.high-priority-queue.driver.2: a normal request (GETATTR) on the hiprio queue; tolerant mode still answers it', async () => {
  const { driver, monitor } = await pair();
  const reply = await driver.send(fuseRequest(Op.GETATTR, 5n, 1, [new Uint8Array(16)]), 200, true, 0);
  assert.deepEqual(clauses(monitor), ['fs.high-priority-queue.driver.2']);
  assert.equal(reply?.length, 16 + 104, 'served anyway');
});

test('fs.high-priority-queue.driver.2 in strict mode: the device stops (DEVICE_NEEDS_RESET)', async () => {
  const { driver, monitor, device } = await pair('strict');
  void driver.send(fuseRequest(Op.GETATTR, 5n, 1, [new Uint8Array(16)]), 200, true, 0).catch(() => undefined);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(clauses(monitor), ['fs.high-priority-queue.driver.2']);
  assert.ok((device.status & Status.DEVICE_NEEDS_RESET) !== 0);
});

test('fs.device-config-layout.driver.1: the driver writes num_request_queues', async () => {
  const { transport, monitor } = await pair();
  await transport.writeConfig(FsConfig.numRequestQueues, 4, 9);
  assert.deepEqual(clauses(monitor), ['fs.device-config-layout.driver.1']);
});

test('fs.device-config-layout.device.1: a device that advertises num_request_queues 0, judged by the driver', async () => {
  const device = new FsDevice({ provider: new MemoryFs(), tag: 'zero', monitor: new Monitor({ mode: 'tolerant' }) });
  device.type.context.config.setUint32(FsConfig.numRequestQueues, 0, true); // the misbehaviour
  const driverMonitor = new Monitor({ mode: 'tolerant' });
  const driver = new FsDriver(new LoopbackTransport(device, GuestMemory.create(8 << 20), { mode: 'sync' }), { monitor: driverMonitor });
  await driver.start();
  assert.deepEqual(clauses(driverMonitor), ['fs.device-config-layout.device.1']);
});

test('virtio-ts\'s device never advertises fewer than one request queue; a bad tag is refused', () => {
  assert.throws(() => new FsDevice({ provider: new MemoryFs(), tag: 'x', numRequestQueues: 0 }), RangeError);
  assert.throws(() => new FsDevice({ provider: new MemoryFs(), tag: '' }), RangeError);
  assert.throws(() => new FsDevice({ provider: new MemoryFs(), tag: 'x'.repeat(37) }), RangeError);
});
