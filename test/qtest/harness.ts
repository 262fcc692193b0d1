/**
 * Test support (not a test file) for the qtest tests: whether QEMU is here (else the test
 * skips with the reason outside CI and fails in CI: test/prerequisites.ts), and a machine that
 * is always closed, so no QEMU outlives its test.
 */
import { spawnSync } from 'node:child_process';
import type { TestContext } from 'node:test';
import { missingPrerequisite } from '../prerequisites.js';
import { QtestMachine, type QtestMachineOptions } from '../../src/node/qtest/machine.js';
import { Monitor } from '../../src/monitor/monitor.js';

/** What is missing for the qtest tests, or null. */
export function qtestMissing(): string | null {
  const qemu = spawnSync(process.env.QEMU ?? 'qemu-system-x86_64', ['--version'], { encoding: 'utf8' });
  if (qemu.status !== 0) return 'qemu-system-x86_64 (Debian package qemu-system-x86)';
  return null;
}

/** Skips (or fails in CI) when QEMU is missing; true when the test can run. */
export function needQemu(t: TestContext): boolean {
  const missing = qtestMissing();
  if (missing === null) return true;
  missingPrerequisite(t, missing);
  return false;
}

/** A machine closed when the test ends, whatever happens in it. */
export async function machine(t: TestContext, options: QtestMachineOptions): Promise<QtestMachine> {
  const m = await QtestMachine.launch(options);
  t.after(() => m.close());
  return m;
}

/**
 * One cell of the matrix: a machine, the transport interface the driver uses, the ring format.
 * - microvm: virtio-mmio version 2 (modern) or version 1 (legacy: `legacyMmio`);
 * - pc / q35: a transitional device driven through its modern capabilities or its legacy I/O
 *   BAR (`pciMode`), a modern-only one (`disable-legacy=on`) or a legacy-only one
 *   (`disable-modern=on`), with INTx or MSI-X.
 */
export interface Variant {
  name: string;
  machine: QtestMachineOptions['machine'];
  legacyMmio?: boolean;
  pciMode?: 'modern' | 'legacy';
  msix?: boolean;
  packed?: boolean;
  /** Extra device properties (`disable-legacy=on`, `disable-modern=on`). */
  props?: string[];
}

/** The matrix every device runs through. */
export const VARIANTS: readonly Variant[] = [
  { name: 'microvm virtio-mmio v2, split', machine: 'microvm' },
  { name: 'microvm virtio-mmio v1 (legacy), split', machine: 'microvm', legacyMmio: true },
  { name: 'microvm virtio-mmio v2, packed', machine: 'microvm', packed: true },
  { name: 'pc transitional via modern caps, INTx, split', machine: 'pc', pciMode: 'modern', msix: false },
  { name: 'pc transitional via legacy I/O BAR, INTx, split', machine: 'pc', pciMode: 'legacy', msix: false },
  { name: 'q35 modern-only, MSI-X, split', machine: 'q35', pciMode: 'modern', msix: true, props: ['disable-legacy=on'] },
  { name: 'q35 modern-only, MSI-X, packed', machine: 'q35', pciMode: 'modern', msix: true, packed: true, props: ['disable-legacy=on'] },
  { name: 'q35 legacy-only (disable-modern=on), MSI-X, split', machine: 'q35', pciMode: 'legacy', msix: true, props: ['disable-modern=on'] },
];

/** `-device` for a device model (`rng`, `blk`, `serial`, `net`) in this variant, with `props`. */
export function deviceArg(v: Variant, model: string, props: string[] = []): string {
  const all = [...(v.packed ? ['packed=on'] : []), ...(v.machine === 'microvm' ? [] : (v.props ?? [])), ...props];
  return [`virtio-${model}-${v.machine === 'microvm' ? 'device' : 'pci'}`, ...all].join(',');
}

/** Launches the variant's machine with `args` (closed when the test ends). */
export function variantMachine(t: TestContext, v: Variant, args: string[]): Promise<QtestMachine> {
  return machine(t, { machine: v.machine, legacyMmio: v.legacyMmio, args });
}

/** The variant's transport to the first device of type `deviceId`. */
export function variantTransport(m: QtestMachine, v: Variant, deviceId: number, monitor: Monitor) {
  return m.transport(deviceId, { monitor, pci: { mode: v.pciMode, msix: v.msix } });
}

/** A tolerant monitor: the tests read every verdict instead of the driver giving up at the first. */
export function recordingMonitor(): Monitor {
  return new Monitor({ mode: 'tolerant' });
}

/** The clause ids of the verdicts, sorted and unique (what the tests compare against the expected findings). */
export function clauses(monitor: Monitor): string[] {
  return [...new Set(monitor.verdicts.map((v) => v.clause))].sort();
}

/** A promise that fails the test after `ms` instead of hanging it (a hang guard, not a timing assertion). */
export function bounded<T>(p: Promise<T>, what: string, ms = 20000): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
