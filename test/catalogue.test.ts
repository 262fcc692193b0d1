// The catalogue is honest: derived statuses match the code, and this parts are classified.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { allClauses, clauseInfo, partOf } from '../src/monitor/catalogue.js';
import { SCENARIOS } from '../src/testing/scenarios.js';

test('every scenario breaks a catalogued clause, and that clause is enforced', () => {
  for (const s of SCENARIOS) {
    const c = clauseInfo(s.clause);
    assert.ok(c, s.clause);
    assert.equal(c.status, 'enforced', `${s.clause} has a scenario and a runtime check`);
    assert.ok(c.checks.length > 0, `${s.clause}: runtime check in ${c.checks.join(', ')}`);
  }
});

test('every enforced clause has a runtime check in src/ and a negative test', () => {
  for (const c of allClauses().filter((x) => x.status === 'enforced')) {
    assert.ok(c.checks.some((f) => f.startsWith('src/')), `${c.id} checks`);
    assert.ok(
      c.tests.some((f) => f.startsWith('test/negative/') || f === 'src/testing/scenarios.ts'),
      `${c.id} negative test`,
    );
  }
});

test('basic, init, split, packed and entropy: no clause left open; legacy rows unsupported', () => {
  for (const c of allClauses().filter((x) => x.spec && ['basic', 'init', 'split', 'packed', 'entropy'].includes(partOf(x.id)))) {
    assert.notEqual(c.status, 'open', `${c.id} is classified`);
    if (c.legacy) assert.equal(c.status, 'unsupported', c.id);
  }
});

test('the catalogue keeps the spec ids and adds only struct.* rules', () => {
  const spec = allClauses().filter((c) => c.spec);
  assert.equal(spec.length, 795);
  assert.equal(new Set(spec.map((c) => c.id)).size, 795);
  for (const c of allClauses().filter((x) => !x.spec)) assert.match(c.id, /^struct\./);
  for (const c of allClauses()) assert.ok(c.summary.length > 10, `${c.id} has a summary`);
});
