// The virtio-fs anchor stays runnable: QEMU's C virtiofsd serves the same guest workload as
// test/guest/fs-host.test.ts (scripts/guest/init `fshost`), and the same host-side checks pass.
// Not timed (the timing is `npm run bench:fs`); this says that the command line bench:fs uses
// for virtiofsd works on this machine, and that the workload is one virtiofsd passes too.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { boot, missing } from './harness.js';
import { checkEscape, checkWorkload, makeShare, startVirtiofsd, virtiofsdMissing, workloadAppend } from './fs-host-guest.js';
import { missingPrerequisite } from '../prerequisites.js';

const FILES = 500;

test('virtio-fs anchor: QEMU virtiofsd serves the fshost workload (checked on the host like virtio-ts serve fs)', async (t) => {
  const why = [...missing, virtiofsdMissing()].filter(Boolean);
  if (why.length > 0) return missingPrerequisite(t, `virtiofsd guest: ${why.join(', ')}`);
  const share = makeShare();
  const before = share.outsideState();
  let log = '';
  try {
    const run = await boot({
      kind: 'fs',
      device: 'vhost-user-fs-pci,chardev=c0,tag=vtfs',
      serveArgs: [],
      test: 'fshost',
      append: workloadAppend({ files: FILES, mb: 16, escape: true }),
      timeoutMs: 110_000,
      server: (sock) => {
        const d = startVirtiofsd(sock, share.root);
        return { close: async () => (log = await d.close()) };
      },
    });
    assert.equal(run.results.get('mounted'), 'vtfs virtiofs', log);
    checkWorkload(run, share.root, FILES);
    checkEscape(run, share, before);
  } finally {
    share.remove();
  }
});
