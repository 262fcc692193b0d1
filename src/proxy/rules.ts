/**
 * The vhost-user rules the monitor proxy checks on the front-end's requests. The back-end's
 * replies are judged by the probe's rules (src/probe/rules.ts, `vhost-user.reply.*` and the
 * rest); a front-end's request has rules of its own in vhost-user.rst ("Message
 * Specification"), which the back-end's codec (transports/vhost-user/protocol.ts) enforces by
 * refusing. The proxy names them with the same kind of stable id.
 */
import type { VhostUserRule } from '../probe/rules.js';

/** Every front-end request rule the proxy checks, by id. */
export const FRONT_END_RULES: readonly VhostUserRule[] = [
  {
    id: 'vhost-user.request.header',
    section: 'Message Specification / Header',
    text: 'a request has version 0x1 in flags bits 0-1, no reply flag, no unknown flag, and a payload of at most 4096 bytes',
  },
  {
    id: 'vhost-user.request.payload',
    section: 'Front-end message types',
    text: "a request's payload and file descriptors have its type's shape (sizes, counts, queue indices, flag bits)",
  },
  {
    id: 'vhost-user.request.negotiated',
    section: 'Protocol features',
    text: 'a request gated by a protocol feature (or by VHOST_USER_F_PROTOCOL_FEATURES) is sent only once it was negotiated',
  },
];
