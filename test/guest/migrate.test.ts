// Live migration with a real guest: while Linux writes to `virtio-ts serve blk`, QEMU migrates
// the VM to a file (QMP migrate, exec:cat). QEMU then sends SET_LOG_BASE (a shared memfd log,
// VHOST_USER_PROTOCOL_F_LOG_SHMFD), SET_FEATURES with VHOST_F_LOG_ALL and SET_VRING_ADDR with
// VHOST_VRING_F_LOG; the back-end marks every page it writes; at the end QEMU stops the rings,
// and `cont` resumes the source, whose guest finishes its writes. Also: guest memory arrives
// through ADD_MEM_REG (VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS), as in every guest test.
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { STOPCONT_BYTES, assertWritten, boot, guestTest, noViolations, withImage } from './harness.js';

guestTest('Linux keeps writing to virtio-ts serve blk while QEMU migrates the VM to a file: dirty logging on, then off; every write served', () =>
  withImage(async (image) => {
    const state = join(dirname(image), 'vm.state');
    let status = '';
    const run = await boot({
      kind: 'blk',
      device: 'vhost-user-blk-pci,chardev=c0,num-queues=1',
      serveArgs: ['--image', image],
      test: 'stopcont', // writes 3 MiB in 48 O_DIRECT pieces after its ready line
      during: async (g) => {
        await g.waitFor(/VT-RESULT stopcont-ready/);
        await g.qmp('migrate', { uri: `exec:cat > ${state}` });
        const deadline = Date.now() + 60_000;
        for (;;) {
          status = ((await g.qmp('query-migrate')) as { status?: string }).status ?? '';
          if (status !== 'setup' && status !== 'active' && status !== 'device') break;
          assert.ok(Date.now() < deadline, `the migration is still ${status} after 60 s`);
          await new Promise((r) => setTimeout(r, 50));
        }
        // The source stays paused after a completed migration: continue it.
        assert.equal(((await g.qmp('query-status')) as { status: string }).status, 'postmigrate');
        await g.qmp('cont');
      },
    });
    assert.equal(status, 'completed', 'QEMU completed the migration');
    assert.ok(statSync(state).size > 1 << 20, 'the migration stream went to the file');
    const log = run.serveLog;
    assert.match(log, /memory region \[0x0, \+0x10000000\) added/, 'guest memory came with ADD_MEM_REG');
    assert.match(log, /dirty log set: \d+ bytes, covering guest addresses below 0x10000000/, 'SET_LOG_BASE mapped the log');
    assert.match(log, /dirty logging on/);
    const logged = /dirty logging off \((\d+) writes logged\)/.exec(log);
    assert.ok(logged !== null, `logging ended with LOG_ALL cleared:\n${log}`);
    assert.ok(Number(logged[1]) > 0, 'the device wrote guest memory while the migration ran, and logged it');
    assertWritten(run, image, STOPCONT_BYTES);
    noViolations(run);
  }),
);
