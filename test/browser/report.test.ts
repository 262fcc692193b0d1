// The HTML conformance report in headless Chromium (Debian's chromium, playwright-core, nothing
// downloaded; missing in CI fails, test/prerequisites.ts): the page renders without a console
// error, its numbers are those of `conformance --summary --json` and `conformance --json`, the
// filters work, and a run report's clause links to the clause's entry.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { pathToFileURL, fileURLToPath } from 'node:url';
import { chromium, type Browser } from 'playwright-core';
import { missingPrerequisite } from '../prerequisites.js';
import { Monitor } from '../../src/monitor/monitor.js';
import { RunReportRecorder, runReportJson } from '../../src/monitor/run-report.js';
import type { CoverageSummary } from '../../src/cli/conformance.js';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const bin = join(fileURLToPath(import.meta.url), '../../../src/cli/main.js');

function cli(...args: string[]): string {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

test('in headless Chromium: the HTML conformance report renders with no console error and shows the numbers of conformance --json', async (t) => {
  if (!existsSync(CHROMIUM)) return missingPrerequisite(t, `${CHROMIUM} not found (apt-get install chromium)`);
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-html-'));
  let browser: Browser | undefined;
  try {
    const rec = new RunReportRecorder('monitor', { listen: '/tmp/x.sock' }, 'tolerant');
    const m = new Monitor({ mode: 'tolerant', onVerdict: (v) => rec.record(v, 'front-end') });
    for (let i = 0; i < 3; i++) m.report('split.avail-ring.driver.1', `idx moved by ${i + 70000}`, { ring: 0, position: i });
    const runFile = join(dir, 'run.json');
    writeFileSync(runFile, runReportJson(rec.report()));
    const html = join(dir, 'report.html');
    cli('conformance', '--html', html, '--report', runFile);
    const summary = JSON.parse(cli('conformance', '--summary', '--json')) as CoverageSummary;
    const clauses = JSON.parse(cli('conformance', '--json')) as { id: string; side: string; status: string }[];

    // --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('console', (msg) => msg.type() === 'error' && errors.push(msg.text()));
    // Offline by construction: any request but the file itself is an error.
    page.on('request', (r) => r.url() !== pathToFileURL(html).href && errors.push(`fetched ${r.url()}`));
    await page.goto(pathToFileURL(html).href);

    // The coverage table: every row's counts and ratio, as conformance --summary --json says.
    const rows = await page.$$eval('#summary tbody tr', (trs) =>
      trs.map((tr) => ({
        part: tr.getAttribute('data-part'),
        side: tr.getAttribute('data-side'),
        cells: Object.fromEntries([...tr.querySelectorAll('td[data-status],td[data-k]')].map((td) => [td.getAttribute('data-status') ?? td.getAttribute('data-k'), td.textContent!.replace(/\u00a0/g, ' ')])),
        goal: tr.querySelector('td.goal')!.textContent,
      })),
    );
    assert.equal(rows.length, summary.rows.length);
    summary.rows.forEach((r, i) => {
      const h = rows[i];
      assert.equal(h.part, r.part);
      assert.equal(h.side, r.side);
      assert.deepEqual(h.cells, {
        enforced: String(r.enforced), tested: String(r.tested), 'not-checkable': String(r.notCheckable), unsupported: String(r.unsupported), open: String(r.open),
        total: String(r.total), checkable: String(r.checkable), ratio: r.ratio === null ? 'n/a' : `${(r.ratio * 100).toFixed(1)} %`,
      }, `${r.part} ${r.side}`);
      assert.equal(h.goal, r.goalMet === null ? (r.side === 'both' && !r.implemented ? 'not implemented' : '') : r.goalMet ? 'met' : 'missed');
    });
    // Every spec clause has its entry with the status conformance --json gives it, and its spec text.
    const entries = await page.$$eval('article.clause', (as) => as.map((a) => ({ id: a.id.slice(2), status: a.getAttribute('data-status'), spec: a.querySelector('blockquote.spec')?.textContent ?? '' })));
    const byId = new Map(entries.map((x) => [x.id, x]));
    for (const c of clauses) {
      assert.equal(byId.get(c.id)?.status, c.status, c.id);
      assert.ok(byId.get(c.id)!.spec.length > 20, `${c.id}: spec text`);
    }
    t.diagnostic(`${entries.length} clause entries, ${rows.length} coverage rows`);

    // The run: its clause with the count, linked to the entry.
    assert.equal(await page.textContent('section.run tr[data-clause="split.avail-ring.driver.1"] td[data-k="count"]'), '3');
    await page.click('section.run tr[data-clause="split.avail-ring.driver.1"] a');
    assert.equal(await page.evaluate(() => (globalThis as unknown as { location: { hash: string } }).location.hash), '#c-split.avail-ring.driver.1');

    // The filters: a search narrows the list; "only clauses with verdicts" leaves the run's clause.
    const shown = () => page.textContent('#shown');
    assert.equal(await shown(), `${entries.length} of ${entries.length} clauses shown`);
    await page.check('#only-hits');
    assert.equal(await shown(), `1 of ${entries.length} clauses shown`);
    assert.ok(await page.isVisible('#c-split\\.avail-ring\\.driver\\.1'));
    await page.uncheck('#only-hits');
    await page.fill('#filters input[type=search]', 'init.sequence.driver.');
    // Shown: exactly the entries whose text holds the words (their ids, or a reason naming them).
    const split = await page.$$eval('article.clause', (as) => as.map((a) => ({ hidden: a.classList.contains('hidden'), has: a.textContent!.toLowerCase().includes('init.sequence.driver.') })));
    assert.ok(split.every((a) => a.hidden !== a.has), 'the search shows the entries that hold the words, and only those');
    const n = split.filter((a) => a.has).length;
    assert.ok(n >= clauses.filter((c) => c.id.startsWith('init.sequence.driver.')).length && n < entries.length);
    assert.equal(await shown(), `${n} of ${entries.length} clauses shown`);
    await page.fill('#filters input[type=search]', '');
    await page.selectOption('#filters select', 'device');
    const visible = await page.$$eval('article.clause:not(.hidden)', (as) => as.map((a) => a.getAttribute('data-side')));
    assert.ok(visible.every((side) => side === 'device'));
    const devices = await page.$$eval('article.clause[data-side="device"]', (as) => as.length);
    assert.ok(devices >= clauses.filter((c) => c.side === 'device').length);
    assert.equal(visible.length, devices, 'every device clause, no driver clause');
    assert.equal(await shown(), `${visible.length} of ${entries.length} clauses shown`);
    assert.deepEqual(errors, [], 'no console error, no request');

    // Without JS: the filter form stays hidden and every entry is shown.
    const plain = await browser.newContext({ javaScriptEnabled: false });
    const noJs = await plain.newPage();
    await noJs.goto(pathToFileURL(html).href);
    assert.equal(await noJs.isVisible('#filters'), false);
    assert.equal(await noJs.$$eval('article.clause', (as) => as.filter((a) => a.getClientRects().length > 0).length), entries.length);
    assert.ok(await noJs.isVisible('#summary'));
    await plain.close();
  } finally {
    await browser?.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
