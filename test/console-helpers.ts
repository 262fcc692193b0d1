// Helpers the console tests share.
import assert from 'node:assert/strict';
import type { ConsolePort } from '../src/drivers/console.js';
import { WAIT_MS, turns, until as waitUntil } from './wait.js';

export function pattern(seed: number, len: number): Uint8Array {
  const b = new Uint8Array(len);
  let x = (seed * 2654435761 + 1) >>> 0;
  for (let i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

export function concat(chunks: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

/** Waits until `cond` holds, checked once per event-loop turn; fails after `ms` (a bound against hangs, not a timing assumption). */
export async function until(cond: () => boolean, what: string, ms = WAIT_MS): Promise<void> {
  await waitUntil(cond, what, ms);
}

/**
 * Lets pending async deliveries run (a fixed number of event-loop turns, not a time), before
 * checking that something did NOT happen.
 */
export const settle = () => turns();

/** Collects a port's data. */
export function sink(port: ConsolePort): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  port.onData = (b) => chunks.push(b);
  return chunks;
}
export const total = (chunks: readonly Uint8Array[]) => chunks.reduce((n, c) => n + c.length, 0);

