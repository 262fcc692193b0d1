/**
 * The file system provider interface: what the FUSE server ({@link FuseServer}, behind the
 * virtio-fs device) asks of a file system. Plug your own store in here: an in-memory tree
 * ({@link MemoryFs}), a host directory (`HostDirFs` in `virtio-ts/node`), IndexedDB, OPFS, a
 * remote object store, a zip file.
 *
 * The shape follows the FUSE low-level protocol (Linux include/uapi/linux/fuse.h), minus the
 * wire format and the kernel's bookkeeping, which the server does:
 *
 * - **Nodes are numbers.** A provider names each file, directory or link by an inode number
 *   (`ino`, a positive safe integer; the root is {@link ROOT_INO}, 1). The number is what the
 *   guest's kernel uses as the FUSE nodeid, so it must name the same node for as long as the
 *   kernel holds it: from the reply that handed it out (lookup, create, mkdir, mknod, symlink,
 *   link, readdirplus) until {@link FsProvider.forget}. The server counts the kernel's
 *   references (FUSE's nlookup) and calls `forget` once, when the last one goes; an unlinked
 *   node may be dropped only when it has no links, no open handles and has been forgotten.
 * - **Errors are errno numbers.** Throw (or reject with) an {@link FsError} whose `errno` is a
 *   Linux errno ({@link Errno}): the guest's system call fails with it. Anything else thrown is
 *   a provider bug: the server answers EIO and reports it (the guest never sees a stack).
 * - **Sync or async.** Every operation may return its result or a Promise of it. A synchronous
 *   answer is replied to at once; a Promise lets a store wait (IndexedDB, network) while other
 *   requests go on: the server never blocks the queue on one request. Data handed to the
 *   provider (`write`'s `data`, `setxattr`'s `value`) is valid until the call returns or its
 *   Promise settles: copy what you keep.
 * - **Names are strings.** Entry names arrive decoded from UTF-8 (a name that is not UTF-8 is
 *   refused by the server with EILSEQ), never empty, never `.` or `..`, never containing `/`
 *   or NUL, at most 255 bytes: the server checks all of that before the provider is called.
 * - **Permissions.** As virtio-fs mounts are, the guest kernel checks permissions itself
 *   (`default_permissions`); the request's {@link FsContext} (uid, gid, pid of the caller)
 *   is given for ownership of new files. A provider may refuse anything with EACCES or EPERM.
 * - **Optional operations.** Everything but `lookup`, `getattr` and `readdir` is optional: a
 *   missing one answers ENOSYS (the kernel then stops asking for most: xattrs, fallocate, lseek,
 *   locks); a read-only store leaves out the writing ones or throws EROFS.
 * - **Errors without a throw (optional).** `lookupErrno` and `getxattrErrno`, when a provider
 *   has them, are called instead of `lookup` and `getxattr` and may return the errno of a
 *   failure (a positive number) rather than throw it: the hot misses of a real guest (a name
 *   that is not there, a `security.capability` that is not set) then cost no exception.
 *
 * Browser-safe: no Node import.
 */
import { VirtioTsError } from '../errors.js';
import { Errno, errnoName } from './errno.js';

/** The root directory's inode number (FUSE_ROOT_ID). */
export const ROOT_INO = 1;

/** File type bits of `mode` (S_IFMT and the types, octal as in stat(2)). */
export const S_IFMT = 0o170000;
/** A directory. */
export const S_IFDIR = 0o040000;
/** A regular file. */
export const S_IFREG = 0o100000;
/** A symbolic link. */
export const S_IFLNK = 0o120000;
/** A character device. */
export const S_IFCHR = 0o020000;
/** A block device. */
export const S_IFBLK = 0o060000;
/** A FIFO. */
export const S_IFIFO = 0o010000;
/** A unix socket. */
export const S_IFSOCK = 0o140000;

/** Kinds of {@link FsError}: `errno` carries the detail. */
export type FsErrorKind = 'errno';

/**
 * The one error of the file system layer: a Linux errno the guest's system call fails with.
 * `new FsError(Errno.ENOENT)`; `err.errno` is the number, `err.kind` is always `errno`.
 */
export class FsError extends VirtioTsError<FsErrorKind> {
  /** The Linux errno number (positive: ENOENT is 2). */
  readonly errno: number;

  /** An error with this Linux errno (positive), and an optional message for logs. */
  constructor(errno: number, message?: string, options?: { cause?: unknown }) {
    super('errno', message ?? errnoName(errno), options);
    this.errno = errno;
  }

  /**
   * An error with this errno and no stack trace: for the answers a file system gives all the
   * time (a LOOKUP of a name that is not there), where capturing a stack would cost more than
   * the system call. The FUSE server reads only `errno`.
   */
  static quick(errno: number): FsError {
    // V8's knob (Node, Chromium); elsewhere setting it is harmless.
    const E = Error as unknown as { stackTraceLimit?: number };
    const limit = E.stackTraceLimit;
    E.stackTraceLimit = 0;
    try {
      return new FsError(errno);
    } finally {
      E.stackTraceLimit = limit;
    }
  }
}

/** A value, or a Promise of it: every provider operation may be synchronous or not. */
export type MaybePromise<T> = T | Promise<T>;

/** Who asks: the calling process in the guest (fuse_in_header's uid, gid, pid). */
export interface FsContext {
  /** The caller's fsuid. */
  readonly uid: number;
  /** The caller's fsgid. */
  readonly gid: number;
  /** The caller's thread group id (0 for requests the kernel makes itself). */
  readonly pid: number;
}

/**
 * A node's attributes (struct fuse_attr, stat(2)). Times are seconds since the epoch plus
 * nanoseconds (0 to 999999999).
 */
export interface FileAttr {
  /** Inode number: the node's name for the server and the guest (see the interface's doc). */
  ino: number;
  /** Bytes (a symlink: the length of its target). */
  size: number;
  /** 512-byte blocks allocated (sparse files have fewer than size / 512). */
  blocks: number;
  atime: number;
  atimeNsec: number;
  mtime: number;
  mtimeNsec: number;
  ctime: number;
  ctimeNsec: number;
  /** Type and permission bits (S_IFREG | 0o644, ...). */
  mode: number;
  /** Hard links. */
  nlink: number;
  uid: number;
  gid: number;
  /** Device number of a device node (0 otherwise). */
  rdev: number;
  /** Preferred I/O size (0: the server's default, 4096). */
  blksize: number;
}

/** A time to set: seconds and nanoseconds, or the current time. */
export type SetTime = { sec: number; nsec: number } | 'now';

/** What a setattr changes: only the fields present (FATTR_* of fuse.h). */
export interface SetAttr {
  mode?: number;
  uid?: number;
  gid?: number;
  /** Truncate or extend to this many bytes. */
  size?: number;
  atime?: SetTime;
  mtime?: SetTime;
  /** Set ctime (FATTR_CTIME; otherwise a provider updates it as any change does). */
  ctime?: { sec: number; nsec: number };
  /** The kernel asks to clear set-user-ID / set-group-ID bits (FATTR_KILL_SUIDGID). */
  killSuidgid?: boolean;
}

/** An opened file or directory. */
export interface OpenResult {
  /** The provider's handle (0 when it keeps none); given back in read, write, release, ... */
  fh: number;
  /** Bypass the guest's page cache for this file (FOPEN_DIRECT_IO). */
  directIo?: boolean;
  /** Keep the guest's cached pages of this file (FOPEN_KEEP_CACHE): nobody else changed it. */
  keepCache?: boolean;
  /**
   * The provider's `flush` has nothing to do for this handle but drop POSIX locks: its writes
   * are done when WRITE is answered, so close(2) has no error left to report. When the session
   * has no remote POSIX locks either (FuseServerOptions.posixLocks false, or a provider without
   * getlk/setlk), the server answers with FOPEN_NOFLUSH and Linux (5.16 and later) sends no FLUSH
   * when a descriptor of it is closed: one request fewer per close(2). With remote locks the
   * server ignores it (a FLUSH is how the kernel drops the closing process's locks).
   */
  noFlush?: boolean;
}

/** What create returns: the new node and its open handle. */
export interface CreateResult extends OpenResult {
  attr: FileAttr;
}

/** One directory entry, as readdir gives it. */
export interface DirEntry {
  /** The entry's name (`.` and `..` included, as in a real directory). */
  name: string;
  /** Its inode number (for `.` and `..` any number will do: the server does not look them up). */
  ino: number;
  /** Its type: the S_IFMT bits of its mode (S_IFREG, S_IFDIR, ...). */
  type: number;
  /**
   * The cookie of the NEXT entry: readdir(..., offset = this) continues after this entry. Any
   * positive safe integer, stable while the directory is open (entries added or removed meanwhile
   * may or may not be seen, as POSIX allows).
   */
  off: number;
}

/** statfs(2) of the file system (struct fuse_kstatfs). */
export interface StatFs {
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  /** Block size (f_bsize). */
  bsize: number;
  /** Longest name (255). */
  namelen: number;
  /** Fragment size (f_frsize). */
  frsize: number;
}

/** A POSIX byte-range lock (struct fuse_file_lock): F_RDLCK 0, F_WRLCK 1, F_UNLCK 2. */
export interface FileLock {
  /** First byte. */
  start: number;
  /** Last byte, inclusive; `Infinity` to the end of any file (OFFSET_MAX on the wire). */
  end: number;
  /** F_RDLCK (0), F_WRLCK (1) or F_UNLCK (2). */
  type: number;
  /** The owning process (for F_GETLK's answer). */
  pid: number;
}

/** POSIX lock types (fcntl.h). */
export const LockType = { F_RDLCK: 0, F_WRLCK: 1, F_UNLCK: 2 } as const;

/** lseek whence values the kernel passes on (SEEK_DATA, SEEK_HOLE; the others it answers itself). */
export const Whence = { SEEK_SET: 0, SEEK_CUR: 1, SEEK_END: 2, SEEK_DATA: 3, SEEK_HOLE: 4 } as const;

/** rename2 flags (RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT of linux/fs.h). */
export const RenameFlags = { NOREPLACE: 1, EXCHANGE: 2, WHITEOUT: 4 } as const;

/** fallocate modes (linux/falloc.h). */
export const FallocMode = { KEEP_SIZE: 1, PUNCH_HOLE: 2, ZERO_RANGE: 0x10 } as const;

/** setxattr flags (XATTR_CREATE, XATTR_REPLACE). */
export const XattrFlags = { CREATE: 1, REPLACE: 2 } as const;

/**
 * A file system the FUSE server serves. See the module doc above for the rules every method
 * follows (inode numbers, errors as {@link FsError}, sync or async results, names).
 *
 * Open flags (`flags`) are Linux's O_* numbers as the guest passed them (O_ACCMODE 3,
 * O_TRUNC 0o1000, O_APPEND 0o2000, ...), already stripped by the kernel of O_CREAT / O_EXCL
 * where it handles them.
 */
export interface FsProvider {
  /** True: the server refuses every change with EROFS before calling the provider. */
  readonly readOnly?: boolean;
  /**
   * True: the provider removes a file's `security.capability` on every write and chown, as
   * Linux file systems do (HostDirFs: the host kernel does; MemoryFs: itself). The server then
   * negotiates FUSE_HANDLE_KILLPRIV_V2, so the guest stops asking GETXATTR(security.capability)
   * before each write; the set-user-ID / set-group-ID bits the kernel asks to clear are cleared
   * by the server through getattr and setattr({@link SetAttr.killSuidgid}).
   */
  readonly killsPriv?: boolean;

  /** The entry `name` of directory `parent`: its attributes (ENOENT when there is none). */
  lookup(parent: number, name: string, ctx: FsContext): MaybePromise<FileAttr>;
  /**
   * Optional, for speed: {@link lookup} that may RETURN its failure as a Linux errno (a
   * positive integer: ENOENT is 2) instead of throwing it. When present the server calls it
   * instead of `lookup`; it must answer exactly as `lookup` does (a throw is still served; a
   * wrapper or subclass that overrides `lookup` of a provider that has this must override it
   * too, or the server never sees the override: HostDirFs has both). A
   * lookup of a missing name is the commonest failure a guest causes (every create and every
   * `stat` of a new name starts with one), and a thrown error costs V8 far more than the
   * system call behind it (a message object per throw under the caller's TryCatch).
   */
  lookupErrno?(parent: number, name: string, ctx: FsContext): MaybePromise<FileAttr | number>;
  /** The kernel holds no more references to `ino` (it will not use the number again unless a later reply hands it out). */
  forget?(ino: number): void;
  /** Attributes of `ino` (`fh`: the open handle when the kernel has one, else null). */
  getattr(ino: number, fh: number | null, ctx: FsContext): MaybePromise<FileAttr>;
  /** Changes attributes (truncate, chmod, chown, utimes); returns the new ones. */
  setattr?(ino: number, fh: number | null, changes: SetAttr, ctx: FsContext): MaybePromise<FileAttr>;

  /** The target of symlink `ino`. */
  readlink?(ino: number, ctx: FsContext): MaybePromise<string>;
  /** A device node, FIFO, socket or (without a create) regular file. */
  mknod?(parent: number, name: string, mode: number, rdev: number, umask: number, ctx: FsContext): MaybePromise<FileAttr>;
  /** A new directory `name` in `parent` (mode & ~umask). */
  mkdir?(parent: number, name: string, mode: number, umask: number, ctx: FsContext): MaybePromise<FileAttr>;
  /** Removes the name `name` of a non-directory (EISDIR for a directory). */
  unlink?(parent: number, name: string, ctx: FsContext): MaybePromise<void>;
  /** Removes the empty directory `name` (ENOTEMPTY, ENOTDIR). */
  rmdir?(parent: number, name: string, ctx: FsContext): MaybePromise<void>;
  /** A new symbolic link `name` in `parent` to `target` (stored as given, never resolved by the server). */
  symlink?(parent: number, name: string, target: string, ctx: FsContext): MaybePromise<FileAttr>;
  /** rename(2) and renameat2(2): `flags` is 0 or {@link RenameFlags} (EINVAL for ones the provider cannot do). */
  rename?(parent: number, name: string, newParent: number, newName: string, flags: number, ctx: FsContext): MaybePromise<void>;
  /** A hard link to `ino` named `newName` in `newParent`; returns ino's attributes (nlink grown). */
  link?(ino: number, newParent: number, newName: string, ctx: FsContext): MaybePromise<FileAttr>;

  /** Opens a file (flags: O_*); the returned fh comes back in read/write/flush/fsync/release. */
  open?(ino: number, flags: number, ctx: FsContext): MaybePromise<OpenResult>;
  /** Creates and opens a regular file (EEXIST if `name` exists: the kernel sends O_EXCL semantics itself). */
  create?(parent: number, name: string, mode: number, umask: number, flags: number, ctx: FsContext): MaybePromise<CreateResult>;
  /** Up to `size` bytes at `offset` (fewer only at the end of the file). The array may be a view the provider keeps: the server copies it before the call's next turn. */
  read?(ino: number, fh: number, offset: number, size: number, ctx: FsContext): MaybePromise<Uint8Array>;
  /** Writes `data` at `offset` (flags: the open flags, O_APPEND among them is the kernel's business); returns the bytes written. */
  write?(ino: number, fh: number, offset: number, data: Uint8Array, ctx: FsContext): MaybePromise<number>;
  /** close(2) of one file descriptor (a handle may see several). */
  flush?(ino: number, fh: number, lockOwner: bigint, ctx: FsContext): MaybePromise<void>;
  /** fsync(2) / fdatasync(2) (`datasync`): make the data durable. */
  fsync?(ino: number, fh: number, datasync: boolean, ctx: FsContext): MaybePromise<void>;
  /** The last close of the handle. */
  release?(ino: number, fh: number, ctx: FsContext): MaybePromise<void>;

  /** Opens a directory (optional: without it fh is 0). */
  opendir?(ino: number, flags: number, ctx: FsContext): MaybePromise<OpenResult>;
  /**
   * Entries of directory `ino` after cookie `offset` (0: from the start), `.` and `..`
   * included, in a stable order; at most `limit` are needed (more are ignored). An empty
   * array: the end.
   */
  readdir(ino: number, fh: number, offset: number, limit: number, ctx: FsContext): MaybePromise<readonly DirEntry[]>;
  /** The last close of a directory handle. */
  releasedir?(ino: number, fh: number, ctx: FsContext): MaybePromise<void>;
  /** fsync(2) of a directory. */
  fsyncdir?(ino: number, fh: number, datasync: boolean, ctx: FsContext): MaybePromise<void>;

  /** statfs(2). */
  statfs?(ino: number, ctx: FsContext): MaybePromise<StatFs>;

  /** The value of xattr `name` (ENODATA when it has none). */
  getxattr?(ino: number, name: string, ctx: FsContext): MaybePromise<Uint8Array>;
  /**
   * Optional, for speed: {@link getxattr} that may RETURN its failure as a Linux errno (a
   * positive integer) instead of throwing it, as {@link lookupErrno} does for lookup. A guest
   * kernel asks GETXATTR(security.capability) before the first write to each file it did not
   * create with HANDLE_KILLPRIV_V2 agreed, and most answers are ENODATA.
   */
  getxattrErrno?(ino: number, name: string, ctx: FsContext): MaybePromise<Uint8Array | number>;
  /** Sets xattr `name` (`flags`: {@link XattrFlags}: EEXIST / ENODATA as setxattr(2)). */
  setxattr?(ino: number, name: string, value: Uint8Array, flags: number, ctx: FsContext): MaybePromise<void>;
  /** The names of the xattrs of `ino`. */
  listxattr?(ino: number, ctx: FsContext): MaybePromise<readonly string[]>;
  /** Removes xattr `name` (ENODATA when it has none). */
  removexattr?(ino: number, name: string, ctx: FsContext): MaybePromise<void>;

  /** fallocate(2): `mode` 0 or {@link FallocMode} bits (EOPNOTSUPP for ones it cannot do). */
  fallocate?(ino: number, fh: number, offset: number, length: number, mode: number, ctx: FsContext): MaybePromise<void>;
  /** lseek(2) with SEEK_DATA or SEEK_HOLE (ENXIO past the end of the data). */
  lseek?(ino: number, fh: number, offset: number, whence: number, ctx: FsContext): MaybePromise<number>;

  /**
   * F_GETLK: the first lock that would conflict with `lock` held by another owner, or a lock of
   * type F_UNLCK when none would. `owner` is the kernel's lock owner (one per open file table).
   */
  getlk?(ino: number, fh: number, owner: bigint, lock: FileLock, ctx: FsContext): MaybePromise<FileLock>;
  /**
   * F_SETLK / F_SETLKW (`wait`): takes, changes or (F_UNLCK) drops `owner`'s lock on the range.
   * Without `wait` a conflict is EAGAIN; with it the Promise settles when the lock is taken
   * (or EDEADLK). `signal` aborts a wait (FUSE_INTERRUPT): reject with EINTR then.
   */
  setlk?(ino: number, fh: number, owner: bigint, lock: FileLock, wait: boolean, ctx: FsContext, signal?: AbortSignal): MaybePromise<void>;
}

/** An FsError for `errno` (shorthand: `throw fsError(Errno.ENOENT)`). */
export function fsError(errno: number, message?: string): FsError {
  return new FsError(errno, message);
}

export { Errno };
