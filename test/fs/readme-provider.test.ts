// The README's provider example works: looked up, listed, read, and refuses changes (EROFS).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { FuseServer } from '../../src/fs/fuse/server.js';
import { FuseClient } from '../../src/fs/fuse/client.js';
import { Errno, FsError } from '../../src/fs/vfs.js';
import { hello } from './readme-provider.js';

const root = join(fileURLToPath(import.meta.url), '../../../..');

test("the README's provider example is test/fs/readme-provider.ts", () => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const m = /<!-- readme:fs-provider [^>]*-->\n```ts\n([\s\S]*?)```\n<!-- \/readme:fs-provider -->/.exec(readme);
  assert.ok(m !== null, 'the README has the provider example between its markers');
  const file = readFileSync(join(root, 'test/fs/readme-provider.ts'), 'utf8');
  assert.equal(m[1], file.slice(file.indexOf('import {')).replace("from '../../src/index.js';", "from 'virtio-ts';"));
});

test("the README's provider serves: lookup, readdir, read, and EROFS for a change", async () => {
  const server = new FuseServer(hello);
  const c = new FuseClient(async (req, room) => {
    const r = await server.handle(req, room);
    if (r === null) return null;
    const out = new Uint8Array(r.length);
    out.set(r.head);
    if (r.data) out.set(r.data, r.head.length);
    return out;
  });
  await c.init();
  assert.deepEqual((await c.list(1, true)).map((e) => e.name), ['.', '..', 'hello.txt']);
  const f = await c.lookup(1, 'hello.txt');
  const fh = await c.open(f.nodeid, 0);
  assert.equal(new TextDecoder().decode(await c.read(f.nodeid, fh, 0, 4096)), 'hello from JavaScript\n');
  await assert.rejects(c.mkdir(1, 'd'), (e: unknown) => e instanceof FsError && e.errno === Errno.EROFS);
  await assert.rejects(c.lookup(1, 'nope'), (e: unknown) => e instanceof FsError && e.errno === Errno.ENOENT);
});
