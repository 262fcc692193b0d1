/**
 * Test support (not a test file): a test that cannot run here for want of something outside
 * the project (QEMU, a guest build, a loop device, an unprivileged user) says why. Outside CI
 * it skips with the reason; in CI (CI=true, where .ci/run installs everything) it fails:
 * nothing skips silently there.
 */
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';

export function missingPrerequisite(t: TestContext, why: string): void {
  if (process.env.CI === 'true') assert.fail(`prerequisites missing in CI: ${why}`);
  t.skip(`prerequisites missing: ${why} (.ci/run installs them)`);
}
