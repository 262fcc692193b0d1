// basic. clauses on the driver that the register models judge (virtio-mmio version 2 and modern
// virtio-pci): a driver that breaks exactly the clause, and a well-behaved one that gets none.
// - basic.config.driver.2 (a SHOULD: a warning): a configuration read in several accesses not
//   bracketed by config_generation reads across a configuration change (src/device/config-watch.ts).
// - basic.vq-reset.driver.1, with its transport forms pci.common-config-struct-layout.driver.7
//   and mmio.device-register-layout.driver.18: the queue set up again, or notified, after a queue
//   reset without reading the reset register back as 0.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Monitor } from '../../src/monitor/monitor.js';
import { BlkDevice } from '../../src/devices/blk/device.js';
import { MemoryBlockStorage } from '../../src/devices/blk/storage.js';
import { Feature, Status } from '../../src/spec/constants.js';
import { bit } from '../../src/spec/features.js';
import { VirtioMmioDevice } from '../../src/transports/mmio/device.js';
import { MmioReg as R } from '../../src/transports/mmio/registers.js';
import { VirtioPciDevice } from '../../src/transports/pci/device.js';
import { CommonCfg as C, PciCfg } from '../../src/transports/pci/layout.js';

const ACK_DRIVER = Status.ACKNOWLEDGE | Status.DRIVER;
const RING_RESET_HIGH = 1 | (1 << (Feature.RING_RESET - 32));
const PCI_DEVICE_CFG = 0x2000; // the device configuration structure in the memory BAR
const PCI_NOTIFY = 0x3000;

/**
 * One register-level driver over either model, the device a 1 MiB disk that can grow (a
 * configuration change: capacity, a 64-bit field, and config_generation move).
 */
function rig(kind: 'mmio' | 'pci') {
  const monitor = new Monitor({ mode: 'tolerant' });
  const storage = new MemoryBlockStorage(4 << 20, false);
  let size = 1 << 20;
  Object.defineProperty(storage, 'size', { get: () => size });
  const device = new BlkDevice({ storage, monitor });
  device.withholdFeatures(bit(Feature.RING_PACKED));
  const memory = GuestMemory.create(1 << 20);
  let w: (reg: 'status' | 'sel' | 'size' | 'desc' | 'avail' | 'used' | 'enable' | 'reset', v: number) => void;
  let rReset: () => number;
  let rStatus: () => number;
  let gen: () => number;
  let cfg: (offset: number) => number;
  let notify: (q: number) => void;
  if (kind === 'mmio') {
    const model = new VirtioMmioDevice(device, memory, { version: 2 });
    model.read(R.MagicValue, 4);
    model.read(R.Version, 4);
    model.read(R.DeviceID, 4);
    const regs = { status: R.Status, sel: R.QueueSel, size: R.QueueSize, desc: R.QueueDescLow, avail: R.QueueDriverLow, used: R.QueueDeviceLow, enable: R.QueueReady, reset: R.QueueReset };
    w = (reg, v) => model.write(regs[reg], 4, v);
    rReset = () => Number(model.read(R.QueueReset, 4));
    rStatus = () => Number(model.read(R.Status, 4));
    gen = () => Number(model.read(R.ConfigGeneration, 4));
    cfg = (offset) => Number(model.read(R.Config + offset, 4));
    notify = (q) => model.write(R.QueueNotify, 4, q);
    const features = (high: number) => {
      model.write(R.DriverFeaturesSel, 4, 1);
      model.write(R.DriverFeatures, 4, high);
      model.write(R.DriverFeaturesSel, 4, 0);
      model.write(R.DriverFeatures, 4, 0);
    };
    return finish(features);
  }
  const model = new VirtioPciDevice(device, memory);
  model.configRead(PciCfg.CapabilitiesPointer, 1);
  const regs = { status: [C.DeviceStatus, 1], sel: [C.QueueSelect, 2], size: [C.QueueSize, 2], desc: [C.QueueDesc, 4], avail: [C.QueueDriver, 4], used: [C.QueueDevice, 4], enable: [C.QueueEnable, 2], reset: [C.QueueReset, 2] } as const;
  w = (reg, v) => model.barWrite(4, regs[reg][0], regs[reg][1], v);
  rReset = () => Number(model.barRead(4, C.QueueReset, 2));
  rStatus = () => Number(model.barRead(4, C.DeviceStatus, 1));
  gen = () => Number(model.barRead(4, C.ConfigGeneration, 1));
  cfg = (offset) => Number(model.barRead(4, PCI_DEVICE_CFG + offset, 4));
  notify = (q) => model.barWrite(4, PCI_NOTIFY + 4 * q, 2, q);
  const features = (high: number) => {
    model.barWrite(4, C.DriverFeatureSelect, 4, 1);
    model.barWrite(4, C.DriverFeature, 4, high);
    model.barWrite(4, C.DriverFeatureSelect, 4, 0);
    model.barWrite(4, C.DriverFeature, 4, 0);
  };
  return finish(features);

  function finish(features: (high: number) => void) {
    /** A correct start to DRIVER_OK with queue 0 live. */
    const start = (high = 1) => {
      w('status', 0);
      // The reset is complete once the status reads 0 (basic.reset.driver.1; on pci
      // pci.common-config-struct-layout.driver.5).
      rStatus();
      w('status', Status.ACKNOWLEDGE);
      w('status', ACK_DRIVER);
      features(high);
      w('status', ACK_DRIVER | Status.FEATURES_OK);
      w('sel', 0);
      w('size', 8);
      w('desc', 0x1000);
      w('avail', 0x2000);
      w('used', 0x3000);
      w('enable', 1);
      w('status', ACK_DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
    };
    const grow = () => {
      size += 1 << 20;
      device.resize();
    };
    const clauses = () => [...new Set(monitor.verdicts.map((v) => v.clause))];
    return { device, monitor, w, rReset, gen, cfg, notify, start, grow, clauses };
  }}

for (const kind of ['mmio', 'pci'] as const) {
  const resetClauses = ['basic.vq-reset.driver.1', kind === 'pci' ? 'pci.common-config-struct-layout.driver.7' : 'mmio.device-register-layout.driver.18'].sort();

  test(`${kind}: basic.vq-reset.driver.1 - queue set up again after a queue reset not read back`, () => {
    const d = rig(kind);
    d.start(RING_RESET_HIGH);
    d.w('reset', 1);
    d.w('size', 4); // without reading the reset register back as 0
    assert.deepEqual(d.clauses().sort(), resetClauses);
    assert.ok(d.monitor.verdicts.every((v) => v.severity === 'violation'));
  });

  test(`${kind}: basic.vq-reset.driver.1 - queue notified after a queue reset not read back`, () => {
    const d = rig(kind);
    d.start(RING_RESET_HIGH);
    d.w('reset', 1);
    d.notify(0);
    assert.deepEqual(d.clauses().sort(), resetClauses);
    assert.equal(d.monitor.verdicts.length, 2, 'one act, each statement named once');
  });

  test(`${kind}: a queue reset read back as 0, then set up again and notified, is no verdict`, () => {
    const d = rig(kind);
    d.start(RING_RESET_HIGH);
    d.w('reset', 1);
    assert.equal(d.rReset(), 0);
    d.w('size', 4);
    d.w('desc', 0x4000);
    d.w('avail', 0x5000);
    d.w('used', 0x6000);
    d.w('enable', 1);
    d.notify(0);
    assert.deepEqual(d.clauses(), []);
  });

  test(`${kind}: basic.config.driver.2 - capacity read in halves after a change, no config_generation read before`, () => {
    const d = rig(kind);
    d.start();
    d.gen();
    d.grow();
    d.cfg(0);
    d.cfg(4); // the generation moved and the driver never looked
    assert.deepEqual(d.clauses(), ['basic.config.driver.2']);
    const [v] = d.monitor.verdicts;
    assert.equal(v.severity, 'warning', 'a SHOULD');
  });

  test(`${kind}: basic.config.driver.2 - capacity torn by a change mid-read, no config_generation read after`, () => {
    const d = rig(kind);
    d.start();
    d.gen();
    d.cfg(0);
    d.grow();
    d.cfg(4);
    assert.deepEqual(d.clauses(), [], 'not yet: the driver may still read the generation');
    d.w('sel', 0); // went on without it
    assert.deepEqual(d.clauses(), ['basic.config.driver.2']);
    assert.equal(d.monitor.verdicts.length, 1);
  });

  test(`${kind}: config_generation loops (Linux, the driver core) and single 32-bit reads after a change are no verdict`, () => {
    const d = rig(kind);
    d.start();
    // The spec's loop, torn once by a change between the halves: read again, stable.
    let before = d.gen();
    d.cfg(0);
    d.grow();
    d.cfg(4);
    let after = d.gen();
    assert.notEqual(after, before);
    do {
      before = after;
      d.cfg(0);
      d.cfg(4);
      after = d.gen();
    } while (after !== before);
    d.w('sel', 0);
    // A single 32-bit field read after a change needs no bracket: one access is atomic.
    d.grow();
    d.cfg(8);
    d.w('sel', 0);
    // Interrupt traffic inside a bracket does not end it.
    d.gen();
    d.cfg(0);
    d.grow();
    d.cfg(4);
    if (kind === 'pci') d.notify(0);
    d.gen();
    d.w('sel', 0);
    assert.deepEqual(d.clauses(), []);
  });

  test(`${kind}: a device reset starts the generation watch afresh`, () => {
    const d = rig(kind);
    d.start();
    d.grow();
    d.start(); // reset: a new driver, nothing stale
    d.cfg(0);
    d.cfg(4);
    d.w('sel', 0);
    assert.deepEqual(d.clauses(), []);
  });
}
