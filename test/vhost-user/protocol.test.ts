// The vhost-user codec never throws on any input, and takes exactly the well-formed messages.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  FLAG_NEED_REPLY,
  HEADER_SIZE,
  ProtocolFeature,
  Req,
  decode,
  encodeReply,
  parseHeader,
  statePayload,
  u64Payload,
  type Session,
} from '../../src/transports/vhost-user/protocol.js';

const ALL: Session = { protocolFeaturesOffered: true, protocolFeatures: (1n << 17n) - 1n, numQueues: 2 };
const NONE: Session = { protocolFeaturesOffered: false, protocolFeatures: 0n, numQueues: 1 };

function header(request: number, size: number, flags = 1): Uint8Array {
  const b = new Uint8Array(HEADER_SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(0, request, true);
  v.setUint32(4, flags, true);
  v.setUint32(8, size, true);
  return b;
}

function region(guest: number, size: number, user: number, off: number): Uint8Array {
  const b = new Uint8Array(32);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, BigInt(guest), true);
  v.setBigUint64(8, BigInt(size), true);
  v.setBigUint64(16, BigInt(user), true);
  v.setBigUint64(24, BigInt(off), true);
  return b;
}

function msg(request: number, payload: Uint8Array, fds: number, session = ALL, flags = 1) {
  const h = parseHeader(header(request, payload.length, flags));
  assert.equal(typeof h, 'object', String(h));
  return decode(h as Exclude<typeof h, string>, payload, fds, session);
}

test('vhost-user codec: property: arbitrary headers, payloads and fd counts never throw; the answer is a message or a reason', () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 0, maxLength: 400 }), fc.nat(20), fc.boolean(), (bytes, fds, rich) => {
      const h = parseHeader(bytes);
      if (typeof h === 'string') return;
      const payload = bytes.subarray(HEADER_SIZE, HEADER_SIZE + h.size);
      const r = decode(h, payload, fds, rich ? ALL : NONE);
      assert.ok(typeof r === 'string' || (r.header === h && typeof r.message.kind === 'string'));
    }),
    { numRuns: 3000 },
  );
});

test('vhost-user codec: property: every request is refused with one byte too many or too few', () => {
  const good: [number, Uint8Array, number][] = [
    [Req.SET_FEATURES, u64Payload(1n << 32n), 0],
    [Req.SET_VRING_NUM, statePayload(0, 256), 0],
    [Req.SET_VRING_ADDR, new Uint8Array(40), 0],
    [Req.SET_VRING_KICK, u64Payload(0), 1],
    [Req.SET_MEM_TABLE, new Uint8Array([...u64Payload(1), ...region(0, 1 << 20, 0x7f0000000000, 0)]), 1],
    [Req.GET_CONFIG, new Uint8Array(12 + 8).fill(0).map((_, i) => (i === 4 ? 8 : 0)), 0],
    [Req.ADD_MEM_REG, new Uint8Array([...u64Payload(0), ...region(0, 1 << 20, 0x7f0000000000, 0)]), 1],
    [Req.REM_MEM_REG, new Uint8Array([...u64Payload(0), ...region(0, 1 << 20, 0x7f0000000000, 0)]), 0],
    [Req.SET_LOG_BASE, new Uint8Array([...u64Payload(32), ...u64Payload(0)]), 1],
  ];
  for (const [req, payload, fds] of good) {
    assert.equal(typeof msg(req, payload, fds), 'object', `request ${req} well formed`);
    const longer = new Uint8Array(payload.length + 1);
    longer.set(payload);
    assert.equal(typeof msg(req, longer, fds), 'string', `request ${req} + 1 byte`);
    assert.equal(typeof msg(req, payload.subarray(0, payload.length - 1), fds), 'string', `request ${req} - 1 byte`);
  }
});

test('vhost-user codec: header flags, versions, sizes', () => {
  assert.match(String(parseHeader(header(Req.GET_FEATURES, 0, 2))), /version 2/);
  assert.match(String(parseHeader(header(Req.GET_FEATURES, 0, 1 | 4))), /reply flag/);
  assert.match(String(parseHeader(header(Req.GET_FEATURES, 0, 1 | 0x100))), /unknown flags/);
  assert.match(String(parseHeader(header(Req.SET_MEM_TABLE, 1 << 20))), /payload of/);
  assert.match(String(parseHeader(new Uint8Array(5))), /short header/);
  assert.match(String(msg(99, new Uint8Array(0), 0)), /not a request/);
});

test('vhost-user codec: fds, queue indices, protocol-feature gating, REPLY_ACK', () => {
  assert.match(String(msg(Req.SET_VRING_KICK, u64Payload(0), 0)), /invalid-fd flag is clear/);
  assert.equal(typeof msg(Req.SET_VRING_KICK, u64Payload(0x100), 0), 'object', 'bit 8: no fd, polling');
  assert.match(String(msg(Req.SET_VRING_KICK, u64Payload(5), 1)), /queue 5 does not exist/);
  assert.match(String(msg(Req.SET_VRING_KICK, u64Payload(0x200), 1)), /reserved bits/);
  assert.match(String(msg(Req.SET_MEM_TABLE, new Uint8Array([...u64Payload(1), ...region(0, 4096, 0, 0)]), 2)), /1 regions but 2/);
  assert.match(String(msg(Req.SET_MEM_TABLE, new Uint8Array([...u64Payload(1), ...region(0, 0, 0, 0)]), 1)), /size 0/);
  assert.match(String(msg(Req.GET_QUEUE_NUM, new Uint8Array(0), 0, NONE)), /protocol feature 0 was not negotiated/);
  assert.match(String(msg(Req.SET_LOG_BASE, new Uint8Array([...u64Payload(32), ...u64Payload(0)]), 0)), /0 file descriptors, expected 1/);
  assert.match(String(msg(Req.SET_LOG_BASE, new Uint8Array(16), 1)), /log size 0/);
  assert.match(String(msg(Req.GET_PROTOCOL_FEATURES, new Uint8Array(0), 0, NONE)), /PROTOCOL_FEATURES is not offered/);
  assert.match(String(msg(Req.SET_OWNER, new Uint8Array(0), 1)), /1 file descriptors, expected 0/);
  const acked = msg(Req.SET_OWNER, new Uint8Array(0), 0, ALL, 1 | FLAG_NEED_REPLY);
  assert.ok(typeof acked === 'object' && acked.needReply);
  const noAck = msg(Req.SET_OWNER, new Uint8Array(0), 0, { ...ALL, protocolFeatures: ALL.protocolFeatures & ~(1n << BigInt(ProtocolFeature.REPLY_ACK)) }, 1 | FLAG_NEED_REPLY);
  assert.ok(typeof noAck === 'object' && !noAck.needReply);
});

test('vhost-user codec: decoded fields and replies', () => {
  const addr = new Uint8Array(40);
  const v = new DataView(addr.buffer);
  v.setUint32(0, 1, true);
  v.setBigUint64(8, 0x7f0000001000n, true);
  v.setBigUint64(16, 0x7f0000003000n, true);
  v.setBigUint64(24, 0x7f0000002000n, true);
  const d = msg(Req.SET_VRING_ADDR, addr, 0);
  assert.ok(typeof d === 'object' && d.message.kind === 'addr');
  assert.deepEqual([d.message.index, d.message.desc, d.message.used, d.message.avail], [1, 0x7f0000001000, 0x7f0000003000, 0x7f0000002000]);
  const reply = encodeReply(Req.GET_FEATURES, u64Payload(1n << 32n));
  const rh = new DataView(reply.buffer);
  assert.deepEqual([rh.getUint32(0, true), rh.getUint32(4, true), rh.getUint32(8, true), rh.getBigUint64(12, true)], [Req.GET_FEATURES, 5, 8, 1n << 32n]);
});
