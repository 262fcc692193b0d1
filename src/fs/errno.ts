/**
 * Linux errno numbers (asm-generic/errno-base.h, errno.h): what a FUSE reply carries, negated,
 * in fuse_out_header.error. The guest is Linux whatever the host is, so these are Linux's
 * numbers, not the host's. Browser-safe.
 */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  EXDEV: 18,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  EFBIG: 27,
  ENOSPC: 28,
  ESPIPE: 29,
  EROFS: 30,
  EMLINK: 31,
  ERANGE: 34,
  EDEADLK: 35,
  ENAMETOOLONG: 36,
  ENOLCK: 37,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ELOOP: 40,
  ENODATA: 61,
  EPROTO: 71,
  EOVERFLOW: 75,
  EILSEQ: 84,
  EOPNOTSUPP: 95,
  ESTALE: 116,
} as const;

/** One of the errno names above. */
export type ErrnoName = keyof typeof Errno;

const NAMES: Readonly<Record<number, string>> = Object.fromEntries(Object.entries(Errno).map(([n, v]) => [v, n]));

/** The name of a Linux errno number ('ENOENT'), or `errno N`. */
export function errnoName(errno: number): string {
  return NAMES[errno] ?? `errno ${errno}`;
}

/**
 * Node's error code names (err.code, 'ENOENT') to Linux numbers, for providers that wrap a
 * platform API reporting names rather than numbers; undefined for a name not listed.
 */
export function errnoFromName(name: string): number | undefined {
  return (Errno as Record<string, number>)[name];
}
