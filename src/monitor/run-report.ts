/**
 * The verdicts of a real run as one JSON document (`virtio-ts serve --report FILE`, or an
 * embedder's own monitor): grouped by clause, with a count and the first and last occurrence,
 * so a run of hours that breaks one clause a million times stays a small file.
 * `virtio-ts conformance --html FILE --report FILE` renders it beside the catalogue (and reads
 * `virtio-ts monitor`'s and `virtio-ts probe`'s reports the same way).
 *
 * The shape is stable: `schema` names its version, and fields are only ever added under the
 * same version. Browser-safe (no Node imports): the caller writes the file.
 */
import type { Side, Level } from './catalogue.js';
import type { Severity, Verdict } from './monitor.js';

/** The version of the report's shape. */
export const RUN_REPORT_SCHEMA = 'virtio-ts/run-report@1';

/** One occurrence of a verdict, as recorded. */
export interface RunReportOccurrence {
  /** ISO time the verdict was made. */
  at: string;
  message: string;
  /** The side that saw it (the other side broke the clause). */
  observer: Side;
  severity: Severity;
  /** The verdict's context (ring, position, message, descriptor...), as the check gave it. */
  context?: Record<string, unknown>;
  /** Set when the clause is a catalogued deviation of a real driver (catalogue/deviations.tsv). */
  deviation?: Verdict['deviation'];
  /** Where the recorder was told it came from (e.g. the proxy's `front-end` / `back-end`), if anywhere. */
  source?: string;
}

/** The verdicts on one clause in a run. */
export interface RunReportClause {
  clause: string;
  /** The side that broke it. */
  side: Side;
  level: Level;
  /** How many verdicts named it. */
  count: number;
  /** Of those, how many were violations (the rest warnings). */
  violations: number;
  first: RunReportOccurrence;
  /** The latest one (absent when count is 1). */
  last?: RunReportOccurrence;
}

/** A run's report. */
export interface RunReport {
  schema: typeof RUN_REPORT_SCHEMA;
  /** What ran: `serve`, or an embedder's name (`monitor` when converted from a monitor report). */
  tool: string;
  /** What it ran on (device type, socket paths, image...): free-form, for the reader. */
  target: Record<string, unknown>;
  /** ISO times the run started and the report was written. */
  started: string;
  ended: string;
  /** The monitor mode, when there is one. */
  mode?: string;
  totals: {
    verdicts: number;
    violations: number;
    warnings: number;
    /** Violations on a catalogued deviation of a real driver. */
    knownDeviations: number;
    /** Distinct clauses. */
    clauses: number;
  };
  /** One entry per clause, in the order first seen. */
  clauses: RunReportClause[];
  /** What the device counted, when it counts (`serve net`: frames and bytes each way, drops). */
  counters?: Record<string, number>;
}

/**
 * Collects a run's verdicts for a {@link RunReport}: hand it every verdict (Monitor's
 * `onVerdict`), then call {@link RunReportRecorder.report}. Memory is one entry per clause.
 */
export class RunReportRecorder {
  private readonly byClause = new Map<string, RunReportClause>();
  private readonly started: string;
  private verdicts = 0;
  private violations = 0;
  private warnings = 0;
  private knownDeviations = 0;

  /** `tool` and `target` go into the report as they are; `now` is for tests. */
  constructor(
    private readonly tool: string,
    private readonly target: Record<string, unknown>,
    private readonly mode?: string,
    private readonly now: () => Date = () => new Date(),
  ) {
    this.started = this.now().toISOString();
  }

  /** Records one verdict; `source` says where it came from when the recorder hears more than one monitor. */
  record(v: Verdict, source?: string): void {
    const occ: RunReportOccurrence = { at: this.now().toISOString(), message: v.message, observer: v.observer, severity: v.severity };
    if (v.context !== undefined) occ.context = v.context;
    if (v.deviation !== undefined) occ.deviation = v.deviation;
    if (source !== undefined) occ.source = source;
    this.verdicts++;
    if (v.severity === 'violation') {
      this.violations++;
      if (v.deviation !== undefined) this.knownDeviations++;
    } else this.warnings++;
    const entry = this.byClause.get(v.clause);
    if (entry === undefined) {
      this.byClause.set(v.clause, { clause: v.clause, side: v.side, level: v.level, count: 1, violations: v.severity === 'violation' ? 1 : 0, first: occ });
      return;
    }
    entry.count++;
    if (v.severity === 'violation') entry.violations++;
    entry.last = occ;
  }

  /** The report as of now (call again for a later one). */
  report(): RunReport {
    const r: RunReport = {
      schema: RUN_REPORT_SCHEMA,
      tool: this.tool,
      target: this.target,
      started: this.started,
      ended: this.now().toISOString(),
      totals: {
        verdicts: this.verdicts,
        violations: this.violations,
        warnings: this.warnings,
        knownDeviations: this.knownDeviations,
        clauses: this.byClause.size,
      },
      clauses: [...this.byClause.values()].map((c) => ({ ...c })),
    };
    if (this.mode !== undefined) r.mode = this.mode;
    return r;
  }
}

/**
 * The report as JSON text. A verdict's context may hold what JSON has no form for: a bigint
 * (feature bits) is written as a `0x` hex string, a typed array as an array of numbers.
 */
export function runReportJson(r: RunReport): string {
  return reportJson(r);
}

/**
 * Any report (run, monitor, probe) as indented JSON text, with the same forms as
 * {@link runReportJson} for a bigint or a typed array in a verdict's context (plain
 * `JSON.stringify` throws on a bigint).
 */
export function reportJson(report: unknown): string {
  return (
    JSON.stringify(
      report,
      (_k, v: unknown) => {
        if (typeof v === 'bigint') return `0x${v.toString(16)}`;
        if (ArrayBuffer.isView(v) && !(v instanceof DataView)) return Array.from(v as unknown as ArrayLike<number>);
        return v;
      },
      2,
    ) + '\n'
  );
}
