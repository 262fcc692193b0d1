/**
 * What every fuzz target shares: the invariant checks. A broken invariant throws a
 * {@link Finding}; Jazzer.js reports any exception from a target as a crash and saves the input.
 * Targets are plain `(data: Uint8Array) => void` functions, so they run the same under Jazzer.js
 * (fuzz/run.mjs) and when fuzz/regressions/ inputs are replayed by test/fuzz.test.ts.
 */
import { clauseInfo } from '../src/monitor/catalogue.js';
import type { Verdict } from '../src/monitor/monitor.js';
import { GuestMemory } from '../src/memory/guest-memory.js';

export class Finding extends Error {
  override readonly name = 'Finding';
}

export function check(cond: unknown, message: string): asserts cond {
  if (!cond) throw new Finding(message);
}

/** Every verdict names a clause of the catalogue (the spec's or the project's struct.* rules). */
export function catalogued(verdicts: readonly Verdict[]): void {
  for (const v of verdicts) check(clauseInfo(v.clause) !== undefined, `verdict names an uncatalogued clause ${v.clause}: ${v.message}`);
}

/**
 * Runs `fn`; an exception that is not one of `allowed` (the project's typed errors for that
 * input) is a finding, reported with its original stack.
 */
export function onlyTyped<T>(fn: () => T, allowed: readonly (abstract new (...a: never[]) => Error)[], what: string): T | undefined {
  try {
    return fn();
  } catch (err) {
    if (err instanceof Finding) throw err;
    if (allowed.some((c) => err instanceof c)) return undefined;
    const f = new Finding(`${what} threw ${(err as Error)?.name ?? typeof err}: ${(err as Error)?.message ?? String(err)}`);
    f.stack = `${f.stack}\ncaused by: ${(err as Error)?.stack ?? String(err)}`;
    throw f;
  }
}

/** Guest memory layout of the ring targets: two adjacent regions, a hole, one more region. */
export const REGIONS = [
  { guestAddr: 0, size: 0x8000 },
  { guestAddr: 0x8000, size: 0x8000 },
  { guestAddr: 0x18000, size: 0x8000 },
] as const;

export function ringMemory(): GuestMemory {
  return new GuestMemory(REGIONS.map((r) => ({ guestAddr: r.guestAddr, size: r.size, buffer: new ArrayBuffer(r.size) })));
}

/** Copies `bytes` into guest memory from address 0 on, region by region (the hole is skipped). */
export function loadImage(mem: GuestMemory, bytes: Uint8Array): void {
  let off = 0;
  for (const r of REGIONS) {
    if (off >= bytes.length) return;
    const n = Math.min(r.size, bytes.length - off);
    mem.write(r.guestAddr, bytes.subarray(off, off + n));
    off += n;
  }
}

/** Little-endian reads from a fuzz input, 0 past its end (so every input means something). */
export class Input {
  at = 0;
  constructor(readonly bytes: Uint8Array) {}
  u8(): number {
    return this.at < this.bytes.length ? this.bytes[this.at++] : (this.at++, 0);
  }
  u16(): number {
    return this.u8() | (this.u8() << 8);
  }
  u32(): number {
    return (this.u16() | (this.u16() << 16)) >>> 0;
  }
  rest(): Uint8Array {
    return this.bytes.subarray(Math.min(this.at, this.bytes.length));
  }
}
