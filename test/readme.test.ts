// The README's examples are code that runs: the user-written device it shows is, line for line,
// test/guest/map-disk.ts, which custom-device.test.ts serves to a real QEMU and Linux guest.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

const root = join(fileURLToPath(import.meta.url), '../../..');

test('the README\'s served Map disk is the code the real-guest test runs', () => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const m = /<!-- readme:map-disk [^>]*-->\n```ts\n([\s\S]*?)```\n<!-- \/readme:map-disk -->/.exec(readme);
  assert.ok(m !== null, 'the README has the map-disk example between its markers');
  const file = readFileSync(join(root, 'test/guest/map-disk.ts'), 'utf8');
  const tested = file.slice(file.indexOf('import { BlkDevice')).replace("from '../../src/node.js';", "from 'virtio-ts/node';");
  assert.equal(m[1], tested);
  assert.match(m[1], /serveVhostUser\(new BlkDevice\(\{ storage: disk \}\), \{ socket: socketPath \}\)/);
});

test("the README's front-end example is the code the front-end tests run", () => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const m = /<!-- readme:front-end [^>]*-->\n```ts\n([\s\S]*?)```\n<!-- \/readme:front-end -->/.exec(readme);
  assert.ok(m !== null, 'the README has the front-end example between its markers');
  const file = readFileSync(join(root, 'test/vhost-user/readme-frontend.ts'), 'utf8');
  const tested = file.slice(file.indexOf('import { BlkDriver')).replace("from '../../src/node.js';", "from 'virtio-ts/node';");
  assert.equal(m[1], tested);
  assert.match(m[1], /VhostUserFrontEnd\.connect\(\{ socketPath, deviceId: DeviceId\.BLOCK \}\)/);
});
