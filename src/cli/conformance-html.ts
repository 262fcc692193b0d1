/**
 * The HTML form of `virtio-ts conformance --html FILE`: one self-contained file (inline CSS, a
 * little inline JS for filters; everything reads the same without it, and nothing is fetched),
 * per part and side with coverage bars and the enforced-of-checkable metric, and for every
 * clause its spec text, status, reason, conditions, check sites (file:line) and the negative
 * tests that claim it. Run reports (`--report`) come first: a run's verdicts grouped by clause,
 * linked to the clause's entry.
 *
 * The spec text is the statement as VIRTIO 1.4 cs01 words it (catalogue/spec-text.tsv,
 * © OASIS Open, quoted under the spec's notice, which the page carries); each clause links to
 * the spec document and to its section in the spec's LaTeX at the tag v1.4-cs01.
 */
import type { ClauseEntry, CoverageStatus } from '../monitor/catalogue.js';
import type { RunReport, RunReportOccurrence } from '../monitor/run-report.js';
import type { ProbeReport } from '../probe/report.js';
import type { CoverageRow, CoverageSummary, LoadedRun } from './conformance.js';

/** A normative statement as the spec words it, and where its section is in the LaTeX. */
export interface SpecText {
  text: string;
  /** `content.tex:60`: file and line of the section in the spec's LaTeX sources (v1.4-cs01). */
  source: string;
}

/** What the report is made of. */
export interface ConformanceHtmlInput {
  clauses: readonly ClauseEntry[];
  summary: CoverageSummary;
  specText: ReadonlyMap<string, SpecText>;
  runs: readonly LoadedRun[];
  version: string;
  /** ISO time, for the header. */
  generated: string;
  /** The spec's parts in report order. */
  parts: readonly string[];
}

/** The spec document and its LaTeX sources at the tag the catalogue was taken from. */
export const SPEC_HTML = 'https://docs.oasis-open.org/virtio/virtio/v1.4/cs01/virtio-v1.4-cs01.html';
export const SPEC_LATEX = 'https://github.com/oasis-tcs/virtio-spec/blob/v1.4-cs01/';

const PART_TITLES: Record<string, string> = {
  basic: 'Basic Facilities of a Virtio Device',
  init: 'General Initialization and Device Operation',
  split: 'Split Virtqueues',
  packed: 'Packed Virtqueues',
  reserved: 'Reserved Feature Bits',
  pci: 'Virtio Over PCI Bus',
  mmio: 'Virtio Over MMIO',
  blk: 'Block Device',
  console: 'Console Device',
  entropy: 'Entropy Device',
  net: 'Network Device',
  vsock: 'Socket Device',
  fs: 'File System Device',
  struct: 'Structural rules of virtio-ts (not spec clauses)',
};
const STATUSES: CoverageStatus[] = ['enforced', 'tested', 'not-checkable', 'unsupported', 'open'];
const STATUS_HELP: Record<CoverageStatus, string> = {
  enforced: 'a named check site reports it through the monitor, and a negative test that breaks exactly this clause asserts the verdict (proved by the mutation audit)',
  tested: 'a test shows our side does it; no runtime check of a peer',
  'not-checkable': 'the other side cannot observe it (the reason says why)',
  unsupported: 'the feature is not built',
  open: 'not covered yet',
};

/** Text for HTML element content and attribute values. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}
const e = escapeHtml;

const anchor = (id: string) => `c-${id}`;
const pct = (r: number | null) => (r === null ? 'n/a' : `${(r * 100).toFixed(1)}&nbsp;%`);

/** `Driver Requirements: Device Status Field` and the path above it, from the section label. */
function sectionTitle(section: string): { title: string; path: string } {
  const m = /^(device|driver)normative:(.*)$/.exec(section);
  const label = m ? m[2] : section.replace(/^sec:/, '');
  const parts = label.split(' / ');
  const last = parts.pop() ?? label;
  return { title: m ? `${m[1] === 'device' ? 'Device' : 'Driver'} Requirements: ${last}` : last, path: parts.join(' / ') };
}

function bar(counts: Record<CoverageStatus, number>, total: number): string {
  if (total === 0) return '<div class="bar"></div>';
  const spans = STATUSES.filter((s) => counts[s] > 0)
    .map((s) => `<span class="st-${s}" style="width:${((counts[s] / total) * 100).toFixed(2)}%" title="${s}: ${counts[s]}"></span>`)
    .join('');
  return `<div class="bar" role="img" aria-label="${STATUSES.map((s) => `${s} ${counts[s]}`).join(', ')}">${spans}</div>`;
}

function rowCounts(r: CoverageRow): Record<CoverageStatus, number> {
  return { enforced: r.enforced, tested: r.tested, 'not-checkable': r.notCheckable, unsupported: r.unsupported, open: r.open };
}

function goalCell(r: CoverageRow): string {
  if (r.goalMet === null) return r.side === 'both' && !r.implemented ? '<td class="goal na">not implemented</td>' : '<td class="goal"></td>';
  return r.goalMet ? '<td class="goal met">met</td>' : '<td class="goal missed">missed</td>';
}

function summaryTable(summary: CoverageSummary): string {
  const head = `<tr><th>part</th><th>side</th><th class="barcol">coverage</th>${STATUSES.map((s) => `<th class="n">${s}</th>`).join('')}<th class="n">total</th><th class="n">checkable</th><th class="n">enforced / checkable</th><th>goal ≥ ${summary.goal * 100}&nbsp;%</th></tr>`;
  const body = summary.rows
    .map(
      (r) =>
        `<tr class="${r.side === 'both' ? 'overall' : ''}" data-part="${e(r.part)}" data-side="${r.side}"><td><a href="#part-${e(r.part)}">${e(r.part)}</a></td><td>${r.side}</td><td class="barcol">${bar(rowCounts(r), r.total)}</td>` +
        `${STATUSES.map((s) => `<td class="n" data-status="${s}">${rowCounts(r)[s]}</td>`).join('')}<td class="n" data-k="total">${r.total}</td><td class="n" data-k="checkable">${r.checkable}</td>` +
        `<td class="n ratio" data-k="ratio" data-enforced="${r.enforced}" data-checkable="${r.checkable}">${pct(r.ratio)}</td>${goalCell(r)}</tr>`,
    )
    .join('\n');
  return `<table class="summary" id="summary"><thead>${head}</thead><tbody>\n${body}\n</tbody></table>`;
}

function occurrence(o: RunReportOccurrence): string {
  const ctx = o.context !== undefined ? `<pre class="ctx">${e(JSON.stringify(o.context, null, 1))}</pre>` : '';
  const dev = o.deviation ? ` <span class="dev">known deviation: ${e(o.deviation.driver)} ${e(o.deviation.version)}</span>` : '';
  return `<div class="occ"><span class="when">${e(o.at)}</span> <span class="sev sev-${o.severity}">${o.severity}</span> seen by the ${o.observer}${o.source ? ` (${e(o.source)})` : ''}: ${e(o.message)}${dev}${ctx}</div>`;
}

function clauseLink(id: string, known: ReadonlySet<string>): string {
  return known.has(id) ? `<a href="#${anchor(id)}"><code>${e(id)}</code></a>` : `<code>${e(id)}</code>`;
}

function runSection(r: RunReport, file: string, format: string, byId: ReadonlyMap<string, ClauseEntry>, known: ReadonlySet<string>, specText: ReadonlyMap<string, SpecText>): string {
  const t = r.totals;
  const target = Object.entries(r.target)
    .filter(([, v]) => v !== undefined && v !== null)
    .map(([k, v]) => `${e(k)} <code>${e(typeof v === 'string' ? v : JSON.stringify(v))}</code>`)
    .join(', ');
  const rows = [...r.clauses]
    .sort((a, b) => b.violations - a.violations || b.count - a.count)
    .map((c) => {
      const entry = byId.get(c.clause);
      const spec = specText.get(c.clause);
      return (
        `<tr data-clause="${e(c.clause)}"><td>${clauseLink(c.clause, known)}${entry ? `<div class="sum">${e(entry.summary)}</div>` : ''}${spec ? `<blockquote class="spec">${e(spec.text)}</blockquote>` : ''}</td>` +
        `<td>${c.side}</td><td>${e(c.level)}</td><td class="n" data-k="count">${c.count}</td><td class="n">${c.violations}</td><td>${entry ? `<span class="badge st-${entry.status}">${entry.status}</span>` : ''}</td>` +
        `<td>${occurrence(c.first)}${c.last ? `<details><summary>last of ${c.count}</summary>${occurrence(c.last)}</details>` : ''}</td></tr>`
      );
    })
    .join('\n');
  return (
    `<section class="run" data-file="${e(file)}"><h3>${e(r.tool)} run: <code>${e(file)}</code> <small>(${e(format)})</small></h3>` +
    `<p>${target}${r.mode ? `; monitor ${e(r.mode)}` : ''}; ${e(r.started)} to ${e(r.ended)}.</p>` +
    `<p class="totals"><b data-k="verdicts">${t.verdicts}</b> verdicts on <b data-k="clauses">${t.clauses}</b> clauses: ${t.violations} violations (${t.knownDeviations} of them known deviations of real drivers), ${t.warnings} warnings.</p>` +
    (r.clauses.length === 0
      ? '<p class="clean">No verdict: neither side broke a clause the monitor checks.</p>'
      : `<table class="verdicts"><thead><tr><th>clause</th><th>broken by</th><th>level</th><th class="n">verdicts</th><th class="n">violations</th><th>status</th><th>first occurrence</th></tr></thead><tbody>\n${rows}\n</tbody></table>`) +
    '</section>'
  );
}

function probeSection(p: ProbeReport, file: string, known: ReadonlySet<string>): string {
  const order = { fail: 0, 'not-run': 1, pass: 2 } as const;
  const rows = [...p.checks]
    .sort((a, b) => order[a.status] - order[b.status])
    .map(
      (c) =>
        `<tr class="probe-${c.status}" data-clause="${e(c.id)}"><td>${c.source === 'virtio' ? clauseLink(c.id, known) : `<code>${e(c.id)}</code> <small>vhost-user</small>`}<div class="sum">${e(c.title)}</div></td>` +
        `<td class="pr-${c.status}">${c.status}</td><td class="n">${c.checked}</td><td>${e(c.detail ?? '')}${c.session ? ` <small>[${e(c.session)}]</small>` : ''}</td></tr>`,
    )
    .join('\n');
  const hostile = (p.hostile ?? [])
    .map(
      (h) =>
        `<tr><td><code>${e(h.id)}</code><div class="sum">${e(h.title)}</div></td><td class="${h.ok ? 'pr-pass' : h.outcome === 'skipped' ? 'pr-not-run' : 'pr-fail'}">${e(h.outcome)}</td><td>${h.clause ? clauseLink(h.clause, known) : ''}</td><td>${e(h.note ?? '')}</td></tr>`,
    )
    .join('\n');
  const s = p.summary;
  return (
    `<section class="run" data-file="${e(file)}"><h3>probe run: <code>${e(file)}</code> <small>(probe-report)</small></h3>` +
    `<p>${e(p.target.type)} back-end at <code>${e(p.target.socketPath)}</code>; ${e(p.started)}, ${(p.durationMs / 1000).toFixed(1)}&nbsp;s.</p>` +
    `<p class="totals">${s.clean ? 'Clean' : 'Violations'}: <b>${s.pass}</b> passed, <b>${s.fail}</b> failed, <b>${s.notRun}</b> not run${p.hostile ? `; hostile cases: ${s.hostileOk} ok, ${s.hostileFailed} failed, ${s.hostileSkipped} skipped` : ''}.</p>` +
    `<table class="verdicts"><thead><tr><th>rule or clause</th><th>result</th><th class="n">checked</th><th>detail</th></tr></thead><tbody>\n${rows}\n</tbody></table>` +
    (hostile ? `<h4>Hostile cases</h4><table class="verdicts"><thead><tr><th>case</th><th>outcome</th><th>clause</th><th>note</th></tr></thead><tbody>\n${hostile}\n</tbody></table>` : '') +
    '</section>'
  );
}

function clauseArticle(c: ClauseEntry, spec: SpecText | undefined, hits: number): string {
  const sec = sectionTitle(c.section);
  const srcLink = spec?.source
    ? ` · <a href="${SPEC_LATEX}${e(spec.source.replace(/:(\d+)$/, '#L$1'))}" rel="noreferrer">${e(spec.source)}</a>`
    : '';
  const specBlock = c.spec
    ? `<blockquote class="spec">${spec ? e(spec.text) : '<i>(spec text not available)</i>'}</blockquote><div class="ref">VIRTIO 1.4 cs01, <a href="${SPEC_HTML}" rel="noreferrer">${e(sec.title)}</a>${sec.path ? ` <span class="path">(${e(sec.path)})</span>` : ''}${srcLink}</div>`
    : `<div class="ref">${e(c.section)}</div>`;
  const sites = c.sites.length
    ? `<dt>check sites</dt><dd><ul>${c.sites.map((s) => `<li><code>${e(s.file)}:${s.line}</code> <small>${e(s.name.slice(s.name.indexOf(':') + 1))}</small>${s.uncaught !== undefined ? ` <span class="uncaught">not caught by any test: ${e(s.uncaught)}</span>` : ''}</li>`).join('')}</ul></dd>`
    : '';
  const negatives = c.negatives.length ? `<dt>negative tests</dt><dd><ul>${c.negatives.map((n) => `<li><code>${e(n)}</code></li>`).join('')}</ul></dd>` : '';
  const others = c.tests.filter((t) => !c.negatives.some((n) => n.startsWith(t)));
  const tests = others.length ? `<dt>other tests naming it</dt><dd>${others.map((t) => `<code>${e(t)}</code>`).join(', ')}</dd>` : '';
  const conditions = c.conditions.length ? `<dt>conditions / scope</dt><dd><ul>${c.conditions.map((k) => `<li><b>${e(k.kind)}</b>: ${e(k.note)}</li>`).join('')}</ul></dd>` : '';
  const reason = c.reason ? `<dt>reason</dt><dd>${e(c.reason)}</dd>` : '';
  const declared = c.declared !== c.status && c.declared !== 'open' ? `<dt>declared</dt><dd>${e(c.declared)} (the code says ${e(c.status)})</dd>` : '';
  const dl = reason + conditions + sites + negatives + tests + declared;
  return (
    `<article class="clause" id="${e(anchor(c.id))}" data-status="${c.status}" data-side="${c.side}" data-hits="${hits}">` +
    `<header><a class="id" href="#${e(anchor(c.id))}">${e(c.id)}</a> <span class="lvl">${e(c.level)}</span> <span class="badge st-${c.status}">${c.status}</span>${c.legacy ? ' <span class="tag">legacy</span>' : ''}${c.conditions.length ? ' <span class="tag cond">conditions</span>' : ''}${hits > 0 ? ` <span class="tag hits">${hits} verdicts in the runs</span>` : ''}</header>` +
    `<p class="sum">${e(c.summary)}</p>${specBlock}${dl ? `<dl>${dl}</dl>` : ''}</article>`
  );
}

const CSS = `
:root{--enf:#1a7f37;--tst:#4c8fd6;--nc:#9a9a9a;--uns:#d4d4d4;--open:#d1242f;--fg:#1f2328;--mut:#59636e;--line:#d1d9e0}
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--fg);margin:0;background:#fff}
header.top{padding:16px 24px;border-bottom:1px solid var(--line);background:#f6f8fa}header.top h1{margin:0 0 4px;font-size:22px}
main{padding:8px 24px 48px;max-width:1400px}h2{margin:28px 0 8px;border-bottom:1px solid var(--line);padding-bottom:4px}h3{margin:18px 0 6px}
.legend span{display:inline-block;margin-right:14px}.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px;border-radius:2px}
.st-enforced{background:var(--enf)}.st-tested{background:var(--tst)}.st-not-checkable{background:var(--nc)}.st-unsupported{background:var(--uns)}.st-open{background:var(--open)}
.bar{display:flex;height:12px;min-width:160px;border:1px solid var(--line);border-radius:3px;overflow:hidden;background:#fff}.bar span{display:block;height:100%}
table{border-collapse:collapse;margin:6px 0}th,td{padding:3px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}th{background:#f6f8fa;font-weight:600}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}tr.overall td{font-weight:600;border-bottom:2px solid #afb8c1}
td.goal.met{color:var(--enf);font-weight:700}td.goal.missed{color:var(--open);font-weight:700}td.goal.na{color:var(--mut)}
.badge{color:#fff;border-radius:10px;padding:0 8px;font-size:12px;white-space:nowrap}.badge.st-unsupported{color:#333}
.tag{border:1px solid var(--line);border-radius:10px;padding:0 6px;font-size:12px;color:var(--mut)}.tag.hits{border-color:var(--open);color:var(--open)}
article.clause{scroll-margin-top:64px;border:1px solid var(--line);border-radius:6px;padding:8px 12px;margin:8px 0}article.clause header{font-size:13px}
article.clause:target{outline:3px solid #f0b400}.id{font-family:ui-monospace,Menlo,monospace;font-weight:600;color:var(--fg);text-decoration:none}
.lvl{font-weight:700;font-size:12px;color:var(--mut)}p.sum{margin:4px 0}.sum{color:var(--mut)}
blockquote.spec{margin:6px 0;padding:4px 10px;border-left:4px solid #afb8c1;background:#f6f8fa;font-family:Georgia,serif}
.ref{font-size:12px;color:var(--mut)}dl{margin:6px 0 0;display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;font-size:13px}dt{color:var(--mut)}dd{margin:0}dd ul{margin:0;padding-left:16px}
code{font-family:ui-monospace,Menlo,monospace;font-size:12.5px}.uncaught{color:var(--open)}
.sev-violation{color:var(--open);font-weight:600}.sev-warning{color:#9a6700;font-weight:600}.dev{color:#9a6700}
pre.ctx{margin:2px 0;font-size:11.5px;max-height:8em;overflow:auto;background:#f6f8fa;padding:4px}
.pr-fail{color:var(--open);font-weight:600}.pr-pass{color:var(--enf)}.pr-not-run{color:var(--mut)}
#filters{display:none;position:sticky;top:0;background:#fff;border-bottom:1px solid var(--line);padding:8px 0;z-index:1}.js #filters{display:block}
#filters label{margin-right:12px}#filters input[type=search]{width:22em}.hidden{display:none}
.partbars{display:grid;grid-template-columns:5em 16em auto;gap:4px 10px;align-items:center;font-size:13px}
footer{font-size:12px;color:var(--mut);border-top:1px solid var(--line);margin-top:32px;padding-top:8px}
`;

// Filters: text search, statuses, side, only clauses with verdicts in the runs. Without JS the
// form stays hidden and every clause is shown.
const JS = `
document.documentElement.classList.add('js');
addEventListener('DOMContentLoaded',function(){
  var f=document.getElementById('filters'),q=f.querySelector('input[type=search]'),side=f.querySelector('select'),hits=f.querySelector('#only-hits'),out=document.getElementById('shown');
  var arts=[].slice.call(document.querySelectorAll('article.clause'));
  function apply(){
    var on={};[].forEach.call(f.querySelectorAll('input[data-status]'),function(c){on[c.dataset.status]=c.checked});
    var words=q.value.toLowerCase().split(/\\s+/).filter(Boolean),n=0;
    arts.forEach(function(a){
      var t=a.textContent.toLowerCase();
      var ok=on[a.dataset.status]&&(side.value===''||a.dataset.side===side.value)&&(!hits.checked||a.dataset.hits!=='0')&&words.every(function(w){return t.indexOf(w)>=0});
      a.classList.toggle('hidden',!ok);if(ok)n++;
    });
    [].forEach.call(document.querySelectorAll('h3.side'),function(h){var any=false;for(var e=h.nextElementSibling;e&&e.tagName==='ARTICLE';e=e.nextElementSibling)if(!e.classList.contains('hidden'))any=true;h.classList.toggle('hidden',!any)});
    [].forEach.call(document.querySelectorAll('section.part'),function(s){s.classList.toggle('hidden',!s.querySelector('article.clause:not(.hidden)'))});
    out.textContent=n+' of '+arts.length+' clauses shown';
  }
  f.addEventListener('input',apply);f.addEventListener('change',apply);apply();
});
`;

/** The whole page. */
export function renderConformanceHtml(input: ConformanceHtmlInput): string {
  const byId = new Map(input.clauses.map((c) => [c.id, c]));
  const known = new Set(byId.keys());
  // Verdicts per clause across the runs, to mark the clause entries.
  const hits = new Map<string, number>();
  for (const r of input.runs) {
    for (const c of r.run?.clauses ?? []) hits.set(c.clause, (hits.get(c.clause) ?? 0) + c.count);
    for (const c of r.probe?.checks ?? []) if (c.status === 'fail') hits.set(c.id, (hits.get(c.id) ?? 0) + 1);
    for (const h of r.probe?.hostile ?? []) if (!h.ok && h.clause) hits.set(h.clause, (hits.get(h.clause) ?? 0) + 1);
  }
  const runs = input.runs.length
    ? `<h2 id="runs">Runs</h2><p>The verdicts of real runs (<code>--report</code>), grouped by clause; each clause links to its entry below.</p>` +
      input.runs.map((r) => (r.run ? runSection(r.run, r.file, r.format, byId, known, input.specText) : probeSection(r.probe!, r.file, known))).join('\n')
    : '';
  const parts = [...input.parts, 'struct'];
  const sections = parts
    .map((part) => {
      const cs = input.clauses.filter((c) => c.id.startsWith(`${part}.`));
      if (cs.length === 0) return '';
      const rows = input.summary.rows.filter((r) => r.part === part);
      const bars = rows
        .map((r) => `<span>${r.side === 'both' ? '<b>overall</b>' : r.side}</span>${bar(rowCounts(r), r.total)}<span>${r.enforced} of ${r.checkable} checkable enforced (${pct(r.ratio)})${r.goalMet === null ? '' : r.goalMet ? ' <b class="met">goal met</b>' : ' <b class="missed">goal missed</b>'}; ${STATUSES.map((s) => `${rowCounts(r)[s]} ${s}`).join(', ')}</span>`)
        .join('');
      return (
        `<section class="part" id="part-${e(part)}"><h2>${e(part)}: ${e(PART_TITLES[part] ?? part)} <small>(${cs.length} clauses)</small></h2>` +
        (bars ? `<div class="partbars">${bars}</div>` : '') +
        (['device', 'driver'] as const)
          .map((side) => {
            const of = cs.filter((c) => c.side === side);
            if (of.length === 0) return '';
            return `<h3 class="side">${side} side <small>(${of.length} clauses binding the ${side}; judged from the ${side === 'device' ? 'driver' : 'device'} side)</small></h3>\n` + of.map((c) => clauseArticle(c, input.specText.get(c.id), hits.get(c.id) ?? 0)).join('\n');
          })
          .join('\n') +
        '</section>'
      );
    })
    .join('\n');
  const legend = `<p class="legend">${STATUSES.map((s) => `<span title="${e(STATUS_HELP[s])}"><i class="st-${s}"></i>${s}</span>`).join('')}</p>`;
  const statusList = `<ul>${STATUSES.map((s) => `<li><b>${s}</b>: ${e(STATUS_HELP[s])}</li>`).join('')}</ul>`;
  const filters =
    `<form id="filters" onsubmit="return false"><input type="search" placeholder="search ids, text, files, tests" aria-label="search">` +
    ` ${STATUSES.map((s) => `<label><input type="checkbox" data-status="${s}" checked> ${s}</label>`).join('')}` +
    ` <select aria-label="side"><option value="">both sides</option><option value="device">device</option><option value="driver">driver</option></select>` +
    ` <label><input type="checkbox" id="only-hits"> only clauses with verdicts in the runs</label> <span id="shown"></span></form>`;
  const missed = input.summary.missed;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>virtio-ts conformance report</title><style>${CSS}</style><script>${JS}</script></head>
<body><header class="top"><h1>virtio-ts conformance report</h1>
<div>virtio-ts ${e(input.version)} against VIRTIO 1.4 cs01 (${input.clauses.filter((c) => c.spec).length} normative statements); generated ${e(input.generated)}.
${missed.length ? `Goal (≥ ${input.summary.goal * 100}&nbsp;% of checkable clauses enforced) missed by: <b class="missed">${missed.map(e).join(', ')}</b>.` : `Goal (≥ ${input.summary.goal * 100}&nbsp;% of checkable clauses enforced) met by every implemented part.`}</div>
${legend}</header>
<main>
<h2 id="coverage">Coverage</h2>
<p>checkable = enforced + tested + open (neither not-checkable nor unsupported); the goal applies to each implemented part as a whole.</p>
${summaryTable(input.summary)}
${statusList}
${runs}
<h2 id="clauses">Clauses</h2>
${filters}
${sections}
<footer><p>Spec text: the normative statements of "Virtual I/O Device (VIRTIO) Version 1.4", Committee Specification 01, quoted from the specification with its LaTeX markup removed.
Copyright © OASIS Open 2023. All Rights Reserved. Quoted under the specification's notice (catalogue/SPEC-NOTICE.md in the virtio-ts package), which permits copies that assist in its implementation with that notice;
the specification: <a href="${SPEC_HTML}" rel="noreferrer">${SPEC_HTML}</a>. Summaries, statuses, reasons and everything else: virtio-ts.</p></footer>
</main></body></html>
`;
}
