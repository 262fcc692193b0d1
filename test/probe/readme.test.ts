// The README's probe example is code that runs: it is test/probe/readme-probe.ts, run here
// against a real `virtio-ts serve blk`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from '../vhost-user/hostile-cases.js';
import { probeBlk } from './readme-probe.js';

const root = join(fileURLToPath(import.meta.url), '../../../..');

test("the README's probe example is readme-probe.ts, and it finds serve blk clean", async () => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const m = /<!-- readme:probe [^>]*-->\n```ts\n([\s\S]*?)```\n<!-- \/readme:probe -->/.exec(readme);
  assert.ok(m !== null, 'the README has the probe example between its markers');
  const file = readFileSync(join(root, 'test/probe/readme-probe.ts'), 'utf8');
  assert.equal(m[1], file.slice(file.indexOf('import { runProbe')).replace("from '../../src/node.js';", "from 'virtio-ts/node';"));
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-probe-readme-'));
  const srv = await startServer('blk', dir);
  try {
    assert.equal(await probeBlk(srv.path), true);
  } finally {
    srv.child.kill('SIGKILL');
    await srv.exited;
    rmSync(dir, { recursive: true, force: true });
  }
});
