/**
 * Exit codes of every `virtio-ts` command (demo, conformance, serve). One table, documented in
 * README.md ("Exit codes") and in `virtio-ts --help`:
 *
 *   0  ok
 *   1  violations found (demo: a monitor recorded one; demo --misbehave: the clause was NOT
 *      named; serve: a verdict of severity violation was logged during the run, reported at
 *      SIGTERM/SIGINT or when the --fd front-end leaves; in tolerant mode a catalogued known
 *      deviation of a real driver does not count)
 *   2  usage error: a wrong flag, an unknown clause id, a bad value (--queue-size 3, --fd 12abc)
 *   3  runtime failure: the command was right but cannot run here (image missing, unreadable,
 *      a directory, a qcow2 without --format raw; socket path busy or not a socket; the native
 *      addon not built; ...)
 *  70  internal error (a bug in virtio-ts: the message carries a stack trace; please report it)
 */
import type { Stats } from 'node:fs';

export const EXIT_OK = 0;
export const EXIT_VIOLATIONS = 1;
export const EXIT_USAGE = 2;
export const EXIT_RUNTIME = 3;
export const EXIT_INTERNAL = 70;

/** The table as `--help` shows it. */
export const EXIT_CODES_HELP = `
Exit codes (all commands):
  0   ok
  1   violations found (serve: a violation verdict was logged during the run)
  2   usage error (a wrong flag, an unknown clause id, a bad value)
  3   runtime failure (image missing/unreadable/not raw, socket path busy or
      not a socket, native addon not built, ...)
  70  internal error (a bug: please report it with the message)`;

/** A failure the user can act on: printed as one line (no stack) and exited with `code`. */
export class CliError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

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
