// The net device (src/devices/net) with a raw driver peer over the loopback transport, two of
// them joined on a NetSwitch: frames both ways, MRG_RXBUF and big buffers, offloads passed
// through or completed/segmented for a guest without them, control queue filters, MAC address,
// link state, announce, multiqueue, and the bounded hold when the guest has no buffers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Monitor } from '../../src/monitor/monitor.js';
import { LoopbackTransport } from '../../src/transports/loopback/loopback.js';
import { NetDevice, type NetDeviceOptions } from '../../src/devices/net/device.js';
import { formatMac } from '../../src/net/mac.js';
import { NetTestPeer, NET_PEER_ALL_FEATURES, type NetTestPeerOptions } from '../../src/testing/net-peer.js';
import { NetSwitch } from '../../src/net/switch.js';
import { Feature } from '../../src/spec/constants.js';
import { bit } from '../../src/spec/features.js';
import { NET_CONFIG, NET_CTRL, NET_FEATURES as F, NET_HDR_F, NET_HDR_GSO, NET_STATUS } from '../../src/spec/net.js';
import { BROADCAST, MAC_A, MAC_B, checksumsValid, ether, ipFrame, l4Payload, pattern } from './frames.js';
import { until } from '../wait.js';
import { offloadCounters } from '../../src/net/offload.js';
void offloadCounters;

interface Side {
  device: NetDevice;
  peer: NetTestPeer;
  devMon: Monitor;
  drvMon: Monitor;
}

async function side(mac: Uint8Array, dev: NetDeviceOptions = {}, peer: NetTestPeerOptions = {}, packed = false): Promise<Side> {
  const devMon = new Monitor();
  const drvMon = new Monitor();
  const device = new NetDevice({ mac, monitor: devMon, queueMaxSize: 64, ...dev });
  if (!packed) device.withholdFeatures(bit(Feature.RING_PACKED));
  const transport = new LoopbackTransport(device, GuestMemory.create(8 << 20), { mode: 'sync' });
  const transportFeatures = bit(Feature.VERSION_1) | bit(Feature.INDIRECT_DESC) | bit(Feature.EVENT_IDX) | (packed ? bit(Feature.RING_PACKED) : 0n);
  const p = new NetTestPeer(transport, { monitor: drvMon, transportFeatures, ...peer });
  await p.start();
  return { device, peer: p, devMon, drvMon };
}

const NO_GUEST_OFFLOADS = NET_PEER_ALL_FEATURES & ~(bit(F.GUEST_CSUM) | bit(F.GUEST_TSO4) | bit(F.GUEST_TSO6) | bit(F.GUEST_ECN) | bit(F.GUEST_UFO) | bit(F.GUEST_USO4) | bit(F.GUEST_USO6));

function clean(...sides: Side[]): void {
  for (const s of sides) {
    assert.deepEqual(s.devMon.verdicts, [], 'device monitor');
    assert.deepEqual(s.drvMon.verdicts, [], 'driver monitor');
  }
}

for (const packed of [false, true]) {
  for (const mrg of [true, false]) {
    const ring = `${packed ? 'packed' : 'split'}, MRG_RXBUF ${mrg ? 'on' : 'off'}`;
    const feats = mrg ? NET_PEER_ALL_FEATURES : NET_PEER_ALL_FEATURES & ~bit(F.MRG_RXBUF);

    test(`net pair (${ring}): unicast and broadcast both ways through the switch, MAC learning`, async () => {
      const a = await side(MAC_A, {}, { netFeatures: feats }, packed);
      const b = await side(MAC_B, {}, { netFeatures: feats, rxBufferSize: mrg ? 2048 : 65562 + 20 }, packed);
      const sw = new NetSwitch();
      sw.attach(a.device.port);
      sw.attach(b.device.port);
      assert.equal(a.peer.headerLength, 12);
      // A broadcast from A floods to B; B's reply to A is unicast (A was learned).
      const hello = ether(BROADCAST, MAC_A, 0x0806, pattern(46));
      a.peer.transmit(a.peer.header(), hello);
      await until(() => b.peer.received.length === 1, 'B gets the broadcast');
      assert.deepEqual(b.peer.received[0].frame, hello);
      assert.deepEqual(b.peer.received[0].header, new Uint8Array(12).fill(0).map((_, i) => (i === 10 ? 1 : 0)), 'plain header, num_buffers 1');
      const reply = ether(MAC_A, MAC_B, 0x0806, pattern(46, 7));
      b.peer.transmit(b.peer.header(), reply);
      await until(() => a.peer.received.length === 1, 'A gets the reply');
      assert.deepEqual(a.peer.received[0].frame, reply);
      assert.equal(sw.counters.unicast, 1);
      assert.equal(sw.counters.flooded, 1);
      assert.equal(sw.lookup(Number('0x' + formatMac(MAC_B).replaceAll(':', '')))?.name, 'virtio-net');
      // A 9000-byte frame (jumbo, no MTU offered): spans buffers with MRG_RXBUF, one big buffer without.
      const big = ether(MAC_B, MAC_A, 0x88b5, pattern(9000, 3));
      a.peer.transmit(a.peer.header(), big);
      await until(() => b.peer.received.length === 2, 'B gets the big frame');
      assert.deepEqual(b.peer.received[1].frame, big);
      if (mrg) {
        assert.equal(b.peer.received[1].lens.length, Math.ceil((9000 + 14 + 12) / 2048));
        assert.ok(b.peer.received[1].lens.slice(0, -1).every((l) => l === 2048), 'every buffer but the last filled');
      } else assert.equal(b.peer.received[1].lens.length, 1);
      assert.equal(a.device.counters.txFrames, 2);
      assert.equal(b.device.counters.rxFrames, 2);
      clean(a, b);
    });

    test(`net pair (${ring}): TSO frames pass to a guest with GUEST_TSO4 and are segmented with checksums for one without`, async () => {
      const a = await side(MAC_A, {}, { netFeatures: feats }, packed);
      const bigBuf = mrg ? 2048 : 65562 + 20;
      const withTso = await side(MAC_B, {}, { netFeatures: feats, rxBufferSize: bigBuf }, packed);
      const macC = Uint8Array.of(0x52, 0x54, 0, 0, 0, 0x0c);
      const without = await side(macC, {}, { netFeatures: mrg ? NO_GUEST_OFFLOADS : NO_GUEST_OFFLOADS & ~bit(F.MRG_RXBUF), rxBufferSize: 2048, rxBuffers: 32 }, packed);
      const sw = new NetSwitch();
      for (const s of [a, withTso, without]) sw.attach(s.device.port);
      // B and C speak first, so the switch learns them and sends each only its own frames.
      withTso.peer.transmit(withTso.peer.header(), ether(BROADCAST, MAC_B, 0x88b5, pattern(50)));
      without.peer.transmit(without.peer.header(), ether(BROADCAST, macC, 0x88b5, pattern(50)));
      await until(() => a.peer.received.length === 2, 'A hears both');
      withTso.peer.received.length = 0;
      without.peer.received.length = 0;
      const payload = pattern(20000, 11);
      for (const [dst, v6] of [[MAC_B, false], [macC, false], [MAC_B, true], [macC, true]] as const) {
        const { frame, l4 } = ipFrame({ proto: 'tcp', payload, dst, partial: true, v6 });
        const hdr = a.peer.header({ flags: NET_HDR_F.NEEDS_CSUM, gsoType: v6 ? NET_HDR_GSO.TCPV6 : NET_HDR_GSO.TCPV4, gsoSize: 1448, hdrLen: l4 + 20, csumStart: l4, csumOffset: 16 });
        a.peer.transmit(hdr, frame);
      }
      await until(() => withTso.peer.received.length === 2, 'the TSO guest gets two frames');
      for (const f of withTso.peer.received) {
        const h = new DataView(f.header.buffer);
        assert.equal(h.getUint8(0), NET_HDR_F.NEEDS_CSUM);
        assert.ok(h.getUint8(1) === NET_HDR_GSO.TCPV4 || h.getUint8(1) === NET_HDR_GSO.TCPV6);
        assert.equal(h.getUint16(4, true), 1448);
        assert.deepEqual(l4Payload(f.frame), payload);
      }
      const segs = Math.ceil(20000 / 1448);
      await until(() => without.peer.received.length === 2 * segs, 'the plain guest gets segments');
      for (const v6 of [false, true]) {
        const got = without.peer.received.slice(v6 ? segs : 0, v6 ? 2 * segs : segs);
        const joined = new Uint8Array(20000);
        let off = 0;
        for (const f of got) {
          assert.ok(checksumsValid(f.frame), 'segment checksums valid');
          assert.ok(f.frame.length <= 1514 + 40 - 20);
          assert.deepEqual(f.header.subarray(0, 10), new Uint8Array(10), 'no offload flags to a guest without GUEST_CSUM');
          const p = l4Payload(f.frame);
          joined.set(p, off);
          off += p.length;
        }
        assert.equal(off, 20000);
        assert.deepEqual(joined, payload);
      }
      clean(a, withTso, without);
    });
  }
}

test('net: a partial checksum is completed for a guest without GUEST_CSUM and passed through to one with it; UDP too', async () => {
  const a = await side(MAC_A);
  const withCsum = await side(MAC_B);
  const macC = Uint8Array.of(0x52, 0x54, 0, 0, 0, 0x0c);
  const without = await side(macC, {}, { netFeatures: NO_GUEST_OFFLOADS });
  const sw = new NetSwitch();
  for (const s of [a, withCsum, without]) sw.attach(s.device.port);
  withCsum.peer.transmit(withCsum.peer.header(), ether(BROADCAST, MAC_B, 0x88b5, pattern(50)));
  without.peer.transmit(without.peer.header(), ether(BROADCAST, macC, 0x88b5, pattern(50)));
  await until(() => a.peer.received.length === 2, 'A hears both');
  withCsum.peer.received.length = 0;
  without.peer.received.length = 0;
  for (const proto of ['tcp', 'udp'] as const) {
    for (const dst of [MAC_B, macC]) {
      const { frame, l4 } = ipFrame({ proto, payload: pattern(700), dst, partial: true });
      a.peer.transmit(a.peer.header({ flags: NET_HDR_F.NEEDS_CSUM, csumStart: l4, csumOffset: proto === 'tcp' ? 16 : 6 }), frame);
    }
  }
  await until(() => withCsum.peer.received.length === 2 && without.peer.received.length === 2, 'both get both');
  for (const f of withCsum.peer.received) {
    assert.equal(f.header[0], NET_HDR_F.NEEDS_CSUM);
    assert.ok(!checksumsValid(f.frame), 'still partial: the guest completes it');
  }
  for (const f of without.peer.received) {
    assert.equal(f.header[0], 0);
    assert.ok(checksumsValid(f.frame), 'completed by the device');
  }
  clean(a, withCsum, without);
});

test('net: USO frames are cut into UDP datagrams for a guest without USO', async () => {
  const a = await side(MAC_A);
  const b = await side(MAC_B, {}, { netFeatures: NO_GUEST_OFFLOADS });
  const sw = new NetSwitch();
  sw.attach(a.device.port);
  sw.attach(b.device.port);
  const payload = pattern(5000, 5);
  const { frame, l4 } = ipFrame({ proto: 'udp', payload, partial: true });
  a.peer.transmit(a.peer.header({ flags: NET_HDR_F.NEEDS_CSUM, gsoType: NET_HDR_GSO.UDP_L4, gsoSize: 1200, hdrLen: l4 + 8, csumStart: l4, csumOffset: 6 }), frame);
  await until(() => b.peer.received.length === 5, 'five datagrams');
  const got = b.peer.received.map((f) => {
    assert.ok(checksumsValid(f.frame));
    return l4Payload(f.frame);
  });
  assert.deepEqual(got.map((p) => p.length), [1200, 1200, 1200, 1200, 200]);
  assert.deepEqual(Uint8Array.from(got.flatMap((p) => [...p])), payload);
  clean(a, b);
});

test('net control queue: promisc off and the MAC table filter unicast; allmulti/nobcast; MAC_ADDR_SET changes config mac; VLAN filter', async () => {
  const a = await side(MAC_A);
  const b = await side(MAC_B);
  const sw = new NetSwitch();
  sw.attach(a.device.port);
  sw.attach(b.device.port);
  const other = Uint8Array.of(0x52, 0x54, 0, 0, 0, 0x77);
  const mcast = Uint8Array.of(0x01, 0x00, 0x5e, 0, 0, 1);
  const send = (dst: Uint8Array, type = 0x88b5) => a.peer.transmit(a.peer.header(), ether(dst, MAC_A, type, pattern(50)));
  // Default: promiscuous (QEMU's default too): a frame for another address arrives (flooded: unknown destination).
  send(other);
  await until(() => b.peer.received.length === 1, 'promisc delivery');
  assert.equal(await b.peer.control(NET_CTRL.RX, NET_CTRL.RX_PROMISC, Uint8Array.of(0)), NET_CTRL.OK);
  // Table: no unicast entry, one multicast entry.
  const table = new Uint8Array(4 + 4 + 6);
  new DataView(table.buffer).setUint32(4, 1, true);
  table.set(mcast, 8);
  assert.equal(await b.peer.control(NET_CTRL.MAC, NET_CTRL.MAC_TABLE_SET, table), NET_CTRL.OK);
  send(other); // filtered
  send(Uint8Array.of(0x01, 0x00, 0x5e, 0, 0, 2)); // multicast not in table: filtered
  send(mcast); // in table
  send(MAC_B); // own address
  send(BROADCAST);
  await until(() => b.peer.received.length === 4, 'three more');
  assert.equal(b.device.counters.rxFiltered, 2);
  assert.deepEqual(b.peer.received.slice(1).map((f) => f.frame[0]), [0x01, 0x52, 0xff]);
  assert.equal(await b.peer.control(NET_CTRL.RX, NET_CTRL.RX_NOBCAST, Uint8Array.of(1)), NET_CTRL.OK);
  send(BROADCAST);
  assert.equal(b.device.counters.rxFiltered, 3);
  // MAC_ADDR_SET: the config space says the new address, and frames for it arrive.
  const newMac = Uint8Array.of(0x52, 0x54, 0, 0, 0, 0x99);
  assert.equal(await b.peer.control(NET_CTRL.MAC, NET_CTRL.MAC_ADDR_SET, newMac), NET_CTRL.OK);
  const cfg = await b.peer.readConfig(async (r) => Promise.all([0, 1, 2, 3, 4, 5].map((i) => r(NET_CONFIG.MAC + i, 1))));
  assert.deepEqual(cfg.map(Number), [...newMac]);
  send(newMac);
  await until(() => b.peer.received.length === 5, 'frame for the new address');
  // VLAN: once a VID is added, tagged frames of other VIDs are filtered.
  assert.equal(await b.peer.control(NET_CTRL.VLAN, NET_CTRL.VLAN_ADD, Uint8Array.of(5, 0)), NET_CTRL.OK);
  const tagged = (vid: number) => {
    const f = new Uint8Array(14 + 4 + 50);
    f.set(newMac, 0);
    f.set(MAC_A, 6);
    f.set([0x81, 0x00, vid >> 8, vid & 0xff, 0x88, 0xb5], 12);
    a.peer.transmit(a.peer.header(), f);
  };
  tagged(6);
  tagged(5);
  await until(() => b.peer.received.length === 6, 'VID 5 arrives');
  assert.equal(b.device.counters.rxFiltered, 4);
  // An unknown class is answered with VIRTIO_NET_ERR, not a verdict.
  assert.equal(await b.peer.control(77, 0), NET_CTRL.ERR);
  clean(a, b);
});

test('net: link state and announce in the status field, with config change notifications; ANNOUNCE_ACK clears it', async () => {
  const a = await side(MAC_A);
  const status = async () => Number(await a.peer.readConfig((r) => r(NET_CONFIG.STATUS, 2)));
  assert.equal(await status(), NET_STATUS.LINK_UP);
  a.device.setLink(false);
  assert.equal(await status(), 0);
  assert.equal(a.device.port.linkUp, false);
  a.device.setLink(true);
  assert.equal(a.device.port.linkUp, true);
  assert.ok(a.device.announce());
  assert.equal(await status(), NET_STATUS.LINK_UP | NET_STATUS.ANNOUNCE);
  // Announce (a frame to the network: net.gratuitous-packet-sending.driver.1), then acknowledge.
  const sent = a.device.counters.txFrames;
  a.peer.transmit(a.peer.header(), ether(MAC_B, MAC_A, 0x8035, pattern(46)));
  await until(() => a.device.counters.txFrames === sent + 1, 'the announcement');
  assert.equal(await a.peer.control(NET_CTRL.ANNOUNCE, NET_CTRL.ANNOUNCE_ACK), NET_CTRL.OK);
  assert.equal(await status(), NET_STATUS.LINK_UP);
  clean(a);
});

test('net: with no receive buffers the device holds a bounded amount, drops the rest, and delivers what it held once buffers come', async () => {
  const a = await side(MAC_A);
  const b = await side(MAC_B, { rxHoldBytes: 16 * 1024 }, { rxBuffers: 0 });
  const sw = new NetSwitch();
  sw.attach(a.device.port);
  sw.attach(b.device.port);
  for (let i = 0; i < 100; i++) {
    a.peer.transmit(a.peer.header(), ether(MAC_B, MAC_A, 0x88b5, pattern(986, i)));
    if (i % 20 === 19) await until(() => a.device.counters.txFrames === i + 1, 'sent');
  }
  await until(() => a.device.counters.txFrames === 100, 'all sent');
  const held = b.device.counters.rxHeld;
  assert.ok(held > 0 && held <= 16, `held ${held} frames of 1000 bytes in 16 KiB`);
  assert.equal(b.device.counters.rxDropped, 100 - held);
  b.peer.postRx(64, 2048);
  await until(() => b.peer.received.length === held, 'held frames delivered');
  assert.deepEqual(b.peer.received[0].frame, ether(MAC_B, MAC_A, 0x88b5, pattern(986, 0)), 'oldest first');
  assert.equal(b.device.counters.rxHeld, 0);
  clean(a, b);
});

for (const packed of [false, true]) {
  test(`net (${packed ? 'packed' : 'split'}, EVENT_IDX): a receive ring that ran dry with frames held asks for the next notification; the driver's refill past the old event index drains the hold`, async () => {
    // The stall two Linux guests met under load (a 64 MiB TCP transfer hung for good): the
    // device took the first buffers without ever moving avail_event, so the refill after the ring
    // ran dry crossed no event index and the driver (rightly) did not notify.
    const a = await side(MAC_A, {}, {}, packed);
    const b = await side(MAC_B, {}, { rxBuffers: 8, refill: false }, packed);
    const sw = new NetSwitch();
    sw.attach(a.device.port);
    sw.attach(b.device.port);
    for (let i = 0; i < 20; i++) a.peer.transmit(a.peer.header(), ether(MAC_B, MAC_A, 0x88b5, pattern(986, i)));
    await until(() => a.device.counters.txFrames === 20, 'all sent');
    await until(() => b.peer.received.length === 8, 'the first 8 fill the 8 buffers');
    assert.equal(b.device.counters.rxHeld, 12);
    b.peer.postRx(16, 2048);
    await until(() => b.peer.received.length === 20, 'the held 12 reach the refilled ring');
    assert.deepEqual(b.peer.received.map((f) => f.frame[14 + 985]), Array.from({ length: 20 }, (_, i) => pattern(986, i)[985]), 'in order');
    assert.equal(b.device.counters.rxHeld, 0);
    assert.equal(b.device.counters.rxDropped, 0);
    clean(a, b);
  });
}

test('net multiqueue: MQ_VQ_PAIRS_SET, replies steered to the pair that sent the flow', async () => {
  const a = await side(MAC_A, { queuePairs: 4 }, { pairs: 4 });
  const b = await side(MAC_B);
  const sw = new NetSwitch();
  sw.attach(a.device.port);
  sw.attach(b.device.port);
  assert.equal(a.peer.ctrlIndex, 8);
  assert.equal(await a.peer.control(NET_CTRL.MQ, NET_CTRL.MQ_VQ_PAIRS_SET, Uint8Array.of(4, 0)), NET_CTRL.OK);
  assert.equal(a.device.type.queuePairs, 4);
  // A sends a flow on pair 3; B answers the same flow (swapped addresses): it lands on receiveq4.
  const out = ipFrame({ proto: 'udp', payload: pattern(100), dst: MAC_B, src: MAC_A });
  a.peer.transmit(a.peer.header(), out.frame, 2);
  await until(() => b.peer.received.length === 1, 'B gets it');
  const back = new Uint8Array(out.frame);
  back.set(MAC_A, 0);
  back.set(MAC_B, 6);
  back.set(out.frame.subarray(30, 34), 26);
  back.set(out.frame.subarray(26, 30), 30);
  b.peer.transmit(b.peer.header(), back);
  await until(() => a.peer.received.length === 1, 'A gets the reply');
  assert.equal(a.peer.received[0].queue, 4, 'the reply came on receiveq3, the pair that sent the flow');
  clean(a, b);
});
