// The mutation audit of "enforced" on a sample (scripts/mutation-audit.mjs; the whole set:
// npm run audit:mutation): with one check site disabled in a copy of the compiled code, the
// negative test that claims its clause must fail. The sample has a site of every seed clause
// plus 8 drawn with a fixed seed, so the run is the same each time.
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
  audit(sites: Site[]): { baselineFailed: Claim[]; results: { site: Site; caught: boolean }[] };
}
const load = () => import(pathToFileURL(join(root, 'scripts/mutation-audit.mjs')).href) as Promise<Audit>;

test('sampled check sites: disabling each one makes the negative test that claims it fail (unless catalogue/uncaught-sites.tsv lists it)', async () => {
  const { SEED, enforcedSites, sample, audit, knownUncaught } = await load();
  const known = knownUncaught(root);
  const sites = sample(enforcedSites(root), 8, 17);
  for (const clause of SEED) assert.ok(sites.some((s) => s.clause === clause), `the sample holds a site of seed clause ${clause}`);
  const { baselineFailed, results } = audit(sites);
  assert.deepEqual(baselineFailed, [], 'the claiming tests pass on the unmutated code');
  assert.equal(results.length, sites.length);
  // A listed site must still be uncaught (else the list is stale and the catalogue undercounts).
  assert.deepEqual(
    results.filter((r) => r.caught === known.has(r.site.name)).map((r) => r.site.name),
    [],
    'every disabled site is caught, but those catalogue/uncaught-sites.tsv lists',
  );
});

test('the audit can fail: a site claimed only by a test that asserts another clause is reported as not caught', async () => {
  const { enforcedSites, audit } = await load();
  const sites = enforcedSites(root);
  const site = sites.find((s) => s.clause === 'init.sequence.driver.3')!;
  const other = sites.find((s) => s.clause === 'basic.status.driver.3')!;
  const { baselineFailed, results } = audit([{ ...site, claims: other.claims }]);
  assert.deepEqual(baselineFailed, []);
  assert.equal(results[0].caught, false);
});
