// The README's probe example ("Probing a back-end"), line for line from the import on
// (test/probe/readme.test.ts checks it and runs it against `virtio-ts serve blk`).
import { runProbe, formatProbeReport } from '../../src/node.js';

/** Probes the blk back-end at `socketPath`, faults included; prints the report unless clean. */
export async function probeBlk(socketPath: string): Promise<boolean> {
  // Generous bounds: a loaded machine answers late; a back-end that never answers still ends the run.
  const report = await runProbe({ socketPath, type: 'blk', hostile: true, waitMs: 30_000 });
  if (!report.summary.clean) console.log(formatProbeReport(report));
  return report.summary.clean;
}
