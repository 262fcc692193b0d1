// The mutation audit of "enforced" on a sample (scripts/mutation-audit.mjs; the whole set:
// npm run audit:mutation): with one check site disabled in a copy of the compiled code, the
// negative test that claims its clause must fail. The sample is every site of every seed clause
// plus one slice of the other sites (sorted by name, every STRIDE-th): the slice is chosen by the
// commit (MUTATION_AUDIT_SLICE=k overrides it), so a run is the same for a commit and successive
// commits cover every site; `node scripts/mutation-audit.mjs --slice K` repeats one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

interface Claim {
  file: string;
  test?: string;
}
interface Site {
  clause: string;
  name: string;
  claims: Claim[];
}
interface Audit {
  SEED: string[];
  knownUncaught(base: string): Map<string, string>;
  enforcedSites(base: string): Site[];
  sample(sites: Site[], n: number, seed: number): Site[];
  STRIDE: number;
  sliceFor(stride?: number, commit?: string | null, env?: Record<string, string | undefined>): number;
  strideSample(sites: Site[], stride: number, k: number): Site[];
  audit(sites: Site[]): { baselineFailed: Claim[]; results: { site: Site; caught: boolean }[] };
}
const load = () => import(pathToFileURL(join(root, 'scripts/mutation-audit.mjs')).href) as Promise<Audit>;
// The sites, found once for the three tests (parsing src/ and dist/ takes seconds).
let sitesOnce: Promise<Site[]> | undefined;
const allSites = () => (sitesOnce ??= load().then((m) => m.enforcedSites(root)));

test('the slices: every site of a seed clause in each, the others in exactly one; the slice follows the commit', async () => {
  const { SEED, STRIDE, sliceFor, strideSample } = await load();
  const sites = await allSites();
  const seen = new Map<string, number>();
  for (let k = 0; k < STRIDE; k++) {
    const slice = strideSample(sites, STRIDE, k);
    for (const s of sites.filter((x) => SEED.includes(x.clause))) assert.ok(slice.includes(s), `slice ${k} holds ${s.name}`);
    for (const s of slice) if (!SEED.includes(s.clause)) seen.set(s.name, (seen.get(s.name) ?? 0) + 1);
  }
  assert.deepEqual(
    sites.filter((s) => !SEED.includes(s.clause) && seen.get(s.name) !== 1).map((s) => s.name),
    [],
    'each other site is in exactly one slice',
  );
  for (const clause of SEED) assert.ok(sites.some((s) => s.clause === clause), `seed clause ${clause} has a site`);
  assert.equal(sliceFor(4, 'f'.repeat(40), {}), 0xffffffff % 4);
  assert.equal(sliceFor(4, '0000000a' + '0'.repeat(32), {}), 10 % 4);
  assert.equal(sliceFor(4, null, {}), 0);
  assert.equal(sliceFor(4, 'f'.repeat(40), { MUTATION_AUDIT_SLICE: '1' }), 1);
  assert.throws(() => sliceFor(4, null, { MUTATION_AUDIT_SLICE: '4' }));
});

test("this commit's slice: disabling each sampled site makes the negative test that claims it fail", async (t) => {
  const { SEED, STRIDE, sliceFor, strideSample, audit, knownUncaught } = await load();
  const known = knownUncaught(root);
  const k = sliceFor(STRIDE);
  // The sites catalogue/uncaught-sites.tsv lists are left to the full audit (npm run
  // audit:mutation, which fails when the list is stale): proving a site uncaught runs every
  // claiming test whole, the most expensive case, and they do not make their clause enforced.
  const slice = strideSample(await allSites(), STRIDE, k);
  const sites = slice.filter((s) => !known.has(s.name));
  t.diagnostic(`slice ${k} of ${STRIDE}: ${sites.length} sites, ${slice.length - sites.length} listed uncaught left out (again: MUTATION_AUDIT_SLICE=${k}, or node scripts/mutation-audit.mjs --slice ${k})`);
  for (const clause of SEED) assert.ok(sites.some((s) => s.clause === clause), `the sample holds a site of seed clause ${clause}`);
  const { baselineFailed, results } = audit(sites);
  assert.deepEqual(baselineFailed, [], 'the claiming tests pass on the unmutated code');
  assert.equal(results.length, sites.length);
  assert.deepEqual(
    results.filter((r) => !r.caught).map((r) => r.site.name),
    [],
    'every disabled site is caught (a site no test catches goes in catalogue/uncaught-sites.tsv with its reason, after the full audit)',
  );
});

test('the audit can fail: a site claimed only by a test that asserts another clause is reported as not caught', async () => {
  const { audit } = await load();
  const sites = await allSites();
  const site = sites.find((s) => s.clause === 'init.sequence.driver.3')!;
  const other = sites.find((s) => s.clause === 'basic.status.driver.3')!;
  const { baselineFailed, results } = audit([{ ...site, claims: other.claims }]);
  assert.deepEqual(baselineFailed, []);
  assert.equal(results[0].caught, false);
});
