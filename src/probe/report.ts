/**
 * What `virtio-ts probe` reports, as an object (runProbe's result, `--json`, `--report FILE`)
 * and as text. The JSON shape is stable: `schema` names its version, and fields are only ever
 * added under the same version.
 */
import type { HostileClass, HostileOutcome } from './hostile.js';

/** The version of the report's shape. */
export const PROBE_REPORT_SCHEMA = 'virtio-ts/probe-report@1';

/**
 * One rule or clause the default run checked: `pass` (exercised, never broken), `fail` (broken:
 * `detail` says how, `session` where), `not-run` (the back-end does not offer what it needs,
 * or the run could not get there: `detail` says which).
 */
export interface ProbeCheck {
  /** A vhost-user rule id (rules.ts) or a catalogue clause id. */
  id: string;
  /** Where the id comes from. */
  source: 'vhost-user' | 'virtio';
  /** What is checked (the rule's text, the clause's summary). */
  title: string;
  status: 'pass' | 'fail' | 'not-run';
  /** How many times it was checked. */
  checked: number;
  detail?: string;
  /** The session it failed in (e.g. `driver split event-idx`). */
  session?: string;
}

/** One hostile case's result. */
export interface ProbeHostileResult {
  id: string;
  class: HostileClass;
  title: string;
  /** The worst of what happened: crashed, wrote-outside, hung, wedged, else the back-end's reaction. */
  outcome: HostileOutcome;
  /** What the back-end did with the case itself, before the after-checks. */
  reaction: HostileOutcome;
  /** Whether the outcome is fine for this case. */
  ok: boolean;
  /** The rule or clause a failed case breaks, when it has one. */
  clause?: string;
  /** What the probe saw (a REPLY_ACK value, the status byte, the offsets written...). */
  note?: string;
}

/** What the back-end offered, as the probe read it. */
export interface ProbeBackendInfo {
  /** GET_FEATURES, hex. */
  features: string;
  /** GET_PROTOCOL_FEATURES, hex (absent when VHOST_USER_F_PROTOCOL_FEATURES is not offered). */
  protocolFeatures?: string;
  /** GET_QUEUE_NUM (with MQ). */
  queues?: number;
  /** The ring formats the driver sessions ran with. */
  ringFormats: ('split' | 'packed')[];
}

/** The whole report. */
export interface ProbeReport {
  schema: typeof PROBE_REPORT_SCHEMA;
  /** What was probed; `connected`: whether the probe could connect at all (false: nothing else is known). */
  target: { socketPath: string; type: string; connected: boolean };
  /** ISO time the probe started. */
  started: string;
  durationMs: number;
  /** Absent when the back-end could not be reached at all. */
  backend?: ProbeBackendInfo;
  /** The default run, rule by rule and clause by clause. */
  checks: ProbeCheck[];
  /** With `hostile`: one entry per case, in the order they ran. */
  hostile?: ProbeHostileResult[];
  /** Sessions of the default run and what each did (for the reader). */
  sessions: { name: string; result: string }[];
  summary: {
    pass: number;
    fail: number;
    notRun: number;
    hostileOk: number;
    hostileFailed: number;
    hostileSkipped: number;
    /** No failed check and no failed hostile case. */
    clean: boolean;
  };
}

/** The report as text, for a person: the checks (failed ones first), then the hostile cases. */
export function formatProbeReport(r: ProbeReport): string {
  const out: string[] = [];
  out.push(`virtio-ts probe: ${r.target.type} back-end at ${r.target.socketPath}`);
  if (r.backend) {
    const b = r.backend;
    out.push(`  features ${b.features}${b.protocolFeatures ? `, protocol features ${b.protocolFeatures}` : ''}${b.queues !== undefined ? `, ${b.queues} queue(s)` : ''}; rings: ${b.ringFormats.join(', ') || 'none driven'}`);
  }
  for (const s of r.sessions) out.push(`  session ${s.name}: ${s.result}`);
  out.push('');
  out.push('Default run, rule by rule:');
  const order = { fail: 0, pass: 1, 'not-run': 2 } as const;
  for (const c of [...r.checks].sort((a, b) => order[a.status] - order[b.status])) {
    const mark = c.status === 'pass' ? 'PASS   ' : c.status === 'fail' ? 'FAIL   ' : 'NOT RUN';
    out.push(`  ${mark} ${c.id}${c.status === 'pass' ? ` (${c.checked}x)` : ''}${c.detail ? `: ${c.detail}` : ''}${c.session ? ` [${c.session}]` : ''}`);
  }
  if (r.hostile) {
    out.push('');
    out.push('Hostile cases:');
    for (const h of r.hostile) {
      const mark = h.outcome === 'skipped' ? 'SKIP' : h.ok ? 'ok  ' : 'FAIL';
      const reaction = h.reaction !== h.outcome ? ` (reaction: ${h.reaction})` : '';
      out.push(`  ${mark} ${h.id.padEnd(30)} ${h.outcome}${reaction}${h.clause && !h.ok ? ` breaks ${h.clause}` : ''}${h.note ? ` - ${h.note}` : ''}`);
    }
  }
  const s = r.summary;
  out.push('');
  out.push(
    `${s.clean ? 'CLEAN' : 'VIOLATIONS'}: ${s.pass} passed, ${s.fail} failed, ${s.notRun} not run` +
      (r.hostile ? `; hostile: ${s.hostileOk} ok, ${s.hostileFailed} failed, ${s.hostileSkipped} skipped` : '') +
      ` (${(r.durationMs / 1000).toFixed(1)} s)`,
  );
  return out.join('\n') + '\n';
}
