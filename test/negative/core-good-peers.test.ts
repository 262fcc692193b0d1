// The well-behaved side of the checks added for issue 17 in the core parts: the real driver
// and device, set up where each new check looks (a meaningless used_event / avail_event left
// far ahead, ...), exchange buffers and neither monitor says anything. A check that fired on
// them would be a false accusation; the misbehaving peers are in src/testing/scenarios.ts and
// the other files here. (No clause id literal here: this file claims nothing.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Monitor } from '../../src/monitor/monitor.js';
import { LoopbackTransport } from '../../src/transports/loopback/loopback.js';
import { RngDevice } from '../../src/devices/rng/device.js';
import { RngDriver } from '../../src/drivers/rng.js';
import type { SplitDriverQueue } from '../../src/virtqueue/split/driver.js';
import { Feature } from '../../src/spec/constants.js';
import { bit } from '../../src/spec/features.js';
import { availEventOffset, usedEventOffset } from '../../src/spec/split-layout.js';

const V1 = bit(Feature.VERSION_1) | bit(Feature.INDIRECT_DESC);

async function rngPair(accept: bigint) {
  const mem = GuestMemory.create(1 << 20);
  const devMon = new Monitor();
  const drvMon = new Monitor();
  const device = new RngDevice({ monitor: devMon });
  device.withholdFeatures(bit(Feature.RING_PACKED));
  const driver = new RngDriver(new LoopbackTransport(device, mem), { monitor: drvMon, transportFeatures: accept });
  await driver.start();
  return { mem, devMon, drvMon, driver, q: driver.queues[0] as unknown as SplitDriverQueue };
}

test('split, no EVENT_IDX: a used_event and an avail_event left far ahead change nothing; both sides notify', async () => {
  const p = await rngPair(V1);
  for (let i = 0; i < 20; i++) {
    p.mem.writeU16(p.q.addrs.avail + usedEventOffset(p.q.size), (p.q.collectedIdx + 100) & 0xffff);
    p.mem.writeU16(p.q.addrs.used + availEventOffset(p.q.size), (p.q.nextAvailIdx + 50) & 0xffff);
    assert.equal((await p.driver.read(8)).length, 8);
  }
  assert.deepEqual(p.devMon.verdicts, []);
  assert.deepEqual(p.drvMon.verdicts, []);
});

test('split, EVENT_IDX: reads with the flags at 0 draw no verdict on either side', async () => {
  const p = await rngPair(V1 | bit(Feature.EVENT_IDX));
  for (let i = 0; i < 20; i++) assert.equal((await p.driver.read(8)).length, 8);
  assert.deepEqual(p.devMon.verdicts, []);
  assert.deepEqual(p.drvMon.verdicts, []);
});
