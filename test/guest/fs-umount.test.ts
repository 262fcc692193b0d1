// The umount hang (docs/findings.md): a Linux guest mounts `virtio-ts serve fs --memory` and
// unmounts it again, round after round (scripts/guest/init `fsumount`): small files written,
// caches dropped (a burst of FORGETs on hiprio, more than its ring holds), files removed (more
// FORGETs) and unmount right after, while FORGETs are still on their way and the kernel drains
// every queue and sends DESTROY. Each unmount must end: one that has not after 30 s fails the
// test with the guest's kernel stacks and interrupt counts and the rings' indices as QEMU reads
// them from guest memory (umountWatch), instead of hanging until the runner's limit.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { boot, guestTest, noViolations } from './harness.js';
import { umountWatch, type FsRunReport } from './fs-guest.js';

const CYCLES = 8;
const FILES = 200;

guestTest(`a Linux guest mounts and unmounts serve fs --memory ${CYCLES} times, each after a burst of FORGETs`, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-fsumount-'));
  const report = join(dir, 'report.json');
  const rings: string[] = [];
  try {
    const run = await boot({
      kind: 'fs',
      test: 'fsumount',
      device: 'vhost-user-fs-pci,chardev=c0,tag=vt',
      serveArgs: ['--tag', 'vt', '--memory', '--report', report, '--log-format', 'json'],
      append: `vt.tag=vt vt.cycles=${CYCLES} vt.files=${FILES}`,
      memoryMiB: 384,
      during: (g) => umountWatch(g, rings),
      timeoutMs: 200_000, // a hang guard inside the runner's 300 s per file; a hung umount ends the guest after 60 s by itself
    });
    const r = run.results;
    const say = () => `\n${run.console.slice(-4000)}\n${rings.join('\n')}\n${run.serveLog.slice(-3000)}`;
    assert.equal(r.get('fs-error'), undefined, `no mount, file operation or unmount failed or hung${say()}`);
    assert.equal(r.get('cycles'), String(CYCLES), `every round ended${say()}`);
    for (let c = 1; c <= CYCLES; c++) {
      assert.equal(r.get(`listed-${c}`), String(FILES), `round ${c}: ls -l lists every file`);
      assert.equal(r.get(`read-${c}`), String(FILES), `round ${c}: every file reads back after the caches were dropped`);
    }
    noViolations(run);
    const rep = JSON.parse(readFileSync(report, 'utf8')) as FsRunReport;
    assert.deepEqual([rep.totals.verdicts, rep.clauses], [0, []], "serve fs's monitor verdicts");
    assert.ok(rep.counters.hiprio > CYCLES * FILES, `FORGETs came on hiprio: ${rep.counters.hiprio}`);
    process.stdout.write(`# ${CYCLES} mount/umount rounds of ${FILES} files: ${rep.counters.fuseRequests} FUSE requests, ${rep.counters.hiprio} on hiprio (load ${readFileSync('/proc/loadavg', 'utf8').split(' ')[0]})\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
