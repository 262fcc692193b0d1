// Misbehaving peers for check sites whose clause has a scenario that reaches another site of the
// same clause: each peer here breaks its clause exactly at the site named in its test, so the
// mutation audit (scripts/mutation-audit.mjs) sees each site's verdict asserted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Monitor } from '../../src/monitor/monitor.js';
import { VirtioDevice, type DeviceHost } from '../../src/device/device.js';
import type { DeviceType } from '../../src/device/type.js';
import { RngDevice } from '../../src/devices/rng/device.js';
import { BlkDevice, BlkType } from '../../src/devices/blk/device.js';
import { MemoryBlockStorage } from '../../src/devices/blk/storage.js';
import { BlkDriver } from '../../src/drivers/blk.js';
import { LoopbackTransport } from '../../src/transports/loopback/loopback.js';
import { DeviceId, Feature, Status } from '../../src/spec/constants.js';
import { NET_FEATURES } from '../../src/spec/net.js';
import { bit } from '../../src/spec/features.js';
import { until } from '../wait.js';

const ACK_DRIVER = Status.ACKNOWLEDGE | Status.DRIVER;
const LIVE = ACK_DRIVER | Status.FEATURES_OK | Status.DRIVER_OK;
const host = (extra: Partial<DeviceHost> = {}): DeviceHost => ({ interrupt() {}, configChanged() {}, ...extra });

/** A strict device of `type`, attached to its own memory, driven by hand as a misbehaving driver. */
function byHand<T extends VirtioDevice>(make: (monitor: Monitor) => T, h: DeviceHost = host()) {
  const monitor = new Monitor();
  const dev = make(monitor);
  dev.withholdFeatures(bit(Feature.RING_PACKED)); // split rings: a driver may not decline an offered RING_PACKED
  dev.attach(GuestMemory.create(1 << 16), h);
  return { dev, monitor, clauses: () => monitor.verdicts.map((v) => v.clause) };
}

function negotiate(dev: VirtioDevice, features: bigint): void {
  dev.setStatus(Status.ACKNOWLEDGE);
  dev.setStatus(ACK_DRIVER);
  dev.setDriverFeatures(features);
  dev.setStatus(ACK_DRIVER | Status.FEATURES_OK);
}

function expectOnly(d: { dev: VirtioDevice; monitor: Monitor; clauses: () => string[] }, clause: string): void {
  assert.deepEqual(d.clauses(), [clause]);
  assert.equal(d.monitor.verdicts[0].side, 'driver');
  assert.ok(d.dev.readStatus() & Status.DEVICE_NEEDS_RESET, 'strict: the device enters DEVICE_NEEDS_RESET');
}

const SUSPENDABLE = bit(Feature.VERSION_1) | bit(Feature.SUSPEND);

test('basic.status.driver.2: the driver clears DRIVER_OK in the write that sets SUSPEND', () => {
  const d = byHand((monitor) => new RngDevice({ monitor }));
  negotiate(d.dev, SUSPENDABLE);
  d.dev.setStatus(LIVE);
  assert.deepEqual(d.clauses(), []);
  d.dev.setStatus((LIVE & ~Status.DRIVER_OK) | Status.SUSPEND);
  expectOnly(d, 'basic.status.driver.2');
});

test('basic.status.driver.2: the driver clears SUSPEND instead of setting DRIVER_OK to resume', () => {
  const d = byHand((monitor) => new RngDevice({ monitor }));
  negotiate(d.dev, SUSPENDABLE);
  d.dev.setStatus(LIVE);
  d.dev.setStatus(LIVE | Status.SUSPEND);
  assert.deepEqual(d.clauses(), []);
  assert.ok(d.dev.readStatus() & Status.SUSPEND, 'suspended');
  d.dev.setStatus(LIVE & ~Status.DRIVER_OK);
  expectOnly(d, 'basic.status.driver.2');
});

/** A network device type with nothing behind its queue: only its feature rules matter here. */
const net = (features: bigint): DeviceType => ({ deviceId: DeviceId.NET, features, numQueues: 1, queueMaxSize: 8, process() {} });

test('basic.features.driver.1: the driver accepts GUEST_TSO4 without GUEST_CSUM, which it requires (both offered)', () => {
  const offered = bit(NET_FEATURES.GUEST_TSO4) | bit(NET_FEATURES.GUEST_CSUM);
  const d = byHand((monitor) => new VirtioDevice(net(offered), { monitor }));
  negotiate(d.dev, bit(Feature.VERSION_1) | bit(NET_FEATURES.GUEST_TSO4));
  expectOnly(d, 'basic.features.driver.1');
  assert.equal(d.dev.readStatus() & Status.FEATURES_OK, 0, 'FEATURES_OK is refused');
});

test('basic.status.driver.1: a legacy driver writes its features before ACKNOWLEDGE and DRIVER', () => {
  const d = byHand((monitor) => new RngDevice({ monitor }), host({ legacy: true }));
  d.dev.setDriverFeatures(0n);
  expectOnly(d, 'basic.status.driver.1');
});

test('struct.notification-data.driver.1: the notification data names another queue than the one notified', () => {
  const d = byHand((monitor) => new RngDevice({ monitor }), host({ notificationData: true, synchronous: true }));
  negotiate(d.dev, bit(Feature.VERSION_1) | bit(Feature.NOTIFICATION_DATA));
  d.dev.setQueueSize(0, 8);
  d.dev.setQueueAddresses(0, 0x1000, 0x2000, 0x3000);
  d.dev.enableQueue(0);
  d.dev.setStatus(LIVE);
  assert.deepEqual(d.clauses(), []);
  d.dev.notify(0, 5); // next_off 0, vqn 5
  expectOnly(d, 'struct.notification-data.driver.1');
});

test('blk.device-operation.driver.6: an OUT request carries 100 data bytes (not a multiple of 512)', async () => {
  const devMon = new Monitor();
  const device = new BlkDevice({ storage: new MemoryBlockStorage(1 << 20), monitor: devMon, maxSegments: 1 });
  device.withholdFeatures(bit(Feature.RING_PACKED));
  const mem = GuestMemory.create(4 << 20);
  const driver = new BlkDriver(new LoopbackTransport(device, mem), { monitor: new Monitor() });
  await driver.start();
  const q = driver.queues[0];
  const base = driver.allocator.alloc(16 + 100 + 1, 16);
  mem.writeU32(base, BlkType.OUT);
  mem.writeU64(base + 8, 0n);
  q.begin().addReadable(base, 16).addReadable(base + 16, 100).addWritable(base + 116, 1);
  q.commit({ mem: base, dataLen: 100, resolve: () => undefined, reject: () => undefined }, { indirect: false });
  driver.kick(q);
  await until(() => devMon.verdicts.length > 0, 'a verdict');
  assert.deepEqual(devMon.verdicts.map((v) => v.clause), ['blk.device-operation.driver.6']);
});
