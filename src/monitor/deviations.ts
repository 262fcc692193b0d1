/**
 * Known deviations of real drivers (catalogue/deviations.tsv): clauses a widely used driver is
 * known to break, with the driver, its version and the evidence. A verdict on such a clause is
 * still a violation; the monitor marks it (Verdict.deviation) so a log reader sees at once that
 * it is the known behaviour of a real driver and not a new finding. Browser-safe: the caller
 * reads the file (src/node/deviations.ts does in Node).
 */
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

/** Parses the TSV text (header line first); throws on a malformed line, naming it. */
export function parseDeviations(text: string): KnownDeviation[] {
  const lines = text.split('\n').filter((l) => l.trim().length > 0);
  if (lines.length === 0 || lines[0] !== COLUMNS.join('\t')) throw new Error(`deviations: the header must be ${COLUMNS.join(', ')} (tab-separated)`);
  return lines.slice(1).map((line, i) => {
    const f = line.split('\t');
    if (f.length !== COLUMNS.length || f.slice(0, 4).some((v) => v.trim() === '')) {
      throw new Error(`deviations: line ${i + 2} needs ${COLUMNS.length} tab-separated fields (clause, driver, version, evidence non-empty)`);
    }
    return { clause: f[0], driver: f[1], version: f[2], evidence: f[3], note: f[4] };
  });
}
