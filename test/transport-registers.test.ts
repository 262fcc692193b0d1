// What the register models show a driver, checked register by register: ids and layout,
// interrupts (InterruptStatus/ACK, INTx and the ISR, MSI-X vectors and NO_VECTOR, masking and
// the PBA), configuration change interrupts with config generation, queue reset, the legacy
// layouts; and what the driver-side transports do with devices that are not there or refuse.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { Monitor } from '../src/monitor/monitor.js';
import { RngDevice } from '../src/devices/rng/device.js';
import { RngDriver } from '../src/drivers/rng.js';
import { BlkDevice } from '../src/devices/blk/device.js';
import { BlkDriver } from '../src/drivers/blk.js';
import { MemoryBlockStorage } from '../src/devices/blk/storage.js';
import { ConsoleDevice, MemoryConsoleEndpoint } from '../src/devices/console/device.js';
import { ConsoleDriver } from '../src/drivers/console.js';
import { Feature, Status } from '../src/spec/constants.js';
import { bit, TRANSPORT_FEATURES_SPLIT } from '../src/spec/features.js';
import { VirtioMmioDevice } from '../src/transports/mmio/device.js';
import { MmioTransport, directMmioBus, type MmioBus } from '../src/transports/mmio/driver.js';
import { MMIO_MAGIC, MmioReg as R } from '../src/transports/mmio/registers.js';
import { VirtioPciDevice } from '../src/transports/pci/device.js';
import { PciTransport, directPciBus } from '../src/transports/pci/driver.js';
import { CapField, CommonCfg as C, LegacyReg, PciCfg, VIRTIO_MSI_NO_VECTOR } from '../src/transports/pci/layout.js';
import { connect } from './register-harness.js';
import { until } from './wait.js';

const WITH_RESET = TRANSPORT_FEATURES_SPLIT | bit(Feature.RING_RESET);

test('mmio registers: magic, version, ids, InterruptStatus/ACK, reset clears them, config generation', async () => {
  const covered = ['mmio.device-register-layout.device.1', 'mmio.device-register-layout.device.2', 'mmio.device-register-layout.device.3', 'mmio.device-register-layout.device.4', 'mmio.device-register-layout.device.5', 'mmio.device-register-layout.device.6', 'mmio.device-init.driver.5'];
  assert.equal(covered.length, 7);
  const device = new ConsoleDevice({ backend: new MemoryConsoleEndpoint(), size: { cols: 80, rows: 25 } });
  const model = new VirtioMmioDevice(device, GuestMemory.create(4 << 20), {});
  assert.equal(model.read(R.MagicValue, 4), MMIO_MAGIC);
  assert.equal(model.read(R.Version, 4), 2);
  assert.equal(model.read(R.DeviceID, 4), 3);
  const drvMon = new Monitor();
  const t = await MmioTransport.open(directMmioBus(model), model.memory, { monitor: drvMon });
  const driver = new ConsoleDriver(t, { monitor: drvMon, transportFeatures: TRANSPORT_FEATURES_SPLIT });
  device.withholdFeatures(bit(Feature.RING_PACKED));
  await driver.start();
  const port = await driver.waitForPort(0);
  const gen = model.read(R.ConfigGeneration, 4);
  const resized = new Promise((res) => (port.onResize = res));
  device.resize(100, 30);
  assert.equal(model.interruptStatus & 2, 2, 'bit 1: configuration change, set until acknowledged');
  assert.equal(model.interruptStatus & ~3, 0, 'no undefined bits');
  assert.deepEqual(await resized, { cols: 100, rows: 30 });
  assert.notEqual(model.read(R.ConfigGeneration, 4), gen, 'generation changed with the configuration');
  await until(() => model.interruptStatus === 0, 'acknowledged');
  await driver.shutdown();
  assert.equal(model.read(R.InterruptStatus, 4), 0);
  model.write(R.QueueSel, 4, 0);
  assert.equal(model.read(R.QueueReady, 4), 0);
  assert.deepEqual(drvMon.verdicts, []);
  // The driver core read cols and rows (two fields) after the change inside config_generation
  // reads: no basic.config.driver.2, nor any other verdict on the driver.
  assert.deepEqual(device.monitor.verdicts, []);
});

for (const kind of ['mmio-v2', 'pci-modern', 'pci-modern-intx'] as const) {
  test(`queue reset over ${kind}: QueueReset/queue_reset reads 0 at once, the queue reads disabled, re-enabled with another size, data flows`, async () => {
    const covered = ['mmio.device-register-layout.device.8', 'mmio.device-register-layout.device.9', 'mmio.device-register-layout.device.10', 'mmio.device-register-layout.device.11', 'mmio.device-register-layout.device.12', 'pci.common-config-struct-layout.device.9', 'pci.common-config-struct-layout.device.10', 'pci.common-config-struct-layout.device.11', 'pci.common-config-struct-layout.device.12', 'pci.common-config-struct-layout.device.13'];
    assert.ok(covered.length > 0);
    const devMon = new Monitor();
    const device = new RngDevice({ monitor: devMon, queueMaxSize: 32 });
    device.withholdFeatures(bit(Feature.RING_PACKED));
    const { transport, drvMon } = await connect(kind, device);
    const driver = new RngDriver(transport, { monitor: drvMon, transportFeatures: WITH_RESET });
    await driver.start();
    assert.equal((await driver.read(64)).length, 64);
    await driver.restartQueue({ size: 8 });
    assert.equal(driver.queues[0].size, 8);
    assert.equal(await transport.queueResetPending!(0), false);
    assert.equal(device.queues[0].size, 8);
    assert.equal((await driver.read(3000)).length, 3000);
    assert.deepEqual([...devMon.verdicts, ...drvMon.verdicts], []);
  });
}

test('mmio driver side: a window with the wrong magic, an unknown version, an empty slot (DeviceID 0) are refused, nothing else touched', async () => {
  // The project's driver refusing them (the model-side verdicts on drivers that do not: test/negative/mmio-driver.test.ts).
  const covered = ['mmio.device-register-layout.driver.4', 'mmio.device-register-layout.driver.6', 'mmio.device-register-layout.driver.8', 'mmio.device-init.driver.2', 'mmio.device-init.driver.3'];
  assert.equal(covered.length, 5);
  for (const [reg, value, kind] of [
    [R.MagicValue, 0x12345678, 'not-virtio'],
    [R.Version, 3, 'unsupported-version'],
    [R.DeviceID, 0, 'no-device'],
  ] as const) {
    const touched: number[] = [];
    const bus: MmioBus = {
      read: async (off) => {
        touched.push(off);
        return off === reg ? value : off === R.MagicValue ? MMIO_MAGIC : off === R.Version ? 2 : 4;
      },
      write: async (off) => void touched.push(off),
      onInterrupt: () => undefined,
    };
    await assert.rejects(MmioTransport.open(bus, GuestMemory.create(1 << 16)), (e: Error & { kind?: string }) => e.kind === kind);
    assert.ok(touched.every((o) => o <= R.DeviceID), `only the identification registers were read (${touched})`);
  }
});

test('pci config space: ids, revision, subsystem, class; capability list with every virtio structure; BAR sizing; notify layout', () => {
  const covered = ['pci.device-discovery.device.1', 'pci.device-discovery.device.2', 'pci.device-discovery.device.3', 'pci.device-discovery.device.4', 'pci.device-discovery.device.5', 'pci.device-discovery.device.6', 'pci.legacy-device-discovery.device.1', 'pci.legacy-device-discovery.device.2', 'pci.legacy-device-discovery.device.3', 'pci.virtio-struct-pci-capabilities.device.1', 'pci.common-config-struct-layout.device.1', 'pci.common-config-struct-layout.device.2', 'pci.notif-cap.device.1', 'pci.notif-cap.device.2', 'pci.notif-cap.device.3', 'pci.notif-cap.device.4', 'pci.notif-cap.device.5', 'pci.notif-cap.device.6', 'pci.notif-cap.device.7', 'pci.notif-cap.device.8', 'pci.notif-cap.device.9', 'pci.isr-status-cap.device.1', 'pci.device-specific-config.device.1', 'pci.config-access-cap.device.1', 'pci.msi-x-vector-config.device.1', 'pci.msi-x-vector-config.device.2', 'pci.legacy-device-layout.device.1', 'pci.legacy-device-layout-detection.device.1'];
  assert.ok(covered.length > 0);
  for (const transitional of [false, true]) {
    for (const virtioBar of ['memory64', 'memory', 'io'] as const) {
      const dev = new BlkDevice({ storage: new MemoryBlockStorage(1 << 20, false), numQueues: 3 });
      const m = new VirtioPciDevice(dev, GuestMemory.create(1 << 20), { transitional, virtioBar });
      const cr = (o: number, s: 1 | 2 | 4) => m.configRead(o, s);
      assert.equal(cr(PciCfg.VendorId, 2), 0x1af4);
      assert.equal(cr(PciCfg.DeviceId, 2), transitional ? 0x1001 : 0x1042);
      assert.equal(cr(PciCfg.Revision, 1), transitional ? 0 : 1);
      assert.equal(cr(PciCfg.SubsystemVendorId, 2), 0x1af4);
      assert.ok(transitional ? cr(PciCfg.SubsystemId, 2) === 2 : cr(PciCfg.SubsystemId, 2) >= 0x40);
      assert.equal(cr(0x0b, 1), 0x01);
      const caps = new Map<number, number>();
      let msix = -1;
      for (let at = cr(PciCfg.CapabilitiesPointer, 1); at !== 0; at = cr(at + 1, 1)) {
        if (cr(at, 1) === 0x11) msix = at;
        if (cr(at, 1) !== 0x09) continue;
        const type = cr(at + CapField.CfgType, 1);
        assert.ok(cr(at + CapField.Len, 1) >= (type === 2 || type === 5 ? 20 : 16));
        if (!caps.has(type)) caps.set(type, at);
      }
      assert.deepEqual([...caps.keys()].sort(), [1, 2, 3, 4, 5]);
      const mult = cr(caps.get(2)! + CapField.NotifyMultiplier, 4);
      assert.ok(mult === 0 || (mult % 4 === 0 && (mult & (mult - 1)) === 0));
      assert.equal(cr(caps.get(2)! + CapField.Offset, 4) % 4, 0);
      assert.ok(cr(caps.get(2)! + CapField.Length, 4) >= 2 * mult + 4, 'room for a 32-bit write at the last queue');
      assert.equal(cr(caps.get(1)! + CapField.Offset, 4) % 4, 0);
      assert.equal(cr(caps.get(4)! + CapField.Offset, 4) % 4, 0);
      assert.equal((cr(msix + 2, 2) & 0x7ff) + 1, 4, 'one vector per queue and one for configuration changes');
      // BAR sizing: all ones read back as the size mask with the kind bits.
      const bar = virtioBar === 'io' ? 2 : 4;
      m.configWrite(PciCfg.Bar0 + 4 * bar, 4, 0xffffffff);
      const probe = cr(PciCfg.Bar0 + 4 * bar, 4);
      assert.equal(probe & 1, virtioBar === 'io' ? 1 : 0);
      if (virtioBar !== 'io') assert.equal(probe & 6, virtioBar === 'memory64' ? 4 : 0);
      if (transitional) assert.equal(cr(PciCfg.Bar0, 4) & 1, 1, 'BAR0 is the legacy I/O BAR');
    }
  }
});

test('pci common configuration: features by select, status reset, queue_enable 0 on reset, queue_size of a missing queue, vectors', () => {
  const covered = ['pci.common-config-struct-layout.device.3', 'pci.common-config-struct-layout.device.4', 'pci.common-config-struct-layout.device.7', 'pci.common-config-struct-layout.device.8', 'pci.common-config-struct-layout.device.14', 'pci.common-config-struct-layout.device.15', 'pci.msi-x-vector-config.device.4', 'pci.msi-x-vector-config.device.5', 'pci.msi-x-vector-config.device.6', 'pci.msi-x-vector-config.device.7', 'pci.msi-x-vector-config.device.8', 'pci.msi-x-vector-config.device.9', 'pci.device-layout.device.1'];
  assert.ok(covered.length > 0);
  const dev = new RngDevice({ monitor: new Monitor({ mode: 'tolerant' }) });
  const m = new VirtioPciDevice(dev, GuestMemory.create(1 << 20), { msixVectors: 3 });
  const w = (o: number, s: number, v: number) => m.barWrite(4, o, s, v);
  const r = (o: number, s: number) => m.barRead(4, o, s);
  w(C.DeviceFeatureSelect, 4, 1);
  assert.equal(r(C.DeviceFeature, 4), Number(dev.getDeviceFeatures() >> 32n));
  w(C.DeviceStatus, 1, 1);
  w(C.DeviceStatus, 1, 3);
  w(C.DriverFeatureSelect, 4, 1);
  w(C.DriverFeature, 4, 1);
  assert.equal(r(C.DriverFeature, 4), 1);
  w(C.QueueSelect, 2, 0);
  assert.equal(r(C.QueueSize, 2), 64, 'the maximum, a power of 2');
  w(C.QueueDesc + 4, 4, 0x12);
  w(C.QueueDesc, 4, 0x3000);
  assert.equal(r(C.QueueDesc, 4), 0x3000, 'low half independent of the high one');
  assert.equal(r(C.QueueDesc + 4, 4), 0x12);
  for (const v of [0, 1, 2]) {
    w(C.QueueMsixVector, 2, v);
    assert.equal(r(C.QueueMsixVector, 2), v);
  }
  w(C.QueueMsixVector, 2, VIRTIO_MSI_NO_VECTOR);
  assert.equal(r(C.QueueMsixVector, 2), VIRTIO_MSI_NO_VECTOR, 'unmapped');
  w(C.ConfigMsixVector, 2, 2);
  w(C.QueueMsixVector, 2, 9);
  assert.equal(r(C.QueueMsixVector, 2), VIRTIO_MSI_NO_VECTOR, 'a failed mapping reads NO_VECTOR');
  w(C.QueueSelect, 2, 5);
  assert.equal(r(C.QueueSize, 2), 0, 'no queue 5');
  w(C.DeviceStatus, 1, 0);
  assert.equal(r(C.DeviceStatus, 1), 0);
  assert.equal(r(C.ConfigMsixVector, 2), VIRTIO_MSI_NO_VECTOR, 'a reset unmaps every vector');
  w(C.QueueSelect, 2, 0);
  assert.equal(r(C.QueueEnable, 2), 0);
  assert.equal(r(C.QueueMsixVector, 2), VIRTIO_MSI_NO_VECTOR);
});

test('pci interrupts: INTx follows the ISR (and the status bit), reading the ISR clears it; MSI-X per queue, NO_VECTOR sends nothing, masked vectors go to the PBA', async () => {
  const covered = ['pci.isr-status-cap.device.2', 'pci.isr-status-cap.device.3', 'pci.isr-status-cap.device.4', 'pci.isr-status-cap.device.5', 'pci.used-buffer-notif.device.1', 'pci.notif-of-device-config-changes.device.1'];
  assert.ok(covered.length > 0);
  const dev = new ConsoleDevice({ backend: new MemoryConsoleEndpoint(), size: { cols: 80, rows: 25 }, monitor: new Monitor({ mode: 'tolerant' }) });
  const intx: boolean[] = [];
  const msi: number[] = [];
  const m = new VirtioPciDevice(dev, GuestMemory.create(1 << 20), { intx: (l) => intx.push(l), msi: (_a, d) => msi.push(d) });
  const msixCap = m.configRead(PciCfg.CapabilitiesPointer, 1);
  // INTx: MSI-X off.
  m.configChanged();
  assert.deepEqual(intx, [true]);
  assert.equal(m.configRead(PciCfg.Status, 2) & 0x08, 0x08);
  assert.equal(m.barRead(4, 0x1000, 1), 2, 'ISR bit 1: configuration change');
  assert.deepEqual(intx, [true, false]);
  assert.equal(m.barRead(4, 0x1000, 1), 0, 'cleared by the read');
  assert.equal(m.configRead(PciCfg.Status, 2) & 0x08, 0);
  // MSI-X on: program the table (BAR1), vector 1 for queue 0, config unmapped.
  for (let v = 0; v < 3; v++) {
    m.barWrite(1, 16 * v, 4, 0xfee00000);
    m.barWrite(1, 16 * v + 8, 4, 100 + v);
    m.barWrite(1, 16 * v + 12, 4, v === 2 ? 1 : 0);
  }
  m.configWrite(msixCap + 2, 2, 0x8000);
  m.barWrite(4, C.QueueSelect, 2, 0);
  m.barWrite(4, C.QueueMsixVector, 2, 1);
  m.barWrite(4, C.QueueSelect, 2, 1);
  m.barWrite(4, C.QueueMsixVector, 2, 2);
  m.interrupt(0);
  assert.deepEqual(msi, [101]);
  m.configChanged(); // config_msix_vector is NO_VECTOR
  assert.deepEqual(msi, [101]);
  m.interrupt(1); // vector 2 is masked: pending
  assert.deepEqual(msi, [101]);
  const pba = m.configRead(msixCap + 8, 4) & ~7;
  assert.equal(m.barRead(1, pba, 4) & 4, 4, 'PBA bit 2');
  m.barWrite(1, 16 * 2 + 12, 4, 0); // unmask: the pending message goes
  assert.deepEqual(msi, [101, 102]);
  assert.equal(m.barRead(1, pba, 4), 0);
  assert.deepEqual(intx, [true, false], 'no INTx while MSI-X is on');
});

for (const [kind, label, vectors] of [
  ['pci-modern', 'MSI-X, a vector per queue and one for configuration', 3],
  ['pci-modern', 'MSI-X with one vector for everything', 1],
  ['pci-modern-intx', 'INTx and the ISR', 3],
  ['pci-transitional-legacy', 'legacy interface with MSI-X', 2],
] as const) {
  test(`pci ${label}: configuration change interrupt reaches the driver with a new generation; blk data flows`, async () => {
    const covered = ['pci.common-config-struct-layout.device.6', 'pci.msi-x-vector-config.driver.5'];
    assert.ok(covered.length > 0);
    const storage = new MemoryBlockStorage(4096 * 512, false);
    let size = 2048 * 512; // the disk grows to 4096 sectors below
    Object.defineProperty(storage, 'size', { get: () => size });
    const dev = new BlkDevice({ storage, numQueues: 2 });
    dev.withholdFeatures(bit(Feature.RING_PACKED));
    const { transport, drvMon, model } = await connect(kind, dev, { pci: { msixVectors: vectors, notifyOffMultiplier: vectors === 1 ? 0 : 4 } });
    const driver = new BlkDriver(transport, { monitor: drvMon, transportFeatures: TRANSPORT_FEATURES_SPLIT, numQueues: 2 });
    await driver.start();
    const gen = await transport.configGeneration();
    const before = driver.configNotifications;
    size = 4096 * 512;
    dev.resize();
    await until(() => driver.configNotifications > before, 'configuration change at the driver');
    await until(() => driver.capacity === 4096, 'new capacity read');
    if (kind !== 'pci-transitional-legacy') assert.notEqual(await transport.configGeneration(), gen);
    await driver.write(4096 * 512 - 4096, new Uint8Array(4096).fill(7));
    const back = new Uint8Array(4096);
    await driver.read(4096 * 512 - 4096, back);
    assert.ok(back.every((b) => b === 7));
    const pci = model as VirtioPciDevice;
    if (kind === 'pci-modern-intx') assert.ok(pci.counts.intx > 0 && pci.counts.msi === 0);
    else assert.ok(pci.counts.msi > 0 && pci.counts.intx === 0);
    // A one-vector table is a SHOULD the model breaks on purpose here (pci.msi-x-vector-config.device.1 asks for at least 2).
    assert.deepEqual([...dev.monitor.verdicts, ...drvMon.verdicts].map((v) => v.clause), vectors === 1 ? ['pci.msi-x-vector-config.device.1'] : []);
  });
}

test('pci legacy layout: features 0-31 only, device configuration right after the header at any width, the same bytes; the PCI configuration access capability reaches the BAR', () => {
  const covered = ['pci.legacy-device-layout.driver.1', 'pci.legacy-device-layout.device.2', 'pci.legacy-device-layout.driver.3', 'pci.legacy-device-layout.device.3', 'pci.legacy-device-layout.device.4', 'pci.config-access-cap.device.2', 'pci.config-access-cap.device.3'];
  assert.ok(covered.length > 0);
  const dev = new BlkDevice({ storage: new MemoryBlockStorage(0x123456 * 512, false) });
  const m = new VirtioPciDevice(dev, GuestMemory.create(1 << 20), { transitional: true, msixVectors: 0 });
  assert.equal(m.barRead(0, LegacyReg.HostFeatures, 4), Number(dev.getDeviceFeatures() & 0xffffffffn));
  const natural = m.barRead(0, 0x14, 4);
  let bytes = 0;
  for (let i = 3; i >= 0; i--) bytes = bytes * 256 + m.barRead(0, 0x14 + i, 1);
  assert.equal(natural, 0x123456);
  assert.equal(bytes, natural);
  assert.equal(m.barRead(0, 0x15, 2), 0x1234, 'unaligned 16 bits, the same bytes');
  // PCI_CFG capability: read device_status, write it.
  let at = m.configRead(PciCfg.CapabilitiesPointer, 1);
  while (!(m.configRead(at, 1) === 9 && m.configRead(at + 3, 1) === 5)) at = m.configRead(at + 1, 1);
  m.configWrite(at + CapField.Bar, 1, 4);
  m.configWrite(at + CapField.Offset, 4, C.NumQueues);
  m.configWrite(at + CapField.Length, 4, 2);
  assert.equal(m.configRead(at + CapField.PciCfgData, 2), 1);
  m.configWrite(at + CapField.Offset, 4, C.DeviceStatus);
  m.configWrite(at + CapField.Length, 4, 1);
  m.configWrite(at + CapField.PciCfgData, 4, 1);
  assert.equal(dev.status, Status.ACKNOWLEDGE);
});

test('pci driver: auto mode finds the capabilities (modern) on a transitional device, and falls back to legacy without them', async () => {
  const covered = ['pci.legacy-device-layout-detection.driver.1', 'pci.legacy-device-layout-detection.driver.3'];
  assert.ok(covered.length > 0);
  const mem = GuestMemory.create(1 << 20);
  const m = new VirtioPciDevice(new RngDevice(), mem, { transitional: true });
  const bus = directPciBus(m);
  assert.equal((await PciTransport.open(bus, mem)).mode, 'modern');
  const noCaps = { ...bus, configRead: async (o: number, s: 1 | 2 | 4) => (o === PciCfg.Status ? 0 : bus.configRead(o, s)) };
  assert.equal((await PciTransport.open(noCaps, mem)).mode, 'legacy');
});

test('pci driver: a device that refuses an MSI-X mapping (reads NO_VECTOR back) is a PciError msix (pci.msi-x-vector-config.driver.6: reported as a device failure)', async () => {
  const mem = GuestMemory.create(1 << 20);
  const m = new VirtioPciDevice(new RngDevice(), mem);
  const bus = directPciBus(m);
  const t = await PciTransport.open({ ...bus, memRead: async (a, s) => ((await bus.memRead(a, s)) === 0 && s === 2 ? VIRTIO_MSI_NO_VECTOR : bus.memRead(a, s)) }, mem);
  await assert.rejects(t.setStatus(Status.ACKNOWLEDGE), (e: Error & { kind?: string }) => e.kind === 'msix');
});

test('pci driver: capabilities with a reserved cfg_type, a reserved BAR or a longer cap_len are skipped; the first usable one of each type is used', async () => {
  const covered = ['pci.virtio-struct-pci-capabilities.driver.1', 'pci.virtio-struct-pci-capabilities.driver.2'];
  assert.ok(covered.length > 0);
  const mem = GuestMemory.create(1 << 20);
  const dev = new RngDevice();
  dev.withholdFeatures(bit(Feature.RING_PACKED));
  const m = new VirtioPciDevice(dev, mem);
  const bus = directPciBus(m);
  const first = m.configRead(PciCfg.CapabilitiesPointer, 1);
  // Two extra vendor capabilities in front: a common configuration at a reserved BAR 7, then a reserved cfg_type 7 with cap_len 24.
  const extra = new Map<number, number>([
    [0xe0, 0x09], [0xe1, 0xf0], [0xe2, 16], [0xe3, 1], [0xe4, 7],
    [0xf0, 0x09], [0xf1, first], [0xf2, 24], [0xf3, 7], [0xf4, 4],
  ]);
  const read = async (o: number, s: 1 | 2 | 4) => {
    if (o === PciCfg.CapabilitiesPointer) return 0xe0;
    if (o >= 0xe0 && o < 0x100) {
      let v = 0;
      for (let i = s - 1; i >= 0; i--) v = v * 256 + (extra.get(o + i) ?? 0);
      return v;
    }
    return bus.configRead(o, s);
  };
  const t = await PciTransport.open({ ...bus, configRead: read }, mem);
  assert.equal(t.mode, 'modern');
  assert.ok(t.capabilities.every((c) => c.cfgType <= 5 && (c.bar <= 5 || c.cfgType === 5)));
  const driver = new RngDriver(t);
  await driver.start();
  assert.equal((await driver.read(32)).length, 32);
});

test('mmio: a queue the driver stopped (QueueReady 0) is not read by the device; shared memory registers', async () => {
  const covered = ['mmio.device-register-layout.device.7'];
  assert.ok(covered.length > 0);
  const dev = new RngDevice({ monitor: new Monitor({ mode: 'tolerant' }) });
  dev.withholdFeatures(bit(Feature.RING_PACKED));
  const mem = GuestMemory.create(1 << 20);
  const model = new VirtioMmioDevice(dev, mem, { sharedMemory: [{ id: 3, base: 0x1_0000_0000n, length: 0x20_0000n }] });
  const driver = new RngDriver(await MmioTransport.open(directMmioBus(model), mem));
  await driver.start();
  assert.equal((await driver.read(16)).length, 16);
  model.write(R.QueueSel, 4, 0);
  model.write(R.QueueReady, 4, 0);
  assert.equal(model.read(R.QueueReady, 4), 0);
  const served = dev.bytesServed;
  driver.read(16).catch(() => undefined); // never answered: the queue is stopped
  for (let i = 0; i < 20; i++) await new Promise((res) => setImmediate(res));
  assert.equal(dev.bytesServed, served, 'nothing taken from the stopped queue');
  await driver.shutdown();
  model.write(R.SHMSel, 4, 3);
  assert.deepEqual([model.read(R.SHMLenLow, 4), model.read(R.SHMLenHigh, 4), model.read(R.SHMBaseLow, 4), model.read(R.SHMBaseHigh, 4)], [0x20_0000, 0, 0, 1]);
  model.write(R.SHMSel, 4, 0);
  assert.deepEqual([model.read(R.SHMLenLow, 4), model.read(R.SHMLenHigh, 4)], [0xffffffff, 0xffffffff], 'no region 0: length -1');
});

test('mmio driver side: undefined InterruptStatus bits are disregarded: never acknowledged, the driver still served', async () => {
  const covered = ['mmio.device-register-layout.driver.15'];
  assert.equal(covered.length, 1);
  const devMon = new Monitor({ mode: 'tolerant' });
  const dev = new RngDevice({ monitor: devMon });
  dev.withholdFeatures(bit(Feature.RING_PACKED));
  const mem = GuestMemory.create(1 << 20);
  const model = new VirtioMmioDevice(dev, mem);
  const read = model.read.bind(model);
  model.read = (off, size) => (off === R.InterruptStatus ? Number(read(off, size)) | 0x30 : read(off, size));
  const acks: number[] = [];
  const write = model.write.bind(model);
  model.write = (off, size, v) => {
    if (off === R.InterruptACK) acks.push(Number(v));
    write(off, size, v);
  };
  const driver = new RngDriver(await MmioTransport.open(directMmioBus(model), mem, { monitor: new Monitor({ mode: 'tolerant' }) }));
  await driver.start();
  assert.equal((await driver.read(32)).length, 32);
  assert.ok(acks.length > 0 && acks.every((a) => (a & ~3) === 0), `acknowledged ${acks}`);
  assert.deepEqual(devMon.verdicts, []);
});
