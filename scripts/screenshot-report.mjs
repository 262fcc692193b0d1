#!/usr/bin/env node
// Renders the HTML conformance report (`virtio-ts conformance --html`) in headless Chromium and
// writes docs/conformance-report.png, the screenshot the README shows. Debian's chromium driven
// by playwright-core, as test/browser does: nothing is downloaded.
//
//   npm run build && node scripts/screenshot-report.mjs [--report RUN.json ...] [--out FILE]
//   CHROMIUM=/path/to/chrome overrides /usr/bin/chromium.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({ options: { report: { type: 'string', multiple: true }, out: { type: 'string', default: join(root, 'docs', 'conformance-report.png') } } });
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
if (!existsSync(CHROMIUM)) {
  console.error(`screenshot-report: ${CHROMIUM} not found (apt-get install chromium, or set CHROMIUM)`);
  process.exit(3);
}
const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-report-'));
try {
  const html = join(dir, 'report.html');
  const args = [join(root, 'dist', 'src', 'cli', 'main.js'), 'conformance', '--html', html, ...(values.report ?? []).flatMap((r) => ['--report', r])];
  const r = spawnSync(process.execPath, args, { encoding: 'utf8' });
  if (r.status !== 0) {
    console.error(`screenshot-report: conformance --html failed (exit ${r.status}): ${r.stderr}`);
    process.exit(1);
  }
  // --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 }, deviceScaleFactor: 1 });
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
    await page.goto(pathToFileURL(html).href);
    if (errors.length > 0) throw new Error(`the page logged errors: ${errors.join('; ')}`);
    // The top of the page: the coverage table with its bars, then the first clauses.
    await page.screenshot({ path: values.out, fullPage: false });
    console.log(`wrote ${values.out}`);
  } finally {
    await browser.close();
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
