// A host directory over virtio-fs with a real Linux guest (QEMU 7.2 vhost-user-fs-pci, the
// guest mounts `-t virtiofs vtfs /mnt`): `virtio-ts serve fs --shared-dir DIR`. The guest runs
// scripts/guest/init's `fshost` workload (1000 small files created, listed, read, renamed,
// half deleted; a 32 MiB file written with fsync and read back after dropping its caches; four
// concurrent writers; 50 fsynced files) and the escape attempts through the symlinks the host
// put in the share (`up -> ../OUTSIDE`, `abs -> /.../OUTSIDE`, `passwd -> /etc/passwd`).
// Everything is checked on the HOST: the files by content and md5, and that nothing outside
// the shared directory (nor /etc/passwd) changed. One scenario (test/guest/fs-host-*.test.ts).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { boot, guestTest, noViolations } from './harness.js';
import { checkEscape, checkWorkload, makeShare, workloadAppend } from './fs-host-guest.js';
import { checkDefaultRequests, umountWatch, type FsRunReport } from './fs-guest.js';

const FILES = 1000;

guestTest('serve fs --shared-dir: the guest workload lands on the host (files by content, large file by md5, concurrent appends, fsync) and the escape attempts fail', async () => {
  const share = makeShare();
  const before = share.outsideState();
  const report = join(share.base, 'report.json');
  const rings: string[] = [];
  try {
    const run = await boot({
      kind: 'fs',
      device: 'vhost-user-fs-pci,chardev=c0,tag=vtfs',
      serveArgs: ['--tag', 'vtfs', '--shared-dir', share.root, '--report', report, '--log-format', 'json'],
      append: workloadAppend({ files: FILES, mb: 32, escape: true, umount: true }),
      test: 'fshost',
      during: (g) => umountWatch(g, rings),
      timeoutMs: 150_000,
    });
    assert.equal(run.results.get('mounted'), 'vtfs virtiofs');
    assert.match(run.serveLog, /serving fs \\"vtfs\\": .*root, read-write/);
    assert.equal(run.results.get('fs-error'), undefined, `the unmount ended: ${run.console.slice(-3000)}\n${rings.join('\n')}`);
    checkWorkload(run, share.root, FILES);
    checkEscape(run, share, before);
    noViolations(run);
    const rep = JSON.parse(readFileSync(report, 'utf8')) as FsRunReport;
    assert.deepEqual([rep.totals.verdicts, rep.clauses], [0, []], "serve fs's monitor verdicts");
    assert.ok(rep.counters.fuseRequests > 4 * FILES, `FUSE requests served: ${rep.counters.fuseRequests}`);
    assert.equal(rep.counters.hostDirHandles, 0, 'every handle the guest opened was released');
    checkDefaultRequests(rep.counters);
    console.log(
      ['create', 'list', 'read', 'rename', 'delete', 'write', 'bigread', 'concurrent', 'fsync'].map((p) => `${p} ${Number(run.results.get(`${p}-cs`)) * 10} ms`).join(', ') +
        `; ${rep.counters.fuseRequests} FUSE requests, page-cache reads ${rep.counters.hostDirCachedReads}, pool reads ${rep.counters.hostDirPoolReads}, nodes held at the end ${rep.counters.hostDirNodes}`,
    );
  } finally {
    share.remove();
  }
});
