// The core runs in a browser: bundle the package entry for the browser platform (a Node
// import would fail to resolve) and run an entropy pair in a context with only the globals
// a browser has (no process, no require, no Buffer).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import vm from 'node:vm';
import { bundleForBrowser } from './browser/bundle.js';

test('the package entry bundles for the browser and runs an entropy pair without Node globals', async () => {
  const code = await bundleForBrowser('dist/src/index.js', 'virtioTs');
  const context = vm.createContext({ crypto: globalThis.crypto, setTimeout, clearTimeout, queueMicrotask, console, performance });
  vm.runInContext(code, context);
  assert.equal(vm.runInContext('typeof process + typeof require + typeof Buffer', context), 'undefinedundefinedundefined');
  const run = vm.runInContext(
    `(async () => {
      const { GuestMemory, Monitor, RngDevice, RngDriver, LoopbackTransport } = virtioTs;
      const mem = GuestMemory.create(1 << 20, { shared: false });
      const devMon = new Monitor(), drvMon = new Monitor();
      const t = new LoopbackTransport(new RngDevice({ monitor: devMon }), mem, { mode: 'async' });
      const d = new RngDriver(t, { monitor: drvMon });
      await d.start();
      const bytes = await d.read(1000);
      return { n: bytes.length, distinct: new Set(bytes).size, verdicts: devMon.verdicts.length + drvMon.verdicts.length };
    })()`,
    context,
  ) as Promise<{ n: number; distinct: number; verdicts: number }>;
  const out = await run;
  assert.equal(out.n, 1000);
  assert.ok(out.distinct > 100, 'random bytes from crypto.getRandomValues');
  assert.equal(out.verdicts, 0);
});
