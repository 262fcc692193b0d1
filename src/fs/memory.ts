/**
 * An in-memory file system: the complete {@link FsProvider}, in JavaScript, for tests, sandboxes
 * and browsers (and the shape to copy for a store of your own). Directories, regular files
 * (sparse: data in 64 KiB chunks, holes take no memory; SEEK_DATA / SEEK_HOLE and fallocate's
 * PUNCH_HOLE and ZERO_RANGE), symlinks, device nodes, FIFOs and sockets, hard links with
 * correct link counts (a directory has 2 + its subdirectories), rename with RENAME_NOREPLACE
 * and RENAME_EXCHANGE, xattrs, POSIX locks ({@link PosixLocks}), times in nanoseconds, and a
 * capacity (`maxBytes`) past which writes fail with ENOSPC.
 *
 * A node lives while a directory names it, a handle has it open, or the kernel holds its
 * number (until `forget`): an unlinked file that is still open reads and writes as before.
 * Everything is synchronous: every operation returns its result directly.
 *
 * Browser-safe.
 */
import { PosixLocks } from './locks.js';
import {
  Errno,
  FallocMode,
  FsError,
  RenameFlags,
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
  XattrFlags,
  type CreateResult,
  type DirEntry,
  type FileAttr,
  type FileLock,
  type FsContext,
  type FsProvider,
  type OpenResult,
  type SetAttr,
  type StatFs,
} from './vfs.js';

/** Bytes per data chunk of a regular file. */
const CHUNK = 64 * 1024;

/** How a MemoryFs is set up. */
export interface MemoryFsOptions {
  /** Bytes of file data it holds at most (default 1 GiB): ENOSPC beyond. */
  maxBytes?: number;
  /** Nodes it holds at most (default 1,000,000): ENOSPC beyond. */
  maxNodes?: number;
  /** Refuse every change with EROFS. */
  readOnly?: boolean;
  /** Owner of the root directory (default 0:0) and its mode (default 0o755). */
  rootUid?: number;
  rootGid?: number;
  rootMode?: number;
  /** The clock (default Date.now): milliseconds since the epoch. */
  now?: () => number;
}

/** A node: its attributes (as stat shows them; blocks and blksize are computed) and its contents. */
interface Node extends Omit<FileAttr, 'blocks' | 'blksize'> {
  /** Regular files: chunk index -> CHUNK bytes. */
  chunks: Map<number, Uint8Array> | null;
  /** Directories: name -> entry; `parent` the directory's parent. */
  entries: Map<string, { ino: number; cookie: number }> | null;
  parent: number;
  nextCookie: number;
  /** Symlinks: the target. */
  target: string;
  xattrs: Map<string, Uint8Array> | null;
  /** Open handles. */
  opens: number;
  /** The kernel holds the number (a lookup-type reply handed it out, no forget since). */
  known: boolean;
}

const isDir = (n: Node) => (n.mode & S_IFMT) === S_IFDIR;
/** The xattr holding file capabilities. */
const CAPABILITY = 'security.capability';

/** The in-memory file system: see the module doc. */
export class MemoryFs implements FsProvider {
  readonly readOnly: boolean;
  /** A write or chown drops the file's security.capability, as Linux file systems do (FsProvider.killsPriv). */
  readonly killsPriv = true;
  private readonly nodes = new Map<number, Node>();
  private readonly handles = new Map<number, number>();
  private nextIno = ROOT_INO + 1;
  private nextFh = 1;
  private used = 0;
  private readonly maxBytes: number;
  private readonly maxNodes: number;
  private readonly clock: () => number;
  /** The file system's POSIX locks. */
  readonly locks = new PosixLocks();

  /** An empty file system: a root directory. */
  constructor(options: MemoryFsOptions = {}) {
    this.readOnly = options.readOnly === true;
    this.maxBytes = options.maxBytes ?? 1 << 30;
    this.maxNodes = options.maxNodes ?? 1_000_000;
    this.clock = options.now ?? Date.now;
    const root = this.make(S_IFDIR | ((options.rootMode ?? 0o755) & 0o7777), options.rootUid ?? 0, options.rootGid ?? 0, 0);
    this.nodes.delete(root.ino);
    root.ino = ROOT_INO;
    root.parent = ROOT_INO;
    root.nlink = 2;
    this.nodes.set(ROOT_INO, root);
    this.nextIno = ROOT_INO + 1;
  }

  /** Bytes of file data held now (chunks allocated). */
  get bytesUsed(): number {
    return this.used;
  }

  /** Nodes alive now (the root included). */
  get nodeCount(): number {
    return this.nodes.size;
  }

  // ------------------------------------------------------------------ helpers

  private stamp(): { sec: number; nsec: number } {
    const ms = this.clock();
    const sec = Math.floor(ms / 1000);
    return { sec, nsec: Math.floor((ms - sec * 1000) * 1e6) };
  }

  private make(mode: number, uid: number, gid: number, rdev: number): Node {
    if (this.nodes.size >= this.maxNodes) throw new FsError(Errno.ENOSPC, 'node limit');
    const t = this.stamp();
    const type = mode & S_IFMT;
    const n: Node = {
      ino: this.nextIno++,
      mode,
      uid,
      gid,
      rdev,
      nlink: type === S_IFDIR ? 2 : 1,
      size: 0,
      atime: t.sec,
      atimeNsec: t.nsec,
      mtime: t.sec,
      mtimeNsec: t.nsec,
      ctime: t.sec,
      ctimeNsec: t.nsec,
      chunks: type === S_IFREG ? new Map() : null,
      entries: type === S_IFDIR ? new Map() : null,
      parent: 0,
      nextCookie: 2,
      target: '',
      xattrs: null,
      opens: 0,
      known: false,
    };
    this.nodes.set(n.ino, n);
    return n;
  }

  private get(ino: number): Node {
    const n = this.nodes.get(ino);
    if (n === undefined) throw new FsError(Errno.ESTALE, `no node ${ino}`);
    return n;
  }

  private dir(ino: number): Node {
    const n = this.get(ino);
    if (!isDir(n)) throw new FsError(Errno.ENOTDIR);
    return n;
  }

  private rw(): void {
    if (this.readOnly) throw new FsError(Errno.EROFS);
  }

  private touch(n: Node, what: 'm' | 'c' | 'a'): void {
    const t = this.stamp();
    if (what === 'a') {
      n.atime = t.sec;
      n.atimeNsec = t.nsec;
      return;
    }
    if (what === 'm') {
      n.mtime = t.sec;
      n.mtimeNsec = t.nsec;
    }
    n.ctime = t.sec;
    n.ctimeNsec = t.nsec;
  }

  private attrOf(n: Node): FileAttr {
    let blocks = 0;
    if (n.chunks !== null) blocks = n.chunks.size * (CHUNK / 512);
    else if (n.entries !== null) blocks = 8;
    return {
      ino: n.ino,
      size: n.size,
      blocks,
      atime: n.atime,
      atimeNsec: n.atimeNsec,
      mtime: n.mtime,
      mtimeNsec: n.mtimeNsec,
      ctime: n.ctime,
      ctimeNsec: n.ctimeNsec,
      mode: n.mode,
      nlink: n.nlink,
      uid: n.uid,
      gid: n.gid,
      rdev: n.rdev,
      blksize: 4096,
    };
  }

  /** The attributes of a node the kernel is about to hold (a lookup-type answer). */
  private handOut(n: Node): FileAttr {
    n.known = true;
    return this.attrOf(n);
  }

  /** Drops a node nothing refers to any more (no link, no handle, not held by the kernel). */
  private reap(n: Node): void {
    if (n.nlink > 0 || n.opens > 0 || n.known || n.ino === ROOT_INO) return;
    if (n.chunks !== null) this.used -= n.chunks.size * CHUNK;
    this.locks.forget(n.ino);
    this.nodes.delete(n.ino);
  }

  private addEntry(d: Node, name: string, ino: number): void {
    d.entries!.set(name, { ino, cookie: ++d.nextCookie });
  }

  /** A new node in directory `parent` named `name` (EEXIST when taken). */
  private create1(parent: number, name: string, mode: number, ctx: FsContext, rdev = 0): Node {
    this.rw();
    const d = this.dir(parent);
    if (d.nlink === 0) throw new FsError(Errno.ENOENT, 'directory was removed');
    if (d.entries!.has(name)) throw new FsError(Errno.EEXIST);
    // A set-group-ID directory gives its group to new nodes, and its bit to new directories.
    const sgid = (d.mode & 0o2000) !== 0;
    let m = mode;
    if (sgid && (mode & S_IFMT) === S_IFDIR) m |= 0o2000;
    const n = this.make(m, ctx.uid, sgid ? d.gid : ctx.gid, rdev);
    this.addEntry(d, name, n.ino);
    if (isDir(n)) {
      n.parent = d.ino;
      d.nlink++;
    }
    this.touch(d, 'm');
    return n;
  }

  // ------------------------------------------------------------------ FsProvider

  lookup(parent: number, name: string): FileAttr {
    const d = this.dir(parent);
    const e = d.entries!.get(name);
    if (e === undefined) throw new FsError(Errno.ENOENT);
    return this.handOut(this.get(e.ino));
  }

  forget(ino: number): void {
    const n = this.nodes.get(ino);
    if (n === undefined) return;
    n.known = false;
    this.reap(n);
  }

  getattr(ino: number): FileAttr {
    return this.attrOf(this.get(ino));
  }

  setattr(ino: number, _fh: number | null, c: SetAttr): FileAttr {
    this.rw();
    const n = this.get(ino);
    if (c.size !== undefined) {
      if (isDir(n)) throw new FsError(Errno.EISDIR);
      if (n.chunks === null) throw new FsError(Errno.EINVAL);
      this.truncate(n, c.size);
      this.touch(n, 'm');
    }
    if (c.mode !== undefined) n.mode = (n.mode & S_IFMT) | (c.mode & 0o7777);
    if (c.uid !== undefined) n.uid = c.uid;
    if (c.gid !== undefined) n.gid = c.gid;
    // chown(2) of a non-directory takes set-user-ID, set-group-ID (with group execute) and
    // file capabilities away, whoever asks (Linux's chown_common).
    const chown = (c.uid !== undefined || c.gid !== undefined) && !isDir(n);
    if (c.killSuidgid || chown) n.mode &= ~(0o4000 | ((n.mode & 0o010) !== 0 ? 0o2000 : 0));
    if (chown) n.xattrs?.delete(CAPABILITY);
    const t = this.stamp();
    if (c.atime !== undefined) {
      const a = c.atime === 'now' ? t : c.atime;
      n.atime = a.sec;
      n.atimeNsec = a.nsec;
    }
    if (c.mtime !== undefined) {
      const m = c.mtime === 'now' ? t : c.mtime;
      n.mtime = m.sec;
      n.mtimeNsec = m.nsec;
    }
    n.ctime = c.ctime?.sec ?? t.sec;
    n.ctimeNsec = c.ctime?.nsec ?? t.nsec;
    return this.attrOf(n);
  }

  readlink(ino: number): string {
    const n = this.get(ino);
    if ((n.mode & S_IFMT) !== S_IFLNK) throw new FsError(Errno.EINVAL);
    return n.target;
  }

  mknod(parent: number, name: string, mode: number, rdev: number, umask: number, ctx: FsContext): FileAttr {
    const type = mode & S_IFMT;
    if (type !== S_IFREG && type !== S_IFCHR && type !== S_IFBLK && type !== S_IFIFO && type !== S_IFSOCK) throw new FsError(Errno.EINVAL, `mknod of type 0o${type.toString(8)}`);
    return this.handOut(this.create1(parent, name, type | (mode & 0o7777 & ~umask), ctx, type === S_IFCHR || type === S_IFBLK ? rdev : 0));
  }

  mkdir(parent: number, name: string, mode: number, umask: number, ctx: FsContext): FileAttr {
    return this.handOut(this.create1(parent, name, S_IFDIR | (mode & 0o7777 & ~umask), ctx));
  }

  symlink(parent: number, name: string, target: string, ctx: FsContext): FileAttr {
    const n = this.create1(parent, name, S_IFLNK | 0o777, ctx);
    n.target = target;
    n.size = new TextEncoder().encode(target).length;
    return this.handOut(n);
  }

  unlink(parent: number, name: string): void {
    this.rw();
    const d = this.dir(parent);
    const e = d.entries!.get(name);
    if (e === undefined) throw new FsError(Errno.ENOENT);
    const n = this.get(e.ino);
    if (isDir(n)) throw new FsError(Errno.EISDIR);
    d.entries!.delete(name);
    n.nlink--;
    this.touch(n, 'c');
    this.touch(d, 'm');
    this.reap(n);
  }

  rmdir(parent: number, name: string): void {
    this.rw();
    const d = this.dir(parent);
    const e = d.entries!.get(name);
    if (e === undefined) throw new FsError(Errno.ENOENT);
    const n = this.get(e.ino);
    if (!isDir(n)) throw new FsError(Errno.ENOTDIR);
    if (n.entries!.size > 0) throw new FsError(Errno.ENOTEMPTY);
    d.entries!.delete(name);
    d.nlink--;
    n.nlink = 0;
    this.touch(d, 'm');
    this.reap(n);
  }

  /** Whether directory `anc` is `ino` or one of its ancestors. */
  private isAncestor(anc: number, ino: number): boolean {
    let cur = ino;
    for (let i = 0; i < 1_000_000; i++) {
      if (cur === anc) return true;
      if (cur === ROOT_INO) return false;
      const n = this.nodes.get(cur);
      if (n === undefined) return false;
      cur = n.parent;
    }
    return false;
  }

  rename(parent: number, name: string, newParent: number, newName: string, flags: number): void {
    this.rw();
    if ((flags & ~(RenameFlags.NOREPLACE | RenameFlags.EXCHANGE)) !== 0) throw new FsError(Errno.EINVAL, 'rename flags');
    if ((flags & RenameFlags.NOREPLACE) !== 0 && (flags & RenameFlags.EXCHANGE) !== 0) throw new FsError(Errno.EINVAL, 'NOREPLACE with EXCHANGE');
    const sd = this.dir(parent);
    const td = this.dir(newParent);
    const se = sd.entries!.get(name);
    if (se === undefined) throw new FsError(Errno.ENOENT);
    const src = this.get(se.ino);
    const te = td.entries!.get(newName);
    const dst = te === undefined ? null : this.get(te.ino);
    // A directory may not move into itself or below itself.
    if (isDir(src) && src.ino !== td.ino && this.isAncestor(src.ino, td.ino)) throw new FsError(Errno.EINVAL, 'directory into its own subtree');
    if (src.ino === td.ino) throw new FsError(Errno.EINVAL, 'directory into itself');
    if ((flags & RenameFlags.EXCHANGE) !== 0) {
      if (dst === null) throw new FsError(Errno.ENOENT);
      if (isDir(dst) && this.isAncestor(dst.ino, sd.ino)) throw new FsError(Errno.EINVAL, 'directory into its own subtree');
      se.ino = dst.ino;
      te!.ino = src.ino;
      if (sd !== td) {
        if (isDir(src)) {
          src.parent = td.ino;
          sd.nlink--;
          td.nlink++;
        }
        if (isDir(dst)) {
          dst.parent = sd.ino;
          td.nlink--;
          sd.nlink++;
        }
      }
      this.touch(src, 'c');
      this.touch(dst, 'c');
      this.touch(sd, 'm');
      this.touch(td, 'm');
      return;
    }
    if (dst !== null) {
      if ((flags & RenameFlags.NOREPLACE) !== 0) throw new FsError(Errno.EEXIST);
      if (dst === src) return; // two names of one node: rename(2) does nothing
      if (isDir(src)) {
        if (!isDir(dst)) throw new FsError(Errno.ENOTDIR);
        if (dst.entries!.size > 0) throw new FsError(Errno.ENOTEMPTY);
      } else if (isDir(dst)) throw new FsError(Errno.EISDIR);
      td.entries!.delete(newName);
      if (isDir(dst)) {
        dst.nlink = 0;
        td.nlink--;
      } else dst.nlink--;
      this.touch(dst, 'c');
      this.reap(dst);
    }
    sd.entries!.delete(name);
    this.addEntry(td, newName, src.ino);
    if (isDir(src) && sd !== td) {
      src.parent = td.ino;
      sd.nlink--;
      td.nlink++;
    }
    this.touch(src, 'c');
    this.touch(sd, 'm');
    this.touch(td, 'm');
  }

  link(ino: number, newParent: number, newName: string): FileAttr {
    this.rw();
    const n = this.get(ino);
    if (isDir(n)) throw new FsError(Errno.EPERM);
    if (n.nlink === 0) throw new FsError(Errno.ENOENT);
    if (n.nlink >= 65000) throw new FsError(Errno.EMLINK);
    const d = this.dir(newParent);
    if (d.entries!.has(newName)) throw new FsError(Errno.EEXIST);
    this.addEntry(d, newName, n.ino);
    n.nlink++;
    this.touch(n, 'c');
    this.touch(d, 'm');
    return this.handOut(n);
  }

  private openNode(n: Node): OpenResult {
    n.opens++;
    const fh = this.nextFh++;
    this.handles.set(fh, n.ino);
    return { fh };
  }

  open(ino: number, flags: number): OpenResult {
    const n = this.get(ino);
    if (isDir(n)) throw new FsError(Errno.EISDIR);
    if (((flags & 3) !== 0 || (flags & 0o1000) !== 0) && this.readOnly) throw new FsError(Errno.EROFS);
    if ((flags & 0o1000) !== 0 && n.chunks !== null) {
      this.truncate(n, 0);
      this.touch(n, 'm');
    }
    // noFlush: nothing is buffered, and flush only drops POSIX locks.
    return { ...this.openNode(n), noFlush: true };
  }

  create(parent: number, name: string, mode: number, umask: number, flags: number, ctx: FsContext): CreateResult {
    this.rw();
    const d = this.dir(parent);
    const existing = d.entries!.get(name);
    if (existing !== undefined) {
      if ((flags & 0o200) !== 0) throw new FsError(Errno.EEXIST); // O_EXCL
      const n = this.get(existing.ino);
      const o = this.open(n.ino, flags);
      return { ...o, attr: this.handOut(n) };
    }
    const n = this.create1(parent, name, S_IFREG | (mode & 0o7777 & ~umask), ctx);
    const o = this.openNode(n);
    return { ...o, noFlush: true, attr: this.handOut(n) };
  }

  release(_ino: number, fh: number): void {
    const ino = this.handles.get(fh);
    if (ino === undefined) return;
    this.handles.delete(fh);
    const n = this.nodes.get(ino);
    if (n === undefined) return;
    n.opens--;
    this.reap(n);
  }

  opendir(ino: number): OpenResult {
    this.dir(ino);
    return this.openNode(this.get(ino));
  }

  releasedir(ino: number, fh: number): void {
    this.release(ino, fh);
  }

  read(ino: number, _fh: number, offset: number, size: number): Uint8Array {
    const n = this.get(ino);
    if (n.chunks === null) throw new FsError(isDir(n) ? Errno.EISDIR : Errno.EINVAL);
    if (offset >= n.size || size === 0) return new Uint8Array(0);
    const len = Math.min(size, n.size - offset);
    const out = new Uint8Array(len);
    let pos = 0;
    while (pos < len) {
      const at = offset + pos;
      const ci = Math.floor(at / CHUNK);
      const co = at - ci * CHUNK;
      const take = Math.min(CHUNK - co, len - pos);
      const c = n.chunks.get(ci);
      if (c !== undefined) out.set(c.subarray(co, co + take), pos);
      pos += take;
    }
    this.touch(n, 'a');
    return out;
  }

  write(ino: number, _fh: number, offset: number, data: Uint8Array): number {
    this.rw();
    const n = this.get(ino);
    if (n.chunks === null) throw new FsError(isDir(n) ? Errno.EISDIR : Errno.EINVAL);
    if (offset + data.length > Number.MAX_SAFE_INTEGER) throw new FsError(Errno.EFBIG);
    // A write takes file capabilities away (Linux's file_remove_privs).
    n.xattrs?.delete(CAPABILITY);
    // Room first: a write that cannot fit changes nothing.
    let fresh = 0;
    for (let ci = Math.floor(offset / CHUNK); ci * CHUNK < offset + data.length; ci++) if (!n.chunks.has(ci)) fresh++;
    if (this.used + fresh * CHUNK > this.maxBytes) throw new FsError(Errno.ENOSPC);
    let pos = 0;
    while (pos < data.length) {
      const at = offset + pos;
      const ci = Math.floor(at / CHUNK);
      const co = at - ci * CHUNK;
      const take = Math.min(CHUNK - co, data.length - pos);
      this.chunk(n, ci).set(data.subarray(pos, pos + take), co);
      pos += take;
    }
    if (offset + data.length > n.size) n.size = offset + data.length;
    this.touch(n, 'm');
    return data.length;
  }

  private chunk(n: Node, ci: number): Uint8Array {
    let c = n.chunks!.get(ci);
    if (c === undefined) {
      c = new Uint8Array(CHUNK);
      n.chunks!.set(ci, c);
      this.used += CHUNK;
    }
    return c;
  }

  private truncate(n: Node, size: number): void {
    if (size < n.size) {
      for (const ci of [...n.chunks!.keys()]) {
        if (ci * CHUNK >= size) {
          n.chunks!.delete(ci);
          this.used -= CHUNK;
        } else if ((ci + 1) * CHUNK > size) n.chunks!.get(ci)!.fill(0, size - ci * CHUNK);
      }
    }
    n.size = size;
  }

  /** Zeroes [from, to) of a file's data, dropping chunks wholly inside. */
  private zero(n: Node, from: number, to: number): void {
    for (const ci of [...n.chunks!.keys()]) {
      const s = ci * CHUNK;
      const e = s + CHUNK;
      if (e <= from || s >= to) continue;
      if (s >= from && e <= to) {
        n.chunks!.delete(ci);
        this.used -= CHUNK;
      } else n.chunks!.get(ci)!.fill(0, Math.max(from, s) - s, Math.min(to, e) - s);
    }
  }

  flush(ino: number, _fh: number, owner: bigint): void {
    // close(2) drops the closing process's POSIX locks (the kernel also sends an unlock).
    this.locks.releaseOwner(ino, owner);
  }

  fsync(): void {}

  fsyncdir(): void {}

  readdir(ino: number, _fh: number, offset: number, limit: number): DirEntry[] {
    const d = this.dir(ino);
    const out: DirEntry[] = [];
    if (offset < 1) out.push({ name: '.', ino: d.ino, type: S_IFDIR, off: 1 });
    if (offset < 2 && out.length < limit) out.push({ name: '..', ino: d.parent, type: S_IFDIR, off: 2 });
    for (const [name, e] of d.entries!) {
      if (out.length >= limit) break;
      if (e.cookie <= offset) continue;
      const n = this.nodes.get(e.ino);
      out.push({ name, ino: e.ino, type: (n?.mode ?? 0) & S_IFMT, off: e.cookie });
    }
    this.touch(d, 'a');
    return out;
  }

  statfs(): StatFs {
    const bsize = 4096;
    const blocks = Math.floor(this.maxBytes / bsize);
    const free = Math.max(0, Math.floor((this.maxBytes - this.used) / bsize));
    return { blocks, bfree: free, bavail: free, files: this.maxNodes, ffree: Math.max(0, this.maxNodes - this.nodes.size), bsize, namelen: 255, frsize: bsize };
  }

  getxattr(ino: number, name: string): Uint8Array {
    const v = this.get(ino).xattrs?.get(name);
    if (v === undefined) throw new FsError(Errno.ENODATA);
    return v;
  }

  setxattr(ino: number, name: string, value: Uint8Array, flags: number): void {
    this.rw();
    const n = this.get(ino);
    const has = n.xattrs?.has(name) === true;
    if ((flags & XattrFlags.CREATE) !== 0 && has) throw new FsError(Errno.EEXIST);
    if ((flags & XattrFlags.REPLACE) !== 0 && !has) throw new FsError(Errno.ENODATA);
    if (!has && (n.xattrs?.size ?? 0) >= 1024) throw new FsError(Errno.ENOSPC, 'xattr limit');
    n.xattrs ??= new Map();
    n.xattrs.set(name, value.slice());
    this.touch(n, 'c');
  }

  listxattr(ino: number): string[] {
    return [...(this.get(ino).xattrs?.keys() ?? [])];
  }

  removexattr(ino: number, name: string): void {
    this.rw();
    const n = this.get(ino);
    if (n.xattrs?.delete(name) !== true) throw new FsError(Errno.ENODATA);
    this.touch(n, 'c');
  }

  fallocate(ino: number, _fh: number, offset: number, length: number, mode: number): void {
    this.rw();
    const n = this.get(ino);
    if (n.chunks === null) throw new FsError(isDir(n) ? Errno.EISDIR : Errno.ENODEV);
    if (length <= 0) throw new FsError(Errno.EINVAL);
    const end = offset + length;
    if (end > Number.MAX_SAFE_INTEGER) throw new FsError(Errno.EFBIG);
    const keep = (mode & FallocMode.KEEP_SIZE) !== 0;
    if ((mode & ~(FallocMode.KEEP_SIZE | FallocMode.PUNCH_HOLE | FallocMode.ZERO_RANGE)) !== 0) throw new FsError(Errno.EOPNOTSUPP);
    if ((mode & FallocMode.PUNCH_HOLE) !== 0) {
      if (!keep || (mode & FallocMode.ZERO_RANGE) !== 0) throw new FsError(Errno.EOPNOTSUPP); // PUNCH_HOLE needs KEEP_SIZE (fallocate(2))
      this.zero(n, offset, Math.min(end, n.size));
      this.touch(n, 'm');
      return;
    }
    if ((mode & FallocMode.ZERO_RANGE) !== 0) this.zero(n, offset, end);
    else {
      let fresh = 0;
      for (let ci = Math.floor(offset / CHUNK); ci * CHUNK < end; ci++) if (!n.chunks.has(ci)) fresh++;
      if (this.used + fresh * CHUNK > this.maxBytes) throw new FsError(Errno.ENOSPC);
      for (let ci = Math.floor(offset / CHUNK); ci * CHUNK < end; ci++) this.chunk(n, ci);
    }
    if (!keep && end > n.size) n.size = end;
    this.touch(n, 'm');
  }

  lseek(ino: number, _fh: number, offset: number, whence: number): number {
    const n = this.get(ino);
    if (n.chunks === null) throw new FsError(Errno.EINVAL);
    if (whence !== Whence.SEEK_DATA && whence !== Whence.SEEK_HOLE) {
      if (whence === Whence.SEEK_SET) return offset;
      if (whence === Whence.SEEK_END) return n.size + offset;
      throw new FsError(Errno.EINVAL);
    }
    if (offset >= n.size) throw new FsError(Errno.ENXIO);
    // Data is every allocated chunk; a hole the rest (and the implicit hole at the end).
    for (let at = offset; at < n.size; at = (Math.floor(at / CHUNK) + 1) * CHUNK) {
      const has = n.chunks.has(Math.floor(at / CHUNK));
      if (whence === Whence.SEEK_DATA && has) return at;
      if (whence === Whence.SEEK_HOLE && !has) return at;
    }
    if (whence === Whence.SEEK_HOLE) return n.size;
    throw new FsError(Errno.ENXIO);
  }

  getlk(ino: number, _fh: number, owner: bigint, lock: FileLock): FileLock {
    this.get(ino);
    return this.locks.get(ino, owner, lock);
  }

  setlk(ino: number, _fh: number, owner: bigint, lock: FileLock, wait: boolean, _ctx: FsContext, signal?: AbortSignal): void | Promise<void> {
    this.get(ino);
    return this.locks.set(ino, owner, lock, wait, signal);
  }
}
