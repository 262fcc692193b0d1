// A host directory over virtio-fs with a real Linux guest (QEMU 7.2 vhost-user-fs-pci, the
// guest mounts `-t virtiofs vtfs /mnt`): `virtio-ts serve fs --shared-dir DIR`. The guest runs
// scripts/guest/init's `fshost` workload (1000 small files created, listed, read, renamed,
// half deleted; a 32 MiB file written with fsync and read back; four concurrent writers; 50
// fsynced files) and the symlink escape attempts; everything is checked on the HOST: the
// files, by content and md5, and that nothing outside the shared directory changed.
import assert from 'node:assert/strict';
import { boot, guestTest, noViolations } from './harness.js';
import { checkEscape, checkWorkload, makeShare, workloadAppend } from './fs-host-guest.js';
import { FsDevice } from '../../src/devices/fs/device.js';
import { HostDirFs } from '../../src/node/fs/host-dir.js';
import { Monitor } from '../../src/monitor/monitor.js';
import { serveVhostUser } from '../../src/transports/vhost-user/daemon.js';

const FILES = 1000;

guestTest('virtio-fs host directory: the guest workload lands on the host (files by content, large file by md5, concurrent appends, fsync) and the escape attempts fail', async () => {
  const share = makeShare();
  const before = share.outsideState();
  try {
    const monitor = new Monitor();
    const fs = HostDirFs.open(share.root);
    const run = await boot({
      kind: 'fs',
      device: 'vhost-user-fs-pci,chardev=c0,tag=vtfs',
      serveArgs: [],
      append: workloadAppend({ files: FILES, mb: 32, escape: true }),
      test: 'fshost',
      timeoutMs: 110_000,
      server: (sock) => {
        const daemon = serveVhostUser(new FsDevice({ provider: fs, tag: 'vtfs', monitor }), { socket: sock });
        return { close: async () => { await daemon.close(); fs.close(); } };
      },
    });
    assert.equal(run.results.get('mounted'), 'vtfs virtiofs');
    checkWorkload(run, share.root, FILES);
    checkEscape(run, share, before);
    console.log(['create', 'list', 'read', 'rename', 'delete', 'write', 'bigread', 'concurrent', 'fsync'].map((p) => `${p} ${run.results.get(`${p}-cs`)}0 ms`).join(', '));
    assert.deepEqual(monitor.verdicts.filter((v) => v.severity === 'violation'), []);
    void noViolations;
  } finally {
    share.remove();
  }
});
