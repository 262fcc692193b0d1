// Check sites of the packed ring (device side) that the scenarios and the proxy's negative
// tests reach only through another site of the same clause (catalogue/uncaught-sites.tsv):
// each driver here, driven by hand over guest memory, breaks its clause exactly at the site its
// test names, so the mutation audit sees that site's verdict asserted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Monitor } from '../../src/monitor/monitor.js';
import { RngDevice } from '../../src/devices/rng/device.js';
import { DATA_BASE, makePackedPair } from '../ring-harness.js';
import { Feature, Status } from '../../src/spec/constants.js';
import { bit } from '../../src/spec/features.js';
import { PDESC_F_AVAIL, PDESC_F_INDIRECT, PDESC_F_NEXT, PDESC_F_USED, PDESC_F_WRITE } from '../../src/spec/packed-layout.js';

const LIVE = Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK;
const RING = 0x1000;
const DRIVER_EVENT = 0x2000;
const DEVICE_EVENT = 0x2004;

/**
 * A live entropy device over `mem` with packed queue 0 (`size` entries at `ring`, strict
 * monitor), driven by hand; `before` runs on the queue before it is enabled.
 */
function live(mem: GuestMemory, o: { size?: number; ring?: number; features?: bigint; before?: (dev: RngDevice) => void } = {}) {
  const monitor = new Monitor({ mode: 'strict' });
  const dev = new RngDevice({ monitor });
  dev.attach(mem, { interrupt() {}, configChanged() {}, synchronous: true });
  dev.setStatus(Status.ACKNOWLEDGE);
  dev.setStatus(Status.ACKNOWLEDGE | Status.DRIVER);
  dev.setDriverFeatures(o.features ?? bit(Feature.VERSION_1) | bit(Feature.INDIRECT_DESC) | bit(Feature.RING_PACKED));
  dev.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
  dev.setQueueSize(0, o.size ?? 8);
  dev.setQueueAddresses(0, o.ring ?? RING, DRIVER_EVENT, DEVICE_EVENT);
  o.before?.(dev);
  dev.enableQueue(0);
  dev.setStatus(LIVE);
  return {
    dev,
    monitor,
    clauses: () => monitor.verdicts.map((v) => v.clause),
    /** Writes ring slot `slot` (wrap counter 1: AVAIL set, USED clear, when `flags` has AVAIL). */
    slot(slot: number, addr: number, len: number, flags: number, id = 0) {
      const at = RING + slot * 16;
      mem.writeU64(at, BigInt(addr));
      mem.writeU32(at + 8, len);
      mem.writeU16(at + 12, id);
      mem.storeU16(at + 14, flags);
    },
    /** Writes entry `i` of an indirect table at `table`. */
    entry(table: number, i: number, addr: number, len: number, flags: number) {
      mem.writeU64(table + i * 16, BigInt(addr));
      mem.writeU32(table + i * 16 + 8, len);
      mem.writeU16(table + i * 16 + 12, 0);
      mem.writeU16(table + i * 16 + 14, flags);
    },
    notify: () => dev.notify(0),
  };
}

/** 4 GiB of guest address space over one 64 MiB buffer: buffers over 2^32 bytes in all exist, cheaply. */
function bigMemory(): GuestMemory {
  const piece = 64 << 20;
  const buffer = new ArrayBuffer(piece);
  return new GuestMemory(Array.from({ length: 66 }, (_, i) => ({ guestAddr: i * piece, size: piece, buffer })));
}

test('struct.queue-config.driver.1: a packed queue of 40000 entries (more than 32768) at activation', () => {
  const d = live(GuestMemory.create(1 << 20), { size: 40000 });
  assert.ok(d.clauses().includes('struct.queue-config.driver.1'), d.clauses().join(', '));
  assert.match(d.monitor.verdicts.find((v) => v.clause === 'struct.queue-config.driver.1')!.message, /queue size 40000 is not 1\.\./);
});

test('struct.buffer-range.driver.1: a packed descriptor ring running past the end of guest memory', () => {
  // 8 entries = 128 bytes from 1 MiB - 64: 16-aligned, starts in memory, ends outside.
  const d = live(GuestMemory.create(1 << 20), { ring: (1 << 20) - 64 });
  assert.deepEqual(d.clauses(), ['struct.buffer-range.driver.1']);
  assert.match(d.monitor.verdicts[0].message, /descriptor ring .* is not inside one guest memory region/);
});

test('struct.buffer-range.driver.1: a packed list of ring descriptors adding up to more than 2^32 bytes', () => {
  const d = live(bigMemory());
  // Later descriptors first, the head made available last (2.8.6).
  d.slot(2, 0x100000, 1, PDESC_F_AVAIL | PDESC_F_WRITE);
  d.slot(1, 0x100000, 0x80000000, PDESC_F_AVAIL | PDESC_F_WRITE | PDESC_F_NEXT);
  d.slot(0, 0x100000, 0x80000000, PDESC_F_AVAIL | PDESC_F_WRITE | PDESC_F_NEXT);
  d.notify();
  assert.deepEqual(d.clauses(), ['struct.buffer-range.driver.1']);
  assert.match(d.monitor.verdicts[0].message, /list at slot 0 is longer than 2\^32 bytes/);
});

test('struct.buffer-range.driver.1: a packed indirect table whose entries add up to more than 2^32 bytes', () => {
  const d = live(bigMemory());
  d.entry(0x10000, 0, 0x100000, 0x80000000, PDESC_F_WRITE);
  d.entry(0x10000, 1, 0x100000, 0x80000000, PDESC_F_WRITE);
  d.entry(0x10000, 2, 0x100000, 1, PDESC_F_WRITE);
  d.slot(0, 0x10000, 3 * 16, PDESC_F_AVAIL | PDESC_F_INDIRECT);
  d.notify();
  assert.deepEqual(d.clauses(), ['struct.buffer-range.driver.1']);
  assert.match(d.monitor.verdicts[0].message, /indirect list at slot 0 is longer than 2\^32 bytes/);
});

test('struct.buffer-range.driver.1: a packed indirect table outside guest memory', () => {
  const d = live(GuestMemory.create(1 << 20));
  d.slot(0, 0x4000_0000, 32, PDESC_F_AVAIL | PDESC_F_INDIRECT);
  d.notify();
  assert.deepEqual(d.clauses(), ['struct.buffer-range.driver.1']);
  assert.match(d.monitor.verdicts[0].message, /indirect table .* is outside guest memory/);
});

test('packed.scatter-gather-support.driver.2: one descriptor spanning 1200 guest memory regions, more pieces than a list holds', () => {
  const mem = new GuestMemory(Array.from({ length: 2048 }, (_, i) => ({ guestAddr: i * 4096, size: 4096, buffer: new ArrayBuffer(4096) })));
  const d = live(mem);
  d.slot(0, 0x10000, 1200 * 4096, PDESC_F_AVAIL | PDESC_F_WRITE);
  d.notify();
  assert.deepEqual(d.clauses(), ['packed.scatter-gather-support.driver.2']);
  assert.match(d.monitor.verdicts[0].message, /has more buffers than this queue takes/);
});

// Inflight recovery (vhost-user): buffers a previous back-end process took and never used come
// back with the ring descriptors they had (PriorBuffer); they are judged like ring lists.
test('packed.indirect-descs.driver.1: a resubmitted buffer whose list holds an INDIRECT descriptor without VIRTIO_F_INDIRECT_DESC', () => {
  const d = live(GuestMemory.create(1 << 20), {
    features: bit(Feature.VERSION_1) | bit(Feature.RING_PACKED),
    before: (dev) => dev.queues[0].serveFirst([{ head: 3, descriptors: [{ addr: 0x10000, len: 32, flags: PDESC_F_INDIRECT }] }]),
  });
  d.notify();
  assert.deepEqual(d.clauses(), ['packed.indirect-descs.driver.1']);
  assert.match(d.monitor.verdicts[0].message, /resubmitted buffer 3 has an INDIRECT descriptor/);
});

test('packed.scatter-gather-support.driver.3: a resubmitted buffer with a device-readable descriptor after a device-writable one', () => {
  const d = live(GuestMemory.create(1 << 20), {
    before: (dev) =>
      dev.queues[0].serveFirst([
        {
          head: 3,
          descriptors: [
            { addr: 0x20000, len: 16, flags: PDESC_F_WRITE | PDESC_F_NEXT },
            { addr: 0x20100, len: 16, flags: 0 },
          ],
        },
      ]),
  });
  d.notify();
  assert.deepEqual(d.clauses(), ['packed.scatter-gather-support.driver.3']);
  assert.match(d.monitor.verdicts[0].message, /resubmitted buffer 3: a device-readable descriptor follows a device-writable one/);
});

test('the same packed queue with well-formed lists (direct, indirect) and a well-formed resubmitted buffer: no verdict', () => {
  const d = live(GuestMemory.create(1 << 20), {
    before: (dev) => dev.queues[0].serveFirst([{ head: 5, descriptors: [{ addr: 0x20000, len: 16, flags: PDESC_F_WRITE }] }]),
  });
  d.entry(0x10000, 0, 0x20100, 16, PDESC_F_WRITE);
  d.slot(1, 0x10000, 16, PDESC_F_AVAIL | PDESC_F_INDIRECT, 1);
  d.slot(0, 0x20200, 16, PDESC_F_AVAIL | PDESC_F_WRITE, 0);
  d.notify();
  assert.deepEqual(d.clauses(), []);
});

test('a resubmitted buffer is used without a look at ring slots (its own may hold newer lists by then): its used descriptor is written, no verdict', () => {
  // Inflight recovery: the buffer comes back from stored descriptors, not from the ring, so
  // addUsed has no ring slot to compare for packed.desc-table.driver.2; a device that compared
  // anyway would judge whatever the ring holds (here nothing, or past its end).
  const mem = GuestMemory.create(1 << 20);
  const d = live(mem, {
    before: (dev) => dev.queues[0].serveFirst([{ head: 5, descriptors: [{ addr: 0x20000, len: 16, flags: PDESC_F_WRITE }] }]),
  });
  // Served at DRIVER_OK: used descriptor at slot 0.
  assert.deepEqual(d.clauses(), []);
  assert.deepEqual(
    { id: mem.readU16(RING + 12), len: mem.readU32(RING + 8), flags: mem.readU16(RING + 14) },
    { id: 5, len: 16, flags: PDESC_F_AVAIL | PDESC_F_USED | PDESC_F_WRITE },
  );
});

// packed.desc-table.driver.2 compares every le32 word of a held slot at addUsed: the length is
// reached by a scenario (src/testing/scenarios.ts); the two address words and the id and flags
// half (one le32 word), here.
for (const [what, offset, value] of [
  ['address (low word)', 0, 0x1230],
  ['address (high word)', 4, 1],
  ['buffer id', 12, 7],
  ['flags (WRITE cleared)', 14, PDESC_F_AVAIL],
] as const) {
  test(`packed.desc-table.driver.2: the driver changes the ${what} of a slot the device holds`, () => {
    // The device side of test/ring-harness.ts's pair; the driver's slot 0 is written by hand.
    const { mem, dev: q, devMon: monitor, layout } = makePackedPair({ size: 8, eventIdx: false, indirect: false });
    mem.writeU64(layout.desc, BigInt(DATA_BASE));
    mem.writeU32(layout.desc + 8, 16);
    mem.writeU16(layout.desc + 12, 3);
    mem.storeU16(layout.desc + 14, PDESC_F_AVAIL | PDESC_F_WRITE);
    const chain = q.newChain();
    assert.ok(q.pop(chain));
    assert.equal(chain.head, 3);
    mem.writeU16(layout.desc + offset, value);
    q.addUsed(3, 16);
    assert.deepEqual(
      monitor.verdicts.map((v) => v.clause),
      ['packed.desc-table.driver.2'],
    );
    assert.match(monitor.verdicts[0].message, /driver changed slot 0 of buffer 3 after making it available/);
  });
}
