// The fuzz targets in CI (fuzz/*.fuzz.ts): every input kept in fuzz/regressions/<target>/ (a
// crasher found earlier, fixed since) and fuzz/seeds/<target>/ is replayed through the target,
// then each target runs under Jazzer.js (libFuzzer, coverage-guided) for a fixed number of
// inputs from a fixed seed. A crash fails the test; libFuzzer saves the input in
// fuzz/regressions/<target>/, where the replay turns it into a regression test once committed.
// `npm run fuzz -- --target T --minutes N` runs one target longer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const root = resolve('.');
const TARGETS = ['vhost-user-decoder', 'split-chain', 'packed-chain', 'blk-request', 'inflight', 'fuse-request'];
/** Inputs per target in CI: a few seconds each on a loaded 2-core machine. */
const RUNS = Number(process.env.FUZZ_RUNS ?? 10000);
const SEED = 20261206;

test('fuzz: every target is built and the runner lists exactly these', async () => {
  const listed = await runner(['--list']);
  assert.equal(listed.code, 0, listed.stderr);
  assert.deepEqual(listed.stdout.trim().split('\n').sort(), [...TARGETS].sort());
});

test('fuzz: the runner refuses bad usage with exit 2 and names the targets', async () => {
  for (const args of [['--target', 'nope', '--runs', '1'], ['--target', 'inflight'], ['--target', 'inflight', '--minutes', 'x'], ['--bogus']]) {
    const r = await runner(args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /targets: .*split-chain/);
  }
});

for (const target of TARGETS) {
  test(`fuzz ${target}: kept inputs replay without a finding`, async (t) => {
    const mod = (await import(pathToFileURL(join(root, 'dist', 'fuzz', `${target}.fuzz.js`)).href)) as { fuzz(data: Uint8Array): void };
    let replayed = 0;
    for (const dir of [join(root, 'fuzz', 'regressions', target), join(root, 'fuzz', 'seeds', target)]) {
      if (!existsSync(dir)) continue;
      for (const name of readdirSync(dir).sort()) {
        if (name.startsWith('.')) continue;
        assert.doesNotThrow(() => mod.fuzz(new Uint8Array(readFileSync(join(dir, name)))), `${target}: ${join(dir, name)}`);
        replayed++;
      }
    }
    // The empty input too: every target must take it.
    mod.fuzz(new Uint8Array(0));
    t.diagnostic(`${replayed} kept inputs replayed`);
  });

  test(`fuzz ${target}: ${RUNS} inputs under Jazzer.js from seed ${SEED} find nothing`, async () => {
    const corpus = mkdtempSync(join(tmpdir(), `virtio-ts-fuzz-${target}-`));
    try {
      const r = await runner(['--target', target, '--runs', String(RUNS), '--seed', String(SEED), '--corpus', corpus]);
      const summary = JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}') as { runs?: number; execPerSec?: number };
      assert.equal(r.code, 0, `${target} found something (input saved under fuzz/regressions/${target}/):\n${r.stderr.slice(-6000)}`);
      assert.ok((summary.runs ?? 0) >= RUNS, `${target} ran ${summary.runs} of ${RUNS} inputs`);
    } finally {
      rmSync(corpus, { recursive: true, force: true });
    }
  });
}

/** Runs scripts/fuzz/run.mjs; resolves when it exits (its own bound is the input count). */
function runner(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, [join(root, 'scripts', 'fuzz', 'run.mjs'), ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    child.on('error', rej);
    child.on('close', (code) => res({ code, stdout, stderr }));
  });
}
