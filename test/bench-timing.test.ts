// The benches' timing harness (bench/common.ts timeAll) must call each task one call at a time:
// an asynchronous task (a block load of QD requests) that is started again before its last
// call settled runs two loads at once. tinybench, asked to add a task without being told
// whether it is asynchronous, calls it once to find out and never awaits that call; the blk
// bench's batch rows then failed with "batch refused a read" (every slot taken by the
// overlapping call), and every other row was timed beside requests still in flight.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as turn } from 'node:timers/promises';
import { timeAll } from '../bench/common.js';

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
