// The core in a real browser: the bundle (esbuild, browser platform) of test/browser/page.ts runs
// in a headless Chromium page, Debian's chromium driven by playwright-core (the system browser:
// nothing is downloaded). In the page, the project's block driver writes a random pattern to a
// block device on an in-page backing store and reads it back, over the loopback transport, over
// the virtio-mmio register model (versions 2 and 1) and over the virtio-pci register model
// (modern, and the legacy interface of a transitional function). The test asserts, in Node,
// that what was read back is what was written and what the disk holds, with no verdict.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chromium, type Browser } from 'playwright-core';
import { missingPrerequisite } from '../prerequisites.js';
import { bundleForBrowser } from './bundle.js';
import type { Path, RunResult } from './page.js';

/** Debian's package (apt-get install chromium), or where CHROMIUM points. */
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const PATHS: Path[] = ['loopback', 'mmio-v2', 'mmio-v1', 'pci-modern', 'pci-legacy'];

test('in headless Chromium: the block driver writes and reads back through loopback, virtio-mmio and virtio-pci', async (t) => {
  if (!existsSync(CHROMIUM)) return missingPrerequisite(t, `${CHROMIUM} not found (apt-get install chromium)`);
  const code = await bundleForBrowser('dist/test/browser/page.js', 'virtioTsPage');
  let browser: Browser | undefined;
  try {
    // --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.setContent('<!doctype html><title>virtio-ts</title>');
    await page.addScriptTag({ content: code });
    for (const path of PATHS) {
      const r = (await page.evaluate((p) => (globalThis as unknown as { virtioTsPage: { run(p: string): Promise<unknown> } }).virtioTsPage.run(p), path)) as RunResult;
      assert.equal(r.path, path);
      assert.match(r.userAgent, /HeadlessChrome|Chrome/, 'ran in Chromium');
      assert.equal(r.hasProcess, false, 'no Node globals in the page');
      assert.equal(r.written.length, 64 * 512 * 2);
      assert.equal(r.readBack, r.written, `${path}: the driver read back what it wrote`);
      assert.equal(r.onDisk, r.written, `${path}: the in-page disk holds what was written`);
      if (path === 'loopback') assert.equal(r.traps, 0);
      else assert.ok(r.traps > 0, `${path}: the driver went through the registers (${r.traps} traps)`);
      assert.deepEqual(r.verdicts, [], `${path}: no verdict`);
      t.diagnostic(`${path}: ${r.traps} register traps`);
    }
    assert.deepEqual(errors, [], 'no uncaught error in the page');
  } finally {
    await browser?.close();
  }
});
