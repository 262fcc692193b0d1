// Drivers that break one pci. driver clause against the virtio-pci register model (capability
// search, MSI-X read-back, legacy and modern interfaces mixed); the model's monitor names
// exactly that clause. And the project's driver over every PCI kind, with no verdict.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Monitor } from '../../src/monitor/monitor.js';
import { RngDevice } from '../../src/devices/rng/device.js';
import { RngDriver } from '../../src/drivers/rng.js';
import { Feature, Status } from '../../src/spec/constants.js';
import { bit } from '../../src/spec/features.js';
import { VirtioPciDevice } from '../../src/transports/pci/device.js';
import { CommonCfg as C, LegacyReg, PciCfg } from '../../src/transports/pci/layout.js';
import { connect, KINDS } from '../register-harness.js';

function pci(transitional: boolean, decoyCapabilities = false) {
  const monitor = new Monitor({ mode: 'tolerant' });
  const device = new RngDevice({ monitor });
  device.withholdFeatures(bit(Feature.RING_PACKED));
  const model = new VirtioPciDevice(device, GuestMemory.create(1 << 20), { transitional, decoyCapabilities });
  return { model, monitor, w: (off: number, size: number, v: number) => model.barWrite(4, off, size, v), r: (off: number, size: number) => model.barRead(4, off, size) };
}

function expectPci(clause: string, transitional: boolean, title: string, act: (p: ReturnType<typeof pci>) => void, decoys = false) {
  test(`pci ${clause}: ${title}`, () => {
    const p = pci(transitional, decoys);
    act(p);
    assert.deepEqual([...new Set(p.monitor.verdicts.map((v) => v.clause))], [clause]);
  });
}

expectPci('pci.legacy-device-layout-detection.driver.3', false, 'a modern-only function driven without searching the capability list', ({ r }) => {
  r(C.DeviceStatus, 1); // BAR4's layout guessed, not read from the capabilities
});

expectPci('pci.legacy-device-layout-detection.driver.1', true, 'a transitional function driven through the modern structures without searching the capability list', ({ w }) => {
  w(C.DeviceStatus, 1, 0);
});

expectPci('pci.msi-x-vector-config.driver.5', false, 'a queue vector mapped and never read back', ({ model, w, r }) => {
  model.configRead(PciCfg.CapabilitiesPointer, 1);
  w(C.DeviceStatus, 1, 0);
  r(C.DeviceStatus, 1);
  w(C.DeviceStatus, 1, Status.ACKNOWLEDGE);
  w(C.QueueSelect, 2, 0);
  w(C.QueueMsixVector, 2, 1);
  w(C.QueueSelect, 2, 1); // on to the next queue: vector 1 never confirmed
});

expectPci('pci.legacy-device-layout.driver.1', true, 'a legacy driver (status through BAR0) that sets a queue up through the modern common configuration', ({ model, w }) => {
  model.configRead(PciCfg.CapabilitiesPointer, 1);
  model.barWrite(0, LegacyReg.DeviceStatus, 1, 0);
  model.barRead(0, LegacyReg.DeviceStatus, 1);
  model.barWrite(0, LegacyReg.DeviceStatus, 1, Status.ACKNOWLEDGE);
  model.barWrite(0, LegacyReg.DeviceStatus, 1, Status.ACKNOWLEDGE | Status.DRIVER);
  w(C.QueueSelect, 2, 0);
});

/** The virtio vendor capabilities in list order: [offset in config space, cfg_type]. */
function vendorCaps(model: VirtioPciDevice): [number, number][] {
  const out: [number, number][] = [];
  for (let at = model.configRead(PciCfg.CapabilitiesPointer, 1); at !== 0; at = model.configRead(at + 1, 1)) {
    if (model.configRead(at, 1) === 0x09) out.push([at, model.configRead(at + 3, 1)]);
  }
  return out;
}

/** A driver that takes the capability at `pick` (of the vendor list) as the common configuration and reads device_status there. */
function useCapability(model: VirtioPciDevice, pick: (caps: [number, number][]) => number) {
  const at = pick(vendorCaps(model));
  const offset = model.configRead(at + 8, 4);
  model.barRead(model.configRead(at + 4, 1), offset + C.DeviceStatus, 1);
}

expectPci('pci.virtio-struct-pci-capabilities.driver.2', false, 'the second common configuration capability used, not the first', ({ model }) => {
  useCapability(model, (caps) => caps.filter(([, type]) => type === 1)[1][0]);
}, true);

expectPci('pci.virtio-struct-pci-capabilities.driver.1', false, 'a capability of a reserved cfg_type not skipped', ({ model }) => {
  useCapability(model, (caps) => caps.find(([, type]) => type === 7)![0]);
}, true);

test('pci: a driver that takes the first common configuration capability and skips the reserved one, with decoys listed: no verdict', () => {
  const p = pci(false, true);
  useCapability(p.model, (caps) => caps.find(([, type]) => type === 1)![0]);
  assert.deepEqual(p.monitor.verdicts, []);
});

test('pci: a legacy driver, then a modern one that starts with a reset: no verdict (the device is handed over)', () => {
  const p = pci(true);
  p.model.configRead(PciCfg.CapabilitiesPointer, 1);
  p.model.barWrite(0, LegacyReg.DeviceStatus, 1, Status.ACKNOWLEDGE);
  p.w(C.DeviceStatus, 1, 0);
  p.r(C.DeviceStatus, 1);
  p.w(C.DeviceStatus, 1, Status.ACKNOWLEDGE);
  p.w(C.QueueSelect, 2, 0);
  assert.deepEqual(p.monitor.verdicts, []);
});

for (const [kind, decoyCapabilities] of [...KINDS.filter((k) => k.startsWith('pci')).map((k) => [k, false] as const), ['pci-modern', true] as const]) {
  test(`pci: the project driver over ${kind}${decoyCapabilities ? ' with decoy capabilities' : ''}: no verdict on the model`, async () => {
    const devMon = new Monitor();
    const device = new RngDevice({ monitor: devMon });
    device.withholdFeatures(bit(Feature.RING_PACKED));
    const { transport, drvMon } = await connect(kind, device, { pci: { decoyCapabilities } });
    const driver = new RngDriver(transport, { monitor: drvMon });
    await driver.start();
    assert.equal((await driver.read(64)).length, 64);
    await driver.shutdown();
    assert.deepEqual([...devMon.verdicts, ...drvMon.verdicts], []);
  });
}
