/**
 * The FUSE wire format (Linux include/uapi/linux/fuse.h, protocol 7.38) as far as virtio-fs
 * uses it: opcodes, INIT flags, struct sizes and field offsets. Little-endian only (the
 * session's byte order is the driver's; virtio-ts serves little-endian drivers, see
 * FuseServer). Browser-safe.
 */

/** FUSE_KERNEL_VERSION: the major version the server speaks. */
export const FUSE_MAJOR = 7;
/** FUSE_KERNEL_MINOR_VERSION the server implements (it answers min(driver's, this)). */
export const FUSE_MINOR = 38;
/** The oldest minor the server serves (7.27: Linux 5.4, the first kernel with virtio-fs is 5.4). */
export const FUSE_MIN_MINOR = 27;

/** Request opcodes (enum fuse_opcode). */
export const Op = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  SETATTR: 4,
  READLINK: 5,
  SYMLINK: 6,
  MKNOD: 8,
  MKDIR: 9,
  UNLINK: 10,
  RMDIR: 11,
  RENAME: 12,
  LINK: 13,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  SETXATTR: 21,
  GETXATTR: 22,
  LISTXATTR: 23,
  REMOVEXATTR: 24,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  GETLK: 31,
  SETLK: 32,
  SETLKW: 33,
  ACCESS: 34,
  CREATE: 35,
  INTERRUPT: 36,
  BMAP: 37,
  DESTROY: 38,
  IOCTL: 39,
  POLL: 40,
  NOTIFY_REPLY: 41,
  BATCH_FORGET: 42,
  FALLOCATE: 43,
  READDIRPLUS: 44,
  RENAME2: 45,
  LSEEK: 46,
  COPY_FILE_RANGE: 47,
  SETUPMAPPING: 48,
  REMOVEMAPPING: 49,
  SYNCFS: 50,
  TMPFILE: 51,
} as const;

const OP_NAMES: Readonly<Record<number, string>> = Object.fromEntries(Object.entries(Op).map(([n, v]) => [v, n]));

/** The name of an opcode (`LOOKUP`), or `opcode N`. */
export function opName(op: number): string {
  return OP_NAMES[op] ?? `opcode ${op}`;
}

/**
 * The opcodes that go on the hiprio queue (spec 5.11.6.2: FUSE_INTERRUPT, FUSE_FORGET and
 * FUSE_BATCH_FORGET) and only there (fs.high-priority-queue.driver.1/.2).
 */
export function isHighPriority(op: number): boolean {
  return op === Op.FORGET || op === Op.BATCH_FORGET || op === Op.INTERRUPT;
}

/** INIT flags (the low 32 bits; flags2 holds bits 32 to 63 with FUSE_INIT_EXT). */
export const InitFlag = {
  ASYNC_READ: 1 << 0,
  POSIX_LOCKS: 1 << 1,
  FILE_OPS: 1 << 2,
  ATOMIC_O_TRUNC: 1 << 3,
  EXPORT_SUPPORT: 1 << 4,
  BIG_WRITES: 1 << 5,
  DONT_MASK: 1 << 6,
  FLOCK_LOCKS: 1 << 10,
  AUTO_INVAL_DATA: 1 << 12,
  DO_READDIRPLUS: 1 << 13,
  READDIRPLUS_AUTO: 1 << 14,
  ASYNC_DIO: 1 << 15,
  WRITEBACK_CACHE: 1 << 16,
  PARALLEL_DIROPS: 1 << 18,
  HANDLE_KILLPRIV: 1 << 19,
  POSIX_ACL: 1 << 20,
  MAX_PAGES: 1 << 22,
  CACHE_SYMLINKS: 1 << 23,
  HANDLE_KILLPRIV_V2: 1 << 28,
  SETXATTR_EXT: 1 << 29,
  INIT_EXT: 1 << 30,
} as const;

/** setattr valid bits (FATTR_*). */
export const Fattr = {
  MODE: 1 << 0,
  UID: 1 << 1,
  GID: 1 << 2,
  SIZE: 1 << 3,
  ATIME: 1 << 4,
  MTIME: 1 << 5,
  FH: 1 << 6,
  ATIME_NOW: 1 << 7,
  MTIME_NOW: 1 << 8,
  LOCKOWNER: 1 << 9,
  CTIME: 1 << 10,
  KILL_SUIDGID: 1 << 11,
} as const;

/** fuse_write_in.write_flags: FUSE_WRITE_KILL_SUIDGID (with HANDLE_KILLPRIV_V2: the writer lacks CAP_FSETID). */
export const WRITE_KILL_SUIDGID = 1 << 2;
/** fuse_open_in / fuse_create_in open_flags: FUSE_OPEN_KILL_SUIDGID (an O_TRUNC open by a caller without CAP_FSETID). */
export const OPEN_KILL_SUIDGID = 1 << 0;

/** fuse_open_out.open_flags. */
export const Fopen = { DIRECT_IO: 1 << 0, KEEP_CACHE: 1 << 1, NOFLUSH: 1 << 5 } as const;

/** Sizes of the structs the server reads and writes, in bytes. */
export const Size = {
  inHeader: 40,
  outHeader: 16,
  attr: 88,
  entryOut: 128,
  attrOut: 104,
  openOut: 16,
  writeOut: 8,
  statfsOut: 80,
  getxattrOut: 8,
  lkOut: 24,
  lseekOut: 8,
  initOut: 64,
  /** fuse_init_out before 7.23. */
  initOut22: 24,
  initIn: 16,
  forgetIn: 8,
  forgetOne: 16,
  batchForgetIn: 8,
  getattrIn: 16,
  setattrIn: 88,
  mknodIn: 16,
  mkdirIn: 8,
  renameIn: 8,
  rename2In: 16,
  linkIn: 8,
  openIn: 8,
  createIn: 16,
  releaseIn: 24,
  flushIn: 24,
  readIn: 40,
  writeIn: 40,
  fsyncIn: 16,
  setxattrIn: 8,
  setxattrInExt: 16,
  getxattrIn: 8,
  lkIn: 48,
  accessIn: 8,
  interruptIn: 8,
  fallocateIn: 32,
  lseekIn: 24,
  dirent: 24,
} as const;

/** fuse_in_header field offsets. */
export const InHeader = { len: 0, opcode: 4, unique: 8, nodeid: 16, uid: 24, gid: 28, pid: 32, totalExtlen: 36 } as const;

/** FUSE_GETATTR_FH, FUSE_FSYNC_FDATASYNC, FUSE_LK_FLOCK. */
export const GETATTR_FH = 1;
/** fsync_flags: data only. */
export const FSYNC_FDATASYNC = 1;
/** lk_flags: a flock(2) lock, not a POSIX one. */
export const LK_FLOCK = 1;

/** OFFSET_MAX, the end of a lock that runs to the end of any file. */
export const OFFSET_MAX = 0x7fffffffffffffffn;

/** The longest name (NAME_MAX) and symlink target (PATH_MAX - 1) the server accepts. */
export const NAME_MAX = 255;
/** The longest symlink target, without its NUL (PATH_MAX 4096 holds the NUL). */
export const TARGET_MAX = 4095;
/** The largest xattr value (XATTR_SIZE_MAX) and list (XATTR_LIST_MAX). */
export const XATTR_SIZE_MAX = 65536;
