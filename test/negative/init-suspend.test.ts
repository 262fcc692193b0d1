// SUSPEND (2.1, 3.3) checked both ways (issue 17): the device core judges a driver that does
// not verify a suspend or a resume by reading the status (init.suspend.driver.2 / .6); the
// driver core judges a device that acts on SUSPEND during initialization (device.1) or shows
// itself suspended with used buffers it never announced (device.8). Each misbehaving peer
// breaks exactly its clause; the well-behaved ones at the end draw no verdict.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Monitor } from '../../src/monitor/monitor.js';
import { RngDevice } from '../../src/devices/rng/device.js';
import { RngDriver } from '../../src/drivers/rng.js';
import { VirtioDriver } from '../../src/driver/driver.js';
import { VirtioDevice } from '../../src/device/device.js';
import { LoopbackTransport } from '../../src/transports/loopback/loopback.js';
import { DeviceId, Feature, Status } from '../../src/spec/constants.js';
import { bit } from '../../src/spec/features.js';
import type { SplitDeviceQueue } from '../../src/virtqueue/split/device.js';
import { DescriptorChain } from '../../src/virtqueue/chain.js';

const ACK_DRIVER = Status.ACKNOWLEDGE | Status.DRIVER;
const LIVE = ACK_DRIVER | Status.FEATURES_OK | Status.DRIVER_OK;
const SUSPENDABLE = bit(Feature.VERSION_1) | bit(Feature.SUSPEND);
const ACCEPT = SUSPENDABLE | bit(Feature.INDIRECT_DESC);

/** A live entropy device driven by hand (the driver here is the test). */
function liveByHand() {
  const monitor = new Monitor();
  const dev = new RngDevice({ monitor });
  dev.withholdFeatures(bit(Feature.RING_PACKED));
  dev.attach(GuestMemory.create(1 << 16), { interrupt() {}, configChanged() {}, synchronous: true });
  dev.setStatus(Status.ACKNOWLEDGE);
  dev.setStatus(ACK_DRIVER);
  dev.setDriverFeatures(SUSPENDABLE);
  dev.setStatus(ACK_DRIVER | Status.FEATURES_OK);
  dev.setQueueSize(0, 8);
  dev.setQueueAddresses(0, 0x1000, 0x2000, 0x3000);
  dev.enableQueue(0);
  dev.setStatus(LIVE);
  return { dev, monitor, clauses: () => monitor.verdicts.map((v) => v.clause) };
}

function expectOnly(d: ReturnType<typeof liveByHand>, clause: string): void {
  assert.deepEqual(d.clauses(), [clause]);
  assert.equal(d.monitor.verdicts[0].side, 'driver');
  assert.ok(d.dev.status & Status.DEVICE_NEEDS_RESET, 'strict: the device enters DEVICE_NEEDS_RESET');
}

test('init.suspend.driver.2: the driver sets SUSPEND and resumes without ever reading the status', () => {
  const d = liveByHand();
  d.dev.setStatus(LIVE | Status.SUSPEND);
  assert.deepEqual(d.clauses(), []);
  d.dev.setStatus(ACK_DRIVER | Status.FEATURES_OK | Status.SUSPEND | Status.DRIVER_OK);
  expectOnly(d, 'init.suspend.driver.2');
});

test('init.suspend.driver.6: the driver resumes and notifies a queue without reading the status in between', () => {
  const d = liveByHand();
  d.dev.setStatus(LIVE | Status.SUSPEND);
  assert.equal(d.dev.readStatus() & (Status.SUSPEND | Status.DRIVER_OK), Status.SUSPEND, 'suspended, and the driver saw it');
  d.dev.setStatus(ACK_DRIVER | Status.FEATURES_OK | Status.SUSPEND | Status.DRIVER_OK);
  assert.deepEqual(d.clauses(), []);
  d.dev.notify(0);
  expectOnly(d, 'init.suspend.driver.6');
});

test('a driver that reads the status after suspending and after resuming, then notifies: no verdict', () => {
  const d = liveByHand();
  d.dev.setStatus(LIVE | Status.SUSPEND);
  d.dev.readStatus();
  d.dev.setStatus(ACK_DRIVER | Status.FEATURES_OK | Status.SUSPEND | Status.DRIVER_OK);
  assert.equal(d.dev.readStatus(), LIVE);
  d.dev.notify(0);
  assert.deepEqual(d.clauses(), []);
});

// ------------------------------------------------------------------ the driver judges the device

/** An entropy device that acts on SUSPEND written before DRIVER_OK: it shows itself suspended. */
class EarlySuspendDevice extends RngDevice {
  private early = false;
  override setStatus(value: number): void {
    if (value & Status.SUSPEND && !(this.status & Status.DRIVER_OK)) this.early = true;
    super.setStatus(value);
  }
  override readStatus(): number {
    const s = super.readStatus();
    return this.early && !(s & Status.DRIVER_OK) ? s | Status.SUSPEND : s;
  }
}

/**
 * An entropy device that takes nothing while running and, asked to suspend, uses the buffer
 * waiting in its queue and does not notify.
 */
class SilentSuspendDevice extends VirtioDevice {
  private readonly chain = new DescriptorChain(8);
  constructor(monitor: Monitor) {
    super({ deviceId: DeviceId.ENTROPY, name: 'silent-rng', numQueues: 1, queueMaxSize: 64, process() {} }, { monitor });
  }
  override setStatus(value: number): void {
    if (value & Status.SUSPEND && !(this.status & Status.SUSPEND)) {
      const q = this.queues[0] as SplitDeviceQueue;
      if (q.pop(this.chain)) {
        this.memory.fill(this.chain.addrs[0], 1, 7);
        q.addUsed(this.chain.head, 1);
        q.publish(); // published, never notified
      }
    }
    super.setStatus(value);
  }
}

function driverPair(make: (m: Monitor) => VirtioDevice) {
  const devMon = new Monitor({ mode: 'tolerant' });
  const drvMon = new Monitor();
  const device = make(devMon);
  device.withholdFeatures(bit(Feature.RING_PACKED));
  const transport = new LoopbackTransport(device, GuestMemory.create(1 << 20));
  return { device, transport, devMon, drvMon };
}

test('init.suspend.device.1: the device acts on a SUSPEND written during feature negotiation', async () => {
  const p = driverPair((m) => new EarlySuspendDevice({ monitor: m }));
  const driver = new VirtioDriver(p.transport, { deviceId: DeviceId.ENTROPY, monitor: p.drvMon, transportFeatures: ACCEPT });
  // The driver's probe writes SUSPEND before DRIVER_OK (init.suspend.driver.1, a SHOULD NOT):
  // the device must ignore it.
  await assert.rejects(driver.init({ check: async () => p.transport.setStatus(ACK_DRIVER | Status.SUSPEND) }));
  assert.deepEqual(p.drvMon.verdicts.map((v) => v.clause), ['init.suspend.device.1']);
  assert.equal(driver.state, 'broken');
  // The probe itself, as the device saw it (again when FAILED is written over the status the
  // device showed, SUSPEND included).
  assert.ok(p.devMon.verdicts.length > 0);
  for (const v of p.devMon.verdicts) assert.equal(v.clause, 'init.suspend.driver.1');
});

test('init.suspend.device.8: the device shows itself suspended with a used buffer it did not notify', async () => {
  const p = driverPair((m) => new SilentSuspendDevice(m));
  const driver = new RngDriver(p.transport, { monitor: p.drvMon, transportFeatures: ACCEPT });
  await driver.start();
  void driver.request(16).catch(() => undefined);
  await driver.suspend();
  assert.deepEqual(p.drvMon.verdicts.map((v) => v.clause), ['init.suspend.device.8']);
  assert.equal(p.drvMon.verdicts[0].severity, 'warning', 'a SHOULD: recorded');
  assert.deepEqual(p.devMon.verdicts, []);
});

test('the project entropy device: SUSPEND probed during initialization is ignored, a suspend with a request held announces it: no verdict on it', async () => {
  const p = driverPair((m) => new RngDevice({ monitor: m }));
  const driver = new VirtioDriver(p.transport, { deviceId: DeviceId.ENTROPY, monitor: p.drvMon, transportFeatures: ACCEPT });
  await driver.init({ check: async () => p.transport.setStatus(ACK_DRIVER | Status.SUSPEND) });
  assert.deepEqual(p.drvMon.verdicts, []);
  let release: () => void = () => undefined;
  const q = driverPair((m) => new RngDevice({ monitor: m, asyncSource: (d) => new Promise<void>((res) => (release = () => (d.fill(3), res()))) }));
  const rng = new RngDriver(q.transport, { monitor: q.drvMon, transportFeatures: ACCEPT });
  await rng.start();
  const got = rng.request(16);
  const suspended = rng.suspend();
  release();
  await suspended;
  await rng.resume();
  assert.ok((await got).length > 0);
  assert.deepEqual(q.drvMon.verdicts, []);
  assert.deepEqual(q.devMon.verdicts, []);
});
