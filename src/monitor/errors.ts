/** The monitor layer's error (verdicts are not errors: a broken clause is reported, never thrown). */
import { VirtioTsError } from '../errors.js';

/**
 * - `bad-deviations-header`: a deviations table (catalogue/deviations.tsv) whose first line is
 *   not the expected header;
 * - `bad-deviations-line`: a line of it without its fields (`line` says which).
 */
export type MonitorErrorKind = 'bad-deviations-header' | 'bad-deviations-line';

/** The monitor layer's error (a malformed deviations table). */
export class MonitorError extends VirtioTsError<MonitorErrorKind> {
  /** A MonitorError of `kind`, about `line` when given. */
  constructor(
    kind: MonitorErrorKind,
    message: string,
    /** The 1-based line of the input the error is about, when it is about one. */
    readonly line?: number,
  ) {
    super(kind, message);
  }
}
