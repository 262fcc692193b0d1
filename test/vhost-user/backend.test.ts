// The vhost-user back-end with a small front-end written here: real socketpair, memfd guest
// memory mapped on both sides, eventfds for kick and call. The entropy device serves a ring.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Monitor } from '../../src/monitor/monitor.js';
import { RngDevice } from '../../src/devices/rng/device.js';
import { VhostUserBackend } from '../../src/transports/vhost-user/backend.js';
import { BackendReq, HEADER_SIZE, ProtocolFeature, Req, statePayload, u64Payload } from '../../src/transports/vhost-user/protocol.js';
import { Feature, Status } from '../../src/spec/constants.js';
import { bit } from '../../src/spec/features.js';
import { TestFrontEnd, backendClosed, barrier, closedWith, message, n, receive as reply } from './front-end.js';

test('vhost-user back-end: an entropy ring served through memfd memory, kick and call eventfds', async () => {
  const monitor = new Monitor();
  const device = new RngDevice({ monitor, source: (d) => d.fill(0x42) });
  device.withholdFeatures(bit(Feature.RING_PACKED)); // this front-end drives split rings
  const backend = new VhostUserBackend(device);
  const fe = new TestFrontEnd(backend);
  const front = fe.front;
  try {
    n.sendmsg(front, message(Req.GET_FEATURES));
    const feats = new DataView((await reply(front)).buffer).getBigUint64(HEADER_SIZE, true);
    assert.ok(feats & (1n << 30n), 'offers VHOST_USER_F_PROTOCOL_FEATURES');
    assert.ok(feats & bit(Feature.VERSION_1));
    n.sendmsg(front, message(Req.GET_PROTOCOL_FEATURES));
    const proto = new DataView((await reply(front)).buffer).getBigUint64(HEADER_SIZE, true);
    assert.ok(proto & (1n << BigInt(ProtocolFeature.STATUS)), 'offers VHOST_USER_PROTOCOL_F_STATUS');
    assert.ok(proto & (1n << BigInt(ProtocolFeature.BACKEND_REQ)), 'offers VHOST_USER_PROTOCOL_F_BACKEND_REQ');
    n.sendmsg(front, message(Req.SET_PROTOCOL_FEATURES, u64Payload((1n << BigInt(ProtocolFeature.STATUS)) | (1n << BigInt(ProtocolFeature.BACKEND_REQ)))));
    // The back-end request channel: the back-end writes, the front-end reads.
    const [channelFront, channelBack] = n.socketpair();
    n.sendmsg(front, message(Req.SET_BACKEND_REQ_FD), [channelBack]);
    n.close(channelBack); // the back-end holds its own copy now
    n.sendmsg(front, message(Req.SET_OWNER));
    n.sendmsg(front, message(Req.SET_FEATURES, u64Payload(bit(Feature.VERSION_1) | bit(Feature.EVENT_IDX) | (1n << 30n))));

    // Guest RAM: a memfd both sides map.
    fe.sendMemTable();
    const { queue: q, kick, waitCall } = fe.setRing(0, 'split', 16, 0x1000, 0, { eventIdx: true });
    const ram = fe.ram;
    await barrier(fe); // every message above acted on

    // The "guest driver" posts a buffer and kicks.
    q.begin().addWritable(0x20000, 64).commit('req');
    q.publish();
    n.eventfdWrite(kick, 1);
    assert.ok((await waitCall()) > 0, 'the back-end signalled the call eventfd');
    assert.equal(q.getUsed(), 'req');
    assert.equal(q.lastLen, 64);
    assert.ok(new Uint8Array(ram, 0x20000, 64).every((b) => b === 0x42), 'random bytes landed in guest memory');

    // GET_STATUS reports the status the device really holds: live after the first kick.
    const getStatus = async () => {
      n.sendmsg(front, message(Req.GET_STATUS));
      return Number(new DataView((await reply(front)).buffer).getBigUint64(HEADER_SIZE, true));
    };
    const live = Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK;
    assert.equal(await getStatus(), live);

    // SET_STATUS 0 resets the device (the way QEMU stops a device) ...
    n.sendmsg(front, message(Req.SET_STATUS, u64Payload(0)));
    assert.equal(await getStatus(), 0);

    // ... and GET_VRING_BASE, which the front-end sends after it, still tells where the ring stood.
    n.sendmsg(front, message(Req.GET_VRING_BASE, statePayload(0, 0)));
    const base = new DataView((await reply(front)).buffer).getUint32(HEADER_SIZE + 4, true);
    assert.equal(base, 1);
    assert.equal(device.getStatus(), 0);

    // Restarted the QEMU way: features again, then SET_STATUS with DRIVER_OK makes it live before
    // any kick; FAILED is recorded; a DRIVER_OK the device has not earned is not invented.
    n.sendmsg(front, message(Req.SET_STATUS, u64Payload(BigInt(live))));
    assert.equal(await getStatus(), 0, 'no FEATURES_OK yet: DRIVER_OK is not taken');
    n.sendmsg(front, message(Req.SET_FEATURES, u64Payload(bit(Feature.VERSION_1) | (1n << 30n))));
    n.sendmsg(front, message(Req.SET_STATUS, u64Payload(BigInt(live))));
    assert.equal(await getStatus(), live);
    n.sendmsg(front, message(Req.SET_STATUS, u64Payload(BigInt(live | Status.FAILED))));
    assert.equal(await getStatus(), live | Status.FAILED);
    assert.deepEqual(monitor.verdicts, []);

    // A live device that enters DEVICE_NEEDS_RESET sends a configuration change notification
    // (basic.status.device.3): CONFIG_CHANGE_MSG on the back-end request channel; then the
    // back-end ends the connection with the reason (a front-end never waits on a dead ring).
    n.sendmsg(front, message(Req.SET_STATUS, u64Payload(BigInt(live))));
    assert.equal(await getStatus(), live | Status.FAILED, 'FAILED stays until a reset');
    device.needsReset('test: the device broke');
    const note = await reply(channelFront);
    const nv = new DataView(note.buffer);
    assert.deepEqual([note.length, nv.getUint32(0, true), nv.getUint32(4, true), nv.getUint32(8, true)], [HEADER_SIZE, BackendReq.CONFIG_CHANGE_MSG, 1, 0]);
    await closedWith(fe, /^device error: test: the device broke$/, 'device-error');
    n.close(channelFront);

    // A malformed message ends the connection with a reason; the back-end survives.
    const front2 = fe.connect(backend);
    n.sendmsg(front2, message(Req.GET_FEATURES));
    assert.equal(new DataView((await reply(front2)).buffer).getBigUint64(HEADER_SIZE, true), feats, 'the next connection is served');
    n.sendmsg(front2, message(Req.SET_VRING_NUM, new Uint8Array(3)));
    await backendClosed(backend);
    assert.match(backend.lastError, /payload of 3 bytes, expected 8/);
    assert.equal(backend.lastFailure?.kind, 'malformed-message');
    assert.equal(n.recvmsg(front2, new Uint8Array(8)).bytes, 0, 'the socket was closed');
  } finally {
    fe.close();
  }
});
