/**
 * The vhost-user daemon's listening socket, made without ever deleting a file the program did
 * not create:
 * - nothing at the path: listen there;
 * - a unix socket: replaced only when it is stale, i.e. a connect to it is refused
 *   (ECONNREFUSED: no process listens on it any more, as a killed server leaves it), and only
 *   if it is still the same inode when it is unlinked. A socket a live server listens on
 *   (connect succeeds, or the server is too busy to take it: EAGAIN) is refused and kept;
 * - anything else (a regular file, a directory, a symbolic link, even one to a socket, a
 *   FIFO, a device node): refused, untouched.
 * At shutdown only the socket this process created is removed, and only while the path still
 * names that same inode (another server may have taken the path since).
 */
import { lstatSync, unlinkSync, type Stats } from 'node:fs';
import type { NativeAddon } from '../../native/index.js';
import { describeError, describeFileType, errnoOf } from '../../native/errno.js';
import { VhostUserError } from './errors.js';

/** Longest unix socket path: sockaddr_un.sun_path holds 108 bytes with the terminating NUL (unix(7)). */
export const MAX_SOCKET_PATH = 107;

const unusable = (message: string) => new VhostUserError('socket-path', message);

export interface ListeningSocket {
  fd: number;
  path: string;
  /** Removes the socket file if it is still the one made here; says what it did. */
  remove(): 'removed' | 'gone' | 'replaced';
}

function lstatOrNull(path: string): Stats | null {
  try {
    return lstatSync(path);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return null;
    throw unusable(`cannot use socket path ${path}: ${describeError(err)}`);
  }
}

const sameFile = (a: Stats, b: Stats) => a.dev === b.dev && a.ino === b.ino;

/**
 * Listens on `path` (see the module comment). `warn` gets a line when a stale socket is
 * replaced. Throws a VhostUserError: 'socket-busy' for a live server's socket, 'socket-path'
 * for anything else that keeps it from listening there (each message names the path).
 */
export function listenUnixSocket(n: NativeAddon, path: string, warn: (message: string) => void): ListeningSocket {
  if (path === '' || Buffer.byteLength(path) > MAX_SOCKET_PATH) throw unusable(`a socket path is 1 to ${MAX_SOCKET_PATH} bytes long, the limit of a unix socket path (got ${Buffer.byteLength(path)})`);
  const existing = lstatOrNull(path);
  if (existing !== null) {
    if (!existing.isSocket()) {
      throw unusable(`socket path ${path} is ${describeFileType(existing)}, not a socket: refusing to replace it (left untouched; remove it yourself or choose another path)`);
    }
    let probe = -1;
    try {
      probe = n.connect(path);
    } catch (err) {
      const code = errnoOf(err);
      if (code !== 'ECONNREFUSED') {
        // EAGAIN: a live server whose backlog is full; EACCES: not ours to judge. Either way: keep it.
        throw unusable(`socket path ${path} is a socket that cannot be checked (connect: ${describeError(err)}): refusing to replace it`);
      }
    }
    if (probe >= 0) {
      n.close(probe);
      throw new VhostUserError('socket-busy', `socket path ${path} is busy: another server is listening on it (left untouched)`);
    }
    // Stale. Unlink it only while the path still names the socket that refused the connect.
    const now = lstatOrNull(path);
    if (now !== null) {
      if (!now.isSocket() || !sameFile(now, existing)) throw unusable(`socket path ${path} changed while it was checked: refusing to replace it`);
      warn(`${path} was left by a server that is gone (connect refused); replacing it`);
      unlinkSync(path);
    }
  }
  let fd: number;
  try {
    fd = n.listen(path);
  } catch (err) {
    const code = errnoOf(err);
    const detail = code === 'EADDRINUSE' ? 'something was created there meanwhile' : describeError(err);
    throw unusable(`cannot listen on socket path ${path}: ${detail}`);
  }
  const mine = lstatSync(path);
  return {
    fd,
    path,
    remove() {
      const now = lstatOrNull(path);
      if (now === null) return 'gone';
      if (!now.isSocket() || !sameFile(now, mine)) return 'replaced';
      unlinkSync(path);
      return 'removed';
    },
  };
}
