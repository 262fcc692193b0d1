import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { Monitor } from '../src/monitor/monitor.js';
import { LoopbackTransport } from '../src/transports/loopback/loopback.js';
import { RngDevice, RngDeviceType } from '../src/devices/rng/device.js';
import { VirtioDevice, type DeviceContext } from '../src/device/device.js';
import { DescriptorChain } from '../src/virtqueue/chain.js';
import type { DeviceQueue } from '../src/virtqueue/queue.js';
import { RngDriver } from '../src/drivers/rng.js';
import { Feature, Status } from '../src/spec/constants.js';
import { bit, hasFeature } from '../src/spec/features.js';
import { TRANSPORT_FEATURES_SPLIT } from '../src/spec/features.js';
import { WAIT_MS, until } from './wait.js';

const FORMATS = {
  split: TRANSPORT_FEATURES_SPLIT | bit(Feature.SUSPEND),
  packed: TRANSPORT_FEATURES_SPLIT | bit(Feature.SUSPEND) | bit(Feature.RING_PACKED),
} as const;

for (const [format, base] of Object.entries(FORMATS)) {
  for (const inOrder of [false, true]) {
  const accept = inOrder ? base | bit(Feature.IN_ORDER) : base;
  for (const mode of ['sync', 'async'] as const) {
    for (const eventIdx of [true, false]) {
      test(`entropy pair, ${format} ring${inOrder ? ' IN_ORDER' : ''}, loopback ${mode}, EVENT_IDX ${eventIdx ? 'on' : 'off'}: negotiation, reads, suspend, no verdicts`, async () => {
        const mem = GuestMemory.create(1 << 20);
        const devMon = new Monitor();
        const drvMon = new Monitor();
        let counter = 0;
        const device = new RngDevice({ monitor: devMon, queueMaxSize: 8, source: (d) => d.forEach((_, i) => (d[i] = counter++ & 0xff)) });
        if (format === 'split') device.withholdFeatures(bit(Feature.RING_PACKED));
        const transport = new LoopbackTransport(device, mem, { mode });
        const features = eventIdx ? accept : accept & ~bit(Feature.EVENT_IDX);
        const driver = new RngDriver(transport, { monitor: drvMon, transportFeatures: features, chunk: 100 });
        await driver.start();
        assert.equal(device.getStatus(), Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
        assert.equal(device.ringFormat, format);
        assert.equal(driver.queues[0].format, format);
        assert.equal(hasFeature(driver.features, Feature.EVENT_IDX), eventIdx);
        assert.equal(hasFeature(driver.features, Feature.IN_ORDER), inOrder);
        // Many more requests than the 8-entry ring holds, in parallel: wraps the ring (and its wrap counters) many times.
        const parts = await Promise.all(Array.from({ length: 50 }, () => driver.read(333)));
        const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
        let off = 0;
        for (const p of parts) {
          bytes.set(p, off);
          off += p.length;
        }
        assert.equal(bytes.length, 50 * 333);
        const seen = new Uint8Array(256);
        for (const b of bytes) seen[b]++;
        assert.ok(seen.every((n) => n > 0), 'all byte values came through');
        assert.equal(device.bytesServed, bytes.length);
        await driver.suspend({ timeoutMs: WAIT_MS });
        await driver.resume({ timeoutMs: WAIT_MS });
        assert.equal((await driver.read(10)).length, 10);
        assert.deepEqual(devMon.verdicts, []);
        assert.deepEqual(drvMon.verdicts, []);
        assert.equal(driver.queues[0].inFlightCount, 0);
        assert.equal(driver.queues[0].numFree, driver.queues[0].size);
      });
    }
  }
  }

  test(`entropy pair, ${format} ring IN_ORDER: a slow source answering out of order still gives buffers back in order`, async () => {
    const mem = GuestMemory.create(1 << 20);
    const devMon = new Monitor();
    const drvMon = new Monitor();
    const waiting: (() => void)[] = [];
    let n = 0;
    const device = new RngDevice({
      monitor: devMon,
      queueMaxSize: 16,
      maxBytesPerRequest: 48, // some buffers partly filled: batches must break there
      asyncSource: (dst) => new Promise<void>((res) => waiting.push(() => (dst.fill(++n), res()))),
    });
    if (format === 'split') device.withholdFeatures(bit(Feature.RING_PACKED));
    const transport = new LoopbackTransport(device, mem);
    const driver = new RngDriver(transport, { monitor: drvMon, transportFeatures: base | bit(Feature.IN_ORDER) });
    await driver.start();
    const lens = [64, 16, 32, 48, 100, 8, 64, 40, 200, 12];
    const order: number[] = [];
    const requests = lens.map((len, i) => driver.request(len).then((b) => (order.push(i), b)));
    await until(() => waiting.length >= lens.length, 'every request at the source');
    assert.equal(waiting.length, lens.length);
    for (const release of waiting.splice(0).reverse()) release(); // the source answers last request first
    const results = await Promise.all(requests);
    assert.deepEqual(order, lens.map((_, i) => i), 'completed in the order made available');
    assert.deepEqual(results.map((r) => r.length), lens.map((l) => Math.min(l, 48)));
    assert.deepEqual([...devMon.verdicts, ...drvMon.verdicts], []);
  });
}

test('a device that answers every entropy request with no bytes: read fails after RngDriver.EMPTY_ANSWERS_LIMIT answers instead of asking forever (tolerant monitor)', async () => {
  class EmptyAnswers extends RngDeviceType {
    private readonly emptyChain = DescriptorChain.forQueue(64);
    override process(q: DeviceQueue, ctx: DeviceContext): void {
      while (q.pop(this.emptyChain)) q.addUsed(this.emptyChain.head, 0); // entropy.device-operation.device.1 broken
      ctx.complete(q);
    }
  }
  const mem = GuestMemory.create(1 << 20);
  const type = new EmptyAnswers();
  const device = new VirtioDevice(type, { monitor: new Monitor({ mode: 'tolerant' }) });
  const drvMon = new Monitor({ mode: 'tolerant' });
  const driver = new RngDriver(new LoopbackTransport(device, mem, { mode: 'async' }), { monitor: drvMon });
  await driver.start();
  await assert.rejects(driver.read(16), (e: Error & { kind?: string }) => e.kind === 'device-violation' && /entropy\.device-operation\.device\.1/.test(e.message));
  const empties = drvMon.verdicts.filter((v) => v.clause === 'entropy.device-operation.device.1').length;
  assert.equal(empties, RngDriver.EMPTY_ANSWERS_LIMIT, 'one verdict per empty answer, then the read gave up');
});
