/**
 * Strict parsers for numeric flags: a value is a plain decimal integer (no sign, no fraction,
 * no exponent, no trailing garbage such as `12abc`, no hex), then range-checked. Each throws
 * commander's InvalidArgumentError, which main() turns into a usage error (exit 2).
 */
import { InvalidArgumentError } from 'commander';

const DECIMAL = /^(0|[1-9][0-9]*)$/;

/** A whole number from `min` to `max`, written in plain decimal. */
export function intInRange(name: string, min: number, max: number) {
  return (value: string): number => {
    const n = DECIMAL.test(value) ? Number(value) : NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) throw new InvalidArgumentError(`${name} must be a whole number from ${min} to ${max} (got "${value}")`);
    return n;
  };
}

/** Largest queue size a split or packed ring can have (2.7: Queue Size is a power of 2 up to 32768). */
export const MAX_QUEUE_SIZE = 32768;

/**
 * A queue size: a power of two from 2 to 32768. 2.7 requires split rings to be a power of 2
 * in size (Queue Size ... maximum 32768); QEMU's vhost-user devices take only powers of two
 * for queue-size, so any other value could never be used by a front-end.
 */
export function queueSize(value: string): number {
  const n = intInRange('--queue-size', 2, MAX_QUEUE_SIZE)(value);
  if ((n & (n - 1)) !== 0) throw new InvalidArgumentError(`--queue-size must be a power of two from 2 to ${MAX_QUEUE_SIZE} (got ${n})`);
  return n;
}

/**
 * Request queues of `serve blk`. Each costs two eventfds and a watch; Linux uses at most one
 * per vCPU, QEMU's vhost-user-blk defaults to 1 and caps num-queues at VIRTIO_QUEUE_MAX (1024).
 */
export const MAX_NUM_QUEUES = 256;
