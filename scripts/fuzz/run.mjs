#!/usr/bin/env node
// Runs one coverage-guided fuzz target (fuzz/<target>.fuzz.ts, compiled to dist/fuzz/) with
// Jazzer.js (libFuzzer), instrumenting the project's compiled code (dist/src, dist/fuzz).
//
//   npm run fuzz -- --target T --minutes N     fuzz T for N minutes (corpus kept in fuzz/corpus/T,
//                                              not committed; crashers saved in fuzz/regressions/T/)
//   node scripts/fuzz/run.mjs --target T --runs N [--seed S] [--corpus DIR]
//                                              a bounded run (what test/fuzz.test.ts does)
//   node scripts/fuzz/run.mjs --list           the targets
//
// Exit codes: 0 no finding, 1 a finding (or Jazzer.js failed), 2 usage error. The last line
// printed is a JSON summary: {"target","runs","seconds","execPerSec","exit"}.
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const targetsDir = join(root, 'dist', 'fuzz');

export function listTargets() {
  if (!existsSync(targetsDir)) return [];
  return readdirSync(targetsDir)
    .filter((f) => f.endsWith('.fuzz.js'))
    .map((f) => f.slice(0, -'.fuzz.js'.length))
    .sort();
}

function usage(message) {
  console.error(`${message}\nusage: npm run fuzz -- --target T (--minutes N | --runs N) [--seed S] [--corpus DIR]\n       npm run fuzz -- --list\ntargets: ${listTargets().join(', ') || '(none built: npm run build)'}`);
  process.exit(2);
}

let opts;
try {
  opts = parseArgs({
    options: {
      target: { type: 'string' },
      minutes: { type: 'string' },
      runs: { type: 'string' },
      seed: { type: 'string' },
      corpus: { type: 'string' },
      list: { type: 'boolean' },
    },
    strict: true,
  }).values;
} catch (err) {
  usage(err.message);
}
if (opts.list) {
  console.log(listTargets().join('\n'));
  process.exit(0);
}
const targets = listTargets();
if (opts.target === undefined) usage('--target is required');
if (!targets.includes(opts.target)) usage(`unknown target "${opts.target}"`);
const positive = (name, v) => {
  if (v === undefined) return undefined;
  if (!/^\d+(\.\d+)?$/.test(v) || Number(v) <= 0) usage(`--${name} must be a positive number, not "${v}"`);
  return Number(v);
};
const minutes = positive('minutes', opts.minutes);
const runs = positive('runs', opts.runs);
const seed = opts.seed === undefined ? undefined : positive('seed', opts.seed);
if ((minutes === undefined) === (runs === undefined)) usage('give exactly one of --minutes and --runs');
if (runs !== undefined && !Number.isInteger(runs)) usage('--runs must be an integer');

const target = opts.target;
const regressions = join(root, 'fuzz', 'regressions', target);
mkdirSync(regressions, { recursive: true });
const corpus = opts.corpus ?? join(root, 'fuzz', 'corpus', target);
mkdirSync(corpus, { recursive: true });
const seeds = join(root, 'fuzz', 'seeds', target);

const libfuzzer = [
  runs !== undefined ? `-runs=${runs}` : `-max_total_time=${Math.max(1, Math.round(minutes * 60))}`,
  `-artifact_prefix=${regressions}/`,
  '-max_len=4096',
  '-print_final_stats=1',
];
if (seed !== undefined) libfuzzer.push(`-seed=${seed}`);
const args = [
  '--require',
  join(root, 'scripts', 'fuzz', 'glibc-compat.cjs'),
  join(root, 'node_modules', '@jazzer.js', 'core', 'dist', 'cli.js'),
  join(targetsDir, `${target}.fuzz.js`),
  corpus,
  ...(existsSync(seeds) ? [seeds] : []),
  '--sync',
  // One input takes well under a millisecond; a minute is a hang on any machine, however loaded.
  '--timeout=60000',
  '-i',
  'dist/src/',
  '-i',
  'dist/fuzz/',
  '--',
  ...libfuzzer,
];
const started = process.hrtime.bigint();
let done = 0;
const child = spawn(process.execPath, args, { cwd: root, stdio: ['ignore', 'inherit', 'pipe'] });
child.stderr.on('data', (chunk) => {
  process.stderr.write(chunk);
  // libFuzzer's status lines: "#123456\tpulse  cov: ..."; its final stats: "stat::number_of_executed_units: N".
  const s = chunk.toString();
  for (const m of s.matchAll(/^#(\d+)\s/gm)) done = Math.max(done, Number(m[1]));
  for (const m of s.matchAll(/stat::number_of_executed_units:\s*(\d+)/g)) done = Math.max(done, Number(m[1]));
});
child.on('close', (code, signal) => {
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const exit = code === 0 ? 0 : 1;
  console.log(JSON.stringify({ target, runs: done, seconds: Number(seconds.toFixed(2)), execPerSec: Math.round(done / seconds), exit, ...(signal ? { signal } : {}) }));
  process.exit(exit);
});
