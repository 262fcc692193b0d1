/**
 * The error of the host-side frame ports (src/node/net/: TAP, unix datagram): one class, its
 * `kind` says what went wrong so callers (the CLI, tests) branch on it, not on message text.
 */
import { VirtioTsError } from '../../errors.js';

/**
 * Why a host frame port could not be opened:
 * - `tun-missing`: /dev/net/tun does not exist (no tun module, or a container without the device);
 * - `permission-denied`: attaching a TAP needs CAP_NET_ADMIN (or a persistent TAP owned by this user);
 * - `name-in-use`: another process holds the TAP of that name;
 * - `not-a-tap`: the name is an interface that is not a TAP (a real NIC, a bridge, a TUN): never touched;
 * - `bad-name`: not a valid interface name (1 to 15 bytes, no '/', ':' or white space, not '.' or '..');
 * - `path-in-use`: a datagram port's local socket path exists already (nothing is replaced);
 * - `bad-path`: a socket path that does not fit a unix socket address;
 * - `open-failed`: any other failure of the system calls (the cause says which).
 */
export type NetPortErrorKind = 'tun-missing' | 'permission-denied' | 'name-in-use' | 'not-a-tap' | 'bad-name' | 'path-in-use' | 'bad-path' | 'open-failed';

/** A host frame port could not be opened; `kind` says why. */
export class NetPortError extends VirtioTsError<NetPortErrorKind> {}
