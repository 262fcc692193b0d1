/**
 * Instructions per chain of the device-loop bench's rows, from callgrind: load-independent, so
 * a change can be judged on a busy machine where wall-clock figures are noise.
 *
 * For each row (a BENCH_FILTER of loop.bench.ts, e.g. `split:rng/32`) and side (lib, floor) it
 * runs loop.bench.js in profile mode under `valgrind --tool=callgrind` twice, with `low` and
 * `high` chains per row, and prints (Ir(high) - Ir(low)) / (high - low): the start-up, warm-up
 * and compilation costs cancel out.
 *
 *   node dist/bench/loop-instructions.js [--rows split:rng/32,packed:blk/1] [--side lib|floor|checked|both|all]
 *        [--low 200000] [--high 700000] [--bench dist/bench/loop.bench.js]
 *
 * `--side both` counts the library and the floor, `all` also the checked floor (the floor plus
 * the library's further checks: loop.bench.ts) and prints the ratios.
 * `--bench` may name another tree's loop.bench.js (a baseline checkout). Runs under `nice -n 19`,
 * with `node --single-threaded`: concurrent compilation and marking threads made the two counts'
 * difference vary by hundreds of instructions per chain (a major GC that falls in one count and
 * not the other still moves a figure by about 50).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ALL = ['split', 'packed'].flatMap((f) => ['32', '1'].flatMap((b) => ['rng', 'blk', 'blk-ind'].map((s) => `${f}:${s}/${b}`)));

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}

const rows = arg('rows', ALL.join(',')).split(',');
const side = arg('side', 'lib');
const low = Number(arg('low', '200000'));
const high = Number(arg('high', '700000'));
const bench = arg('bench', join(import.meta.dirname, 'loop.bench.js'));
const dir = mkdtempSync(join(tmpdir(), 'loop-ir-'));

/** Instructions callgrind counted for one run. */
function instructions(filter: string, profile: string, chains: number): number {
  const out = join(dir, `${profile}-${chains}.out`);
  const r = spawnSync(
    'nice',
    ['-n', '19', 'valgrind', '--tool=callgrind', `--callgrind-out-file=${out}`, process.execPath, '--single-threaded', '--expose-gc', '--min-semi-space-size=128', '--max-semi-space-size=128', bench],
    { env: { ...process.env, BENCH_FILTER: filter, BENCH_PROFILE: profile, BENCH_PROFILE_CHAINS: String(chains) }, encoding: 'utf8' },
  );
  // BENCH_FILTER is a substring match: 'split:blk/1' also matches nothing else, but 'split:blk/32'
  // would not match 'split:blk-ind/32'; the profile line says how many rows ran.
  const m = /profiled \w+: (\d+) row/.exec(r.stdout);
  if (r.status !== 0 || m === null) throw new Error(`callgrind run failed (${filter} ${profile} ${chains}): ${r.stdout}\n${r.stderr.slice(-2000)}`);
  if (m[1] !== '1') throw new Error(`filter ${filter} ran ${m[1]} rows, not 1`);
  const summary = /^summary: (\d+)/m.exec(readFileSync(out, 'utf8'));
  if (summary === null) throw new Error(`no summary in ${out}`);
  rmSync(out);
  return Number(summary[1]);
}

const sides = side === 'all' ? ['lib', 'floor', 'checked'] : side === 'both' ? ['lib', 'floor'] : [side];
console.log(`instructions per chain (callgrind, (Ir at ${high} - Ir at ${low}) / ${high - low}), ${bench}`);
for (const row of rows) {
  const figs = sides.map((s) => (instructions(row, s, high) - instructions(row, s, low)) / (high - low));
  const ratios = figs.length >= 2 ? `  lib/floor ${(figs[0] / figs[1]).toFixed(2)}` : '';
  const checked = figs.length === 3 ? `  checked/floor ${(figs[2] / figs[1]).toFixed(2)}  lib/checked ${(figs[0] / figs[2]).toFixed(2)}` : '';
  console.log(`${row.padEnd(18)} ${sides.map((s, i) => `${s} ${figs[i].toFixed(0)}`).join('  ')}${ratios}${checked}`);
}
rmSync(dir, { recursive: true, force: true });
