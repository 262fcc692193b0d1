/**
 * The addon's file-system calls (native/fs.c): one name resolved beneath a held directory fd,
 * never following a symlink, and operations on an inode through its O_PATH fd. What the
 * host-directory virtio-fs provider (src/node/fs/host-dir.ts) needs that Node's fs lacks.
 * Every call is synchronous; errors are JS Errors whose `code` is the errno name.
 */

/** The file-system half of {@link NativeAddon}: thin wrappers over the *at() system calls. */
export interface NativeFs {
  /**
   * openat2(dirfd, name, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS), or
   * openat(O_NOFOLLOW) where the kernel has no openat2; O_NOFOLLOW | O_CLOEXEC always added.
   * `name` is one component: with '/', empty or over 255 bytes it is EINVAL.
   */
  fsOpenat(dirfd: number, name: string, flags: number, mode: number): number;
  /** A new fd for the inode of (O_PATH) `fd` through its /proc/self/fd magic link (a symlink: ELOOP). */
  fsReopen(fd: number, flags: number): number;
  /**
   * fstatat(AT_SYMLINK_NOFOLLOW; name "" = `dirfd` itself) into `out`: dev, ino high 32 bits,
   * ino low 32 bits, mode, nlink, uid, gid, rdev, size, blksize, blocks, atime s, ns, mtime s,
   * ns, ctime s, ns.
   */
  fsStat(dirfd: number, name: string, out: Float64Array): void;
  /**
   * FUSE LOOKUP in one call: the O_PATH fd of `name` beneath `dirfd` (as
   * `fsOpenat(dirfd, name, O_PATH, 0)`) with its attributes in `out` (as {@link fsStat}), or
   * -errno (a name that is not there is an answer, not a thrown Error). Bad arguments throw.
   */
  fsLookup(dirfd: number, name: string, out: Float64Array): number;
  /**
   * FUSE CREATE in one call: `name` opened beneath `dirfd` with `flags | O_CREAT` and `mode`
   * (as {@link fsOpenat}), the new node's O_PATH fd reopened from that open file (as
   * {@link fsReopen}) and its attributes in `out[0..16]` (as {@link fsStat}), the O_PATH fd
   * in `out[17]`. Returns the open fd, or -errno with nothing left open. Bad arguments throw.
   */
  fsCreate(dirfd: number, name: string, flags: number, mode: number, out: Float64Array): number;
  /**
   * fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW) of one name beneath `dirfd` into `out` (as
   * {@link fsStat}), nothing opened: 0, or -errno (`..`: -EXDEV). Bad arguments throw. Tells
   * which inode a name is, so a LOOKUP of one already held costs one system call.
   */
  fsStatAt(dirfd: number, name: string, out: Float64Array): number;
  /** fstat of the inode of (O_PATH) `fd` into `out` (as {@link fsStat}): 0, or -errno. */
  fsFstat(fd: number, out: Float64Array): number;
  /** pwrite of all of `data` at `offset` (repeated after a short write; an O_APPEND fd appends): the bytes written. */
  fsPwrite(fd: number, data: Uint8Array, offset: number): number;
  fsMkdirat(dirfd: number, name: string, mode: number): void;
  /** `mode` carries the file type (S_IFIFO, S_IFSOCK, S_IFREG, ...). */
  fsMknodat(dirfd: number, name: string, mode: number, rdev: number): void;
  /** The target is stored as given, never resolved. */
  fsSymlinkat(target: string, dirfd: number, name: string): void;
  /** flags: AT_REMOVEDIR (0x200) removes a directory. */
  fsUnlinkat(dirfd: number, name: string, flags: number): void;
  /** flags: RENAME_NOREPLACE 1, RENAME_EXCHANGE 2, RENAME_WHITEOUT 4 (0: plain renameat). */
  fsRenameat2(olddirfd: number, oldname: string, newdirfd: number, newname: string, flags: number): void;
  /** A new name in `newdirfd` for the inode of (O_PATH) `fd`. */
  fsLinkat(fd: number, newdirfd: number, newname: string): void;
  /** The target of the symlink whose O_PATH fd this is. */
  fsReadlink(fd: number): string;
  /** chmod of the inode (a symlink: EOPNOTSUPP). */
  fsChmod(fd: number, mode: number): void;
  /** chown of the inode itself (never a symlink's target); -1 leaves one unchanged. */
  fsChown(fd: number, uid: number, gid: number): void;
  /** utimensat of the inode; nsec may be UTIME_NOW ((1 << 30) - 1) or UTIME_OMIT ((1 << 30) - 2). */
  fsUtimens(fd: number, atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number): void;
  /** truncate(2) of the inode (a symlink or directory: EINVAL / EISDIR). */
  fsTruncate(fd: number, size: number): void;
  /** fstatfs into `out`: blocks, bfree, bavail, files, ffree, bsize, namelen, frsize. */
  fsStatfs(fd: number, out: Float64Array): void;
  /** The value's size; its bytes into `into` (null: the size only; too small: ERANGE). */
  fsGetxattr(fd: number, name: string, into: Uint8Array | null): number;
  /** Bytes of the NUL-separated name list (into null: the size only). */
  fsListxattr(fd: number, into: Uint8Array | null): number;
  /** flags: XATTR_CREATE 1, XATTR_REPLACE 2. */
  fsSetxattr(fd: number, name: string, value: Uint8Array, flags: number): void;
  fsRemovexattr(fd: number, name: string): void;
  /** fallocate(2) on an fd open for writing. */
  fsFallocate(fd: number, mode: number, offset: number, length: number): void;
  /** lseek(2): the new offset (SEEK_DATA 3, SEEK_HOLE 4 included). */
  fsLseek(fd: number, offset: number, whence: number): number;
  /**
   * Up to `length` bytes at `offset` into `into` from the page cache only (preadv2 RWF_NOWAIT,
   * repeated after a short read until the length is read or a read says 0): the bytes read
   * (fewer only at the end of the file), or -1 - n when the next read would wait for the disk
   * after n bytes (or the file cannot say: EOPNOTSUPP, as tmpfs answers). Other errors throw.
   * `plain` true: plain preads without RWF_NOWAIT (for files known to be in memory: {@link fsMemoryFs}).
   */
  fsPreadNowait(fd: number, into: Uint8Array, length: number, offset: number, plain?: boolean): number;
  /**
   * Whether the file system of `fd` keeps its files in memory (tmpfs, ramfs: fstatfs f_type):
   * reads there do not wait for a disk, though their preadv2 refuses RWF_NOWAIT.
   */
  fsMemoryFs(fd: number): boolean;
  /** getdents64 into `into`: bytes of linux_dirent64 records, 0 at the end. */
  fsGetdents(fd: number, into: Uint8Array): number;
  /**
   * Open-file-description locks: cmd F_OFD_GETLK 36 or F_OFD_SETLK 37 (never waits), type
   * F_RDLCK 0 / F_WRLCK 1 / F_UNLCK 2, length 0 = to the end. `out`: type, start, length, pid.
   */
  fsLock(fd: number, cmd: number, type: number, start: number, length: number, pid: number, out: Float64Array): void;
}
