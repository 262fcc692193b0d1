// Issue 15, QEMU's -netdev dgram: a guest with QEMU's own virtio-net-pci on a unix datagram
// netdev joins `virtio-ts switch --dgram LOCAL,REMOTE --tap vt1`, run in a network namespace the
// test makes (netns-guest.ts); through the switch it pings vt1's address there and moves 8 MiB
// each way with the host's responder, by md5. The switch's dgram port is the only way the
// guest's frames reach anything: a framing or addressing mistake fails the ping.
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { guestTest } from './harness.js';
import { spawnLogged } from './net-guests.js';
import { guestInNetns } from './netns-guest.js';

const MAC = '52:54:00:17:00:02';

guestTest('a guest with QEMU\'s virtio-net on -netdev dgram reaches a TAP through `virtio-ts switch --dgram`: ping, 8 MiB each way by md5', async () => {
  const { log, dir } = await guestInNetns({
    hostIp: '169.254.17.1', guestIp: '169.254.17.2', mac: MAC, mb: 8, ifname: 'vt1',
    backend: async (inNs, d, l) => {
      const sw = join(d, 'switch.dgram');
      const vm = join(d, 'qemu.dgram');
      const child = spawnLogged(['switch', '--dgram', `${sw},${vm}`, '--tap', 'vt1', '--log-format', 'json'], l, inNs);
      // The switch's start line says its ports are open (the TAP exists, the socket is bound).
      for (let i = 0; i < 3000 && !/"event":"start"/.test(l.text); i++) await new Promise((r) => setTimeout(r, 10));
      assert.match(l.text, /"event":"start"/, `the switch started: ${l.text}`);
      const netArgs = [
        '-netdev', `dgram,id=n0,local.type=unix,local.path=${vm},remote.type=unix,remote.path=${sw}`,
        '-device', `virtio-net-pci,netdev=n0,mac=${MAC}`,
      ];
      return { child, netArgs };
    },
  });
  assert.match(log, /dgram .*switch\.dgram -> .*qemu\.dgram/);
  rmSync(dir, { recursive: true, force: true });
});
