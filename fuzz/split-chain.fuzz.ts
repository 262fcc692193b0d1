// Fuzz target: split-ring chain walking (see chains.ts).
import { fuzzChains } from './chains.js';

export function fuzz(data: Uint8Array): void {
  fuzzChains('split', data);
}
