// Multiqueue virtio-net over vhost-user (issue 15): QEMU's vhost-user-net serves the control
// queue itself, forwards MQ without CTRL_VQ, and turns the guest's MQ_VQ_PAIRS_SET into
// SET_VRING_ENABLE of the pairs' rings, all on one connection with one vhost device per pair
// (each sends SET_FEATURES and ADD_MEM_REG again). These tests play that front-end against a
// NetDevice with ctrl 'front-end': the device learns the pairs in use from the enables
// (DeviceType.queueEnabled), the repeated SET_FEATURES and ADD_MEM_REG change nothing, and a
// flow's received frames go to the pair its last transmit used (5.1.6.5.6).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Monitor } from '../../src/monitor/monitor.js';
import { NetDevice } from '../../src/devices/net/device.js';
import { RngDevice } from '../../src/devices/rng/device.js';
import { RngDriver } from '../../src/drivers/rng.js';
import { LoopbackTransport } from '../../src/transports/loopback/loopback.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import type { DeviceType } from '../../src/device/type.js';
import { VhostUserBackend } from '../../src/transports/vhost-user/backend.js';
import { FLAG_NEED_REPLY, HEADER_SIZE, ProtocolFeature, Req, statePayload, u64Payload } from '../../src/transports/vhost-user/protocol.js';
import { Feature } from '../../src/spec/constants.js';
import { bit } from '../../src/spec/features.js';
import { NET_FEATURES as F } from '../../src/spec/net.js';
import { TestFrontEnd, barrier, n, receive, type TestRing } from './front-end.js';
import { ipFrame, pattern } from '../net/frames.js';

const PROTOCOL_FEATURES_BIT = 1n << 30n;
const SLOTS = 1n << BigInt(ProtocolFeature.CONFIGURE_MEM_SLOTS);
const REPLY_ACK = 1n << BigInt(ProtocolFeature.REPLY_ACK);
const MQ_FEATURES = bit(Feature.VERSION_1) | bit(F.MQ);
const HDR = 12;
/** Ring i's layout in guest RAM, and its buffers' area. */
const ringAt = (i: number) => 0x1000 + i * 0x2000;
const bufAt = (i: number) => 0x20000 + i * 0x8000;

/** What serve net makes for `--queues 2` (judgeFeatureChoice off: the front-end acks only what it forwards); split rings only here. */
function netDevice(monitor: Monitor): NetDevice {
  const device = new NetDevice({ queuePairs: 2, ctrl: 'front-end', judgeFeatureChoice: false, monitor });
  device.withholdFeatures(bit(Feature.RING_PACKED));
  return device;
}

async function ack(fe: TestFrontEnd): Promise<[number, bigint]> {
  const r = new DataView((await receive(fe.front)).buffer);
  return [r.getUint32(0, true), r.getBigUint64(HEADER_SIZE, true)];
}

/** What QEMU 7.2's vhost_dev_start sends for one queue pair on the shared connection: SET_FEATURES, ADD_MEM_REG (acked), then the pair's two rings (enabled). */
async function startPair(fe: TestFrontEnd, pair: number): Promise<[TestRing, TestRing]> {
  fe.send(Req.SET_FEATURES, u64Payload(MQ_FEATURES | PROTOCOL_FEATURES_BIT));
  fe.sendMemSlot(1 | FLAG_NEED_REPLY);
  assert.deepEqual(await ack(fe), [Req.ADD_MEM_REG, 0n], `pair ${pair + 1}: guest RAM added (again) (${fe.backend.lastError})`);
  const rx = fe.setRing(2 * pair, 'split', 16, ringAt(2 * pair), 0, { eventIdx: false });
  const tx = fe.setRing(2 * pair + 1, 'split', 16, ringAt(2 * pair + 1), 0, { eventIdx: false });
  return [rx, tx];
}

/** A UDP frame of one flow (its source port), in a transmit buffer with its header, made available on `tx` and kicked. */
function transmit(fe: TestFrontEnd, tx: TestRing, at: number, srcPort: number, token: string): Uint8Array {
  const { frame } = ipFrame({ proto: 'udp', payload: pattern(64, srcPort), srcPort });
  fe.bytes(at, HDR).fill(0);
  fe.bytes(at + HDR, frame.length).set(frame);
  tx.queue.begin().addReadable(at, HDR + frame.length).commit(token);
  tx.queue.publish();
  tx.queue.enableInterrupts();
  n.eventfdWrite(tx.kick, 1);
  return frame;
}

test('vhost-user net multiqueue: pairs follow SET_VRING_ENABLE, repeated SET_FEATURES and ADD_MEM_REG are one session, a flow is received on the pair that last sent it', async () => {
  const monitor = new Monitor();
  const device = netDevice(monitor);
  const backend = new VhostUserBackend(device);
  const fe = new TestFrontEnd(backend);
  const sent: string[] = [];
  device.port.onFrame = (f) => sent.push(`${f[14 + 20]}:${f[14 + 21]}`);
  try {
    // MQ is offered without CTRL_VQ (the front-end keeps that) and the device has rx/tx queues only.
    assert.equal(device.offered & bit(F.MQ), bit(F.MQ));
    assert.equal(device.offered & bit(F.CTRL_VQ), 0n);
    assert.equal(device.numQueues, 4);
    fe.send(Req.SET_OWNER);
    fe.send(Req.SET_PROTOCOL_FEATURES, u64Payload(SLOTS | REPLY_ACK));
    const [rx1, tx1] = await startPair(fe, 0);
    await barrier(fe);
    assert.equal(device.type.queuePairs, 1);
    // Pair 2 is started (QEMU starts every pair) but disabled: the guest uses 1 pair so far.
    fe.send(Req.SET_FEATURES, u64Payload(MQ_FEATURES | PROTOCOL_FEATURES_BIT));
    fe.sendMemSlot(1 | FLAG_NEED_REPLY);
    assert.deepEqual(await ack(fe), [Req.ADD_MEM_REG, 0n]);
    const rx2 = fe.setRing(2, 'split', 16, ringAt(2), 0, { eventIdx: false });
    const tx2 = fe.setRing(3, 'split', 16, ringAt(3), 0, { eventIdx: false });
    fe.send(Req.SET_VRING_ENABLE, statePayload(2, 0));
    fe.send(Req.SET_VRING_ENABLE, statePayload(3, 0));
    await barrier(fe);
    assert.equal(device.type.queuePairs, 1, 'pair 2 set up but disabled: 1 pair in use');
    // The repeated SET_FEATURES did not reset the device: pair 1 still moves frames.
    transmit(fe, tx1, bufAt(1), 1001, 'tx1-a');
    assert.ok(await tx1.waitUsed(1), `pair 1 transmits (${backend.lastError})`);
    assert.equal(tx1.queue.getUsed(), 'tx1-a');
    // MQ_VQ_PAIRS_SET 2 at the front-end: it enables pair 2's rings.
    fe.send(Req.SET_VRING_ENABLE, statePayload(2, 1));
    await barrier(fe);
    assert.equal(device.type.queuePairs, 1, 'only the receive queue of pair 2 enabled: still 1 pair');
    fe.send(Req.SET_VRING_ENABLE, statePayload(3, 1));
    await barrier(fe);
    assert.equal(device.type.queuePairs, 2);

    // Receive buffers on both pairs.
    for (const [ring, at, name] of [[rx1, bufAt(0), 'rx1'], [rx2, bufAt(2), 'rx2']] as const) {
      for (let i = 0; i < 4; i++) ring.queue.begin().addWritable(at + i * 0x1000, 0x800).commit(`${name}-${i}`);
      ring.queue.publish();
      ring.queue.enableInterrupts();
      n.eventfdWrite(ring.kick, 1);
    }
    await barrier(fe);
    // Flow X leaves on pair 2: a frame of it from the host goes to receiveq2; flow Y on pair 1: receiveq1.
    const x = transmit(fe, tx2, bufAt(3), 2002, 'tx2-x');
    assert.ok(await tx2.waitUsed(1), `pair 2 transmits (${backend.lastError})`);
    tx2.queue.getUsed();
    const y = transmit(fe, tx1, bufAt(1) + 0x1000, 3003, 'tx1-y');
    assert.ok(await tx1.waitUsed(1));
    tx1.queue.getUsed();
    assert.equal(device.port.send(x), true);
    assert.ok(await rx2.waitUsed(1), 'flow X received on receiveq2, where it was sent from');
    assert.equal(rx2.queue.getUsed(), 'rx2-0');
    assert.equal(device.port.send(y), true);
    assert.ok(await rx1.waitUsed(1), 'flow Y received on receiveq1');
    assert.equal(rx1.queue.getUsed(), 'rx1-0');
    // Flow X moves to pair 1: its next frame follows.
    transmit(fe, tx1, bufAt(1) + 0x2000, 2002, 'tx1-x');
    assert.ok(await tx1.waitUsed(1));
    tx1.queue.getUsed();
    device.port.send(x);
    assert.ok(await rx1.waitUsed(1), 'flow X now received on receiveq1');
    assert.equal(rx1.queue.getUsed(), 'rx1-1');
    assert.equal(rx2.queue.usedPending(), 0);
    const pc = device.type.pairCounters;
    assert.deepEqual([[...pc.txFrames], [...pc.rxFrames]], [[3, 1], [2, 1]]);

    // MQ_VQ_PAIRS_SET 1: the front-end disables pair 2; flow X's old pair is gone, nothing goes to receiveq2.
    transmit(fe, tx2, bufAt(3) + 0x1000, 4004, 'tx2-z');
    assert.ok(await tx2.waitUsed(1));
    tx2.queue.getUsed();
    fe.send(Req.SET_VRING_ENABLE, statePayload(3, 0));
    await barrier(fe);
    assert.equal(device.type.queuePairs, 1);
    const { frame: z } = ipFrame({ proto: 'udp', payload: pattern(64, 4004), srcPort: 4004 });
    device.port.send(z);
    assert.ok(await rx1.waitUsed(1), 'flow Z, last sent on pair 2, is received on receiveq1 once pair 2 is disabled');
    assert.equal(rx1.queue.getUsed(), 'rx1-2');
    assert.deepEqual(sent.length, 5);
    assert.deepEqual(monitor.verdicts, [], 'MQ without CTRL_VQ from the front-end, and transmits on both pairs: no verdict');
  } finally {
    fe.close();
  }
});

test('vhost-user: SET_FEATURES with the same features after every ring stopped is a re-negotiation (the device resets), as before', async () => {
  const monitor = new Monitor();
  const device = netDevice(monitor);
  const fe = new TestFrontEnd(new VhostUserBackend(device));
  try {
    fe.send(Req.SET_PROTOCOL_FEATURES, u64Payload(SLOTS | REPLY_ACK));
    await startPair(fe, 0);
    const [, tx2] = await startPair(fe, 1);
    await barrier(fe);
    assert.equal(device.type.queuePairs, 2);
    transmit(fe, tx2, bufAt(3), 5005, 'tx2');
    assert.ok(await tx2.waitUsed(1));
    for (let i = 0; i < 4; i++) await fe.getVringBase(i);
    fe.send(Req.SET_FEATURES, u64Payload(MQ_FEATURES | PROTOCOL_FEATURES_BIT));
    await barrier(fe);
    // The reset forgot the queues (their setup starts over), the ring enables are the front-end's and stay.
    assert.equal(device.queues[3].active, false, 'the device was reset: its queues start over');
    assert.equal(device.type.queuePairs, 2, 'the rings QEMU enabled stay enabled across the reset');
    assert.deepEqual(monitor.verdicts, []);
  } finally {
    fe.close();
  }
});

test('DeviceType.queueEnabled: the driver enabling a queue over loopback calls it; setQueueEnabled (vhost-user SET_VRING_ENABLE) calls it either way', async () => {
  const calls: string[] = [];
  const device = new RngDevice({ monitor: new Monitor() });
  (device.type as DeviceType).queueEnabled = (i, on) => calls.push(`${i}:${on}`);
  const driver = new RngDriver(new LoopbackTransport(device, GuestMemory.create(1 << 20)));
  await driver.start();
  assert.deepEqual(calls, ['0:true'], 'queue_enable by the driver');
  device.setQueueEnabled(0, false);
  device.setQueueEnabled(0, true);
  device.setQueueEnabled(7, true); // no such queue: not passed on
  assert.deepEqual(calls, ['0:true', '0:false', '0:true']);
});
