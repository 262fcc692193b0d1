// NetDriver judges the device: a rig device (test/net-rig.ts) breaking exactly one net.*.device.*
// clause at a time, and the driver's monitor naming it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bit } from '../../src/spec/features.js';
import { NET_FEATURES as F, NET_HDR_GSO, NET_STATUS } from '../../src/spec/net.js';
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
