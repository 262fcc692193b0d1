// The benches' timing harness (bench/common.ts timeAll) must call each task one call at a time:
// an asynchronous task (a block load of QD requests) that is started again before its last
// call settled runs two loads at once. tinybench, asked to add a task without being told
// whether it is asynchronous, calls it once to find out and never awaits that call; the blk
// bench's batch rows then failed with "batch refused a read" (every slot taken by the
// overlapping call), and every other row was timed beside requests still in flight.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as turn } from 'node:timers/promises';
import { backToBack, ratioStats, timeAll } from '../bench/common.js';

let sink = 0;

test('timeAll never overlaps calls of asynchronous tasks, nor a task with another', async () => {
  let active = 0;
  let maxActive = 0;
  const started: Record<string, number> = { a: 0, b: 0, sync: 0 };
  const settled: Record<string, number> = { a: 0, b: 0, sync: 0 };
  const task = (name: string) => async (): Promise<void> => {
    started[name]++;
    active++;
    maxActive = Math.max(maxActive, active);
    await turn();
    await turn();
    active--;
    settled[name]++;
  };
  // Not an AsyncFunction (as the blk bench's `() => rig.load.run(n)`): only calling it shows that it returns a promise.
  const a = task('a');
  const b = task('b');
  const tasks: [string, () => unknown][] = [
    ['sync', () => {
      started.sync++;
      let x = 0;
      for (let i = 0; i < 20_000; i++) x = (x * 31 + i) | 0;
      sink = x;
      maxActive = Math.max(maxActive, active + 1);
      settled.sync++;
    }],
    ['a', () => a()],
    ['b', () => b()],
  ];
  const timings = await timeAll(tasks, { rounds: 2, timeMs: 20, warmupMs: 5, warmupIterations: 2 });
  assert.equal(maxActive, 1, 'a task was called while a call of it or of another task was still running');
  assert.equal(active, 0, 'a call was still running when timeAll returned');
  assert.deepEqual(settled, started);
  for (const name of ['sync', 'a', 'b']) assert.ok(timings.get(name)!.samples > 0, `${name} has samples`);
  assert.equal(typeof sink, 'number');
});

test('timeAll merges the samples of a task too fast for a spread of them (millions per round)', async () => {
  const timings = await timeAll([['nothing', () => undefined]], { rounds: 1, timeMs: 200, warmupMs: 5, warmupIterations: 2 });
  assert.ok(timings.get('nothing')!.samples > 0);
});

// backToBack and ratioStats (the loop bench's paired ratios), on a clock the test moves: each
// task takes its own amount of work times the host's speed in that round, and the speed drifts
// from round to round by up to 3x, as it does between the timed rounds on the CI host.
test('backToBack: ratios of one round hold while the host speed drifts; every task goes first equally often', () => {
  let clock = 0;
  let round = 0;
  const slowdown = (r: number): number => 1 + ((r * 7) % 5) / 2; // 1, 2, 3, 1.5, 2.5, ...: a drifting host
  const work = [6, 2, 3];
  const calls: number[] = [];
  const firsts = [0, 0, 0];
  let inRound = 0;
  const fns = work.map((w, i) => () => {
    if (inRound++ === 0) firsts[i]++;
    calls.push(i);
    clock += w * slowdown(round);
    if (inRound === work.length) {
      inRound = 0;
      round++;
    }
  });
  const rounds = backToBack(fns, 30, () => clock);
  assert.equal(rounds.length, 30);
  assert.equal(calls.length, 90);
  assert.deepEqual(firsts, [10, 10, 10], 'each task first in a third of the rounds');
  for (const [r, t] of rounds.entries()) assert.deepEqual([...t], work.map((w) => w * slowdown(r)), `round ${r}`);
  const a = ratioStats(rounds, 0, 1);
  assert.equal(a.median, 3);
  assert.equal(a.iqrPct, 0);
  assert.equal(ratioStats(rounds, 2, 1).median, 1.5);
  assert.equal(ratioStats(rounds, 0, 2).median, 2);
});

test('ratioStats: the median and the interquartile range of the per-round ratios', () => {
  const rounds = [2, 4, 1, 3, 5].map((x) => Float64Array.of(x, 1));
  const s = ratioStats(rounds, 0, 1);
  assert.equal(s.median, 3);
  assert.equal(s.iqrPct, (100 * (4 - 2)) / 3);
});
