// NetDriver with the project's own net device (src/devices/net) over the loopback, two of them
// on a NetSwitch: frames both ways byte for byte, on split and packed rings, with and without
// MRG_RXBUF, with the offloads negotiated (a TSO frame from one driver reaches the other whole,
// with its GSO metadata) and without; link state and the control queue; zero verdicts on all
// four monitors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Monitor } from '../../src/monitor/monitor.js';
import { LoopbackTransport } from '../../src/transports/loopback/loopback.js';
import { NetDevice } from '../../src/devices/net/device.js';
import { NetSwitch } from '../../src/net/switch.js';
import { NetDriver, NET_DRIVER_FEATURES } from '../../src/drivers/net.js';
import { Feature } from '../../src/spec/constants.js';
import { bit } from '../../src/spec/features.js';
import { NET_FEATURES as F } from '../../src/spec/net.js';
import { ether } from '../net-rig.js';
import { until } from '../wait.js';

const MAC_A = Uint8Array.of(2, 0, 0, 0, 0, 0xa);
const MAC_B = Uint8Array.of(2, 0, 0, 0, 0, 0xb);

async function side(mac: Uint8Array, packed: boolean, features: bigint) {
  const devMon = new Monitor({ mode: 'tolerant' });
  const drvMon = new Monitor({ mode: 'tolerant' });
  const device = new NetDevice({ mac, monitor: devMon, queueMaxSize: 128 });
  if (!packed) device.withholdFeatures(bit(Feature.RING_PACKED));
  const transport = new LoopbackTransport(device, GuestMemory.create(32 << 20), { mode: 'sync' });
  const transportFeatures = bit(Feature.VERSION_1) | bit(Feature.INDIRECT_DESC) | bit(Feature.EVENT_IDX) | (packed ? bit(Feature.RING_PACKED) : 0n);
  const driver = new NetDriver(transport, { monitor: drvMon, transportFeatures, features, queueSize: 128 });
  await driver.start();
  return { device, driver, devMon, drvMon };
}

for (const packed of [false, true]) {
  for (const mrg of [true, false]) {
    for (const offloads of [true, false]) {
      const name = `${packed ? 'packed' : 'split'}, MRG_RXBUF ${mrg ? 'on' : 'off'}, offloads ${offloads ? 'on' : 'off'}`;
      test(`NetDriver + NetDevice + NetSwitch (${name}): frames both ways, byte for byte`, async () => {
        let features = NET_DRIVER_FEATURES;
        if (!mrg) features &= ~bit(F.MRG_RXBUF);
        if (!offloads) features &= ~(bit(F.CSUM) | bit(F.GUEST_CSUM) | bit(F.HOST_TSO4) | bit(F.HOST_TSO6) | bit(F.HOST_ECN) | bit(F.HOST_UFO) | bit(F.HOST_USO) | bit(F.GUEST_TSO4) | bit(F.GUEST_TSO6) | bit(F.GUEST_ECN) | bit(F.GUEST_UFO) | bit(F.GUEST_USO4) | bit(F.GUEST_USO6));
        const a = await side(MAC_A, packed, features);
        const b = await side(MAC_B, packed, features);
        const sw = new NetSwitch();
        sw.attach(a.device.port);
        sw.attach(b.device.port);
        assert.deepEqual([...a.driver.mac], [...MAC_A]);
        assert.equal(a.driver.negotiated(F.MRG_RXBUF), mrg);
        const atB: Uint8Array[] = [];
        const atA: Uint8Array[] = [];
        b.driver.onFrame = (f) => atB.push(f.slice());
        a.driver.onFrame = (f) => atA.push(f.slice());
        const out: Uint8Array[] = [];
        for (let i = 0; i < 100; i++) out.push(ether([...MAC_B], [...MAC_A], new Uint8Array(46 + ((i * 131) % 1454)).map((_, k) => (k + i) & 0xff)));
        for (const f of out) assert.ok(await a.driver.write(f).then(() => true));
        a.driver.flush();
        await until(() => atB.length === out.length, 'all frames at B');
        assert.deepEqual(atB, out);
        const back = ether([...MAC_A], [...MAC_B], 'reply');
        assert.ok(b.driver.send(back));
        b.driver.flush();
        await until(() => atA.length === 1, 'the reply at A');
        assert.deepEqual(atA[0], back);
        // Link down on A's device: the driver sees it (STATUS + configuration change).
        const changes: boolean[] = [];
        a.driver.onLinkChange = (up) => changes.push(up);
        a.device.setLink(false);
        await until(() => changes.length === 1, 'link down at A');
        assert.equal(a.driver.linkUp, false);
        // An announce request: the driver sends its RARP and acks (the device clears ANNOUNCE).
        a.device.setLink(true);
        assert.ok(b.device.announce());
        await until(() => b.driver.counts.announces === 1 && b.driver.counts.controlCommands === 1, 'the announce ack');
        await a.driver.setPromisc(true);
        for (const s of [a, b]) {
          assert.deepEqual(s.devMon.verdicts, [], 'device monitor');
          assert.deepEqual(s.drvMon.verdicts, [], 'driver monitor');
        }
        a.driver.close();
        b.driver.close();
      });
    }
  }
}
