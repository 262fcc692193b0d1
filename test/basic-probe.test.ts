// The well-behaved side of basic.features.driver.3 and basic.reset.driver.1: every virtio-ts
// driver, against a device that offers every feature bit the spec does not describe for its
// type (the offerUndescribedBits probe), disregards those bits: the device says nothing, and
// the only thing the driver says is that the device's offer breaks basic.features.device.4.
// The same drivers read the status back after each reset, over every register transport (the
// device core would otherwise warn). The misbehaving drivers are in src/testing/scenarios.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { Monitor } from '../src/monitor/monitor.js';
import { LoopbackTransport } from '../src/transports/loopback/loopback.js';
import type { VirtioDevice, DeviceType } from '../src/device/device.js';
import { RngDevice } from '../src/devices/rng/device.js';
import { RngDriver } from '../src/drivers/rng.js';
import { BlkDevice } from '../src/devices/blk/device.js';
import { MemoryBlockStorage } from '../src/devices/blk/storage.js';
import { BlkDriver } from '../src/drivers/blk.js';
import { ConsoleDevice, MemoryConsoleEndpoint } from '../src/devices/console/device.js';
import { ConsoleDriver } from '../src/drivers/console.js';
import { NetDevice } from '../src/devices/net/device.js';
import { NetDriver } from '../src/drivers/net.js';
import { VsockDevice } from '../src/devices/vsock/device.js';
import { VsockDriver } from '../src/drivers/vsock.js';
import { featureBits } from '../src/spec/features.js';
import { DEVICE_TYPES, isDescribedFeature } from '../src/spec/device-types.js';
import { Status } from '../src/spec/constants.js';
import type { DriverTransport } from '../src/driver/transport.js';
import { KINDS, connect } from './register-harness.js';

/** Every bit: the device core keeps only the ones the spec does not describe for the type. */
const EVERY_BIT = (1n << 64n) - 1n;
const core = { offerUndescribedBits: EVERY_BIT };

/** What the test needs of a driver. */
interface Driven {
  start(): Promise<void>;
  readonly features: bigint;
}

const CASES: [string, () => VirtioDevice<DeviceType>, (t: DriverTransport, m: Monitor) => Driven][] = [
  ['entropy', () => new RngDevice({ monitor: new Monitor(), core }), (t, monitor) => new RngDriver(t, { monitor })],
  ['block', () => new BlkDevice({ storage: new MemoryBlockStorage(1 << 20, false, 'probe'), monitor: new Monitor(), core }), (t, monitor) => new BlkDriver(t, { monitor })],
  ['console', () => new ConsoleDevice({ backend: new MemoryConsoleEndpoint(), monitor: new Monitor(), core }), (t, monitor) => new ConsoleDriver(t, { monitor })],
  ['network', () => new NetDevice({ monitor: new Monitor(), core }), (t, monitor) => new NetDriver(t, { monitor })],
  ['vsock', () => new VsockDevice({ monitor: new Monitor(), guestCid: 5, core }), (t, monitor) => new VsockDriver(t, { monitor })],
];

for (const [name, makeDevice, makeDriver] of CASES) {
  test(`${name} driver vs a device offering every undescribed bit: none accepted, the device says nothing`, async () => {
    const device = makeDevice();
    const offered = device.getDeviceFeatures();
    const probe = featureBits(offered).filter((b) => !isDescribedFeature(device.deviceId, b));
    assert.ok(probe.length > 10, `the probe offers undescribed bits (${probe.join(', ')})`);
    assert.ok(probe.every((b) => DEVICE_TYPES[device.deviceId]?.features[b] === undefined));
    // Tolerant: the driver's own check of the offer (basic.features.device.4) must not stop it.
    const drvMon = new Monitor({ mode: 'tolerant' });
    const driver = makeDriver(new LoopbackTransport(device, GuestMemory.create(16 << 20)), drvMon);
    await driver.start();
    assert.ok(device.status & Status.DRIVER_OK, 'the driver went live');
    for (const b of probe) assert.ok(!((driver.features >> BigInt(b)) & 1n), `bit ${b} not accepted`);
    assert.deepEqual(device.monitor.verdicts, []);
    assert.deepEqual([...new Set(drvMon.verdicts.map((v) => v.clause))], ['basic.features.device.4']);
  });
}

for (const kind of KINDS) {
  test(`entropy driver over ${kind}: resets read the status back; an undescribed offer is disregarded; the device says nothing`, async () => {
    const device = new RngDevice({ monitor: new Monitor(), core });
    const drvMon = new Monitor({ mode: 'tolerant' });
    const { transport } = await connect(kind, device, { drvMon });
    const driver = new RngDriver(transport, { monitor: drvMon });
    await driver.start();
    assert.equal((await driver.read(16)).length, 16);
    await driver.shutdown();
    await driver.start(); // a second reset and initialization
    assert.equal((await driver.read(16)).length, 16);
    assert.deepEqual(device.monitor.verdicts, []);
  });
}
