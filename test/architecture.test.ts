// The folders of src/ are layers: a module imports only from layers below its own (or from its
// own folder). This test reads the import graph with TypeScript's own pre-processor (every
// static import, `export ... from` and dynamic import()) and names each import that runs the
// wrong way, so the layout keeps showing the architecture as the code grows.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join, posix } from 'node:path';
import ts from 'typescript';

const root = join(fileURLToPath(import.meta.url), '../../..');

/**
 * Lowest first. Each entry is one rank; the units of a rank (a folder, or a file) are
 * independent of each other: neither imports the other. `*` stands for one folder name, each
 * its own unit (devices/blk and devices/console are separate units of one rank).
 */
export const LAYERS: readonly (readonly string[])[] = [
  ['src/errors.ts'], // the base error class every layer's error extends
  ['src/spec/', 'src/native/'], // numbers, layouts and wire formats; the Node addon wrapper
  ['src/memory/'],
  ['src/monitor/'],
  ['src/virtqueue/'], // format-neutral queue types, chains and cursors
  ['src/virtqueue/split/', 'src/virtqueue/packed/'],
  ['src/virtqueue/create.ts'], // the one place above both ring formats
  ['src/device/', 'src/driver/', 'src/vsock/'], // vsock/: the connection engine the vsock device and driver share
  // Frame ports, the switch and offload completion (issue 15): below the net device and driver,
  // which both are frame ports and complete offloads for a peer that cannot take them.
  // src/fs/: the FUSE server, the provider interface and the in-memory file system (issue 16),
  // under the virtio-fs device that carries FUSE requests; browser-safe.
  ['src/net/', 'src/fs/'],
  ['src/devices/*/', 'src/drivers/'],
  ['src/transports/loopback/', 'src/transports/vhost-user/', 'src/transports/mmio/', 'src/transports/pci/'],
  ['src/transports/vhost-user/frontend/'], // the VMM side of vhost-user, over the back-end's codec
  ['src/node/'],
  ['src/probe/'], // virtio-ts probe: drives and judges a vhost-user back-end
  ['src/proxy/'], // virtio-ts monitor: the vhost-user proxy that judges both sides
  ['src/testing/'],
  ['src/cli/'],
  // Entry points: nothing below imports them; the Node entry re-exports the browser-safe one.
  ['src/index.ts', 'src/testing.ts'],
  ['src/node.ts'],
];

interface Unit {
  rank: number;
  unit: string;
}

/** The layer of a source file (longest matching prefix), or null when none matches. */
export function unitOf(file: string): Unit | null {
  let best: Unit | null = null;
  for (let rank = 0; rank < LAYERS.length; rank++) {
    for (const pattern of LAYERS[rank]) {
      let prefix = pattern;
      const star = pattern.indexOf('*');
      if (star >= 0) {
        // `*` is one folder name: the unit is the folder this file is in.
        const slash = file.indexOf('/', star);
        if (!file.startsWith(pattern.slice(0, star)) || slash < 0) continue;
        prefix = file.slice(0, slash + 1);
      }
      const matches = pattern.endsWith('/') ? file.startsWith(prefix) : file === prefix;
      if (matches && (best === null || prefix.length > best.unit.length)) best = { rank, unit: prefix };
    }
  }
  return best;
}

function sources(dir: string): string[] {
  return readdirSync(join(root, dir)).flatMap((name) => {
    const path = posix.join(dir, name);
    return statSync(join(root, path)).isDirectory() ? sources(path) : path.endsWith('.ts') && !path.endsWith('.d.ts') ? [path] : [];
  });
}

/** Every relative import of every src/ file, resolved to the .ts file it names. */
function importGraph(): { from: string; to: string }[] {
  const edges: { from: string; to: string }[] = [];
  for (const file of sources('src')) {
    const info = ts.preProcessFile(readFileSync(join(root, file), 'utf8'), true, true);
    for (const ref of info.importedFiles) {
      if (!ref.fileName.startsWith('.')) continue;
      const to = posix.normalize(posix.join(posix.dirname(file), ref.fileName)).replace(/\.js$/, '.ts');
      edges.push({ from: file, to });
    }
  }
  return edges;
}

test('every src/ module belongs to a layer', () => {
  const stray = sources('src').filter((f) => unitOf(f) === null);
  assert.deepEqual(stray, [], 'files outside every layer: add them to a layer folder (or to LAYERS)');
  assert.ok(sources('src').length > 40, 'the walk found the sources');
});

test('imports run only downwards: a module imports its own folder or layers below it', () => {
  const edges = importGraph();
  assert.ok(edges.length > 100, 'the import graph was read');
  const wrong: string[] = [];
  for (const { from, to } of edges) {
    const a = unitOf(from);
    const b = unitOf(to);
    assert.ok(a !== null && b !== null, `${from} -> ${to}`);
    if (a.unit === b.unit) continue;
    if (b.rank < a.rank) continue;
    wrong.push(`${from} -> ${to} (${a.unit} is not above ${b.unit})`);
  }
  assert.deepEqual(wrong, []);
});

test('the layer rule catches an upward, a sideways and an entry-point import', () => {
  // The rule itself can fail: these edges break it.
  const judge = (from: string, to: string): boolean => {
    const a = unitOf(from)!;
    const b = unitOf(to)!;
    return a.unit === b.unit || b.rank < a.rank;
  };
  assert.equal(judge('src/device/device.ts', 'src/testing/scenarios.ts'), false, 'core importing test peers');
  assert.equal(judge('src/drivers/blk.ts', 'src/devices/blk/device.ts'), false, 'a driver importing a device');
  assert.equal(judge('src/devices/blk/device.ts', 'src/devices/console/device.ts'), false, 'one device type importing another');
  assert.equal(judge('src/virtqueue/split/device.ts', 'src/virtqueue/packed/device.ts'), false, 'one ring format importing the other');
  assert.equal(judge('src/virtqueue/queue.ts', 'src/virtqueue/split/device.ts'), false, 'the neutral types importing a format');
  assert.equal(judge('src/cli/serve.ts', 'src/node.ts'), false, 'a module importing an entry point');
  assert.equal(judge('src/drivers/blk.ts', 'src/spec/blk.ts'), true);
  assert.equal(judge('src/virtqueue/create.ts', 'src/virtqueue/packed/driver.ts'), true);
  assert.equal(judge('src/devices/blk/device.ts', 'src/devices/blk/storage.ts'), true);
});

test('the browser-safe layers import no Node module', () => {
  const nodeOnly = ['src/native/', 'src/transports/vhost-user/', 'src/node/', 'src/probe/', 'src/proxy/', 'src/cli/', 'src/node.ts'];
  const wrong: string[] = [];
  for (const file of sources('src')) {
    if (nodeOnly.some((p) => file.startsWith(p))) continue;
    const info = ts.preProcessFile(readFileSync(join(root, file), 'utf8'), true, true);
    for (const ref of info.importedFiles) {
      const target = ref.fileName.startsWith('.') ? posix.normalize(posix.join(posix.dirname(file), ref.fileName)) : ref.fileName;
      if (ref.fileName.startsWith('node:') || nodeOnly.some((p) => target.startsWith(p))) wrong.push(`${file} -> ${ref.fileName}`);
    }
  }
  assert.deepEqual(wrong, []);
});
