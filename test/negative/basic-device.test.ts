// Basic facilities (spec 2) judged by the device core (issue 17): a driver driven by hand
// breaks exactly one clause; the device names it. The same steps done right draw no verdict.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Monitor } from '../../src/monitor/monitor.js';
import { VirtioDevice } from '../../src/device/device.js';
import type { DeviceType } from '../../src/device/type.js';
import { RngDevice } from '../../src/devices/rng/device.js';
import { RngDriver } from '../../src/drivers/rng.js';
import { LoopbackTransport } from '../../src/transports/loopback/loopback.js';
import { DeviceId, Feature, Status } from '../../src/spec/constants.js';
import { NET_FEATURES } from '../../src/spec/net.js';
import { bit } from '../../src/spec/features.js';

const ACK_DRIVER = Status.ACKNOWLEDGE | Status.DRIVER;

function byHand<T extends VirtioDevice>(make: (monitor: Monitor) => T) {
  const monitor = new Monitor();
  const dev = make(monitor);
  dev.withholdFeatures(bit(Feature.RING_PACKED));
  dev.attach(GuestMemory.create(1 << 16), { interrupt() {}, configChanged() {} });
  return { dev, monitor, clauses: () => monitor.verdicts.map((v) => v.clause) };
}

const net = (features: bigint): DeviceType => ({ deviceId: DeviceId.NET, features, numQueues: 1, queueMaxSize: 8, process() {} });

test('basic.features.driver.2: the driver accepts GUEST_TSO4, whose requirement GUEST_CSUM the device does not offer', () => {
  // The offer itself is inconsistent (basic.features.device.1, the device's fault); a driver
  // that validated it would have dropped GUEST_TSO4.
  const d = byHand((monitor) => new VirtioDevice(net(bit(NET_FEATURES.GUEST_TSO4)), { monitor }));
  d.dev.setStatus(Status.ACKNOWLEDGE);
  d.dev.setStatus(ACK_DRIVER);
  d.dev.setDriverFeatures(bit(Feature.VERSION_1) | bit(NET_FEATURES.GUEST_TSO4));
  d.dev.setStatus(ACK_DRIVER | Status.FEATURES_OK);
  // Accepting a feature without its requirement is basic.features.driver.1 as well.
  assert.deepEqual(d.clauses(), ['basic.features.driver.1', 'basic.features.driver.2']);
  assert.equal(d.dev.readStatus() & Status.FEATURES_OK, 0, 'FEATURES_OK is refused');
});

test('a driver that drops the feature whose requirement is not offered: no verdict', () => {
  const d = byHand((monitor) => new VirtioDevice(net(bit(NET_FEATURES.GUEST_TSO4) | bit(NET_FEATURES.MTU)), { monitor }));
  d.dev.setStatus(Status.ACKNOWLEDGE);
  d.dev.setStatus(ACK_DRIVER);
  d.dev.setDriverFeatures(bit(Feature.VERSION_1) | bit(NET_FEATURES.MTU));
  d.dev.setStatus(ACK_DRIVER | Status.FEATURES_OK);
  assert.ok(d.dev.readStatus() & Status.FEATURES_OK);
  assert.deepEqual(d.clauses(), []);
});

// ------------------------------------------------------------------ split ring probes

test('split.used-buffer-notif-suppr.driver.5: the driver answers a used-buffer notification with nothing new by setting FAILED', () => {
  const monitor = new Monitor();
  // The driver: it gives up on any used-buffer notification it cannot account for.
  const dev: RngDevice = new RngDevice({ monitor });
  dev.withholdFeatures(bit(Feature.RING_PACKED));
  dev.attach(GuestMemory.create(1 << 16), { interrupt: () => dev.setStatus(dev.readStatus() | Status.FAILED), configChanged() {} });
  live(dev);
  dev.notifyWithNothingNew(0);
  assert.deepEqual(monitor.verdicts.map((v) => v.clause), ['split.used-buffer-notif-suppr.driver.5']);
  assert.ok(dev.status & Status.DEVICE_NEEDS_RESET, 'strict: the device enters DEVICE_NEEDS_RESET');
});

test('the project entropy driver takes used-buffer notifications with nothing new in its stride: no verdict', async () => {
  const devMon = new Monitor();
  const drvMon = new Monitor();
  const device = new RngDevice({ monitor: devMon });
  device.withholdFeatures(bit(Feature.RING_PACKED));
  const driver = new RngDriver(new LoopbackTransport(device, GuestMemory.create(1 << 20)), { monitor: drvMon, transportFeatures: bit(Feature.VERSION_1) | bit(Feature.INDIRECT_DESC) | bit(Feature.SUSPEND) });
  await driver.start();
  device.notifyWithNothingNew(0);
  assert.equal((await driver.read(8)).length, 8);
  device.notifyWithNothingNew(0);
  await driver.suspend();
  await driver.resume();
  assert.deepEqual(devMon.verdicts, []);
  assert.deepEqual(drvMon.verdicts, []);
});

function live(dev: RngDevice): void {
  dev.setStatus(Status.ACKNOWLEDGE);
  dev.setStatus(ACK_DRIVER);
  dev.setDriverFeatures(bit(Feature.VERSION_1));
  dev.setStatus(ACK_DRIVER | Status.FEATURES_OK);
  dev.setQueueSize(0, 8);
  dev.setQueueAddresses(0, 0x1000, 0x2000, 0x3000);
  dev.enableQueue(0);
  dev.setStatus(ACK_DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
}
