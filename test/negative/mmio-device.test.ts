// Devices that break one mmio. device clause, judged by the driver-side transport
// (MmioTransport): each is the register model with one register or one memory write changed,
// and the transport's monitor names exactly that clause. The well-behaved runs are the same
// steps over the unchanged model, with no verdict.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Monitor } from '../../src/monitor/monitor.js';
import { RngDevice } from '../../src/devices/rng/device.js';
import { RngDriver } from '../../src/drivers/rng.js';
import { BlkDevice } from '../../src/devices/blk/device.js';
import { MemoryBlockStorage } from '../../src/devices/blk/storage.js';
import type { VirtioDevice } from '../../src/device/device.js';
import { Feature } from '../../src/spec/constants.js';
import { bit, TRANSPORT_FEATURES_SPLIT } from '../../src/spec/features.js';
import { VirtioMmioDevice } from '../../src/transports/mmio/device.js';
import { MmioTransport, directMmioBus } from '../../src/transports/mmio/driver.js';
import { MmioReg as R } from '../../src/transports/mmio/registers.js';
import { until } from '../wait.js';

const WITH_RESET = TRANSPORT_FEATURES_SPLIT | bit(Feature.RING_RESET);

/**
 * The model over `device`, with `lie(offset, value)` deciding what each 32-bit register read
 * returns (the model's own value by default) and `onWrite` seeing each write after the model.
 */
function misbehaving(device: VirtioDevice = new RngDevice({ monitor: new Monitor({ mode: 'tolerant' }) }), lie?: (offset: number, value: number) => number, onWrite?: (offset: number, value: number) => void) {
  const memory = GuestMemory.create(1 << 20);
  const model = new VirtioMmioDevice(device, memory);
  const read = model.read.bind(model);
  const write = model.write.bind(model);
  if (lie) model.read = (off, size) => lie(off, Number(read(off, size)));
  if (onWrite) {
    model.write = (off, size, v) => {
      write(off, size, v);
      onWrite(off, Number(v));
    };
  }
  const drvMon = new Monitor({ mode: 'tolerant' });
  return { model, memory, drvMon, device, clauses: () => drvMon.verdicts.map((v) => v.clause) };
}

async function open(x: ReturnType<typeof misbehaving>) {
  return MmioTransport.open(directMmioBus(x.model), x.memory, { monitor: x.drvMon });
}

test('mmio.device-register-layout.device.1: a MagicValue that is not "virt" is a verdict, and the window is refused', async () => {
  const x = misbehaving(undefined, (off, v) => (off === R.MagicValue ? 0x74726975 : v));
  await assert.rejects(open(x), (e: Error & { kind?: string }) => e.kind === 'not-virtio');
  assert.deepEqual(x.clauses(), ['mmio.device-register-layout.device.1']);
});

test('mmio.device-register-layout.device.2: a Version other than 2 (or legacy 1) is a verdict, and the window is refused', async () => {
  const x = misbehaving(undefined, (off, v) => (off === R.Version ? 3 : v));
  await assert.rejects(open(x), (e: Error & { kind?: string }) => e.kind === 'unsupported-version');
  assert.deepEqual(x.clauses(), ['mmio.device-register-layout.device.2']);
});

test('mmio.device-register-layout.device.3: the line goes up for a used buffer, InterruptStatus does not show it', async () => {
  let hide = false;
  const x = misbehaving(undefined, (off, v) => (off === R.InterruptStatus && hide ? v & ~1 : v));
  x.device.withholdFeatures(bit(Feature.RING_PACKED));
  const driver = new RngDriver(await open(x), { monitor: x.drvMon });
  await driver.start();
  assert.equal((await driver.read(8)).length, 8); // served, acknowledged: the line went down once
  hide = true;
  void driver.read(8).catch(() => undefined); // never completes: the driver is never told
  await until(() => x.drvMon.verdicts.length > 0, 'a verdict');
  assert.deepEqual(x.clauses(), ['mmio.device-register-layout.device.3']);
});

test('mmio.device-register-layout.device.5: a queue reads QueueReady 1 before the driver set it up', async () => {
  const x = misbehaving(undefined, (off, v) => (off === R.QueueReady ? 1 : v));
  const t = await open(x);
  await t.setupQueue(0, 8, { desc: 0x1000, avail: 0x2000, used: 0x3000 });
  assert.deepEqual(x.clauses(), ['mmio.device-register-layout.device.5']);
});

/** A block device whose configuration changes (the disk grows) and a ConfigGeneration that may lie. */
function growingDisk(frozenGeneration: boolean) {
  const storage = new MemoryBlockStorage(8192 * 512, false);
  let size = 4096 * 512;
  Object.defineProperty(storage, 'size', { get: () => size });
  const device = new BlkDevice({ storage, monitor: new Monitor({ mode: 'tolerant' }) });
  const x = misbehaving(device, (off, v) => (off === R.ConfigGeneration && frozenGeneration ? 7 : v));
  return { x, device, grow: () => ((size = 8192 * 512), device.resize()) };
}

for (const frozen of [true, false]) {
  test(`mmio.device-register-layout.device.6: the capacity changes ${frozen ? 'while ConfigGeneration stays' : 'and ConfigGeneration changes (no verdict)'}`, async () => {
    const { x, grow } = growingDisk(frozen);
    const t = await open(x);
    await t.configGeneration();
    assert.equal(await t.readConfig(0, 8), 4096n);
    await t.configGeneration();
    grow();
    await t.configGeneration();
    assert.equal(await t.readConfig(0, 8), 8192n);
    await t.configGeneration();
    assert.deepEqual(x.clauses(), frozen ? ['mmio.device-register-layout.device.6'] : []);
  });
}

for (const early of [true, false]) {
  test(`mmio.device-register-layout.device.7: ${early ? 'the device writes the used ring before QueueReady is 1' : 'a device that waits for QueueReady (no verdict)'}`, async () => {
    let memory: GuestMemory | null = null;
    const x = misbehaving(undefined, undefined, (off) => {
      if (early && off === R.QueueDeviceHigh) memory!.writeU16(0x3000 + 2, 1); // used idx
    });
    memory = x.memory;
    const t = await open(x);
    await t.setupQueue(0, 8, { desc: 0x1000, avail: 0x2000, used: 0x3000 });
    await t.enableQueue(0);
    assert.deepEqual(x.clauses(), early ? ['mmio.device-register-layout.device.7'] : []);
  });
}

/** The model with RING_RESET, a running RngDriver on it, and `lie` switched on by the test. */
async function withRingReset(lie: (state: { on: boolean }, off: number, v: number) => number) {
  const state = { on: false };
  const x = misbehaving(undefined, (off, v) => lie(state, off, v));
  x.device.withholdFeatures(bit(Feature.RING_PACKED));
  const t = await open(x);
  const driver = new RngDriver(t, { monitor: x.drvMon, transportFeatures: WITH_RESET });
  return { x, t, driver, state };
}

test('mmio.device-register-layout.device.8: QueueReset still reads 1 after a device reset', async () => {
  const { x, t, driver, state } = await withRingReset((s, off, v) => (off === R.QueueReset && s.on ? 1 : v));
  await driver.start();
  assert.equal((await driver.read(8)).length, 8);
  state.on = true;
  await t.setStatus(0);
  assert.deepEqual(x.clauses(), ['mmio.device-register-layout.device.8']);
});

test('mmio.device-register-layout.device.9: QueueReset reads 1 once the queue is enabled', async () => {
  const { x, driver } = await withRingReset((_s, off, v) => (off === R.QueueReset ? 1 : v));
  await driver.start();
  assert.deepEqual([...new Set(x.clauses())], ['mmio.device-register-layout.device.9']);
});

test('mmio.device-register-layout.device.11: QueueReset reads 0 and then 1 again while the queue reset runs', async () => {
  const reads = [0, 1];
  const { x, t, driver, state } = await withRingReset((s, off, v) => (off === R.QueueReset && s.on ? (reads.shift() ?? v) : v));
  await driver.start();
  state.on = true;
  await t.resetQueue(0);
  assert.equal(await t.queueResetPending(0), true, 'still in progress');
  assert.equal(await t.queueResetPending(0), false, 'done now');
  assert.deepEqual(x.clauses(), ['mmio.device-register-layout.device.11']);
});

test('mmio: with RING_RESET, device reset, queue reset and re-enable over the unchanged model: no verdict', async () => {
  const { x, t, driver } = await withRingReset((_s, _off, v) => v);
  await driver.start();
  await driver.restartQueue({ size: 16 });
  assert.equal((await driver.read(64)).length, 64);
  await t.setStatus(0);
  assert.deepEqual(x.clauses(), []);
});
