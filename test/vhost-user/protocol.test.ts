// The vhost-user codec throws nothing but a VhostUserError (malformed-message, unsupported-request)
// on any input, and takes exactly the well-formed messages.
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
  type Decoded,
  type Header,
  type Session,
} from '../../src/transports/vhost-user/protocol.js';
import { VhostUserError, type VhostUserErrorKind } from '../../src/transports/vhost-user/errors.js';

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

/** The value, or the VhostUserError thrown (anything else thrown fails the test). */
function outcome<T>(fn: () => T): T | VhostUserError {
  try {
    return fn();
  } catch (err) {
    assert.ok(err instanceof VhostUserError, `only VhostUserErrors are thrown: ${String(err)}`);
    return err;
  }
}

function msg(request: number, payload: Uint8Array, fds: number, session = ALL, flags = 1): Decoded | VhostUserError {
  const h = parseHeader(header(request, payload.length, flags));
  return outcome(() => decode(h, payload, fds, session));
}

/** Asserts `r` is a refusal of `kind` whose reason matches `re`. */
function refused(r: unknown, kind: VhostUserErrorKind, re: RegExp): void {
  assert.ok(r instanceof VhostUserError, `refused: ${String(r)}`);
  assert.equal(r.kind, kind, r.message);
  assert.match(r.message, re);
}

test('vhost-user codec: property: arbitrary headers, payloads and fd counts throw nothing but a VhostUserError; the answer is a message or a refusal', () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 0, maxLength: 400 }), fc.nat(20), fc.boolean(), (bytes, fds, rich) => {
      const h: Header | VhostUserError = outcome(() => parseHeader(bytes));
      if (h instanceof VhostUserError) return assert.equal(h.kind, 'malformed-message');
      const payload = bytes.subarray(HEADER_SIZE, HEADER_SIZE + h.size);
      const r = outcome(() => decode(h, payload, fds, rich ? ALL : NONE));
      if (r instanceof VhostUserError) return assert.ok(r.kind === 'malformed-message' || r.kind === 'unsupported-request', r.kind);
      assert.ok(r.header === h && typeof r.message.kind === 'string');
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
    assert.ok(!(msg(req, payload, fds) instanceof VhostUserError), `request ${req} well formed`);
    const longer = new Uint8Array(payload.length + 1);
    longer.set(payload);
    refused(msg(req, longer, fds), 'malformed-message', /payload|size/);
    refused(msg(req, payload.subarray(0, payload.length - 1), fds), 'malformed-message', /payload|size/);
  }
});

test('vhost-user codec: header flags, versions, sizes', () => {
  refused(outcome(() => parseHeader(header(Req.GET_FEATURES, 0, 2))), 'malformed-message', /version 2/);
  refused(outcome(() => parseHeader(header(Req.GET_FEATURES, 0, 1 | 4))), 'malformed-message', /reply flag/);
  refused(outcome(() => parseHeader(header(Req.GET_FEATURES, 0, 1 | 0x100))), 'malformed-message', /unknown flags/);
  refused(outcome(() => parseHeader(header(Req.SET_MEM_TABLE, 1 << 20))), 'malformed-message', /payload of/);
  refused(outcome(() => parseHeader(new Uint8Array(5))), 'malformed-message', /short header/);
  refused(msg(99, new Uint8Array(0), 0), 'unsupported-request', /not a request/);
});

test('vhost-user codec: fds, queue indices, protocol-feature gating, REPLY_ACK', () => {
  refused(msg(Req.SET_VRING_KICK, u64Payload(0), 0), 'malformed-message', /invalid-fd flag is clear/);
  assert.ok(!(msg(Req.SET_VRING_KICK, u64Payload(0x100), 0) instanceof VhostUserError), 'bit 8: no fd, polling');
  refused(msg(Req.SET_VRING_KICK, u64Payload(5), 1), 'malformed-message', /queue 5 does not exist/);
  refused(msg(Req.SET_VRING_KICK, u64Payload(0x200), 1), 'malformed-message', /reserved bits/);
  refused(msg(Req.SET_MEM_TABLE, new Uint8Array([...u64Payload(1), ...region(0, 4096, 0, 0)]), 2), 'malformed-message', /1 regions but 2/);
  refused(msg(Req.SET_MEM_TABLE, new Uint8Array([...u64Payload(1), ...region(0, 0, 0, 0)]), 1), 'malformed-message', /size 0/);
  refused(msg(Req.GET_QUEUE_NUM, new Uint8Array(0), 0, NONE), 'unsupported-request', /protocol feature 0 was not negotiated/);
  refused(msg(Req.SET_LOG_BASE, new Uint8Array([...u64Payload(32), ...u64Payload(0)]), 0), 'malformed-message', /0 file descriptors, expected 1/);
  refused(msg(Req.SET_LOG_BASE, new Uint8Array(16), 1), 'malformed-message', /log size 0/);
  refused(msg(Req.GET_PROTOCOL_FEATURES, new Uint8Array(0), 0, NONE), 'unsupported-request', /PROTOCOL_FEATURES is not offered/);
  refused(msg(Req.SET_OWNER, new Uint8Array(0), 1), 'malformed-message', /1 file descriptors, expected 0/);
  const acked = msg(Req.SET_OWNER, new Uint8Array(0), 0, ALL, 1 | FLAG_NEED_REPLY);
  assert.ok(!(acked instanceof VhostUserError) && acked.needReply);
  const noAck = msg(Req.SET_OWNER, new Uint8Array(0), 0, { ...ALL, protocolFeatures: ALL.protocolFeatures & ~(1n << BigInt(ProtocolFeature.REPLY_ACK)) }, 1 | FLAG_NEED_REPLY);
  assert.ok(!(noAck instanceof VhostUserError) && !noAck.needReply);
});

test('vhost-user codec: decoded fields and replies', () => {
  const addr = new Uint8Array(40);
  const v = new DataView(addr.buffer);
  v.setUint32(0, 1, true);
  v.setBigUint64(8, 0x7f0000001000n, true);
  v.setBigUint64(16, 0x7f0000003000n, true);
  v.setBigUint64(24, 0x7f0000002000n, true);
  const d = msg(Req.SET_VRING_ADDR, addr, 0);
  assert.ok(!(d instanceof VhostUserError) && d.message.kind === 'addr');
  assert.deepEqual([d.message.index, d.message.desc, d.message.used, d.message.avail], [1, 0x7f0000001000, 0x7f0000003000, 0x7f0000002000]);
  const reply = encodeReply(Req.GET_FEATURES, u64Payload(1n << 32n));
  const rh = new DataView(reply.buffer);
  assert.deepEqual([rh.getUint32(0, true), rh.getUint32(4, true), rh.getUint32(8, true), rh.getBigUint64(12, true)], [Req.GET_FEATURES, 5, 8, 1n << 32n]);
});
