// VIRTIO_F_RING_RESET and VIRTIO_F_NOTIFICATION_DATA over both ring formats.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { Monitor } from '../src/monitor/monitor.js';
import { LoopbackTransport } from '../src/transports/loopback/loopback.js';
import { RngDevice } from '../src/devices/rng/device.js';
import { RngDriver } from '../src/drivers/rng.js';
import { DriverError } from '../src/driver/driver.js';
import type { DriverQueue } from '../src/virtqueue/queue.js';
import { Feature } from '../src/spec/constants.js';
import { bit, hasFeature, TRANSPORT_FEATURES_SPLIT } from '../src/spec/features.js';
import { turns, until } from './wait.js';

const FORMATS = {
  split: TRANSPORT_FEATURES_SPLIT | bit(Feature.RING_RESET) | bit(Feature.NOTIFICATION_DATA),
  packed: TRANSPORT_FEATURES_SPLIT | bit(Feature.RING_RESET) | bit(Feature.NOTIFICATION_DATA) | bit(Feature.RING_PACKED),
};

/** A loopback whose queue resets take a few polls to complete, like a real device's. */
class SlowResetLoopback extends LoopbackTransport {
  polls = 0;
  pendingPolls = 0;
  override async resetQueue(index: number): Promise<void> {
    this.pendingPolls = 3;
    await super.resetQueue(index);
  }
  override async queueResetPending(): Promise<boolean> {
    this.polls++;
    return this.pendingPolls-- > 0;
  }
}

for (const [format, accept] of Object.entries(FORMATS)) {
  test(`${['basic.vq-reset.driver.1', 'basic.vq-reenable.device.1'].join(', ')}: ${format} queue reset while live, waited for, re-enabled with another size`, async () => {
    const devMon = new Monitor();
    const drvMon = new Monitor();
    const waiting: (() => void)[] = [];
    let slow = false;
    const device = new RngDevice({
      monitor: devMon,
      queueMaxSize: 16,
      source: (d) => d.fill(0x11),
      asyncSource: undefined,
    });
    if (format === 'split') device.withholdFeatures(bit(Feature.RING_PACKED));
    const transport = new SlowResetLoopback(device, GuestMemory.create(1 << 20));
    const driver = new RngDriver(transport, { monitor: drvMon, transportFeatures: accept, queueSize: 16 });
    await driver.start();
    assert.ok(hasFeature(driver.features, Feature.RING_RESET));
    assert.equal((await driver.read(100)).length, 100);
    await driver.restartQueue({ size: 4 });
    assert.equal(transport.polls, 4, 'the driver read queue_reset until it said done');
    assert.equal(device.queues[0].size, 4, 'the device took the new size');
    assert.equal(driver.queues[0].size, 4);
    assert.equal(device.queues[0].format, format);
    const again = await Promise.all(Array.from({ length: 10 }, () => driver.read(50)));
    assert.ok(again.every((b) => b.length === 50 && b.every((x) => x === 0x11)));
    assert.deepEqual([...devMon.verdicts, ...drvMon.verdicts], []);
    void waiting;
    void slow;
  });

  test(`${format} queue reset: requests the device had not answered fail, later ones work`, async () => {
    const devMon = new Monitor();
    const drvMon = new Monitor();
    const waiting: (() => void)[] = [];
    const device = new RngDevice({ monitor: devMon, asyncSource: (d) => new Promise<void>((res) => waiting.push(() => (d.fill(2), res()))) });
    if (format === 'split') device.withholdFeatures(bit(Feature.RING_PACKED));
    const transport = new LoopbackTransport(device, GuestMemory.create(1 << 20));
    const driver = new RngDriver(transport, { monitor: drvMon, transportFeatures: accept });
    await driver.start();
    const lost = driver.request(16);
    await until(() => waiting.length > 0, 'the request at the source');
    assert.equal(waiting.length, 1);
    await driver.restartQueue();
    await assert.rejects(lost, (e: unknown) => e instanceof DriverError && e.kind === 'cancelled');
    for (const w of waiting.splice(0)) w(); // the source answers late: dropped, nothing written
    await turns();
    const later = driver.request(8);
    await until(() => waiting.length > 0, 'the new request at the source');
    for (const w of waiting.splice(0)) w();
    assert.deepEqual(Array.from(await later), new Array(8).fill(2));
    assert.deepEqual([...devMon.verdicts, ...drvMon.verdicts], []);
  });

  test(`${format} ring with VIRTIO_F_NOTIFICATION_DATA: every kick carries the next position, the device agrees`, async () => {
    const devMon = new Monitor();
    const drvMon = new Monitor();
    const device = new RngDevice({ monitor: devMon, queueMaxSize: 8 });
    if (format === 'split') device.withholdFeatures(bit(Feature.RING_PACKED));
    const seen: (number | undefined)[] = [];
    const notify = device.notify.bind(device);
    device.notify = (i: number, data?: number) => {
      seen.push(data);
      notify(i, data);
    };
    const transport = new LoopbackTransport(device, GuestMemory.create(1 << 20), { mode: 'async' });
    const driver = new RngDriver(transport, { monitor: drvMon, transportFeatures: accept });
    await driver.start();
    assert.ok(hasFeature(driver.features, Feature.NOTIFICATION_DATA));
    await Promise.all(Array.from({ length: 40 }, () => driver.read(64)));
    assert.ok(seen.length > 0);
    assert.ok(seen.every((d) => d !== undefined && (d & 0xffff) === 0), 'queue index in bits 0-15');
    assert.deepEqual([...devMon.verdicts, ...drvMon.verdicts], []);
  });
}

test('without transport support, NOTIFICATION_DATA is neither offered nor accepted', async () => {
  const device = new RngDevice();
  const transport = new LoopbackTransport(device, GuestMemory.create(1 << 20));
  Object.defineProperty(transport, 'notificationData', { value: false });
  const driver = new RngDriver(transport);
  await driver.start();
  assert.ok(!hasFeature(driver.offered, Feature.NOTIFICATION_DATA));
  assert.ok(!hasFeature(driver.features, Feature.NOTIFICATION_DATA));
});

test(`${'packed.scatter-gather-support.device.1'}: the device uses the descriptors of a packed list in the order they were made available`, async () => {
  let n = 0;
  const device = new RngDevice({ source: (d) => d.forEach((_, i) => (d[i] = ++n & 0xff)) });
  const transport = new LoopbackTransport(device, GuestMemory.create(1 << 20));
  const driver = new RngDriver(transport, { transportFeatures: FORMATS.packed });
  await driver.start();
  const q: DriverQueue = driver.queues[0]; // any token: this test reads the bytes itself
  assert.equal(q.format, 'packed');
  const lens = [5, 7, 9];
  const addrs = lens.map((l) => driver.allocator.alloc(l, 1));
  q.begin();
  lens.forEach((l, i) => q.addWritable(addrs[i], l));
  q.commit('list', { indirect: false });
  driver.kick(q);
  const bytes = lens.flatMap((l, i) => {
    const b = new Uint8Array(l);
    transport.memory.read(addrs[i], b);
    return Array.from(b);
  });
  assert.deepEqual(bytes, Array.from({ length: 21 }, (_, i) => i + 1));
});
