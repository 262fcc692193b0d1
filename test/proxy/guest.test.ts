// QEMU + Linux <-> `virtio-ts monitor` <-> a real back-end (`virtio-ts serve blk`,
// qemu-storage-daemon): the guest's block workload goes through the proxy (dd with md5, checked
// on the host), the proxy watched the rings and reports zero verdicts but catalogued known
// deviations; a back-end killed mid-session and started again serves the next session through
// the same proxy (QEMU reconnect=1); a QEMU that goes mid-I/O ends its session only, and the
// next QEMU is served through the same proxy by the same back-end.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, symlinkSync } from 'node:fs';
import { STOPCONT_BYTES, assertWritten, bin, boot, guestTest, noViolations, withImage, type BootOptions } from '../guest/harness.js';
import { withSparseImage } from '../guest/workload-guest.js';
import { QSD } from '../vhost-user/frontend-peers.js';
import type { ProxyVerdict } from '../../src/proxy/proxy.js';
import type { MonitorReport } from '../../src/proxy/report.js';

const MiB = 1 << 20;

/** What the monitor CLI said: its live JSON verdicts, its report, its stderr. */
interface MonitorRun {
  verdicts: ProxyVerdict[];
  report: MonitorReport | null;
  stderr: string;
  exitCode: number | null;
}

/**
 * `virtio-ts monitor --json --report` between QEMU and the back-end at `backend`: resolves once
 * it listens; `close` sends SIGTERM and fills `run`.
 */
function monitorBetween(run: MonitorRun): NonNullable<BootOptions['interpose']> {
  return async (backend) => {
    const listen = `${backend}.proxy`;
    const reportFile = `${backend}.report.json`;
    const child: ChildProcess = spawn(process.execPath, [bin, 'monitor', '--listen', listen, '--connect', backend, '--json', '--report', reportFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (run.stderr += d));
    const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
    for (let i = 0; i < 3000 && !run.stderr.includes('listening on'); i++) {
      if (child.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.ok(run.stderr.includes('listening on'), `virtio-ts monitor did not listen: ${run.stderr}`);
    return {
      path: listen,
      close: async () => {
        child.kill('SIGTERM');
        run.exitCode = await exited;
        run.verdicts = stdout.split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as ProxyVerdict);
        run.report = existsSync(reportFile) ? (JSON.parse(readFileSync(reportFile, 'utf8')) as MonitorReport) : null;
      },
    };
  };
}

const fresh = (): MonitorRun => ({ verdicts: [], report: null, stderr: '', exitCode: null });

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

for (const [ring, prop] of [['split', ''], ['packed', ',packed=on']] as const) {
  guestTest(`QEMU + Linux <-> virtio-ts monitor <-> virtio-ts serve blk --seg-max 1022 (${ring}): the only verdicts are the catalogued known deviation ${ring}.indirect-descs.driver.3, named by the proxy and by serve alike`, () =>
    withSparseImage(16, async (image) => {
      const m = fresh();
      const run = await boot({
        kind: 'blk',
        test: 'bigdd',
        device: `vhost-user-blk-pci,chardev=c0,queue-size=128${prop}`,
        serveArgs: ['--image', image, '--seg-max', '1022', '--tolerant'],
        memoryMiB: 512,
        timeoutMs: 120_000,
        interpose: monitorBetween(m),
      });
      assert.equal(run.results.get('readback-md5'), run.results.get('pattern-md5'), 'the guest read back what it wrote');
      assert.ok(m.verdicts.length > 0, `the proxy saw the long tables: ${m.stderr}`);
      for (const v of m.verdicts) {
        assert.equal(v.clause, `${ring}.indirect-descs.driver.3`, v.message);
        assert.equal(v.side, 'driver');
        assert.equal(v.severity, 'violation');
        assert.match(v.deviation?.driver ?? '', /Linux/, 'marked as the known deviation');
        assert.equal(v.queue, 0);
      }
      assert.match(run.serveLog, new RegExp(`"clause":"${ring}\\.indirect-descs\\.driver\\.3"`), 'serve names the same clause');
      assert.equal(m.report?.summary.clean, true, 'known deviations only: clean');
      assert.equal(m.exitCode, 0);
    }),
  );
}

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
