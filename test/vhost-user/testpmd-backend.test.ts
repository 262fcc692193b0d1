// DPDK testpmd's vhost-user back-end (`--vdev net_vhost0,iface=SOCK`) driven by the project's
// VhostUserFrontEnd + NetDriver, with no VM: testpmd forwards in macswap mode on its one port
// (`--port-topology=loop`), so every frame NetDriver sends comes back with its MAC addresses
// swapped; each is checked byte for byte, on split and packed rings. The driver's monitor judges
// testpmd: it offers VIRTIO_NET_F_HOST_ECN without HOST_TSO4/TSO6 unless the vhost PMD's TSO is
// on (devarg tso=1), which breaks basic.features.device.1 (docs/findings.md, N1).
//
// vhost-user net leaves the configuration space to the front-end (QEMU keeps mac, status and
// mtu itself; testpmd offers no VHOST_USER_PROTOCOL_F_CONFIG), and the control queue too (QEMU
// handles it; the back-end gets the data queues only): NetDriver accepts only features that need
// neither (MRG_RXBUF, the checksum offloads).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bit } from '../../src/spec/features.js';
import { Feature } from '../../src/spec/constants.js';
import { NET_FEATURES as F } from '../../src/spec/net.js';
import { DeviceId } from '../../src/spec/constants.js';
import { Monitor } from '../../src/monitor/monitor.js';
import { NetDriver } from '../../src/drivers/net.js';
import { VhostUserFrontEnd } from '../../src/transports/vhost-user/frontend/front-end.js';
import { missingPrerequisite } from '../prerequisites.js';
import { haveTestpmd, startTestpmd, testpmdArgs } from '../testpmd.js';
import { until } from '../wait.js';
import { scratch, PACKED, SPLIT } from './frontend-peers.js';

const MAC = [0x02, 0, 0, 0, 0, 0x01];
const PEER = [0x02, 0, 0, 0, 0, 0x02];

function frame(i: number): Uint8Array {
  const len = 60 + ((i * 97) % 1455); // 60..1514 bytes
  const f = new Uint8Array(len);
  f.set(PEER, 0);
  f.set(MAC, 6);
  f[12] = 0x88;
  f[13] = 0xb5;
  for (let k = 14; k < len; k++) f[k] = (k * 31 + i) & 0xff;
  return f;
}

const CELLS = [
  { name: 'split ring, vhost PMD defaults', transport: SPLIT, devargs: '', expect: ['basic.features.device.1'] },
  { name: 'packed ring, vhost PMD defaults', transport: PACKED | bit(Feature.IN_ORDER), devargs: '', expect: ['basic.features.device.1'] },
  { name: 'split ring, tso=1', transport: SPLIT, devargs: ',tso=1', expect: [] },
];

for (const cell of CELLS) {
  test(`testpmd net_vhost back-end + VhostUserFrontEnd + NetDriver, macswap: ${cell.name}`, async (t) => {
    if (!haveTestpmd()) return missingPrerequisite(t, 'dpdk-testpmd (Debian package dpdk-dev)');
    const s = scratch('vt-testpmd-');
    const sock = `${s.dir}/vhost.sock`;
    const pmd = startTestpmd(testpmdArgs([`net_vhost0,iface=${sock},queues=1${cell.devargs}`], ['--forward-mode=macswap', '--port-topology=loop']));
    t.after(async () => {
      await pmd.stop();
      s.remove();
    });
    await pmd.waitFor('forwards packets on', 'testpmd to forward');
    const fe = await VhostUserFrontEnd.connect({ socketPath: sock, deviceId: DeviceId.NET, numQueues: 2, timeoutMs: 20_000 });
    t.after(() => fe.close());
    const monitor = new Monitor({ mode: 'tolerant' });
    const d = new NetDriver(fe, { monitor, transportFeatures: cell.transport, features: bit(F.MRG_RXBUF) | bit(F.CSUM) | bit(F.GUEST_CSUM), queueSize: 256 });
    await d.start();
    assert.equal(d.negotiated(Feature.RING_PACKED), (cell.transport & bit(Feature.RING_PACKED)) !== 0n);
    assert.ok(d.negotiated(F.MRG_RXBUF));
    const got: Uint8Array[] = [];
    d.onFrame = (f) => got.push(f.slice());
    // In windows of 32 (fewer than the 256 receive buffers): testpmd, like any Ethernet peer,
    // drops a frame when the driver has no receive buffer for it, and this test counts on none.
    const N = 512;
    for (let w = 0; w < N; w += 32) {
      for (let i = w; i < w + 32; i++) assert.ok(d.send(frame(i)), `frame ${i} queued`);
      d.flush();
      await until(() => got.length === w + 32, `frames ${w}..${w + 31} back from testpmd`, 30_000);
    }
    for (let i = 0; i < N; i++) {
      const want = frame(i);
      want.set(MAC, 0);
      want.set(PEER, 6);
      assert.deepEqual(got[i], want, `frame ${i}`);
    }
    assert.deepEqual([...new Set(monitor.verdicts.map((v) => v.clause))], cell.expect, monitor.verdicts.map((v) => v.message).join('\n'));
    d.close();
  });
}
