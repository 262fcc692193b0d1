/**
 * The virtqueue layer's error. What a peer does wrong on a ring is a verdict, never an error;
 * this is for the code that reads and writes a chain's buffers (device types parsing requests).
 */
import { VirtioTsError } from '../errors.js';

/**
 * - `chain-bounds`: a read, write or skip past the end of a chain's part (its device-readable
 *   bytes for a ChainReader, its device-writable bytes for a ChainWriter, or the `limit()` set).
 *   Nothing was consumed: the cursor stands where it stood. A device type turns it into its
 *   own error status (a request too short for its header, a buffer too small for the reply).
 * - `unsafe-integer`: a 64-bit field read as a number (ChainReader.readU64Number) is 2^53 or
 *   more, which a number cannot hold exactly. Nothing was consumed (readU64 can read it).
 */
export type VirtqueueErrorKind = 'chain-bounds' | 'unsafe-integer';

/** The virtqueue layer's error (reading or writing past a chain part's end). */
export class VirtqueueError extends VirtioTsError<VirtqueueErrorKind> {
  /** A VirtqueueError of `kind`. */
  constructor(kind: VirtqueueErrorKind, message: string) {
    super(kind, message);
  }
}
