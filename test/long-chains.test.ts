// Chains longer than the queue size through an indirect table (split.indirect-descs.driver.3,
// packed.indirect-descs.driver.3): a servable violation. Tolerant: reported with the clause and
// served; strict: reported and the monitor acts (device error); longer than LONG_CHAIN_CAP:
// unservable (fatal) in every mode. Direct chains longer than the queue stay fatal.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { Monitor, type MonitorMode, type Verdict } from '../src/monitor/monitor.js';
import { DescriptorChain, LONG_CHAIN_CAP } from '../src/virtqueue/chain.js';
import { SplitDeviceQueue } from '../src/virtqueue/split/device.js';
import { PackedDeviceQueue } from '../src/virtqueue/packed/device.js';
import { layoutSplitQueue } from '../src/virtqueue/split/driver.js';
import { layoutPackedQueue } from '../src/virtqueue/packed/driver.js';
import { AVAIL_RING, RING_IDX } from '../src/spec/split-layout.js';
import { PDESC_F_INDIRECT, PDESC_F_NEXT, PDESC_F_WRITE, availFlags } from '../src/spec/packed-layout.js';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../src/spec/constants.js';

const RING = 0x1000;
const TABLE = 0x40000;
const DATA = 0x80000;
type Format = 'split' | 'packed';
const CLAUSE: Record<Format, string> = { split: 'split.indirect-descs.driver.3', packed: 'packed.indirect-descs.driver.3' };

function rig(format: Format, size: number, mode: MonitorMode) {
  const mem = GuestMemory.create(1 << 20);
  const monitor = new Monitor({ mode });
  const sink: { verdict: Verdict; fatal: boolean }[] = [];
  const onSink = (verdict: Verdict, fatal: boolean) => sink.push({ verdict, fatal });
  const dev = format === 'split' ? new SplitDeviceQueue(mem, 0, size, monitor, onSink) : new PackedDeviceQueue(mem, 0, size, monitor, onSink);
  const l = format === 'split' ? layoutSplitQueue(RING, size) : layoutPackedQueue(RING, size);
  dev.setAddresses({ desc: l.desc, avail: l.avail, used: l.used });
  assert.ok(dev.activate({ eventIdx: false, indirect: true }));
  let offered = 0;
  /** Makes one chain available: an indirect table of `entries` 16-byte buffers, the last device-writable. */
  const offerIndirect = (entries: number) => {
    const table = TABLE + offered * 0x100;
    for (let i = 0; i < entries; i++) {
      const o = table + i * 16;
      const last = i === entries - 1;
      mem.writeU64(o, DATA + i * 16);
      mem.writeU32(o + 8, 16);
      if (format === 'split') {
        mem.writeU16(o + 12, (last ? VIRTQ_DESC_F_WRITE : VIRTQ_DESC_F_NEXT));
        mem.writeU16(o + 14, last ? 0 : i + 1);
      } else {
        mem.writeU16(o + 12, 0);
        mem.writeU16(o + 14, last ? PDESC_F_WRITE : 0);
      }
    }
    const slot = offered;
    if (format === 'split') {
      const d = l.desc + slot * 16;
      mem.writeU64(d, table);
      mem.writeU32(d + 8, entries * 16);
      mem.writeU16(d + 12, VIRTQ_DESC_F_INDIRECT);
      mem.writeU16(d + 14, 0);
      mem.writeU16(l.avail + AVAIL_RING + 2 * slot, slot);
      mem.writeU16(l.avail + RING_IDX, slot + 1);
    } else {
      const d = l.desc + slot * 16;
      mem.writeU64(d, table);
      mem.writeU32(d + 8, entries * 16);
      mem.writeU16(d + 12, slot);
      mem.writeU16(d + 14, PDESC_F_INDIRECT | availFlags(true));
    }
    offered++;
  };
  return { mem, monitor, sink, dev, l, offerIndirect };
}

for (const format of ['split', 'packed'] as const) {
  test(`${format}: an indirect chain longer than the queue size is served in tolerant mode, reported with ${CLAUSE[format]} (not fatal)`, () => {
    const r = rig(format, 8, 'tolerant');
    const chain = r.dev.newChain();
    r.offerIndirect(20);
    assert.equal(r.dev.pop(chain), true, JSON.stringify(r.monitor.verdicts));
    assert.deepEqual([chain.head, chain.count, chain.readable, chain.readableBytes, chain.writableBytes, chain.indirect], [0, 20, 19, 19 * 16, 16, true]);
    assert.deepEqual(r.monitor.verdicts.map((v) => [v.clause, v.severity]), [[CLAUSE[format], 'violation']]);
    assert.deepEqual(r.sink.map((s) => s.fatal), [false]);
    assert.equal(r.monitor.shouldAct(r.sink[0].verdict), false, 'tolerant: the device does not act');
    assert.equal(r.dev.broken, false);
    // The queue goes on: the chain is returned, and the next one (also long) is served too.
    r.dev.addUsed(chain.head, 16);
    r.dev.publish();
    r.offerIndirect(30);
    assert.equal(r.dev.pop(chain), true);
    assert.deepEqual([chain.head, chain.count], [1, 30]);
    assert.equal(r.monitor.verdicts.length, 2, 'one verdict per chain');
  });

  test(`${format}: an indirect chain of exactly the queue size is no violation`, () => {
    const r = rig(format, 8, 'strict');
    const chain = r.dev.newChain();
    r.offerIndirect(8);
    assert.equal(r.dev.pop(chain), true);
    assert.equal(chain.count, 8);
    assert.deepEqual(r.monitor.verdicts, []);
  });

  test(`${format}: in strict mode a chain longer than the queue is a device error (reported, the monitor acts, nothing served)`, () => {
    const r = rig(format, 8, 'strict');
    r.offerIndirect(9);
    assert.equal(r.dev.pop(r.dev.newChain()), false);
    assert.deepEqual(r.monitor.verdicts.map((v) => v.clause), [CLAUSE[format]]);
    assert.equal(r.sink.length, 1);
    assert.equal(r.sink[0].fatal, false, 'a servable violation, not an unservable one');
    // What VirtioDevice does with it: DEVICE_NEEDS_RESET when the monitor acts (device.ts onViolation).
    assert.equal(r.monitor.shouldAct(r.sink[0].verdict), true);
    assert.equal(r.dev.broken, true, 'the queue takes nothing more');
    assert.equal(r.dev.pop(r.dev.newChain()), false);
    assert.equal(r.monitor.verdicts.length, 1);
  });

  test(`${format}: up to LONG_CHAIN_CAP (${LONG_CHAIN_CAP}) descriptors are served; one more is fatal in every mode; the chain grows once and no further`, () => {
    const r = rig(format, 8, 'tolerant');
    const chain = r.dev.newChain();
    assert.ok(chain.capacity < LONG_CHAIN_CAP, 'preallocated for the queue, not for the cap');
    r.offerIndirect(LONG_CHAIN_CAP);
    assert.equal(r.dev.pop(chain), true, JSON.stringify(r.monitor.verdicts));
    assert.equal(chain.count, LONG_CHAIN_CAP);
    assert.ok(chain.capacity >= LONG_CHAIN_CAP && chain.capacity <= chain.limit && chain.limit <= LONG_CHAIN_CAP + 64, `capacity ${chain.capacity}, limit ${chain.limit}`);
    const arrays = chain.addrs;
    r.dev.addUsed(chain.head, 16);
    r.dev.publish();
    r.offerIndirect(LONG_CHAIN_CAP);
    assert.equal(r.dev.pop(chain), true);
    assert.equal(chain.addrs, arrays, 'served again without allocating');
    r.dev.addUsed(chain.head, 16);
    r.dev.publish();
    r.offerIndirect(LONG_CHAIN_CAP + 1);
    assert.equal(r.dev.pop(chain), false);
    const last = r.sink[r.sink.length - 1];
    assert.equal(last.verdict.clause, CLAUSE[format]);
    assert.equal(last.fatal, true, 'beyond the cap: unservable');
    assert.equal(r.dev.broken, true);
    assert.match(last.verdict.message, new RegExp(`${LONG_CHAIN_CAP}`));
  });
}

test('split: a direct chain longer than the queue size stays fatal in tolerant mode (it can only be a loop)', () => {
  const r = rig('split', 4, 'tolerant');
  for (let i = 0; i < 4; i++) {
    const d = r.l.desc + i * 16;
    r.mem.writeU64(d, DATA + i * 16);
    r.mem.writeU32(d + 8, 16);
    r.mem.writeU16(d + 12, VIRTQ_DESC_F_NEXT);
    r.mem.writeU16(d + 14, (i + 1) % 4);
  }
  r.mem.writeU16(r.l.avail + AVAIL_RING, 0);
  r.mem.writeU16(r.l.avail + RING_IDX, 1);
  assert.equal(r.dev.pop(r.dev.newChain()), false);
  assert.deepEqual(r.sink.map((s) => [s.verdict.clause, s.fatal]), [['split.desc-table.driver.1', true]]);
  assert.equal(r.dev.broken, true);
});

test('packed: a direct list longer than the queue size stays fatal in tolerant mode (packed.scatter-gather-support.driver.2)', () => {
  const r = rig('packed', 4, 'tolerant');
  for (let i = 0; i < 4; i++) {
    const d = r.l.desc + i * 16;
    r.mem.writeU64(d, DATA + i * 16);
    r.mem.writeU32(d + 8, 16);
    r.mem.writeU16(d + 14, PDESC_F_NEXT | availFlags(true));
  }
  assert.equal(r.dev.pop(r.dev.newChain()), false);
  assert.deepEqual(r.sink.map((s) => [s.verdict.clause, s.fatal]), [['packed.scatter-gather-support.driver.2', true]]);
});

test('DescriptorChain: preallocated for the queue, grows by doubling up to its limit and no further', () => {
  const mem = GuestMemory.create(1 << 16);
  const c = DescriptorChain.forQueue(8);
  assert.deepEqual([c.capacity, c.limit], [8 + 64, LONG_CHAIN_CAP + 64]);
  assert.deepEqual([DescriptorChain.forQueue(4096).capacity, DescriptorChain.forQueue(4096).limit], [4096 + 64, 4096 + 64]);
  c.clear(0);
  let r: string = 'ok';
  let n = 0;
  while ((r = c.append(mem, n * 4, 4, false)) === 'ok') n++;
  assert.equal(r, 'full');
  assert.equal(n, c.limit);
  assert.equal(c.capacity, c.limit);
  for (let i = 0; i < n; i++) assert.equal(c.addrs[i], i * 4, 'contents kept across growth');
  const fixed = new DescriptorChain(4);
  fixed.clear(0);
  for (let i = 0; i < 4; i++) assert.equal(fixed.append(mem, i, 1, false), 'ok');
  assert.equal(fixed.append(mem, 4, 1, false), 'full', 'no limit given: the capacity is the limit');
});
