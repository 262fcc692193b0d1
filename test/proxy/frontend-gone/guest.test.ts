// QEMU + Linux <-> `virtio-ts monitor` <-> `virtio-ts serve blk`, the front-end side of "the
// proxy survives either side dying and reconnecting": a QEMU that goes mid-I/O ends its session
// only, and the next QEMU is served through the same proxy process by the same serve. (The
// back-end side, serve killed and QEMU reconnecting: ../guest.test.ts.) Its own file: two guests.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { symlinkSync } from 'node:fs';
import { assertWritten, bin, boot, guestTest, withImage, type BootOptions } from '../../guest/harness.js';
import { fresh, monitorBetween } from '../guest-helpers.js';

guestTest('QEMU + Linux <-> virtio-ts monitor <-> virtio-ts serve blk: a QEMU that quits mid-I/O ends its session only; the next QEMU is served through the same proxy by the same serve', () =>
  withImage(async (image) => {
    // One serve and one proxy for both guests (the harness's back-end socket is a link to serve's).
    const serveSock = `${image}.serve.sock`;
    let serveLog = '';
    const serve = spawn(process.execPath, [bin, 'serve', 'blk', '--socket-path', serveSock, '--image', image], { stdio: ['ignore', 'ignore', 'pipe'] });
    serve.stderr!.on('data', (d) => (serveLog += d));
    const m = fresh();
    let proxy: { path: string; close(): Promise<unknown> } | null = null;
    try {
      for (let i = 0; i < 3000 && !serveLog.includes('listening on') && serve.exitCode === null; i++) await new Promise((r) => setTimeout(r, 10));
      assert.ok(serveLog.includes('listening on'), `virtio-ts serve did not listen: ${serveLog}`);
      proxy = await monitorBetween(m)(serveSock);
      const shared = (test: string, during?: BootOptions['during']): BootOptions => ({
        kind: 'blk',
        test,
        device: 'vhost-user-blk-pci,chardev=c0,num-queues=1',
        serveArgs: [],
        server: (sock) => {
          symlinkSync(serveSock, sock);
          return { close: async () => undefined };
        },
        interpose: async () => ({ path: proxy!.path, close: async () => undefined }),
        ...(during ? { during } : {}),
        timeoutMs: 120_000,
      });
      // The first QEMU quits while the guest writes (no shutdown of the device: the connection just goes).
      await assert.rejects(
        boot(
          shared('stopcont', async (g) => {
            await g.waitFor(/VT-RESULT stopcont-ready/);
            // QEMU may go before it answers: the reply is not waited for.
            void g.qmp('quit').catch(() => undefined);
          }),
        ),
        /the guest test did not finish|qemu exited/,
      );
      const second = await boot(shared('blk'));
      assertWritten(second, image, 64 * 4096);
      assert.doesNotMatch(serveLog, /"severity":"violation"/, serveLog);
      assert.equal(serve.exitCode, null, `serve is still up: ${serveLog}`);
    } finally {
      await proxy?.close();
      serve.kill('SIGTERM');
      if (serve.exitCode === null && serve.signalCode === null) await new Promise((r) => serve.once('exit', r));
    }
    assert.ok(m.report !== null, m.stderr);
    assert.equal(m.report.sessions.length, 2, `two sessions: ${JSON.stringify(m.report.sessions.map((s) => s.reason))}`);
    assert.match(m.report.sessions[0].reason ?? '', /front-end/, 'the first session ended with its front-end');
    assert.ok(m.report.sessions[1].rings.some((r) => r.used + r.unseen > 0), "the second guest's ring was watched");
    assert.deepEqual(m.verdicts, [], m.verdicts.map((v) => `${v.clause}: ${v.message}`).join('\n'));
    assert.equal(m.exitCode, 0, m.stderr);
  }),
);
