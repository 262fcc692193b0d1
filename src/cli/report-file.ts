/**
 * The `--report FILE` of `serve`, `probe` and `monitor`: the JSON report goes to a new file only (a file
 * the program did not make is never overwritten), checked before the run starts and created
 * with O_EXCL when it ends.
 */
import { closeSync, existsSync, openSync, writeSync } from 'node:fs';
import { CliError, EXIT_RUNTIME } from './exit-codes.js';
import { reportJson } from '../monitor/run-report.js';

/** Refuses (exit 3) a report path that exists already, before any work is done. */
export function checkNewReport(command: string, path: string | undefined): void {
  if (path !== undefined && existsSync(path)) throw new CliError(EXIT_RUNTIME, `--report ${path}: the file exists; ${command} writes only a new file (it never overwrites one it did not make)`);
}

/** Writes the report as indented JSON to a new file (exit 3 when it cannot be created); returns the JSON. */
export function writeNewReport(path: string | undefined, report: unknown): string {
  // A verdict's context may carry a bigint (feature bits): written as 0x hex, never a throw.
  const json = reportJson(report);
  if (path === undefined) return json;
  let fd: number;
  try {
    fd = openSync(path, 'wx');
  } catch (e) {
    throw new CliError(EXIT_RUNTIME, `--report ${path}: cannot create it: ${e instanceof Error ? e.message : String(e)}`);
  }
  try {
    writeSync(fd, json);
  } finally {
    closeSync(fd);
  }
  return json;
}
