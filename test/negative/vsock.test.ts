// vsock: each side checks the other (misbehaving peers of src/testing/vsock.ts naming vsock.* clauses).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Monitor } from '../../src/monitor/monitor.js';
import { LoopbackTransport } from '../../src/transports/loopback/loopback.js';
import { VsockDevice } from '../../src/devices/vsock/device.js';
import { VsockDriver } from '../../src/drivers/vsock.js';
import { vsockStreams } from '../../src/node/vsock/streams.js';
import { VsockError } from '../../src/vsock/engine.js';
import { VSOCK_FEATURES } from '../../src/spec/vsock.js';
import { Feature } from '../../src/spec/constants.js';
import { bit, TRANSPORT_FEATURES_SPLIT } from '../../src/spec/features.js';
import { inflateFwdCnt, overrunCredit, reservedCidVsockDevice, spoofSourceCid } from '../../src/testing/vsock.js';
import { until } from '../wait.js';

const tolerant = () => new Monitor({ mode: 'tolerant' });

async function pair(device: VsockDevice | ReturnType<typeof reservedCidVsockDevice> = new VsockDevice({ monitor: tolerant(), guestCid: 5, bufAlloc: 4096 })) {
  device.withholdFeatures(bit(Feature.RING_PACKED));
  const drvMon = tolerant();
  const transport = new LoopbackTransport(device, GuestMemory.create(8 << 20), { mode: 'sync' });
  const driver = new VsockDriver(transport, { monitor: drvMon, transportFeatures: TRANSPORT_FEATURES_SPLIT, bufAlloc: 4096 });
  await driver.start();
  return { device, driver, devMon: device.monitor, drvMon };
}

async function connected(device: VsockDevice, driver: VsockDriver) {
  const host = vsockStreams(device);
  const guest = vsockStreams(driver);
  const l = host.listen(10);
  const g = guest.connect(10);
  await once(g, 'connect');
  const h = await l.accept();
  g.on('error', () => undefined);
  h.on('error', () => undefined);
  return { g, h };
}

const clauses = (m: Monitor) => m.verdicts.map((v) => v.clause);

test('vsock: a driver that sends past the device\'s advertised space: vsock.buffer-space-management.driver.1, the flow is reset', async () => {
  const { device, driver, devMon, drvMon } = await pair();
  const { g } = await connected(device as VsockDevice, driver);
  const failed = once(g, 'error').catch((e: unknown) => [e]) as Promise<[VsockError]>;
  overrunCredit(g.connection);
  g.write(Buffer.alloc(10_000, 1));
  await until(() => devMon.verdicts.length > 0, 'the device verdict');
  assert.deepEqual(clauses(devMon), ['vsock.buffer-space-management.driver.1']);
  const [err] = await failed;
  assert.equal(err.kind, 'reset');
  assert.deepEqual(clauses(drvMon), []);
});

test('vsock: a device that sends past the driver\'s advertised space: vsock.buffer-space-management.device.1', async () => {
  const { device, driver, devMon, drvMon } = await pair();
  const { h } = await connected(device as VsockDevice, driver);
  overrunCredit(h.connection);
  h.write(Buffer.alloc(10_000, 1));
  await until(() => drvMon.verdicts.length > 0, 'the driver verdict');
  assert.deepEqual(clauses(drvMon), ['vsock.buffer-space-management.device.1']);
  assert.deepEqual(clauses(devMon), []);
});

test('vsock: a driver whose fwd_cnt runs ahead of what it received: vsock.buffer-space-management.driver.2', async () => {
  const { device, driver, devMon, drvMon } = await pair();
  const { g } = await connected(device as VsockDevice, driver);
  inflateFwdCnt(g.connection);
  await until(() => devMon.verdicts.length > 0, 'the device verdict');
  assert.deepEqual(clauses(devMon), ['vsock.buffer-space-management.driver.2']);
  assert.deepEqual(clauses(drvMon), []);
});

test('vsock: a device whose fwd_cnt runs ahead of what it received: vsock.buffer-space-management.device.2', async () => {
  const { device, driver, devMon, drvMon } = await pair();
  const { h } = await connected(device as VsockDevice, driver);
  inflateFwdCnt(h.connection);
  await until(() => drvMon.verdicts.length > 0, 'the driver verdict');
  assert.deepEqual(clauses(drvMon), ['vsock.buffer-space-management.device.2']);
  assert.deepEqual(clauses(devMon), []);
});

test('vsock: a driver that sends with a source CID not its guest_cid: vsock.receive-and-transmit.driver.1', async () => {
  const { device, driver, devMon } = await pair();
  const host = vsockStreams(device as VsockDevice);
  host.listen(10);
  spoofSourceCid(driver.engine, 99n);
  const g = vsockStreams(driver).connect(10);
  g.on('error', () => undefined);
  await until(() => devMon.verdicts.length > 0, 'the device verdict');
  assert.deepEqual(clauses(devMon), ['vsock.receive-and-transmit.driver.1']);
  assert.equal((device as VsockDevice).engine.connections().length, 0, 'the packet was not taken');
});

test('vsock: a device with a reserved guest_cid: vsock.receive-and-transmit.device.1', async () => {
  const device = reservedCidVsockDevice({ monitor: tolerant() });
  const { drvMon } = await pair(device);
  assert.deepEqual(clauses(drvMon), ['vsock.receive-and-transmit.device.1']);
});

test('vsock: a device that does not offer NO_IMPLIED_STREAM: vsock.feature-bits.device.1 (a warning)', async () => {
  const device = new VsockDevice({ monitor: tolerant() });
  device.withholdFeatures(bit(VSOCK_FEATURES.NO_IMPLIED_STREAM));
  const { drvMon } = await pair(device);
  assert.deepEqual(clauses(drvMon), ['vsock.feature-bits.device.1']);
  assert.equal(drvMon.verdicts[0].severity, 'warning');
});
