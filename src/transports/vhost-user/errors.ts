/**
 * The vhost-user layer's one error class. Every failure of the back-end, its codec and its
 * daemon is a VhostUserError with a machine-readable `kind`; `message` says what happened for
 * people (and the logs). Misuse of the API by its caller stays a RangeError/TypeError.
 */
import { VirtioTsError } from '../../errors.js';

/** What went wrong in the vhost-user layer (VhostUserError's `kind`), one name per kind of failure. */
export type VhostUserErrorKind =
  /** A message that cannot be right: header, payload size, fd count, a field out of range. */
  | 'malformed-message'
  /** A request this back-end does not serve, or one whose protocol feature was not negotiated. */
  | 'unsupported-request'
  /** SET_FEATURES / SET_PROTOCOL_FEATURES with bits the back-end never offered. */
  | 'feature-not-offered'
  /** The device refused the features (FEATURES_OK not accepted; its verdict says why). */
  | 'features-refused'
  /** An fd that is not what the message needs: not an eventfd, a file too short to map, not a file. */
  | 'bad-fd'
  /** SET_VRING_NUM: a size the ring format or the device cannot take. */
  | 'ring-size'
  /** A ring base (SET_VRING_BASE) that cannot be where the ring stands. */
  | 'ring-base'
  /** Ring addresses that translate to no guest memory, or unknown address flags. */
  | 'ring-address'
  /** A ring message out of turn: the ring is running, or an enable value that is not 0 or 1. */
  | 'ring-state'
  /** The memory table or a memory slot: overlaps, no free slot, no such region, a mapping that failed. */
  | 'memory-table'
  /** The dirty log (live migration): too large, or not covering the memory it must log. */
  | 'dirty-log'
  /** The inflight buffer (GET/SET_INFLIGHT_FD): its shape, or what a previous back-end left in it. */
  | 'inflight'
  /** Requests in progress did not finish in time (a ring stop or a region removal waited for them). */
  | 'settle-timeout'
  /** The device entered DEVICE_NEEDS_RESET (a chain it cannot serve, a violation in strict mode, guest memory gone). */
  | 'device-error'
  /** The front-end went away in the middle of a message, or the socket failed. */
  | 'connection-closed'
  /** The daemon's socket path: not a socket, changed while checked, or cannot be listened on. */
  | 'socket-path'
  /** The daemon's socket path is a live server's socket. */
  | 'socket-busy'
  /** The native addon (unix sockets with fd passing, mmap, eventfd) is not built. */
  | 'addon-missing'
  /** A bug in virtio-ts. */
  | 'internal';

export class VhostUserError extends VirtioTsError<VhostUserErrorKind> {
  /**
   * The message was refused before it had any effect: the session is as it was. With
   * REPLY_ACK asked for, the front-end is told (a non-zero ack) and the session goes on;
   * without it the front-end could not know and would wait on a ring that will not move, so
   * the connection ends.
   */
  readonly refused: boolean;

  /** An error of `kind`; `refused` when the message it is about had no effect (see `refused`). */
  constructor(kind: VhostUserErrorKind, message: string, options?: { refused?: boolean; cause?: unknown }) {
    super(kind, message, options);
    this.refused = options?.refused === true;
  }
}

/** A message refused before it had any effect (see VhostUserError.refused). */
export function refusal(kind: VhostUserErrorKind, message: string): VhostUserError {
  return new VhostUserError(kind, message, { refused: true });
}

/** The text of any thrown value. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** `err` as a VhostUserError: itself, or one of `kind` around it (a native call's errno error, a bug). */
export function asVhostUserError(err: unknown, kind: VhostUserErrorKind = 'internal'): VhostUserError {
  return err instanceof VhostUserError ? err : new VhostUserError(kind, messageOf(err), { cause: err });
}
