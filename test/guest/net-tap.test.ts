// Issue 15, TAP with a real guest: `virtio-ts serve net --tap vt0` runs in a network namespace
// the test makes (ip netns add), where the test gives vt0 a link-local address and brings it up
// (serve never configures an interface) and a host process (test/guest/tap-responder.ts) answers
// on it. A QEMU guest on -netdev vhost-user pings vt0's address, sends 8 MiB to the responder
// and takes 8 MiB from it, both by md5. Nothing leaves the namespace; it is deleted at the end.
// serve's monitor: zero verdicts, and the TAP counted frames both ways (its --report).
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { guestTest } from './harness.js';
import { runGuest, spawnLogged, stop, waitFile } from './net-guests.js';

const RESPONDER = fileURLToPath(new URL('./tap-responder.js', import.meta.url));
const HOST_IP = '169.254.16.1';
const GUEST_IP = '169.254.16.2';
const GUEST_MAC = '52:54:00:16:00:02';
const MB = 8;

function ip(...args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `ip ${args.join(' ')}: ${r.stderr}${r.error?.message ?? ''} (the TAP guest test needs root: ip netns, /dev/net/tun)`);
}

guestTest(`a guest reaches a TAP interface in a network namespace (serve net --tap): ping, ${MB} MiB each way by md5`, async () => {
  const ns = `vt-tap-${process.pid}`;
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-tap-'));
  const sock = join(dir, 'net.sock');
  const report = join(dir, 'serve.json');
  const log = { text: '' };
  ip('netns', 'add', ns);
  const inNs = ['ip', 'netns', 'exec', ns];
  const serve = spawnLogged(['serve', 'net', '--socket-path', sock, '--mac', GUEST_MAC, '--tap', 'vt0', '--report', report, '--log-format', 'json'], log, inNs);
  let responder: ReturnType<typeof spawn> | undefined;
  let responderOut = '';
  let responderErr = '';
  try {
    await waitFile(sock, () => log.text);
    // The user's part (README): the address and the link are set by the test, inside the namespace.
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    ip('-n', ns, 'addr', 'add', `${HOST_IP}/16`, 'dev', 'vt0');
    ip('-n', ns, 'link', 'set', 'vt0', 'up');
    responder = spawn('ip', ['netns', 'exec', ns, process.execPath, RESPONDER, HOST_IP, GUEST_IP, String(MB)], { stdio: ['ignore', 'pipe', 'pipe'] });
    responder.stderr!.on('data', (d) => (responderErr += d));
    const listening = new Promise<void>((res, rej) => {
      createInterface({ input: responder!.stdout! }).on('line', (l) => {
        responderOut += l + '\n';
        if (l.startsWith('LISTENING')) res();
      });
      responder!.once('exit', (code) => rej(new Error(`the responder exited ${code} before listening: ${responderErr}`)));
    });
    await listening;
    const responderDone = new Promise<number | null>((res) => responder!.once('exit', (code) => res(code)));
    // vectors=0: see net-guests.ts (QEMU 7.2 TCG + vhost-user-net + MSI-X crash, docs/findings.md).
    const g = await runGuest(sock, GUEST_MAC, 'vectors=0', `vt.ip=${GUEST_IP} vt.host=${HOST_IP} vt.mb=${MB}`, 100_000, 'tap');
    const code = await Promise.race([responderDone, new Promise<string>((r) => setTimeout(() => r('still running'), 20_000).unref())]);
    const where = `\nguest:\n${g.console.slice(-2000)}\nserve:\n${log.text.slice(-2000)}\nresponder:\n${responderOut}${responderErr}`;
    assert.equal(g.results.get('ping'), 'ok', `the guest pings vt0's address${where}`);
    assert.equal(g.results.get('net-error'), undefined, where);
    assert.equal(code, 0, `the responder finished${where}`);
    const up = /^UP ([0-9a-f]{32}) (\d+)$/m.exec(responderOut);
    const down = /^DOWN ([0-9a-f]{32}) (\d+)$/m.exec(responderOut);
    assert.ok(up && down, where);
    assert.equal(up[2], String(MB << 20), 'the host got every byte');
    assert.equal(up[1], g.results.get('up-md5'), 'the host got what the guest sent');
    assert.equal(g.results.get('down-md5'), down[1], 'the guest got what the host sent');
    // The offloads crossed as metadata: TUNSETOFFLOAD took the guest's (serve logs what it set).
    assert.match(log.text, /TAP vt0: the kernel may pass csum, tso4/, 'the guest negotiated the offloads and the TAP was told');
  } finally {
    if (responder !== undefined) await stop(responder);
    await stop(serve);
    spawnSync('ip', ['netns', 'del', ns]);
  }
  assert.ok(existsSync(report), `serve wrote its report: ${log.text.slice(-2000)}`);
  const r = JSON.parse(readFileSync(report, 'utf8')) as { totals: { verdicts: number }; clauses: unknown[]; counters: Record<string, number> };
  assert.deepEqual([r.totals.verdicts, r.clauses], [0, []], "serve's monitor verdicts");
  assert.ok(r.counters.tapRxFrames > 0 && r.counters.tapTxFrames > 0, `frames crossed the TAP both ways: ${JSON.stringify(r.counters)}`);
  assert.equal(r.counters.tapMalformed, 0);
  process.stdout.write(`# TAP counters: ${JSON.stringify(r.counters)}\n`);
  rmSync(dir, { recursive: true, force: true });
});
