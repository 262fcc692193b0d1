/**
 * Fuzz target: the vhost-user message decoder (protocol.ts), fed a byte stream the way the
 * back-end reads its socket: a header, then the payload it announces, then the next message.
 * Invariants: parseHeader and decode throw nothing but a VhostUserError of kind
 * 'malformed-message' or 'unsupported-request' with a reason (a non-empty message); a decoded
 * message is the header it was given with a known kind, and its payload length is the
 * header's size; a needReply only with REPLY_ACK negotiated.
 * Input: [0] session bits (protocol features offered / negotiated set, queue count), [1] fd
 * count per message, then the stream.
 */
import { HEADER_SIZE, decode, parseHeader, type Session } from '../src/transports/vhost-user/protocol.js';
import { VhostUserError } from '../src/transports/vhost-user/errors.js';
import { check } from './common.js';

/** `fn`'s result, or the refusal it threw; anything else thrown is a finding (check). */
function decoded<T>(fn: () => T, what: string): T | VhostUserError {
  try {
    return fn();
  } catch (err) {
    check(err instanceof VhostUserError && (err.kind === 'malformed-message' || err.kind === 'unsupported-request'), `${what} threw ${String(err)}`);
    check(err.message.length > 0, 'an empty refusal');
    return err;
  }
}

export function fuzz(data: Uint8Array): void {
  if (data.length < 2) return;
  const s = data[0];
  const session: Session = {
    protocolFeaturesOffered: (s & 1) !== 0,
    protocolFeatures: (s & 2) !== 0 ? (1n << 64n) - 1n : (s & 4) !== 0 ? (1n << 17n) - 1n : 0n,
    numQueues: (s >> 3) + 1,
  };
  const fds = data[1] % 10;
  let at = 2;
  for (let n = 0; n < 64 && at < data.length; n++) {
    const head = data.subarray(at, at + HEADER_SIZE);
    const h = decoded(() => parseHeader(head), 'parseHeader');
    if (h instanceof VhostUserError) return; // the back-end closes the connection on a bad header
    at += HEADER_SIZE;
    const payload = data.subarray(at, at + h.size);
    at += h.size;
    const d = decoded(() => decode(h, payload, fds, session), 'decode');
    if (d instanceof VhostUserError) continue;
    check(d.header === h && typeof d.message.kind === 'string', 'a decoded message without its header or kind');
    check(payload.length === h.size, 'a message decoded from a short payload');
    check(!d.needReply || (session.protocolFeatures & (1n << 3n)) !== 0n, 'needReply without REPLY_ACK');
  }
}
