/**
 * Words for Node's errors and file types in messages people read (the CLI's and the vhost-user
 * daemon's): "permission denied (EACCES)", "a regular file (N bytes)". Node only.
 */
import type { Stats } from 'node:fs';

/** The errno name of a Node or addon error (ENOENT, EACCES, ...), or undefined. */
export function errnoOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

const ERRNO_TEXT: Record<string, string> = {
  ENOENT: 'no such file or directory',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EISDIR: 'is a directory',
  ENOTDIR: 'a component of the path is not a directory',
  EROFS: 'read-only file system',
  ELOOP: 'too many symbolic links',
  ENAMETOOLONG: 'name too long',
  EADDRINUSE: 'address in use',
  ECONNREFUSED: 'connection refused',
  EBADF: 'not an open file descriptor',
};

/** What kind of file `st` describes, for messages: "a directory", "a regular file (N bytes)", ... */
export function describeFileType(st: Stats): string {
  if (st.isFile()) return `a regular file (${st.size} bytes)`;
  if (st.isDirectory()) return 'a directory';
  if (st.isSymbolicLink()) return 'a symbolic link';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  return 'a file of unknown type';
}

/** "permission denied (EACCES)" for an errno error, else the error's message. */
export function describeError(err: unknown): string {
  const code = errnoOf(err);
  if (code !== undefined && ERRNO_TEXT[code] !== undefined) return `${ERRNO_TEXT[code]} (${code})`;
  return err instanceof Error ? err.message : String(err);
}
