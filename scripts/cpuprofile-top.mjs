#!/usr/bin/env node
// Top self-time functions of V8 .cpuprofile files (node --cpu-prof), as percentages of the
// profile's samples: `node scripts/cpuprofile-top.mjs [--top N] FILE...`. bench:net's profile
// method (README, bench:net) uses it on the switch and serve net children and the in-process row.
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';

const args = process.argv.slice(2);
let top = 12;
const files = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--top') top = Number(args[++i]);
  else files.push(args[i]);
}
if (files.length === 0) {
  console.error('usage: node scripts/cpuprofile-top.mjs [--top N] FILE.cpuprofile...');
  process.exit(2);
}
for (const file of files) {
  const p = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map();
  for (const id of p.samples) {
    const n = byId.get(id);
    const f = n.callFrame;
    const where = f.url ? `${basename(f.url)}:${f.lineNumber + 1}` : '';
    const key = `${f.functionName || '(anonymous)'} ${where}`.trim();
    self.set(key, (self.get(key) ?? 0) + 1);
  }
  // Percentages of the busy samples: (idle) is the process waiting in its event loop.
  const total = p.samples.length;
  const idle = self.get('(idle)') ?? 0;
  self.delete('(idle)');
  const busy = total - idle;
  console.log(`${basename(file)}: ${total} samples over ${((p.endTime - p.startTime) / 1e6).toFixed(1)} s, ${((100 * busy) / total).toFixed(1)}% busy; % of busy samples:`);
  for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`  ${((100 * v) / busy).toFixed(1).padStart(5)}%  ${k}`);
}
