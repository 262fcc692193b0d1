#!/usr/bin/env node
// Proves the non-guest test layer does not depend on timing: runs it several times in a row
// (default 5) beside CPU-bound processes (default 2: on a 2-core machine every core is then
// contended), and reports pass/fail per run. Exit 0 only when every run passed.
//
//   npm run test:stress                       build, then 5 runs beside 2 CPU burners
//   node scripts/stress-tests.mjs --runs 3 --burners 4
//
// Each run's full output goes to a log file (its path is printed). The burners are this
// script's own children and are ended when it ends, however it ends.
import { spawn } from 'node:child_process';
import { createWriteStream, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

let opts;
try {
  opts = parseArgs({ options: { runs: { type: 'string', default: '5' }, burners: { type: 'string', default: '2' } }, strict: true }).values;
} catch (err) {
  console.error(`${err.message}\nusage: node scripts/stress-tests.mjs [--runs N] [--burners N]`);
  process.exit(2);
}
const runs = Number(opts.runs);
const burnerCount = Number(opts.burners);
if (!Number.isInteger(runs) || runs < 1 || !Number.isInteger(burnerCount) || burnerCount < 0) {
  console.error('--runs must be a positive integer and --burners a non-negative integer');
  process.exit(2);
}

// CPU-bound processes: a busy loop each, nothing else.
const burners = [];
for (let i = 0; i < burnerCount; i++) burners.push(spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }));
const stopBurners = () => {
  for (const b of burners) if (b.exitCode === null && b.signalCode === null) b.kill('SIGKILL');
};
process.on('exit', stopBurners);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    stopBurners();
    process.exit(130);
  });
}

const logs = mkdtempSync(join(tmpdir(), 'virtio-ts-stress-'));
console.log(`non-guest tests, ${runs} runs in a row beside ${burnerCount} CPU-bound processes (logs in ${logs})`);
const results = [];
for (let i = 1; i <= runs; i++) {
  const log = join(logs, `run-${i}.log`);
  const started = Date.now();
  const { code, summary } = await runOnce(log);
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  const ok = code === 0;
  results.push(ok);
  console.log(`run ${i}: ${ok ? 'PASS' : 'FAIL'} (${summary}, ${seconds} s, exit ${code})${ok ? '' : ` see ${log}`}`);
}
stopBurners();
const passed = results.filter(Boolean).length;
console.log(`stress: ${passed} passed, ${runs - passed} failed`);
process.exit(passed === runs ? 0 : 1);

/** One run of scripts/run-tests.mjs --no-guest (TAP output to `log`); resolves with its exit code and counts. */
function runOnce(log) {
  return new Promise((resolve, reject) => {
    const out = createWriteStream(log);
    const child = spawn(process.execPath, ['scripts/run-tests.mjs', '--no-guest', '--test-reporter=tap'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let tail = '';
    const keep = (chunk) => {
      out.write(chunk);
      tail = (tail + chunk.toString()).slice(-4000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.on('error', reject);
    child.on('close', (code) => {
      out.end();
      const count = (name) => tail.match(new RegExp(`^# ${name} (\\d+)$`, 'm'))?.[1] ?? '?';
      resolve({ code, summary: `${count('tests')} tests: ${count('pass')} pass, ${count('fail')} fail, ${count('skipped')} skipped` });
    });
  });
}
