// Drivers that break one mmio. driver clause against the virtio-mmio register model, or against
// an unpopulated window (VirtioMmioPlaceholder); the model's monitor names exactly that clause.
// And the well-behaved runs: the project's driver over the same windows, with no verdict.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Monitor } from '../../src/monitor/monitor.js';
import { RngDevice } from '../../src/devices/rng/device.js';
import { RngDriver } from '../../src/drivers/rng.js';
import { Status } from '../../src/spec/constants.js';
import { bit } from '../../src/spec/features.js';
import { Feature } from '../../src/spec/constants.js';
import { VirtioMmioDevice } from '../../src/transports/mmio/device.js';
import { MmioTransport, directMmioBus, type MmioBus } from '../../src/transports/mmio/driver.js';
import { VirtioMmioPlaceholder, type MmioPlaceholderKind } from '../../src/transports/mmio/placeholder.js';
import { MmioReg as R } from '../../src/transports/mmio/registers.js';

function model(version: 1 | 2) {
  const monitor = new Monitor({ mode: 'tolerant' });
  const device = new RngDevice({ monitor });
  device.withholdFeatures(bit(Feature.RING_PACKED));
  const m = new VirtioMmioDevice(device, GuestMemory.create(1 << 20), { version });
  return { m, monitor, w: (off: number, v: number) => m.write(off, 4, v), r: (off: number) => m.read(off, 4) };
}

/** A driver's accesses on a fresh model of `version`; exactly `clause` is reported. */
function expectModel(clause: string, version: 1 | 2, title: string, act: (x: ReturnType<typeof model>) => void) {
  test(`mmio ${clause}: ${title}`, () => {
    const x = model(version);
    act(x);
    assert.deepEqual([...new Set(x.monitor.verdicts.map((v) => v.clause))], [clause]);
  });
}

expectModel('mmio.device-init.driver.2', 2, 'initialization started without reading DeviceID', ({ r, w }) => {
  r(R.MagicValue);
  r(R.Version);
  w(R.Status, 0);
});

expectModel('mmio.device-register-layout.driver.6', 1, 'a version 1 device driven through a version 2 register', ({ r, w }) => {
  r(R.MagicValue);
  r(R.Version); // 1
  r(R.DeviceID);
  w(R.Status, 0);
  r(R.Status);
  w(R.Status, Status.ACKNOWLEDGE);
  w(R.QueueSel, 0);
  r(R.QueueReady); // version 2 only
});

expectModel('mmio.device-register-layout.driver.1', 1, 'GuestPageSize not a power of 2 (legacy)', ({ r, w }) => {
  r(R.MagicValue);
  r(R.Version);
  r(R.DeviceID);
  w(R.Status, 0);
  w(R.GuestPageSize, 3000);
});

expectModel('mmio.device-register-layout.driver.13', 1, 'QueuePFN rewritten while the queue is in use (legacy)', ({ r, w }) => {
  r(R.MagicValue);
  r(R.Version);
  r(R.DeviceID);
  w(R.Status, 0);
  r(R.Status);
  w(R.Status, Status.ACKNOWLEDGE);
  w(R.Status, Status.ACKNOWLEDGE | Status.DRIVER);
  w(R.GuestPageSize, 4096);
  w(R.QueueSel, 0);
  w(R.QueueSize, 16);
  w(R.QueueAlign, 4096);
  w(R.QueuePFN, 0x10);
  w(R.QueuePFN, 0x20); // in use: 0 first
});

/** A driver's accesses on an unpopulated window; exactly `clause` is reported. */
function expectPlaceholder(clause: string, kind: MmioPlaceholderKind, title: string, act: (p: VirtioMmioPlaceholder) => void) {
  test(`mmio ${clause}: ${title}`, () => {
    const monitor = new Monitor({ mode: 'tolerant' });
    const p = new VirtioMmioPlaceholder(monitor, kind);
    act(p);
    assert.deepEqual(monitor.verdicts.map((v) => v.clause), [clause]);
  });
}

expectPlaceholder('mmio.device-register-layout.driver.4', 'absent', 'a window whose MagicValue is wrong is read on', (p) => {
  assert.equal(p.read(R.MagicValue, 4), 0);
  p.read(R.Version, 4);
  p.read(R.DeviceID, 4); // one verdict for the window
});

expectPlaceholder('mmio.device-register-layout.driver.8', 'empty', 'an empty slot (DeviceID 0) is initialized', (p) => {
  p.read(R.MagicValue, 4);
  p.read(R.Version, 4);
  assert.equal(p.read(R.DeviceID, 4), 0);
  p.write(R.Status, 4, Status.ACKNOWLEDGE);
});

expectPlaceholder('mmio.device-init.driver.3', 'empty', 'another register of an empty slot is read after DeviceID 0', (p) => {
  p.read(R.MagicValue, 4);
  p.read(R.Version, 4);
  p.read(R.DeviceID, 4);
  p.read(R.DeviceFeatures, 4);
});

test('mmio: the project driver over empty and absent windows: refused with the right kind, no verdict on the driver', async () => {
  for (const [kind, error] of [
    ['empty', 'no-device'],
    ['absent', 'not-virtio'],
  ] as const) {
    const monitor = new Monitor();
    const p = new VirtioMmioPlaceholder(monitor, kind);
    const bus: MmioBus = {
      read: async (off, size) => Number(p.read(off, size)),
      write: async (off, size, v) => p.write(off, size, v),
      onInterrupt: () => undefined,
    };
    await assert.rejects(MmioTransport.open(bus, GuestMemory.create(1 << 16), { monitor: new Monitor({ mode: 'tolerant' }) }), (e: Error & { kind?: string }) => e.kind === error);
    assert.deepEqual(monitor.verdicts, [], kind);
  }
});

test('mmio: the project driver over version 1 and 2 models: no verdict on either side', async () => {
  for (const version of [1, 2] as const) {
    const x = model(version);
    const drvMon = new Monitor();
    const driver = new RngDriver(await MmioTransport.open(directMmioBus(x.m), x.m.memory, { monitor: drvMon }), { monitor: drvMon });
    await driver.start();
    assert.equal((await driver.read(64)).length, 64);
    await driver.shutdown();
    assert.deepEqual([...x.monitor.verdicts, ...drvMon.verdicts], [], `version ${version}`);
  }
});
