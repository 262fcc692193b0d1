/**
 * GuestAllocator: alignment, no overlap between live allocations, bounds, coalescing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { GuestAllocator } from '../src/memory/allocator.js';
import { MemoryError } from '../src/memory/guest-memory.js';

const outOfMemory = (e: unknown) => e instanceof MemoryError && e.kind === 'out-of-memory';

test('GuestAllocator: allocations are aligned, inside the range, and do not overlap', () => {
  const a = new GuestAllocator(0x1003, 0x1000);
  const x = a.alloc(10, 16);
  const y = a.alloc(1, 1);
  const z = a.alloc(64, 4096 / 64);
  assert.equal(x % 16, 0);
  assert.equal(z % 64, 0);
  for (const [p, n] of [
    [x, 10],
    [y, 1],
    [z, 64],
  ]) {
    assert.ok(p >= 0x1003 && p + n <= 0x2003, `0x${p.toString(16)} +${n} inside`);
  }
  assert.ok(x + 10 <= y || y + 1 <= x);
  assert.ok(x + 10 <= z || z + 64 <= x);
  assert.ok(y + 1 <= z || z + 64 <= y);
  assert.equal(a.available, 0x1000 - 75);
  // Default alignment is 8.
  assert.equal(a.alloc(3) % 8, 0);
});

test('GuestAllocator: out of memory is a MemoryError; bad sizes and bad releases are RangeErrors', () => {
  const a = new GuestAllocator(0, 256);
  assert.throws(() => a.alloc(257), outOfMemory);
  assert.throws(() => a.alloc(0), RangeError);
  assert.throws(() => a.alloc(-8), RangeError);
  assert.throws(() => a.alloc(Number.NaN), RangeError);
  const p = a.alloc(256, 1);
  assert.equal(p, 0);
  assert.equal(a.available, 0);
  assert.throws(() => a.alloc(1, 1), outOfMemory);
  a.release(p);
  assert.throws(() => a.release(p), RangeError, 'double release');
  assert.throws(() => a.release(12345), RangeError, 'never allocated');
  assert.equal(a.available, 256);
  // Alignment padding can make a request fail even though enough bytes are free.
  const b = new GuestAllocator(1, 16);
  assert.throws(() => b.alloc(16, 16), outOfMemory);
  assert.equal(b.alloc(15, 1), 1);
});

test('GuestAllocator: release coalesces so a full-size allocation fits again', () => {
  const a = new GuestAllocator(0x10000, 4096);
  const ps = Array.from({ length: 16 }, () => a.alloc(256, 256));
  assert.equal(a.available, 0);
  // Free in an interleaved order: odd ones first, then even ones.
  for (let i = 1; i < 16; i += 2) a.release(ps[i]);
  assert.throws(() => a.alloc(512, 1), outOfMemory, 'no 512-byte hole before coalescing');
  for (let i = 0; i < 16; i += 2) a.release(ps[i]);
  assert.equal(a.available, 4096);
  assert.equal(a.alloc(4096, 4096), 0x10000);
});

type Step = { op: 'alloc'; size: number; alignLog: number } | { op: 'release'; pick: number };

test('GuestAllocator: property: random alloc/release sequences keep live allocations disjoint, aligned and in range', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 5000 }),
      fc.integer({ min: 64, max: 4096 }),
      fc.array(
        fc.oneof(
          fc.record({ op: fc.constant('alloc' as const), size: fc.oneof(fc.integer({ min: 1, max: 64 }), fc.integer({ min: 1, max: 1024 })), alignLog: fc.integer({ min: 0, max: 8 }) }),
          fc.record({ op: fc.constant('release' as const), pick: fc.nat() }),
        ),
        { minLength: 1, maxLength: 120 },
      ),
      (base, size, steps: Step[]) => {
        const a = new GuestAllocator(base, size);
        const live: { addr: number; size: number }[] = [];
        const used = () => live.reduce((n, l) => n + l.size, 0);
        for (const s of steps) {
          if (s.op === 'alloc') {
            const align = 1 << s.alignLog;
            let addr: number;
            try {
              addr = a.alloc(s.size, align);
            } catch (err) {
              assert.ok(outOfMemory(err), `alloc threw ${String(err)}`);
              // (Whether the failure was justified is the next property's job.)
              continue;
            }
            assert.equal(addr % align, 0, `alignment ${align}`);
            assert.ok(addr >= base && addr + s.size <= base + size, 'inside the range');
            for (const l of live) assert.ok(addr + s.size <= l.addr || l.addr + l.size <= addr, `[${addr}, +${s.size}) overlaps [${l.addr}, +${l.size})`);
            live.push({ addr, size: s.size });
          } else if (live.length > 0) {
            const [l] = live.splice(s.pick % live.length, 1);
            a.release(l.addr);
          }
          // Free bytes account exactly for the live allocations (alignment padding stays free).
          assert.equal(a.available, size - used());
        }
        for (const l of live) a.release(l.addr);
        assert.equal(a.available, size);
        // Fully coalesced: the whole range is one block again.
        assert.equal(a.alloc(size, 1), base);
      },
    ),
    { numRuns: 300 },
  );
});

test('GuestAllocator: property: a request fails only when no free gap can hold it (first fit)', () => {
  fc.assert(
    fc.property(
      fc.array(fc.record({ size: fc.integer({ min: 1, max: 200 }), alignLog: fc.integer({ min: 0, max: 6 }), keep: fc.boolean() }), { minLength: 1, maxLength: 60 }),
      (reqs) => {
        const base = 0x100;
        const total = 2048;
        const a = new GuestAllocator(base, total);
        const live: { addr: number; size: number }[] = [];
        for (const r of reqs) {
          const align = 1 << r.alignLog;
          // Model the free gaps from the live allocations.
          const sorted = [...live].sort((x, y) => x.addr - y.addr);
          const gaps: { start: number; end: number }[] = [];
          let cur = base;
          for (const l of sorted) {
            if (l.addr > cur) gaps.push({ start: cur, end: l.addr });
            cur = l.addr + l.size;
          }
          if (cur < base + total) gaps.push({ start: cur, end: base + total });
          const fit = gaps.find((g) => Math.ceil(g.start / align) * align + r.size <= g.end);
          let addr = -1;
          try {
            addr = a.alloc(r.size, align);
          } catch (err) {
            assert.ok(outOfMemory(err));
          }
          if (fit === undefined) assert.equal(addr, -1, 'allocated although no gap fits');
          else assert.equal(addr, Math.ceil(fit.start / align) * align, 'first fit');
          if (addr >= 0) {
            if (r.keep) live.push({ addr, size: r.size });
            else a.release(addr);
          }
        }
      },
    ),
    { numRuns: 200 },
  );
});
