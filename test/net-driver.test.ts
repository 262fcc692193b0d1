// NetDriver over the synchronous loopback against the rig device (test/net-rig.ts): feature
// negotiation, the header layouts, sending, receiving (one buffer, mergeable buffers, big
// buffers), the iterator, link state, announce and the control queue. Device-side checks with
// a broken device are in test/negative/net-driver.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bit } from '../src/spec/features.js';
import { NET_CTRL, NET_FEATURES as F, NET_HDR_GSO, NET_STATUS } from '../src/spec/net.js';
import { DriverError } from '../src/driver/driver.js';
import { formatMac } from '../src/net/mac.js';
import { clauseIds, ether, rigPair } from './net-rig.js';
import { until } from './wait.js';

const BCAST = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

test('NetDriver: negotiates MAC/STATUS/MTU/MRG_RXBUF/CTRL_VQ, reads the config, sends frames with a 12-byte header', async () => {
  const { type, driver, devMon, drvMon } = rigPair({ mtu: 1400 });
  await driver.start();
  assert.equal(driver.state, 'live');
  for (const f of [F.MAC, F.STATUS, F.MTU, F.MRG_RXBUF, F.CTRL_VQ, F.CTRL_RX, F.CTRL_MAC_ADDR, F.GUEST_ANNOUNCE, F.CSUM, F.GUEST_CSUM]) assert.ok(driver.negotiated(f), `feature ${f}`);
  assert.equal(formatMac(driver.mac), '52:54:00:12:34:56');
  assert.equal(driver.mtu, 1400);
  assert.equal(driver.hdrSize, 12);
  assert.equal(driver.linkUp, true);
  assert.deepEqual(driver.accepts, { csum: true, tso4: false, tso6: false, ecn: false, ufo: false, uso: false });
  const f = ether(BCAST, [...driver.mac], 'hello');
  assert.equal(driver.send(f), true);
  driver.flush();
  assert.equal(type.sent.length, 1);
  assert.deepEqual(type.sent[0].frame, f);
  assert.deepEqual([...type.sent[0].hdr], new Array(12).fill(0)); // num_buffers 0 (net.packet-transmission.driver.2)
  // A partial checksum: NEEDS_CSUM with csum_start/offset.
  assert.equal(driver.send(f, { needsCsum: { start: 34, offset: 16 } }), true);
  driver.flush();
  const h = type.sent[1].hdr;
  assert.equal(h[0], 1);
  assert.equal(h[6] | (h[7] << 8), 34);
  assert.equal(h[8] | (h[9] << 8), 16);
  // Larger than mtu + 14 (+4): dropped, not sent (net.device-config-layout.driver.8); no GSO negotiated: dropped.
  assert.equal(driver.send(new Uint8Array(1400 + 14 + 4 + 1)), false);
  assert.equal(driver.send(f, { needsCsum: { start: 34, offset: 16 }, gso: { type: 'tcpv4', segmentSize: 1000, headerLength: 54, ecn: false } }), false);
  assert.equal(driver.counts.txDropped, 2);
  assert.deepEqual(clauseIds(devMon), []);
  assert.deepEqual(clauseIds(drvMon), []);
});

test('NetDriver: receives into one buffer (onFrame sees a view), into several mergeable buffers (reassembled), and through the async iterator', async () => {
  const { type, driver, drvMon } = rigPair({}, { mergeableBufferSize: 256 });
  await driver.start();
  const seen: Uint8Array[] = [];
  driver.onFrame = (fr) => seen.push(fr.slice());
  const small = ether([...driver.mac], [2, 0, 0, 0, 0, 1], 'small');
  assert.ok(type.inject(small));
  const big = ether([...driver.mac], [2, 0, 0, 0, 0, 1], new Uint8Array(700).map((_, i) => i & 0xff));
  assert.ok(type.inject(big, {}, { buffers: 3 })); // 12 + 714 over 256-byte buffers: 3 of them
  assert.equal(seen.length, 2);
  assert.deepEqual(seen[0], small);
  assert.deepEqual(seen[1], big);
  // The iterator gets copies, in order.
  driver.onFrame = null;
  const it = driver.frames();
  for (let i = 0; i < 5; i++) type.inject(ether([...driver.mac], [2, 0, 0, 0, 0, 1], `n${i}`));
  for (let i = 0; i < 5; i++) {
    const r = await it.next();
    assert.equal(r.done, false);
    assert.equal(new TextDecoder().decode(r.value!.frame.subarray(14, 16)), `n${i}`);
  }
  await it.return!();
  // Buffers are posted again: many more frames than the queue holds (nobody takes them now: dropped).
  for (let i = 0; i < 200; i++) assert.ok(type.inject(small), `frame ${i}`);
  assert.equal(driver.counts.rxFrames, 207);
  assert.equal(driver.counts.rxDropped, 200);
  // An iterator waiting when the port closes ends.
  const it2 = driver.frames();
  const pending = it2.next();
  driver.close();
  assert.deepEqual(await pending, { value: undefined, done: true });
  assert.deepEqual(clauseIds(drvMon), []);
});

test('NetDriver: without MRG_RXBUF and with guest GSO, 64 KiB receive buffers; a GSO frame comes with its offload', async () => {
  const features = bit(F.MAC) | bit(F.GUEST_CSUM) | bit(F.GUEST_TSO4) | bit(F.CSUM) | bit(F.HOST_TSO4);
  const { type, driver, drvMon } = rigPair({ features }, {}, 32 << 20);
  await driver.start();
  assert.equal(driver.negotiated(F.MRG_RXBUF), false);
  const got: { frame: Uint8Array; gso?: string }[] = [];
  driver.onFrame = (fr, o) => got.push({ frame: fr.slice(), gso: o?.gso?.type });
  const jumbo = ether([...driver.mac], [2, 0, 0, 0, 0, 1], new Uint8Array(60000).fill(7), 0x0800);
  assert.ok(type.inject(jumbo, { flags: 1, gsoType: NET_HDR_GSO.TCPV4, gsoSize: 1448, hdrLen: 54, csumStart: 34, csumOffset: 16 }));
  assert.equal(got.length, 1);
  assert.equal(got[0].frame.length, jumbo.length);
  assert.equal(got[0].gso, 'tcpv4');
  // And the driver sends one (HOST_TSO4 negotiated): gso fields in the header.
  assert.ok(driver.send(jumbo, { needsCsum: { start: 34, offset: 16 }, gso: { type: 'tcpv4', segmentSize: 1448, headerLength: 54, ecn: false } }));
  driver.flush();
  const h = type.sent[0].hdr;
  assert.deepEqual([h[0], h[1], h[2] | (h[3] << 8), h[4] | (h[5] << 8)], [1, NET_HDR_GSO.TCPV4, 54, 1448]);
  assert.deepEqual(type.sent[0].frame, jumbo);
  assert.deepEqual(clauseIds(drvMon), []);
});

test('NetDriver: a legacy-free device without VERSION_1-only fields still works with the minimal feature set (no MAC: a locally administered address)', async () => {
  const { type, driver, drvMon } = rigPair({ features: 0n });
  await driver.start();
  assert.equal(driver.mac[0] & 0x03, 0x02);
  assert.equal(driver.linkUp, true);
  const f = ether(BCAST, [...driver.mac], 'x');
  assert.ok(driver.send(f));
  driver.flush();
  assert.deepEqual(type.sent[0].frame, f);
  const seen: Uint8Array[] = [];
  driver.onFrame = (fr) => seen.push(fr.slice());
  type.inject(f);
  assert.deepEqual(seen, [f]);
  assert.deepEqual(clauseIds(drvMon), []);
});

test('NetDriver: link state follows STATUS on a configuration change; ANNOUNCE makes the driver send an RARP and ANNOUNCE_ACK', async () => {
  const { type, driver, drvMon } = rigPair({});
  await driver.start();
  const changes: boolean[] = [];
  driver.onLinkChange = (up) => changes.push(up);
  type.setStatus(0);
  await until(() => changes.length === 1, 'link down');
  assert.equal(driver.linkUp, false);
  type.setStatus(NET_STATUS.LINK_UP | NET_STATUS.ANNOUNCE);
  await until(() => type.commands.some((c) => c.cls === NET_CTRL.ANNOUNCE), 'the announce ack');
  assert.deepEqual(changes, [false, true]);
  const rarp = type.sent.find((s) => s.frame[12] === 0x80 && s.frame[13] === 0x35);
  assert.ok(rarp, 'an RARP went out first');
  assert.equal(driver.counts.announces, 1);
  await until(() => driver.counts.controlCommands === 1 && (driver as unknown as { announcing: boolean }).announcing === false, 'the announce to finish');
  assert.deepEqual(clauseIds(drvMon), []);
});

test('NetDriver: control commands (promisc, allmulti, MAC table, set MAC); refused ones are errors; not negotiated ones never reach the device', async () => {
  const { type, driver, drvMon } = rigPair({}, { mac: Uint8Array.of(2, 0, 0, 0, 0, 9) });
  await driver.start();
  // The MAC asked for differs from the device's: MAC_ADDR_SET at start (net.setting-mac-address-filtering.driver.2).
  assert.equal(formatMac(driver.mac), '02:00:00:00:00:09');
  assert.deepEqual(type.commands[0], { cls: NET_CTRL.MAC, cmd: NET_CTRL.MAC_ADDR_SET, data: Uint8Array.of(2, 0, 0, 0, 0, 9) });
  await driver.setPromisc(true);
  await driver.setAllMulti(false);
  await driver.setMacTable([Uint8Array.of(2, 0, 0, 0, 0, 1)], []);
  assert.deepEqual(type.commands.slice(1).map((c) => [c.cls, c.cmd, [...c.data]]), [
    [NET_CTRL.RX, NET_CTRL.RX_PROMISC, [1]],
    [NET_CTRL.RX, NET_CTRL.RX_ALLMULTI, [0]],
    [NET_CTRL.MAC, NET_CTRL.MAC_TABLE_SET, [1, 0, 0, 0, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0]],
  ]);
  await assert.rejects(driver.vlan(5, true), (e: DriverError) => e.kind === 'not-negotiated');
  await assert.rejects(driver.rxMode(NET_CTRL.RX_NOBCAST, true), (e: DriverError) => e.kind === 'not-negotiated');
  await assert.rejects(driver.setQueuePairs(2), (e: DriverError) => e.kind === 'not-negotiated');
  assert.equal(type.commands.length, 4);
  assert.deepEqual(clauseIds(drvMon), []);
});

test('NetDriver: MQ: queue pairs set up, filled and enabled with MQ_VQ_PAIRS_SET; frames on the second receive queue after it', async () => {
  const features = bit(F.MAC) | bit(F.CTRL_VQ) | bit(F.MQ) | bit(F.MRG_RXBUF);
  const { type, driver, drvMon } = rigPair({ features, pairs: 4 }, { queuePairs: 2 });
  await driver.start();
  assert.equal(driver.maxQueuePairs, 4);
  assert.equal(driver.queuePairs, 2);
  assert.deepEqual(type.commands.map((c) => [c.cls, c.cmd, [...c.data]]), [[NET_CTRL.MQ, NET_CTRL.MQ_VQ_PAIRS_SET, [2, 0]]]);
  const got: Uint8Array[] = [];
  driver.onFrame = (fr) => got.push(fr.slice());
  assert.ok(type.inject(ether([...driver.mac], BCAST, 'q2'), {}, { pair: 1 }));
  assert.equal(got.length, 1);
  assert.ok(driver.send(ether(BCAST, [...driver.mac], 'tx2'), undefined, 1));
  driver.flush();
  assert.equal(type.sent.length, 1);
  assert.deepEqual(clauseIds(drvMon), []);
});

test('NetDriver: send() drops when the transmit slots are full; write() waits for room', async () => {
  const { type, driver } = rigPair({}, { txSlots: 4 });
  await driver.start();
  // The rig returns transmit buffers at once, so slots come back on each flush; hold the notifications back by not flushing.
  const f = ether(BCAST, [...driver.mac], 'z');
  let ok = 0;
  for (let i = 0; i < 10; i++) if (driver.send(f)) ok++;
  assert.equal(ok, 4);
  await driver.write(f); // flushes, the device returns the slots, and it goes
  driver.flush();
  assert.equal(type.sent.length, 5);
});
