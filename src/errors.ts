/**
 * The one base of the errors virtio-ts throws. Each layer has one error class of its own
 * (MemoryError, DeviceError, DriverError, VhostUserError, ...) that extends this; `kind` is
 * machine-readable and stable (tests and callers branch on it), `message` is for people and may
 * change. Misuse of an API by its caller (a negative size, an index out of range) stays a
 * RangeError/TypeError, as in the platform.
 */
export class VirtioTsError<K extends string = string> extends Error {
  /** What went wrong, as a stable identifier (e.g. 'out-of-bounds', 'not-negotiated'). */
  readonly kind: K;

  /**
   * An error of this `kind`; `message` is for people, `options.cause` (as in the platform's
   * Error) keeps the underlying failure, e.g. the file system's error behind a storage error.
   */
  constructor(kind: K, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.kind = kind;
    this.name = new.target.name;
  }
}

/** Whether `err` is a virtio-ts error of this kind (or of any kind when `kind` is omitted). */
export function isVirtioTsError<K extends string>(err: unknown, kind?: K): err is VirtioTsError<K> {
  return err instanceof VirtioTsError && (kind === undefined || err.kind === kind);
}
