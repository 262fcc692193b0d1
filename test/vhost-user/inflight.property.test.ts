// The inflight buffer comes from the front-end: after a restart the back-end reads whatever it
// holds. Buffers written by the tracker itself through a random run of takes, returns and
// publishes must recover exactly (the buffers still in flight, in the order taken, and the
// ring position); the same buffers with random bytes damaged must give a clean answer: an
// Error naming what is wrong, or a recovery whose buffers are in range, distinct and fit the
// ring. Never a hang, a crash, or a position outside the ring.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { PackedInflightRegion, SplitInflightRegion, packedInflightQueueSize, splitInflightQueueSize } from '../../src/transports/vhost-user/inflight.js';

const sizeArb = fc.constantFrom(1, 2, 4, 8, 16);
/** take: a new buffer; ret: return the in-flight buffer at pick; pub: publish what was returned. */
type Op = { k: 'take'; len: number } | { k: 'ret'; pick: number } | { k: 'pub' };
const opsArb = fc.array(
  fc.oneof(
    { weight: 4, arbitrary: fc.record({ k: fc.constant('take' as const), len: fc.integer({ min: 1, max: 3 }) }) },
    { weight: 3, arbitrary: fc.record({ k: fc.constant('ret' as const), pick: fc.nat() }) },
    { weight: 2, arbitrary: fc.record({ k: fc.constant('pub' as const) }) },
  ),
  { maxLength: 60 },
);
/** Damage: a few bytes set to small values (flags, indices) or noise. */
const damageArb = fc.array(fc.tuple(fc.nat(), fc.constantFrom(0, 1, 2, 3, 0x80, 0xff)), { maxLength: 4 });

function damage(bytes: Uint8Array, pokes: [number, number][]): boolean {
  let changed = false;
  for (const [at, value] of pokes) {
    const i = at % bytes.length;
    if (bytes[i] !== value) changed = true;
    bytes[i] = value;
  }
  return changed;
}

test('inflight recovery (split): exact after any run of takes, returns and publishes; clean on damaged buffers', () => {
  fc.assert(
    fc.property(sizeArb, fc.integer({ min: 0, max: 0xffff }), opsArb, damageArb, (size, start, ops, pokes) => {
      const bytes = new Uint8Array(splitInflightQueueSize(size));
      const region = new SplitInflightRegion(bytes.buffer, 0, size);
      assert.equal(region.recover(start), null, 'a fresh buffer is set up, nothing to recover');
      const inFlight: number[] = []; // heads, in the order taken
      const unpublished: number[] = []; // returned, not yet published: not free for the driver yet
      const order: number[] = []; // every head taken, in order (a head may come back later)
      let returned = 0;
      let used = start;
      for (const op of ops) {
        if (op.k === 'take') {
          const head = [...Array(size).keys()].find((h) => !inFlight.includes(h) && !unpublished.includes(h));
          if (head === undefined) continue;
          region.taken(head);
          inFlight.push(head);
          order.push(head);
        } else if (op.k === 'ret' && inFlight.length > 0) {
          const [head] = inFlight.splice(op.pick % inFlight.length, 1);
          region.returned(head);
          unpublished.push(head);
          returned++;
        } else if (op.k === 'pub' && returned > 0) {
          used = (used + returned) & 0xffff;
          region.published(used);
          returned = 0;
          unpublished.length = 0;
        }
      }
      // A crash now: returned-but-unpublished buffers were never seen used by the driver, so
      // they are served again too, with those in flight, in the order taken.
      const got = new SplitInflightRegion(bytes.buffer, 0, size).recover(used);
      assert.ok(got !== null);
      assert.equal(got.usedIdx, used);
      const pending = new Set([...inFlight, ...unpublished]);
      const expected = order.filter((h, i) => pending.has(h) && order.lastIndexOf(h) === i);
      assert.deepEqual(got.resubmit, expected, 'exactly the buffers not seen used, in the order taken');
      if (!damage(bytes, pokes)) return;
      try {
        const hurt = new SplitInflightRegion(bytes.buffer, 0, size).recover(used);
        if (hurt === null) return;
        assert.equal(new Set(hurt.resubmit).size, hurt.resubmit.length, 'each head once');
        for (const h of hurt.resubmit) assert.ok(Number.isInteger(h) && h >= 0 && h < size, `head ${h} inside the ring`);
      } catch (err) {
        assert.ok(err instanceof Error && /inflight/.test(err.message), `a named error: ${String(err)}`);
      }
    }),
    { numRuns: 1500 },
  );
});

test('inflight recovery (packed): exact after any run of takes, returns and publishes; clean on damaged buffers', () => {
  fc.assert(
    fc.property(sizeArb, fc.nat(15), fc.boolean(), opsArb, damageArb, (size, at, wrap0, ops, pokes) => {
      const bytes = new Uint8Array(packedInflightQueueSize(size));
      const region = new PackedInflightRegion(bytes.buffer, 0, size);
      const startUsed = at % size;
      assert.equal(region.recover(() => 0, startUsed, wrap0), null);
      // Model: lists in flight (id, descriptors), the used position and the slots in flight.
      const inFlight: { id: number; descs: { addr: number; len: number; flags: number }[] }[] = [];
      let slotsInFlight = 0;
      let returned: { id: number; descs: { addr: number; len: number; flags: number }[] }[] = [];
      const order: number[] = []; // ids, in the order taken
      let usedLinear = startUsed + (wrap0 ? 0 : size);
      let nextId = 0;
      for (const op of ops) {
        if (op.k === 'take') {
          const len = Math.min(op.len, size - slotsInFlight);
          if (len < 1) continue;
          const id = nextId++ & 0xffff;
          const descs = Array.from({ length: len }, (_, k) => ({ addr: 0x1000 * id + 16 * k, len: 8 + k, flags: k < len - 1 ? 1 : 2 }));
          region.taken(id);
          descs.forEach((d, k) => region.descriptor(d.addr, d.len, id, d.flags, k === len - 1));
          inFlight.push({ id, descs });
          order.push(id);
          slotsInFlight += len;
        } else if (op.k === 'ret' && inFlight.length > 0) {
          const [list] = inFlight.splice(op.pick % inFlight.length, 1);
          region.returned(list.id);
          returned.push(list);
        } else if (op.k === 'pub' && returned.length > 0) {
          for (const list of returned) {
            usedLinear = (usedLinear + list.descs.length) % (2 * size);
            slotsInFlight -= list.descs.length;
          }
          const slot = usedLinear % size;
          const wrap = usedLinear < size;
          region.publishing(slot, wrap);
          region.published(slot, wrap);
          returned = [];
        }
      }
      // Crash: lists returned but not published were never seen used: they are served again too.
      const pending = [...inFlight, ...returned].sort((a, b) => order.indexOf(a.id) - order.indexOf(b.id));
      // The ring slot at the used position still reads as available in that pass (nothing was published there).
      const usedSlot = usedLinear % size;
      const usedWrap = usedLinear < size;
      const availFlags = usedWrap ? 1 << 7 : 1 << 15;
      const got = new PackedInflightRegion(bytes.buffer, 0, size).recover(() => availFlags, 0, true);
      assert.ok(got !== null);
      assert.deepEqual([got.used, got.usedWrap], [usedSlot, usedWrap], 'the used position from the buffer');
      const availLinear = (usedLinear + slotsInFlight) % (2 * size);
      assert.deepEqual([got.avail, got.availWrap], [availLinear % size, availLinear < size], 'the available position after the lists in flight');
      assert.deepEqual(got.resubmit.map((r) => ({ id: r.head, descs: r.descriptors })), pending, 'exactly the lists not seen used, in the order taken, with their descriptors');
      if (!damage(bytes, pokes)) return;
      try {
        const hurt = new PackedInflightRegion(bytes.buffer, 0, size).recover((slot) => {
          assert.ok(slot >= 0 && slot < size, `ring slot ${slot} read inside the ring`);
          return availFlags;
        }, 0, true);
        if (hurt === null) return;
        for (const x of [hurt.avail, hurt.used]) assert.ok(Number.isInteger(x) && x >= 0 && x < size, `position ${x} inside the ring`);
        const ids = hurt.resubmit.map((r) => r.head);
        assert.equal(new Set(ids).size, ids.length, 'each buffer id once');
        assert.ok(hurt.resubmit.reduce((n, r) => n + r.descriptors.length, 0) <= size, 'the lists fit the ring');
      } catch (err) {
        assert.ok(err instanceof Error && /inflight|buffer id/.test(err.message), `a named error: ${String(err)}`);
      }
    }),
    { numRuns: 1500 },
  );
});
