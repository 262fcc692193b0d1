// Every misbehaving-peer scenario: the observing side's monitor must name exactly the clause
// the culprit broke, nothing may be said against the (correct) observing side, and strict
// mode must act on violations (device: DEVICE_NEEDS_RESET; driver: give up).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SCENARIOS } from '../../src/testing/scenarios.js';
import { clauseInfo } from '../../src/monitor/catalogue.js';
import { Status } from '../../src/spec/constants.js';

for (const s of SCENARIOS) {
  test(`${s.clause}: ${s.title}`, async () => {
    const info = clauseInfo(s.clause);
    assert.ok(info, `${s.clause} is in the catalogue`);
    assert.equal(info.side, s.culprit, 'the culprit is the side the clause binds');

    const strict = await s.run('strict');
    const clauses = strict.verdicts.map((v) => v.clause);
    assert.ok(clauses.includes(s.clause), `expected a verdict naming ${s.clause}, got [${clauses.join(', ')}]`);
    for (const v of strict.verdicts) assert.equal(v.side, s.culprit, `verdict ${v.clause} blames the ${v.side}, not the culprit`);
    const blamed = strict.againstObserver.map((v) => v.clause).filter((c) => !(s.echoes ?? []).includes(c));
    assert.deepEqual(blamed, [], 'the well-behaved side was blamed');
    const verdict = strict.verdicts.find((v) => v.clause === s.clause)!;
    const mustLevel = info.level === 'MUST' || info.level === 'MUST NOT';
    assert.equal(verdict.severity, mustLevel ? 'violation' : 'warning');
    if (s.recordOnly !== undefined) {
      assert.equal(strict.driverState, 'live', `recorded only (${s.recordOnly})`);
    } else if (mustLevel) {
      if (s.culprit === 'driver') {
        assert.ok(strict.deviceStatus & Status.DEVICE_NEEDS_RESET, `strict device enters DEVICE_NEEDS_RESET (status ${strict.deviceStatus})`);
      } else {
        assert.ok(['broken', 'failed'].includes(strict.driverState), `strict driver gives up (state ${strict.driverState})`);
      }
    }

    for (const covered of s.covers ?? []) {
      assert.equal(verdict.context?.permits, covered, `the verdict says which permission (${covered}) the device refused`);
    }

    const tolerant = await s.run('tolerant');
    assert.ok(tolerant.verdicts.some((v) => v.clause === s.clause), 'tolerant mode records the verdict too');
  });
}
