#!/usr/bin/env node
// Writes src/monitor/catalogue.generated.ts from catalogue/clauses.tsv (the spec's 795
// normative statements, summarised in our own words, with a declared status),
// catalogue/struct.tsv (the project's structural rules) and catalogue/conditions.tsv (the
// scope and conditions of checks), and derives each clause's coverage from the code's syntax
// tree (scripts/check-sites.mjs; comments and labels never count):
//   enforced  = a named check site in src/ reports the id through the monitor (a reporter
//               call with the literal id) AND a negative test claims it (a misbehaviour
//               scenario breaking it, or a literal id in test/negative/**);
//               scripts/mutation-audit.mjs proves that each such site's verdict is asserted,
//               and a site it finds uncaught (catalogue/uncaught-sites.tsv) does not count;
//   tested    = only a test names it (a literal id in test/** or a scenario), and it is not
//               declared not-checkable (a test of the project's own side does not make a
//               clause no peer can observe checkable);
//   otherwise = the declared status (not-checkable / unsupported / open) and its reason.
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join, relative, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GENERATED, SCENARIOS, walk, checkFiles, findSites, findNegativeClaims, literalMentions, knownUncaught } from './check-sites.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

function readTsv(file) {
  const [header, ...lines] = readFileSync(file, 'utf8').split('\n').filter((l) => l.length > 0 && !l.startsWith('#'));
  const cols = header.split('\t');
  return lines.map((l) => Object.fromEntries(l.split('\t').map((v, i) => [cols[i], v])));
}

const { sites, labels } = findSites(checkFiles(root), (f) => relative(root, f));
// A site the full mutation audit found uncaught (catalogue/uncaught-sites.tsv) is listed with
// that reason and does not make its clause enforced.
const uncaught = knownUncaught(root);
const sitesOf = new Map();
for (const s of sites) {
  if (!sitesOf.has(s.clause)) sitesOf.set(s.clause, []);
  const site = { name: s.name, file: s.file, line: s.line };
  if (uncaught.has(s.name)) site.uncaught = uncaught.get(s.name);
  sitesOf.get(s.clause).push(site);
}
const gone = [...uncaught.keys()].filter((name) => !sites.some((s) => s.name === name));
if (gone.length > 0) console.error(`gen-catalogue: catalogue/uncaught-sites.tsv names sites that no longer exist: ${gone.join(', ')}`);
const claims = findNegativeClaims(root);
const testFiles = [...walk(join(root, 'test')), join(root, SCENARIOS)].filter((f) => existsSync(f));
const tests = literalMentions(root, testFiles);
for (const [clause, list] of claims) for (const c of list) if (c.scenario) tests.get(clause)?.add(c.file);
const checks = new Map([...sitesOf].map(([k, v]) => [k, new Set(v.map((x) => x.file))]));
const CONDITION_KINDS = new Set(['off-by-default', 'sync-transport-only', 'not-reached-by-own-drivers', 'scope']);
const conditions = new Map();
const conditionRows = existsSync(join(root, 'catalogue/conditions.tsv')) ? readTsv(join(root, 'catalogue/conditions.tsv')) : [];
for (const r of conditionRows) {
  if (!CONDITION_KINDS.has(r.condition)) {
    console.error(`gen-catalogue: catalogue/conditions.tsv: ${r.clause}: unknown condition "${r.condition}" (one of ${[...CONDITION_KINDS].join(', ')})`);
    process.exit(1);
  }
  if (!sitesOf.has(r.clause)) {
    console.error(`gen-catalogue: catalogue/conditions.tsv: ${r.clause} has no check site`);
    process.exit(1);
  }
  if (!conditions.has(r.clause)) conditions.set(r.clause, []);
  conditions.get(r.clause).push({ kind: r.condition, note: r.note });
}

let specRows;
const own = join(root, 'catalogue/clauses.tsv');
if (existsSync(own)) specRows = readTsv(own);
else {
  // Bootstrap only: before the project's catalogue exists, take ids from the shared spec data.
  specRows = readTsv(join(root, '../shared/spec/normative.tsv')).map((r) => ({ ...r, summary: '', declared: 'open', reason: '' }));
}
const structRows = existsSync(join(root, 'catalogue/struct.tsv')) ? readTsv(join(root, 'catalogue/struct.tsv')) : [];

const known = new Set();
const entries = [];
for (const [rows, spec] of [[specRows, true], [structRows, false]]) {
  for (const r of rows) {
    known.add(r.id);
    const c = [...(checks.get(r.id) ?? [])].sort();
    const t = [...(tests.get(r.id) ?? [])].sort();
    const negatives = [...new Set((claims.get(r.id) ?? []).map((x) => (x.test ? `${x.file} > ${x.test}` : x.file)))].sort();
    let status = r.declared || 'open';
    let reason = r.reason || '';
    // A stale declaration (not-checkable / unsupported for a clause with a check and a negative
    // test) keeps its words in `declared`: test/catalogue.test.ts fails on it.
    if ((sitesOf.get(r.id) ?? []).some((x) => x.uncaught === undefined) && negatives.length > 0) status = 'enforced';
    // A clause declared not-checkable (no peer can observe it: the reason says why) stays so
    // when tests cover the project's own side of it; those tests are listed with it. Only a
    // clause a peer could check and none does yet counts as tested.
    else if (t.length > 0 && r.declared !== 'not-checkable') status = 'tested';
    entries.push({
      id: r.id,
      section: r.section,
      side: r.side,
      level: r.level,
      legacy: r.legacy === 'true',
      summary: r.summary,
      status,
      reason,
      checks: c,
      tests: t,
      spec,
      declared: r.declared || 'open',
      sites: sitesOf.get(r.id) ?? [],
      negatives,
      conditions: conditions.get(r.id) ?? [],
    });
  }
}

const unknown = [...new Set([...checks.keys(), ...tests.keys(), ...claims.keys(), ...labels.map((l) => l.clause)])].filter((id) => !known.has(id));
if (unknown.length > 0) {
  console.error(`gen-catalogue: ids used in code but not in the catalogue: ${unknown.join(', ')}`);
  process.exit(1);
}

const generated =
  `// Generated by scripts/gen-catalogue.mjs from catalogue/*.tsv and the sources. Do not edit.\n` +
    `import type { ClauseEntry } from './catalogue.js';\n\n` +
    `export const CLAUSES: readonly ClauseEntry[] = ${JSON.stringify(entries, null, 0).replace(/\},\{/g, '},\n{')};\n`;
// Written only when it changed, so an incremental build does not recompile what depends on it.
const target = join(root, GENERATED);
if (!existsSync(target) || readFileSync(target, 'utf8') !== generated) writeFileSync(target, generated);
