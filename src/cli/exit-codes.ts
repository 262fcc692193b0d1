/**
 * Exit codes of every `virtio-ts` command (demo, conformance, serve, probe). One table, documented in
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

export const EXIT_OK = 0;
export const EXIT_VIOLATIONS = 1;
export const EXIT_USAGE = 2;
export const EXIT_RUNTIME = 3;
export const EXIT_INTERNAL = 70;

/** The table as `--help` shows it. */
export const EXIT_CODES_HELP = `
Exit codes (all commands):
  0   ok
  1   violations found (serve: a violation verdict logged; probe: a rule broken)
  2   usage error (a wrong flag, an unknown clause id, a bad value)
  3   runtime failure (image missing/unreadable/not raw, socket path busy or
      not a socket, native addon not built, probe: nothing accepts on the
      socket path, ...)
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

// The errno helpers live with the Node layer (the vhost-user daemon words its socket errors with
// them too); the CLI's modules keep importing them from here.
export { errnoOf, describeError, describeFileType } from '../native/errno.js';
