// `virtio-ts serve fs --shared-dir DIR --read-only` with a real Linux guest: the guest reads a
// file and lists the directory, and every change it tries (create, mkdir, rm, mv, symlink,
// hard link, chmod, truncate, rmdir, mknod, append) fails with "Read-only file system"
// (EROFS); on the host the directory is byte for byte and stat for stat what it was. One
// scenario (test/guest/fs-host-*.test.ts).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { lstatSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { boot, guestTest, noViolations } from './harness.js';
import { makeShare, md5 } from './fs-host-guest.js';

guestTest('serve fs --shared-dir --read-only: the guest reads, every change it tries fails with EROFS, the host directory is unchanged', async () => {
  const share = makeShare();
  const data = randomBytes(300_000);
  writeFileSync(join(share.root, 'data.bin'), data);
  mkdirSync(join(share.root, 'dir'));
  const state = () =>
    readdirSync(share.root, { recursive: true })
      .map(String)
      .sort()
      .map((p) => {
        const st = lstatSync(join(share.root, p));
        return `${p} ${st.mode} ${st.size} ${st.mtimeMs} ${st.ctimeMs} ${st.nlink}${st.isFile() ? ' ' + md5(readFileSync(join(share.root, p))) : ''}`;
      })
      .join('\n');
  const before = state();
  const outside = share.outsideState();
  try {
    const run = await boot({
      kind: 'fs',
      device: 'vhost-user-fs-pci,chardev=c0,tag=vtfs',
      serveArgs: ['--tag', 'vtfs', '--shared-dir', share.root, '--read-only', '--log-format', 'json'],
      append: 'vt.ro=1',
      test: 'fshost',
      timeoutMs: 90_000,
    });
    const r = run.results;
    assert.match(run.serveLog, /read-only/);
    assert.equal(r.get('ro-read'), md5(data), 'the guest reads the file');
    assert.equal(r.get('ro-list'), 'abs data.bin dir passwd up');
    const ops = [...r.entries()].filter(([k]) => k.startsWith('ro-op-'));
    assert.equal(ops.length, 11, `every change was tried: ${JSON.stringify(ops)}`);
    for (const [k, v] of ops) assert.match(v, /^failed 1( |$)/, `${k}: ${v} (failed with "Read-only file system")`);
    assert.equal(r.get('fs-error'), undefined, `the unmount ended: ${run.console.slice(-2000)}`);
    assert.equal(state(), before, 'the shared directory is unchanged');
    assert.equal(share.outsideState(), outside);
    noViolations(run);
  } finally {
    share.remove();
  }
});
