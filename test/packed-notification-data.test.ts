// PackedDeviceQueue.checkNotificationData walks on from where its last walk stopped (bench:net
// found the walk from nextAvail on every notification to be a third of the in-process path).
// This checks the incremental walk against the full walk over random driver/device histories:
// for every possible notification value, both accept or both refuse (packed.desc-table.driver.3).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { makePackedPair, DATA_BASE } from './ring-harness.js';

/** The full walk (the former implementation): the first slot from nextAvail not yet available. */
function firstUnavailable(p: ReturnType<typeof makePackedPair>, size: number): { slot: number; wrap: boolean } {
  let slot = p.dev.nextAvail;
  let wrap = p.dev.availWrap;
  for (let n = 0; n < size; n++) {
    const flags = p.mem.readU16(p.layout.desc + slot * 16 + 14);
    const avail = (flags & 0x80) !== 0;
    const used = (flags & 0x8000) !== 0;
    if (!(avail === wrap && used !== wrap)) break;
    if (++slot === size) {
      slot = 0;
      wrap = !wrap;
    }
  }
  return { slot, wrap };
}

function refuses(stop: { slot: number; wrap: boolean }, off: number, w: boolean, size: number): boolean {
  const cycle = 2 * size;
  const lag = (((stop.slot + (stop.wrap ? 0 : size) - (off + (w ? 0 : size))) % cycle) + cycle) % cycle;
  return !(off < size && lag <= size);
}

test('packed checkNotificationData: the walk continued from the last stop judges every notification value as the full walk does', () => {
  fc.assert(
    fc.property(fc.integer({ min: 2, max: 9 }), fc.array(fc.record({ op: fc.constantFrom('add', 'add', 'pop', 'reclaim', 'check'), n: fc.integer({ min: 1, max: 5 }) }), { maxLength: 60 }), (size, ops) => {
      const p = makePackedPair({ size, eventIdx: false, indirect: false });
      const held: number[] = [];
      let inFlight = 0;
      let token = 0;
      for (const { op, n } of ops) {
        for (let i = 0; i < n; i++) {
          if (op === 'add' && inFlight < size) {
            p.drv.begin().addWritable(DATA_BASE + 64 * (token % 64), 32).commit(token++);
            inFlight++;
          } else if (op === 'pop') {
            p.drv.publish();
            const chain = p.dev.newChain();
            if (p.dev.pop(chain)) held.push(chain.head);
          } else if (op === 'reclaim') {
            const id = held.shift();
            if (id !== undefined) {
              p.dev.addUsed(id, 0);
              p.dev.publish();
            }
            while (p.drv.getUsed() !== undefined) inFlight--;
          }
        }
        p.drv.publish();
        const stop = firstUnavailable(p, size);
        // Every value (next_off, next_wrap), as the device judges it now.
        for (let off = 0; off < size; off++) {
          for (const w of [true, false]) {
            const data = (((off | (w ? 0x8000 : 0)) << 16) | 0) >>> 0;
            assert.equal(p.dev.checkNotificationData(data) !== null, refuses(stop, off, w, size), `size ${size}, off ${off}, wrap ${w}, stop ${JSON.stringify(stop)}`);
          }
        }
        assert.equal(p.dev.checkNotificationData(p.drv.notificationData()), null, 'the driver\'s own value');
      }
    }),
    { numRuns: 300, seed: 15 },
  );
});
