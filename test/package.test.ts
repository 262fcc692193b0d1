// What a user of the package or of a checkout meets: the CLI runs by its own path (npx in a
// checkout), the published files carry a licence, and source maps carry their sources (the
// package ships dist/src, not src/, so a map that only pointed at ../../src would not resolve).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { accessSync, constants, readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

const root = join(fileURLToPath(import.meta.url), '../../..');
const bin = join(root, 'dist/src/cli/main.js');

test('the built CLI keeps its execute bit and runs by its own path', () => {
  accessSync(bin, constants.X_OK);
  const r = spawnSync(bin, ['conformance', '--part', 'entropy'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /entropy/);
});

test('the published files include a LICENSE that matches package.json', () => {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  assert.ok(pkg.files.includes('LICENSE'));
  assert.match(readFileSync(join(root, 'LICENSE'), 'utf8'), new RegExp(`^${pkg.license} License`));
});

test('every source map under dist/src carries the source it maps', () => {
  const maps = readdirSync(join(root, 'dist/src'), { recursive: true, encoding: 'utf8' }).filter((n) => n.endsWith('.js.map'));
  assert.ok(maps.length > 20, `found ${maps.length} maps`);
  for (const m of maps) {
    const map = JSON.parse(readFileSync(join(root, 'dist/src', m), 'utf8'));
    assert.equal(map.sources.length, map.sourcesContent?.length, m);
    assert.ok(map.sourcesContent.every((s: unknown) => typeof s === 'string' && s.length > 0), m);
  }
});
