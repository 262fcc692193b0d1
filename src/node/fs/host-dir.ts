/**
 * A host directory as a virtio-fs file system ({@link FsProvider}), confined to its root.
 *
 * The safety model (README "Sharing a host directory"):
 * - **One name at a time, beneath a held directory fd, never following a symlink.** Each node
 *   the guest knows holds an O_PATH fd of its inode (as QEMU's virtiofsd does); a lookup opens
 *   ONE name relative to its parent's fd with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS |
 *   RESOLVE_NO_SYMLINKS) (openat(O_NOFOLLOW) on kernels before 5.6), through the addon
 *   (native/fs.c). No path string is ever built or walked: `..`, a name with `/`, an absolute
 *   or dangling symlink, a symlink swapped in for a directory between two lookups — none can
 *   take a lookup out of the tree, because the only thing resolved is one component of a
 *   directory already inside it, and a symlink found there is the symlink itself (an inode of
 *   type S_IFLNK: readlink gives its text, which the GUEST resolves in its own namespace; a
 *   lookup beneath it is ENOTDIR; opening it is refused).
 * - **Operations on an inode go through its fd**: fstatat/fchownat/utimensat(AT_EMPTY_PATH |
 *   AT_SYMLINK_NOFOLLOW), or /proc/self/fd/N, a magic link that lands on the inode itself (a
 *   symlink's own inode: reopening it is ELOOP, its xattrs are its own, chmod is EOPNOTSUPP).
 *   Creating (O_CREAT | O_NOFOLLOW, mkdirat, mknodat, symlinkat, linkat) and removing
 *   (unlinkat, renameat2) name one entry of a held directory fd.
 * - **Only regular files and directories are opened.** A FIFO would block the process on open;
 *   a device node would be the host's device: OPEN of anything else is EPERM, and mknod of a
 *   character or block device is EPERM (FIFOs and sockets may be created, never opened here:
 *   the guest kernel handles them itself).
 * - **Extended attributes**: only the `user.` namespace. `security.capability` or `trusted.`
 *   set from the guest would give a file powers on the HOST; reading others is ENODATA and
 *   listing shows `user.` names only.
 * - **Read-only** ({@link HostDirFsOptions.readOnly}): every change, and every open for writing
 *   or truncation, is EROFS before anything is asked of the host.
 *
 * Inode numbers: a node on the shared root's file system keeps its host inode number (what
 * `ls -i` shows on the host), so it is stable across forget and lookup again, and two names of a
 * hard-linked file have one number; the root is 1 (FUSE's root id); a node on another file system
 * mounted under the root, or whose host number is 1 or 2^52 or more, gets a number from a counter
 * at 2^52. Nodes are keyed by (st_dev, st_ino): a name found again while its node is held gives
 * the same number. A held O_PATH fd keeps its inode alive, so the host cannot reuse the number
 * while the guest uses it.
 *
 * What is outside this model (as for virtiofsd): a HOST process that moves a directory the guest
 * holds to outside the shared root (the held fd follows it), host-created hard links to files
 * outside, and set-user-ID files created by guest root (mount the host directory nosuid if host
 * users must not run what the guest writes).
 *
 * I/O: reads try preadv2(RWF_NOWAIT) first (page-cache hits are answered at once, into a scratch
 * buffer) and go to libuv's thread pool when they would wait for the disk; fsync and fdatasync
 * run on the thread pool; everything else is a synchronous system call on the event loop (as
 * fast as the host's page cache: metadata calls do not wait for the disk on a local file system).
 * POSIX locks are open-file-description locks (F_OFD_SETLK), one open file per (inode, lock
 * owner); a waiting F_SETLKW retries with a growing interval until it gets the lock or the
 * request is interrupted.
 *
 * Node only (Linux): needs the native addon.
 */
import { fdatasync, fdatasyncSync, fsync, fsyncSync, ftruncateSync, openSync, read as readAsync, constants as C } from 'node:fs';
import { native, type NativeAddon } from '../../native/index.js';
import { Errno, errnoFromName } from '../../fs/errno.js';
import {
  FsError,
  LockType,
  ROOT_INO,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
  Whence,
  type CreateResult,
  type DirEntry,
  type FileAttr,
  type FileLock,
  type FsContext,
  type FsProvider,
  type OpenResult,
  type SetAttr,
  type StatFs,
} from '../../fs/vfs.js';

/** Options of {@link HostDirFs.open}. */
export interface HostDirFsOptions {
  /** Refuse every change with EROFS (and opening for writing). Default false. */
  readOnly?: boolean;
  /**
   * Give new files, directories and links the caller's uid and gid (FsContext) when this
   * process runs as root; otherwise they belong to this process, as files it creates always
   * do. Default true.
   */
  ownerFromCaller?: boolean;
  /**
   * Open every file with FOPEN_DIRECT_IO: the guest keeps no page cache of file data, every
   * read and write comes here at the size the application asked (QEMU virtiofsd's
   * `-o cache=none`). Coherent with changes made on the host at once; shared writable mmap in
   * the guest is then refused (ENODEV). Default false: the guest caches file data.
   */
  directIo?: boolean;
}

// Linux open flags, the same on x86_64 and arm64 (asm-generic/fcntl.h): O_PATH is not in
// Node's fs.constants; the ones Node has are the host's.
const O_ACCMODE = 3;
const O_PATH = 0o10000000;
const O_CREAT = 0o100;
const O_EXCL = 0o200;
const O_TRUNC = 0o1000;
const O_APPEND = 0o2000;
const O_NONBLOCK = 0o4000;
const O_DSYNC = 0o10000;
const O_SYNC = 0o4010000;
const O_NOATIME = 0o1000000;
/** Guest open flags passed on to the host's open (the rest: O_DIRECT, O_PATH, O_TMPFILE, ... are dropped). */
const OPEN_FLAGS = O_ACCMODE | O_TRUNC | O_APPEND | O_NONBLOCK | O_DSYNC | O_SYNC | O_NOATIME;
const AT_REMOVEDIR = 0x200;
const F_OFD_GETLK = 36;
const F_OFD_SETLK = 37;
const UTIME_NOW = (1 << 30) - 1;
const UTIME_OMIT = (1 << 30) - 2;
const XATTR_USER = 'user.';
/** Counter-allocated inode numbers start here; host numbers below it are used as they are. */
const INO_COUNTER_BASE = 2 ** 52;
/** ESTALE: a node or handle number the provider does not know (a forgotten or invented one). */
const ESTALE = 116;
/** Errno names Node and the addon report that src/fs/errno.ts does not list. */
const MORE_ERRNO: Readonly<Record<string, number>> = { ETXTBSY: 26, EDQUOT: 122, ESTALE: 116, ENOTSUP: 95, EWOULDBLOCK: 11, EOVERFLOW: 75, ENOTSOCK: 88 };

/** One node the guest knows: its O_PATH fd, its type and where it is in the maps. */
interface Node {
  readonly ino: number;
  readonly fd: number;
  /** Its key in byKey (see keyOf). */
  readonly key: number | string;
  readonly type: number;
  /** Open-file-description lock fds, one per lock owner (see setlk). */
  locks: Map<bigint, number> | null;
}

/** An open file or directory. */
interface Handle {
  readonly fd: number;
  readonly node: Node;
  /** The open flags' access mode (O_RDONLY 0, O_WRONLY 1, O_RDWR 2). */
  readonly access: number;
  /** Directories: entries read but not yet returned, how many were returned, the last batch returned. */
  dir: { pending: DirEntry[]; index: number; eof: boolean; last: DirEntry[] } | null;
}

/** A Linux errno for an error from Node's fs or the addon (EIO for one with no code). */
function errnoOf(err: unknown): number {
  if (err instanceof FsError) return err.errno;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return Errno.EIO;
  return errnoFromName(code) ?? MORE_ERRNO[code] ?? Errno.EIO;
}

/** Runs a system call; its error becomes the FsError the guest sees. */
function sys<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof FsError) throw err;
    throw new FsError(errnoOf(err), err instanceof Error ? err.message : undefined, { cause: err });
  }
}

/**
 * A name the provider will resolve: one component, not `.` or `..`, no `/` or NUL, at most 255
 * UTF-8 bytes. The FUSE server checks the same before calling; this is the provider's own
 * guard for direct callers.
 */
function checkName(name: string): void {
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) throw new FsError(Errno.EINVAL, `bad name ${JSON.stringify(name)}`);
  if (Buffer.byteLength(name) > 255) throw new FsError(Errno.ENAMETOOLONG);
}

/**
 * A host directory served as a virtio-fs file system, confined to the directory (see the module
 * doc for the safety model). `HostDirFs.open(dir)`, then give it to the FUSE server; `close()`
 * releases every fd it holds.
 */
export class HostDirFs implements FsProvider {
  /** True: every change is EROFS. */
  readonly readOnly: boolean;
  /** The host kernel drops security.capability on each pwrite and fchown of ours (FsProvider.killsPriv). */
  readonly killsPriv = true;
  private readonly n: NativeAddon;
  private readonly nodes = new Map<number, Node>();
  /** Held nodes by host inode (keyOf): one Map lookup tells whether a name's inode is held. */
  private readonly byKey = new Map<number | string, Node>();
  private readonly handles = new Map<number, Handle>();
  private nextFh = 1;
  private nextIno = INO_COUNTER_BASE;
  private readonly root: Node;
  private readonly rootDev: number;
  private readonly rootHostIno: number;
  private readonly chownNew: boolean;
  private readonly directIo: boolean;
  private closed = false;
  /** fstatat results, reused (17 fields: see NativeFs.fsStat; the 18th: fsCreate's O_PATH fd). */
  private readonly st = new Float64Array(18);
  /** A second stat buffer (the parent's, while this.st holds the child's). */
  private readonly sfsStat = new Float64Array(17);
  private readonly sfs = new Float64Array(8);
  private readonly lk = new Float64Array(4);
  /** Reads answered from the page cache go here (the server copies before its next turn). */
  private scratch = new Uint8Array(1 << 20);
  private readonly dents = new Uint8Array(64 * 1024);
  /** Reads answered from the page cache on the event loop / sent to the thread pool. */
  readonly stats = { cachedReads: 0, poolReads: 0 };
  /**
   * Whether the root's file system keeps its files in memory (tmpfs, ramfs): there preadv2
   * refuses RWF_NOWAIT (EOPNOTSUPP) although no read waits for a disk, and without this every
   * READ went to the thread pool (a hand-off to a pool thread and back per READ: bench:fs's
   * cat on /dev/shm took 1.4x virtiofsd's time, which reads synchronously). Reads of nodes on
   * the root's file system then use plain preads on the event loop, as virtiofsd does; nodes
   * on other file systems below the root keep the RWF_NOWAIT path.
   */
  private readonly rootInMemory: boolean;

  private constructor(n: NativeAddon, rootFd: number, options: HostDirFsOptions) {
    this.n = n;
    this.readOnly = options.readOnly ?? false;
    this.chownNew = (options.ownerFromCaller ?? true) && process.getuid?.() === 0;
    this.directIo = options.directIo ?? false;
    n.fsStat(rootFd, '', this.st);
    if ((this.st[3] & S_IFMT) !== S_IFDIR) throw new FsError(Errno.ENOTDIR, 'the shared root is not a directory');
    this.rootDev = this.st[0];
    this.rootInMemory = n.fsMemoryFs(rootFd);
    this.rootHostIno = this.st[1] * 2 ** 32 + this.st[2];
    this.root = { ino: ROOT_INO, fd: rootFd, key: this.keyOf(this.st), type: S_IFDIR, locks: null };
    this.nodes.set(ROOT_INO, this.root);
    this.byKey.set(this.root.key, this.root);
  }

  /**
   * Opens `dir` (a directory; a symlink to one is followed here, once, by the host's own choice
   * of path) as the root of the shared tree. Throws FsError (ENOENT, ENOTDIR, EACCES) or the
   * NativeAddonError when the addon is missing.
   */
  static open(dir: string, options: HostDirFsOptions = {}): HostDirFs {
    const n = native();
    // The root is the one path resolved by name, by the host's choice; everything below it is not.
    const fd = sys(() => openSync(dir, O_PATH | C.O_DIRECTORY));
    try {
      return new HostDirFs(n, fd, options);
    } catch (err) {
      n.close(fd);
      throw err;
    }
  }

  /** Closes every fd this provider holds (nodes, handles, locks). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const h of this.handles.values()) this.closeFd(h.fd);
    this.handles.clear();
    for (const node of this.nodes.values()) {
      for (const fd of node.locks?.values() ?? []) this.closeFd(fd);
      this.closeFd(node.fd);
    }
    this.nodes.clear();
    this.byKey.clear();
  }

  /** Nodes held (the root included) and open handles: for tests and leak checks. */
  get counts(): { nodes: number; handles: number } {
    return { nodes: this.nodes.size, handles: this.handles.size };
  }

  /** close(2) through the addon, which opened the fd (Node's fs warns about fds it did not open in a worker). */
  private closeFd(fd: number): void {
    try {
      this.n.close(fd);
    } catch {
      // already closed: nothing to release
    }
  }

  // --- nodes -------------------------------------------------------------------------------

  /**
   * The key of host inode (st_dev, st_ino) in this.byKey: the inode number itself on the
   * root's file system (below 2^52: a safe integer, no string built per lookup), else
   * "dev:high:low".
   */
  private keyOf(st: Float64Array): number | string {
    if (st[0] === this.rootDev && st[1] < 0x100000) return st[1] * 2 ** 32 + st[2];
    return `${st[0]}:${st[1]}:${st[2]}`;
  }

  private node(ino: number): Node {
    const node = this.nodes.get(ino);
    if (node === undefined) throw new FsError(ESTALE, `no node ${ino}`);
    return node;
  }

  private dirNode(ino: number): Node {
    const node = this.node(ino);
    if (node.type !== S_IFDIR) throw new FsError(Errno.ENOTDIR);
    return node;
  }

  private handle(fh: number, ino: number): Handle {
    const h = this.handles.get(fh);
    if (h === undefined || h.node.ino !== ino) throw new FsError(Errno.EBADF, `no handle ${fh} of node ${ino}`);
    return h;
  }

  private writable(): void {
    if (this.readOnly) throw new FsError(Errno.EROFS);
  }

  /** The guest's number for host inode (st_dev, st_ino) of a node not yet held. */
  private inoFor(dev: number, hostIno: number): number {
    if (dev === this.rootDev) {
      if (hostIno === this.rootHostIno) return ROOT_INO;
      if (hostIno > ROOT_INO && hostIno < INO_COUNTER_BASE) return hostIno;
    }
    return this.nextIno++;
  }

  /** The attributes in this.st as a FileAttr for node `ino`. */
  private attr(ino: number): FileAttr {
    const s = this.st;
    return {
      ino,
      size: s[8],
      blocks: s[10],
      atime: s[11],
      atimeNsec: s[12],
      mtime: s[13],
      mtimeNsec: s[14],
      ctime: s[15],
      ctimeNsec: s[16],
      mode: s[3],
      nlink: s[4],
      uid: s[5],
      gid: s[6],
      rdev: s[7],
      blksize: s[9],
    };
  }

  /**
   * The node for an O_PATH fd just opened beneath a held directory: the held one when its
   * inode is known (the new fd is closed), else a new node owning the fd. Returns its attributes.
   */
  private adopt(fd: number): FileAttr {
    try {
      this.n.fsStat(fd, '', this.st);
    } catch (err) {
      this.closeFd(fd);
      throw new FsError(errnoOf(err));
    }
    return this.adoptStated(fd);
  }

  /** {@link adopt} of an fd whose attributes this.st holds. */
  private adoptStated(fd: number): FileAttr {
    const key = this.keyOf(this.st);
    const known = this.byKey.get(key);
    if (known !== undefined) {
      this.closeFd(fd);
      return this.attr(known.ino);
    }
    const ino = this.inoFor(this.st[0], this.st[1] * 2 ** 32 + this.st[2]);
    const node: Node = { ino, fd, key, type: this.st[3] & S_IFMT, locks: null };
    this.nodes.set(ino, node);
    this.byKey.set(key, node);
    return this.attr(ino);
  }

  /**
   * After creating `name` in `parent`: the caller's ownership (as root), the mode the guest
   * asked for (this process's umask may have taken bits away), and the node. `pathFd`: the new
   * inode's O_PATH fd when the caller has it, with its attributes already in this.st (fsCreate);
   * else it is opened here. Either way it is this method's from then on: closed on failure.
   */
  private created(parent: Node, name: string, mode: number, ctx: FsContext, pathFd?: number): FileAttr {
    const stated = pathFd !== undefined;
    const fd = pathFd ?? sys(() => this.n.fsOpenat(parent.fd, name, O_PATH, 0));
    let changed = false;
    try {
      if (!stated) this.n.fsStat(fd, '', this.st);
      const type = this.st[3] & S_IFMT;
      // Already the caller's (guest root creating as host root) with no set-ID bit a chown
      // would clear: the chown would change nothing but ctime, so it and the re-stat are saved.
      if (this.chownNew && !(this.st[5] === ctx.uid && this.st[6] === ctx.gid && (this.st[3] & 0o6000) === 0)) {
        // A set-group-ID directory gives its group to what is created in it (as Linux does).
        this.n.fsStat(parent.fd, '', this.sfsStat);
        const gid = (this.sfsStat[3] & 0o2000) !== 0 ? -1 : ctx.gid;
        this.n.fsChown(fd, ctx.uid, gid);
        changed = true;
      }
      if (type !== S_IFLNK && (this.st[3] & 0o777) !== (mode & 0o777)) {
        this.n.fsChmod(fd, (this.st[3] & 0o7000) | (mode & 0o7777));
        changed = true;
      }
    } catch (err) {
      this.closeFd(fd);
      throw new FsError(errnoOf(err));
    }
    // this.st still describes the inode when nothing was changed since the stat.
    return changed ? this.adopt(fd) : this.adoptStated(fd);
  }

  // --- FsProvider ----------------------------------------------------------------------------

  /** The entry `name` of directory `parent` (one component, never followed). */
  lookup(parent: number, name: string): FileAttr {
    const a = this.lookupErrno(parent, name);
    if (typeof a === 'number') throw FsError.quick(a);
    return a;
  }

  /**
   * {@link lookup} answering a missing name (or any failure of the system calls) with its
   * errno, not a throw (FsProvider.lookupErrno: the FUSE server calls this one).
   */
  lookupErrno(parent: number, name: string): FileAttr | number {
    checkName(name);
    const dir = this.dirNode(parent);
    // First which inode the name is (fstatat, no open; a missing name is -ENOENT, an error
    // without a stack): one already held answers with its attributes, its held fd stays the
    // node's. A new one is opened beneath the directory (openat2 + fstat in one native call)
    // and keyed by what the new fd is, not by the first stat (the name may have changed since).
    const r = this.n.fsStatAt(dir.fd, name, this.st);
    if (r < 0) return -r;
    const known = this.byKey.get(this.keyOf(this.st));
    if (known !== undefined) return this.attr(known.ino);
    const fd = this.n.fsLookup(dir.fd, name, this.st);
    if (fd < 0) return -fd;
    return this.adoptStated(fd);
  }

  /** Closes the node's fd: the guest holds no reference to it any more. The root stays. */
  forget(ino: number): void {
    if (ino === ROOT_INO) return;
    const node = this.nodes.get(ino);
    if (node === undefined) return;
    this.nodes.delete(ino);
    this.byKey.delete(node.key);
    for (const fd of node.locks?.values() ?? []) this.closeFd(fd);
    this.closeFd(node.fd);
  }

  /** fstat of the node's inode. */
  getattr(ino: number): FileAttr {
    const node = this.node(ino);
    const r = this.n.fsFstat(node.fd, this.st);
    if (r < 0) throw new FsError(-r);
    return this.attr(ino);
  }

  /** chmod, chown, truncate, utimes of the node's inode (never a symlink's target). */
  setattr(ino: number, fh: number | null, changes: SetAttr): FileAttr {
    this.writable();
    const node = this.node(ino);
    const h = fh !== null ? this.handles.get(fh) : undefined;
    sys(() => {
      if (changes.uid !== undefined || changes.gid !== undefined) this.n.fsChown(node.fd, changes.uid ?? -1, changes.gid ?? -1);
      if (changes.size !== undefined) {
        if (node.type === S_IFDIR) throw new FsError(Errno.EISDIR);
        if (node.type !== S_IFREG) throw new FsError(Errno.EINVAL);
        if (h !== undefined && h.node === node && h.access !== 0) ftruncateSync(h.fd, changes.size);
        else this.n.fsTruncate(node.fd, changes.size);
      }
      let mode = changes.mode;
      if (changes.killSuidgid === true) {
        this.n.fsStat(node.fd, '', this.st);
        const m = mode ?? this.st[3];
        // S_ISGID without group execute is mandatory locking, not set-group-ID: it stays.
        const kill = 0o4000 | ((m & 0o010) !== 0 ? 0o2000 : 0);
        if ((m & kill) !== 0) mode = m & ~kill;
      }
      if (mode !== undefined) this.n.fsChmod(node.fd, mode & 0o7777);
      if (changes.atime !== undefined || changes.mtime !== undefined) {
        const t = (x: SetAttr['atime']): [number, number] => (x === undefined ? [0, UTIME_OMIT] : x === 'now' ? [0, UTIME_NOW] : [x.sec, x.nsec]);
        const [as, an] = t(changes.atime);
        const [ms, mn] = t(changes.mtime);
        this.n.fsUtimens(node.fd, as, an, ms, mn);
      }
      this.n.fsStat(node.fd, '', this.st);
    });
    return this.attr(ino);
  }

  /** The symlink's own text (the guest resolves it, in its own namespace). */
  readlink(ino: number): string {
    const node = this.node(ino);
    if (node.type !== S_IFLNK) throw new FsError(Errno.EINVAL);
    return sys(() => this.n.fsReadlink(node.fd));
  }

  /** A FIFO, socket or regular file; device nodes are EPERM (they would be the host's devices). */
  mknod(parent: number, name: string, mode: number, rdev: number, umask: number, ctx: FsContext): FileAttr {
    this.writable();
    checkName(name);
    const p = this.dirNode(parent);
    const type = mode & S_IFMT;
    if (type === S_IFCHR || type === S_IFBLK) throw new FsError(Errno.EPERM, 'device nodes are not created in a shared host directory');
    if (type !== S_IFIFO && type !== S_IFSOCK && type !== S_IFREG && type !== 0) throw new FsError(Errno.EINVAL);
    const perm = mode & ~umask & 0o7777;
    sys(() => this.n.fsMknodat(p.fd, name, (type || S_IFREG) | perm, 0));
    return this.created(p, name, perm, ctx);
  }

  /** mkdirat beneath a held directory, with the mode asked for (umask applied, this process's own not). */
  mkdir(parent: number, name: string, mode: number, umask: number, ctx: FsContext): FileAttr {
    this.writable();
    checkName(name);
    const p = this.dirNode(parent);
    const perm = mode & ~umask & 0o7777;
    sys(() => this.n.fsMkdirat(p.fd, name, perm));
    return this.created(p, name, perm, ctx);
  }

  /** unlinkat of one entry of a held directory (a symlink is removed, never its target). */
  unlink(parent: number, name: string): void {
    this.writable();
    checkName(name);
    const p = this.dirNode(parent);
    sys(() => this.n.fsUnlinkat(p.fd, name, 0));
  }

  /** unlinkat(AT_REMOVEDIR) of one entry of a held directory. */
  rmdir(parent: number, name: string): void {
    this.writable();
    checkName(name);
    const p = this.dirNode(parent);
    sys(() => this.n.fsUnlinkat(p.fd, name, AT_REMOVEDIR));
  }

  /** A symlink holding `target` as text (never resolved on the host). */
  symlink(parent: number, name: string, target: string, ctx: FsContext): FileAttr {
    this.writable();
    checkName(name);
    const p = this.dirNode(parent);
    if (target === '' || target.includes('\0') || Buffer.byteLength(target) > 4095) throw new FsError(target === '' ? Errno.ENOENT : Errno.ENAMETOOLONG);
    sys(() => this.n.fsSymlinkat(target, p.fd, name));
    return this.created(p, name, 0o777, ctx);
  }

  /** renameat2 between two held directories (flags: NOREPLACE 1, EXCHANGE 2, WHITEOUT 4). */
  rename(parent: number, name: string, newParent: number, newName: string, flags: number): void {
    this.writable();
    checkName(name);
    checkName(newName);
    if ((flags & ~7) !== 0) throw new FsError(Errno.EINVAL);
    const p = this.dirNode(parent);
    const np = this.dirNode(newParent);
    sys(() => this.n.fsRenameat2(p.fd, name, np.fd, newName, flags));
  }

  /** A hard link to a held node (not a directory) in a held directory. */
  link(ino: number, newParent: number, newName: string): FileAttr {
    this.writable();
    checkName(newName);
    const node = this.node(ino);
    const np = this.dirNode(newParent);
    if (node.type === S_IFDIR) throw new FsError(Errno.EPERM);
    sys(() => {
      this.n.fsLinkat(node.fd, np.fd, newName);
      this.n.fsStat(node.fd, '', this.st);
    });
    return this.attr(ino);
  }

  /** Opens a regular file (anything else: EPERM; a directory: EISDIR). */
  open(ino: number, flags: number): OpenResult {
    const node = this.node(ino);
    if (node.type === S_IFDIR) throw new FsError(Errno.EISDIR);
    if (node.type !== S_IFREG) throw new FsError(node.type === S_IFLNK ? Errno.ELOOP : Errno.EPERM);
    const f = flags & OPEN_FLAGS;
    if (this.readOnly && ((f & O_ACCMODE) !== 0 || (f & O_TRUNC) !== 0)) throw new FsError(Errno.EROFS);
    let fd: number;
    try {
      fd = this.n.fsReopen(node.fd, f);
    } catch (err) {
      throw new FsError(errnoOf(err));
    }
    // noFlush: writes are done by the time WRITE is answered, and flush only drops POSIX locks.
    return { fh: this.addHandle(fd, node, f & O_ACCMODE), directIo: this.directIo, noFlush: true };
  }

  private addHandle(fd: number, node: Node, access: number, dir = false): number {
    const fh = this.nextFh++;
    this.handles.set(fh, { fd, node, access, dir: dir ? { pending: [], index: 0, eof: false, last: [] } : null });
    return fh;
  }

  /** Creates (O_CREAT | O_NOFOLLOW: an existing symlink is ELOOP, never followed) and opens a regular file. */
  create(parent: number, name: string, mode: number, umask: number, flags: number, ctx: FsContext): CreateResult {
    this.writable();
    checkName(name);
    const p = this.dirNode(parent);
    const perm = mode & ~umask & 0o7777;
    const f = (flags & (OPEN_FLAGS | O_EXCL)) | O_CREAT;
    // One native call: the open (O_CREAT | O_NOFOLLOW beneath the directory), the node's O_PATH
    // fd from the opened file itself (no second lookup of the name to race) and its fstat.
    const fd = this.n.fsCreate(p.fd, name, f, perm, this.st);
    if (fd < 0) throw new FsError(-fd);
    let attr: FileAttr;
    try {
      attr = this.created(p, name, perm, ctx, this.st[17]);
    } catch (err) {
      this.closeFd(fd);
      throw err;
    }
    const node = this.nodes.get(attr.ino)!;
    return { attr, fh: this.addHandle(fd, node, f & O_ACCMODE), directIo: this.directIo, noFlush: true };
  }

  /**
   * Up to `size` bytes at `offset`: from the page cache at once (preadv2 RWF_NOWAIT, into a
   * scratch buffer the server copies), else on the thread pool.
   */
  read(ino: number, fh: number, offset: number, size: number): Uint8Array | Promise<Uint8Array> {
    const h = this.handle(fh, ino);
    if (size > this.scratch.length) this.scratch = new Uint8Array(size);
    // One native call: preadv2(RWF_NOWAIT) until the size is read or the end of the file.
    let got: number;
    try {
      // A numeric key: the node is on the root's file system (see keyOf).
      got = this.n.fsPreadNowait(h.fd, this.scratch, size, offset, this.rootInMemory && typeof h.node.key === 'number');
    } catch (err) {
      throw new FsError(errnoOf(err));
    }
    if (got < 0) {
      // The rest would wait for the disk: on the thread pool, after what the page cache gave.
      this.stats.poolReads++;
      return this.readPool(h.fd, offset, size, this.scratch.subarray(0, -1 - got));
    }
    this.stats.cachedReads++;
    return this.scratch.subarray(0, got);
  }

  /** The rest of a read on the thread pool, after `head` (what the page cache gave). */
  private async readPool(fd: number, offset: number, size: number, head: Uint8Array): Promise<Uint8Array> {
    const buf = new Uint8Array(size);
    buf.set(head);
    let done = head.length;
    while (done < size) {
      const n = await new Promise<number>((res, rej) => readAsync(fd, buf, done, size - done, offset + done, (err, bytes) => (err ? rej(new FsError(errnoOf(err))) : res(bytes))));
      if (n === 0) break;
      done += n;
    }
    return buf.subarray(0, done);
  }

  /** pwrite of all of `data` (an O_APPEND handle appends, whatever the offset). */
  write(ino: number, fh: number, offset: number, data: Uint8Array): number {
    this.writable();
    const h = this.handle(fh, ino);
    try {
      return this.n.fsPwrite(h.fd, data, offset);
    } catch (err) {
      throw new FsError(errnoOf(err));
    }
  }

  /** close(2) of one descriptor: drops the POSIX locks of `lockOwner` on this file, as close does. */
  flush(ino: number, fh: number, lockOwner: bigint): void {
    const h = this.handle(fh, ino);
    const fd = h.node.locks?.get(lockOwner);
    if (fd !== undefined) {
      h.node.locks!.delete(lockOwner);
      this.closeFd(fd);
    }
  }

  /**
   * fsync or fdatasync on the thread pool; on the event loop for a file in memory (tmpfs,
   * ramfs: see rootInMemory), where it writes nothing back and returns at once.
   */
  fsync(ino: number, fh: number, datasync: boolean): void | Promise<void> {
    const h = this.handle(fh, ino);
    if (this.rootInMemory && typeof h.node.key === 'number') {
      sys(() => (datasync ? fdatasyncSync : fsyncSync)(h.fd));
      return;
    }
    return new Promise((res, rej) => (datasync ? fdatasync : fsync)(h.fd, (err) => (err ? rej(new FsError(errnoOf(err))) : res())));
  }

  /** The last close of a handle: its fd is closed. */
  release(ino: number, fh: number): void {
    const h = this.handle(fh, ino);
    this.handles.delete(fh);
    this.closeFd(h.fd);
  }

  /** Opens a directory for reading. */
  opendir(ino: number): OpenResult {
    const node = this.dirNode(ino);
    const fd = sys(() => this.n.fsReopen(node.fd, C.O_RDONLY | C.O_DIRECTORY));
    return { fh: this.addHandle(fd, node, 0, true) };
  }

  /**
   * Entries after cookie `offset`: cookies count entries from the start of the directory (the
   * host's d_off may be a 63-bit hash, not a safe integer). Reading on from where the last call
   * ended continues the host's getdents64; any other offset rewinds and skips.
   */
  readdir(ino: number, fh: number, offset: number, limit: number): DirEntry[] {
    const h = this.handle(fh, ino);
    const d = h.dir;
    if (d === null) throw new FsError(Errno.ENOTDIR);
    if (offset !== d.index && offset >= d.index - d.last.length && offset < d.index) {
      // Entries of the last batch the caller could not fit (the FUSE server stops at the
      // reply's size): handed out again from memory, no rewind.
      d.pending = d.last.slice(offset - (d.index - d.last.length)).concat(d.pending);
      d.index = offset;
    } else if (offset !== d.index) {
      sys(() => this.n.fsLseek(h.fd, 0, Whence.SEEK_SET));
      d.pending = [];
      d.last = [];
      d.index = 0;
      d.eof = false;
      while (d.index < offset && this.fillDir(h)) {
        const skip = Math.min(offset - d.index, d.pending.length);
        d.pending.splice(0, skip);
        d.index += skip;
      }
    }
    while (d.pending.length < limit && this.fillDir(h));
    const out = d.pending.splice(0, Math.max(0, limit));
    for (let i = 0; i < out.length; i++) out[i].off = d.index + i + 1;
    d.index += out.length;
    d.last = out;
    return out;
  }

  /** One getdents64 into the handle's pending entries; false at the end. */
  private fillDir(h: Handle): boolean {
    const d = h.dir!;
    if (d.eof) return false;
    const n = sys(() => this.n.fsGetdents(h.fd, this.dents));
    if (n === 0) {
      d.eof = true;
      return false;
    }
    const view = new DataView(this.dents.buffer, this.dents.byteOffset, n);
    for (let at = 0; at < n; ) {
      const hostIno = Number(view.getBigUint64(at, true));
      const reclen = view.getUint16(at + 16, true);
      const dtype = view.getUint8(at + 18);
      let end = at + 19;
      while (end < at + reclen && this.dents[end] !== 0) end++;
      const name = Buffer.from(this.dents.buffer, this.dents.byteOffset + at + 19, end - at - 19).toString('utf8');
      at += reclen;
      // `.` and `..`: the directory's own number (`..` of the root would be a host number from
      // outside the tree); any number will do for them (see DirEntry).
      const held = name === '.' || name === '..' ? h.node : undefined;
      const ino = held?.ino ?? (hostIno === this.rootHostIno ? ROOT_INO : hostIno > ROOT_INO && hostIno < INO_COUNTER_BASE ? hostIno : INO_COUNTER_BASE - 1);
      d.pending.push({ name, ino, type: (dtype << 12) & S_IFMT, off: 0 });
    }
    return true;
  }

  /** Closes a directory handle. */
  releasedir(ino: number, fh: number): void {
    this.release(ino, fh);
  }

  /** fsync of a directory handle (as fsync: on the thread pool, unless in memory). */
  fsyncdir(ino: number, fh: number, datasync: boolean): void | Promise<void> {
    return this.fsync(ino, fh, datasync);
  }

  /** fstatfs of the file system the node is on. */
  statfs(ino: number): StatFs {
    const node = this.node(ino);
    const s = this.sfs;
    sys(() => this.n.fsStatfs(node.fd, s));
    return { blocks: s[0], bfree: s[1], bavail: s[2], files: s[3], ffree: s[4], bsize: s[5], namelen: s[6], frsize: s[7] };
  }

  /** A `user.` xattr of the node's own inode (any other namespace: ENODATA). */
  getxattr(ino: number, name: string): Uint8Array {
    const v = this.getxattrErrno(ino, name);
    if (typeof v === 'number') throw FsError.quick(v);
    return v;
  }

  /** {@link getxattr} answering another namespace's name with ENODATA, not a throw (FsProvider.getxattrErrno). */
  getxattrErrno(ino: number, name: string): Uint8Array | number {
    const node = this.node(ino);
    // Asked before each write by a guest kernel that checks security.capability: no throw for it.
    if (!name.startsWith(XATTR_USER)) return Errno.ENODATA;
    return sys(() => {
      for (;;) {
        const size = this.n.fsGetxattr(node.fd, name, null);
        const buf = new Uint8Array(size);
        try {
          return buf.subarray(0, this.n.fsGetxattr(node.fd, name, buf));
        } catch (err) {
          if (errnoOf(err) !== Errno.ERANGE) throw err; // it grew in between: ask again
        }
      }
    });
  }

  /** Sets a `user.` xattr (other namespaces: EOPNOTSUPP; they would act on the host). */
  setxattr(ino: number, name: string, value: Uint8Array, flags: number): void {
    this.writable();
    const node = this.node(ino);
    if (!name.startsWith(XATTR_USER)) throw new FsError(Errno.EOPNOTSUPP);
    if ((flags & ~3) !== 0) throw new FsError(Errno.EINVAL);
    sys(() => this.n.fsSetxattr(node.fd, name, value, flags));
  }

  /** The node's `user.` xattr names. */
  listxattr(ino: number): string[] {
    const node = this.node(ino);
    const raw = sys(() => {
      for (;;) {
        const size = this.n.fsListxattr(node.fd, null);
        const buf = new Uint8Array(size);
        try {
          return buf.subarray(0, this.n.fsListxattr(node.fd, buf));
        } catch (err) {
          if (errnoOf(err) !== Errno.ERANGE) throw err;
        }
      }
    });
    return Buffer.from(raw.buffer, raw.byteOffset, raw.length)
      .toString('utf8')
      .split('\0')
      .filter((x) => x.startsWith(XATTR_USER));
  }

  /** Removes a `user.` xattr (other namespaces: EOPNOTSUPP). */
  removexattr(ino: number, name: string): void {
    this.writable();
    const node = this.node(ino);
    if (!name.startsWith(XATTR_USER)) throw new FsError(Errno.EOPNOTSUPP);
    sys(() => this.n.fsRemovexattr(node.fd, name));
  }

  /** fallocate(2) on the open handle (modes: KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE). */
  fallocate(ino: number, fh: number, offset: number, length: number, mode: number): void {
    this.writable();
    const h = this.handle(fh, ino);
    if ((mode & ~(0x1 | 0x2 | 0x10)) !== 0) throw new FsError(Errno.EOPNOTSUPP);
    sys(() => this.n.fsFallocate(h.fd, mode, offset, length));
  }

  /** lseek SEEK_DATA / SEEK_HOLE (ENXIO past the data). */
  lseek(ino: number, fh: number, offset: number, whence: number): number {
    const h = this.handle(fh, ino);
    if (whence !== Whence.SEEK_DATA && whence !== Whence.SEEK_HOLE && whence !== Whence.SEEK_SET && whence !== Whence.SEEK_END) throw new FsError(Errno.EINVAL);
    return sys(() => this.n.fsLseek(h.fd, offset, whence));
  }

  /** The open file description that holds `owner`'s locks on the node (opened on first use). */
  private lockFd(h: Handle, owner: bigint): number {
    const node = h.node;
    node.locks ??= new Map();
    let fd = node.locks.get(owner);
    if (fd === undefined) {
      fd = sys(() => this.n.fsReopen(node.fd, h.access));
      node.locks.set(owner, fd);
    }
    return fd;
  }

  /** F_GETLK: a lock of another owner that conflicts with `lock`, or F_UNLCK. */
  getlk(ino: number, fh: number, owner: bigint, lock: FileLock): FileLock {
    const h = this.handle(fh, ino);
    const fd = this.lockFd(h, owner);
    const len = lock.end === Infinity ? 0 : lock.end - lock.start + 1;
    sys(() => this.n.fsLock(fd, F_OFD_GETLK, lock.type, lock.start, len, 0, this.lk));
    const type = this.lk[0];
    if (type === LockType.F_UNLCK) return { start: lock.start, end: lock.end, type, pid: 0 };
    // An OFD lock has no owning process (-1): the guest is told 0.
    return { start: this.lk[1], end: this.lk[2] === 0 ? Infinity : this.lk[1] + this.lk[2] - 1, type, pid: 0 };
  }

  /** F_SETLK / F_SETLKW (retried with a growing interval until it is taken or `signal` aborts). */
  setlk(ino: number, fh: number, owner: bigint, lock: FileLock, wait: boolean, _ctx: FsContext, signal?: AbortSignal): void | Promise<void> {
    const h = this.handle(fh, ino);
    if (lock.type !== LockType.F_RDLCK && lock.type !== LockType.F_WRLCK && lock.type !== LockType.F_UNLCK) throw new FsError(Errno.EINVAL);
    const fd = this.lockFd(h, owner);
    const len = lock.end === Infinity ? 0 : lock.end - lock.start + 1;
    const attempt = () => this.n.fsLock(fd, F_OFD_SETLK, lock.type, lock.start, len, 0, this.lk);
    try {
      attempt();
      return;
    } catch (err) {
      if (!wait || errnoOf(err) !== Errno.EAGAIN) throw new FsError(errnoOf(err));
    }
    return new Promise<void>((res, rej) => {
      let delay = 1;
      let timer: ReturnType<typeof setTimeout>;
      const onAbort = () => {
        clearTimeout(timer);
        rej(new FsError(Errno.EINTR));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const retry = () => {
        // The lock fd went away meanwhile (flush by its owner, forget, close): nothing to wait for.
        if (this.closed || h.node.locks?.get(owner) !== fd) return rej(new FsError(Errno.EBADF));
        try {
          attempt();
          signal?.removeEventListener('abort', onAbort);
          res();
        } catch (err) {
          if (errnoOf(err) !== Errno.EAGAIN) {
            signal?.removeEventListener('abort', onAbort);
            rej(new FsError(errnoOf(err)));
            return;
          }
          delay = Math.min(delay * 2, 50);
          timer = setTimeout(retry, delay);
        }
      };
      if (signal?.aborted) return onAbort();
      timer = setTimeout(retry, delay);
    });
  }
}

