// Test support (not a test file): a MonitorProxy in this process between a front-end and a
// back-end, with its verdicts collected.
import { native } from '../../src/native/index.js';
import { Monitor } from '../../src/monitor/monitor.js';
import { loadDeviations } from '../../src/node/deviations.js';
import { MonitorProxy, type ProxyVerdict } from '../../src/proxy/proxy.js';

/** A proxy listening at `listen`, forwarding to `connect`; `lines` collects its log. */
export function startProxy(listen: string, connect: string, o: { pollMinMs?: number; pollMaxMs?: number; backendWaitMs?: number } = {}): { proxy: MonitorProxy; lines: string[]; verdicts: ProxyVerdict[] } {
  const lines: string[] = [];
  const verdicts: ProxyVerdict[] = [];
  const proxy = new MonitorProxy(native(), {
    listen,
    connect,
    monitor: new Monitor({ mode: 'tolerant', deviations: loadDeviations() }),
    onVerdict: (v) => verdicts.push(v),
    log: (level, m) => lines.push(`${level} ${m}`),
    ...o,
  });
  return { proxy, lines, verdicts };
}

/** The verdicts, one per line, for assertion messages. */
export function show(verdicts: readonly ProxyVerdict[]): string {
  return verdicts.map((v) => `${v.clause} (${v.side}, session ${v.session}${v.queue !== undefined ? `, ring ${v.queue}` : ''}): ${v.message}`).join('\n') || '(none)';
}

/** Violations that are not catalogued known deviations. */
export function unexpected(verdicts: readonly ProxyVerdict[]): ProxyVerdict[] {
  return verdicts.filter((v) => v.severity === 'violation' && v.deviation === undefined);
}
