#!/usr/bin/env node
// Compares the ring and blk benches of another revision (the base) with this working tree
// (uncommitted changes included), on the same machine in the same run: the base's tree is
// exported (git archive) into a temporary folder, built there with this checkout's node_modules
// (and its own native addon, compiled when a compiler is here), and then each tree's own
// dist/bench/ring.bench.js, loop.bench.js and blk.bench.js run alternately, base and current, round after round
// (ABBA order, so a drift in machine speed weighs on both), with the flags of `npm run bench`.
// Each run's main table is read from its output (the format both trees print: a header line, a
// line of dashes, rows), so a base with another file layout or without any flag works. Figures
// per row: the medians over the rounds, and current/base as the median of the per-round ratios
// with their range (< 1: current faster). A row whose ratios all lie above 1 + --threshold is
// marked slower, below 1 - threshold faster.
//
// With --same-bench the base is built with this tree's bench/ folder in place of its own: the
// same benchmark code over the base's library (a bench the base does not have yet, e.g. the
// device-loop bench, measured on the code before the change; the bench must then use only API
// the base has).
//
//   npm run bench:compare -- --base <rev> [--rounds 3] [--bench ring,loop,blk] [--same-bench] [--threshold 0.03] [--json]
//   (BENCH_TIME_MS, BENCH_ROUNDS and BENCH_FILTER reach both trees' benches unchanged)
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Each bench: its file, the table to read (found by its time column), the row key and the figures. */
const BENCHES = {
  ring: { file: 'ring.bench.js', time: 'ns/chain', keys: ['ring', 'workload', 'batch'], heap: 'heap B/chain', unit: 'ns/chain' },
  // 'api' (promise, batch, raw) is part of a row's name where the bench prints it: without it
  // the rows of one backend, ring, mode and QD overwrote each other (only the last api compared).
  blk: { file: 'blk.bench.js', time: 'time/req', keys: ['backend', 'ring', 'mode', 'QD'], optionalKeys: ['api'], heap: 'heap B/req', unit: 'ns/req' },
  loop: { file: 'loop.bench.js', time: 'ns/chain', keys: ['ring', 'workload', 'batch'], heap: 'heap B/chain', unit: 'ns/chain' },
};

const { values: opt } = parseArgs({
  options: {
    base: { type: 'string' },
    rounds: { type: 'string', default: '3' },
    bench: { type: 'string', default: 'ring,loop,blk' },
    'same-bench': { type: 'boolean', default: false },
    threshold: { type: 'string', default: '0.03' },
    json: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
const usage = 'usage: npm run bench:compare -- --base <rev> [--rounds 3] [--bench ring,loop,blk] [--same-bench] [--threshold 0.03] [--json]';
if (opt.help) {
  console.log(usage);
  process.exit(0);
}
if (!opt.base) fail(`--base <rev> is required\n${usage}`);
const rounds = Number(opt.rounds);
const threshold = Number(opt.threshold);
const benches = opt.bench.split(',').map((b) => b.trim());
if (!Number.isInteger(rounds) || rounds < 1) fail(`--rounds ${opt.rounds}: a whole number >= 1`);
if (!(threshold >= 0 && threshold < 1)) fail(`--threshold ${opt.threshold}: a fraction, e.g. 0.03`);
for (const b of benches) if (!(b in BENCHES)) fail(`--bench ${b}: one of ${Object.keys(BENCHES).join(', ')}`);

function fail(msg) {
  console.error(`bench:compare: ${msg}`);
  process.exit(2);
}
const log = (msg) => (opt.json ? console.error(msg) : console.log(msg));

function sh(cmd, args, options = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...options });
  if (r.status !== 0) {
    const out = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n').slice(-20).join('\n');
    throw new Error(`${cmd} ${args.join(' ')} failed (${r.status ?? r.signal ?? r.error?.message}):\n${out}`);
  }
  return r.stdout;
}

/** The node flags `npm run bench` gives the ring bench (this checkout's package.json), else its known ones. */
function benchFlags() {
  const script = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).scripts?.bench ?? '';
  const m = /node ((?:--\S+\s+)*)dist\/bench\/ring\.bench\.js/.exec(script);
  return m ? m[1].trim().split(/\s+/).filter(Boolean) : ['--expose-gc', '--min-semi-space-size=128', '--max-semi-space-size=128'];
}

/**
 * The tables in a bench's output (bench/common.ts table(): a header, a line of dashes whose runs
 * give each column's span, then rows: lines blank between the spans).
 */
export function parseTables(text) {
  const lines = text.split('\n');
  const tables = [];
  for (let i = 1; i < lines.length; i++) {
    if (!/^-+(  -+)*$/.test(lines[i])) continue;
    const spans = [...lines[i].matchAll(/-+/g)].map((m) => [m.index, m.index + m[0].length]);
    const cell = (line, [a, b], last) => (last ? line.slice(a) : line.slice(a, b)).trim();
    const head = spans.map((s, k) => cell(lines[i - 1], s, k === spans.length - 1));
    // A row reaches the last column and has blanks between the columns (a sentence printed
    // under the table has not).
    const isRow = (line) => line.length > spans[spans.length - 1][0] && spans.slice(1).every(([a], k) => line.slice(spans[k][1], a).trim() === '');
    const rows = [];
    for (let j = i + 1; j < lines.length && isRow(lines[j]); j++) {
      rows.push(Object.fromEntries(spans.map((s, k) => [head[k], cell(lines[j], s, k === spans.length - 1)])));
    }
    tables.push({ head, rows });
  }
  return tables;
}

/** A time cell in ns: '97.3' (ring, ns), '3657 ns', '16.0 us', '1.2 ms'. */
function toNs(cell) {
  const m = /^([\d.]+)\s*(ns|us|µs|ms|s)?$/.exec(cell);
  if (!m) return NaN;
  return Number(m[1]) * ({ undefined: 1, ns: 1, us: 1e3, µs: 1e3, ms: 1e6, s: 1e9 }[m[2]] ?? 1);
}

/** One run of one bench in one tree: row key -> { ns, heap }. */
function runBench(tree, name, flags) {
  const spec = BENCHES[name];
  const file = join(tree.dir, 'dist', 'bench', spec.file);
  const out = sh(process.execPath, [...flags, file], { cwd: tree.dir, env: process.env });
  const table = parseTables(out).find((t) => t.head.includes(spec.time) && spec.keys.every((k) => t.head.includes(k)));
  if (!table) throw new Error(`${tree.label}: ${spec.file} printed no table with the columns ${[spec.time, ...spec.keys].join(', ')}`);
  const keys = [...spec.keys, ...(spec.optionalKeys ?? []).filter((k) => table.head.includes(k))];
  const rows = new Map();
  for (const r of table.rows) rows.set(keys.map((k) => r[k]).join(' | '), { ns: toNs(r[spec.time]), heap: r[spec.heap] ?? '' });
  return rows;
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

function table(head, rows, right) {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r) => r.map((c, i) => (right[i] ? c.padStart(w[i]) : c.padEnd(w[i]))).join('  ').trimEnd();
  return [line(head), w.map((n) => '-'.repeat(n)).join('  '), ...rows.map(line)].join('\n');
}

// --- The two trees. ---
const baseSha = sh('git', ['rev-parse', '--verify', `${opt.base}^{commit}`], { cwd: root }).trim();
const baseSubject = sh('git', ['log', '-1', '--format=%h %s', baseSha], { cwd: root }).trim();
const headSubject = sh('git', ['log', '-1', '--format=%h %s'], { cwd: root }).trim();
const dirty = sh('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: root }).trim() !== '';
const work = mkdtempSync(join(tmpdir(), 'virtio-ts-bench-base-'));
const cleanup = () => rmSync(work, { recursive: true, force: true });
process.on('SIGINT', () => {
  cleanup();
  process.exit(130);
});
process.on('SIGTERM', () => {
  cleanup();
  process.exit(143);
});

try {
  const base = { label: 'base', dir: join(work, 'tree') };
  const current = { label: 'current', dir: root };
  log(`base:    ${baseSubject}`);
  log(`current: ${headSubject}${dirty ? ' + uncommitted changes' : ''} (${root})`);

  // The base's files as committed, then its build with this checkout's dependencies.
  sh('sh', ['-c', `mkdir -p "$2" && git archive --format=tar "$1" | tar -x -C "$2"`, 'sh', baseSha, base.dir], { cwd: root });
  if (opt['same-bench']) {
    // Only the compared benches and their shared harness: the other benches of this tree may
    // use API the base does not have (and would fail the base's type check).
    const copied = ['common.ts', ...benches.map((name) => BENCHES[name].file.replace(/\.js$/, '.ts'))];
    for (const file of copied) cpSync(join(root, 'bench', file), join(base.dir, 'bench', file));
    log(`base built with this tree's ${copied.map((f) => `bench/${f}`).join(', ')} (--same-bench)`);
  }
  if (!existsSync(join(root, 'node_modules'))) fail('this checkout has no node_modules: run npm ci first');
  symlinkSync(join(root, 'node_modules'), join(base.dir, 'node_modules'), 'dir');
  log('building current (npm run build) ...');
  sh('npm', ['run', 'build', '--silent'], { cwd: current.dir });
  log('building base (its own npm run build) ...');
  sh('npm', ['run', 'build', '--silent'], { cwd: base.dir });
  // Its own addon (the file backend reads with it when it loads), compiled from its native/.
  if (existsSync(join(base.dir, 'binding.gyp'))) {
    const npmCli = process.env.npm_execpath || spawnSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).stdout.trim();
    const nodeGyp = process.env.npm_config_node_gyp || join(dirname(npmCli), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
    const env = { ...process.env };
    const prefix = join(dirname(process.execPath), '..');
    if (!env.npm_config_nodedir && existsSync(join(prefix, 'include', 'node', 'node_api.h'))) env.npm_config_nodedir = prefix;
    const r = spawnSync(process.execPath, [nodeGyp, 'rebuild'], { cwd: base.dir, env, encoding: 'utf8' });
    if (r.status !== 0) log(`note: the base's native addon did not compile (${r.status ?? r.signal}); its file-backend rows read without RWF_NOWAIT`);
  }

  const flags = benchFlags();
  log(`flags: node ${flags.join(' ')}; ${rounds} rounds, alternating base and current (ABBA)`);
  // results[bench][tree] = one Map per round
  const results = Object.fromEntries(benches.map((b) => [b, { base: [], current: [] }]));
  const missing = new Set();
  const t0 = performance.now();
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? [base, current] : [current, base];
    for (const name of benches) {
      for (const tree of order) {
        if (!existsSync(join(tree.dir, 'dist', 'bench', BENCHES[name].file))) {
          missing.add(`${tree.label} has no dist/bench/${BENCHES[name].file}`);
          continue;
        }
        const t = performance.now();
        results[name][tree.label].push(runBench(tree, name, flags));
        log(`round ${round + 1}/${rounds}: ${name} ${tree.label} (${((performance.now() - t) / 1000).toFixed(0)} s)`);
      }
    }
  }

  // --- Report. ---
  const summary = {};
  for (const name of benches) {
    const { base: b, current: c } = results[name];
    if (b.length === 0 || c.length === 0) continue;
    const keys = [...new Set([...b[0].keys(), ...c[0].keys()])];
    summary[name] = keys.map((key) => {
      const bs = b.map((m) => m.get(key)?.ns).filter((x) => Number.isFinite(x));
      const cs = c.map((m) => m.get(key)?.ns).filter((x) => Number.isFinite(x));
      const paired = b.map((m, i) => (c[i]?.get(key)?.ns ?? NaN) / (m.get(key)?.ns ?? NaN)).filter((x) => Number.isFinite(x));
      const ratio = paired.length > 0 ? median(paired) : NaN;
      const lo = Math.min(...paired);
      const hi = Math.max(...paired);
      const verdict = paired.length === 0 ? 'only in one' : lo > 1 + threshold ? 'SLOWER' : hi < 1 - threshold ? 'faster' : '~';
      return {
        row: key,
        baseNs: bs.length ? median(bs) : null,
        currentNs: cs.length ? median(cs) : null,
        ratio: Number.isFinite(ratio) ? ratio : null,
        ratioMin: paired.length ? lo : null,
        ratioMax: paired.length ? hi : null,
        baseHeap: b.at(-1).get(key)?.heap ?? null,
        currentHeap: c.at(-1).get(key)?.heap ?? null,
        verdict,
      };
    });
  }
  const elapsed = (performance.now() - t0) / 1000;
  if (opt.json) {
    console.log(JSON.stringify({ base: baseSubject, current: headSubject, dirty, rounds, flags, threshold, benches: summary, missing: [...missing], seconds: elapsed }, null, 2));
  } else {
    for (const [name, rows] of Object.entries(summary)) {
      const unit = BENCHES[name].unit;
      console.log(`\n${name} bench: median ${unit} over ${rounds} rounds; current/base = median of the per-round ratios [range] (< 1: current faster)`);
      const fmt = (x) => (x === null ? 'n/a' : x.toFixed(1));
      console.log(
        table(
          [[...BENCHES[name].keys, ...(BENCHES[name].optionalKeys ?? [])].join(' | '), `base ${unit}`, `current ${unit}`, 'current/base', 'range', 'heap B base -> current', 'verdict'],
          rows.map((r) => [
            r.row,
            fmt(r.baseNs),
            fmt(r.currentNs),
            r.ratio === null ? 'n/a' : r.ratio.toFixed(3),
            r.ratio === null ? '' : `${r.ratioMin.toFixed(3)}..${r.ratioMax.toFixed(3)}`,
            `${r.baseHeap ?? '-'} -> ${r.currentHeap ?? '-'}`,
            r.verdict,
          ]),
          [false, true, true, true, true, true, false],
        ),
      );
      const ratios = rows.map((r) => r.ratio).filter((x) => x !== null);
      if (ratios.length > 0) {
        const geo = Math.exp(ratios.reduce((s, x) => s + Math.log(x), 0) / ratios.length);
        console.log(`${name}: geometric mean of current/base ${geo.toFixed(3)} over ${ratios.length} rows; ${rows.filter((r) => r.verdict === 'SLOWER').length} slower, ${rows.filter((r) => r.verdict === 'faster').length} faster beyond ±${(threshold * 100).toFixed(0)}% in every round`);
      }
    }
    for (const m of missing) console.log(`note: ${m}`);
    console.log(`\ntotal ${elapsed.toFixed(0)} s`);
  }
} finally {
  cleanup();
}
