// `virtio-ts serve fs --shared-dir DIR` on the command line (no guest): a directory that cannot
// be shared is exit 3 with the reason, before any socket exists; a real one is served (the
// startup line names it) and left as it was when serve ends on SIGTERM (exit 0).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, startServe } from '../cli/helpers.js';

test('serve fs --shared-dir: a missing directory or a file is exit 3 with the reason; a directory is served and left as it was', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-serve-dir-'));
  try {
    const sock = join(dir, 'fs.sock');
    const missing = run('serve', 'fs', '--socket-path', sock, '--tag', 't', '--shared-dir', join(dir, 'nope'));
    assert.equal(missing.code, 3, missing.err);
    assert.match(missing.err, /cannot share --shared-dir .*nope: no such file or directory \(ENOENT\)/);
    writeFileSync(join(dir, 'file'), 'x');
    const file = run('serve', 'fs', '--socket-path', sock, '--tag', 't', '--shared-dir', join(dir, 'file'));
    assert.equal(file.code, 3, file.err);
    assert.match(file.err, /\(ENOTDIR\)/);
    assert.ok(!existsSync(sock), 'no socket was made for a directory that cannot be shared');
    const share = join(dir, 'share');
    for (const ro of [false, true]) {
      rmSync(share, { recursive: true, force: true });
      mkdirSync(share);
      writeFileSync(join(share, 'kept'), 'kept');
      const s = startServe(['serve', 'fs', '--socket-path', sock, '--tag', 't', '--shared-dir', share, ...(ro ? ['--read-only'] : []), '--log-format', 'json']);
      const line = await s.logged(/serving fs "t"/);
      assert.match(line.msg, new RegExp(`${share}, ${ro ? 'read-only' : 'read-write'}`));
      assert.equal(line.provider, 'shared-dir');
      s.child.kill('SIGTERM');
      assert.equal(await s.exited, 0, s.stderr());
      assert.deepEqual(readdirSync(share), ['kept']);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
