/**
 * Test support (not a test file) for the qtest tests: whether QEMU is here (else the test
 * skips with the reason outside CI and fails in CI: test/prerequisites.ts), and a machine that
 * is always closed, so no QEMU outlives its test.
 */
import { spawnSync } from 'node:child_process';
import type { TestContext } from 'node:test';
import { missingPrerequisite } from '../prerequisites.js';
import { QtestMachine, type QtestMachineOptions } from '../../src/node/qtest/machine.js';

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
