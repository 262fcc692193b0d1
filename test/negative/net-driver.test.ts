// NetDriver judges the device: a rig device (test/net-rig.ts) breaking exactly one net.*.device.*
// clause at a time, and the driver's monitor naming it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bit } from '../../src/spec/features.js';
import { NET_CTRL, NET_FEATURES as F, NET_HDR_F, NET_HDR_GSO, NET_STATUS } from '../../src/spec/net.js';
import { DriverError } from '../../src/driver/driver.js';
import { ipFrame, pattern } from '../net/frames.js';
import { clauseIds, ether, rigPair, type RigOptions } from '../net-rig.js';
import { until } from '../wait.js';
import type { Monitor } from '../../src/monitor/monitor.js';

const BASE = bit(F.MAC) | bit(F.STATUS) | bit(F.MRG_RXBUF) | bit(F.CTRL_VQ) | bit(F.CTRL_RX) | bit(F.CTRL_MAC_ADDR) | bit(F.GUEST_ANNOUNCE);

async function started(o: RigOptions = {}, mergeableBufferSize = 256) {
  const p = rigPair({ features: BASE, ...o }, { mergeableBufferSize });
  await p.driver.start();
  return p;
}

/** The driver's monitor saw exactly these clauses (sorted). Each id is a literal argument: the claim check-sites.mjs reads. */
function saw(mon: Monitor, ...ids: string[]): void {
  assert.deepEqual([...clauseIds(mon)].sort(), [...ids].sort());
}

const frame = (n = 60) => ether([0x52, 0x54, 0, 0x12, 0x34, 0x56], [2, 0, 0, 0, 0, 1], new Uint8Array(n - 14).fill(9));

test('net.device-config-layout.device.1/.2/.3: max_virtqueue_pairs out of range, mtu below 68, mtu below 1280', async () => {
  {
    const { drvMon, driver } = await started({ features: BASE | bit(F.MQ), configPairs: 0 });
    saw(drvMon, 'net.device-config-layout.device.1');
    assert.equal(driver.maxQueuePairs, 1);
  }
  {
    const { drvMon, driver } = await started({ features: BASE | bit(F.MTU), mtu: 60 });
    saw(drvMon, 'net.device-config-layout.device.2');
    assert.equal(driver.mtu, 1500);
  }
  {
    const { drvMon } = await started({ features: BASE | bit(F.MTU), mtu: 576 });
    saw(drvMon, 'net.device-config-layout.device.3');
  }
});

test('net.device-config-layout.device.4: the mtu changes after it was set', async () => {
  const { type, drvMon } = await started({ features: BASE | bit(F.MTU), mtu: 1500 });
  type.ctx.updateConfig((c) => c.setUint16(10, 9000, true));
  await until(() => drvMon.verdicts.length > 0, 'the verdict');
  saw(drvMon, 'net.device-config-layout.device.4');
});

test('net.device-config-layout.device.5: a non-GSO frame larger than mtu + 14', async () => {
  const { type, drvMon } = await started({ features: BASE | bit(F.MTU), mtu: 1280 });
  assert.ok(type.inject(frame(1280 + 14 + 1), {}, { buffers: 6 }));
  saw(drvMon, 'net.device-config-layout.device.5');
});

test('net.device-config-layout.device.10/.11/.12: speed and duplex out of range, changed while the link is up', async () => {
  const { type, drvMon, driver } = await started({ features: BASE | bit(F.SPEED_DUPLEX) });
  assert.equal(driver.speed, 0);
  assert.equal(driver.duplex, 'full');
  type.ctx.updateConfig((c) => {
    c.setUint32(12, 0x80000000, true);
    c.setUint8(16, 7);
  });
  await until(() => drvMon.verdicts.length >= 3, 'the verdicts');
  saw(drvMon, 'net.device-config-layout.device.10', 'net.device-config-layout.device.11', 'net.device-config-layout.device.12');
  assert.equal(driver.speed, 'unknown'); // net.device-config-layout.driver.10
  assert.equal(driver.duplex, 'unknown');
});

test('net.device-config-layout.device.13/.14: HASH_REPORT or CTRL_RX_EXTRA offered without CTRL_VQ', async () => {
  const { drvMon } = await started({ features: bit(F.MAC) | bit(F.HASH_REPORT) | bit(F.CTRL_RX_EXTRA) });
  saw(drvMon, 'net.device-config-layout.device.13', 'net.device-config-layout.device.14');
});

test('net.processing-of-incoming-packets.device.1: num_buffers other than 1 without MRG_RXBUF', async () => {
  const { type, drvMon } = await started({ features: bit(F.MAC) });
  type.inject(frame(), { numBuffers: 0 });
  saw(drvMon, 'net.processing-of-incoming-packets.device.1');
});

test('net.processing-of-incoming-packets.device.2: num_buffers 0 with MRG_RXBUF', async () => {
  const { type, drvMon, driver } = await started();
  type.inject(frame(), { numBuffers: 0 });
  saw(drvMon, 'net.processing-of-incoming-packets.device.2');
  assert.equal(driver.counts.rxDropped, 1);
});

test('net.processing-of-incoming-packets.device.3: a buffer before the last of a packet not filled', async () => {
  const { type, drvMon } = await started();
  type.inject(frame(300), {}, { buffers: 2, fill: [100] });
  saw(drvMon, 'net.processing-of-incoming-packets.device.3');
});

test('net.processing-of-incoming-packets.device.3: a middle buffer of a packet not filled', async () => {
  const { type, drvMon } = await started();
  type.inject(frame(500), {}, { buffers: 3, fill: [256, 100] });
  saw(drvMon, 'net.processing-of-incoming-packets.device.3');
});

test('net.device-config-layout.device.5: a packet reassembled from mergeable buffers beyond what the mtu allows', async () => {
  const { type, drvMon, driver } = await started();
  type.inject(frame(2000), {}, { buffers: 8 });
  saw(drvMon, 'net.device-config-layout.device.5');
  assert.equal(driver.counts.rxDropped, 1);
});

test('net.processing-of-incoming-packets.device.4: the buffers of one packet not used together', async () => {
  const { type, drvMon, driver } = await started();
  const got: Uint8Array[] = [];
  driver.onFrame = (f) => got.push(f.slice());
  const f = frame(600);
  type.inject(f, {}, { buffers: 3, publishEach: true });
  saw(drvMon, 'net.processing-of-incoming-packets.device.4');
  assert.deepEqual(got, [f], 'still reassembled once the rest came');
});

test('net.processing-of-incoming-packets.device.5: header flags without GUEST_CSUM', async () => {
  const { type, drvMon } = await started();
  type.inject(frame(), { flags: 2 });
  saw(drvMon, 'net.processing-of-incoming-packets.device.5');
});

test('net.processing-of-incoming-packets.device.7/.8/.9/.10: GSO types whose guest feature was not negotiated', async () => {
  const csum = bit(F.GUEST_CSUM) | bit(F.CSUM);
  const gsoCase = async (feature: bigint, gsoType: number, clause: string): Promise<void> => {
    const { type, drvMon } = await started({ features: BASE | csum | feature });
    type.inject(frame(200), { flags: 1, gsoType, gsoSize: 100, hdrLen: 54, csumStart: 34, csumOffset: 16 });
    saw(drvMon, clause);
  };
  await gsoCase(bit(F.GUEST_TSO6), NET_HDR_GSO.TCPV4, 'net.processing-of-incoming-packets.device.7');
  await gsoCase(bit(F.GUEST_TSO4), NET_HDR_GSO.UDP, 'net.processing-of-incoming-packets.device.8');
  await gsoCase(bit(F.GUEST_TSO4), NET_HDR_GSO.TCPV6, 'net.processing-of-incoming-packets.device.9');
  await gsoCase(bit(F.GUEST_TSO4), NET_HDR_GSO.UDP_L4, 'net.processing-of-incoming-packets.device.10');
});

test('net.processing-of-incoming-packets.device.11/.13/.24/.25/.27: tunnel bits, ECN without GUEST_ECN, GSO with no guest GSO feature, GSO without NEEDS_CSUM, RSC_INFO', async () => {
  const gso = BASE | bit(F.GUEST_CSUM) | bit(F.GUEST_TSO4);
  const headerCase = async (features: bigint, h: Record<string, number>, clause: string): Promise<void> => {
    const { type, drvMon } = await started({ features });
    type.inject(frame(200), h);
    saw(drvMon, clause);
  };
  await headerCase(gso, { flags: 1, gsoType: NET_HDR_GSO.TCPV4 | 0x20, gsoSize: 100, csumStart: 34, csumOffset: 16 }, 'net.processing-of-incoming-packets.device.11');
  await headerCase(gso, { flags: 1, gsoType: NET_HDR_GSO.TCPV4 | NET_HDR_GSO.ECN, gsoSize: 100, csumStart: 34, csumOffset: 16 }, 'net.processing-of-incoming-packets.device.13');
  await headerCase(BASE | bit(F.GUEST_CSUM), { flags: 1, gsoType: NET_HDR_GSO.TCPV4, gsoSize: 100, csumStart: 34, csumOffset: 16 }, 'net.processing-of-incoming-packets.device.24');
  await headerCase(gso, { flags: 0, gsoType: NET_HDR_GSO.TCPV4, gsoSize: 100 }, 'net.processing-of-incoming-packets.device.25');
  await headerCase(BASE | bit(F.GUEST_CSUM), { flags: 4 }, 'net.processing-of-incoming-packets.device.27');
});

test('net.processing-of-incoming-packets.device.20: NEEDS_CSUM with csum_start + csum_offset beyond the packet', async () => {
  const { type, drvMon, driver } = await started({ features: BASE | bit(F.GUEST_CSUM) });
  type.inject(frame(60), { flags: 1, csumStart: 50, csumOffset: 16 });
  saw(drvMon, 'net.processing-of-incoming-packets.device.20');
  assert.equal(driver.counts.rxDropped, 1);
});

test('net.setting-up-receive-buffers.device.1: a used receive buffer shorter than the header', async () => {
  const { type, drvMon } = await started();
  // A frame of 0 bytes and a header cut short: inject writes 12 bytes; hand back a length of 4 instead.
  const q = type.ctx.queues[0];
  const chain = q.newChain();
  assert.ok(q.pop(chain));
  q.addUsed(chain.head, 4);
  type.ctx.complete(q);
  saw(drvMon, 'net.setting-up-receive-buffers.device.1');
});

test('net.setting-mac-address-filtering.device.3: MAC_ADDR_SET completed without the config mac updated', async () => {
  const { driver, drvMon } = await started({ macNotApplied: true });
  await driver.setMac(Uint8Array.of(2, 0, 0, 0, 0, 0x33));
  saw(drvMon, 'net.setting-mac-address-filtering.device.3');
});

test('net.gratuitous-packet-sending.device.1: ANNOUNCE_ACK completed with ANNOUNCE still set', async () => {
  const { type, driver, drvMon } = await started({ announceKept: true });
  type.setStatus(NET_STATUS.LINK_UP | NET_STATUS.ANNOUNCE);
  await until(() => drvMon.verdicts.length > 0, 'the verdict');
  saw(drvMon, 'net.gratuitous-packet-sending.device.1');
  assert.equal(driver.counts.announces, 1);
});

test('net.automatic-receive-steering-in-multiqueue-mode.device.1: a packet on receiveq2 before MQ_VQ_PAIRS_SET', async () => {
  const p = rigPair({ features: BASE | bit(F.MQ), pairs: 2 }, { queuePairs: 2 });
  // Deliver on receiveq2 between DRIVER_OK and MQ_VQ_PAIRS_SET: hook the rig's control handling.
  const origControl = (p.type as unknown as { control: (...a: unknown[]) => void }).control.bind(p.type);
  (p.type as unknown as { control: (...a: unknown[]) => void }).control = (...a: unknown[]) => {
    p.type.inject(frame(), {}, { pair: 1 });
    origControl(...a);
  };
  await p.driver.start();
  saw(p.drvMon, 'net.automatic-receive-steering-in-multiqueue-mode.device.1');
});

// --- issue 17: the receive filter, steering after MQ_VQ_PAIRS_SET, checksums and headers of delivered frames ---

const OWN = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
const OTHER = [0x52, 0x54, 0, 0x12, 0x34, 0x99];
const to = (dst: number[]) => ether(dst, [2, 0, 0, 0, 0, 1], new Uint8Array(46).fill(7));
const EXTRA = BASE | bit(F.CTRL_RX_EXTRA);

test('net.packet-receive-filtering.device.1: VIRTIO_NET_ERR to RX_PROMISC with CTRL_RX negotiated', async () => {
  const { driver, drvMon } = await started({ ctrlErr: (cls) => cls === NET_CTRL.RX });
  await assert.rejects(driver.setPromisc(false), (e: DriverError) => e.kind === 'unsupported');
  saw(drvMon, 'net.packet-receive-filtering.device.1');
});

test('net.packet-receive-filtering.device.5: VIRTIO_NET_ERR to RX_NOUNI with CTRL_RX_EXTRA negotiated', async () => {
  const { driver, drvMon } = await started({ features: EXTRA, ctrlErr: (cls, cmd) => cls === NET_CTRL.RX && cmd === NET_CTRL.RX_NOUNI });
  await driver.setPromisc(false);
  await assert.rejects(driver.rxMode(NET_CTRL.RX_NOUNI, true), (e: DriverError) => e.kind === 'unsupported');
  saw(drvMon, 'net.packet-receive-filtering.device.5');
});

test('net.setting-mac-address-filtering.device.4: promiscuous mode off, a unicast frame to neither the MAC nor the table', async () => {
  const { type, driver, drvMon } = await started();
  type.inject(to(OTHER));
  saw(drvMon); // promiscuous mode not set yet: nothing judged
  await driver.setPromisc(false);
  type.inject(to(OWN));
  saw(drvMon);
  type.inject(to(OTHER));
  saw(drvMon, 'net.setting-mac-address-filtering.device.4');
});

test('net.setting-mac-address-filtering.device.2: a frame for the table replaced by the last MAC_TABLE_SET', async () => {
  const { type, driver, drvMon } = await started();
  await driver.setPromisc(false);
  await driver.setMacTable([Uint8Array.from(OTHER)], []);
  type.inject(to(OTHER));
  saw(drvMon);
  await driver.setMacTable([Uint8Array.of(2, 0, 0, 0, 0, 0x44)], []);
  type.inject(to(OTHER));
  saw(drvMon, 'net.setting-mac-address-filtering.device.2');
});

test('net.setting-mac-address-filtering.device.1: after a reset, a frame for the table set before it', async () => {
  const { type, driver, drvMon } = await started();
  await driver.setMacTable([Uint8Array.from(OTHER)], []);
  await driver.start(); // resets the device: its table is empty again
  await driver.setPromisc(false);
  type.inject(to(OTHER));
  saw(drvMon, 'net.setting-mac-address-filtering.device.1');
});

test('net.packet-receive-filtering.device.7/.8: NOMULTI on, a multicast frame delivered (then with ALLMULTI on too)', async () => {
  const { type, driver, drvMon } = await started({ features: EXTRA });
  await driver.setPromisc(false);
  await driver.rxMode(NET_CTRL.RX_NOMULTI, true);
  type.inject(to([0x01, 0, 0x5e, 0, 0, 1]));
  await driver.setAllMulti(true);
  type.inject(to([0x01, 0, 0x5e, 0, 0, 1]));
  saw(drvMon, 'net.packet-receive-filtering.device.7', 'net.packet-receive-filtering.device.8');
});

test('net.packet-receive-filtering.device.10/.11: NOUNI on, a unicast frame delivered (then with ALLUNI on too)', async () => {
  const { type, driver, drvMon } = await started({ features: EXTRA });
  await driver.setPromisc(false);
  await driver.rxMode(NET_CTRL.RX_NOUNI, true);
  type.inject(to(OWN));
  await driver.rxMode(NET_CTRL.RX_ALLUNI, true);
  type.inject(to(OWN));
  saw(drvMon, 'net.packet-receive-filtering.device.10', 'net.packet-receive-filtering.device.11');
});

test('net.packet-receive-filtering.device.12/.13: NOBCAST on, a broadcast frame delivered (then with ALLMULTI on too)', async () => {
  const { type, driver, drvMon } = await started({ features: EXTRA });
  await driver.setPromisc(false);
  await driver.rxMode(NET_CTRL.RX_NOMULTI, true); // NOMULTI leaves broadcast alone: still judged as NOBCAST only
  await driver.rxMode(NET_CTRL.RX_NOBCAST, true);
  type.inject(to([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]));
  await driver.setAllMulti(true);
  type.inject(to([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]));
  saw(drvMon, 'net.packet-receive-filtering.device.12', 'net.packet-receive-filtering.device.13');
});

test('net.vlan-filtering.device.3: a frame tagged with a VLAN the driver removed', async () => {
  const { type, driver, drvMon } = await started({ features: BASE | bit(F.CTRL_VLAN) });
  await driver.setPromisc(false);
  await driver.vlan(5, true);
  await driver.vlan(5, false);
  const tagged = (vid: number) => ether(OWN, [2, 0, 0, 0, 0, 1], Uint8Array.of(vid >> 8, vid & 0xff, 0x88, 0xb5, ...new Uint8Array(42)), 0x8100);
  type.inject(tagged(6));
  saw(drvMon);
  type.inject(tagged(5));
  saw(drvMon, 'net.vlan-filtering.device.3');
});

test('net.automatic-receive-steering-in-multiqueue-mode.device.2: a packet on receiveq3 after MQ_VQ_PAIRS_SET enabled 2 pairs', async () => {
  const p = rigPair({ features: BASE | bit(F.MQ), pairs: 3 }, { queuePairs: 3, mergeableBufferSize: 256 });
  await p.driver.start();
  await p.driver.setQueuePairs(2);
  p.type.inject(frame(), {}, { pair: 1 });
  saw(p.drvMon);
  p.type.inject(frame(), {}, { pair: 2 });
  saw(p.drvMon, 'net.automatic-receive-steering-in-multiqueue-mode.device.2');
});

const CSUM = BASE | bit(F.GUEST_CSUM) | bit(F.CSUM);

test('net.processing-of-incoming-packets.device.18: NEEDS_CSUM with a wrong IPv4 header checksum before the slot', async () => {
  const { type, drvMon } = await started({ features: CSUM });
  const { frame: f, l4 } = ipFrame({ proto: 'tcp', payload: pattern(40), partial: true });
  type.inject(f, { flags: NET_HDR_F.NEEDS_CSUM, csumStart: l4, csumOffset: 16 });
  saw(drvMon);
  f[14 + 8] ^= 1;
  type.inject(f, { flags: NET_HDR_F.NEEDS_CSUM, csumStart: l4, csumOffset: 16 });
  saw(drvMon, 'net.processing-of-incoming-packets.device.18');
});

test('net.processing-of-incoming-packets.device.19: NEEDS_CSUM with a slot that does not hold the pseudo-header sum', async () => {
  const { type, drvMon } = await started({ features: CSUM });
  const { frame: f, l4 } = ipFrame({ proto: 'udp', v6: true, payload: pattern(40), partial: true });
  f[l4 + 6] ^= 0x40;
  type.inject(f, { flags: NET_HDR_F.NEEDS_CSUM, csumStart: l4, csumOffset: 6 });
  saw(drvMon, 'net.processing-of-incoming-packets.device.19');
});

test('net.processing-of-incoming-packets.device.30: DATA_VALID on a frame whose TCP checksum is wrong', async () => {
  const { type, drvMon } = await started({ features: CSUM });
  const f = ipFrame({ proto: 'tcp', payload: pattern(40) }).frame;
  type.inject(f, { flags: NET_HDR_F.DATA_VALID });
  saw(drvMon);
  f[f.length - 1] ^= 1;
  type.inject(f, { flags: NET_HDR_F.DATA_VALID });
  saw(drvMon, 'net.processing-of-incoming-packets.device.30');
});

test('net.processing-of-incoming-packets.device.6: without GUEST_CSUM, a frame whose UDP checksum is wrong', async () => {
  const { type, drvMon } = await started();
  const f = ipFrame({ proto: 'udp', payload: pattern(40) }).frame;
  type.inject(f);
  saw(drvMon);
  f[f.length - 1] ^= 1;
  type.inject(f);
  saw(drvMon, 'net.processing-of-incoming-packets.device.6');
});

test('net.processing-of-incoming-packets.device.28 / .14: a GSO frame with hdr_len short of its headers; with GUEST_ECN, CWR set but no GSO_ECN', async () => {
  const features = CSUM | bit(F.GUEST_TSO4) | bit(F.GUEST_ECN);
  const gso = (tcpFlags?: number) => ipFrame({ proto: 'tcp', payload: pattern(600), partial: true, tcpFlags });
  {
    const { type, drvMon } = await started({ features });
    const { frame: f, l4 } = gso();
    type.inject(f, { flags: NET_HDR_F.NEEDS_CSUM, gsoType: NET_HDR_GSO.TCPV4, gsoSize: 300, hdrLen: l4 + 20, csumStart: l4, csumOffset: 16 }, { buffers: 3 });
    saw(drvMon);
    type.inject(f, { flags: NET_HDR_F.NEEDS_CSUM, gsoType: NET_HDR_GSO.TCPV4, gsoSize: 300, hdrLen: l4, csumStart: l4, csumOffset: 16 }, { buffers: 3 });
    saw(drvMon, 'net.processing-of-incoming-packets.device.28');
  }
  {
    const { type, drvMon } = await started({ features });
    const { frame: f, l4 } = gso(0x98);
    type.inject(f, { flags: NET_HDR_F.NEEDS_CSUM, gsoType: NET_HDR_GSO.TCPV4 | NET_HDR_GSO.ECN, gsoSize: 300, hdrLen: l4 + 20, csumStart: l4, csumOffset: 16 }, { buffers: 3 });
    saw(drvMon);
    type.inject(f, { flags: NET_HDR_F.NEEDS_CSUM, gsoType: NET_HDR_GSO.TCPV4, gsoSize: 300, hdrLen: l4 + 20, csumStart: l4, csumOffset: 16 }, { buffers: 3 });
    saw(drvMon, 'net.processing-of-incoming-packets.device.14');
  }
});
