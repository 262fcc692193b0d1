// The split ring observer on its own, over plain guest memory: a correct driver and device
// (chains and completions drawn by fast-check, out-of-order completion, bursts) with the observer looking at random
// moments, sometimes after more than a ring's worth moved. A correct pair is never judged
// guilty, whatever the proxy missed; a fault right after a lap is still caught.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { SplitObserver } from '../../src/proxy/rings.js';
import { VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../../src/spec/constants.js';
import { layoutSplitQueue } from '../../src/virtqueue/split/driver.js';

/** The choices of one run, drawn by fast-check (so a failing run shrinks): a stream of [0, 1) values. */
function choices(values: readonly number[]): () => number {
  let i = 0;
  return () => values[i++ % values.length] / 1000;
}

/** A driver and a device on one split ring of `size` in `mem`, both correct, stepped by hand. */
function pair(mem: GuestMemory, size: number, random: () => number) {
  const l = layoutSplitQueue(0x1000, size);
  const free: number[] = [];
  for (let i = 0; i < size; i++) free.push(i);
  let avail = 0;
  let used = 0;
  const taken: { head: number }[] = [];
  let seen = 0; // device: next avail entry to take
  return {
    layout: l,
    /** The driver makes one chain of 1-3 descriptors available (when it has descriptors). */
    offer(): boolean {
      const n = 1 + Math.floor(random() * 3);
      if (free.length < n) return false;
      const ids = free.splice(0, n);
      ids.forEach((d, k) => {
        const o = l.desc + d * 16;
        mem.writeU64(o, 0x100000 + d * 0x100);
        mem.writeU32(o + 8, 64);
        mem.writeU16(o + 12, (k < n - 1 ? VIRTQ_DESC_F_NEXT : 0) | (k === n - 1 ? VIRTQ_DESC_F_WRITE : 0));
        mem.writeU16(o + 14, k < n - 1 ? ids[k + 1] : 0);
      });
      mem.writeU16(l.avail + 4 + 2 * (avail % size), ids[0]);
      avail = (avail + 1) & 0xffff;
      mem.storeU16(l.avail + 2, avail);
      return true;
    },
    /** The device takes what is available and completes one of the taken chains, any of them. */
    complete(): boolean {
      while (seen !== avail) {
        taken.push({ head: mem.readU16(l.avail + 4 + 2 * (seen % size)) });
        seen = (seen + 1) & 0xffff;
      }
      if (taken.length === 0) return false;
      const [t] = taken.splice(Math.floor(random() * taken.length), 1);
      mem.writeU32(l.used + 4 + 8 * (used % size), t.head);
      mem.writeU32(l.used + 8 + 8 * (used % size), 64);
      used = (used + 1) & 0xffff;
      mem.storeU16(l.used + 2, used);
      // The driver gets the chain back (its free list is in the driver's memory, not the ring).
      let d = t.head;
      for (;;) {
        free.push(d);
        if (!(mem.readU16(l.desc + d * 16 + 12) & VIRTQ_DESC_F_NEXT)) break;
        d = mem.readU16(l.desc + d * 16 + 14);
      }
      return true;
    },
    /** A raw used element naming `id`, as a faulty device would write it. */
    usedRaw(id: number): void {
      mem.writeU32(l.used + 4 + 8 * (used % size), id);
      used = (used + 1) & 0xffff;
      mem.storeU16(l.used + 2, used);
    },
    get inFlight(): number[] {
      return taken.map((t) => t.head);
    },
  };
}

for (const size of [4, 16, 256]) {
  test(`split observer, queue size ${size}: a correct pair with looks at random moments (laps included) is never judged`, () => {
    let lapped = 0;
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 999 }), { minLength: 64, maxLength: 512 }), (values) => {
        const random = choices(values);
        const mem = GuestMemory.create(4 << 20);
        const p = pair(mem, size, random);
        const verdicts: string[] = [];
        const o = SplitObserver.create(mem, (c, m) => verdicts.push(`${c}: ${m}`), { indirect: true, eventIdx: false }, { index: 0, size, desc: p.layout.desc, avail: p.layout.avail, used: p.layout.used, base: 0 })!;
        // Looks are sometimes frequent, sometimes many ring lengths apart.
        let gap = 1;
        for (let step = 0; step < 5000; step++) {
          if (random() < 0.55) p.offer();
          else p.complete();
          if (--gap === 0) {
            o.scan();
            gap = random() < 0.1 ? 1 + Math.floor(random() * size * 4) : 1 + Math.floor(random() * 4);
          }
        }
        o.scan();
        assert.deepEqual(verdicts, []);
        if (o.stats.unseen > 0) lapped++;
      }),
      { numRuns: 30, seed: size },
    );
    assert.ok(lapped > 0, 'some runs had looks after a lap');
  });
}

test('split observer: a used id never made available is caught, also after a lap', () => {
  const size = 16;
  const random = choices([123, 877, 501, 42, 999, 310, 660, 7]);
  const mem = GuestMemory.create(4 << 20);
  const p = pair(mem, size, random);
  const verdicts: string[] = [];
  const o = SplitObserver.create(mem, (c) => verdicts.push(c), { indirect: true, eventIdx: false }, { index: 0, size, desc: p.layout.desc, avail: p.layout.avail, used: p.layout.used, base: 0 })!;
  // Traffic the observer does not see (more than a ring's worth), then a look: a resync.
  for (let i = 0; i < 200; i++) if (!p.offer()) p.complete();
  o.scan();
  assert.ok(o.stats.unseen > 0);
  // Then steady traffic, looked at often: past the grace, a wrong id is named.
  for (let i = 0; i < 400; i++) {
    if (!p.offer()) p.complete();
    o.scan();
  }
  assert.deepEqual(verdicts, []);
  const busy = new Set(p.inFlight);
  const stranger = [...Array(size).keys()].find((h) => !busy.has(h) && h !== 0)!;
  // A head that is free (not in flight) and not the start of any available chain.
  p.usedRaw(stranger);
  o.scan();
  assert.deepEqual(verdicts, ['struct.used-id.device.1']);
});
