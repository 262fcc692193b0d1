// The TAP frame port (src/node/net/tap-port.ts) against the real kernel, in a network namespace
// made for each case (`unshare -n`: the TAP, its address and every frame exist only there and
// vanish with the child; the host's interfaces are never touched). NetDriver <-> NetDevice <->
// TapFramePort: the kernel answers ARP and ICMP, a UDP socket gets the driver's datagram (sent
// with a partial checksum: with the virtio_net_hdr it passes to the kernel, without it the port
// fills it; a wrong checksum would be dropped by the kernel) and answers it. And the error kinds
// with the kernel's own refusals: not a TAP, in use, no CAP_NET_ADMIN, no /dev/net/tun.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { TapFramePort } from '../../src/node/net/tap-port.js';
import { NetPortError } from '../../src/node/net/errors.js';
import { missingPrerequisite } from '../prerequisites.js';

const CHILD = fileURLToPath(new URL('./tap-netns-child.js', import.meta.url));

/** Why namespaces with a TAP cannot be made here, or undefined. */
function cannot(): string | undefined {
  if (!existsSync('/dev/net/tun')) return 'no /dev/net/tun';
  const r = spawnSync('unshare', ['-n', 'true'], { encoding: 'utf8' });
  if (r.status !== 0) return `unshare -n does not work here (${(r.stderr || r.error?.message || '').trim()}): needs root or user namespaces`;
  return undefined;
}

function inNetns(t: TestContext, argv: string[], wrap: string[] = []): Record<string, unknown> | undefined {
  const why = cannot();
  if (why !== undefined) {
    missingPrerequisite(t, why);
    return undefined;
  }
  // The child bounds each of its waits itself (20 s); this bound only keeps a hang from lasting.
  const r = spawnSync('unshare', [...wrap, process.execPath, CHILD, ...argv], { encoding: 'utf8', timeout: 90_000 });
  assert.equal(r.status, 0, `child ${argv.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr}`);
  const last = r.stdout.trim().split('\n').pop()!;
  return JSON.parse(last) as Record<string, unknown>;
}

for (const mode of ['vnet', 'plain'] as const) {
  test(`TAP port (${mode === 'vnet' ? 'virtio_net_hdr, offloads passed' : 'no header, offloads completed'}): NetDriver <-> NetDevice <-> TAP, the kernel answers ARP, ICMP and UDP`, (t) => {
    const r = inNetns(t, ['traffic', mode], ['-n']);
    if (r === undefined) return;
    assert.equal(r.tapName, 'vt0');
    assert.equal(r.vnetHdr, mode === 'vnet');
    assert.equal(r.arpSender, r.tapMac, 'the ARP reply names the TAP interface');
    assert.equal(r.arpIp, '169.254.0.2');
    assert.equal(r.icmpSame, true, 'the echo reply carries the payload back');
    assert.equal(r.udpToHost, true, 'the host socket got the datagram (its checksum passed the kernel)');
    assert.equal(r.udpFromHost, true, 'the driver got the host datagram with a valid checksum');
    // With the header and GUEST_CSUM negotiated, TUNSETOFFLOAD lets the kernel leave the checksum
    // partial; without the header the kernel finishes every frame.
    assert.equal(r.udpFromHostNeedsCsum, mode === 'vnet');
    assert.equal((r.receiveOffloads as { csum: boolean }).csum, mode === 'vnet');
    const c = r.counters as { dropped: number; malformed: number; droppedDown: number };
    assert.deepEqual([c.dropped, c.malformed, c.droppedDown], [0, 0, 0]);
    assert.equal(r.verdicts, 0);
  });
}

test('TAP port errors: lo is not a TAP, a held TAP is in use, bad names; the interface deleted under the port takes the link down', (t) => {
  const r = inNetns(t, ['errors'], ['-n']);
  if (r === undefined) return;
  assert.equal(r.lo, 'not-a-tap');
  assert.equal(r.twice, 'name-in-use');
  assert.equal(r.badName, 'bad-name');
  assert.equal(r.tooLong, 'bad-name');
  assert.deepEqual(r.downs, [false]);
  assert.equal(r.linkUp, false);
  assert.equal(r.sentAfter, false);
});

test('TAP port errors: without CAP_NET_ADMIN, permission-denied', (t) => {
  if (spawnSync('setpriv', ['--version']).status !== 0) return missingPrerequisite(t, 'setpriv (util-linux)');
  const r = inNetns(t, ['open'], ['-n', 'setpriv', '--inh-caps=-all', '--bounding-set=-all']);
  if (r === undefined) return;
  assert.equal(r.kind, 'permission-denied');
});

test('TAP port errors: without /dev/net/tun, tun-missing', (t) => {
  // A mount namespace with an empty /dev/net: the host's device node is not touched.
  const r = inNetns(t, ['open'], ['-n', '-m', 'sh', '-c', 'mount -t tmpfs none /dev/net && exec "$0" "$@"']);
  if (r === undefined) return;
  assert.equal(r.kind, 'tun-missing');
});

test('TAP port: a bad name is refused before the kernel is asked', () => {
  for (const name of ['', '.', '..', 'a b', 'a:b', 'x'.repeat(16)]) {
    assert.throws(() => TapFramePort.open(name), (e: unknown) => e instanceof NetPortError && e.kind === 'bad-name', name);
  }
});
