/**
 * What the benchmarks share: tinybench timing in interleaved rounds (medians and IQR), and
 * the table printing. Figures only: no bench asserts a time.
 */
import v8 from 'node:v8';
import { Bench } from 'tinybench';

export interface TimingOptions {
  rounds: number;
  timeMs: number;
  warmupMs: number;
  warmupIterations: number;
}

export function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

export function si(x: number, unit = ''): string {
  if (!Number.isFinite(x)) return 'n/a';
  if (x >= 1e9) return `${(x / 1e9).toFixed(2)} G${unit}`;
  if (x >= 1e6) return `${(x / 1e6).toFixed(2)} M${unit}`;
  if (x >= 1e3) return `${(x / 1e3).toFixed(2)} k${unit}`;
  return `${x.toFixed(2)} ${unit}`;
}

export function table(head: string[], rows: string[][], right: boolean[]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => (right[i] ? c.padStart(w[i]) : c.padEnd(w[i])))
      .join('  ')
      .trimEnd();
  return [line(head), w.map((n) => '-'.repeat(n)).join('  '), ...rows.map(line)].join('\n');
}

/** The same table as a GitHub markdown table (cells padded to line up in plain text too). */
export function markdownTable(head: string[], rows: string[][], right: boolean[]): string {
  const w = head.map((h, i) => Math.max(3, h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => `| ${r.map((c, i) => (right[i] ? c.padStart(w[i]) : c.padEnd(w[i]))).join(' | ')} |`;
  const rule = `|${w.map((n, i) => (right[i] ? `${'-'.repeat(n + 1)}:` : '-'.repeat(n + 2))).join('|')}|`;
  return [line(head), rule, ...rows.map(line)].join('\n');
}

export interface Timing {
  median: number; // ms per tinybench iteration
  iqrPct: number; // (p75 - p25) / median, percent
  samples: number;
}

/**
 * Times every task in `rounds` interleaved rounds and merges their samples (ms per call).
 *
 * Each task is called once first, here, and awaited when it returns a promise: that is how it
 * is known to be asynchronous, and tinybench is told so. Left to find out itself, tinybench
 * calls the task when it is added and never awaits that call: an asynchronous task's first
 * call then runs on beside the timing of every task added before it runs, and beside the
 * task's own warm-up (two block loads at once: the blk bench's batch rows ran out of slots).
 */
export async function timeAll(tasks: [string, () => unknown][], o: TimingOptions): Promise<Map<string, Timing>> {
  const merged = new Map<string, number[]>(tasks.map(([name]) => [name, []]));
  const isAsync = new Map<string, boolean>();
  for (const [name, fn] of tasks) {
    const r = fn();
    const thenable = typeof (r as { then?: unknown } | null)?.then === 'function';
    if (thenable) await r;
    isAsync.set(name, thenable);
  }
  for (let round = 0; round < o.rounds; round++) {
    const bench = new Bench({
      time: o.timeMs,
      iterations: 8,
      warmup: round === 0,
      warmupTime: o.warmupMs,
      warmupIterations: o.warmupIterations,
      retainSamples: true,
      throws: true,
    });
    for (const [name, fn] of tasks) bench.add(name, fn as () => void, { async: isAsync.get(name) });
    await bench.run();
    for (const t of bench.tasks) {
      const r = t.result;
      if (r.state !== 'completed') throw new Error(`task ${t.name}: ${r.state}`);
      // One by one: a fast task has more samples than a spread's arguments may be.
      const into = merged.get(t.name)!;
      for (const x of r.latency.samples ?? []) into.push(x);
    }
  }
  const out = new Map<string, Timing>();
  for (const [name, s] of merged) {
    s.sort((a, b) => a - b);
    const med = quantile(s, 0.5);
    out.set(name, { median: med, iqrPct: (100 * (quantile(s, 0.75) - quantile(s, 0.25))) / med, samples: s.length });
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Ratios from samples taken back to back (loop bench). timeAll runs each task for its whole
// time slice in turn, so a host whose speed drifts between slices (the project's CI host ran
// the same loop at half the speed within the hour) moves one task's median and not another's, and
// their ratio with it. Tasks timed one call each, back to back, see the same host: the ratio of
// two times from one round holds while the host drifts, and the median over many rounds is
// the figure to compare with a goal.

/**
 * Times each of `fns` once per round, back to back, for `rounds` rounds; the order rotates by
 * one each round so that every task comes first equally often (a task that warms the cache for
 * the next one favours each alike). Returns each round's times in ms, in the order of `fns`.
 * `now` is the clock (tests pass their own).
 */
export function backToBack(fns: readonly (() => void)[], rounds: number, now: () => number = () => performance.now()): Float64Array[] {
  const out: Float64Array[] = [];
  for (let r = 0; r < rounds; r++) {
    const times = new Float64Array(fns.length);
    for (let k = 0; k < fns.length; k++) {
      const i = (r + k) % fns.length;
      const t0 = now();
      fns[i]();
      times[i] = now() - t0;
    }
    out.push(times);
  }
  return out;
}

/** The median over the rounds of times[a] / times[b], and the interquartile range in % of it. */
export function ratioStats(rounds: readonly Float64Array[], a: number, b: number): { median: number; iqrPct: number } {
  const r = rounds.map((t) => t[a] / t[b]).sort((x, y) => x - y);
  const median = quantile(r, 0.5);
  return { median, iqrPct: (100 * (quantile(r, 0.75) - quantile(r, 0.25))) / median };
}

// ---------------------------------------------------------------------------------------
// Heap bytes allocated per iteration (ring and loop benches).
//
// Method: warm the loop up (optimised code, steady state), gc() twice so the young
// generation is empty, read v8 used_heap_size (all spaces), run the loop n times, read it
// again: bytes/iteration = delta / n. The young generation is made larger than anything a
// measured loop allocates (--min/--max-semi-space-size in the bench script), so no scavenge
// can run inside the loop and free what it allocated; a GCProfiler brackets every measured
// loop and a GC seen there makes the figure invalid (printed as such). The smallest of `reps`
// repetitions is kept: one-off costs (a late optimisation writing feedback or code metadata
// into old space) only ever add.

const gcFn: (() => void) | undefined = (globalThis as { gc?: () => void }).gc;

export interface AllocResult {
  perIter: number;
  gcs: number;
  valid: boolean;
}

function measureOnce(fn: (n: number) => void, n: number): { perIter: number; gcs: number } {
  gcFn!();
  gcFn!();
  const prof = new v8.GCProfiler();
  prof.start();
  const before = v8.getHeapStatistics().used_heap_size;
  fn(n);
  const after = v8.getHeapStatistics().used_heap_size;
  const gcs = prof.stop().statistics.length;
  return { perIter: (after - before) / n, gcs };
}

/** Heap bytes per iteration of `fn(n)` (n iterations per call), least of `reps` GC-free runs. */
export function measureAlloc(fn: (n: number) => void, n: number, reps = 3): AllocResult {
  if (gcFn === undefined) return { perIter: NaN, gcs: -1, valid: false };
  for (let i = 0; i < 3; i++) fn(n); // warm-up
  let best = Infinity;
  let gcs = 0;
  for (let r = 0; r < reps; r++) {
    const m = measureOnce(fn, n);
    gcs += m.gcs;
    if (m.gcs === 0 && m.perIter < best) best = m.perIter;
  }
  return { perIter: best, gcs, valid: gcs === 0 };
}

/** A heap figure for a table cell. */
export function fmtBytes(r: AllocResult): string {
  if (r.gcs < 0) return 'n/a (no gc)';
  if (!r.valid) return `invalid (${r.gcs} GC)`;
  return r.perIter.toFixed(1);
}

/** The positive integer after `name` in `argv`, or `dflt` when the option is absent (throws on anything else). */
export function intOption(argv: readonly string[], name: string, dflt: number): number {
  const i = argv.indexOf(name);
  const v = i >= 0 ? Number(argv[i + 1]) : dflt;
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} wants a positive integer`);
  return v;
}
