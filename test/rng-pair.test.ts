import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { Monitor } from '../src/conformance/monitor.js';
import { LoopbackTransport } from '../src/transports/loopback.js';
import { RngDevice } from '../src/devices/rng.js';
import { RngDriver } from '../src/drivers/rng.js';
import { Status } from '../src/core/constants.js';

for (const mode of ['sync', 'async'] as const) {
  test(`entropy pair over loopback (${mode}): negotiation, reads, no verdicts`, async () => {
    const mem = GuestMemory.create(1 << 20);
    const devMon = new Monitor();
    const drvMon = new Monitor();
    let counter = 0;
    const device = new RngDevice({ monitor: devMon, source: (d) => d.forEach((_, i) => (d[i] = counter++ & 0xff)) });
    const transport = new LoopbackTransport(device, mem, { mode });
    const driver = new RngDriver(transport, { monitor: drvMon });
    await driver.start();
    assert.equal(device.getStatus(), Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
    const bytes = await driver.read(10000);
    assert.equal(bytes.length, 10000);
    for (let i = 0; i < bytes.length; i++) assert.equal(bytes[i], i & 0xff);
    assert.deepEqual(devMon.verdicts, []);
    assert.deepEqual(drvMon.verdicts, []);
  });
}
