/**
 * The vhost-user rules a probe checks, with stable ids. They come from QEMU's
 * docs/interop/vhost-user.rst (the vhost-user protocol has no clause catalogue of its own;
 * catalogue/clauses.tsv is the VIRTIO spec's), so each carries the section of that document it
 * comes from. Reports and docs/findings.md name them by id; README "Probing a back-end" lists
 * them. Virtio clauses keep their catalogue ids.
 */

/** One rule of vhost-user.rst a probe checks. */
export interface VhostUserRule {
  /** Stable id: `vhost-user.<topic>.<rule>`. */
  id: string;
  /** Where vhost-user.rst says it. */
  section: string;
  /** What the back-end must do. */
  text: string;
}

/** Every vhost-user rule a probe checks, by id. */
export const VHOST_USER_RULES: readonly VhostUserRule[] = [
  { id: 'vhost-user.reply.flags', section: 'Message Specification / Header', text: 'a reply has version 0x1 in flags bits 0-1 and the reply flag (bit 2) set, no other bit' },
  { id: 'vhost-user.reply.request', section: 'Message Specification / Header', text: 'a reply carries the request code of the message it answers' },
  {
    id: 'vhost-user.reply.size',
    section: 'Front-end message types',
    text: "a reply's payload has its type's size: a u64 (8 bytes) for GET_FEATURES, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM, GET_STATUS and REPLY_ACK; a vring state (8) for GET_VRING_BASE; the config header (12) plus the size asked for GET_CONFIG",
  },
  { id: 'vhost-user.reply.fds', section: 'Front-end message types', text: 'a reply carries file descriptors only where its type defines them (none for the replies probed)' },
  { id: 'vhost-user.reply.each', section: 'Communication', text: 'every request that has a reply is answered, in order, however many arrive at once' },
  { id: 'vhost-user.reply.unasked', section: 'Communication / REPLY_ACK', text: 'a message without a reply of its own is not answered unless need_reply (flags bit 3) was set with REPLY_ACK negotiated' },
  { id: 'vhost-user.reply-ack.success', section: 'Communication / REPLY_ACK', text: 'with VHOST_USER_PROTOCOL_F_REPLY_ACK negotiated, a message with need_reply set and no reply of its own is answered with a u64: zero on success' },
  { id: 'vhost-user.reply-ack.failure', section: 'Communication / REPLY_ACK', text: 'with REPLY_ACK negotiated and need_reply set, a request the back-end fails is answered with a non-zero u64' },
  { id: 'vhost-user.queue-num', section: 'Front-end message types / VHOST_USER_GET_QUEUE_NUM', text: 'GET_QUEUE_NUM answers how many queues the back-end supports: at least one' },
  { id: 'vhost-user.config.echo', section: 'Front-end message types / VHOST_USER_GET_CONFIG', text: 'the GET_CONFIG reply repeats the offset and size asked, then that many bytes of config space' },
  { id: 'vhost-user.ring.start', section: 'Ring states', text: 'a ring with its kick fd (and enabled, with VHOST_USER_F_PROTOCOL_FEATURES) is started: its available buffers are processed' },
  { id: 'vhost-user.ring.stop-base', section: 'Front-end message types / VHOST_USER_GET_VRING_BASE', text: 'GET_VRING_BASE stops the ring and answers its state: the index of the next available entry the back-end would process' },
  { id: 'vhost-user.ring.stopped', section: 'Ring states', text: 'a stopped ring is not processed: buffers made available after GET_VRING_BASE stay unused until the ring starts again' },
  { id: 'vhost-user.ring.restart', section: 'Ring states', text: 'a stopped ring set up again (SET_VRING_BASE with the base GET_VRING_BASE gave, a new kick fd) resumes from that base' },
  { id: 'vhost-user.status.echo', section: 'Front-end message types / VHOST_USER_GET_STATUS', text: 'GET_STATUS answers the device status: the bits SET_STATUS set stay set (FEATURES_OK is cleared only for a refused feature set), no DEVICE_NEEDS_RESET in a correct session' },
];

/** The rule of `id`, or undefined. */
export function vhostUserRule(id: string): VhostUserRule | undefined {
  return VHOST_USER_RULES.find((r) => r.id === id);
}
