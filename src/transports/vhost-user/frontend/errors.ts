/**
 * The front-end's one error class. Whatever a back-end does (never answers, answers wrongly,
 * goes away, refuses), the front-end's calls end with a FrontEndError of a stable `kind`;
 * misuse of the API by its caller stays a RangeError/TypeError.
 */
import { VirtioTsError } from '../../../errors.js';

/**
 * What went wrong on the front-end side of vhost-user (FrontEndError's `kind`):
 * - `connect`: the socket could not be connected (no such path, nobody listening);
 * - `timeout`: the back-end did not answer within the bound (the connection is then closed:
 *   a late answer could not be told from the answer to the next request);
 * - `disconnected`: the back-end closed the connection or the socket failed;
 * - `bad-reply`: a reply that breaks vhost-user.rst: flags, request code, payload size, fds,
 *   or a field that contradicts what was asked;
 * - `bad-message`: a back-end request (on the back-end request channel) that breaks it;
 * - `refused`: the back-end answered a REPLY_ACK with a failure, or refused a GET_CONFIG;
 * - `not-offered`: the operation needs a feature or protocol feature the back-end does not offer;
 * - `features-changed`: a back-end reconnected to no longer offers what was negotiated;
 * - `wrong-state`: not possible now (closed, not connected, the queue is not set up or running);
 * - `memory`: a guest memory region that cannot be added or removed (overlap, no free slot).
 */
export type FrontEndErrorKind =
  | 'connect'
  | 'timeout'
  | 'disconnected'
  | 'bad-reply'
  | 'bad-message'
  | 'refused'
  | 'not-offered'
  | 'features-changed'
  | 'wrong-state'
  | 'memory';

/** A failure of the vhost-user front-end; `kind` says which (FrontEndErrorKind). */
export class FrontEndError extends VirtioTsError<FrontEndErrorKind> {}
