/** The monitor layer's error (verdicts are not errors: a broken clause is reported, never thrown). */
import { VirtioTsError } from '../errors.js';

/**
 * - `bad-deviations-header`: a deviations table (catalogue/deviations.tsv) whose first line is
 *   not the expected header;
 * - `bad-deviations-line`: a line of it without its fields (`line` says which).
 */
export type MonitorErrorKind = 'bad-deviations-header' | 'bad-deviations-line';

export class MonitorError extends VirtioTsError<MonitorErrorKind> {
  constructor(
    kind: MonitorErrorKind,
    message: string,
    /** The 1-based line of the input the error is about, when it is about one. */
    readonly line?: number,
  ) {
    super(kind, message);
  }
}
