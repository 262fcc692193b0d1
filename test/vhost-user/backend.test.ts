// The vhost-user back-end with a small front-end written here: real socketpair, memfd guest
// memory mapped on both sides, eventfds for kick and call. The entropy device serves a ring.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { native } from '../../src/native/index.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Monitor } from '../../src/conformance/monitor.js';
import { RngDevice } from '../../src/devices/rng.js';
import { VhostUserBackend } from '../../src/transports/vhost-user/backend.js';
import { BackendReq, HEADER_SIZE, encodeMessage, ProtocolFeature, Req, statePayload, u64Payload } from '../../src/transports/vhost-user/protocol.js';
import { SplitDriverQueue, layoutSplitQueue } from '../../src/core/virtqueue/split-driver.js';
import { Feature, Status } from '../../src/core/constants.js';
import { bit } from '../../src/core/features.js';

const n = native();
const RAM = 1 << 20;
const USER_BASE = 0x7f0000000000; // where "QEMU" has guest RAM in its address space

function message(request: number, payload?: Uint8Array, flags = 1): Uint8Array {
  return encodeMessage(request, flags, payload);
}

/** Waits for a reply on the front-end's end of the socket. */
async function reply(fd: number): Promise<Uint8Array> {
  const buf = new Uint8Array(64);
  for (let i = 0; i < 1000; i++) {
    const r = n.recvmsg(fd, buf);
    if (r.bytes > 0) return buf.slice(0, r.bytes);
    if (r.bytes === 0) throw new Error('back-end closed the connection');
    await new Promise((res) => setImmediate(res));
  }
  throw new Error('no reply');
}

const tick = () => new Promise((res) => setTimeout(res, 2));

test('vhost-user back-end: an entropy ring served through memfd memory, kick and call eventfds', async () => {
  const monitor = new Monitor();
  const device = new RngDevice({ monitor, source: (d) => d.fill(0x42) });
  device.withholdFeatures(bit(Feature.RING_PACKED)); // this front-end drives split rings
  const backend = new VhostUserBackend(device);
  const [front, back] = n.socketpair();
  backend.serve(back);

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
  const memfd = n.memfdCreate('guest', RAM);
  const ram = n.mmap(memfd, 0, RAM);
  const region = new Uint8Array(8 + 32);
  const rv = new DataView(region.buffer);
  rv.setUint32(0, 1, true);
  rv.setBigUint64(8, 0n, true); // guest address
  rv.setBigUint64(16, BigInt(RAM), true);
  rv.setBigUint64(24, BigInt(USER_BASE), true);
  rv.setBigUint64(32, 0n, true);
  n.sendmsg(front, message(Req.SET_MEM_TABLE, region), [memfd]);

  const guest = new GuestMemory([{ guestAddr: 0, size: RAM, buffer: ram, concurrent: true }]);
  const layout = layoutSplitQueue(0x1000, 16);
  const q = new SplitDriverQueue(guest, 0, 16, layout, { eventIdx: true, indirect: false }, new Monitor(), () => undefined);
  n.sendmsg(front, message(Req.SET_VRING_NUM, statePayload(0, 16)));
  const addr = new Uint8Array(40);
  const av = new DataView(addr.buffer);
  av.setBigUint64(8, BigInt(USER_BASE + layout.desc), true);
  av.setBigUint64(16, BigInt(USER_BASE + layout.used), true);
  av.setBigUint64(24, BigInt(USER_BASE + layout.avail), true);
  n.sendmsg(front, message(Req.SET_VRING_ADDR, addr));
  n.sendmsg(front, message(Req.SET_VRING_BASE, statePayload(0, 0)));
  const call = n.eventfd();
  const kick = n.eventfd();
  n.sendmsg(front, message(Req.SET_VRING_CALL, u64Payload(0)), [call]);
  n.sendmsg(front, message(Req.SET_VRING_KICK, u64Payload(0)), [kick]);
  await tick();

  // The "guest driver" posts a buffer and kicks.
  q.begin().addWritable(0x20000, 64).commit('req');
  q.publish();
  n.eventfdWrite(kick, 1);
  let calls = 0;
  for (let i = 0; i < 500 && calls === 0; i++) {
    await tick();
    calls = n.eventfdRead(call);
  }
  assert.ok(calls > 0, 'the back-end signalled the call eventfd');
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

  // A live device that enters DEVICE_NEEDS_RESET sends a configuration change notification
  // (basic.status.device.3): CONFIG_CHANGE_MSG on the back-end request channel.
  device.needsReset('test: the device broke');
  const note = await reply(channelFront);
  const nv = new DataView(note.buffer);
  assert.deepEqual([note.length, nv.getUint32(0, true), nv.getUint32(4, true), nv.getUint32(8, true)], [HEADER_SIZE, BackendReq.CONFIG_CHANGE_MSG, 1, 0]);
  assert.equal(await getStatus(), live | Status.DEVICE_NEEDS_RESET);
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

  // A malformed message ends the connection with a reason; the back-end survives.
  n.sendmsg(front, message(Req.SET_VRING_NUM, new Uint8Array(3)));
  await tick();
  await tick();
  assert.match(backend.lastError, /payload of 3 bytes, expected 8/);
  assert.equal(n.recvmsg(front, new Uint8Array(8)).bytes, 0, 'the socket was closed');
  for (const fd of [front, call, kick, channelFront]) n.close(fd);
  n.munmap(ram);
});
