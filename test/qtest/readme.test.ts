// The README's qtest example is code that runs: taken from between its markers, pointed at this
// checkout's build instead of the package name, and run as a user would run it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { needQemu } from './harness.js';

const root = join(fileURLToPath(import.meta.url), '../../../..');

test("the README's qtest example reads entropy from QEMU's virtio-rng", (t) => {
  if (!needQemu(t)) return;
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const m = /<!-- readme:qtest -->\n```ts\n([\s\S]*?)```\n<!-- \/readme:qtest -->/.exec(readme);
  assert.ok(m !== null, 'the README has the qtest example between its markers');
  const code = m[1].replace("from 'virtio-ts/node'", `from ${JSON.stringify(pathToFileURL(join(root, 'dist/src/node.js')).href)}`);
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8', timeout: 60000 });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^Uint8Array\(32\) \[/);
});
