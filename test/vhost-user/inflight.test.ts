// vhost-user inflight I/O tracking (VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD): a back-end that dies
// with requests in flight is replaced by a new one, which gets the front-end's inflight buffer
// back and serves exactly the requests the first one took and never finished: none lost, none
// served twice, even when they finished out of order.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Monitor } from '../../src/monitor/monitor.js';
import { BlkDevice, BlkType } from '../../src/devices/blk/device.js';
import { VhostUserBackend } from '../../src/transports/vhost-user/backend.js';
import { HEADER_SIZE, ProtocolFeature, Req, u64Payload } from '../../src/transports/vhost-user/protocol.js';
import { packedInflightQueueSize, splitInflightQueueSize } from '../../src/transports/vhost-user/inflight.js';
import type { RingFormat } from '../../src/virtqueue/queue.js';
import { Feature } from '../../src/spec/constants.js';
import { bit } from '../../src/spec/features.js';
import { TestFrontEnd, backendClosed, n, receiveMessage } from './front-end.js';
import { HeldBackend } from './held-disk.js';

const FEATURES = bit(Feature.VERSION_1) | (1n << 30n);
const PROTOCOL = (1n << BigInt(ProtocolFeature.INFLIGHT_SHMFD)) | (1n << BigInt(ProtocolFeature.REPLY_ACK));
const QSIZE = 16;

/** A disk whose reads finish only when the test says so (or at once when `held` is false). */
class Disk extends HeldBackend {
  holding = true;
  reads = 0;
  override read(offset: number, views: readonly Uint8Array[]): Promise<void> {
    this.reads++;
    if (!this.holding) return this.readNow(offset, views);
    return super.read(offset, views);
  }
}

function inflightPayload(size: number, numQueues: number, queueSize: number): Uint8Array {
  const p = new Uint8Array(24);
  const v = new DataView(p.buffer);
  v.setBigUint64(0, BigInt(size), true);
  v.setUint16(16, numQueues, true);
  v.setUint16(18, queueSize, true);
  return p;
}

function blkBackend(disk: Disk, format: RingFormat = 'split'): VhostUserBackend {
  const device = new BlkDevice({ backend: disk, monitor: new Monitor(), queueMaxSize: QSIZE });
  if (format === 'split') device.withholdFeatures(bit(Feature.RING_PACKED));
  return new VhostUserBackend(device);
}

for (const format of ['split', 'packed'] as const) {
test(`vhost-user inflight (${format} ring): a back-end restarted with requests in flight serves exactly those again, in the order they were taken`, async () => {
  const disk = new Disk(1 << 20);
  for (let s = 0; s < 4; s++) disk.bytes.fill(0x10 + s, s * 512, s * 512 + 512);
  const features = FEATURES | (format === 'packed' ? bit(Feature.RING_PACKED) : 0n);
  // QEMU's base for a new ring; for packed rings also what it sends after losing a back-end
  // (it has no used index in guest memory to restore from).
  const firstBase = format === 'packed' ? 0x80008000 : 0;
  const fe = new TestFrontEnd(blkBackend(disk, format));
  try {
    fe.send(Req.SET_FEATURES, u64Payload(features));
    fe.send(Req.SET_PROTOCOL_FEATURES, u64Payload(PROTOCOL));
    // The front-end asks for a buffer (QEMU does at the first start) and hands it back.
    fe.send(Req.GET_INFLIGHT_FD, inflightPayload(0, 1, QSIZE));
    const got = await receiveMessage(fe.front);
    const gv = new DataView(got.data.buffer, HEADER_SIZE);
    const size = Number(gv.getBigUint64(0, true));
    assert.equal(size, format === 'packed' ? packedInflightQueueSize(QSIZE) : splitInflightQueueSize(QSIZE));
    assert.equal(got.fds.length, 1, 'the buffer comes as an fd');
    const inflightFd = got.fds[0];
    fe.fds.push(inflightFd);
    fe.send(Req.SET_INFLIGHT_FD, inflightPayload(size, 1, QSIZE), [inflightFd]);
    fe.sendMemTable();
    let ring = fe.setRing(0, format, QSIZE, 0x1000, firstBase, { eventIdx: false });
    const q = ring.queue;
    const read = (k: number) => {
      const hdr = 0x30000 + k * 0x1000;
      const dv = new DataView(fe.ram, hdr, 16);
      dv.setUint32(0, BlkType.IN, true);
      dv.setBigUint64(8, BigInt(k), true);
      fe.bytes(hdr + 0x100, 1)[0] = 0xff;
      q.begin().addReadable(hdr, 16).addWritable(hdr + 0x200, 512).addWritable(hdr + 0x100, 1).commit(`read${k}`);
    };
    for (let k = 0; k < 4; k++) read(k);
    q.publish();
    n.eventfdWrite(ring.kick, 1);
    await disk.whenHeld(4);
    assert.equal(disk.held.length, 4);
    // Reads 2 and 0 finish (out of order); 1 and 3 are in flight when the back-end dies.
    disk.held[2]();
    disk.held[0]();
    assert.ok((await ring.waitCall()) > 0);
    assert.deepEqual([q.getUsed(), q.getUsed()], ['read2', 'read0']);
    for (const k of [0, 2]) fe.bytes(0x30000 + k * 0x1000 + 0x200, 512).fill(0); // a second serving would refill these
    fe.backend.close('killed');

    // A new back-end: the front-end hands it the same inflight buffer and the base it restored
    // itself (the used index: 2), as QEMU does after it lost the back-end.
    const disk2 = new Disk(1 << 20);
    disk2.bytes.set(disk.bytes);
    disk2.holding = false;
    fe.backend = blkBackend(disk2, format);
    fe.connect(fe.backend);
    fe.send(Req.SET_FEATURES, u64Payload(features));
    fe.send(Req.SET_PROTOCOL_FEATURES, u64Payload(PROTOCOL));
    fe.send(Req.SET_INFLIGHT_FD, inflightPayload(size, 1, QSIZE), [inflightFd]);
    fe.sendMemTable();
    ring = fe.setRing(0, format, QSIZE, 0x1000, format === 'packed' ? firstBase : 2, { eventIdx: false }, q);
    n.eventfdWrite(ring.kick, 1);
    assert.ok((await ring.waitCall()) > 0, `the new back-end served the requests in flight (${fe.backend.lastError})`);
    await ring.waitUsed(2);
    assert.deepEqual([q.getUsed(), q.getUsed()], ['read1', 'read3'], 'the two in flight, in the order they were taken');
    assert.equal(q.usedPending(), 0);
    assert.equal(disk2.reads, 2, 'nothing else was read again');
    for (const k of [1, 3]) {
      assert.equal(fe.bytes(0x30000 + k * 0x1000 + 0x100, 1)[0], 0, `read ${k}: status OK`);
      assert.ok(fe.bytes(0x30000 + k * 0x1000 + 0x200, 512).every((b) => b === 0x10 + k), `read ${k}: its sector`);
    }
    for (const k of [0, 2]) assert.ok(fe.bytes(0x30000 + k * 0x1000 + 0x200, 512).every((b) => b === 0), `read ${k} was not served twice`);
    if (format === 'split') assert.equal(fe.u16(q.addrs.used + 2), 4);

    // And the ring goes on with new requests after the resubmitted ones.
    read(4);
    q.publish();
    n.eventfdWrite(ring.kick, 1);
    assert.ok((await ring.waitCall()) > 0);
    assert.equal(q.getUsed(), 'read4');
    assert.equal(disk2.reads, 3);
  } finally {
    fe.close();
  }
});
}

test('vhost-user inflight: a damaged inflight buffer ends the connection with a reason', async () => {
  const disk = new Disk(1 << 20);
  disk.holding = false;
  const backend = blkBackend(disk);
  const fe = new TestFrontEnd(backend);
  try {
    const size = splitInflightQueueSize(QSIZE);
    const fd = n.memfdCreate('inflight', size);
    fe.fds.push(fd);
    const map = n.mmap(fd, 0, size);
    const v = new DataView(map);
    v.setUint16(8, 1, true); // version 1
    v.setUint16(10, QSIZE, true);
    new Uint8Array(map)[16 + 16 * 3] = 7; // descriptor 3's inflight flag: neither 0 nor 1
    n.munmap(map);
    fe.send(Req.SET_FEATURES, u64Payload(FEATURES));
    fe.send(Req.SET_PROTOCOL_FEATURES, u64Payload(PROTOCOL));
    fe.send(Req.SET_INFLIGHT_FD, inflightPayload(size, 1, QSIZE), [fd]);
    fe.sendMemTable();
    const ring = fe.setRing(0, 'split', QSIZE, 0x1000, 0, { eventIdx: false });
    n.eventfdWrite(ring.kick, 1);
    await backendClosed(backend);
    assert.match(backend.lastError, /inflight region: inflight flag 7 at descriptor 3/);
    assert.equal(backend.lastFailure?.kind, 'inflight');
  } finally {
    fe.close();
  }
});

test('vhost-user inflight: an inflight buffer too small for its queues is refused', async () => {
  const backend = blkBackend(new Disk(1 << 20));
  const fe = new TestFrontEnd(backend);
  try {
    const fd = n.memfdCreate('inflight', 64);
    fe.fds.push(fd);
    fe.send(Req.SET_PROTOCOL_FEATURES, u64Payload(PROTOCOL));
    fe.send(Req.SET_INFLIGHT_FD, inflightPayload(64, 1, QSIZE), [fd]);
    await backendClosed(backend);
    assert.match(backend.lastError, /inflight buffer of 64 bytes is smaller than 1 queues of 16 need \(320\)/);
    assert.equal(backend.lastFailure?.kind, 'inflight');
  } finally {
    fe.close();
  }
});
