// Issue 15, TAP with a real guest: `virtio-ts serve net --tap vt0` runs in a network namespace
// the test makes, where vt0 gets a link-local address and a host process answers on it
// (netns-guest.ts). A QEMU guest on -netdev vhost-user pings vt0's address, sends 8 MiB to the
// responder and takes 8 MiB from it, both by md5. serve's monitor: zero verdicts, the TAP
// counted frames both ways and was told the guest's offloads (its --report and log).
import assert from 'node:assert/strict';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { guestTest } from './harness.js';
import { spawnLogged, waitFile } from './net-guests.js';
import { guestInNetns } from './netns-guest.js';

const MAC = '52:54:00:16:00:02';

guestTest('a guest reaches a TAP interface in a network namespace (serve net --tap): ping, 8 MiB each way by md5', async () => {
  const { log, dir } = await guestInNetns({
    hostIp: '169.254.16.1', guestIp: '169.254.16.2', mac: MAC, mb: 8, ifname: 'vt0',
    backend: async (inNs, d, l) => {
      const sock = join(d, 'net.sock');
      const child = spawnLogged(['serve', 'net', '--socket-path', sock, '--mac', MAC, '--tap', 'vt0', '--report', join(d, 'serve.json'), '--log-format', 'json'], l, inNs);
      await waitFile(sock, () => l.text);
      return { child, sock };
    },
  });
  // The offloads crossed as metadata: TUNSETOFFLOAD took the guest's (serve logs what it set).
  assert.match(log, /TAP vt0: the kernel may pass csum, tso4/, 'the guest negotiated the offloads and the TAP was told');
  const report = join(dir, 'serve.json');
  assert.ok(existsSync(report), `serve wrote its report: ${log.slice(-2000)}`);
  const r = JSON.parse(readFileSync(report, 'utf8')) as { totals: { verdicts: number }; clauses: unknown[]; counters: Record<string, number> };
  assert.deepEqual([r.totals.verdicts, r.clauses], [0, []], "serve's monitor verdicts");
  assert.ok(r.counters.tapRxFrames > 0 && r.counters.tapTxFrames > 0, `frames crossed the TAP both ways: ${JSON.stringify(r.counters)}`);
  assert.equal(r.counters.tapMalformed, 0);
  process.stdout.write(`# TAP counters: ${JSON.stringify(r.counters)}\n`);
  rmSync(dir, { recursive: true, force: true });
});
