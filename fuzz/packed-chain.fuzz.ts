// Fuzz target: packed-ring chain walking (see chains.ts).
import { fuzzChains } from './chains.js';

export function fuzz(data: Uint8Array): void {
  fuzzChains('packed', data);
}
