/**
 * The monitor proxy's one error class. The proxy itself never throws for what a peer does (a
 * peer's fault is a verdict, or a session ended with a reason); these are the failures of
 * setting it up.
 */
import { VirtioTsError } from '../errors.js';

/**
 * What keeps the proxy from running (ProxyError's `kind`):
 * - `socket-path`: the listening path cannot be used (not a socket, a live server's socket,
 *   too long);
 * - `options`: an option out of range (a poll interval below 0, a minimum above the maximum).
 */
export type ProxyErrorKind = 'socket-path' | 'options';

/** A failure of the monitor proxy's set-up; `kind` says which. */
export class ProxyError extends VirtioTsError<ProxyErrorKind> {}
