// The packed ring observer against a device that writes a used descriptor's id and len before
// its flags (2.8: the flags make it visible; the project's packed device writes id and len in
// addUsed and the flags in publish(), DPDK writes a batch's ids and lens, then its flags). For as
// long as the device's batch lasts, a slot the observer has not walked yet can hold used fields
// under the driver's available flags, and nothing in the slot tells them from the driver's. CI
// run 1 (notes16) had the proxy name struct.indirect-len.driver.1 on a correct pair: "indirect
// table length 4097 at slot 0", the used length of a 4 KiB read and its status byte.
//
// A fault read from a slot's fields is therefore held (no verdict) until a later look confirms
// it (rings.ts, PackedObserver.hold): a correct pair is never judged, and a real fault still is,
// whether the device goes on or stops on it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { PackedObserver } from '../../src/proxy/rings.js';
import { PDESC_F_AVAIL, PDESC_F_INDIRECT, PDESC_F_NEXT, PDESC_F_USED, PDESC_F_WRITE } from '../../src/spec/packed-layout.js';

const RING = 0x1000;
const SIZE = 8;
const USED_FLAGS = PDESC_F_AVAIL | PDESC_F_USED; // wrap counter 1: both bits set

/** Asserts no verdict (without narrowing the array's type, as assert.deepEqual(x, []) would). */
function none(verdicts: readonly string[], message?: string): void {
  assert.equal(verdicts.join('\n'), '', message);
}

function setup(size = SIZE) {
  const mem = GuestMemory.create(1 << 20);
  const verdicts: string[] = [];
  const o = PackedObserver.create(mem, (c, m) => verdicts.push(`${c}: ${m}`), { indirect: true, eventIdx: false }, { index: 0, size, desc: RING, avail: 0x3000, used: 0x3004, base: 0x80008000 })!;
  /** The driver's descriptor at `slot` (flags last). */
  const put = (slot: number, addr: number, len: number, id: number, flags: number) => {
    mem.writeU64(RING + slot * 16, BigInt(addr));
    mem.writeU32(RING + slot * 16 + 8, len);
    mem.writeU16(RING + slot * 16 + 12, id);
    mem.storeU16(RING + slot * 16 + 14, flags);
  };
  /** The device's used descriptor at `slot`: id and len now (addUsed), the flags when `publish` is called. */
  const used = (slot: number, id: number, len: number) => {
    mem.writeU32(RING + slot * 16 + 8, len);
    mem.writeU16(RING + slot * 16 + 12, id);
    return () => mem.storeU16(RING + slot * 16 + 14, USED_FLAGS | (len > 0 ? PDESC_F_WRITE : 0));
  };
  /** A packed indirect table of `n` writable entries at 0x8000. */
  const table = (n: number) => {
    for (let i = 0; i < n; i++) {
      mem.writeU64(0x8000 + i * 16, BigInt(0x20000 + i * 0x1000));
      mem.writeU32(0x8000 + i * 16 + 8, 512);
      mem.writeU16(0x8000 + i * 16 + 14, PDESC_F_WRITE);
    }
    return 0x8000;
  };
  return { mem, o, verdicts, put, used, table };
}

test('packed observer: a slot holding a used descriptor\'s id and len under the available flags is not judged, however many looks pass before the flags', () => {
  const { o, verdicts, put, used, table } = setup();
  put(0, table(2), 32, 0, PDESC_F_AVAIL | PDESC_F_INDIRECT);
  // The device takes the buffer and writes its used descriptor's id and len (4096 + status byte)
  // before the observer first looks; the flags come later.
  const publish = used(0, 0, 4097);
  o.scan();
  o.scan();
  o.scan();
  none(verdicts, 'held while nothing tells the used fields from the driver\'s');
  publish();
  o.scan();
  o.scan();
  none(verdicts);
  assert.equal(o.stats.unseen, 1, 'the buffer went by unseen');
  // The observer follows: the next buffer is judged as usual.
  put(1, table(2), 17, 1, PDESC_F_AVAIL | PDESC_F_INDIRECT);
  o.scan();
  o.scan(true);
  assert.deepEqual(verdicts.map((v) => v.split(':')[0]), ['struct.indirect-len.driver.1']);
});

test('packed observer: a direct buffer whose len the device overwrote with a used length reaching past memory is not judged', () => {
  const { o, verdicts, put, used } = setup();
  put(0, 0x20000, 64, 0, PDESC_F_AVAIL | PDESC_F_WRITE);
  o.scan();
  put(1, 0xff000, 64, 1, PDESC_F_AVAIL | PDESC_F_WRITE); // the last 4 KiB of the 1 MiB of memory
  const publishA = used(0, 0, 64);
  const publishB = used(1, 1, 0x2000); // read as [0xff000, +0x2000): outside memory
  o.scan();
  o.scan();
  publishB();
  publishA(); // the first one last
  o.scan();
  o.scan(true);
  none(verdicts);
});

test('packed observer: a real fault in a slot\'s fields is named once a later look finds the slot unchanged after the device published something (the device goes on)', () => {
  const { o, verdicts, put, used } = setup();
  put(0, 0x20000, 64, 0, PDESC_F_AVAIL | PDESC_F_WRITE);
  put(1, 0x8000, 17, 1, PDESC_F_AVAIL | PDESC_F_INDIRECT);
  o.scan();
  none(verdicts, 'held at the first look');
  used(0, 0, 64)(); // the device completes buffer 0, not buffer 1
  o.scan();
  o.scan();
  assert.deepEqual(verdicts.map((v) => v.split(':')[0]), ['struct.indirect-len.driver.1']);
  assert.match(verdicts[0], /indirect table length 17 at slot 1/);
  o.scan(true);
  assert.equal(verdicts.length, 1, 'named once');
});

test('packed observer: a real fault in a slot\'s fields is named at the ring\'s last look when the device stops on it', () => {
  for (const [clause, place] of [
    ['struct.indirect-len.driver.1', (s: ReturnType<typeof setup>) => s.put(0, 0x8000, 17, 0, PDESC_F_AVAIL | PDESC_F_INDIRECT)],
    ['struct.buffer-range.driver.1', (s: ReturnType<typeof setup>) => s.put(0, 0x4000_0000, 64, 0, PDESC_F_AVAIL | PDESC_F_WRITE)],
    ['struct.buffer-range.driver.1', (s: ReturnType<typeof setup>) => s.put(0, 0x4000_0000, 32, 0, PDESC_F_AVAIL | PDESC_F_INDIRECT)],
  ] as const) {
    const s = setup();
    place(s);
    s.o.scan();
    s.o.scan();
    none(s.verdicts, `${clause}: held`);
    s.o.scan(true);
    assert.deepEqual(s.verdicts.map((v) => v.split(':')[0]), [clause]);
  }
  // A fault only the last look sees is named by it.
  const s = setup();
  s.put(0, 0x8000, 17, 0, PDESC_F_AVAIL | PDESC_F_INDIRECT);
  s.o.scan(true);
  assert.deepEqual(s.verdicts.map((v) => v.split(':')[0]), ['struct.indirect-len.driver.1']);
});

test('packed observer: faults of the flags alone (the device writes flags last) are named at once', () => {
  const s = setup();
  s.put(1, 0x20100, 16, 0, PDESC_F_AVAIL);
  s.put(0, 0x20000, 16, 0, PDESC_F_AVAIL | PDESC_F_WRITE | PDESC_F_NEXT);
  s.o.scan();
  assert.deepEqual(s.verdicts.map((v) => v.split(':')[0]), ['packed.scatter-gather-support.driver.3']);
});

test('packed observer: a long indirect table is named at a later look that finds it unchanged, or when the device used it with another length', () => {
  // Held by the device (the seg-max guest test's back-end holds it until it is named).
  const a = setup();
  a.put(0, a.table(9), 9 * 16, 0, PDESC_F_AVAIL | PDESC_F_INDIRECT);
  a.o.scan();
  none(a.verdicts);
  a.o.scan();
  assert.deepEqual(a.verdicts.map((v) => v.split(':')[0]), ['packed.indirect-descs.driver.3']);
  a.o.scan();
  assert.equal(a.verdicts.length, 1);
  // Served (it is well-defined) before the second look: the used length differs from the one
  // read, so the one read was the driver's.
  const b = setup();
  b.put(0, b.table(9), 9 * 16, 0, PDESC_F_AVAIL | PDESC_F_INDIRECT);
  b.o.scan();
  b.used(0, 0, 4097)();
  b.o.scan();
  assert.deepEqual(b.verdicts.map((v) => v.split(':')[0]), ['packed.indirect-descs.driver.3']);
  // A used length that reads as a long table (a multiple of 16 over 16 x size), written before
  // the look and published after: not named.
  const c = setup();
  c.put(0, c.table(12), 32, 0, PDESC_F_AVAIL | PDESC_F_INDIRECT);
  const publish = c.used(0, 0, 12 * 16);
  c.o.scan();
  publish();
  c.o.scan();
  c.o.scan(true);
  none(c.verdicts);
});

test('packed observer: an id read from a used descriptor\'s fields does not make a later used id look never made available', () => {
  const { o, verdicts, put, used } = setup();
  put(0, 0x20000, 64, 0, PDESC_F_AVAIL | PDESC_F_WRITE);
  o.scan(); // buffer 0 walked
  put(1, 0x21000, 64, 1, PDESC_F_AVAIL | PDESC_F_WRITE);
  put(2, 0x22000, 64, 2, PDESC_F_AVAIL | PDESC_F_WRITE);
  used(0, 0, 64)(); // buffer 0 used at slot 0
  const publish = used(1, 2, 64); // buffer 2 completes first: its used fields on slot 1, not published
  o.scan(); // slot 1 reads id 2 (the used descriptor's), slot 2 id 2 (the driver's)
  publish();
  used(2, 1, 64)(); // then buffer 1, on slot 2
  o.scan();
  o.scan(true);
  none(verdicts);
});

/**
 * A correct driver and device on one packed ring, stepped by hand: one INDIRECT descriptor (a
 * table of 1-12 entries, so some longer than the queue; as Linux's drivers do) or, with
 * `direct`, also lists of 1-3 descriptors, completed in any order; the device writes a used descriptor's id and len when it completes a buffer and the
 * flags of the batch later (first one last), as the project's packed device does.
 */
function packedPair(mem: GuestMemory, size: number, random: () => number, direct: boolean) {
  let availSlot = 0;
  let availWrap = true;
  let usedSlot = 0; // device
  let usedWrap = true;
  let readSlot = 0; // device: next slot to take
  let readWrap = true;
  let driverUsed = 0; // driver: next used slot to read
  let driverUsedWrap = true;
  let free = size;
  let moved = 0;
  const freeIds: number[] = [];
  for (let i = 0; i < size; i++) freeIds.push(i);
  const count = new Map<number, number>(); // id -> slots
  const taken: number[] = [];
  const pending: { slot: number; flags: number }[] = [];
  const tables = new Map<number, number>(); // id -> table address
  const flagsFor = (wrap: boolean, avail: boolean) => (avail ? (wrap ? PDESC_F_AVAIL : PDESC_F_USED) : wrap ? USED_FLAGS : 0);
  return {
    offer(): boolean {
      const indirect = !direct || random() < 0.4;
      const n = indirect ? 1 : 1 + Math.floor(random() * 3);
      if (free < n || freeIds.length === 0) return false;
      const id = freeIds.shift()!;
      let slot = availSlot;
      let wrap = availWrap;
      const headFlags: number[] = [];
      for (let k = 0; k < n; k++) {
        const o = RING + slot * 16;
        let flags = flagsFor(wrap, true);
        if (indirect) {
          const entries = 1 + Math.floor(random() * 12);
          const t = 0x40000 + id * 0x1000;
          for (let i = 0; i < entries; i++) {
            mem.writeU64(t + i * 16, BigInt(0x80000 + i * 0x100));
            mem.writeU32(t + i * 16 + 8, 64);
            mem.writeU16(t + i * 16 + 14, PDESC_F_WRITE);
          }
          tables.set(id, t);
          mem.writeU64(o, BigInt(t));
          mem.writeU32(o + 8, entries * 16);
          flags |= PDESC_F_INDIRECT;
        } else {
          mem.writeU64(o, BigInt(0x80000 + slot * 0x100));
          mem.writeU32(o + 8, 64);
          flags |= PDESC_F_WRITE | (k < n - 1 ? PDESC_F_NEXT : 0);
        }
        mem.writeU16(o + 12, id);
        if (k === 0) headFlags.push(flags);
        else mem.storeU16(o + 14, flags);
        slot++;
        if (slot === size) {
          slot = 0;
          wrap = !wrap;
        }
      }
      mem.storeU16(RING + availSlot * 16 + 14, headFlags[0]); // the head last (2.8.6)
      count.set(id, n);
      availSlot = slot;
      availWrap = wrap;
      free -= n;
      moved += n;
      return true;
    },
    /** The device takes every available list and completes one taken buffer: id and len now, flags at publish(). */
    complete(): boolean {
      for (;;) {
        const f = mem.readU16(RING + readSlot * 16 + 14);
        if (((f & PDESC_F_AVAIL) !== 0) !== readWrap || ((f & PDESC_F_USED) !== 0) === readWrap) break;
        const id = mem.readU16(RING + readSlot * 16 + 12); // a list's id is in every descriptor here
        taken.push(id);
        const n = count.get(id)!;
        for (let k = 0; k < n; k++) {
          readSlot++;
          if (readSlot === size) {
            readSlot = 0;
            readWrap = !readWrap;
          }
        }
      }
      if (taken.length === 0) return false;
      const [id] = taken.splice(Math.floor(random() * taken.length), 1);
      const o = RING + usedSlot * 16;
      const len = 1 + Math.floor(random() * 5000); // any length: often not a multiple of 16
      mem.writeU32(o + 8, len);
      mem.writeU16(o + 12, id);
      pending.push({ slot: usedSlot, flags: flagsFor(usedWrap, false) | PDESC_F_WRITE });
      const n = count.get(id)!;
      moved += n;
      for (let k = 0; k < n; k++) {
        usedSlot++;
        if (usedSlot === size) {
          usedSlot = 0;
          usedWrap = !usedWrap;
        }
      }
      return true;
    },
    publish(): void {
      for (let i = pending.length - 1; i >= 0; i--) mem.storeU16(RING + pending[i].slot * 16 + 14, pending[i].flags);
      pending.length = 0;
    },
    /** The driver reads the used descriptors published and frees their slots and ids. */
    reclaim(): void {
      for (;;) {
        const f = mem.readU16(RING + driverUsed * 16 + 14);
        if (((f & PDESC_F_AVAIL) !== 0) !== driverUsedWrap || ((f & PDESC_F_USED) !== 0) !== driverUsedWrap) break;
        const id = mem.readU16(RING + driverUsed * 16 + 12);
        const n = count.get(id)!;
        count.delete(id);
        freeIds.push(id);
        free += n;
        for (let k = 0; k < n; k++) {
          driverUsed++;
          if (driverUsed === size) {
            driverUsed = 0;
            driverUsedWrap = !driverUsedWrap;
          }
        }
      }
    },
    /** Slots made available or used since the last call. */
    moved(): number {
      const m = moved;
      moved = 0;
      return m;
    },
    get quiet(): boolean {
      return pending.length === 0;
    },
    /** Where the driver makes the next list available. */
    get next(): { slot: number; wrap: boolean } {
      return { slot: availSlot, wrap: availWrap };
    },
    /** Whether the device took everything made available. */
    get drained(): boolean {
      return readSlot === availSlot && readWrap === availWrap;
    },
  };
}

function choices(values: readonly number[]): () => number {
  let i = 0;
  return () => values[i++ % values.length] / 1000;
}

/** One run of the pair with random looks; its verdicts (`liveness`: also asserts the observer catches up whenever the ring rests). */
function run(size: number, direct: boolean, values: readonly number[], liveness: boolean): string[] {
  const random = choices(values);
  const mem = GuestMemory.create(4 << 20);
  const p = packedPair(mem, size, random, direct);
  const verdicts: string[] = [];
  const o = PackedObserver.create(mem, (c, m) => verdicts.push(`${c}: ${m}`), { indirect: true, eventIdx: false }, { index: 0, size, desc: RING, avail: 0x3000, used: 0x3004, base: 0x80008000 })!;
  let since = 0;
  for (let step = 0; step < 3000; step++) {
    const r = random();
    if (r < 0.4) p.offer();
    else if (r < 0.7) p.complete();
    else if (r < 0.85) p.publish();
    else p.reclaim();
    // Looks between any two steps (so also between a used descriptor's fields and its flags),
    // never more than half a ring's worth of slots made available or used apart.
    since += p.moved();
    if (random() < 0.5 || since >= size / 2) {
      o.scan();
      since = 0;
    }
    if (liveness && p.quiet && !p.drained && random() < 0.2) {
      // Nothing half-written and lists still out: looks see up to where the driver is (the
      // seg-max guest test's back-end holds a chain until the proxy names it). A held list
      // costs one look each: at most one per slot.
      for (let i = 0; i < size + 2; i++) o.scan();
      const at = o.position();
      const next = p.next;
      assert.deepEqual([at.availSlot, at.availWrap], [next.slot, next.wrap], `the observer reached the driver's next slot (step ${step})`);
    }
  }
  p.publish();
  o.scan();
  o.scan(true);
  return verdicts;
}

const runs = fc.array(fc.integer({ min: 0, max: 999 }), { minLength: 64, maxLength: 512 });

for (const [size, direct] of [[4, false], [8, false], [32, false], [4, true], [8, true], [32, true]] as const) {
  const what = direct ? 'lists of 1-3 descriptors or one indirect' : 'one indirect descriptor per buffer';
  test(`packed observer, queue size ${size}, ${what}: a correct pair whose device writes used fields before flags, looked at at random moments, is never judged on the driver's side`, () => {
    fc.assert(
      fc.property(runs, (values) => {
        // driver.3 is a true verdict here (tables of up to 12 entries); device.3: see below.
        none(run(size, direct, values, false).filter((v) => !v.startsWith('packed.indirect-descs.driver.3') && !v.startsWith('packed.desc-table.device.3')));
      }),
      { numRuns: 40, seed: size + (direct ? 1 : 0), includeErrorInReport: true },
    );
  });
}

for (const size of [4, 8, 32]) {
  test(`packed observer, queue size ${size}, one indirect descriptor per buffer: no used id is judged either, and every list still out is seen whenever the ring rests`, () => {
    fc.assert(
      fc.property(runs, (values) => {
        none(run(size, false, values, true).filter((v) => !v.startsWith('packed.indirect-descs.driver.3')));
      }),
      { numRuns: 40, seed: size + 2, includeErrorInReport: true },
    );
  });
}

// Known and not fixed (README, monitor proxy: "Known gap"): a buffer whose list of several descriptors went by unseen is
// taken to span one slot (its length is not known); the used side then stands between two used
// descriptors until it reads one whose list it knows, and a used id can still be judged never
// made available (packed.desc-table.device.3) in rare runs.
test('packed observer, queue size 32, lists of 1-3 descriptors: no used id is judged', { todo: 'the used side after a list of several descriptors went by unseen (README, monitor proxy: Known gap)' }, () => {
  fc.assert(
    fc.property(runs, (values) => {
      none(run(32, true, values, false).filter((v) => !v.startsWith('packed.indirect-descs.driver.3')));
    }),
    { numRuns: 40, seed: 33, includeErrorInReport: true },
  );
});
