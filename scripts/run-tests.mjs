#!/usr/bin/env node
// Runs every compiled test file (dist/test/**/*.test.js) with node's test runner.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

function walk(dir) {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? walk(p) : p.endsWith('.test.js') ? [p] : [];
  });
}
// `--no-guest` (or VIRTIO_TS_TESTS=no-guest): everything but the real-guest layer
// (dist/test/guest), e.g. for scripts/stress-tests.mjs.
const argv = process.argv.slice(2);
const noGuest = argv.includes('--no-guest') || process.env.VIRTIO_TS_TESTS === 'no-guest';
const passThrough = argv.filter((a) => a !== '--no-guest');
const guestDir = join('dist', 'test', 'guest');
const files = walk('dist/test')
  .filter((f) => !noGuest || !f.startsWith(guestDir + '/'))
  .sort();
if (files.length === 0) {
  console.error('no test files found under dist/test');
  process.exit(1);
}
// A test that hangs (a watch left open, a guest that never ends) fails after 5 minutes instead
// of holding CI until its limit.
const args = ['--test', '--test-timeout=300000', ...passThrough, ...files];
const r = spawnSync(process.execPath, args, { stdio: 'inherit' });
process.exit(r.status ?? 1);
