/**
 * Known deviations of real drivers (catalogue/deviations.tsv): clauses a widely used driver is
 * known to break, with the driver, its version and the evidence. A verdict on such a clause is
 * still a violation; the monitor marks it (Verdict.deviation) so a log reader sees at once that
 * it is the known behaviour of a real driver and not a new finding. Browser-safe: the caller
 * reads the file (src/node/deviations.ts does in Node).
 */
import { MonitorError } from './errors.js';

/** A clause a real driver is known to break (one row of catalogue/deviations.tsv). */
export interface KnownDeviation {
  /** Clause id, as in catalogue/clauses.tsv. */
  clause: string;
  /** The driver, e.g. `Linux virtio_blk + virtio_ring`. */
  driver: string;
  /** Versions seen breaking it. */
  version: string;
  /** What was observed, and how to reproduce it. */
  evidence: string;
  note: string;
}

const COLUMNS = ['clause', 'driver', 'version', 'evidence', 'note'] as const;

/**
 * Parses the TSV text (header line first, blank lines ignored); a MonitorError on a malformed
 * header or line, naming the line as it is numbered in the text.
 */
export function parseDeviations(text: string): KnownDeviation[] {
  const lines = text.split('\n').map((l, i) => ({ l, n: i + 1 })).filter(({ l }) => l.trim().length > 0);
  if (lines.length === 0 || lines[0].l !== COLUMNS.join('\t')) {
    throw new MonitorError('bad-deviations-header', `deviations: the header must be ${COLUMNS.join(', ')} (tab-separated)`, lines[0]?.n ?? 1);
  }
  return lines.slice(1).map(({ l: line, n }) => {
    const f = line.split('\t');
    if (f.length !== COLUMNS.length || f.slice(0, 4).some((v) => v.trim() === '')) {
      throw new MonitorError('bad-deviations-line', `deviations: line ${n} needs ${COLUMNS.length} tab-separated fields (clause, driver, version, evidence non-empty)`, n);
    }
    return { clause: f[0], driver: f[1], version: f[2], evidence: f[3], note: f[4] };
  });
}
