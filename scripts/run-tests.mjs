#!/usr/bin/env node
// Runs every compiled test file (dist/test/**/*.test.js) with node's test runner. First it
// prepares the real-guest layer where it can (scripts/prepare-guest.mjs: the guest kernel and
// initramfs when QEMU is here) and says what it could not, again after the run.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { prepareGuest, reportGuest } from './prepare-guest.mjs';

function walk(dir) {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? walk(p) : p.endsWith('.test.js') ? [p] : [];
  });
}
// `--no-guest` (or VIRTIO_TS_TESTS=no-guest): everything but the real-guest layer
// (dist/test/guest, and the real-guest files of other folders: dist/test/*/guest.test.js), e.g.
// for scripts/stress-tests.mjs.
const argv = process.argv.slice(2);
const noGuest = argv.includes('--no-guest') || process.env.VIRTIO_TS_TESTS === 'no-guest';
const passThrough = argv.filter((a) => a !== '--no-guest');
const guestDir = join('dist', 'test', 'guest');
const files = walk('dist/test')
  .filter((f) => !noGuest || !(f.startsWith(guestDir + '/') || f.endsWith('/guest.test.js')))
  .sort();
if (files.length === 0) {
  console.error('no test files found under dist/test');
  process.exit(1);
}
const notes = noGuest ? [] : prepareGuest();
reportGuest(notes);
// A test that hangs (a watch left open, a guest that never ends) fails after 5 minutes instead
// of holding CI until its limit.
const args = ['--test', '--test-timeout=300000', ...passThrough, ...files];
const r = spawnSync(process.execPath, args, { stdio: 'inherit' });
// Repeated below the runner's summary where a person reads it (not in CI, whose log is read
// from the runner's closing lines; there a missing prerequisite fails its tests anyway).
if (process.env.CI !== 'true') reportGuest(notes);
process.exit(r.status ?? 1);
