/** Reads catalogue/deviations.tsv, shipped with the package (Node only). */
import { readFileSync } from 'node:fs';
import { parseDeviations, type KnownDeviation } from '../monitor/deviations.js';

/** The package's catalogue/deviations.tsv (dist/src/cli/ -> the package root). */
export const DEVIATIONS_FILE = new URL('../../../catalogue/deviations.tsv', import.meta.url);

export function loadDeviations(file: string | URL = DEVIATIONS_FILE): KnownDeviation[] {
  return parseDeviations(readFileSync(file, 'utf8'));
}
