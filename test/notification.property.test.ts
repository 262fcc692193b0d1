/**
 * Notification suppression (spec 2.7.7, 2.7.10): needEvent against a brute-force reference,
 * the kick / interrupt decisions against the spec's rules, and a liveness property over
 * random interleavings of a driver and a device that each act only when notified (or when
 * their enable-then-recheck says work arrived meanwhile): no buffer is ever stranded.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { needEvent, RING_FLAGS, RING_IDX, availEventOffset, usedEventOffset } from '../src/spec/split-layout.js';
import { assertSaneVerdicts, makePair, type Pair } from './ring-harness.js';

// ------------------------------------------------------------------ needEvent

/** Brute force: was index `event` among the entries old, old+1, ..., new-1 (mod 2^16)? */
function crossed(event: number, next: number, old: number): boolean {
  for (let i = old; (i & 0xffff) !== (next & 0xffff); i++) if ((i & 0xffff) === event) return true;
  return false;
}

test('needEvent: property: true exactly when `event` lies in [old, new) modulo 2^16', () => {
  const u16 = fc.integer({ min: 0, max: 0xffff });
  // Small batches anywhere (and across the wrap), and arbitrary triples.
  const near = fc.record({ old: u16, d: fc.integer({ min: 0, max: 70 }), e: fc.integer({ min: -5, max: 75 }) }).map(({ old, d, e }) => [(old + e) & 0xffff, (old + d) & 0xffff, old] as const);
  const wrap = fc.record({ old: fc.integer({ min: 0xffc0, max: 0xffff }), d: fc.integer({ min: 0, max: 128 }), e: fc.integer({ min: -8, max: 136 }) }).map(({ old, d, e }) => [(old + e) & 0xffff, (old + d) & 0xffff, old] as const);
  const any = fc.tuple(u16, u16, u16);
  fc.assert(
    fc.property(fc.oneof(near, wrap, any), ([event, next, old]) => {
      assert.equal(needEvent(event, next, old), crossed(event, next, old), `needEvent(${event}, ${next}, ${old})`);
    }),
    { numRuns: 300 },
  );
});

test('needEvent: spec wording (2.7.10): notify when idx reaches event + 1; never for an empty batch', () => {
  for (const e of [0, 1, 0x7fff, 0x8000, 0xfffe, 0xffff]) {
    assert.equal(needEvent(e, (e + 1) & 0xffff, e), true, `single entry at ${e}`);
    assert.equal(needEvent(e, e, (e - 1) & 0xffff), false, `batch ending just before ${e}`);
    assert.equal(needEvent(e, (e + 2) & 0xffff, (e + 1) & 0xffff), false, `batch starting just after ${e}`);
    assert.equal(needEvent(e, (e + 1) & 0xffff, (e - 0x7fff) & 0xffff), true, `large batch ending at ${e}`);
    assert.equal(needEvent(e, e, e), false, 'empty batch');
  }
  // A full-range batch (new == old) is "nothing": the ring never holds 2^16 entries.
  assert.equal(needEvent(5, 7, 7), false);
});

// ------------------------------------------------------------------ the decisions, one by one

test('driver kick decision: flags without EVENT_IDX, avail_event with it (and flags then ignored)', () => {
  for (const start of [0, 0xfffe]) {
    // Without EVENT_IDX: used.flags 0 => MUST notify; 1 => no notification; avail_event ignored.
    let p = makePair({ size: 4, eventIdx: false, indirect: false, start });
    const add = (pp: Pair) => assert.ok(pp.drv.begin().addWritable(0x28000, 8).commit(null) >= 0);
    add(p);
    p.mem.writeU16(p.layout.used + availEventOffset(4), (start + 7) & 0xffff);
    assert.equal(p.drv.publish(), true);
    p.mem.writeU16(p.layout.used + RING_FLAGS, 1);
    add(p);
    assert.equal(p.drv.publish(), false);
    assert.equal(p.drv.publish(), false, 'nothing new published: no kick');
    assert.equal(p.drvMon.verdicts.length, 0);
    // With EVENT_IDX: notify iff the batch wrote the entry at avail_event.
    p = makePair({ size: 4, eventIdx: true, indirect: false, start });
    p.mem.writeU16(p.layout.used + availEventOffset(4), (start + 1) & 0xffff);
    add(p);
    assert.equal(p.drv.publish(), false, 'entry start is before avail_event');
    add(p);
    add(p);
    assert.equal(p.drv.publish(), true, 'batch [start+1, start+3) covers avail_event');
    assert.equal(p.drvMon.verdicts.length, 0);
    // A device setting used.flags with EVENT_IDX breaks split.avail-buffer-notif-suppr.device.3 (not fatal).
    p.mem.writeU16(p.layout.used + RING_FLAGS, 1);
    p.mem.writeU16(p.layout.used + availEventOffset(4), (start + 3) & 0xffff);
    assert.ok(p.drv.begin().addWritable(0x28100, 8).commit(null) >= 0);
    assert.equal(p.drv.publish(), true, 'the low bit of flags is ignored with EVENT_IDX');
    assert.deepEqual(
      p.drvMon.verdicts.map((v) => v.clause),
      ['split.avail-buffer-notif-suppr.device.3'],
    );
    assert.equal(p.drv.broken, false);
  }
});

test('device interrupt decision: avail.flags without EVENT_IDX, used_event with it', () => {
  for (const start of [0, 0xffff]) {
    for (const eventIdx of [false, true]) {
      const p = makePair({ size: 8, eventIdx, indirect: false, start });
      const { drv, dev, mem, layout } = p;
      for (let i = 0; i < 6; i++) assert.ok(drv.begin().addWritable(0x28000 + 16 * i, 8).commit(i) >= 0);
      drv.publish();
      const c = dev.newChain();
      const heads: number[] = [];
      while (dev.pop(c)) heads.push(c.head);
      assert.equal(heads.length, 6);
      const complete = (n: number) => {
        for (let i = 0; i < n; i++) dev.addUsed(heads.shift()!, 1);
        return dev.publish();
      };
      if (!eventIdx) {
        mem.writeU16(layout.avail + RING_FLAGS, 1);
        mem.writeU16(layout.avail + usedEventOffset(8), start); // ignored
        assert.equal(complete(1), false);
        mem.writeU16(layout.avail + RING_FLAGS, 0);
        assert.equal(complete(1), true);
      } else {
        mem.writeU16(layout.avail + usedEventOffset(8), (start + 3) & 0xffff);
        assert.equal(complete(2), false, 'entries start, start+1');
        assert.equal(complete(2), true, 'entries start+2, start+3 include used_event');
        assert.equal(complete(0), false, 'empty batch');
      }
      assert.deepEqual(p.devMon.verdicts, []);
    }
  }
});

// ------------------------------------------------------------------ liveness

type Agent = 'submit' | 'publish' | 'devNotif' | 'complete' | 'devPublish' | 'drvIrq' | 'spurious';
const AGENTS: Agent[] = ['submit', 'publish', 'devNotif', 'complete', 'devPublish', 'drvIrq', 'spurious'];

interface LivenessCase {
  size: number;
  eventIdx: boolean;
  start: number;
  initialEnable: boolean;
  total: number;
  schedule: number[];
  /** How the device resumes after enableNotifications() says work arrived: re-disable or pop at once. */
  redisable: boolean;
}

interface LivenessResult {
  submitted: number;
  seenByDevice: number;
  collected: number;
  kicks: number;
  irqs: number;
  stuck: string;
}

/**
 * A driver and a device as small state machines, interleaved one ring operation at a time
 * by `schedule`, then run round-robin until nothing moves. Each side reacts only to a
 * notification of the other, or to its own enable-then-recheck returning true.
 */
function runLiveness(c: LivenessCase): LivenessResult {
  const p = makePair({ size: c.size, eventIdx: c.eventIdx, indirect: false, start: c.start });
  const { drv, dev } = p;
  if (c.initialEnable) {
    // What a driver does when it starts using a queue, and a device when it starts serving one.
    assert.equal(drv.enableInterrupts(), false);
    assert.equal(dev.enableNotifications(), false);
  }
  let toSubmit = c.total;
  let nextToken = 0;
  let unpublished = 0;
  let pendingKick = false;
  let pendingIrq = false;
  let devState: 'idle' | 'disable' | 'pop' | 'enable' = 'idle';
  let drvState: 'idle' | 'disable' | 'collect' | 'enable' = 'idle';
  const held: number[] = [];
  let unpublishedUsed = 0;
  const seen: number[] = [];
  const collected: number[] = [];
  let kicks = 0;
  let irqs = 0;
  let spuriousToggle = 0;
  const chain = dev.newChain();

  /** One step of `agent`; returns whether anything happened. */
  const step = (agent: Agent): boolean => {
    switch (agent) {
      case 'submit': {
        if (toSubmit === 0) return false;
        const t = nextToken;
        const q = drv.begin();
        if (c.size > 1) q.addReadable(0x28000 + 32 * (t % 64), 4);
        const head = q.addWritable(0x28010 + 32 * (t % 64), 8).commit(t);
        if (head < 0) return false; // queue full: wait for completions
        nextToken++;
        toSubmit--;
        unpublished++;
        return true;
      }
      case 'publish': {
        if (unpublished === 0) return false;
        unpublished = 0;
        if (drv.publish()) {
          pendingKick = true;
          kicks++;
        }
        return true;
      }
      case 'devNotif':
        switch (devState) {
          case 'idle':
            if (!pendingKick) return false;
            pendingKick = false;
            devState = 'disable';
            return true;
          case 'disable':
            dev.disableNotifications();
            devState = 'pop';
            return true;
          case 'pop':
            if (dev.pop(chain)) {
              seen.push(chain.head);
              held.push(chain.head);
            } else devState = 'enable';
            return true;
          case 'enable':
            devState = dev.enableNotifications() ? (c.redisable ? 'disable' : 'pop') : 'idle';
            return true;
        }
        return false;
      case 'complete': {
        if (held.length === 0) return false;
        dev.addUsed(held.shift()!, 8);
        unpublishedUsed++;
        return true;
      }
      case 'devPublish': {
        if (unpublishedUsed === 0) return false;
        unpublishedUsed = 0;
        if (dev.publish()) {
          pendingIrq = true;
          irqs++;
        }
        return true;
      }
      case 'drvIrq':
        switch (drvState) {
          case 'idle':
            if (!pendingIrq) return false;
            pendingIrq = false;
            drvState = 'disable';
            return true;
          case 'disable':
            drv.disableInterrupts();
            drvState = 'collect';
            return true;
          case 'collect': {
            const t = drv.getUsed();
            if (t === undefined) drvState = 'enable';
            else collected.push(t as number);
            return true;
          }
          case 'enable':
            drvState = drv.enableInterrupts() ? (c.redisable ? 'disable' : 'collect') : 'idle';
            return true;
        }
        return false;
      case 'spurious':
        // Spurious notifications must be harmless (split.avail-buffer-notif-suppr.device.5).
        if (spuriousToggle++ % 2 === 0) pendingKick = true;
        else pendingIrq = true;
        return false;
    }
  };

  for (const s of c.schedule) step(AGENTS[s % AGENTS.length]);
  // Run to quiescence, round robin, without spurious notifications.
  let stuck = '';
  for (let round = 0; ; round++) {
    let moved = false;
    for (const a of AGENTS) if (a !== 'spurious') while (step(a)) moved = true;
    if (!moved) break;
    if (round > 10 * (c.total + c.size) + 100) {
      stuck = 'no quiescence';
      break;
    }
  }
  if (stuck === '' && (toSubmit > 0 || collected.length < c.total)) {
    stuck =
      `stalled: ${c.total - toSubmit} submitted, ${seen.length} seen by the device, ${collected.length} collected; ` +
      `device ${devState} held ${held.length}, driver ${drvState}, used pending ${drv.usedPending()}, avail pending ${dev.pending()}`;
  }
  assertSaneVerdicts(p.drvSink, 'driver');
  assertSaneVerdicts(p.devSink, 'device');
  assert.deepEqual(p.drvMon.verdicts, [], 'driver verdicts');
  assert.deepEqual(p.devMon.verdicts, [], 'device verdicts');
  if (stuck === '') {
    // Tokens come back in the order the device completed them, which here is FIFO.
    assert.deepEqual(
      collected,
      Array.from({ length: c.total }, (_, i) => i),
    );
    assert.equal(drv.numFree, c.size);
    assert.equal(p.mem.readU16(p.layout.used + RING_IDX), (c.start + c.total) & 0xffff);
  }
  return { submitted: c.total - toSubmit, seenByDevice: seen.length, collected: collected.length, kicks, irqs, stuck };
}

const livenessArb = (opts: { initialEnable?: boolean; start?: fc.Arbitrary<number> } = {}) =>
  fc.record({
    size: fc.constantFrom(1, 2, 4, 8),
    eventIdx: fc.boolean(),
    start: opts.start ?? fc.oneof(fc.constant(0), fc.integer({ min: 0xffe0, max: 0xffff }), fc.integer({ min: 0, max: 0xffff })),
    initialEnable: opts.initialEnable === undefined ? fc.boolean() : fc.constant(opts.initialEnable),
    total: fc.integer({ min: 1, max: 40 }),
    schedule: fc.array(fc.integer({ min: 0, max: AGENTS.length - 1 }), { minLength: 0, maxLength: 300 }),
    redisable: fc.boolean(),
  });

test('notification suppression: property: every buffer is seen and every used buffer collected, EVENT_IDX on and off, any interleaving', { timeout: 60_000 }, () => {
  fc.assert(
    fc.property(
      // With or without an explicit enable by each side before it starts: a fresh queue, at
      // index 0 or started elsewhere, asks for the first notification each way by itself.
      livenessArb(),
      (c) => {
        const r = runLiveness(c);
        assert.equal(r.stuck, '', `${JSON.stringify({ ...c, schedule: c.schedule.length })}: ${r.stuck}`);
        assert.equal(r.seenByDevice, c.total);
        assert.equal(r.collected, c.total);
      },
    ),
    { numRuns: 300 },
  );
});

test('notification suppression: a fresh queue at index 0 notifies the first buffer each way', () => {
  for (const eventIdx of [false, true]) {
    const r = runLiveness({ size: 4, eventIdx, start: 0, initialEnable: false, total: 1, schedule: [], redisable: false });
    assert.equal(r.stuck, '');
    assert.equal(r.kicks, 1);
    assert.equal(r.irqs, 1);
  }
});

test('notification suppression: with EVENT_IDX a busy device is not kicked for every buffer', () => {
  // Driver publishes one buffer at a time while the device is still processing its first kick:
  // the device has not re-armed avail_event yet, so later publishes must not kick.
  const p = makePair({ size: 8, eventIdx: true, indirect: false });
  let kicks = 0;
  for (let i = 0; i < 5; i++) {
    assert.ok(p.drv.begin().addWritable(0x28000 + 16 * i, 8).commit(i) >= 0);
    if (p.drv.publish()) kicks++;
  }
  assert.equal(kicks, 1);
  // The device drains, re-arms, and the next publish kicks again.
  const c = p.dev.newChain();
  while (p.dev.pop(c)) p.dev.addUsed(c.head, 0);
  assert.equal(p.dev.enableNotifications(), false);
  assert.ok(p.drv.begin().addWritable(0x28100, 8).commit(9) >= 0);
  assert.equal(p.drv.publish(), true);
});

test('notification suppression: a queue started at index N != 0 notifies the first buffer each way (event indices start at N)', () => {
  // A queue started at N must behave like a fresh queue at 0: used_event and avail_event at N,
  // so the first entry each way is notified. Left at 0, the first notification each way would
  // only come after 2^16 - N buffers, and a driver waiting for one buffer would hang.
  for (const start of [1, 0x8000, 0xfff0, 0xffff]) {
    for (const eventIdx of [false, true]) {
      const r = runLiveness({ size: 4, eventIdx, start, initialEnable: false, total: 1, schedule: [], redisable: false });
      assert.equal(r.stuck, '', `start ${start}, EVENT_IDX ${eventIdx}: ${r.stuck}`);
      assert.equal(r.kicks, 1);
      assert.equal(r.irqs, 1);
    }
  }
});
