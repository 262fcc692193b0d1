import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { Monitor } from '../src/monitor/monitor.js';
import { RngDevice } from '../src/devices/rng/device.js';
import { RngDriver } from '../src/drivers/rng.js';
import { VirtioMmioDevice } from '../src/transports/mmio/device.js';
import { MmioTransport, directMmioBus } from '../src/transports/mmio/driver.js';

for (const version of [1, 2] as const) {
  test(`smoke mmio v${version}`, async () => {
    const mem = GuestMemory.create(1 << 20);
    const devMon = new Monitor();
    const drvMon = new Monitor();
    const device = new RngDevice({ monitor: devMon });
    const model = new VirtioMmioDevice(device, mem, { version });
    const t = await MmioTransport.open(directMmioBus(model), mem, { monitor: drvMon });
    const driver = new RngDriver(t, { monitor: drvMon });
    await driver.start();
    const parts = await Promise.all(Array.from({ length: 20 }, () => driver.read(100)));
    assert.equal(parts.reduce((n, p) => n + p.length, 0), 2000);
    assert.deepEqual(devMon.verdicts, []);
    assert.deepEqual(drvMon.verdicts, []);
    console.log(device.ringFormat, driver.features.toString(16), model.counts);
  });
}
import { VirtioPciDevice } from '../src/transports/pci/device.js';
import { PciTransport, directPciBus } from '../src/transports/pci/driver.js';
for (const transitional of [false, true]) for (const mode of ['modern', 'legacy'] as const) for (const msix of [true, false]) {
  if (mode === 'legacy' && !transitional) continue;
  test(`smoke pci transitional=${transitional} ${mode} msix=${msix}`, async () => {
    const mem = GuestMemory.create(1 << 20);
    const devMon = new Monitor();
    const drvMon = new Monitor();
    const device = new RngDevice({ monitor: devMon });
    const model = new VirtioPciDevice(device, mem, { transitional });
    const t = await PciTransport.open(directPciBus(model), mem, { monitor: drvMon, mode, msix });
    const driver = new RngDriver(t, { monitor: drvMon });
    await driver.start();
    const parts = await Promise.all(Array.from({ length: 20 }, () => driver.read(100)));
    assert.equal(parts.reduce((n, p) => n + p.length, 0), 2000);
    assert.deepEqual(devMon.verdicts, []);
    assert.deepEqual(drvMon.verdicts, []);
    console.log(device.ringFormat, driver.features.toString(16), model.counts);
  });
}
