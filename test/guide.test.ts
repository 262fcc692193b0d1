// docs/write-your-own-device.md cannot rot: each of its ```ts blocks is a file of test/guide/
// (named by the block's first line, "// name.ts"), the same text except the import specifier
// (the guide imports 'virtio-ts', the file '../../src/index.js'); the files are compiled with
// the project (type-checked, strict) and run here, with the results the guide promises.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { GuestMemory, LoopbackTransport, Monitor, RngDriver, VirtioDevice } from '../src/index.js';
import { CounterEntropy } from './guide/counter-entropy.js';
import { runCounter } from './guide/run-counter.js';
import { runMapDisk } from './guide/map-disk.js';

const root = join(fileURLToPath(import.meta.url), '../../..');
const GUIDE = 'docs/write-your-own-device.md';

function blocks(markdown: string): string[] {
  return [...markdown.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1]);
}

test('the guide\'s code blocks are the files of test/guide, verbatim but for the import specifier', () => {
  const guide = blocks(readFileSync(join(root, GUIDE), 'utf8'));
  const files = readdirSync(join(root, 'test/guide')).filter((f) => f.endsWith('.ts'));
  assert.ok(guide.length >= 3, 'the guide has its code blocks');
  const named = new Map<string, string>();
  for (const block of guide) {
    const name = /^\/\/ ([\w-]+\.ts)\n/.exec(block)?.[1];
    assert.ok(name !== undefined, `a code block of the guide starts with "// <file>.ts":\n${block.slice(0, 80)}`);
    assert.ok(!named.has(name), `${name} appears once in the guide`);
    named.set(name, block);
  }
  assert.deepEqual([...named.keys()].sort(), [...files].sort(), 'every block is a file of test/guide, every file a block');
  for (const [name, block] of named) {
    const source = readFileSync(join(root, 'test/guide', name), 'utf8').replaceAll("'../../src/index.js'", "'virtio-ts'");
    assert.equal(block, source, `${GUIDE}: the block ${name} differs from test/guide/${name}`);
  }
});

test('guide: the counter entropy device serves the project\'s entropy driver over loopback', async () => {
  const r = await runCounter();
  assert.deepEqual([...r.bytes], [0, 1, 2, 3, 4, 5, 6, 7]);
  assert.equal(r.counted, 8);
  assert.equal(r.after, 0, 'the driver\'s reset started the count again');
  assert.deepEqual(r.verdicts, []);
});

test('guide: a device-readable buffer in the counter device\'s queue is named, as the guide says (entropy.device-operation.driver.1)', async () => {
  const device = new VirtioDevice(new CounterEntropy(), { monitor: new Monitor({ mode: 'tolerant' }) });
  const driver = new RngDriver(new LoopbackTransport(device, GuestMemory.create(1 << 20)));
  await driver.start();
  const q = driver.queues[0];
  const addr = driver.allocator.alloc(16, 8);
  q.begin().addReadable(addr, 8).addWritable(addr + 8, 8).commit({ addr, len: 16, resolve: () => undefined, reject: () => undefined });
  driver.kick(q);
  assert.deepEqual(device.monitor.verdicts.map((v) => v.clause), ['entropy.device-operation.driver.1']);
  assert.equal(device.type.next, 8, 'tolerant: the writable part was served');
});

test('guide: a block device over a Map of sectors', async () => {
  const r = await runMapDisk();
  assert.deepEqual([...r.back], [...new Uint8Array(1024).fill(7), ...new Uint8Array(512)]);
  assert.deepEqual(r.stored, [8, 9], 'only the sectors written are stored');
  assert.equal(r.capacity, 2048);
  assert.equal(r.id, 'map-disk');
});
