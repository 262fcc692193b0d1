// docs/findings.md (issue 17, "Findings"): every finding is in the table at the top with the peer
// and its version, the clause or rule, whether it is a bug or a spec ambiguity (or the project's
// own mistake), and a reproduction command; each row links to its entry (GitHub's heading anchors).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** GitHub's anchor for a heading: lower case, punctuation but `-` and `_` dropped, spaces to `-`. */
function slug(heading: string): string {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-');
}

test('docs/findings.md: each finding has peer + version, clause, bug/ambiguity and a reproduction, and links to its entry', () => {
  const text = readFileSync(join(root, 'docs/findings.md'), 'utf8');
  const anchors = new Set([...text.matchAll(/^#{2,4} (.+)$/gm)].map((m) => slug(m[1])));
  const rows = [...text.matchAll(/^\| \[([A-Z]\d+)\]\(#([^)]+)\) \|(.*)\|$/gm)];
  assert.ok(rows.length >= 10, `the findings table (${rows.length} rows)`);
  for (const [, id, anchor, rest] of rows) {
    assert.ok(anchors.has(anchor), `${id}: #${anchor} is a heading of the file`);
    const [peer, clause, kind, repro] = rest.split(' | ').map((c) => c.trim());
    assert.match(peer, /\d+\.\d+/, `${id}: the peer's version`);
    assert.ok(clause.length > 0, `${id}: the clause or rule`);
    assert.match(kind, /^(bug|ambiguity|ours, fixed|—)( |$)/, `${id}: bug, ambiguity or ours`);
    assert.match(repro, /^`(node --test|virtio-ts |npm )/, `${id}: a reproduction command`);
  }
  // Every entry below says its kind.
  assert.equal(rows.filter(([, , , rest]) => !rest.includes('| — |')).length, [...text.matchAll(/^- Kind: \*\*|^Kind: \*\*/gm)].length, 'one "Kind:" line per finding');
});
