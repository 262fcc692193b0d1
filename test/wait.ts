/**
 * Test support (not a test file): waiting without depending on time. The suite runs on a
 * loaded 2-core CI machine, where a timer of a few milliseconds can fire before work queued
 * ahead of it has run. So:
 * - `until(cond)` waits for a state, checked once per event-loop turn; the time bound only
 *   keeps a broken implementation from hanging the suite and is generous.
 * - `turns(n)` lets in-process asynchronous work run a fixed number of event-loop turns
 *   (setImmediate hops, the way the loopback transport delivers): for checking that something
 *   does NOT happen, the same on a quiet machine and a loaded one.
 */
import assert from 'node:assert/strict';

/** The bound of every wait: not a timing assumption, only what keeps a hang from lasting. */
export const WAIT_MS = 30000;

/** One event-loop turn (after I/O callbacks and timers that are due). */
export const turn = () => new Promise<void>((res) => setImmediate(res));

/** `n` event-loop turns. */
export async function turns(n = 50): Promise<void> {
  for (let i = 0; i < n; i++) await turn();
}

/** Waits until `cond()` holds, checking once per turn; fails (naming `what`) after `timeoutMs`. */
export async function until(cond: () => boolean, what: string, timeoutMs = WAIT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await turn();
  }
}
