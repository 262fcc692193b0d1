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
import { VirtioMmioDevice } from '../../src/transports/mmio/device.js';
import { MmioTransport, directMmioBus } from '../../src/transports/mmio/driver.js';
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
  /**
   * The status bit from which it serves: FEATURES_OK (the modern sequence), or DRIVER for a
   * legacy driver, whose sequence has no FEATURES_OK (3.1.2: its features take effect as written).
   */
  servesFrom: number = Status.FEATURES_OK;
  override readStatus(): number {
    const q = this.queues[0];
    const s = this.status;
    if (q !== undefined && s & this.servesFrom && !(s & Status.DRIVER_OK) && q.enabled && (q.active || q.activate(this.queueFeatures()))) this.type.process(q, this.context);
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

/**
 * A legacy driver (virtio-mmio version 1: the transport has `legacy`) over `device`, judged by
 * `drvMon`; init's setup makes one buffer available with used-buffer notifications off (so
 * only the used ring can show the early use) and reads the status, the device's cue.
 */
async function legacyInitWithOneBuffer(device: RngDevice, drvMon: Monitor): Promise<{ driver: VirtioDriver; init: Promise<void> }> {
  const model = new VirtioMmioDevice(device, GuestMemory.create(1 << 20), { version: 1 });
  const transport = await MmioTransport.open(directMmioBus(model), model.memory, { monitor: drvMon });
  assert.ok(transport.legacy !== undefined, 'version 1 is the legacy interface');
  const driver = new VirtioDriver(transport, { deviceId: DeviceId.ENTROPY, monitor: drvMon, transportFeatures: ACCEPT });
  const init = driver.init({
    setup: async () => {
      const q = await driver.setupQueue(0);
      q.disableInterrupts();
      q.begin().addWritable(driver.allocator.alloc(16, 16), 16).commit(null);
      q.publish();
      await transport.getStatus();
    },
  });
  return { driver, init };
}

test('basic.status.device.1: legacy sequence (virtio-mmio version 1, no FEATURES_OK): the device uses a buffer made available during setup, before DRIVER_OK', async () => {
  const drvMon = new Monitor();
  const device = new ConsumesEarlyDevice({ monitor: new Monitor({ mode: 'tolerant' }) });
  device.servesFrom = Status.DRIVER;
  const { driver, init } = await legacyInitWithOneBuffer(device, drvMon);
  await assert.rejects(init);
  assert.deepEqual(drvMon.verdicts.map((v) => v.clause), ['basic.status.device.1']);
  assert.match(drvMon.verdicts[0].message, /consumed buffers before DRIVER_OK/);
  assert.equal(driver.features & bit(Feature.VERSION_1), 0n, 'the legacy sequence ran (no VERSION_1 in the features as written)');
  assert.equal(device.status & Status.FEATURES_OK, 0, 'the legacy sequence ran (no FEATURES_OK)');
  assert.equal(driver.state, 'broken');
});

test('the legacy sequence with a well-behaved device: the buffer made available during setup is used after DRIVER_OK, no verdict', async () => {
  const drvMon = new Monitor();
  const device = new RngDevice({ monitor: new Monitor() });
  const { driver, init } = await legacyInitWithOneBuffer(device, drvMon);
  await init;
  assert.equal(driver.state, 'live');
  // The device looks at its queues when it goes live (inside the DRIVER_OK write): the buffer is used then.
  assert.equal(device.bytesServed, 16);
  assert.equal(device.status & Status.FEATURES_OK, 0, 'the legacy sequence ran (no FEATURES_OK)');
  assert.deepEqual([...drvMon.verdicts, ...device.monitor.verdicts], []);
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
