// vhost-user ring lifecycle (vhost-user.rst "Ring states"): a ring stopped with GET_VRING_BASE
// (or SET_STATUS 0) and started again with SET_VRING_BASE goes on where it stood, for split and
// packed rings (wrap counters included); a stop waits for the requests in progress; a base
// that cannot be right ends the connection with a reason.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Monitor } from '../../src/monitor/monitor.js';
import { RngDevice } from '../../src/devices/rng/device.js';
import { BlkDevice } from '../../src/devices/blk/device.js';
import { VhostUserBackend } from '../../src/transports/vhost-user/backend.js';
import { ProtocolFeature, Req, statePayload, u64Payload } from '../../src/transports/vhost-user/protocol.js';
import { Feature } from '../../src/spec/constants.js';
import { bit } from '../../src/spec/features.js';
import type { RingFormat } from '../../src/virtqueue/queue.js';
import { TestFrontEnd, closedWith, n, receive, until } from './front-end.js';
import { turns } from '../wait.js';
import { HeldBackend, blkRead } from './held-disk.js';

const PROTOCOL_FEATURES_BIT = 1n << 30n;
const RING = 0x1000;
const BUFS = 0x20000;

function features(format: RingFormat): bigint {
  return bit(Feature.VERSION_1) | bit(Feature.EVENT_IDX) | PROTOCOL_FEATURES_BIT | (format === 'packed' ? bit(Feature.RING_PACKED) : 0n);
}

/** The base GET_VRING_BASE answers: split, the next available index; packed, both slots and wrap counters. */
function expectedBase(format: RingFormat, served: number, size: number): number {
  if (format === 'split') return served & 0xffff;
  const slot = served % size;
  const wrap = Math.floor(served / size) % 2 === 0 ? 1 : 0;
  return (slot | (wrap << 15) | (slot << 16) | (wrap << 31)) >>> 0;
}

for (const format of ['split', 'packed'] as const) {
  test(`vhost-user back-end: a ${format} ring stopped with GET_VRING_BASE and started again goes on where it stood`, async () => {
    const monitor = new Monitor();
    let fill = 0;
    const device = new RngDevice({ monitor, source: (d) => d.fill(++fill) });
    if (format === 'split') device.withholdFeatures(bit(Feature.RING_PACKED));
    const fe = new TestFrontEnd(new VhostUserBackend(device));
    try {
      const size = 4;
      fe.send(Req.SET_OWNER);
      fe.send(Req.SET_FEATURES, u64Payload(features(format)));
      fe.sendMemTable();
      // A new ring: QEMU's base has both wrap counters set for packed rings (they start at 1).
      let ring = fe.setRing(0, format, size, RING, format === 'packed' ? 0x80008000 : 0, { eventIdx: true });
      const q = ring.queue;
      let served = 0;
      // Three rounds of three requests on a ring of four: the packed ring wraps (both wrap
      // counters flip) and every round starts from the base the previous stop answered.
      for (let round = 0; round < 3; round++) {
        const first = served;
        for (let i = 0; i < 3; i++) q.begin().addWritable(BUFS + (first + i) * 0x100, 64).commit(`req${first + i}`);
        q.publish();
        q.enableInterrupts();
        n.eventfdWrite(ring.kick, 1);
        assert.ok((await ring.waitCall()) > 0, `round ${round}: the back-end signalled (${fe.backend.lastError} ${JSON.stringify(monitor.verdicts)})`);
        for (let i = 0; i < 3; i++) assert.equal(q.getUsed(), `req${first + i}`, `round ${round}: request ${first + i} used`);
        assert.equal(q.usedPending(), 0, `round ${round}: nothing served twice`);
        served += 3;
        // Each request served once: its buffer holds one fill value, the next request's another.
        for (let i = 0; i < 3; i++) {
          const b = fe.bytes(BUFS + (first + i) * 0x100, 64);
          assert.ok(b.every((x) => x === b[0] && x !== 0), `request ${first + i} written once`);
        }
        const fills = fill;
        const base = await fe.getVringBase(0);
        assert.equal(base, expectedBase(format, served, size), `round ${round}: GET_VRING_BASE`);
        // Started again the way QEMU does after stop/cont: features (the device resets), ring.
        fe.send(Req.SET_FEATURES, u64Payload(features(format)));
        ring = fe.setRing(0, format, size, RING, base, { eventIdx: true }, q);
        n.eventfdWrite(ring.kick, 1); // starts the ring: one starting from 0 would serve old requests again
        await turns(5); // nothing may happen: give the back-end 5 loop turns (not a time) to do it wrongly
        assert.equal(fill, fills, `round ${round}: the restart served nothing again`);
      }
      if (format === 'split') assert.equal(fe.u16(ring.queue.addrs.used + 2), served, 'used.idx went on counting');
      assert.deepEqual(monitor.verdicts, []);
    } finally {
      fe.close();
    }
  });
}

for (const stop of ['GET_VRING_BASE', 'SET_STATUS 0'] as const) {
  test(`vhost-user back-end: ${stop} waits for a request in progress, takes no new one, and later messages wait`, async () => {
    const monitor = new Monitor();
    const disk = new HeldBackend(1 << 20);
    disk.bytes.fill(0x5a, 0, 512);
    const device = new BlkDevice({ backend: disk, monitor, queueMaxSize: 16 });
    device.withholdFeatures(bit(Feature.RING_PACKED));
    const fe = new TestFrontEnd(new VhostUserBackend(device));
    try {
      fe.send(Req.SET_FEATURES, u64Payload(bit(Feature.VERSION_1) | PROTOCOL_FEATURES_BIT));
      const proto = (1n << BigInt(ProtocolFeature.STATUS)) | (1n << BigInt(ProtocolFeature.REPLY_ACK));
      fe.send(Req.SET_PROTOCOL_FEATURES, u64Payload(proto));
      fe.sendMemTable();
      const ring = fe.setRing(0, 'split', 16, RING, 0, { eventIdx: false });
      const q = ring.queue;
      const request = (k: number) => blkRead(fe, ring, k);
      request(0);
      await disk.whenHeld(1);
      assert.equal(disk.held.length, 1, 'the read reached the disk');

      // The stop, then a message behind it, then a new request the stopped ring must not take.
      if (stop === 'GET_VRING_BASE') fe.send(Req.GET_VRING_BASE, statePayload(0, 0));
      else fe.send(Req.SET_STATUS, u64Payload(0), [], 1 | 8); // NEED_REPLY: acknowledged once done
      fe.send(Req.GET_FEATURES);
      // (A socket message and an eventfd kick have no order between them: let the stop land
      // first, as it does under QEMU, whose vCPUs are stopped before it asks. Landed: the ring
      // is paused.)
      await until(() => fe.backend.rings[0]?.paused === true, 'the stop to pause the ring');
      request(1);
      await turns(20); // nothing may happen: give the back-end 20 loop turns (not a time) to do it wrongly
      assert.equal(n.recvmsg(fe.front, new Uint8Array(64)).bytes, -1, 'no answer while the read is in progress');
      assert.equal(fe.u16(q.addrs.used + 2), 0, 'nothing used yet');

      disk.held.shift()!();
      const first = new DataView((await receive(fe.front)).buffer);
      assert.equal(first.getUint32(0, true), stop === 'GET_VRING_BASE' ? Req.GET_VRING_BASE : Req.SET_STATUS, 'the stop is answered first');
      if (stop === 'GET_VRING_BASE') assert.equal(first.getUint32(16, true), 1, 'base: one request served');
      else assert.equal(first.getBigUint64(12, true), 0n, 'SET_STATUS acknowledged with success');
      assert.equal(fe.u16(q.addrs.used + 2), 1, 'the request in progress was used before the answer');
      assert.equal(fe.bytes(0x30000 + 0x100, 1)[0], 0, 'with status OK');
      assert.ok(fe.bytes(0x30000 + 0x200, 512).every((b) => b === 0x5a), 'and its data');
      assert.equal(q.getUsed(), 'read0');
      const second = new DataView((await receive(fe.front)).buffer);
      assert.equal(second.getUint32(0, true), Req.GET_FEATURES, 'the message behind the stop is answered after it');
      await turns(10); // nothing may happen: give the back-end 10 loop turns (not a time) to do it wrongly
      assert.equal(disk.held.length, 0, 'the request made available after the stop was not taken');
      assert.equal(fe.u16(q.addrs.used + 2), 1);
      assert.deepEqual(monitor.verdicts, []);
    } finally {
      fe.close();
    }
  });
}

for (const [format, base, reason] of [
  ['split', 40000, /^ring 0: base 40000 is more than the ring size 16 ahead of the used index 0$/],
  ['packed', 20 | 0x8000, /^ring 0: packed ring base 0x8014 points outside a ring of 16$/],
] as const) {
  test(`vhost-user back-end: a ${format} SET_VRING_BASE that cannot be right ends the connection with a reason`, async () => {
    const device = new RngDevice({ monitor: new Monitor() });
    if (format === 'split') device.withholdFeatures(bit(Feature.RING_PACKED));
    const backend = new VhostUserBackend(device);
    const fe = new TestFrontEnd(backend);
    try {
      fe.send(Req.SET_FEATURES, u64Payload(features(format)));
      fe.sendMemTable();
      const ring = fe.setRing(0, format, 16, RING, base, { eventIdx: true });
      n.eventfdWrite(ring.kick, 1);
      await closedWith(fe, reason, 'ring-base');
      assert.equal(device.getStatus(), 0, 'the device was reset');
    } finally {
      fe.close();
    }
  });
}

test('vhost-user back-end: a 3 GiB memory region is mapped in 1 GiB pieces and a buffer across a piece boundary is served whole', async () => {
  const GIB = 1 << 30;
  const device = new RngDevice({ monitor: new Monitor(), source: (d) => d.fill(0x5c) });
  device.withholdFeatures(bit(Feature.RING_PACKED));
  // A sparse memfd: only the pages touched take memory.
  const fe = new TestFrontEnd(new VhostUserBackend(device), 3 * GIB);
  try {
    fe.send(Req.SET_FEATURES, u64Payload(features('split')));
    fe.sendMemTable();
    const ring = fe.setRing(0, 'split', 16, RING, 0, { eventIdx: true });
    const q = ring.queue;
    // 8 KiB straddling the first piece boundary, and 4 KiB straddling the second.
    q.begin().addWritable(GIB - 4096, 8192).commit('across-1');
    q.begin().addWritable(2 * GIB - 100, 4096).commit('across-2');
    q.publish();
    q.enableInterrupts();
    n.eventfdWrite(ring.kick, 1);
    assert.ok((await ring.waitCall()) > 0, fe.backend.lastError);
    assert.equal(q.getUsed(), 'across-1');
    assert.equal(q.lastLen, 8192);
    assert.equal(q.getUsed(), 'across-2');
    assert.equal(q.lastLen, 4096);
    assert.ok(fe.bytes(GIB - 4096, 8192).every((b) => b === 0x5c), 'both sides of the 1 GiB boundary written');
    assert.ok(fe.bytes(2 * GIB - 100, 4096).every((b) => b === 0x5c), 'both sides of the 2 GiB boundary written');
    assert.equal(fe.bytes(GIB + 4096, 1)[0], 0, 'and nothing past the buffer');
  } finally {
    fe.close();
  }
});

for (const [what, request] of [
  ['kick', Req.SET_VRING_KICK],
  ['call', Req.SET_VRING_CALL],
] as const) {
  test(`vhost-user back-end: a ${what} fd that is not an eventfd is refused before use (a file is always readable: the ring would spin)`, async () => {
    const device = new RngDevice({ monitor: new Monitor() });
    const fe = new TestFrontEnd(new VhostUserBackend(device));
    try {
      const notEventfd = n.memfdCreate('not-an-eventfd', 4096);
      fe.fds.push(notEventfd);
      fe.send(Req.SET_FEATURES, u64Payload(features('split')));
      fe.send(request, u64Payload(0n), [notEventfd]);
      await closedWith(fe, new RegExp(`the ${what} fd is not an eventfd`), 'bad-fd');
    } finally {
      fe.close();
    }
  });
}
