#!/usr/bin/env node
// The mutation audit of "enforced" (issue 17): for each check site of an enforced clause
// (scripts/check-sites.mjs), the compiled site in a temporary copy of dist/ is disabled and the
// negative tests that claim the clause are run there; they must fail. A site whose tests still
// pass is one no test catches: its clause is enforced in name only.
//
// Disabling a site: its clause literal in the compiled JavaScript becomes an id no test
// expects (`mutant.disabled.<side>.0`, same side, so the verdict keeps its weight and strict
// mode still acts): the site's verdict no longer names the clause. That is exactly the link
// the status claims: the negative test asserts the verdict from that site. (Turning the call
// into a no-op would also change what the code does next, so a test could fail for another
// reason, e.g. an exception where a verdict was, and prove nothing about the assertion.)
//
//   node scripts/mutation-audit.mjs                 every enforced site (npm run audit:mutation)
//   node scripts/mutation-audit.mjs --sample 10     the seed clauses + 10 sites drawn with --seed
//   node scripts/mutation-audit.mjs --slice auto    the seed clauses' sites + one slice of the rest
//                                                   (CI: the slice is chosen by the commit, so
//                                                   successive commits cover every site; --stride N
//                                                   slices, default 6; --slice K picks one)
//   node scripts/mutation-audit.mjs --clause ID     the sites of one clause (repeatable)
//   --seed N (default 17)  --json FILE (the results)  --list (the sites, nothing run)
// test/mutation-audit.test.ts runs `--slice auto` without the listed uncaught sites.
//   --update               rewrite catalogue/uncaught-sites.tsv from a full run
// Needs a build (npm run build). Exit status 1 when a site not listed in
// catalogue/uncaught-sites.tsv is not caught, a listed one is caught (the list is stale), or a
// claiming test fails without a mutation (then nothing the audit says can be trusted).
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, dirname } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { GENERATED, SCENARIOS, UNCAUGHT, walk, checkFiles, findSites, findNegativeClaims, knownUncaught } from './check-sites.mjs';

export { knownUncaught };

/** The seed clauses (issue 9's first scenarios; test/cli/cli.test.ts): always in a sample. */
export const SEED = [
  'init.sequence.driver.1', 'init.sequence.driver.4', 'init.sequence.driver.3', 'basic.config.device.1', 'basic.status.device.1',
  'init.sequence.driver.7', 'init.sequence.driver.5', 'init.sequence.driver.6', 'basic.status.driver.3', 'init.cleanup.driver.1',
  'init.cleanup.driver.2', 'split.avail-ring.driver.1',
];

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function escapeRe(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * The enforced sites, each with its place in the compiled JavaScript and the claiming tests:
 * [{clause, name, file, line, js: {file, start, end}, claims: [{file, test}]}].
 */
export function enforcedSites(base = root) {
  const ts = findSites(checkFiles(base), (f) => relative(base, f));
  const distSrc = join(base, 'dist', 'src');
  if (!existsSync(distSrc)) throw new Error('no dist/src: run npm run build first');
  const jsFiles = walk(distSrc, '.js').filter((f) => {
    const rel = relative(base, f).replace(/^dist\//, '').replace(/\.js$/, '.ts');
    return rel !== GENERATED && rel !== SCENARIOS && !rel.startsWith('src/cli/');
  });
  const js = findSites(jsFiles, (f) => relative(base, f).replace(/^dist\//, '').replace(/\.js$/, '.ts'), ts.reporters);
  const jsByName = new Map(js.sites.map((s) => [s.name, s]));
  const claims = findNegativeClaims(base);
  const out = [];
  for (const s of ts.sites) {
    const c = claims.get(s.clause);
    if (!c) continue;
    const j = jsByName.get(s.name);
    if (!j) throw new Error(`site ${s.name} (${s.file}:${s.line}) not found in the compiled code: rebuild (npm run build)`);
    out.push({ clause: s.clause, name: s.name, file: s.file, line: s.line, js: { file: join('dist', j.file.replace(/\.ts$/, '.js')), start: j.start, end: j.end }, claims: c });
  }
  return out;
}

/** The sample: one site of every seed clause, then `n` more drawn with the seed. */
export function sample(sites, n, seed) {
  const rand = mulberry32(seed);
  const chosen = [];
  for (const clause of SEED) {
    const of = sites.filter((s) => s.clause === clause && !chosen.includes(s));
    if (of.length > 0) chosen.push(of[Math.floor(rand() * of.length)]);
  }
  const rest = sites.filter((s) => !chosen.includes(s));
  for (let i = 0; i < n && rest.length > 0; i++) chosen.push(rest.splice(Math.floor(rand() * rest.length), 1)[0]);
  return chosen;
}

/** How many slices the CI sample cycles through: each run audits about 1/STRIDE of the non-seed sites. */
export const STRIDE = 6;

/** The current commit (git rev-parse HEAD), or null outside a git checkout. */
export function headCommit(base = root) {
  const r = spawnSync('git', ['rev-parse', 'HEAD'], { cwd: base, encoding: 'utf8' });
  return r.status === 0 && /^[0-9a-f]{40}$/.test(r.stdout.trim()) ? r.stdout.trim() : null;
}

/**
 * The slice a commit audits: MUTATION_AUDIT_SLICE when set, else the commit's first 8 hex digits
 * mod `stride` (0 outside git). Deterministic for a commit; commits spread over the slices.
 */
export function sliceFor(stride = STRIDE, commit = headCommit(), env = process.env) {
  if (env.MUTATION_AUDIT_SLICE !== undefined && env.MUTATION_AUDIT_SLICE !== '') {
    const k = Number(env.MUTATION_AUDIT_SLICE);
    if (!Number.isInteger(k) || k < 0 || k >= stride) throw new Error(`MUTATION_AUDIT_SLICE=${env.MUTATION_AUDIT_SLICE}: an integer from 0 to ${stride - 1}`);
    return k;
  }
  return commit === null ? 0 : parseInt(commit.slice(0, 8), 16) % stride;
}

/**
 * The stride sample: every site of every seed clause, then slice `k` of the others (sorted by
 * name, every `stride`-th from `k`). The `stride` slices together are the whole set, each site in
 * exactly one, so `stride` runs with k = 0 .. stride-1 audit everything.
 */
export function strideSample(sites, stride, k) {
  const seed = sites.filter((s) => SEED.includes(s.clause));
  const rest = sites.filter((s) => !SEED.includes(s.clause)).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return [...seed, ...rest.filter((_, i) => i % stride === k)];
}

/** A scratch root: every top-level entry linked, dist/ copied (it is what gets patched). */
function scratch() {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-mutation-'));
  // Interrupted: the copy goes too (after the test run in progress returns).
  const gone = () => {
    rmSync(dir, { recursive: true, force: true });
    process.exit(130);
  };
  process.once('SIGINT', gone).once('SIGTERM', gone);
  for (const name of readdirSync(root)) {
    if (name === 'dist' || name === '.git') continue;
    symlinkSync(join(root, name), join(dir, name));
  }
  cpSync(join(root, 'dist'), join(dir, 'dist'), { recursive: true });
  return dir;
}

/** Runs one compiled test file in `dir` (node:test runs it directly: one process); true when it passes. */
function runFile(dir, js, pattern) {
  const args = ['--test-reporter=dot'];
  if (pattern !== undefined) args.push(`--test-name-pattern=${pattern}`);
  // Hang guard only (a mutated check may leave a peer waiting): a test that hangs fails.
  const r = spawnSync(process.execPath, [...args, js], { cwd: dir, encoding: 'utf8', timeout: 300_000, env: { ...process.env, NODE_OPTIONS: '' } });
  return r.status === 0;
}

/**
 * Runs the claiming tests in `dir`; true when all pass. With `clause` (a mutation run), a file
 * claimed as a whole (its id in a table outside any test) is first run for the tests whose names
 * hold the id: if one fails, the whole file would fail too, so the site is caught without
 * running the rest; if they pass, the whole file runs, so the answer is the whole file's.
 */
function runClaims(dir, claims, clause) {
  const byFile = new Map();
  for (const c of claims) {
    if (!byFile.has(c.file)) byFile.set(c.file, new Set());
    byFile.get(c.file).add(c.test); // undefined: the whole file
  }
  // One failing claim is enough to call a site caught, so the cheap runs go first: files run
  // for named tests before files run whole (a table of ids outside any test() claims the whole
  // file, e.g. test/negative/proxy.test.ts, which starts real processes).
  const order = [...byFile].sort(([, a], [, b]) => Number(a.has(undefined)) - Number(b.has(undefined)));
  for (const [file, tests] of order) {
    const js = join(dir, 'dist', file.replace(/\.ts$/, '.js'));
    if (!tests.has(undefined)) {
      if (!runFile(dir, js, [...tests].map((t) => `^${escapeRe(t)}`).join('|'))) return false;
      continue;
    }
    if (clause !== undefined && !runFile(dir, js, escapeRe(clause))) return false;
    if (!runFile(dir, js)) return false;
  }
  return true;
}

/** Audits `sites`; calls `progress` per site. Returns {baselineFailed, results: [{site, caught}]}. */
export function audit(sites, progress = () => {}) {
  const dir = scratch();
  try {
    const allClaims = sites.flatMap((s) => s.claims);
    const baselineFailed = [];
    // Unmutated, every claiming test must pass, or a failure under mutation proves nothing:
    // one run for them all, and one per claim only to name the failing one.
    if (!runClaims(dir, allClaims)) {
      for (const c of allClaims) {
        if (baselineFailed.some((b) => b.file === c.file && b.test === c.test)) continue;
        if (!runClaims(dir, [c])) baselineFailed.push(c);
      }
    }
    const results = [];
    if (baselineFailed.length > 0) return { baselineFailed, results };
    for (const s of sites) {
      const file = join(dir, s.js.file);
      const original = readFileSync(file, 'utf8');
      const side = s.clause.includes('.device.') ? 'device' : 'driver';
      writeFileSync(file, original.slice(0, s.js.start) + `'mutant.disabled.${side}.0'` + original.slice(s.js.end));
      let caught;
      try {
        caught = !runClaims(dir, s.claims, s.clause);
      } finally {
        writeFileSync(file, original);
      }
      results.push({ site: s, caught });
      progress(s, caught);
    }
    return { baselineFailed, results };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      sample: { type: 'string' },
      slice: { type: 'string' },
      stride: { type: 'string', default: String(STRIDE) },
      seed: { type: 'string', default: '17' },
      clause: { type: 'string', multiple: true },
      json: { type: 'string' },
      list: { type: 'boolean' },
      update: { type: 'boolean' },
    },
  });
  let sites = enforcedSites();
  if (values.clause) sites = sites.filter((s) => values.clause.includes(s.clause));
  if (values.sample !== undefined) sites = sample(sites, Number(values.sample), Number(values.seed));
  if (values.slice !== undefined) {
    const stride = Number(values.stride);
    const k = values.slice === 'auto' ? sliceFor(stride) : Number(values.slice);
    if (!Number.isInteger(stride) || stride < 1 || !Number.isInteger(k) || k < 0 || k >= stride) throw new Error(`--slice ${values.slice} --stride ${values.stride}: a slice from 0 to stride - 1`);
    sites = strideSample(sites, stride, k);
    console.log(`slice ${k} of ${stride}${values.slice === 'auto' ? ` (commit ${headCommit()?.slice(0, 12) ?? 'unknown'})` : ''}`);
  }
  if (values.list) {
    for (const s of sites) console.log(`${s.name}  ${s.file}:${s.line}  <- ${s.claims.map((c) => (c.test ? `${c.file} > ${c.test}` : c.file)).join(', ')}`);
    process.exit(0);
  }
  console.log(`mutation audit: ${sites.length} check sites of ${new Set(sites.map((s) => s.clause)).size} enforced clauses`);
  const { baselineFailed, results } = audit(sites, (s, caught) => console.log(`${caught ? 'caught    ' : 'NOT CAUGHT'} ${s.name}  (${s.file}:${s.line})`));
  for (const b of baselineFailed) console.log(`BASELINE FAILS ${b.file}${b.test ? ` > ${b.test}` : ''}: the claiming test fails without any mutation`);
  // A site is expected to be caught unless catalogue/uncaught-sites.tsv lists it; a listed
  // site that is caught now makes the list stale. Either is a failure.
  const known = knownUncaught(root);
  const missed = results.filter((r) => !r.caught);
  const surprises = missed.filter((r) => !known.has(r.site.name));
  const stale = results.filter((r) => r.caught && known.has(r.site.name));
  console.log(`\n${results.length} sites: ${results.length - missed.length} caught, ${missed.length} not caught (${missed.length - surprises.length} of them listed in ${UNCAUGHT})`);
  for (const r of surprises) console.log(`  NOT CAUGHT, not listed: ${r.site.name} (${r.site.file}:${r.site.line}); claimed by ${[...new Set(r.site.claims.map((c) => c.file))].join(', ')}`);
  for (const r of stale) console.log(`  caught, but listed as uncaught: ${r.site.name}`);
  if (values.update) {
    if (values.sample !== undefined || values.slice !== undefined || values.clause) throw new Error('--update needs the whole set');
    const keep = missed.map((r) => `${r.site.name}\t${known.get(r.site.name) || 'no negative test fails when this site is disabled; the clause\'s tests are caught at another of its sites (this one has no peer breaking it alone)'}`);
    writeFileSync(
      join(root, UNCAUGHT),
      '# Check sites the full mutation audit (npm run audit:mutation) finds uncaught: disabling one\n' +
        '# fails no claiming test. gen-catalogue does not count them; fix by adding the negative test.\n' +
        `site\treason\n${keep.join('\n')}${keep.length > 0 ? '\n' : ''}`,
    );
    console.log(`wrote ${UNCAUGHT} (${keep.length} sites)`);
  }
  if (values.json) {
    writeFileSync(
      values.json,
      JSON.stringify({ baselineFailed, results: results.map((r) => ({ clause: r.site.clause, site: r.site.name, file: r.site.file, line: r.site.line, caught: r.caught })) }, null, 2) + '\n',
    );
  }
  process.exit(baselineFailed.length > 0 || (!values.update && (surprises.length > 0 || stale.length > 0)) ? 1 : 0);
}
