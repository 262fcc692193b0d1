// Test support (not a test file): `virtio-ts monitor` as a child process between QEMU and a
// back-end, for the guest tests of the monitor proxy.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { bin, type BootOptions } from '../guest/harness.js';
import type { ProxyVerdict } from '../../src/proxy/proxy.js';
import type { MonitorReport } from '../../src/proxy/report.js';

/** What the monitor CLI said: its live JSON verdicts, its report, its stderr. */
export interface MonitorRun {
  /** The `--json` verdicts, added as each line arrives (a test may watch them while the guest runs). */
  verdicts: ProxyVerdict[];
  report: MonitorReport | null;
  stderr: string;
  exitCode: number | null;
  /** Called with each verdict as its line arrives from the running proxy. */
  onVerdict?: (v: ProxyVerdict) => void;
}

/**
 * `virtio-ts monitor --json --report` between QEMU and the back-end at `backend`: resolves once
 * it listens; its verdicts go to `run` as they arrive; `close` sends SIGTERM and fills in the rest.
 */
export function monitorBetween(run: MonitorRun, extraArgs: string[] = []): NonNullable<BootOptions['interpose']> {
  return async (backend) => {
    const listen = `${backend}.proxy`;
    const reportFile = `${backend}.report.json`;
    const child: ChildProcess = spawn(process.execPath, [bin, 'monitor', '--listen', listen, '--connect', backend, '--json', '--report', reportFile, ...extraArgs], { stdio: ['ignore', 'pipe', 'pipe'] });
    // One JSON verdict per line, taken as it comes (the proxy's live output).
    let partial = '';
    const take = (line: string) => {
      if (line.trim() === '') return;
      const v = JSON.parse(line) as ProxyVerdict;
      run.verdicts.push(v);
      run.onVerdict?.(v);
    };
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => {
      const lines = (partial + d).split('\n');
      partial = lines.pop()!;
      for (const line of lines) take(line);
    });
    child.stderr!.on('data', (d) => (run.stderr += d));
    // 'close': the process ended and its stdout was read to the end (every verdict line taken).
    const exited = new Promise<number | null>((res) => child.on('close', (code) => res(code)));
    for (let i = 0; i < 3000 && !run.stderr.includes('listening on'); i++) {
      if (child.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.ok(run.stderr.includes('listening on'), `virtio-ts monitor did not listen: ${run.stderr}`);
    return {
      path: listen,
      close: async () => {
        child.kill('SIGTERM');
        run.exitCode = await exited;
        take(partial);
        partial = '';
        run.report = existsSync(reportFile) ? (JSON.parse(readFileSync(reportFile, 'utf8')) as MonitorReport) : null;
      },
    };
  };
}

export const fresh = (): MonitorRun => ({ verdicts: [], report: null, stderr: '', exitCode: null });
