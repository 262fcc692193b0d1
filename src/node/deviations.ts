/** Reads catalogue/deviations.tsv, shipped with the package (Node only). */
import { readFileSync } from 'node:fs';
import { parseDeviations, type KnownDeviation } from '../monitor/deviations.js';

/** The package's catalogue/deviations.tsv (dist/src/cli/ -> the package root). */
export const DEVIATIONS_FILE = new URL('../../../catalogue/deviations.tsv', import.meta.url);

/**
 * Reads a deviations table (the package's own by default), to hand to a Monitor so that its
 * verdicts on those clauses are marked as known behaviour of real drivers. Throws on an
 * unreadable file or a malformed line.
 */
export function loadDeviations(file: string | URL = DEVIATIONS_FILE): KnownDeviation[] {
  return parseDeviations(readFileSync(file, 'utf8'));
}
