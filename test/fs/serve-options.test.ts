// `virtio-ts serve fs` over vhost-user with this process as the VMM (a front-end, an FsDriver
// and a FuseClient; no guest): what the session agrees by default and with --xattr and
// --posix-locks. By default serve fs answers as virtiofsd's defaults (no_xattr,
// no_posix_lock): no xattrs, fcntl locks kept by the guest's kernel, and so every open of the
// shared directory comes back with FOPEN_NOFLUSH (no FLUSH round trip per close). With the two
// options the xattrs and the locks are the host's (a lock shows in /proc/locks as an OFD lock).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { scratch, startServe } from '../vhost-user/frontend-peers.js';
import { connectFs, errno } from './fs-frontend.js';
import { Fopen, InitFlag } from '../../src/fs/fuse/wire.js';
import { Errno, LockType } from '../../src/fs/vfs.js';

/** /proc/locks lines of OFD locks on inode `ino`. */
const ofdLocks = (ino: number) => readFileSync('/proc/locks', 'utf8').split('\n').filter((l) => /\bOFDLCK\b/.test(l) && l.split(/\s+/)[5]?.endsWith(`:${ino}`));

const whole = { start: 0, end: Infinity, type: LockType.F_WRLCK, pid: 1 };

for (const opts of [[], ['--xattr', '--posix-locks']]) {
  const on = opts.length > 0;
  test(`serve fs --shared-dir ${on ? opts.join(' ') : '(defaults)'}: ${on ? 'POSIX_LOCKS agreed, locks held on the host, xattrs served, FLUSH needed' : 'no POSIX_LOCKS, no xattrs (ENOSYS), FOPEN_NOFLUSH on OPEN and CREATE'}`, async () => {
    const s = scratch('vt-fs-opts-');
    const share = join(s.dir, 'share');
    mkdirSync(share);
    const serve = await startServe('fs', join(s.dir, 'fs.sock'), ['--tag', 'vtfs', '--shared-dir', share, ...opts]);
    try {
      assert.match(serve.log(), on ? /xattrs, host POSIX locks/ : /no xattrs, guest-local POSIX locks/);
      const { fe, client } = await connectFs(serve.socket);
      try {
        assert.equal(client.initFlags & InitFlag.POSIX_LOCKS, on ? InitFlag.POSIX_LOCKS : 0);
        const c = await client.create(1, 'f');
        assert.equal(c.fopen & Fopen.NOFLUSH, on ? 0 : Fopen.NOFLUSH, 'CREATE');
        assert.equal((await client.openReply(c.entry.nodeid, 0)).fopen & Fopen.NOFLUSH, on ? 0 : Fopen.NOFLUSH, 'OPEN');
        const ino = statSync(join(share, 'f')).ino;
        if (on) {
          await client.setxattr(c.entry.nodeid, 'user.a', new TextEncoder().encode('one'));
          assert.equal(new TextDecoder().decode((await client.getxattr(c.entry.nodeid, 'user.a')) as Uint8Array), 'one');
          await client.setlk(c.entry.nodeid, c.fh, 7n, whole);
          assert.equal(ofdLocks(ino).length, 1, 'the guest\'s lock is an OFD lock on the host file');
          // close(2) by the owner: the FLUSH drops its lock, on the host too.
          await client.flush(c.entry.nodeid, c.fh, 7n);
          assert.equal(ofdLocks(ino).length, 0);
        } else {
          assert.equal(await errno(client.setxattr(c.entry.nodeid, 'user.a', new TextEncoder().encode('one'))), Errno.ENOSYS);
          assert.equal(await errno(client.getxattr(c.entry.nodeid, 'security.capability')), Errno.ENOSYS);
          assert.equal(await errno(client.setlk(c.entry.nodeid, c.fh, 7n, whole)), Errno.ENOSYS);
          assert.equal(ofdLocks(ino).length, 0);
        }
        assert.equal(await client.write(c.entry.nodeid, c.fh, 0, new TextEncoder().encode('data')), 4);
        assert.equal(readFileSync(join(share, 'f'), 'utf8'), 'data');
      } finally {
        await fe.close();
      }
    } finally {
      await serve.stop();
      s.remove();
    }
  });
}
