/**
 * The driver queue interface over both ring formats (DriverQueueBase and what it leaves to
 * each format): typed tokens come back as they went in (getUsed, drainAfterReset), and
 * usedPending counts every used buffer waiting for the driver, IN_ORDER batches included (a
 * packed used descriptor may stand for several buffers), so a caller waiting for `n` buffers
 * sees them on either format.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { Monitor } from '../src/monitor/monitor.js';
import { createDeviceQueue, createDriverQueue } from '../src/virtqueue/create.js';
import type { DriverQueue, RingFormat } from '../src/virtqueue/queue.js';

interface Token {
  n: number;
  writable: number;
}

function pair(format: RingFormat, inOrder: boolean) {
  const mem = GuestMemory.create(1 << 20);
  const drvMon = new Monitor();
  const devMon = new Monitor();
  const drv: DriverQueue<Token> = createDriverQueue<Token>(format, mem, 0, 8, 0x1000, { eventIdx: false, indirect: false, indirectMax: 0, inOrder }, drvMon, () => undefined);
  const dev = createDeviceQueue(format, mem, 0, 8, devMon, () => undefined);
  dev.setSize(8);
  dev.setAddresses(drv.addrs);
  dev.setEnabled(true);
  assert.ok(dev.activate({ eventIdx: false, indirect: false, inOrder }));
  return { mem, drv, dev, drvMon, devMon };
}

for (const format of ['split', 'packed'] as const) {
  for (const inOrder of [false, true]) {
    test(`${format} driver queue${inOrder ? ', IN_ORDER' : ''}: usedPending counts every used buffer waiting; tokens come back typed`, () => {
      const { drv, dev, drvMon, devMon } = pair(format, inOrder);
      // Five buffers, some of two descriptors (a packed buffer then takes two ring slots).
      const tokens: Token[] = [];
      for (let n = 0; n < 5; n++) {
        const writable = 16 + n;
        drv.begin();
        if (n % 2 === 1) drv.addReadable(0x20000 + n * 0x100, 8);
        drv.addWritable(0x20000 + n * 0x100 + 0x40, writable);
        const token = { n, writable };
        assert.ok(drv.commit(token, { indirect: false }) >= 0);
        tokens.push(token);
      }
      drv.publish();
      const chains = tokens.map(() => {
        const c = dev.newChain();
        assert.ok(dev.pop(c));
        return c;
      });
      assert.equal(drv.usedPending(), 0, 'nothing used yet');
      // The first four used completely, in order: with IN_ORDER the device writes one used
      // element (split: used.idx moves by 4; packed: one descriptor naming the 4th buffer).
      for (let i = 0; i < 4; i++) dev.addUsed(chains[i].head, tokens[i].writable);
      assert.equal(drv.usedPending(), 0, 'not published yet');
      dev.publish();
      assert.equal(drv.usedPending(), 4);
      assert.equal(drv.peekUsed(), true);
      for (let i = 0; i < 4; i++) {
        const t: Token | undefined = drv.getUsed();
        assert.equal(t, tokens[i], `buffer ${i} back, in order`);
        assert.equal(drv.lastLen, tokens[i].writable);
        assert.equal(drv.usedPending(), 3 - i);
      }
      assert.equal(drv.getUsed(), undefined);
      // The last one, with part of its bytes.
      dev.addUsed(chains[4].head, 3);
      dev.publish();
      assert.equal(drv.usedPending(), 1);
      assert.equal(drv.getUsed(), tokens[4]);
      assert.equal(drv.lastLen, 3);
      assert.equal(drv.usedPending(), 0);
      assert.equal(drv.numFree, 8);
      assert.deepEqual([...drvMon.verdicts, ...devMon.verdicts], []);
    });
  }

  test(`${format} driver queue: drainAfterReset hands back every token still out, typed; the queue is empty after`, () => {
    const { drv, dev } = pair(format, false);
    const tokens: Token[] = [];
    for (let n = 0; n < 3; n++) {
      const token = { n, writable: 8 };
      assert.ok(drv.begin().addWritable(0x20000 + n * 0x100, 8).commit(token) >= 0);
      tokens.push(token);
    }
    drv.publish();
    const c = dev.newChain();
    assert.ok(dev.pop(c));
    dev.addUsed(c.head, 8);
    dev.publish();
    assert.equal(drv.getUsed(), tokens[0]);
    const back: Token[] = drv.drainAfterReset();
    assert.deepEqual(new Set(back), new Set(tokens.slice(1)));
    assert.equal(drv.inFlightCount, 0);
    assert.equal(drv.numFree, 8);
    assert.deepEqual(drv.drainAfterReset(), []);
  });
}
