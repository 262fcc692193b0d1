// vhost-user memory slots (VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS): guest RAM arrives with
// ADD_MEM_REG instead of SET_MEM_TABLE, and regions come and go while the rings run (QEMU's
// memory hotplug); a region is added in place, a removal waits for the requests in progress,
// and what cannot be right (overlap, no free slot, unknown region, a running ring's memory)
// ends the connection with a reason, unless the front-end asked for a REPLY_ACK to a message
// refused before it acted (then a non-zero ack).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Monitor } from '../../src/monitor/monitor.js';
import { RngDevice } from '../../src/devices/rng/device.js';
import { BlkDevice } from '../../src/devices/blk/device.js';
import { VhostUserBackend } from '../../src/transports/vhost-user/backend.js';
import { MAX_MEM_SLOTS } from '../../src/transports/vhost-user/mem-slots.js';
import { FLAG_NEED_REPLY, HEADER_SIZE, ProtocolFeature, Req, u64Payload } from '../../src/transports/vhost-user/protocol.js';
import { Feature } from '../../src/spec/constants.js';
import { bit } from '../../src/spec/features.js';
import { TestFrontEnd, USER_BASE, closedWith, n, receive, memRegionPayload, until, type TestRing } from './front-end.js';
import { turns } from '../wait.js';
import { HeldBackend, blkRead } from './held-disk.js';

const PROTOCOL_FEATURES_BIT = 1n << 30n;
const ACK = 1 | FLAG_NEED_REPLY;
const SLOTS = 1n << BigInt(ProtocolFeature.CONFIGURE_MEM_SLOTS);
const REPLY_ACK = 1n << BigInt(ProtocolFeature.REPLY_ACK);
/** Where the plugged region sits: above 4 GiB, as QEMU puts hot-added memory. */
const HIGH = 0x1_0000_0000;

/** The REPLY_ACK answer to the last request: its request code and u64 (0 = success). */
async function ack(fe: TestFrontEnd): Promise<[number, bigint]> {
  const r = new DataView((await receive(fe.front)).buffer);
  return [r.getUint32(0, true), r.getBigUint64(HEADER_SIZE, true)];
}

/** Negotiates like QEMU with CONFIGURE_MEM_SLOTS and REPLY_ACK; guest RAM through ADD_MEM_REG. */
async function connect(fe: TestFrontEnd): Promise<void> {
  fe.send(Req.SET_OWNER);
  fe.send(Req.SET_PROTOCOL_FEATURES, u64Payload(SLOTS | REPLY_ACK));
  fe.send(Req.SET_FEATURES, u64Payload(bit(Feature.VERSION_1) | bit(Feature.EVENT_IDX) | PROTOCOL_FEATURES_BIT));
  fe.sendMemSlot(ACK);
  assert.deepEqual(await ack(fe), [Req.ADD_MEM_REG, 0n], `guest RAM added (${fe.backend.lastError})`);
}

/** An entropy device on split rings behind a back-end, and a test front-end connected to it. */
function splitRngBackend(): { device: RngDevice; backend: VhostUserBackend; fe: TestFrontEnd } {
  const device = new RngDevice({ monitor: new Monitor() });
  device.withholdFeatures(bit(Feature.RING_PACKED));
  const backend = new VhostUserBackend(device);
  return { device, backend, fe: new TestFrontEnd(backend) };
}

/** Makes one writable buffer available, kicks, and waits until the device used it. */
async function serve(ring: TestRing, addr: number, len: number, token: string): Promise<void> {
  ring.queue.begin().addWritable(addr, len).commit(token);
  ring.queue.publish();
  ring.queue.enableInterrupts();
  n.eventfdWrite(ring.kick, 1);
  assert.ok((await ring.waitCall()) > 0, `${token}: the back-end signalled`);
  assert.equal(ring.queue.getUsed(), token);
}

test('vhost-user memory slots: offered, GET_MAX_MEM_SLOTS answers 509, guest RAM arrives with ADD_MEM_REG', async () => {
  const device = new RngDevice({ monitor: new Monitor() });
  const fe = new TestFrontEnd(new VhostUserBackend(device));
  try {
    const proto = (await fe.ask(Req.GET_PROTOCOL_FEATURES)).getBigUint64(0, true);
    assert.ok(proto & SLOTS, 'VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS offered');
    fe.send(Req.SET_PROTOCOL_FEATURES, u64Payload(SLOTS | REPLY_ACK));
    assert.equal((await fe.ask(Req.GET_MAX_MEM_SLOTS)).getBigUint64(0, true), BigInt(MAX_MEM_SLOTS));
    assert.equal(MAX_MEM_SLOTS, 509);
    fe.sendMemSlot(ACK);
    assert.deepEqual(await ack(fe), [Req.ADD_MEM_REG, 0n]);
    assert.deepEqual(device.memory.regions.map((r) => [r.guestAddr, r.size, r.userAddr]), [[0, fe.ramSize, USER_BASE]]);
  } finally {
    fe.close();
  }
});

test('vhost-user memory slots: a region plugged in while a ring runs serves a buffer; unplugged, the ring goes on', async () => {
  const monitor = new Monitor();
  const device = new RngDevice({ monitor, source: (d) => d.fill(0x42) });
  device.withholdFeatures(bit(Feature.RING_PACKED));
  const lines: string[] = [];
  const backend = new VhostUserBackend(device, { info: (m) => lines.push(m), warn: (m) => lines.push(m) });
  const fe = new TestFrontEnd(backend);
  try {
    await connect(fe);
    const ring = fe.setRing(0, 'split', 16, 0x1000, 0, { eventIdx: true });
    await serve(ring, 0x20000, 64, 'in RAM');
    const queue = device.queues[0];

    // QEMU 7.2 may send REM_MEM_REG with the region's fd, later QEMUs without: both are taken.
    for (const withFd of [true, false]) {
      const high = fe.plugRegion(HIGH, 0x10000, ACK);
      assert.deepEqual(await ack(fe), [Req.ADD_MEM_REG, 0n], `plugged (${backend.lastError})`);
      assert.equal(device.queues[0], queue, 'the queue was not made anew');
      await serve(ring, HIGH + 0x100, 64, 'in the plugged region');
      assert.ok(new Uint8Array(high.ram, 0x100, 64).every((b) => b === 0x42), 'the random bytes landed in the plugged region');
      assert.equal(device.memory.regions.length, 2);

      fe.unplugRegion(high, ACK, withFd);
      assert.deepEqual(await ack(fe), [Req.REM_MEM_REG, 0n], `unplugged (${backend.lastError})`);
      assert.deepEqual(device.memory.regions.map((r) => r.guestAddr), [0], 'the region is gone');
      assert.equal(device.memory.regionFor(HIGH + 0x100, 1), null, 'its addresses are outside guest memory');
      await serve(ring, 0x20100, 64, 'in RAM again');
    }
    assert.equal(lines.filter((l) => /ring 0 started/.test(l)).length, 1, 'the ring started once and never stopped');
    assert.equal(device.live, true);
    assert.deepEqual(monitor.verdicts, []);
  } finally {
    fe.close();
  }
});

test('vhost-user memory slots: a removal waits for the request in progress whose buffer is in the region; requests behind it wait', async () => {
  const monitor = new Monitor();
  const disk = new HeldBackend(1 << 20);
  disk.bytes.fill(0x5a, 0, 4096);
  const device = new BlkDevice({ backend: disk, monitor, queueMaxSize: 16 });
  device.withholdFeatures(bit(Feature.RING_PACKED));
  const backend = new VhostUserBackend(device);
  const fe = new TestFrontEnd(backend);
  try {
    await connect(fe);
    const ring = fe.setRing(0, 'split', 16, 0x1000, 0, { eventIdx: false });
    const high = fe.plugRegion(HIGH, 0x10000, ACK);
    assert.deepEqual(await ack(fe), [Req.ADD_MEM_REG, 0n]);
    /** A 512-byte read of sector 0: header and status in RAM, the data at `data`. */
    const read = (k: number, data: number) => blkRead(fe, ring, k, data);
    read(0, HIGH + 0x200);
    await disk.whenHeld(1);
    assert.equal(disk.held.length, 1, 'the read reached the disk');

    fe.unplugRegion(high, ACK);
    // The removal lands before the next kick (a socket message and a kick have no order between
    // them): it has landed when the ring is paused.
    await until(() => fe.backend.rings[0]?.paused === true, 'the removal to pause the ring');
    read(1, 0x50000); // a new request: not taken while the removal waits
    await turns(20); // nothing may happen: give the back-end 20 loop turns (not a time) to do it wrongly
    assert.equal(n.recvmsg(fe.front, new Uint8Array(64)).bytes, -1, 'no answer while the read is in progress');
    assert.equal(disk.held.length, 1, 'no new request taken meanwhile (the first is still held)');
    assert.equal(device.memory.regions.length, 2, 'the region is still there');

    disk.held.shift()!();
    assert.deepEqual(await ack(fe), [Req.REM_MEM_REG, 0n], `removed (${backend.lastError})`);
    assert.ok(new Uint8Array(high.ram, 0x200, 512).every((b) => b === 0x5a), 'the read landed before the region went');
    assert.equal(fe.bytes(0x30100, 1)[0], 0, 'status OK');
    assert.equal(device.memory.regions.length, 1);
    // The rings run again: the request that waited is taken now.
    const held = () => disk.held.length; // (not narrowed by the assertions above)
    await disk.whenHeld(1);
    assert.equal(held(), 1, 'the waiting request is taken after the removal');
    disk.held.shift()!();
    // read0 was answered (and signalled) when the removal went through; read1 now.
    assert.ok(await ring.waitUsed(2), `both reads answered (${backend.lastError})`);
    assert.deepEqual([ring.queue.getUsed(), ring.queue.getUsed()], ['read0', 'read1']);
    assert.ok(fe.bytes(0x50000, 512).every((b) => b === 0x5a));
    assert.deepEqual(monitor.verdicts, []);
  } finally {
    fe.close();
  }
});

for (const [name, act, reason, kind] of [
  ['an unknown region removed', (fe: TestFrontEnd) => fe.send(Req.REM_MEM_REG, memRegionPayload(0x200000, 0x1000, USER_BASE + 0x200000)), /REM_MEM_REG: no region at guest 0x200000, size 0x1000/, 'memory-table'],
  ['a region removed with the wrong front-end address', (fe: TestFrontEnd) => fe.send(Req.REM_MEM_REG, memRegionPayload(0, fe.ramSize, USER_BASE + 0x1000)), /no region at guest 0x0, size 0x100000, front-end address 0x7f0000001000/, 'memory-table'],
  ['the memory a running ring lives in removed', (fe: TestFrontEnd) => fe.send(Req.REM_MEM_REG, memRegionPayload(0, fe.ramSize, USER_BASE)), /ring 0 lives in the region at \[0x0, \+0x100000\): stop the ring/, 'memory-table'],
  ['an overlapping region added', (fe: TestFrontEnd) => fe.send(Req.ADD_MEM_REG, memRegionPayload(0xff000, 0x2000, USER_BASE + 0x200000), [fe.memfd]), /region \[0xff000, \+0x2000\) overlaps the region at \[0x0, \+0x100000\)/, 'memory-table'],
  ['a region added without its fd', (fe: TestFrontEnd) => fe.send(Req.ADD_MEM_REG, memRegionPayload(HIGH, 0x1000, USER_BASE + HIGH)), /ADD_MEM_REG: 0 file descriptors, expected 1/, 'malformed-message'],
] as const) {
  test(`vhost-user memory slots: ${name} ends the connection with a reason`, async () => {
    const { device, fe } = splitRngBackend();
    try {
      await connect(fe);
      const ring = fe.setRing(0, 'split', 16, 0x1000, 0, { eventIdx: true });
      await serve(ring, 0x20000, 64, 'started');
      act(fe);
      await closedWith(fe, reason, kind);
      assert.equal(device.getStatus(), 0, 'the device was reset');
    } finally {
      fe.close();
    }
  });
}

test(`vhost-user memory slots: ${MAX_MEM_SLOTS} regions are taken, one more is refused with a non-zero REPLY_ACK and the session goes on`, async () => {
  const device = new RngDevice({ monitor: new Monitor() });
  const backend = new VhostUserBackend(device);
  const fe = new TestFrontEnd(backend);
  try {
    fe.send(Req.SET_PROTOCOL_FEATURES, u64Payload(SLOTS | REPLY_ACK));
    // Page-sized regions 8 KiB apart, all from guest RAM's memfd (one fd per message, as QEMU sends).
    const add = (i: number) => fe.send(Req.ADD_MEM_REG, memRegionPayload(i * 0x2000, 0x1000, USER_BASE + i * 0x2000, (i % 256) * 0x1000), [fe.memfd], ACK);
    for (let i = 0; i < MAX_MEM_SLOTS; i++) {
      add(i);
      assert.deepEqual(await ack(fe), [Req.ADD_MEM_REG, 0n], `region ${i} (${backend.lastError})`);
    }
    assert.equal(device.memory.regions.length, MAX_MEM_SLOTS);
    add(MAX_MEM_SLOTS);
    // Refused before it acted, and the front-end asked to hear: told, not disconnected.
    assert.deepEqual(await ack(fe), [Req.ADD_MEM_REG, 1n]);
    assert.equal(backend.lastError, '');
    assert.equal(device.memory.regions.length, MAX_MEM_SLOTS);
    fe.send(Req.GET_MAX_MEM_SLOTS);
    assert.equal(new DataView((await receive(fe.front)).buffer).getBigUint64(HEADER_SIZE, true), BigInt(MAX_MEM_SLOTS), 'the session goes on');
  } finally {
    fe.close();
  }
});

test('vhost-user memory slots: the same region added again (QEMU 7.2 multiqueue net, one vhost device per queue pair on one connection) is counted, not an overlap; it goes with the last REM_MEM_REG', async () => {
  const { device, backend, fe } = splitRngBackend();
  try {
    await connect(fe);
    fe.sendMemSlot(ACK);
    assert.deepEqual(await ack(fe), [Req.ADD_MEM_REG, 0n], `the same region again is taken (${backend.lastError})`);
    assert.equal(device.memory.regions.length, 1, 'one mapping');
    const ring = fe.setRing(0, 'split', 16, 0x1000, 0, { eventIdx: true });
    await serve(ring, 0x20000, 64, 'first');
    // One of the two vhost devices removes it: the other still uses it, the ring in it runs on.
    fe.send(Req.REM_MEM_REG, memRegionPayload(0, fe.ramSize, USER_BASE), [], ACK);
    assert.deepEqual(await ack(fe), [Req.REM_MEM_REG, 0n]);
    assert.equal(device.memory.regions.length, 1);
    await serve(ring, 0x20100, 64, 'second');
    // The last one: the region really goes, and a running ring lives in it.
    fe.send(Req.REM_MEM_REG, memRegionPayload(0, fe.ramSize, USER_BASE));
    await closedWith(fe, /ring 0 lives in the region at \[0x0, \+0x100000\)/, 'memory-table');
  } finally {
    fe.close();
  }
});
