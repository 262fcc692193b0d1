/**
 * A minimal FUSE client: the driver side of the protocol, for tests, fuzz seeds and embedders
 * that drive a {@link FuseServer} (directly, or through a virtio-fs device and a driver). It
 * builds requests as Linux does (protocol 7.38 struct sizes) and parses the replies; an error
 * reply becomes an {@link FsError} with its errno.
 *
 * Browser-safe.
 */
import { FsError, type FileAttr, type FileLock, type StatFs } from '../vfs.js';
import { FUSE_MAJOR, FUSE_MINOR, InitFlag, OFFSET_MAX, Op, Size, opName } from './wire.js';

/**
 * Carries one request: `req` the request bytes, `room` the reply bytes the client makes room
 * for, `hiprio` whether it goes on the hiprio queue. Resolves with the reply bytes (null when
 * the request gets none: FORGET, BATCH_FORGET, INTERRUPT).
 */
export type FuseSend = (req: Uint8Array, room: number, hiprio: boolean) => Promise<Uint8Array | null> | Uint8Array | null;

/** An entry reply: the node and its attributes. */
export interface FuseEntry {
  nodeid: number;
  attr: FileAttr;
  entryValid: number;
  attrValid: number;
}

/** One directory entry of READDIR / READDIRPLUS (`entry` only for READDIRPLUS, null when the server gave none). */
export interface FuseDirent {
  ino: number;
  off: number;
  type: number;
  name: string;
  entry?: FuseEntry | null;
}

/** Made on first use: a module that builds them at import fails where the platform has none yet (a bare vm context). */
let encoder: InstanceType<typeof TextEncoder> | null = null;
let decoder: InstanceType<typeof TextDecoder> | null = null;
const enc = { encode: (s: string) => (encoder ??= new TextEncoder()).encode(s) };
const dec = { decode: (b: Uint8Array) => (decoder ??= new TextDecoder()).decode(b) };

/** Reads a fuse_attr at `off`. */
export function readAttr(v: DataView, off: number): FileAttr {
  const n = (o: number) => Number(v.getBigUint64(off + o, true));
  return {
    ino: n(0),
    size: n(8),
    blocks: n(16),
    atime: n(24),
    mtime: n(32),
    ctime: n(40),
    atimeNsec: v.getUint32(off + 48, true),
    mtimeNsec: v.getUint32(off + 52, true),
    ctimeNsec: v.getUint32(off + 56, true),
    mode: v.getUint32(off + 60, true),
    nlink: v.getUint32(off + 64, true),
    uid: v.getUint32(off + 68, true),
    gid: v.getUint32(off + 72, true),
    rdev: v.getUint32(off + 76, true),
    blksize: v.getUint32(off + 80, true),
  };
}

function readEntry(v: DataView, off: number): FuseEntry {
  return { nodeid: Number(v.getBigUint64(off, true)), entryValid: Number(v.getBigUint64(off + 16, true)), attrValid: Number(v.getBigUint64(off + 24, true)), attr: readAttr(v, off + 40) };
}

/** A request's fixed part: a little helper to fill a struct. */
class Struct {
  readonly bytes: Uint8Array;
  readonly v: DataView;
  constructor(size: number) {
    this.bytes = new Uint8Array(size);
    this.v = new DataView(this.bytes.buffer);
  }
  u32(off: number, x: number): this {
    this.v.setUint32(off, x >>> 0, true);
    return this;
  }
  u64(off: number, x: number | bigint): this {
    this.v.setBigUint64(off, BigInt(x), true);
    return this;
  }
}

/** A NUL-terminated string. */
function cstr(s: string): Uint8Array {
  const b = enc.encode(s);
  const out = new Uint8Array(b.length + 1);
  out.set(b);
  return out;
}

/** Builds one FUSE request: header (len filled in), then `parts`. */
export function fuseRequest(opcode: number, unique: bigint, nodeid: number, parts: readonly Uint8Array[], ids: { uid?: number; gid?: number; pid?: number } = {}): Uint8Array {
  const len = Size.inHeader + parts.reduce((s, p) => s + p.length, 0);
  const out = new Uint8Array(len);
  const v = new DataView(out.buffer);
  v.setUint32(0, len, true);
  v.setUint32(4, opcode, true);
  v.setBigUint64(8, unique, true);
  v.setBigUint64(16, BigInt(nodeid), true);
  v.setUint32(24, ids.uid ?? 0, true);
  v.setUint32(28, ids.gid ?? 0, true);
  v.setUint32(32, ids.pid ?? 1, true);
  let o = Size.inHeader;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** The FUSE client: see the module doc. */
export class FuseClient {
  private unique = 1n;
  /** The caller's ids put in every request header. */
  ids = { uid: 0, gid: 0, pid: 1 };
  /** What INIT agreed (after init()). */
  initFlags = 0;
  maxWrite = 0;
  minor = 0;

  /** A client over `send`. */
  constructor(private readonly send: FuseSend) {}

  /** Sends one request; resolves with the reply body (after fuse_out_header), or an FsError for an error reply. */
  async call(opcode: number, nodeid: number, parts: readonly Uint8Array[], room = 4096, hiprio = false): Promise<DataView> {
    const unique = this.unique++;
    const req = fuseRequest(opcode, unique, nodeid, parts, this.ids);
    const reply = await this.send(req, room, hiprio);
    if (reply === null) throw new Error(`${opName(opcode)}: no reply`);
    if (reply.length < Size.outHeader) throw new Error(`${opName(opcode)}: reply of ${reply.length} bytes`);
    const v = new DataView(reply.buffer, reply.byteOffset, reply.byteLength);
    const len = v.getUint32(0, true);
    const error = v.getInt32(4, true);
    if (v.getBigUint64(8, true) !== unique) throw new Error(`${opName(opcode)}: reply for unique ${v.getBigUint64(8, true)}, sent ${unique}`);
    if (len !== reply.length) throw new Error(`${opName(opcode)}: out.len ${len}, ${reply.length} bytes written`);
    if (error !== 0) {
      if (len !== Size.outHeader) throw new Error(`${opName(opcode)}: error reply with ${len - Size.outHeader} bytes of body`);
      throw new FsError(-error, `${opName(opcode)}: errno ${-error}`);
    }
    return new DataView(reply.buffer, reply.byteOffset + Size.outHeader, reply.byteLength - Size.outHeader);
  }

  /** Sends a request that gets no reply (FORGET, BATCH_FORGET, INTERRUPT) on hiprio. */
  async cast(opcode: number, nodeid: number, parts: readonly Uint8Array[]): Promise<void> {
    await this.send(fuseRequest(opcode, this.unique++, nodeid, parts, this.ids), 0, true);
  }

  /** The unique the next request gets (for INTERRUPT). */
  get nextUnique(): bigint {
    return this.unique;
  }

  /** INIT: agrees the protocol; `initFlags`, `maxWrite` and `minor` say what was agreed. */
  async init(flags = InitFlag.ASYNC_READ | InitFlag.POSIX_LOCKS | InitFlag.BIG_WRITES | InitFlag.DO_READDIRPLUS | InitFlag.MAX_PAGES | InitFlag.PARALLEL_DIROPS): Promise<void> {
    const s = new Struct(64).u32(0, FUSE_MAJOR).u32(4, FUSE_MINOR).u32(8, 128 << 10).u32(12, flags);
    const v = await this.call(Op.INIT, 0, [s.bytes]);
    this.minor = v.getUint32(4, true);
    this.initFlags = v.getUint32(12, true);
    this.maxWrite = v.getUint32(20, true);
  }

  /** LOOKUP `name` in `parent` (the server counts one reference). */
  async lookup(parent: number, name: string): Promise<FuseEntry> {
    return readEntry(await this.call(Op.LOOKUP, parent, [cstr(name)]), 0);
  }

  /** FORGET `nlookup` references to `nodeid` (no reply; on hiprio). */
  async forget(nodeid: number, nlookup: number): Promise<void> {
    await this.cast(Op.FORGET, nodeid, [new Struct(8).u64(0, nlookup).bytes]);
  }

  /** BATCH_FORGET: [nodeid, nlookup] pairs (no reply; on hiprio). */
  async batchForget(items: readonly [number, number][]): Promise<void> {
    const s = new Struct(8 + 16 * items.length).u32(0, items.length);
    items.forEach(([id, n], i) => s.u64(8 + 16 * i, id).u64(16 + 16 * i, n));
    await this.cast(Op.BATCH_FORGET, 0, [s.bytes]);
  }

  /** GETATTR (with the open handle `fh` when given). */
  async getattr(nodeid: number, fh?: number): Promise<FileAttr> {
    const s = new Struct(16).u32(0, fh === undefined ? 0 : 1).u64(8, fh ?? 0);
    return readAttr(await this.call(Op.GETATTR, nodeid, [s.bytes]), 16);
  }

  /** SETATTR with raw FATTR_* `valid` bits and fields. */
  async setattr(nodeid: number, a: { valid: number; fh?: number; size?: number; atime?: number; mtime?: number; mode?: number; uid?: number; gid?: number }): Promise<FileAttr> {
    const s = new Struct(Size.setattrIn)
      .u32(0, a.valid)
      .u64(8, a.fh ?? 0)
      .u64(16, a.size ?? 0)
      .u64(32, a.atime ?? 0)
      .u64(40, a.mtime ?? 0)
      .u32(68, a.mode ?? 0)
      .u32(76, a.uid ?? 0)
      .u32(80, a.gid ?? 0);
    return readAttr(await this.call(Op.SETATTR, nodeid, [s.bytes]), 16);
  }

  /** READLINK: a symlink's target. */
  async readlink(nodeid: number): Promise<string> {
    const v = await this.call(Op.READLINK, nodeid, []);
    return dec.decode(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
  }

  /** SYMLINK `name` in `parent` pointing to `target`. */
  async symlink(parent: number, name: string, target: string): Promise<FuseEntry> {
    return readEntry(await this.call(Op.SYMLINK, parent, [cstr(name), cstr(target)]), 0);
  }

  /** MKNOD `name` in `parent` with `mode` (type and permissions). */
  async mknod(parent: number, name: string, mode: number, rdev = 0, umask = 0): Promise<FuseEntry> {
    return readEntry(await this.call(Op.MKNOD, parent, [new Struct(16).u32(0, mode).u32(4, rdev).u32(8, umask).bytes, cstr(name)]), 0);
  }

  /** MKDIR `name` in `parent`. */
  async mkdir(parent: number, name: string, mode = 0o755, umask = 0): Promise<FuseEntry> {
    return readEntry(await this.call(Op.MKDIR, parent, [new Struct(8).u32(0, mode).u32(4, umask).bytes, cstr(name)]), 0);
  }

  /** UNLINK `name` in `parent`. */
  async unlink(parent: number, name: string): Promise<void> {
    await this.call(Op.UNLINK, parent, [cstr(name)]);
  }

  /** RMDIR `name` in `parent`. */
  async rmdir(parent: number, name: string): Promise<void> {
    await this.call(Op.RMDIR, parent, [cstr(name)]);
  }

  /** RENAME (flags 0) or RENAME2. */
  async rename(parent: number, name: string, newParent: number, newName: string, flags = 0): Promise<void> {
    if (flags === 0) await this.call(Op.RENAME, parent, [new Struct(8).u64(0, newParent).bytes, cstr(name), cstr(newName)]);
    else await this.call(Op.RENAME2, parent, [new Struct(16).u64(0, newParent).u32(8, flags).bytes, cstr(name), cstr(newName)]);
  }

  /** LINK: a new name `newName` in `newParent` for `nodeid`. */
  async link(nodeid: number, newParent: number, newName: string): Promise<FuseEntry> {
    return readEntry(await this.call(Op.LINK, newParent, [new Struct(8).u64(0, nodeid).bytes, cstr(newName)]), 0);
  }

  /** OPEN with O_* `flags` (default O_RDWR) and FUSE_OPEN_* `openFlags`: the handle. */
  async open(nodeid: number, flags = 2, openFlags = 0): Promise<number> {
    return (await this.openReply(nodeid, flags, openFlags)).fh;
  }

  /** OPEN, as open(): the handle and the reply's FOPEN_* flags (`fopen`: DIRECT_IO, KEEP_CACHE, NOFLUSH, ...). */
  async openReply(nodeid: number, flags = 2, openFlags = 0): Promise<{ fh: number; fopen: number }> {
    const v = await this.call(Op.OPEN, nodeid, [new Struct(8).u32(0, flags).u32(4, openFlags).bytes]);
    return { fh: Number(v.getBigUint64(0, true)), fopen: v.getUint32(8, true) };
  }

  /** OPENDIR: the handle. */
  async opendir(nodeid: number): Promise<number> {
    return Number((await this.call(Op.OPENDIR, nodeid, [new Struct(8).bytes])).getBigUint64(0, true));
  }

  /**
   * CREATE `name` in `parent` and open it (flags default O_RDWR | O_CREAT; FUSE_OPEN_* `openFlags`):
   * the entry, the handle and the reply's FOPEN_* flags (`fopen`).
   */
  async create(parent: number, name: string, mode = 0o644, flags = 0o102, umask = 0, openFlags = 0): Promise<{ entry: FuseEntry; fh: number; fopen: number }> {
    const v = await this.call(Op.CREATE, parent, [new Struct(16).u32(0, flags).u32(4, mode).u32(8, umask).u32(12, openFlags).bytes, cstr(name)]);
    return { entry: readEntry(v, 0), fh: Number(v.getBigUint64(Size.entryOut, true)), fopen: v.getUint32(Size.entryOut + 8, true) };
  }

  /** READ up to `size` bytes at `offset`. */
  async read(nodeid: number, fh: number, offset: number, size: number): Promise<Uint8Array> {
    const v = await this.call(Op.READ, nodeid, [new Struct(Size.readIn).u64(0, fh).u64(8, offset).u32(16, size).bytes], Size.outHeader + size);
    return new Uint8Array(v.buffer, v.byteOffset, v.byteLength).slice();
  }

  /** WRITE `data` at `offset` (FUSE_WRITE_* `writeFlags`): the bytes written. */
  async write(nodeid: number, fh: number, offset: number, data: Uint8Array, writeFlags = 0): Promise<number> {
    const v = await this.call(Op.WRITE, nodeid, [new Struct(Size.writeIn).u64(0, fh).u64(8, offset).u32(16, data.length).u32(20, writeFlags).bytes, data]);
    return v.getUint32(0, true);
  }

  /** FLUSH (a close of one descriptor). */
  async flush(nodeid: number, fh: number, lockOwner = 0n): Promise<void> {
    await this.call(Op.FLUSH, nodeid, [new Struct(Size.flushIn).u64(0, fh).u64(16, lockOwner).bytes]);
  }

  /** FSYNC (`datasync`: FUSE_FSYNC_FDATASYNC). */
  async fsync(nodeid: number, fh: number, datasync = false): Promise<void> {
    await this.call(Op.FSYNC, nodeid, [new Struct(Size.fsyncIn).u64(0, fh).u32(8, datasync ? 1 : 0).bytes]);
  }

  /** RELEASE: the last close of a file handle. */
  async release(nodeid: number, fh: number): Promise<void> {
    await this.call(Op.RELEASE, nodeid, [new Struct(Size.releaseIn).u64(0, fh).bytes]);
  }

  /** RELEASEDIR: the last close of a directory handle. */
  async releasedir(nodeid: number, fh: number): Promise<void> {
    await this.call(Op.RELEASEDIR, nodeid, [new Struct(Size.releaseIn).u64(0, fh).bytes]);
  }

  /** One READDIR or READDIRPLUS (`plus`) call of at most `size` bytes from cookie `offset`. */
  async readdir(nodeid: number, fh: number, offset: number, size = 4096, plus = false): Promise<FuseDirent[]> {
    const v = await this.call(plus ? Op.READDIRPLUS : Op.READDIR, nodeid, [new Struct(Size.readIn).u64(0, fh).u64(8, offset).u32(16, size).bytes], Size.outHeader + size);
    const out: FuseDirent[] = [];
    let p = 0;
    while (p < v.byteLength) {
      let entry: FuseEntry | null | undefined;
      if (plus) {
        const e = readEntry(v, p);
        entry = e.nodeid === 0 ? null : e;
        p += Size.entryOut;
      }
      const namelen = v.getUint32(p + 16, true);
      const name = dec.decode(new Uint8Array(v.buffer, v.byteOffset + p + Size.dirent, namelen));
      out.push({ ino: Number(v.getBigUint64(p, true)), off: Number(v.getBigUint64(p + 8, true)), type: v.getUint32(p + 20, true), name, ...(plus ? { entry } : {}) });
      p = (p + Size.dirent + namelen + 7) & ~7;
    }
    return out;
  }

  /** Every entry of a directory (opendir, readdir until empty, releasedir). */
  async list(nodeid: number, plus = false): Promise<FuseDirent[]> {
    const fh = await this.opendir(nodeid);
    const all: FuseDirent[] = [];
    let off = 0;
    for (;;) {
      const part = await this.readdir(nodeid, fh, off, 4096, plus);
      if (part.length === 0) break;
      all.push(...part);
      off = part[part.length - 1].off;
    }
    await this.releasedir(nodeid, fh);
    return all;
  }

  /** STATFS. */
  async statfs(nodeid = 1): Promise<StatFs> {
    const v = await this.call(Op.STATFS, nodeid, []);
    const n = (o: number) => Number(v.getBigUint64(o, true));
    return { blocks: n(0), bfree: n(8), bavail: n(16), files: n(24), ffree: n(32), bsize: v.getUint32(40, true), namelen: v.getUint32(44, true), frsize: v.getUint32(48, true) };
  }

  /** SETXATTR `name` = `value` (`flags`: XATTR_CREATE / XATTR_REPLACE). */
  async setxattr(nodeid: number, name: string, value: Uint8Array, flags = 0): Promise<void> {
    await this.call(Op.SETXATTR, nodeid, [new Struct(8).u32(0, value.length).u32(4, flags).bytes, cstr(name), value]);
  }

  /** GETXATTR with `size` 0: the value's size; else the value (ERANGE if larger than `size`). */
  async getxattr(nodeid: number, name: string, size = 4096): Promise<Uint8Array | number> {
    const v = await this.call(Op.GETXATTR, nodeid, [new Struct(8).u32(0, size).bytes, cstr(name)], Size.outHeader + Math.max(size, 8));
    if (size === 0) return v.getUint32(0, true);
    return new Uint8Array(v.buffer, v.byteOffset, v.byteLength).slice();
  }

  /** LISTXATTR: the names. */
  async listxattr(nodeid: number, size = 4096): Promise<string[]> {
    const v = await this.call(Op.LISTXATTR, nodeid, [new Struct(8).u32(0, size).bytes], Size.outHeader + Math.max(size, 8));
    const s = dec.decode(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
    return s.split('\0').filter((x) => x.length > 0);
  }

  /** REMOVEXATTR `name`. */
  async removexattr(nodeid: number, name: string): Promise<void> {
    await this.call(Op.REMOVEXATTR, nodeid, [cstr(name)]);
  }

  /** FALLOCATE with `mode` (FALLOC_FL_* bits). */
  async fallocate(nodeid: number, fh: number, offset: number, length: number, mode = 0): Promise<void> {
    await this.call(Op.FALLOCATE, nodeid, [new Struct(Size.fallocateIn).u64(0, fh).u64(8, offset).u64(16, length).u32(24, mode).bytes]);
  }

  /** LSEEK with SEEK_DATA / SEEK_HOLE `whence`: the new offset. */
  async lseek(nodeid: number, fh: number, offset: number, whence: number): Promise<number> {
    return Number((await this.call(Op.LSEEK, nodeid, [new Struct(Size.lseekIn).u64(0, fh).u64(8, offset).u32(16, whence).bytes])).getBigUint64(0, true));
  }

  private lk(fh: number, owner: bigint, l: FileLock): Uint8Array {
    return new Struct(Size.lkIn)
      .u64(0, fh)
      .u64(8, owner)
      .u64(16, l.start === Infinity ? OFFSET_MAX : BigInt(l.start))
      .u64(24, l.end === Infinity ? OFFSET_MAX : BigInt(l.end))
      .u32(32, l.type)
      .u32(36, l.pid).bytes;
  }

  /** GETLK: the lock that conflicts with `l` for `owner` (type F_UNLCK: none). */
  async getlk(nodeid: number, fh: number, owner: bigint, l: FileLock): Promise<FileLock> {
    const v = await this.call(Op.GETLK, nodeid, [this.lk(fh, owner, l)]);
    const s = v.getBigUint64(0, true);
    const e = v.getBigUint64(8, true);
    return { start: s >= OFFSET_MAX ? Infinity : Number(s), end: e >= OFFSET_MAX ? Infinity : Number(e), type: v.getUint32(16, true), pid: v.getUint32(20, true) };
  }

  /** SETLK, or SETLKW when `wait`. */
  async setlk(nodeid: number, fh: number, owner: bigint, l: FileLock, wait = false): Promise<void> {
    await this.call(wait ? Op.SETLKW : Op.SETLK, nodeid, [this.lk(fh, owner, l)]);
  }

  /** INTERRUPT the request with this unique (no reply; on hiprio). */
  async interrupt(unique: bigint): Promise<void> {
    await this.cast(Op.INTERRUPT, 0, [new Struct(8).u64(0, unique).bytes]);
  }

  /** DESTROY: ends the session. */
  async destroy(): Promise<void> {
    await this.call(Op.DESTROY, 0, []);
  }
}
