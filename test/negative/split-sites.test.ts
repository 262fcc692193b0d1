// Check sites of the split ring (device side) that the scenarios reach only through another
// site of the same clause (catalogue/uncaught-sites.tsv): each driver here, driven by hand,
// breaks its clause exactly at the site its test names, so the mutation audit sees that
// site's verdict asserted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Monitor, type MonitorMode } from '../../src/monitor/monitor.js';
import { RngDevice } from '../../src/devices/rng/device.js';
import { Feature, Status, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../../src/spec/constants.js';
import { bit } from '../../src/spec/features.js';
import { DATA_BASE, makePair, putDesc } from '../ring-harness.js';
import { AVAIL_RING, DESC_SIZE, RING_IDX } from '../../src/spec/split-layout.js';

const ACK_DRIVER = Status.ACKNOWLEDGE | Status.DRIVER;
const LIVE = ACK_DRIVER | Status.FEATURES_OK | Status.DRIVER_OK;
const DESC = 0x1000;
const AVAIL = 0x2000;
const USED = 0x3000;

/** A live entropy device (queue 0 of 8 entries at DESC/AVAIL/USED) over `mem`, driven by hand. */
function live(mem: GuestMemory, mode: MonitorMode = 'strict', hold = false, [desc, avail, used] = [DESC, AVAIL, USED]) {
  const monitor = new Monitor({ mode });
  // `hold`: a source that never answers, so the device keeps each buffer it takes.
  const dev = new RngDevice({ monitor, ...(hold ? { asyncSource: () => new Promise<void>(() => undefined) } : {}) });
  dev.withholdFeatures(bit(Feature.RING_PACKED));
  dev.attach(mem, { interrupt() {}, configChanged() {}, synchronous: true });
  dev.setStatus(Status.ACKNOWLEDGE);
  dev.setStatus(ACK_DRIVER);
  dev.setDriverFeatures(bit(Feature.VERSION_1) | bit(Feature.INDIRECT_DESC));
  dev.setStatus(ACK_DRIVER | Status.FEATURES_OK);
  dev.setQueueSize(0, 8);
  dev.setQueueAddresses(0, desc, avail, used);
  dev.enableQueue(0);
  dev.setStatus(LIVE);
  let idx = 0;
  return {
    dev,
    monitor,
    clauses: () => monitor.verdicts.map((v) => v.clause),
    /** Makes descriptor `head` available and notifies. */
    expose(head: number) {
      mem.writeU16(AVAIL + AVAIL_RING + 2 * (idx % 8), head);
      idx++;
      mem.writeU16(AVAIL + RING_IDX, idx);
      dev.notify(0);
    },
  };
}

test('split.desc-table.driver.1: an indirect table whose entries chain in a loop (0 -> 1 -> 0)', () => {
  const mem = GuestMemory.create(1 << 20);
  const d = live(mem);
  putDesc(mem, 0x10000, 0, 0x20000, 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
  putDesc(mem, 0x10000, 1, 0x20010, 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 0);
  putDesc(mem, DESC, 0, 0x10000, 2 * DESC_SIZE, VIRTQ_DESC_F_INDIRECT, 0);
  d.expose(0);
  assert.deepEqual(d.clauses(), ['split.desc-table.driver.1']);
  assert.match(d.monitor.verdicts[0].message, /indirect table of head 0 loops/);
  assert.ok(d.dev.status & Status.DEVICE_NEEDS_RESET);
});

test('split.desc-table.driver.1: an indirect table whose buffers add up to more than 2^32 bytes', () => {
  // 4 GiB of guest address space over one 64 MiB buffer: the buffers exist, cheaply.
  const piece = 64 << 20;
  const buffer = new ArrayBuffer(piece);
  const mem = new GuestMemory(Array.from({ length: 66 }, (_, i) => ({ guestAddr: i * piece, size: piece, buffer })));
  const d = live(mem);
  putDesc(mem, 0x10000, 0, 0x100000, 0x80000000, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
  putDesc(mem, 0x10000, 1, 0x100000, 0x80000000, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2);
  putDesc(mem, 0x10000, 2, 0x100000, 1, VIRTQ_DESC_F_WRITE, 0);
  putDesc(mem, DESC, 0, 0x10000, 3 * DESC_SIZE, VIRTQ_DESC_F_INDIRECT, 0);
  d.expose(0);
  assert.deepEqual(d.clauses(), ['split.desc-table.driver.1']);
  assert.match(d.monitor.verdicts[0].message, /longer than 2\^32 bytes/);
});

test('split.indirect-descs.driver.3: an indirect chain beyond the most this device serves (1100 entries, queue of 8)', () => {
  // Tolerant, so the walk goes past the servable excess (its own verdict) to the hard cap.
  const mem = GuestMemory.create(1 << 20);
  const d = live(mem, 'tolerant');
  const n = 1100;
  for (let i = 0; i < n; i++) putDesc(mem, 0x10000, i, 0x20000, 1, VIRTQ_DESC_F_WRITE | (i < n - 1 ? VIRTQ_DESC_F_NEXT : 0), i + 1);
  putDesc(mem, DESC, 0, 0x10000, n * DESC_SIZE, VIRTQ_DESC_F_INDIRECT, 0);
  d.expose(0);
  assert.deepEqual(d.clauses(), ['split.indirect-descs.driver.3', 'split.indirect-descs.driver.3']);
  assert.match(d.monitor.verdicts[1].message, /the most this device serves/);
});

test('split.indirect-descs.driver.3: one descriptor spanning 1200 guest memory regions, more pieces than a chain holds', () => {
  const mem = new GuestMemory(Array.from({ length: 2048 }, (_, i) => ({ guestAddr: i * 4096, size: 4096, buffer: new ArrayBuffer(4096) })));
  const d = live(mem);
  putDesc(mem, DESC, 0, 0x10000, 1200 * 4096, VIRTQ_DESC_F_WRITE, 0);
  d.expose(0);
  assert.deepEqual(d.clauses(), ['split.indirect-descs.driver.3']);
  assert.match(d.monitor.verdicts[0].message, /more buffers than this queue accepts/);
});

test('init.cleanup.driver.1: the driver makes a descriptor available again while the device still holds it', () => {
  const mem = GuestMemory.create(1 << 20);
  const d = live(mem, 'strict', true);
  putDesc(mem, DESC, 0, 0x20000, 16, VIRTQ_DESC_F_WRITE, 0);
  d.expose(0);
  assert.deepEqual(d.clauses(), [], 'taken and held');
  d.expose(0);
  assert.deepEqual(d.clauses(), ['init.cleanup.driver.1']);
  assert.match(d.monitor.verdicts[0].message, /made available again while the device still holds it/);
});

test('the same queue with well-formed chains (direct, indirect, across regions): no verdict', () => {
  const mem = new GuestMemory(Array.from({ length: 256 }, (_, i) => ({ guestAddr: i * 4096, size: 4096, buffer: new ArrayBuffer(4096) })));
  const d = live(mem);
  putDesc(mem, 0x10000, 0, 0x20000, 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
  putDesc(mem, 0x10000, 1, 0x20010, 16, VIRTQ_DESC_F_WRITE, 0);
  putDesc(mem, DESC, 0, 0x10000, 2 * DESC_SIZE, VIRTQ_DESC_F_INDIRECT, 0);
  d.expose(0);
  putDesc(mem, DESC, 1, 0x30000, 40 * 4096, VIRTQ_DESC_F_WRITE, 0);
  d.expose(1);
  assert.deepEqual(d.clauses(), []);
});

test('struct.buffer-range.driver.1: a split device area running past the end of guest memory', () => {
  // 8 entries: the used ring is 4 + 8 * 8 + 2 = 70 bytes; from 1 MiB - 32 it ends outside.
  const d = live(GuestMemory.create(1 << 20), 'strict', false, [DESC, AVAIL, (1 << 20) - 32]);
  assert.deepEqual(d.clauses(), ['struct.buffer-range.driver.1']);
  assert.match(d.monitor.verdicts[0].message, /device area \(used ring\) .* is not inside one guest memory region/);
});

test('struct.queue-config.driver.1: a split device area overlapping the descriptor table', () => {
  // The table is 8 * 16 = 128 bytes from DESC; the used ring starts inside it.
  const d = live(GuestMemory.create(1 << 20), 'strict', false, [DESC, AVAIL, DESC + 64]);
  assert.deepEqual(d.clauses(), ['struct.queue-config.driver.1']);
  assert.match(d.monitor.verdicts[0].message, /device area overlaps the descriptor table/);
});

// init.cleanup.driver.1, the other half: a descriptor of a chain the device holds is rewritten
// before the device returns it (checkUnaltered, at addUsed). Each of the four 32-bit words (address
// low and high, length, flags and next) of each of the chain's two table descriptors: the
// scenario changes one (the length of a one-descriptor chain), a compare left out of the check
// would pass it.
for (let desc = 0; desc < 2; desc++) {
  for (let word = 0; word < 4; word++) {
    test(`init.cleanup.driver.1: the driver changes word ${word} of descriptor ${desc} of a chain the device holds`, () => {
      const p = makePair({ size: 8, eventIdx: false, indirect: false });
      const mem = p.mem;
      const chain = p.dev.newChain();
      p.drv.begin().addReadable(DATA_BASE, 16).addWritable(DATA_BASE + 0x100, 32);
      p.drv.commit('a');
      p.drv.publish();
      assert.equal(p.dev.pop(chain), true);
      // Returned unaltered first: no verdict.
      p.dev.addUsed(chain.head, 0);
      p.dev.publish();
      assert.equal(p.drv.getUsed(), 'a');
      p.drv.begin().addReadable(DATA_BASE, 16).addWritable(DATA_BASE + 0x100, 32);
      p.drv.commit('b');
      p.drv.publish();
      assert.equal(p.dev.pop(chain), true);
      assert.equal(p.devMon.verdicts.length, 0);
      const table = p.layout.desc;
      const d = desc === 0 ? chain.head : mem.readU16(table + DESC_SIZE * chain.head + 14);
      const at = table + DESC_SIZE * d + 4 * word;
      mem.writeU32(at, mem.readU32(at) ^ 0x10);
      p.dev.addUsed(chain.head, 0);
      assert.deepEqual(p.devMon.verdicts.map((v) => v.clause), ['init.cleanup.driver.1']);
      assert.match(p.devMon.verdicts[0].message, new RegExp(`driver altered descriptor ${d} of chain ${chain.head} while the device held it`));
    });
  }
}
