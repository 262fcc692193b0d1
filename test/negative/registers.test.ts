// A driver that breaks exactly one mmio. or pci. clause at the register level, for each clause
// the register models enforce; the device's monitor names the clause. Also a device that breaks
// one, for the clauses the driver-side transports check. Nothing throws to the embedder.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Monitor } from '../../src/monitor/monitor.js';
import { RngDevice } from '../../src/devices/rng/device.js';
import { Feature, Status } from '../../src/spec/constants.js';
import { bit } from '../../src/spec/features.js';
import { VirtioMmioDevice } from '../../src/transports/mmio/device.js';
import { MmioTransport, directMmioBus } from '../../src/transports/mmio/driver.js';
import { MmioReg as R } from '../../src/transports/mmio/registers.js';
import { VirtioPciDevice } from '../../src/transports/pci/device.js';
import { PciTransport, directPciBus } from '../../src/transports/pci/driver.js';
import { CapField, CommonCfg as C, PciCfg } from '../../src/transports/pci/layout.js';
import { RngDriver } from '../../src/drivers/rng.js';
import { BlkDevice } from '../../src/devices/blk/device.js';
import { MemoryBlockStorage } from '../../src/devices/blk/storage.js';

const ACK_DRIVER = Status.ACKNOWLEDGE | Status.DRIVER;

function mmio(version: 1 | 2 = 2) {
  const monitor = new Monitor({ mode: 'tolerant' });
  const device = new RngDevice({ monitor });
  const model = new VirtioMmioDevice(device, GuestMemory.create(1 << 20), { version });
  const w = (off: number, v: number) => model.write(off, 4, v);
  const r = (off: number) => model.read(off, 4);
  /** A correct start up to FEATURES_OK (VERSION_1 | RING_RESET | NOTIFICATION_DATA as `high`). */
  const negotiate = (high = 1) => {
    if (!(high & (1 << (Feature.RING_PACKED - 32)))) device.withholdFeatures(bit(Feature.RING_PACKED));
    r(R.MagicValue);
    r(R.Version);
    r(R.DeviceID);
    w(R.Status, 0);
    r(R.Status); // the reset is complete once the status reads 0
    w(R.Status, Status.ACKNOWLEDGE);
    w(R.Status, ACK_DRIVER);
    w(R.DriverFeaturesSel, 1);
    w(R.DriverFeatures, high);
    w(R.DriverFeaturesSel, 0);
    w(R.DriverFeatures, 0);
    w(R.Status, ACK_DRIVER | Status.FEATURES_OK);
  };
  const clauses = () => monitor.verdicts.map((v) => v.clause);
  return { model, device, monitor, w, r, negotiate, clauses };
}

/** Runs `act` on a fresh model and expects exactly `clause` among the verdicts (and no throw). */
function expectMmio(clause: string, act: (m: ReturnType<typeof mmio>) => void, version: 1 | 2 = 2) {
  test(`mmio: ${clause}`, () => {
    const m = mmio(version);
    act(m);
    assert.deepEqual([...new Set(m.clauses())], [clause]);
  });
}

expectMmio('mmio.device-register-layout.driver.1', (m) => {
  m.negotiate();
  m.r(R.QueueSel); // a write-only register
});
expectMmio('mmio.device-register-layout.driver.1', (m) => {
  m.negotiate();
  m.w(R.MagicValue, 0); // a read-only one
});
expectMmio('mmio.device-register-layout.driver.1', (m) => {
  m.negotiate();
  m.r(0x0c8); // nothing there
});
expectMmio('mmio.device-register-layout.driver.2', (m) => {
  m.negotiate();
  m.model.read(R.Status, 1);
});
expectMmio('mmio.device-register-layout.driver.3', (m) => {
  m.negotiate();
  m.model.read(R.Config + 1, 2); // an unaligned 16-bit read of configuration space
});
expectMmio('mmio.device-register-layout.driver.10', (m) => {
  m.r(R.MagicValue);
  m.r(R.Version);
  m.r(R.DeviceID);
  m.w(R.Status, 0);
  m.r(R.DeviceFeatures);
});
expectMmio('mmio.device-register-layout.driver.11', (m) => {
  m.r(R.MagicValue);
  m.r(R.Version);
  m.r(R.DeviceID);
  m.w(R.Status, 0);
  m.r(R.Status);
  m.w(R.Status, Status.ACKNOWLEDGE);
  m.w(R.Status, ACK_DRIVER);
  m.w(R.DriverFeatures, 0);
});
expectMmio('mmio.device-register-layout.driver.12', (m) => {
  m.negotiate();
  m.w(R.QueueSel, 0);
  m.w(R.QueueSize, 4096); // QueueSizeMax is 64
});
expectMmio('mmio.device-register-layout.driver.13', (m) => {
  m.negotiate();
  m.w(R.QueueSel, 0);
  m.w(R.QueueSize, 8);
  m.w(R.QueueDescLow, 0x1000);
  m.w(R.QueueDriverLow, 0x2000);
  m.w(R.QueueDeviceLow, 0x3000);
  m.w(R.QueueReady, 1);
  m.w(R.QueueSize, 16); // while ready
});
expectMmio('mmio.device-register-layout.driver.14', (m) => {
  m.negotiate();
  m.w(R.QueueSel, 0);
  m.w(R.QueueReady, 0);
  m.w(R.Status, 0); // without reading QueueReady back
});
expectMmio('mmio.device-register-layout.driver.16', (m) => {
  m.negotiate();
  m.r(R.InterruptStatus);
  m.w(R.InterruptACK, 1); // nothing pending
});
expectMmio('mmio.device-register-layout.driver.17', (m) => {
  m.negotiate();
  m.w(R.InterruptACK, 4);
});
// mmio.device-register-layout.driver.18: test/negative/basic-registers.test.ts (named with basic.vq-reset.driver.1)
expectMmio('mmio.device-init.driver.1', (m) => {
  m.w(R.Status, 0); // never read MagicValue and Version
});
expectMmio('mmio.notif-from-the-device.driver.1', (m) => {
  m.negotiate();
  m.w(R.Status, ACK_DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
  m.device.needsReset('test: a configuration change interrupt'); // raises InterruptStatus bit 1
  m.w(R.InterruptACK, 2); // without reading InterruptStatus
});

test('mmio: every offset and width, read and written, in any state: no exception reaches the embedder', () => {
  for (const version of [1, 2] as const) {
    const m = mmio(version);
    for (let off = 0; off < 0x140; off++) {
      for (const size of [1, 2, 3, 4, 8]) {
        m.model.read(off, size);
        m.model.write(off, size, 0xffffffff);
        m.model.write(off, size, 1n << 40n);
        m.model.write(off, size, Number.NaN);
        m.model.write(off, size, -1);
      }
    }
    assert.ok(m.monitor.verdicts.length > 0);
  }
});

// ---------------------------------------------------------------- PCI

function pci(transitional = false) {
  const monitor = new Monitor({ mode: 'tolerant' });
  const device = new RngDevice({ monitor });
  const model = new VirtioPciDevice(device, GuestMemory.create(1 << 20), { transitional });
  model.configRead(PciCfg.CapabilitiesPointer, 1); // the driver finds the structures through the capability list
  const V = 4; // the virtio BAR
  const w = (off: number, size: number, v: number) => model.barWrite(V, off, size, v);
  const r = (off: number, size: number) => model.barRead(V, off, size);
  const negotiate = (high = 1) => {
    if (!(high & (1 << (Feature.RING_PACKED - 32)))) device.withholdFeatures(bit(Feature.RING_PACKED));
    w(C.DeviceStatus, 1, 0);
    r(C.DeviceStatus, 1);
    w(C.DeviceStatus, 1, Status.ACKNOWLEDGE);
    w(C.DeviceStatus, 1, ACK_DRIVER);
    w(C.DriverFeatureSelect, 4, 1);
    w(C.DriverFeature, 4, high);
    w(C.DriverFeatureSelect, 4, 0);
    w(C.DriverFeature, 4, 0);
    w(C.DeviceStatus, 1, ACK_DRIVER | Status.FEATURES_OK);
  };
  const setupQueue = () => {
    w(C.QueueSelect, 2, 0);
    w(C.QueueSize, 2, 8);
    w(C.QueueDesc, 4, 0x1000);
    w(C.QueueDriver, 4, 0x2000);
    w(C.QueueDevice, 4, 0x3000);
  };
  const clauses = () => monitor.verdicts.map((v) => v.clause);
  return { model, device, monitor, w, r, negotiate, setupQueue, clauses };
}

function expectPci(clause: string, act: (p: ReturnType<typeof pci>) => void) {
  test(`pci: ${clause}`, () => {
    const p = pci();
    act(p);
    assert.deepEqual([...new Set(p.clauses())], [clause]);
  });
}

const NOTIFY = 0x3000;
expectPci('pci.device-layout.driver.1', (p) => {
  p.negotiate();
  p.r(C.QueueSize, 4); // a 16-bit field read 32 bits wide
});
test('pci: pci.device-layout.driver.1 (device configuration read unaligned)', () => {
  const monitor = new Monitor({ mode: 'tolerant' });
  const model = new VirtioPciDevice(new BlkDevice({ storage: new MemoryBlockStorage(1 << 20, false), monitor }), GuestMemory.create(1 << 20));
  model.configRead(PciCfg.CapabilitiesPointer, 1);
  model.barRead(4, 0x2000 + 1, 2); // an unaligned 16-bit read of the capacity
  model.barRead(4, 0x2000, 4); // natural: no verdict
  assert.deepEqual(monitor.verdicts.map((v) => v.clause), ['pci.device-layout.driver.1']);
});
expectPci('pci.common-config-struct-layout.driver.1', (p) => {
  p.negotiate();
  p.w(C.NumQueues, 2, 5);
});
expectPci('pci.common-config-struct-layout.driver.2', (p) => {
  p.negotiate(1 | (1 << (Feature.RING_PACKED - 32)));
  p.w(C.QueueSelect, 2, 0);
  p.w(C.QueueSize, 2, 0);
});
expectPci('pci.common-config-struct-layout.driver.3', (p) => {
  p.negotiate();
  p.w(C.QueueSelect, 2, 0);
  p.w(C.QueueSize, 2, 12);
});
expectPci('pci.common-config-struct-layout.driver.4', (p) => {
  p.negotiate();
  p.w(C.QueueSelect, 2, 0);
  p.w(C.QueueSize, 2, 8);
  p.w(C.QueueDesc, 4, 0x1000); // queue_driver and queue_device never written
  p.w(C.QueueEnable, 2, 1);
});
expectPci('pci.common-config-struct-layout.driver.5', (p) => {
  p.w(C.DeviceStatus, 1, 0);
  p.w(C.DeviceStatus, 1, Status.ACKNOWLEDGE); // without reading device_status back as 0
});
expectPci('pci.common-config-struct-layout.driver.6', (p) => {
  p.negotiate();
  p.setupQueue();
  p.w(C.QueueEnable, 2, 0);
});
// pci.common-config-struct-layout.driver.7: test/negative/basic-registers.test.ts (named with basic.vq-reset.driver.1)
expectPci('pci.msi-x-vector-config.driver.4', (p) => {
  p.negotiate();
  p.w(C.ConfigMsixVector, 2, 7); // the table has 2 entries
});
expectPci('pci.isr-status-cap.driver.1', (p) => {
  const cap = p.model.configRead(PciCfg.CapabilitiesPointer, 1); // MSI-X comes first
  p.model.configWrite(cap + 2, 2, 0x8000);
  p.negotiate();
  p.r(0x1000, 1);
});
for (const [clause, size, value, nd] of [
  ['pci.avail-buffer-notif.driver.1', 4, 0, false],
  ['pci.avail-buffer-notif.driver.3', 2, 1, false],
  ['pci.avail-buffer-notif.driver.2', 2, 0, true],
  ['pci.avail-buffer-notif.driver.4', 4, 1, true],
] as const) {
  expectPci(clause, (p) => {
    p.negotiate(nd ? 1 | (1 << (Feature.NOTIFICATION_DATA - 32)) : 1);
    p.setupQueue();
    p.w(C.QueueEnable, 2, 1);
    p.w(C.DeviceStatus, 1, ACK_DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
    p.w(NOTIFY, size, value); // queue 0's address
  });
}
expectPci('pci.virtio-struct-pci-capabilities.driver.8', (p) => {
  const first = p.model.configRead(PciCfg.CapabilitiesPointer, 1);
  const common = p.model.configRead(first + 1, 1); // after MSI-X: the common capability
  p.model.configWrite(common + CapField.Offset, 4, 0x100);
});
function pciCfgCap(p: ReturnType<typeof pci>): number {
  for (let at = p.model.configRead(PciCfg.CapabilitiesPointer, 1); at !== 0; at = p.model.configRead(at + 1, 1)) {
    if (p.model.configRead(at, 1) === 0x09 && p.model.configRead(at + CapField.CfgType, 1) === 5) return at;
  }
  throw new Error('no PCI_CFG capability');
}
// pci.config-access-cap.driver.2 is the same sentence as driver.1: this test breaks both ('pci.config-access-cap.driver.2').
expectPci('pci.config-access-cap.driver.1', (p) => {
  const at = pciCfgCap(p);
  p.model.configWrite(at + CapField.Bar, 1, 4);
  p.model.configWrite(at + CapField.Offset, 4, C.DeviceStatus + 1);
  p.model.configWrite(at + CapField.Length, 4, 2); // offset not a multiple of the length
  p.model.configRead(at + CapField.PciCfgData, 4);
});
expectPci('pci.config-access-cap.driver.3', (p) => {
  const at = pciCfgCap(p);
  p.model.configWrite(at + CapField.Bar, 1, 4);
  p.model.configWrite(at + CapField.Offset, 4, 0x800); // between the structures
  p.model.configWrite(at + CapField.Length, 4, 4);
  p.model.configRead(at + CapField.PciCfgData, 4);
});

test('pci: a configuration space dump (lspci -xxx) with the PCI_CFG window never programmed is no verdict', () => {
  const p = pci();
  for (let off = 0; off < 256; off += 4) p.model.configRead(off, 4); // pci_cfg_data with cap.length 0 included
  assert.deepEqual(p.clauses(), []);
});

test('pci: every configuration and BAR offset and width, read and written: no exception reaches the embedder', () => {
  for (const transitional of [false, true]) {
    const p = pci(transitional);
    for (let off = 0; off < 256; off++) for (const size of [1, 2, 3, 4]) p.model.configRead(off, size);
    for (const bar of [0, 1, 2, 4, 5, 9]) {
      for (let off = 0; off < 0x3100; off += off < 0x80 ? 1 : 61) {
        for (const size of [1, 2, 3, 4, 8]) {
          p.model.barRead(bar, off, size);
          p.model.barWrite(bar, off, size, 0xffffffff);
          p.model.barWrite(bar, off, size, Number.NaN);
        }
      }
    }
    for (let off = 0; off < 256; off++) for (const size of [1, 2, 4]) p.model.configWrite(off, size, 0xffffffff);
    for (let off = 0; off < 256; off++) p.model.configWrite(off, 4, Number.NaN);
    assert.ok(p.monitor.verdicts.length > 0);
  }
});

// ---------------------------------------------------------------- devices that break a clause, judged by the driver-side transports

test('mmio driver side: mmio.device-register-layout.device.4 (undefined InterruptStatus bits; the driver ignores them: mmio.device-register-layout.driver.15)', async () => {
  const mem = GuestMemory.create(1 << 20);
  const device = new RngDevice();
  const model = new VirtioMmioDevice(device, mem);
  const read = model.read.bind(model);
  model.read = (off, size) => (off === R.InterruptStatus ? Number(read(off, size)) | 0x10 : read(off, size));
  const drvMon = new Monitor({ mode: 'tolerant' });
  const driver = new RngDriver(await MmioTransport.open(directMmioBus(model), mem, { monitor: drvMon }), { monitor: drvMon });
  await driver.start();
  // mmio.device-register-layout.driver.15: the unknown bit is disregarded, the driver still serves.
  const bytes = await driver.read(8);
  assert.equal(bytes.length, 8);
  assert.ok(drvMon.verdicts.some((v) => v.clause === 'mmio.device-register-layout.device.4'));
});

/** A virtio-mmio device whose register at `reg` always reads `value`, and the driver transport on it. */
async function lyingMmio(reg: number, value: number) {
  const mem = GuestMemory.create(1 << 20);
  const model = new VirtioMmioDevice(new RngDevice(), mem);
  const read = model.read.bind(model);
  model.read = (off, size) => (off === reg ? value : read(off, size));
  const drvMon = new Monitor({ mode: 'tolerant' });
  return { drvMon, t: await MmioTransport.open(directMmioBus(model), mem, { monitor: drvMon }) };
}

test('mmio driver side: mmio.device-register-layout.device.5 (InterruptStatus not cleared by a reset)', async () => {
  const { t, drvMon } = await lyingMmio(R.InterruptStatus, 2);
  await t.setStatus(0);
  assert.deepEqual(drvMon.verdicts.map((v) => v.clause), ['mmio.device-register-layout.device.5']);
});

test('mmio driver side: mmio.device-register-layout.device.12 (QueueReady still 1 after a queue reset)', async () => {
  const { t, drvMon } = await lyingMmio(R.QueueReady, 1);
  await t.resetQueue(0);
  assert.equal(await t.queueResetPending(0), false);
  assert.deepEqual(drvMon.verdicts.map((v) => v.clause), ['mmio.device-register-layout.device.12']);
});

test('pci driver side: a function with no virtio ids, a non-transitional one without capabilities', async () => {
  const mem = GuestMemory.create(1 << 20);
  const model = new VirtioPciDevice(new RngDevice(), mem);
  const bus = directPciBus(model);
  await assert.rejects(PciTransport.open({ ...bus, configRead: async (o, s) => (o === 0 ? 0x8086 : bus.configRead(o, s)) }, mem), (e: Error & { kind?: string }) => e.kind === 'not-virtio');
  await assert.rejects(PciTransport.open({ ...bus, configRead: async (o, s) => (o === PciCfg.Status ? 0 : bus.configRead(o, s)) }, mem), (e: Error & { kind?: string }) => e.kind === 'no-interface');
});
