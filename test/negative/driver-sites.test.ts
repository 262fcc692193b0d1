// Check sites of the driver core that the scenarios reach only through another site of the
// same clause (catalogue/uncaught-sites.tsv): each device here breaks its clause exactly at
// the site its test names, so the mutation audit sees that site's verdict asserted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Monitor } from '../../src/monitor/monitor.js';
import { RngDevice } from '../../src/devices/rng/device.js';
import { RngDriver } from '../../src/drivers/rng.js';
import { VirtioDriver } from '../../src/driver/driver.js';
import { LoopbackTransport } from '../../src/transports/loopback/loopback.js';
import { DeviceId, Feature, Status } from '../../src/spec/constants.js';
import { bit } from '../../src/spec/features.js';

const ACCEPT = bit(Feature.VERSION_1) | bit(Feature.INDIRECT_DESC) | bit(Feature.SUSPEND);

/** An rng driver judged by `drvMon` over the loopback, on a split ring (the device withholds RING_PACKED). */
function splitRngDriver(device: RngDevice, drvMon: Monitor): RngDriver {
  device.withholdFeatures(bit(Feature.RING_PACKED));
  return new RngDriver(new LoopbackTransport(device, GuestMemory.create(1 << 20)), { monitor: drvMon, transportFeatures: ACCEPT });
}

/** An entropy device that serves its queue whenever the driver reads the status, DRIVER_OK or not. */
class ConsumesEarlyDevice extends RngDevice {
  override readStatus(): number {
    const q = this.queues[0];
    const s = this.status;
    if (q !== undefined && s & Status.FEATURES_OK && !(s & Status.DRIVER_OK) && q.enabled && (q.active || q.activate(this.queueFeatures()))) this.type.process(q, this.context);
    return super.readStatus();
  }
}

test('basic.status.device.1: the device uses a buffer made available during setup, before DRIVER_OK (no notification)', async () => {
  const drvMon = new Monitor();
  const device = new ConsumesEarlyDevice({ monitor: new Monitor({ mode: 'tolerant' }) });
  device.withholdFeatures(bit(Feature.RING_PACKED));
  const transport = new LoopbackTransport(device, GuestMemory.create(1 << 20));
  const driver = new VirtioDriver(transport, { deviceId: DeviceId.ENTROPY, monitor: drvMon, transportFeatures: ACCEPT });
  await assert.rejects(
    driver.init({
      setup: async () => {
        const q = await driver.setupQueue(0);
        q.disableInterrupts(); // no notification: the used ring itself shows it
        q.begin().addWritable(driver.allocator.alloc(16, 16), 16).commit(null);
        q.publish();
        await transport.getStatus();
      },
    }),
  );
  assert.deepEqual(drvMon.verdicts.map((v) => v.clause), ['basic.status.device.1']);
  assert.match(drvMon.verdicts[0].message, /consumed buffers before DRIVER_OK/);
  assert.equal(driver.state, 'broken');
});

test('init.suspend.device.3: the configuration generation moved while the device was suspended', async () => {
  const drvMon = new Monitor();
  const device = new RngDevice({ monitor: new Monitor() });
  const driver = splitRngDriver(device, drvMon);
  await driver.start();
  await driver.suspend();
  device.configGeneration++; // a change behind the driver's back, while suspended
  await driver.resume().catch(() => undefined);
  assert.equal(drvMon.verdicts[0]?.clause, 'init.suspend.device.3');
  assert.match(drvMon.verdicts[0].message, /changed its configuration space while suspended/);
  assert.equal(driver.state, 'broken');
});

test('the same steps with a well-behaved device (buffers used after DRIVER_OK, configuration unchanged while suspended): no verdict', async () => {
  const drvMon = new Monitor();
  const device = new RngDevice({ monitor: new Monitor() });
  const driver = splitRngDriver(device, drvMon);
  await driver.start();
  await driver.read(8);
  await driver.suspend();
  await driver.resume();
  await driver.read(8);
  assert.deepEqual(drvMon.verdicts, []);
});

/** An entropy device that fails (DEVICE_NEEDS_RESET) when notified with nothing new on the queue. */
class IntolerantDevice extends RngDevice {
  private seen = -1;
  override notify(index: number, data?: number): void {
    const q = this.queues[index];
    if (q !== undefined && q.active && q.availMark() === this.seen) {
      this.needsReset('notified with no new buffers');
      return;
    }
    if (q !== undefined) this.seen = q.availMark();
    super.notify(index, data);
  }
}

test('split.avail-buffer-notif-suppr.device.5: the device enters DEVICE_NEEDS_RESET over a notification with no new buffers', async () => {
  const drvMon = new Monitor();
  const device = new IntolerantDevice({ monitor: new Monitor() });
  const driver = splitRngDriver(device, drvMon);
  await driver.start();
  await driver.read(8);
  await driver.renotify(driver.queues[0]);
  assert.deepEqual(drvMon.verdicts.map((v) => v.clause), ['split.avail-buffer-notif-suppr.device.5']);
  assert.equal(driver.state, 'broken');
});

test('a device that takes a notification with no new buffers in its stride: no verdict', async () => {
  const drvMon = new Monitor();
  const device = new RngDevice({ monitor: new Monitor() });
  const driver = splitRngDriver(device, drvMon);
  await driver.start();
  await driver.read(8);
  await driver.renotify(driver.queues[0]);
  await driver.renotify(driver.queues[0]);
  assert.equal((await driver.read(8)).length, 8);
  assert.deepEqual(drvMon.verdicts, []);
  assert.deepEqual(device.monitor.verdicts, []);
});
