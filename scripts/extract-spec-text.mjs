#!/usr/bin/env node
// Writes catalogue/spec-text.tsv: for each of the 795 normative statements, the statement as
// the spec words it (the `text` column of the shared spec data's normative.tsv, LaTeX removed)
// and where its section starts in the spec's LaTeX sources (file and line, at the tag
// v1.4-cs01 of https://github.com/oasis-tcs/virtio-spec), so that `virtio-ts conformance
// --html` can show and link the spec text without the shared spec folder at run time.
//
// The text is © OASIS Open, quoted as the spec's notice permits (copies that assist in
// implementing it, with the notice): catalogue/SPEC-NOTICE.md is that notice, shipped with it.
//
//   node scripts/extract-spec-text.mjs [SPEC_DIR]   (default ../shared/spec; run once per spec revision)
import { readFileSync, writeFileSync, readdirSync, statSync, copyFileSync } from 'node:fs';
import { join, relative, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const spec = process.argv[2] ?? join(root, '..', 'shared', 'spec');

function tex(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...tex(p));
    else if (p.endsWith('.tex')) out.push(p);
  }
  return out;
}

// Section label -> file:line. `\devicenormative{\subsection}{Title}{Label}` makes the label
// `devicenormative:Label`; `\label{sec:...}` the others. Whitespace collapsed as in normative.tsv.
const where = new Map();
const squash = (s) => s.replace(/\s+/g, ' ').trim();
for (const f of tex(join(spec, 'text'))) {
  const text = readFileSync(f, 'utf8');
  const rel = relative(join(spec, 'text'), f);
  const lineAt = (i) => text.slice(0, i).split('\n').length;
  for (const m of text.matchAll(/\\(device|driver)normative\{[^}]*\}\s*\{[^}]*\}\s*\{([^}]*)\}/g)) {
    const key = `${m[1]}normative:${squash(m[2])}`;
    if (!where.has(key)) where.set(key, `${rel}:${lineAt(m.index)}`);
  }
  for (const m of text.matchAll(/\\label\{(sec:[^}]*)\}/g)) {
    const key = squash(m[1]);
    if (!where.has(key)) where.set(key, `${rel}:${lineAt(m.index)}`);
  }
  // A requirements heading written by hand (the PCI chapter's "Device Requirements:
  // Non-transitional Device With Legacy Driver"): found by its title.
  for (const m of text.matchAll(/\\(?:sub)*paragraph\{(Device|Driver) Requirements: ([^}]*)\}/g)) {
    const key = `title:${m[1].toLowerCase()}normative:${squash(m[2])}`;
    if (!where.has(key)) where.set(key, `${rel}:${lineAt(m.index)}`);
  }
}

const [header, ...rows] = readFileSync(join(spec, 'normative.tsv'), 'utf8').split('\n').filter((l) => l.length > 0);
const cols = header.split('\t');
const out = ['id\tsource\ttext'];
const missing = [];
for (const line of rows) {
  const r = Object.fromEntries(line.split('\t').map((v, i) => [cols[i], v]));
  const label = squash(r.section);
  const title = label.replace(/^(device|driver)normative:.*\/ /, 'title:$1normative:');
  const source = where.get(label) ?? where.get(title) ?? '';
  if (source === '') missing.push(`${r.id} (${r.section})`);
  out.push(`${r.id}\t${source}\t${r.text}`);
}
if (missing.length > 0) {
  console.error(`extract-spec-text: no section found for ${missing.length} rows:\n  ${missing.join('\n  ')}`);
  process.exit(1);
}
writeFileSync(
  join(root, 'catalogue', 'spec-text.tsv'),
  '# The normative statements of VIRTIO 1.4 cs01, quoted from the specification (LaTeX removed).\n' +
    '# Copyright (c) OASIS Open 2023. All Rights Reserved. See catalogue/SPEC-NOTICE.md (the spec\'s notice).\n' +
    '# source: the statement\'s section in the LaTeX at https://github.com/oasis-tcs/virtio-spec/tree/v1.4-cs01\n' +
    '# Written by scripts/extract-spec-text.mjs.\n' +
    out.join('\n') +
    '\n',
);
copyFileSync(join(spec, 'NOTICE.md'), join(root, 'catalogue', 'SPEC-NOTICE.md'));
console.log(`wrote catalogue/spec-text.tsv (${rows.length} statements) and catalogue/SPEC-NOTICE.md`);
