// Check sites of the driver-side queues (under VIRTIO_F_IN_ORDER, and with auditReadable) that
// the scenarios reach only through another site of the same clause
// (catalogue/uncaught-sites.tsv): a driver queue, and a device's used entries (and writes)
// made by hand as a misbehaving device would make them, each breaking its clause exactly at
// the site its test names.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Monitor } from '../../src/monitor/monitor.js';
import { SplitDriverQueue, layoutSplitQueue } from '../../src/virtqueue/split/driver.js';
import { PackedDriverQueue, layoutPackedQueue } from '../../src/virtqueue/packed/driver.js';
import { PDESC_F_AVAIL, PDESC_F_USED, PDESC_F_WRITE } from '../../src/spec/packed-layout.js';

const SIZE = 8;
const DATA = 0x20000;

/** What both formats' harnesses share: the verdicts' clauses, and buffer `k` (one writable descriptor) made available. */
function common(q: SplitDriverQueue<number> | PackedDriverQueue<number>, monitor: Monitor) {
  return {
    q,
    clauses: () => monitor.verdicts.map((v) => v.clause),
    offer(k: number) {
      q.begin().addWritable(DATA + k * 0x100, 16).commit(k);
      q.publish();
    },
  };
}

function split() {
  const mem = GuestMemory.create(1 << 20);
  const layout = layoutSplitQueue(0x1000, SIZE);
  const monitor = new Monitor({ mode: 'tolerant' });
  const q = new SplitDriverQueue<number>(mem, 0, SIZE, layout, { eventIdx: false, indirect: false, inOrder: true }, monitor, () => undefined);
  let used = 0;
  return {
    ...common(q, monitor),
    /** A used element naming descriptor `id`, as a device writes it. */
    use(id: number) {
      mem.writeU32(layout.used + 4 + 8 * (used % SIZE), id);
      mem.writeU32(layout.used + 8 + 8 * (used % SIZE), 16);
      used++;
      mem.storeU16(layout.used + 2, used);
    },
  };
}

function packed() {
  const mem = GuestMemory.create(1 << 20);
  const layout = layoutPackedQueue(0x1000, SIZE);
  const monitor = new Monitor({ mode: 'tolerant' });
  const q = new PackedDriverQueue<number>(mem, 0, SIZE, layout, { eventIdx: false, indirect: false, inOrder: true }, monitor, () => undefined);
  return {
    ...common(q, monitor),
    /** The buffer id the driver gave the descriptor at `slot`. */
    idAt: (slot: number) => mem.readU16(layout.desc + slot * 16 + 12),
    /** Slot `slot` written as a used descriptor (first pass: AVAIL and USED set) naming `id`. */
    use(slot: number, id: number) {
      mem.writeU32(layout.desc + slot * 16 + 8, 16);
      mem.writeU16(layout.desc + slot * 16 + 12, id);
      mem.storeU16(layout.desc + slot * 16 + 14, PDESC_F_AVAIL | PDESC_F_USED | PDESC_F_WRITE);
    },
  };
}

test('struct.used-id.device.1: with IN_ORDER, a split used element names a descriptor that is not an exposed head', () => {
  const r = split();
  r.offer(0);
  r.use(SIZE - 1); // only head 0 is out
  assert.equal(r.q.getUsed(), undefined);
  assert.deepEqual(r.clauses(), ['struct.used-id.device.1']);
});

test('reserved.bits.device.5: with IN_ORDER, a packed buffer marked used after a later buffer\'s used descriptor already covered it', () => {
  const r = packed();
  for (let k = 0; k < 3; k++) r.offer(k);
  const [a, b] = [r.idAt(0), r.idAt(1)];
  // One used descriptor for the batch A, B (the id of its last buffer, at the batch's first slot).
  r.use(0, b);
  assert.equal(r.q.getUsed(), 0);
  assert.equal(r.q.getUsed(), 1);
  assert.deepEqual(r.clauses(), []);
  // Then A again, at the slot after the batch.
  r.use(2, a);
  assert.equal(r.q.getUsed(), undefined);
  assert.deepEqual(r.clauses(), ['reserved.bits.device.5']);
});

test('the same IN_ORDER queues with a device that uses in order (one by one, and in a batch): no verdict', () => {
  const s = split();
  s.offer(0);
  s.offer(1);
  s.use(0);
  s.use(1);
  assert.equal(s.q.getUsed(), 0);
  assert.equal(s.q.getUsed(), 1);
  const p = packed();
  for (let k = 0; k < 3; k++) p.offer(k);
  p.use(0, p.idAt(1));
  p.use(2, p.idAt(2));
  assert.deepEqual([p.q.getUsed(), p.q.getUsed(), p.q.getUsed()], [0, 1, 2]);
  assert.deepEqual([...s.clauses(), ...p.clauses()], []);
});

test('split.desc-table.device.4: with auditReadable, the device changes an indirect table while it holds the chain', () => {
  const mem = GuestMemory.create(1 << 20);
  const layout = layoutSplitQueue(0x1000, SIZE, 4);
  const monitor = new Monitor({ mode: 'tolerant' });
  const q = new SplitDriverQueue<number>(mem, 0, SIZE, layout, { eventIdx: false, indirect: true, indirectPool: layout.pool, indirectMax: 4, auditReadable: true }, monitor, () => undefined);
  q.begin().addReadable(DATA, 16).addWritable(DATA + 0x100, 16).commit(7, { indirect: true });
  q.publish();
  const head = mem.readU16(layout.avail + 4);
  const table = mem.readU32(layout.desc + head * 16) + mem.readU32(layout.desc + head * 16 + 4) * 2 ** 32;
  mem.writeU32(table + 8, 8); // the readable entry's length, rewritten by the device
  mem.writeU32(layout.used + 4, head);
  mem.writeU32(layout.used + 8, 16);
  mem.storeU16(layout.used + 2, 1);
  q.getUsed();
  assert.deepEqual(monitor.verdicts.map((v) => v.clause), ['split.desc-table.device.4']);
  assert.match(monitor.verdicts[0].message, /indirect table of chain \d+ was changed while the device held it/);
});
