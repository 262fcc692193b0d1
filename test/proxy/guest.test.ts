// QEMU + Linux <-> `virtio-ts monitor` <-> a real back-end (`virtio-ts serve blk`,
// qemu-storage-daemon): the guest's block workload goes through the proxy (dd with md5, checked
// on the host), the proxy watched the rings and reports zero verdicts but catalogued known
// deviations; a back-end killed mid-session and started again serves the next session through
// the same proxy (QEMU reconnect=1). A front-end that goes: frontend-gone/guest.test.ts; Linux's
// long indirect tables (seg_max 1022), named by the proxy: seg-max/guest.test.ts.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { STOPCONT_BYTES, assertWritten, bin, boot, guestTest, noViolations, withImage, type BootOptions } from '../guest/harness.js';
import { withSparseImage } from '../guest/workload-guest.js';
import { QSD } from '../vhost-user/frontend-peers.js';
import { fresh, monitorBetween, type MonitorRun } from './guest-helpers.js';

const MiB = 1 << 20;

/** Zero verdicts from the proxy (live and in the report), exit 0, ring 0 watched with traffic. */
function assertClean(m: MonitorRun): void {
  const show = m.verdicts.map((v) => `${v.clause} ${v.side}: ${v.message}`).join('\n');
  assert.deepEqual(m.verdicts, [], `the proxy saw a rule broken:\n${show}`);
  assert.ok(m.report !== null, `the report was written: ${m.stderr}`);
  assert.equal(m.report.schema, 'virtio-ts/monitor-report@1');
  assert.equal(m.report.summary.total, 0);
  assert.equal(m.report.summary.clean, true);
  assert.equal(m.exitCode, 0, m.stderr);
  const rings = m.report.sessions.flatMap((s) => s.rings);
  assert.ok(rings.some((r) => r.used + r.unseen > 0), `a ring was watched: ${JSON.stringify(m.report.sessions)}`);
  assert.doesNotMatch(m.stderr, /internal/, m.stderr);
}

for (const [label, device] of [
  ['split ring', 'vhost-user-blk-pci,chardev=c0,num-queues=1'],
  ['packed=on', 'vhost-user-blk-pci,chardev=c0,num-queues=1,packed=on'],
] as const) {
  guestTest(`QEMU + Linux <-> virtio-ts monitor <-> virtio-ts serve blk (${label}): the guest's writes and reads are right; the proxy reports nothing`, () =>
    withImage(async (image) => {
      const m = fresh();
      const run = await boot({ kind: 'blk', device, serveArgs: ['--image', image], interpose: monitorBetween(m) });
      assertWritten(run, image, 64 * 4096);
      noViolations(run);
      assertClean(m);
    }),
  );
}

guestTest('QEMU + Linux <-> virtio-ts monitor <-> qemu-storage-daemon (split ring): the guest writes 8 MiB with dd bs=1M and reads it back; the proxy reports nothing', () =>
  withSparseImage(16, async (image) => {
    const m = fresh();
    let qsd: ChildProcess | null = null;
    let qsdLog = '';
    const run = await boot({
      kind: 'blk',
      test: 'bigdd',
      device: 'vhost-user-blk-pci,chardev=c0,num-queues=1',
      serveArgs: [],
      memoryMiB: 512,
      timeoutMs: 120_000,
      server: (sock) => {
        qsd = spawn(QSD, ['--blockdev', `driver=file,node-name=f,filename=${image},cache.direct=off`, '--export', `type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path=${sock},writable=on`], { stdio: ['ignore', 'ignore', 'pipe'] });
        qsd.stderr!.on('data', (d) => (qsdLog += d));
        const q = qsd;
        return {
          close: async () => {
            if (q.exitCode === null && q.signalCode === null) {
              q.kill('SIGTERM');
              await new Promise((r) => q.once('exit', r));
            }
          },
        };
      },
      interpose: monitorBetween(m),
    });
    assert.equal(run.results.get('write-error'), undefined, `the write completed: ${qsdLog}`);
    assert.equal(run.results.get('readback-md5'), run.results.get('pattern-md5'), 'the guest read back what it wrote');
    assert.equal(createHash('md5').update(readFileSync(image).subarray(0, 8 * MiB)).digest('hex'), run.results.get('pattern-md5'), 'the image holds it');
    assertClean(m);
  }),
);

guestTest('QEMU (reconnect=1) + Linux <-> virtio-ts monitor <-> virtio-ts serve blk: serve killed mid-session and started again; the next session through the same proxy serves the guest', () =>
  withImage(async (image) => {
    const m = fresh();
    let restarted = false;
    const run = await boot({
      kind: 'blk',
      test: 'stopcont',
      device: 'vhost-user-blk-pci,chardev=c0,num-queues=1',
      serveArgs: ['--image', image],
      reconnect: true,
      interpose: monitorBetween(m),
      during: async (g) => {
        await g.waitFor(/VT-RESULT stopcont-ready/);
        await new Promise((r) => setTimeout(r, 150));
        await g.restartServe();
        restarted = true;
      },
      timeoutMs: 120_000,
    });
    assert.ok(restarted, m.stderr);
    assertWritten(run, image, STOPCONT_BYTES);
    noViolations(run);
    assert.ok(m.report !== null);
    assert.ok(m.report.sessions.length >= 2, `a second session after the restart: ${JSON.stringify(m.report.sessions.map((s) => s.reason))}`);
    assert.match(m.report.sessions[0].reason ?? '', /back-end/, 'the first session ended with the back-end');
    assert.deepEqual(m.verdicts, [], m.verdicts.map((v) => `${v.clause}: ${v.message}`).join('\n'));
  }),
);

