/**
 * The conformance monitor: core code calls `report(clauseId, ...)` wherever a peer breaks a
 * rule; the monitor turns it into a {@link Verdict} naming the clause from the catalogue
 * (../../catalogue/clauses.tsv, ids of ../shared/spec/normative.tsv).
 *
 * Strict mode makes the device enter DEVICE_NEEDS_RESET (the driver: give up and set FAILED);
 * tolerant mode records and goes on. Either way, guest input never throws to the caller.
 */
import { clauseInfo, type Level, type Side } from './catalogue.js';
import type { KnownDeviation } from './deviations.js';

/**
 * How much a verdict weighs: MUST / MUST NOT clauses give violations (strict mode acts on
 * them), SHOULD / SHOULD NOT / MAY and downgraded ones warnings.
 */
export type Severity = 'violation' | 'warning';

/** A broken clause, as the monitor records it: which clause, who broke it, who saw it, what happened. */
export interface Verdict {
  /** Clause id, e.g. `split.desc-table.driver.1`. */
  clause: string;
  /** Side that broke the clause. */
  side: Side;
  level: Level;
  /** MUST / MUST NOT clauses give violations; SHOULD / SHOULD NOT (and downgraded ones) warnings. */
  severity: Severity;
  message: string;
  /** Which endpoint saw it: the device watches the driver, the driver watches the device. */
  observer: Side;
  context?: Record<string, unknown>;
  /**
   * Set when the clause is a catalogued deviation of a real driver (catalogue/deviations.tsv):
   * the verdict is still a violation (and acted on as one), marked as known.
   */
  deviation?: Pick<KnownDeviation, 'driver' | 'version' | 'evidence'>;
}

/**
 * `strict`: a violation makes the device enter DEVICE_NEEDS_RESET (the driver gives up);
 * `tolerant`: verdicts are recorded and work goes on.
 */
export type MonitorMode = 'strict' | 'tolerant';

/** Monitor's options. */
export interface MonitorOptions {
  mode?: MonitorMode;
  /** Clause ids reported as warnings only (known findings in real peers). */
  warnOnly?: Iterable<string>;
  /** Clause ids that do not apply where this monitor runs: not reported at all. */
  ignore?: Iterable<string>;
  /** Called for every verdict as it is made. */
  onVerdict?: (v: Verdict) => void;
  /** Verdicts kept in memory (a hostile peer cannot grow the list without bound). */
  maxKept?: number;
  /** Known deviations of real drivers (catalogue/deviations.tsv): verdicts on their clauses carry `deviation`. */
  deviations?: Iterable<KnownDeviation>;
}

/**
 * The conformance monitor: the rings and the device and driver cores report each broken rule
 * here by clause id; the monitor turns it into a Verdict, keeps it, tells its listeners, and
 * says whether to act on it (strict mode).
 */
export class Monitor {
  readonly mode: MonitorMode;
  readonly verdicts: Verdict[] = [];
  /** Verdicts made, including those dropped past `maxKept`. */
  total = 0;
  private readonly warnOnly: Set<string>;
  private readonly ignored: Set<string>;
  private readonly listeners: ((v: Verdict) => void)[] = [];
  private readonly maxKept: number;
  private readonly deviations = new Map<string, Pick<KnownDeviation, 'driver' | 'version' | 'evidence'>>();

  /** A monitor, strict unless `options.mode` says otherwise. */
  constructor(options: MonitorOptions = {}) {
    this.mode = options.mode ?? 'strict';
    this.warnOnly = new Set(options.warnOnly ?? []);
    this.ignored = new Set(options.ignore ?? []);
    this.maxKept = options.maxKept ?? 1000;
    if (options.onVerdict) this.listeners.push(options.onVerdict);
    for (const d of options.deviations ?? []) {
      if (!this.deviations.has(d.clause)) this.deviations.set(d.clause, { driver: d.driver, version: d.version, evidence: d.evidence });
    }
  }

  /** The catalogued deviation for `clause`, if any. */
  knownDeviation(clause: string): Verdict['deviation'] {
    return this.deviations.get(clause);
  }

  /** Whether the monitor is in strict mode. */
  get strict(): boolean {
    return this.mode === 'strict';
  }

  /** Calls `listener` with every verdict from now on; returns the function that stops it. */
  onVerdict(listener: (v: Verdict) => void): () => void {
    this.listeners.push(listener);
    return () => {
      const i = this.listeners.indexOf(listener);
      if (i >= 0) this.listeners.splice(i, 1);
    };
  }

  /**
   * Records that `clause` was broken. The side that broke it comes from the clause id; the
   * observer is the other side. Returns the verdict; `severity` says whether strict mode acts.
   */
  report(clause: string, message: string, context?: Record<string, unknown>): Verdict {
    const info = clauseInfo(clause);
    const side: Side = info?.side ?? (clause.includes('.device.') ? 'device' : 'driver');
    const level: Level = info?.level ?? 'MUST';
    const severity: Severity =
      this.warnOnly.has(clause) || level === 'SHOULD' || level === 'SHOULD NOT' || level === 'MAY' ? 'warning' : 'violation';
    const verdict: Verdict = { clause, side, level, severity, message, observer: side === 'device' ? 'driver' : 'device' };
    if (context !== undefined) verdict.context = context;
    const deviation = this.deviations.get(clause);
    if (deviation !== undefined) verdict.deviation = deviation;
    if (this.ignored.has(clause)) return { ...verdict, severity: 'warning' }; // not recorded, never acted on
    this.total++;
    if (this.verdicts.length < this.maxKept) this.verdicts.push(verdict);
    for (const l of this.listeners) {
      try {
        l(verdict);
      } catch {
        // A listener's failure must not turn a guest's bad input into an exception.
      }
    }
    return verdict;
  }

  /** Whether strict mode should act on this verdict (DEVICE_NEEDS_RESET / driver gives up). */
  shouldAct(v: Verdict): boolean {
    return this.strict && v.severity === 'violation';
  }

  /** The verdicts kept that are violations. */
  get violations(): Verdict[] {
    return this.verdicts.filter((v) => v.severity === 'violation');
  }

  /** Whether a verdict on `clause` is among those kept. */
  has(clause: string): boolean {
    return this.verdicts.some((v) => v.clause === clause);
  }

  /** Forgets every verdict kept (and the count). */
  clear(): void {
    this.verdicts.length = 0;
    this.total = 0;
  }
}

/**
 * Formats a verdict on one line: `VIOLATION split.desc-table.driver.1 (driver MUST NOT): ...`,
 * with ` [known deviation: DRIVER VERSION]` for a catalogued deviation of a real driver.
 */
export function formatVerdict(v: Verdict): string {
  const known = v.deviation ? ` [known deviation: ${v.deviation.driver} ${v.deviation.version}]` : '';
  return `${v.severity.toUpperCase()} ${v.clause} (${v.side} ${v.level}): ${v.message}${known}`;
}
