/**
 * The FUSE server: one FUSE session over any {@link FsProvider}. The virtio-fs device hands it
 * each request's device-readable bytes and writes the reply it returns into the request's
 * device-writable buffers; a test hands it bytes directly.
 *
 * Every request is untrusted input: the header's length, the opcode, every struct's size,
 * names (NUL-terminated inside the request, 1 to 255 bytes, no `/`, not `.` or `..`, UTF-8),
 * sizes the driver asks for (bounded by the reply room it gave and by max_write / max_read)
 * and nodeids (only those the server handed out and the kernel has not forgotten) are checked
 * before the provider is called. A request that fails a check gets an error reply (EINVAL for
 * a malformed request, EIO for one before INIT, ESTALE for an unknown nodeid, ENOSYS for an
 * unknown opcode); nothing a driver sends throws out of {@link FuseServer.handle} or hangs it.
 *
 * The nodeid table: the server counts the kernel's references to each node (FUSE nlookup:
 * one per entry reply: LOOKUP, CREATE, MKNOD, MKDIR, SYMLINK, LINK, READDIRPLUS) and lowers
 * them on FORGET / BATCH_FORGET; at zero the node is forgotten (`provider.forget`) and its
 * number refused until handed out again. The root (nodeid 1) is never forgotten.
 *
 * A new FUSE_INIT ends the session and starts another (spec 5.11.6.1): every nodeid is
 * forgotten. Big-endian sessions are not served: an INIT whose opcode reads 26 only as
 * big-endian is not recognised as INIT, and nothing else is served before INIT.
 *
 * Browser-safe.
 */
import { Errno, FsError, LockType, ROOT_INO, S_IFMT, type FileAttr, type FileLock, type FsContext, type FsProvider, type MaybePromise, type OpenResult, type SetAttr, type StatFs } from '../vfs.js';
import { Fattr, Fopen, FSYNC_FDATASYNC, FUSE_MAJOR, FUSE_MINOR, FUSE_MIN_MINOR, GETATTR_FH, InHeader, InitFlag, LK_FLOCK, NAME_MAX, OFFSET_MAX, OPEN_KILL_SUIDGID, Op, Size, TARGET_MAX, WRITE_KILL_SUIDGID, XATTR_SIZE_MAX, opName } from './wire.js';

/** How a server is set up. */
export interface FuseServerOptions {
  /** Seconds the guest may cache a name (entry_valid; default 1). */
  entryTimeout?: number;
  /** Seconds the guest may cache attributes (attr_valid; default 1). */
  attrTimeout?: number;
  /** max_write offered at INIT (default 1 MiB; 4096 to 16 MiB). */
  maxWrite?: number;
  /** Called for provider bugs (a throw that is not an FsError) and refused requests, for logs. */
  log?: (message: string, fields?: Record<string, unknown>) => void;
  /**
   * false: SETXATTR, GETXATTR, LISTXATTR and REMOVEXATTR answer ENOSYS whatever the provider
   * has, as virtiofsd's default `-o no_xattr` does. Linux then stops sending each of them for
   * the session (fc->no_getxattr ...), so a newly written file costs one request fewer (the
   * GETXATTR(security.capability) before its first write) and the guest sees no xattrs at all
   * (getfattr/setfattr fail with EOPNOTSUPP). Default true.
   */
  xattr?: boolean;
  /**
   * false: POSIX_LOCKS is not agreed at INIT even when the provider has getlk/setlk, as
   * virtiofsd's default `-o no_posix_lock`: the guest kernel keeps fcntl locks itself (they
   * hold between the guest's processes, not against the host's), sends no GETLK/SETLK/SETLKW
   * (answered ENOSYS if it does), and needs no FLUSH to drop them at close, so a handle the
   * provider opened with `noFlush` gets FOPEN_NOFLUSH. Default true.
   */
  posixLocks?: boolean;
}

/** A reply: the out header and fixed part (`head`), and data that follows it (`data`, may be null). */
export interface FuseReply {
  /**
   * fuse_out_header (len = head.length + data.length) and the reply's fixed struct: a view
   * into a larger buffer (read it at its byteOffset), owned by the reply.
   */
  head: Uint8Array;
  /** Bytes after `head` (read data, a symlink target, xattrs, directory entries), or null. */
  data: Uint8Array | null;
  /** head.length + data.length. */
  length: number;
}

/** A parsed fuse_in_header. */
export interface FuseHeader {
  len: number;
  opcode: number;
  unique: bigint;
  nodeid: number;
  uid: number;
  gid: number;
  pid: number;
}

/** Counters, for tests and logs. */
export interface FuseStats {
  requests: number;
  errors: number;
  malformed: number;
  forgets: number;
}

/** Requests and error replies by opcode (index: the opcode; 64 and above counted at 0). */
export interface FuseOpStats {
  requests: Uint32Array;
  errors: Uint32Array;
}

/** Made on first use: a module that builds them at import fails where the platform has none yet (a bare vm context). */
let encoder: InstanceType<typeof TextEncoder> | null = null;
let decoder: InstanceType<typeof TextDecoder> | null = null;
const enc = { encode: (s: string) => (encoder ??= new TextEncoder()).encode(s) };
const utf8 = { decode: (b: Uint8Array) => (decoder ??= new TextDecoder('utf-8', { fatal: true })).decode(b) };
const EMPTY = new Uint8Array(0);

/** Thrown inside the server for a malformed request: replied to as EINVAL (or its errno). */
class Malformed extends Error {
  constructor(
    readonly errno: number,
    message: string,
  ) {
    super(message);
  }
}

/** Applies `f` to a value or a Promise of it: synchronous stays synchronous. */
function after<T, R>(v: MaybePromise<T>, f: (t: T) => R): MaybePromise<R> {
  if (v !== null && typeof v === 'object' && typeof (v as { then?: unknown }).then === 'function') return (v as Promise<T>).then(f) as MaybePromise<R>;
  return f(v as T);
}

/** {@link after} for an `f` that may itself answer later: the result settles with it. */
function chain<T, R>(v: MaybePromise<T>, f: (t: T) => MaybePromise<R>): MaybePromise<R> {
  return after(v, f) as MaybePromise<R>;
}

/** The u64 at `at` of `v` as a safe number (two u32 loads: no BigInt per field), or a Malformed EINVAL past 2^53. */
function safe(v: DataView, at: number, what: string): number {
  const hi = v.getUint32(at + 4, true);
  if (hi > 0x1fffff) throw new Malformed(Errno.EINVAL, `${what} ${v.getBigUint64(at, true)} is beyond 2^53`);
  return hi * 0x100000000 + v.getUint32(at, true);
}

/**
 * Cursor over one request's body. The server keeps one and resets it per request: every
 * handler reads its request before it calls the provider, never after.
 */
class Body {
  pos = 0;
  bytes: Uint8Array = EMPTY;
  view: DataView = new DataView(new ArrayBuffer(0));
  end = 0;
  /** This cursor over `bytes` (read through `view`) from `start` to `end`. */
  reset(bytes: Uint8Array, view: DataView, start: number, end: number): this {
    this.bytes = bytes;
    this.view = view;
    this.pos = start;
    this.end = end;
    return this;
  }
  get left(): number {
    return this.end - this.pos;
  }
  need(n: number, what: string): number {
    if (this.left < n) throw new Malformed(Errno.EINVAL, `${what}: ${n} bytes needed, ${this.left} in the request`);
    const p = this.pos;
    this.pos += n;
    return p;
  }
  /** A NUL-terminated string of at most `max` bytes (not counting the NUL). */
  cstring(max: number, what: string): Uint8Array {
    const limit = Math.min(this.end, this.pos + max + 1);
    const nul = this.bytes.subarray(this.pos, limit).indexOf(0);
    if (nul < 0) throw new Malformed(this.left > max ? Errno.ENAMETOOLONG : Errno.EINVAL, `${what} is not NUL-terminated within ${max} bytes`);
    const s = this.bytes.subarray(this.pos, this.pos + nul);
    this.pos += nul + 1;
    return s;
  }
  /** An entry name: 1..255 bytes, no '/', not '.' or '..', UTF-8. */
  name(what = 'name'): string {
    const b = this.cstring(NAME_MAX, what);
    if (b.length === 0) throw new Malformed(Errno.EINVAL, `empty ${what}`);
    if (b.indexOf(0x2f) >= 0) throw new Malformed(Errno.EINVAL, `${what} contains '/'`);
    if (b[0] === 0x2e && (b.length === 1 || (b.length === 2 && b[1] === 0x2e))) throw new Malformed(Errno.EINVAL, `${what} is '.' or '..'`);
    return decode(b, what);
  }
}

function decode(b: Uint8Array, what: string): string {
  try {
    return utf8.decode(b);
  } catch {
    throw new Malformed(Errno.EILSEQ, `${what} is not UTF-8`);
  }
}

/**
 * Reply heads are carved from 64 KiB slabs: each reply gets a view of fresh (zeroed, never
 * reused) slab bytes, and a full slab is dropped for a new one, left to the garbage collector
 * with the views still holding it. A `new Uint8Array(n)` per reply would be an ArrayBuffer
 * with its own off-heap backing store (V8 keeps only arrays of up to 64 bytes on its heap):
 * a calloc, a registry entry and a sweep per request, a tenth of a GETATTR's CPU time.
 */
const SLAB = 64 * 1024;
let slab: ArrayBuffer | null = null;
let slabView: DataView | null = null;
let slabAt = SLAB;

/** `size` fresh bytes (at most SLAB) of the current slab: their offset in `slab` / `slabView`. */
function carve(size: number): number {
  if (slabAt + size > SLAB) {
    slab = new ArrayBuffer(SLAB);
    slabView = new DataView(slab);
    slabAt = 0;
  }
  const at = slabAt;
  slabAt = (at + size + 7) & ~7;
  return at;
}

/** Builds one reply: fuse_out_header then a fixed struct of `n` bytes, written through `v` at `x` (the struct's offset). */
function replyOf(unique: bigint, n: number, data: Uint8Array | null = null): { reply: FuseReply; v: DataView; x: number } {
  const size = Size.outHeader + n;
  const at = carve(size);
  const v = slabView!;
  const head = new Uint8Array(slab!, at, size);
  const length = size + (data?.length ?? 0);
  v.setUint32(at, length, true);
  v.setBigUint64(at + 8, unique, true);
  return { reply: { head, data, length }, v, x: at + Size.outHeader };
}

/** An error reply (-errno). */
export function errorReply(unique: bigint, errno: number): FuseReply {
  const { reply, v, x } = replyOf(unique, 0);
  v.setInt32(x - Size.outHeader + 4, -errno, true);
  return reply;
}

/** The bytes of `s` in UTF-8, as TextEncoder writes it (a lone surrogate: U+FFFD, 3 bytes). */
function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

/** Writes `s` (`len` = utf8Length(s) bytes) into `out` at `at`: ASCII byte by byte, anything else through TextEncoder. */
function putName(out: Uint8Array, at: number, s: string, len: number): void {
  if (len === s.length) for (let i = 0; i < len; i++) out[at + i] = s.charCodeAt(i);
  else (encoder ??= new TextEncoder()).encodeInto(s, out.subarray(at, at + len));
}

/** A non-negative number as a little-endian u64 (two u32 stores: no BigInt per field). */
function u64(v: DataView, off: number, x: number): void {
  // NaN or +Infinity from a provider is its bug (answered EIO), as BigInt() of it would throw.
  if (x !== x || x === Infinity) throw new RangeError(`${x} is not a u64`);
  const n = x > 0 ? Math.floor(x) : 0;
  v.setUint32(off, n % 0x100000000, true);
  v.setUint32(off + 4, Math.floor(n / 0x100000000), true);
}

/** fuse_attr at `off`. */
function putAttr(v: DataView, off: number, a: FileAttr): void {
  u64(v, off, a.ino);
  u64(v, off + 8, a.size);
  u64(v, off + 16, a.blocks);
  u64(v, off + 24, a.atime);
  u64(v, off + 32, a.mtime);
  u64(v, off + 40, a.ctime);
  v.setUint32(off + 48, a.atimeNsec >>> 0, true);
  v.setUint32(off + 52, a.mtimeNsec >>> 0, true);
  v.setUint32(off + 56, a.ctimeNsec >>> 0, true);
  v.setUint32(off + 60, a.mode >>> 0, true);
  v.setUint32(off + 64, a.nlink >>> 0, true);
  v.setUint32(off + 68, a.uid >>> 0, true);
  v.setUint32(off + 72, a.gid >>> 0, true);
  v.setUint32(off + 76, a.rdev >>> 0, true);
  v.setUint32(off + 80, a.blksize > 0 ? a.blksize >>> 0 : 4096, true);
  v.setUint32(off + 84, 0, true);
}

/** Whether an attr from a provider is usable (a provider bug otherwise). */
function checkAttr(a: FileAttr): FileAttr {
  if (a === null || typeof a !== 'object' || !Number.isSafeInteger(a.ino) || a.ino <= 0) throw new Error(`provider returned attributes without a valid ino (${String(a?.ino)})`);
  return a;
}

/** Whether an open flag set asks to write (O_WRONLY, O_RDWR, O_TRUNC, O_APPEND). */
function writes(flags: number): boolean {
  return (flags & 3) !== 0 || (flags & 0o1000) !== 0 || (flags & 0o2000) !== 0;
}

interface Pending {
  abort: AbortController;
}

/** The FUSE session: see the module doc. */
export class FuseServer {
  readonly provider: FsProvider;
  /** The negotiated minor version (0 before INIT). */
  minor = 0;
  /** Whether INIT completed. */
  initialized = false;
  /** The flags agreed at INIT. */
  flags = 0;
  readonly maxWrite: number;
  readonly stats: FuseStats = { requests: 0, errors: 0, malformed: 0, forgets: 0 };
  /** Requests and error replies by opcode. */
  readonly opStats: FuseOpStats = { requests: new Uint32Array(64), errors: new Uint32Array(64) };
  private readonly entrySec: number;
  private readonly entryNsec: number;
  private readonly attrSec: number;
  private readonly attrNsec: number;
  private readonly log: (message: string, fields?: Record<string, unknown>) => void;
  /** nodeid -> the kernel's references (nlookup). */
  private readonly lookups = new Map<number, number>();
  /** Requests still running that FUSE_INTERRUPT may abort (SETLKW), by unique. */
  private readonly pending = new Map<bigint, Pending>();
  private setxattrExt = false;
  /** A DataView of `viewOf` from its start: the last request buffer seen (see handle). */
  private view: DataView | null = null;
  private viewOf: ArrayBufferLike | null = null;
  /** The request cursor, reset per request (see Body). */
  private readonly body = new Body();
  /** FuseServerOptions.xattr. */
  private readonly xattr: boolean;
  /** FuseServerOptions.posixLocks. */
  private readonly posixLocks: boolean;

  /** A session over `provider`. */
  constructor(provider: FsProvider, options: FuseServerOptions = {}) {
    this.provider = provider;
    const et = options.entryTimeout ?? 1;
    const at = options.attrTimeout ?? 1;
    this.entrySec = Math.floor(et);
    this.entryNsec = Math.round((et - Math.floor(et)) * 1e9);
    this.attrSec = Math.floor(at);
    this.attrNsec = Math.round((at - Math.floor(at)) * 1e9);
    const mw = options.maxWrite ?? 1 << 20;
    if (!Number.isInteger(mw) || mw < 4096 || mw > 16 << 20) throw new RangeError(`maxWrite ${mw}: 4096 to 16 MiB`);
    this.maxWrite = mw;
    this.xattr = options.xattr ?? true;
    this.posixLocks = options.posixLocks ?? true;
    this.log = options.log ?? (() => {});
  }

  /** The largest request the server takes: a WRITE of max_write bytes with its headers, and slack for extensions. */
  get maxRequest(): number {
    return this.maxWrite + Size.inHeader + Size.writeIn + 4096;
  }

  /** The kernel's references to `nodeid` (0: unknown). For tests. */
  lookupCount(nodeid: number): number {
    return nodeid === ROOT_INO ? Infinity : (this.lookups.get(nodeid) ?? 0);
  }

  /** Nodeids the kernel holds (the root not counted). */
  get knownNodes(): number {
    return this.lookups.size;
  }

  /** Parses the header of `req` (null when it is shorter than one); `view`: a DataView of `req`, if the caller has one. */
  static header(req: Uint8Array, view?: DataView): FuseHeader | null {
    if (req.length < Size.inHeader) return null;
    const v = view ?? new DataView(req.buffer, req.byteOffset, req.byteLength);
    // The u64 nodeid as two u32 (no BigInt): past 2^53 it is no nodeid of ours (-1).
    const hi = v.getUint32(InHeader.nodeid + 4, true);
    const nodeid = hi >= 0x200000 ? -1 : hi * 0x100000000 + v.getUint32(InHeader.nodeid, true);
    return {
      len: v.getUint32(InHeader.len, true),
      opcode: v.getUint32(InHeader.opcode, true),
      unique: v.getBigUint64(InHeader.unique, true),
      nodeid,
      uid: v.getUint32(InHeader.uid, true),
      gid: v.getUint32(InHeader.gid, true),
      pid: v.getUint32(InHeader.pid, true),
    };
  }

  /**
   * Serves one request: `req` is its device-readable bytes, `room` the bytes of reply the
   * driver made room for (its device-writable part). Returns the reply (never longer than
   * `room`), null when the request gets none (FORGET, BATCH_FORGET, INTERRUPT, or `room` too
   * small for even a header), or a Promise of either. Never throws, never rejects.
   */
  handle(req: Uint8Array, room: number): MaybePromise<FuseReply | null> {
    this.stats.requests++;
    // One view of the request for the header and the body: the device hands every request in
    // the same buffer (from its start), whose view is kept; every read through it is bounded
    // by req.length (FuseServer.header, Body), never by the view's end.
    let v: DataView;
    if (req.byteOffset === 0 && req.buffer === this.viewOf) v = this.view!;
    else if (req.byteOffset === 0) {
      v = this.view = new DataView(req.buffer);
      this.viewOf = req.buffer;
    } else v = new DataView(req.buffer, req.byteOffset, req.byteLength);
    const h = FuseServer.header(req, v);
    if (h === null) {
      this.stats.malformed++;
      this.log('request shorter than fuse_in_header', { bytes: req.length });
      return room >= Size.outHeader ? (this.stats.errors++, errorReply(0n, Errno.EINVAL)) : null;
    }
    const slot = h.opcode < 64 ? h.opcode : 0;
    this.opStats.requests[slot]++;
    let out: MaybePromise<FuseReply | null>;
    try {
      out = this.dispatch(req, v, h, room);
    } catch (e) {
      return this.caught(e, h, room);
    }
    if (out !== null && typeof (out as Promise<unknown>).then === 'function') {
      return (out as Promise<FuseReply | null>).then(
        (r) => this.fit(r, h, room),
        (e: unknown) => this.caught(e, h, room),
      );
    }
    return this.fit(out as FuseReply | null, h, room);
  }

  /** A reply longer than the room the driver gave is an error (EIO), never written past its buffers. */
  private fit(r: FuseReply | null, h: FuseHeader, room: number): FuseReply | null {
    if (r === null) return null;
    if (room < Size.outHeader) return null;
    if (r.length > room) {
      this.log(`${opName(h.opcode)} reply of ${r.length} bytes does not fit the ${room} bytes the driver gave`, { opcode: h.opcode });
      return this.fail(h, Errno.EIO);
    }
    return r;
  }

  /** An errno a provider returned (lookupErrno, getxattrErrno): EIO for one that is not an errno (a provider bug). */
  private errnoReply(h: FuseHeader, errno: number): FuseReply {
    if (Number.isInteger(errno) && errno > 0 && errno < 4096) return this.fail(h, errno);
    this.log(`${opName(h.opcode)}: provider returned ${errno}, not an errno`, { opcode: h.opcode });
    return this.fail(h, Errno.EIO);
  }

  private fail(h: FuseHeader, errno: number): FuseReply {
    this.stats.errors++;
    this.opStats.errors[h.opcode < 64 ? h.opcode : 0]++;
    return errorReply(h.unique, errno);
  }

  private caught(e: unknown, h: FuseHeader, room: number): FuseReply | null {
    if (room < Size.outHeader || h.opcode === Op.FORGET || h.opcode === Op.BATCH_FORGET || h.opcode === Op.INTERRUPT) return null;
    if (e instanceof Malformed) {
      this.stats.malformed++;
      this.log(`${opName(h.opcode)}: ${e.message}`, { opcode: h.opcode, errno: e.errno });
      return this.fail(h, e.errno);
    }
    if (e instanceof FsError && Number.isInteger(e.errno) && e.errno > 0 && e.errno < 4096) return this.fail(h, e.errno);
    this.log(`${opName(h.opcode)}: provider failed: ${e instanceof Error ? e.message : String(e)}`, { opcode: h.opcode, stack: e instanceof Error ? e.stack : undefined });
    return this.fail(h, Errno.EIO);
  }

  /** The node `h` names, checked: the root or a nodeid the kernel holds. */
  private node(h: FuseHeader): number {
    return this.nodeOf(h.nodeid);
  }

  private nodeOf(id: number): number {
    if (id === ROOT_INO) return id;
    if (id <= 0 || !this.lookups.has(id)) throw new Malformed(Errno.ESTALE, `nodeid ${id} is not one the server handed out (or it was forgotten)`);
    return id;
  }

  private dispatch(req: Uint8Array, v: DataView, h: FuseHeader, room: number): MaybePromise<FuseReply | null> {
    if (h.len < Size.inHeader || h.len > req.length) throw new Malformed(Errno.EINVAL, `fuse_in_header.len ${h.len} is not within the ${req.length} bytes the driver gave`);
    const extlen = v.getUint16(InHeader.totalExtlen, true) * 8;
    if (extlen > h.len - Size.inHeader) throw new Malformed(Errno.EINVAL, `total_extlen ${extlen} bytes is longer than the request`);
    const b = this.body.reset(req, v, Size.inHeader, h.len - extlen);
    if (h.opcode === Op.INIT) return this.init(h, b);
    if (!this.initialized) {
      if (h.opcode === Op.FORGET || h.opcode === Op.BATCH_FORGET || h.opcode === Op.INTERRUPT) return null;
      throw new Malformed(Errno.EIO, `${opName(h.opcode)} before FUSE_INIT`);
    }
    // Its own object, not the header: a provider may keep or serialize it (the header holds a BigInt).
    const ctx: FsContext = { uid: h.uid, gid: h.gid, pid: h.pid };
    // One small method per opcode: V8 optimizes each on its own (a single function holding
    // every opcode's code was never optimized in a real session: too big for its tick budget,
    // its feedback changing with every new opcode), so dispatch stays this table.
    switch (h.opcode) {
      case Op.FORGET:
        return this.opForget(h, b, v);
      case Op.BATCH_FORGET:
        return this.opBatchForget(b, v);
      case Op.INTERRUPT:
        return this.opInterrupt(b, v);
      case Op.DESTROY:
        return this.opDestroy(h);
      case Op.LOOKUP:
        return this.opLookup(h, b, ctx);
      case Op.GETATTR:
        return this.opGetattr(h, b, v, ctx);
      case Op.SETATTR:
        return this.opSetattr(h, b, v, ctx);
      case Op.READLINK:
        return this.opReadlink(h, ctx);
      case Op.SYMLINK:
        return this.opSymlink(h, b, ctx);
      case Op.MKNOD:
        return this.opMknod(h, b, v, ctx);
      case Op.MKDIR:
        return this.opMkdir(h, b, v, ctx);
      case Op.UNLINK:
      case Op.RMDIR:
        return this.opUnlink(h, b, ctx);
      case Op.RENAME:
      case Op.RENAME2:
        return this.opRename(h, b, v, ctx);
      case Op.LINK:
        return this.opLink(h, b, v, ctx);
      case Op.OPEN:
      case Op.OPENDIR:
        return this.opOpen(h, b, v, ctx);
      case Op.CREATE:
        return this.opCreate(h, b, v, ctx);
      case Op.READ:
        return this.opRead(h, b, v, ctx, room);
      case Op.WRITE:
        return this.opWrite(h, b, v, ctx, req);
      case Op.STATFS:
        return this.opStatfs(h, ctx);
      case Op.RELEASE:
      case Op.RELEASEDIR:
        return this.opRelease(h, b, v, ctx);
      case Op.FSYNC:
      case Op.FSYNCDIR:
        return this.opFsync(h, b, v, ctx);
      case Op.FLUSH:
        return this.opFlush(h, b, v, ctx);
      case Op.SETXATTR:
        if (!this.xattr) throw new FsError(Errno.ENOSYS);
        return this.opSetxattr(h, b, v, ctx, req);
      case Op.GETXATTR:
      case Op.LISTXATTR:
        if (!this.xattr) throw new FsError(Errno.ENOSYS);
        return this.opGetxattr(h, b, v, ctx);
      case Op.REMOVEXATTR:
        if (!this.xattr) throw new FsError(Errno.ENOSYS);
        return this.opRemovexattr(h, b, ctx);
      case Op.READDIR:
      case Op.READDIRPLUS:
        return this.readdir(h, b, v, room, ctx);
      case Op.GETLK:
      case Op.SETLK:
      case Op.SETLKW:
        return this.lock(h, b, v, ctx);
      case Op.FALLOCATE:
        return this.opFallocate(h, b, v, ctx);
      case Op.LSEEK:
        return this.opLseek(h, b, v, ctx);
      case Op.SYNCFS:
        return this.opSyncfs(h);
      default:
        // ACCESS (the kernel checks permissions itself), BMAP, IOCTL, POLL, COPY_FILE_RANGE,
        // SETUPMAPPING / REMOVEMAPPING (no DAX window), TMPFILE and anything unknown: the
        // kernel falls back or fails the call with ENOSYS.
        throw new FsError(Errno.ENOSYS);
    }
  }

  /** FORGET. */
  private opForget(h: FuseHeader, b: Body, v: DataView): MaybePromise<FuseReply | null> {
    const n = b.left >= Size.forgetIn ? v.getBigUint64(b.need(8, 'fuse_forget_in'), true) : 0n;
    this.forget(h.nodeid, n);
    return null;
  }

  /** BATCH_FORGET. */
  private opBatchForget(b: Body, v: DataView): MaybePromise<FuseReply | null> {
    if (b.left < Size.batchForgetIn) return null;
    const count = v.getUint32(b.need(8, 'fuse_batch_forget_in'), true);
    // Only the entries the request holds: a count beyond them is cut to what is there.
    const n = Math.min(count, Math.floor(b.left / Size.forgetOne));
    for (let i = 0; i < n; i++) {
      const at = b.need(Size.forgetOne, 'fuse_forget_one');
      const id = v.getBigUint64(at, true);
      this.forget(id > BigInt(Number.MAX_SAFE_INTEGER) ? -1 : Number(id), v.getBigUint64(at + 8, true));
    }
    return null;
  }

  /** INTERRUPT. */
  private opInterrupt(b: Body, v: DataView): MaybePromise<FuseReply | null> {
    if (b.left >= Size.interruptIn) this.pending.get(v.getBigUint64(b.pos, true))?.abort.abort();
    return null;
  }

  /** DESTROY. */
  private opDestroy(h: FuseHeader): MaybePromise<FuseReply | null> {
    this.endSession();
    return replyOf(h.unique, 0).reply;
  }

  /** LOOKUP. */
  private opLookup(h: FuseHeader, b: Body, ctx: FsContext): MaybePromise<FuseReply | null> {
    const p = this.provider;
    const parent = this.node(h);
    const name = b.name();
    // A provider's lookupErrno may answer a miss with its errno, not a throw (see FsProvider).
    if (p.lookupErrno !== undefined) return after(p.lookupErrno(parent, name, ctx), (a) => (typeof a === 'number' ? this.errnoReply(h, a) : this.entry(h.unique, a)));
    return after(p.lookup(parent, name, ctx), (a) => this.entry(h.unique, a));
  }

  /** GETATTR. */
  private opGetattr(h: FuseHeader, b: Body, v: DataView, ctx: FsContext): MaybePromise<FuseReply | null> {
    const p = this.provider;
    const ino = this.node(h);
    let fh: number | null = null;
    if (b.left >= Size.getattrIn) {
      const at = b.need(Size.getattrIn, 'fuse_getattr_in');
      if ((v.getUint32(at, true) & GETATTR_FH) !== 0) fh = safe(v, at + 8, 'fh');
    }
    return after(p.getattr(ino, fh, ctx), (a) => this.attr(h.unique, a));
  }

  /** SETATTR. */
  private opSetattr(h: FuseHeader, b: Body, v: DataView, ctx: FsContext): MaybePromise<FuseReply | null> {
    const p = this.provider;
    const ino = this.node(h);
    const at = b.need(Size.setattrIn, 'fuse_setattr_in');
    const valid = v.getUint32(at, true);
    const c: SetAttr = {};
    const changes = valid & ~(Fattr.FH | Fattr.LOCKOWNER);
    if (changes !== 0) this.writable();
    if (valid & Fattr.MODE) c.mode = v.getUint32(at + 68, true);
    if (valid & Fattr.UID) c.uid = v.getUint32(at + 76, true);
    if (valid & Fattr.GID) c.gid = v.getUint32(at + 80, true);
    if (valid & Fattr.SIZE) c.size = safe(v, at + 16, 'size');
    if (valid & Fattr.ATIME) c.atime = valid & Fattr.ATIME_NOW ? 'now' : { sec: safe(v, at + 32, 'atime'), nsec: Math.min(v.getUint32(at + 56, true), 999999999) };
    if (valid & Fattr.MTIME) c.mtime = valid & Fattr.MTIME_NOW ? 'now' : { sec: safe(v, at + 40, 'mtime'), nsec: Math.min(v.getUint32(at + 60, true), 999999999) };
    if (valid & Fattr.CTIME) c.ctime = { sec: safe(v, at + 48, 'ctime'), nsec: Math.min(v.getUint32(at + 64, true), 999999999) };
    if (valid & Fattr.KILL_SUIDGID) c.killSuidgid = true;
    const fh = valid & Fattr.FH ? safe(v, at + 8, 'fh') : null;
    if (p.setattr === undefined) {
      if (changes !== 0) throw new FsError(Errno.ENOSYS);
      return after(p.getattr(ino, fh, ctx), (a) => this.attr(h.unique, a));
    }
    return after(p.setattr(ino, fh, c, ctx), (a) => this.attr(h.unique, a));
  }

  /** READLINK. */
  private opReadlink(h: FuseHeader, ctx: FsContext): MaybePromise<FuseReply | null> {
    const p = this.provider;
    const ino = this.node(h);
    return after(this.need(p.readlink).call(p, ino, ctx), (t) => {
      const bytes = enc.encode(t);
      return replyOf(h.unique, 0, bytes).reply;
    });
  }

  /** SYMLINK. */
  private opSymlink(h: FuseHeader, b: Body, ctx: FsContext): MaybePromise<FuseReply | null> {
    const p = this.provider;
    const parent = this.node(h);
    const name = b.name();
    const tb = b.cstring(TARGET_MAX, 'symlink target');
    if (tb.length === 0) throw new Malformed(Errno.ENOENT, 'empty symlink target');
    const target = decode(tb, 'symlink target');
    this.writable();
    return after(this.need(p.symlink).call(p, parent, name, target, ctx), (a) => this.entry(h.unique, a));
  }

  /** MKNOD. */
  private opMknod(h: FuseHeader, b: Body, v: DataView, ctx: FsContext): MaybePromise<FuseReply | null> {
    const p = this.provider;
    const parent = this.node(h);
    const at = b.need(Size.mknodIn, 'fuse_mknod_in');
    const name = b.name();
    this.writable();
    return after(this.need(p.mknod).call(p, parent, name, v.getUint32(at, true), v.getUint32(at + 4, true), v.getUint32(at + 8, true), ctx), (a) => this.entry(h.unique, a));
  }

  /** MKDIR. */
  private opMkdir(h: FuseHeader, b: Body, v: DataView, ctx: FsContext): MaybePromise<FuseReply | null> {
    const p = this.provider;
    const parent = this.node(h);
    const at = b.need(Size.mkdirIn, 'fuse_mkdir_in');
    const name = b.name();
    this.writable();
    return after(this.need(p.mkdir).call(p, parent, name, v.getUint32(at, true), v.getUint32(at + 4, true), ctx), (a) => this.entry(h.unique, a));
  }

  /** UNLINK / RMDIR. */
  private opUnlink(h: FuseHeader, b: Body, ctx: FsContext): MaybePromise<FuseReply | null> {
    const p = this.provider;
    const parent = this.node(h);
    const name = b.name();
    this.writable();
    const r = h.opcode === Op.UNLINK ? this.need(p.unlink).call(p, parent, name, ctx) : this.need(p.rmdir).call(p, parent, name, ctx);
    return after(r, () => replyOf(h.unique, 0).reply);
  }

  /** RENAME / RENAME2. */
  private opRename(h: FuseHeader, b: Body, v: DataView, ctx: FsContext): MaybePromise<FuseReply | null> {
    const p = this.provider;
    const parent = this.node(h);
    const two = h.opcode === Op.RENAME2;
    const at = b.need(two ? Size.rename2In : Size.renameIn, 'fuse_rename_in');
    const newParent = this.nodeOf(safe(v, at, 'newdir'));
    const flags = two ? v.getUint32(at + 8, true) : 0;
    const name = b.name('old name');
    const newName = b.name('new name');
    this.writable();
    return after(this.need(p.rename).call(p, parent, name, newParent, newName, flags, ctx), () => replyOf(h.unique, 0).reply);
  }

  /** LINK. */
  private opLink(h: FuseHeader, b: Body, v: DataView, ctx: FsContext): MaybePromise<FuseReply | null> {
    const p = this.provider;
    const newParent = this.node(h);
    const at = b.need(Size.linkIn, 'fuse_link_in');
    const ino = this.nodeOf(safe(v, at, 'oldnodeid'));
    const name = b.name();
    this.writable();
    return after(this.need(p.link).call(p, ino, newParent, name, ctx), (a) => this.entry(h.unique, a));
  }

  /** OPEN / OPENDIR. */
  private opOpen(h: FuseHeader, b: Body, v: DataView, ctx: FsContext): MaybePromise<FuseReply | null> {
    const p = this.provider;
    const ino = this.node(h);
    const at = b.need(Size.openIn, 'fuse_open_in');
    const flags = v.getUint32(at, true);
    if (h.opcode === Op.OPEN && writes(flags)) this.writable();
    const f = h.opcode === Op.OPEN ? p.open : p.opendir;
    if (f === undefined) return this.open(h.unique, { fh: 0 });
    const opened = f.call(p, ino, flags, ctx);
    // An O_TRUNC open by a caller without CAP_FSETID (HANDLE_KILLPRIV_V2): the bits go first.
    if (h.opcode === Op.OPEN && this.killPriv && (v.getUint32(at + 4, true) & OPEN_KILL_SUIDGID) !== 0) return chain(opened, (o) => after(this.killSuidgid(ino, o.fh, ctx), () => this.open(h.unique, o)));
    return after(opened, (o) => this.open(h.unique, o));
  }

  /** CREATE. */
  private opCreate(h: FuseHeader, b: Body, v: DataView, ctx: FsContext): MaybePromise<FuseReply | null> {
    const p = this.provider;
    const parent = this.node(h);
    const at = b.need(Size.createIn, 'fuse_create_in');
    const name = b.name();
    this.writable();
    const kill = this.killPriv && (v.getUint32(at + 12, true) & OPEN_KILL_SUIDGID) !== 0;
    const created = this.need(p.create).call(p, parent, name, v.getUint32(at + 4, true), v.getUint32(at + 8, true), v.getUint32(at, true), ctx);
    // O_CREAT | O_TRUNC of a file that was there, by a caller without CAP_FSETID (HANDLE_KILLPRIV_V2).
    const ready = kill ? chain(created, (r) => after(this.killSuidgid(checkAttr(r.attr).ino, r.fh, ctx), () => r)) : created;
    return after(ready, (r) => {
      const a = checkAttr(r.attr);
      const { reply, v: o, x } = replyOf(h.unique, Size.entryOut + Size.openOut);
      this.putEntry(o, x, a);
      this.putOpen(o, x + Size.entryOut, r);
      this.ref(a.ino);
      return reply;
    });
  }

  /** READ. */
  private opRead(h: FuseHeader, b: Body, v: DataView, ctx: FsContext, room: number): MaybePromise<FuseReply | null> {
    const p = this.provider;
    const ino = this.node(h);
    const at = b.need(Size.readIn, 'fuse_read_in');
    const fh = safe(v, at, 'fh');
    const offset = safe(v, at + 8, 'offset');
    const size = v.getUint32(at + 16, true);
    // Never more than the driver has room for, nor than max_write (Linux's max_read is unlimited; its reads follow max_pages).
    const want = Math.min(size, Math.max(0, room - Size.outHeader), Math.max(this.maxWrite, 1 << 20));
    return after(this.need(p.read).call(p, ino, fh, offset, want, ctx), (data) => {
      const d = data.length > want ? data.subarray(0, want) : data;
      return replyOf(h.unique, 0, d).reply;
    });
  }

  /** WRITE. */
  private opWrite(h: FuseHeader, b: Body, v: DataView, ctx: FsContext, req: Uint8Array): MaybePromise<FuseReply | null> {
    const p = this.provider;
    const ino = this.node(h);
    const at = b.need(Size.writeIn, 'fuse_write_in');
    const fh = safe(v, at, 'fh');
    const offset = safe(v, at + 8, 'offset');
    const size = v.getUint32(at + 16, true);
    if (size > this.maxWrite) throw new Malformed(Errno.EINVAL, `WRITE of ${size} bytes, max_write is ${this.maxWrite}`);
    const kill = this.killPriv && (v.getUint32(at + 20, true) & WRITE_KILL_SUIDGID) !== 0;
    const data = req.subarray(b.need(size, 'write data'), b.pos);
    this.writable();
    const written = this.need(p.write).call(p, ino, fh, offset, data, ctx);
    // A writer without CAP_FSETID (HANDLE_KILLPRIV_V2): set-user-ID and set-group-ID go, as a local write takes them.
    return after(kill ? chain(written, (n) => after(this.killSuidgid(ino, fh, ctx), () => n)) : written, (n) => {
      const { reply, v: o, x } = replyOf(h.unique, Size.writeOut);
      o.setUint32(x, Math.max(0, Math.min(n, size)) >>> 0, true);
      return reply;
    });
  }

  /** STATFS. */
  private opStatfs(h: FuseHeader, ctx: FsContext): MaybePromise<FuseReply | null> {
    const p = this.provider;
    const ino = this.node(h);
    const st: MaybePromise<StatFs> = p.statfs === undefined ? { blocks: 0, bfree: 0, bavail: 0, files: 0, ffree: 0, bsize: 4096, namelen: NAME_MAX, frsize: 4096 } : p.statfs(ino, ctx);
    return after(st, (s) => {
      const { reply, v: o, x: at } = replyOf(h.unique, Size.statfsOut);
      u64(o, at, s.blocks);
      u64(o, at + 8, s.bfree);
      u64(o, at + 16, s.bavail);
      u64(o, at + 24, s.files);
      u64(o, at + 32, s.ffree);
      o.setUint32(at + 40, s.bsize >>> 0, true);
      o.setUint32(at + 44, s.namelen >>> 0, true);
      o.setUint32(at + 48, s.frsize >>> 0, true);
      return reply;
    });
  }

  /** RELEASE / RELEASEDIR. */
  private opRelease(h: FuseHeader, b: Body, v: DataView, ctx: FsContext): MaybePromise<FuseReply | null> {
    const p = this.provider;
    const ino = this.node(h);
    const at = b.need(Size.releaseIn, 'fuse_release_in');
    const fh = safe(v, at, 'fh');
    const f = h.opcode === Op.RELEASE ? p.release : p.releasedir;
    if (f === undefined) return replyOf(h.unique, 0).reply;
    return after(f.call(p, ino, fh, ctx), () => replyOf(h.unique, 0).reply);
  }

  /** FSYNC / FSYNCDIR. */
  private opFsync(h: FuseHeader, b: Body, v: DataView, ctx: FsContext): MaybePromise<FuseReply | null> {
    const p = this.provider;
    const ino = this.node(h);
    const at = b.need(Size.fsyncIn, 'fuse_fsync_in');
    const fh = safe(v, at, 'fh');
    const datasync = (v.getUint32(at + 8, true) & FSYNC_FDATASYNC) !== 0;
    const f = h.opcode === Op.FSYNC ? p.fsync : p.fsyncdir;
    if (f === undefined) return replyOf(h.unique, 0).reply;
    return after(f.call(p, ino, fh, datasync, ctx), () => replyOf(h.unique, 0).reply);
  }

  /** FLUSH. */
  private opFlush(h: FuseHeader, b: Body, v: DataView, ctx: FsContext): MaybePromise<FuseReply | null> {
    const p = this.provider;
    const ino = this.node(h);
    const at = b.need(Size.flushIn, 'fuse_flush_in');
    const fh = safe(v, at, 'fh');
    if (p.flush === undefined) return replyOf(h.unique, 0).reply;
    return after(p.flush(ino, fh, v.getBigUint64(at + 16, true), ctx), () => replyOf(h.unique, 0).reply);
  }

  /** SETXATTR. */
  private opSetxattr(h: FuseHeader, b: Body, v: DataView, ctx: FsContext, req: Uint8Array): MaybePromise<FuseReply | null> {
    const p = this.provider;
    const ino = this.node(h);
    const at = b.need(this.setxattrExt ? Size.setxattrInExt : Size.setxattrIn, 'fuse_setxattr_in');
    const size = v.getUint32(at, true);
    const flags = v.getUint32(at + 4, true);
    const name = this.xattrName(b);
    if (size > XATTR_SIZE_MAX) throw new Malformed(Errno.E2BIG, `xattr value of ${size} bytes`);
    const value = req.subarray(b.need(size, 'xattr value'), b.pos);
    this.writable();
    return after(this.need(p.setxattr).call(p, ino, name, value, flags, ctx), () => replyOf(h.unique, 0).reply);
  }

  /** GETXATTR / LISTXATTR. */
  private opGetxattr(h: FuseHeader, b: Body, v: DataView, ctx: FsContext): MaybePromise<FuseReply | null> {
    const p = this.provider;
    const ino = this.node(h);
    const at = b.need(Size.getxattrIn, 'fuse_getxattr_in');
    const size = v.getUint32(at, true);
    const value: MaybePromise<Uint8Array | number> =
      h.opcode === Op.GETXATTR
        ? p.getxattrErrno !== undefined
          ? p.getxattrErrno(ino, this.xattrName(b), ctx)
          : this.need(p.getxattr).call(p, ino, this.xattrName(b), ctx)
        : after(this.need(p.listxattr).call(p, ino, ctx), (names) => {
            const parts = names.map((n) => enc.encode(n + '\0'));
            const out = new Uint8Array(parts.reduce((s, x) => s + x.length, 0));
            let o = 0;
            for (const x of parts) {
              out.set(x, o);
              o += x.length;
            }
            return out;
          });
    return after(value, (val) => {
      if (typeof val === 'number') return this.errnoReply(h, val);
      if (size === 0) {
        const { reply, v: o, x } = replyOf(h.unique, Size.getxattrOut);
        o.setUint32(x, val.length, true);
        return reply;
      }
      if (val.length > size) return this.fail(h, Errno.ERANGE);
      return replyOf(h.unique, 0, val).reply;
    });
  }

  /** REMOVEXATTR. */
  private opRemovexattr(h: FuseHeader, b: Body, ctx: FsContext): MaybePromise<FuseReply | null> {
    const p = this.provider;
    const ino = this.node(h);
    const name = this.xattrName(b);
    this.writable();
    return after(this.need(p.removexattr).call(p, ino, name, ctx), () => replyOf(h.unique, 0).reply);
  }

  /** FALLOCATE. */
  private opFallocate(h: FuseHeader, b: Body, v: DataView, ctx: FsContext): MaybePromise<FuseReply | null> {
    const p = this.provider;
    const ino = this.node(h);
    const at = b.need(Size.fallocateIn, 'fuse_fallocate_in');
    const fh = safe(v, at, 'fh');
    const offset = safe(v, at + 8, 'offset');
    const length = safe(v, at + 16, 'length');
    this.writable();
    return after(this.need(p.fallocate).call(p, ino, fh, offset, length, v.getUint32(at + 24, true), ctx), () => replyOf(h.unique, 0).reply);
  }

  /** LSEEK. */
  private opLseek(h: FuseHeader, b: Body, v: DataView, ctx: FsContext): MaybePromise<FuseReply | null> {
    const p = this.provider;
    const ino = this.node(h);
    const at = b.need(Size.lseekIn, 'fuse_lseek_in');
    const fh = safe(v, at, 'fh');
    const offset = safe(v, at + 8, 'offset');
    return after(this.need(p.lseek).call(p, ino, fh, offset, v.getUint32(at + 16, true), ctx), (pos) => {
      const { reply, v: o, x } = replyOf(h.unique, Size.lseekOut);
      u64(o, x, pos);
      return reply;
    });
  }

  /** SYNCFS. */
  private opSyncfs(h: FuseHeader): MaybePromise<FuseReply | null> {
    return replyOf(h.unique, 0).reply;
  }

  /**
   * A provider method, or ENOSYS when the provider has none. Not bound: callers use
   * `.call(provider, ...)` (a bound function per request was one more allocation each).
   */
  private need<F extends (...args: never[]) => unknown>(f: F | undefined): F {
    if (f === undefined) throw new FsError(Errno.ENOSYS);
    return f;
  }

  /** EROFS for a change to a read-only provider. */
  private writable(): void {
    if (this.provider.readOnly === true) throw new FsError(Errno.EROFS);
  }

  private xattrName(b: Body): string {
    const nb = b.cstring(NAME_MAX, 'xattr name');
    if (nb.length === 0) throw new Malformed(Errno.EINVAL, 'empty xattr name');
    return decode(nb, 'xattr name');
  }

  /** FUSE_INIT: version and flags (see the README's virtio-fs section for what is agreed). */
  private init(h: FuseHeader, b: Body): FuseReply {
    const v = b.view;
    const at = b.need(Size.initIn, 'fuse_init_in');
    const major = v.getUint32(at, true);
    const minor = v.getUint32(at + 4, true);
    const readahead = v.getUint32(at + 8, true);
    const flags = v.getUint32(at + 12, true);
    // A new INIT ends the session (spec 5.11.6.1): everything the kernel held is forgotten.
    this.endSession();
    if (major > FUSE_MAJOR) {
      // The kernel offers a newer major: answer ours alone; it sends INIT again with it.
      const { reply, v: o, x } = replyOf(h.unique, 8);
      o.setUint32(x, FUSE_MAJOR, true);
      o.setUint32(x + 4, FUSE_MINOR, true);
      return reply;
    }
    if (major < FUSE_MAJOR || minor < FUSE_MIN_MINOR) throw new Malformed(Errno.EPROTO, `FUSE ${major}.${minor} is older than ${FUSE_MAJOR}.${FUSE_MIN_MINOR}`);
    const p = this.provider;
    let want = InitFlag.ASYNC_READ | InitFlag.BIG_WRITES | InitFlag.DO_READDIRPLUS | InitFlag.READDIRPLUS_AUTO | InitFlag.MAX_PAGES | InitFlag.PARALLEL_DIROPS | InitFlag.ASYNC_DIO;
    if (this.posixLocks && p.setlk !== undefined && p.getlk !== undefined) want |= InitFlag.POSIX_LOCKS;
    // The provider drops security.capability itself and the server clears set-user-ID bits on
    // the kernel's word: Linux then skips its GETXATTR(security.capability) before every write.
    if (p.killsPriv === true && p.setattr !== undefined) want |= InitFlag.HANDLE_KILLPRIV_V2;
    this.flags = flags & want;
    this.setxattrExt = false;
    this.minor = Math.min(minor, FUSE_MINOR);
    this.initialized = true;
    const small = this.minor < 23;
    const { reply, v: o, x } = replyOf(h.unique, small ? Size.initOut22 : Size.initOut);
    o.setUint32(x, FUSE_MAJOR, true);
    o.setUint32(x + 4, this.minor, true);
    o.setUint32(x + 8, readahead, true);
    o.setUint32(x + 12, this.flags >>> 0, true);
    o.setUint16(x + 16, 64, true); // max_background
    o.setUint16(x + 18, 48, true); // congestion_threshold
    o.setUint32(x + 20, this.maxWrite, true);
    if (!small) {
      o.setUint32(x + 24, 1, true); // time_gran: nanoseconds
      o.setUint16(x + 28, Math.min(0xffff, Math.ceil(this.maxWrite / 4096)), true); // max_pages
    }
    return reply;
  }

  /**
   * Ends every SETLKW still waiting for a lock another owner holds: each is answered EINTR (as
   * FUSE_INTERRUPT would). A waiting lock waits on the guest's own processes, not on the host,
   * so a ring stop or a reset must not wait for it (a peer never waits forever). Returns how
   * many were waiting.
   */
  interruptWaits(): number {
    const n = this.pending.size;
    for (const p of this.pending.values()) p.abort.abort();
    return n;
  }

  /** Whether HANDLE_KILLPRIV_V2 was agreed: the server clears set-user-ID / set-group-ID bits when the kernel asks. */
  private get killPriv(): boolean {
    return (this.flags & InitFlag.HANDLE_KILLPRIV_V2) !== 0;
  }

  /**
   * Clears set-user-ID, and set-group-ID with group execute (without it the bit means
   * mandatory locking and stays), of regular file `ino`, as Linux does for a write or O_TRUNC
   * by a caller without CAP_FSETID. A file without them costs a getattr only.
   */
  private killSuidgid(ino: number, fh: number, ctx: FsContext): MaybePromise<void> {
    const p = this.provider;
    return chain(p.getattr(ino, fh, ctx), (a) => {
      const m = checkAttr(a).mode;
      if ((m & S_IFMT) !== 0o100000 || (m & (0o4000 | ((m & 0o010) !== 0 ? 0o2000 : 0))) === 0) return undefined;
      return after(this.need(p.setattr).call(p, ino, fh, { killSuidgid: true }, ctx), () => undefined);
    });
  }

  /** Ends the session: every nodeid forgotten, waiting locks aborted. */
  private endSession(): void {
    for (const id of [...this.lookups.keys()]) this.drop(id);
    for (const p of this.pending.values()) p.abort.abort();
    this.pending.clear();
    this.initialized = false;
    this.minor = 0;
  }

  private ref(ino: number): void {
    if (ino === ROOT_INO) return;
    this.lookups.set(ino, (this.lookups.get(ino) ?? 0) + 1);
  }

  private forget(id: number, n: bigint): void {
    this.stats.forgets++;
    if (id === ROOT_INO || id <= 0) return;
    const c = this.lookups.get(id);
    if (c === undefined) {
      this.log(`FORGET of nodeid ${id}, which the kernel does not hold`, { nodeid: id });
      return;
    }
    // More than the kernel holds: it holds none after this either.
    if (n >= BigInt(c)) this.drop(id);
    else this.lookups.set(id, c - Number(n));
  }

  private drop(id: number): void {
    this.lookups.delete(id);
    try {
      this.provider.forget?.(id);
    } catch (e) {
      this.log(`provider forget(${id}) failed: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  private putEntry(o: DataView, off: number, a: FileAttr): void {
    u64(o, off, a.ino);
    u64(o, off + 8, 0); // generation
    u64(o, off + 16, this.entrySec);
    u64(o, off + 24, this.attrSec);
    o.setUint32(off + 32, this.entryNsec, true);
    o.setUint32(off + 36, this.attrNsec, true);
    putAttr(o, off + 40, a);
  }

  private putOpen(o: DataView, off: number, r: OpenResult): void {
    u64(o, off, r.fh);
    // FOPEN_NOFLUSH only without remote POSIX locks: with them a FLUSH is how the kernel drops
    // the closing process's locks (fuse_setlk leaves FL_CLOSE_POSIX to fuse_flush).
    const noFlush = r.noFlush === true && (this.flags & InitFlag.POSIX_LOCKS) === 0;
    o.setUint32(off + 8, (r.directIo ? Fopen.DIRECT_IO : 0) | (r.keepCache ? Fopen.KEEP_CACHE : 0) | (noFlush ? Fopen.NOFLUSH : 0), true);
  }

  /** A fuse_entry_out reply: the kernel holds one more reference to the node. */
  private entry(unique: bigint, attr: FileAttr): FuseReply {
    const a = checkAttr(attr);
    const { reply, v, x } = replyOf(unique, Size.entryOut);
    this.putEntry(v, x, a);
    this.ref(a.ino);
    return reply;
  }

  private attr(unique: bigint, attr: FileAttr): FuseReply {
    const a = checkAttr(attr);
    const { reply, v, x } = replyOf(unique, Size.attrOut);
    u64(v, x, this.attrSec);
    v.setUint32(x + 8, this.attrNsec, true);
    putAttr(v, x + 16, a);
    return reply;
  }

  private open(unique: bigint, r: { fh: number; directIo?: boolean; keepCache?: boolean }): FuseReply {
    if (!Number.isSafeInteger(r.fh) || r.fh < 0) throw new Error(`provider returned fh ${String(r.fh)}`);
    const { reply, v, x } = replyOf(unique, Size.openOut);
    this.putOpen(v, x, r);
    return reply;
  }

  /** READDIR / READDIRPLUS: as many entries as fit the size asked and the room given. */
  private readdir(h: FuseHeader, b: Body, v: DataView, room: number, ctx: FsContext): MaybePromise<FuseReply> {
    const ino = this.node(h);
    const at = b.need(Size.readIn, 'fuse_read_in');
    const fh = safe(v, at, 'fh');
    const offset = safe(v, at + 8, 'offset');
    const size = Math.min(v.getUint32(at + 16, true), Math.max(0, room - Size.outHeader), 1 << 20);
    const plus = h.opcode === Op.READDIRPLUS;
    const per = plus ? Size.entryOut + Size.dirent : Size.dirent;
    const limit = Math.max(1, Math.floor(size / (per + 8)));
    const p = this.provider;
    return after(p.readdir(ino, fh, offset, limit, ctx), (entries): MaybePromise<FuseReply> => {
      // The records are written as the entries are read (names straight into the reply: no
      // encoded copy per name); an entry's fuse_entry_out when its lookup answers. The bytes
      // are fresh (zeroed): an entry left without attributes has nodeid 0, which the kernel
      // does not look up.
      const big = size > SLAB / 4;
      const base = big ? 0 : carve(size);
      const out = big ? new Uint8Array(size) : new Uint8Array(slab!, base, size);
      const o = big ? new DataView(out.buffer) : slabView!;
      let pos = 0;
      let waits: Promise<void>[] | null = null;
      for (let i = 0; i < entries.length; i++) {
        const e = entries[i];
        const len = utf8Length(e.name);
        if (len === 0 || len > NAME_MAX) continue;
        if (pos + ((per + len + 7) & ~7) > size) break;
        let d = pos;
        if (plus) {
          d += Size.entryOut;
          if (e.name !== '.' && e.name !== '..') {
            // An entry that vanished between readdir and its lookup goes without attributes.
            let a: MaybePromise<FileAttr | number> | null;
            try {
              a = p.lookupErrno !== undefined ? p.lookupErrno(ino, e.name, ctx) : p.lookup(ino, e.name, ctx);
            } catch {
              a = null;
            }
            if (typeof a === 'number') a = null;
            const at = pos;
            if (a !== null && typeof (a as Promise<FileAttr>).then === 'function') {
              (waits ??= []).push((a as Promise<FileAttr | number>).then((x) => (typeof x === 'number' ? undefined : this.plusEntry(out, o, base, at, x)), () => undefined));
            } else if (a !== null) this.plusEntry(out, o, base, at, a as FileAttr);
          }
        }
        u64(o, base + d, e.ino);
        u64(o, base + d + 8, e.off);
        o.setUint32(base + d + 16, len, true);
        o.setUint32(base + d + 20, ((e.type & S_IFMT) >>> 12) & 0xf, true);
        putName(out, d + Size.dirent, e.name, len);
        pos = (d + Size.dirent + len + 7) & ~7;
      }
      const used = pos;
      if (waits === null) return replyOf(h.unique, 0, out.subarray(0, used)).reply;
      return Promise.all(waits).then(() => replyOf(h.unique, 0, out.subarray(0, used)).reply);
    }) as MaybePromise<FuseReply>;
  }

  /**
   * A READDIRPLUS entry's fuse_entry_out at `at` of `out` (written through `o`, where `out`
   * starts at `base`): the kernel holds one more reference to the node. A bad attr (a provider
   * bug) leaves it zero: nodeid 0.
   */
  private plusEntry(out: Uint8Array, o: DataView, base: number, at: number, a: FileAttr): void {
    try {
      this.putEntry(o, base + at, checkAttr(a));
      this.ref(a.ino);
    } catch {
      out.fill(0, at, at + Size.entryOut);
    }
  }

  /** GETLK / SETLK / SETLKW (POSIX locks; flock locks are not negotiated). */
  private lock(h: FuseHeader, b: Body, v: DataView, ctx: FsContext): MaybePromise<FuseReply> {
    // Not agreed (posixLocks false): the guest's kernel keeps its locks itself.
    if ((this.flags & InitFlag.POSIX_LOCKS) === 0) throw new FsError(Errno.ENOSYS);
    const ino = this.node(h);
    const at = b.need(Size.lkIn, 'fuse_lk_in');
    const fh = safe(v, at, 'fh');
    const owner = v.getBigUint64(at + 8, true);
    const start = v.getBigUint64(at + 16, true);
    const end = v.getBigUint64(at + 24, true);
    const lock: FileLock = {
      start: start >= OFFSET_MAX ? Infinity : Number(start),
      end: end >= OFFSET_MAX ? Infinity : Number(end),
      type: v.getUint32(at + 32, true),
      pid: v.getUint32(at + 36, true),
    };
    if ((v.getUint32(at + 40, true) & LK_FLOCK) !== 0) throw new FsError(Errno.ENOSYS); // flock not negotiated
    if (lock.type !== LockType.F_RDLCK && lock.type !== LockType.F_WRLCK && lock.type !== LockType.F_UNLCK) throw new Malformed(Errno.EINVAL, `lock type ${lock.type}`);
    if (lock.end < lock.start) throw new Malformed(Errno.EINVAL, 'lock end before its start');
    const p = this.provider;
    if (h.opcode === Op.GETLK) {
      return after(this.need(p.getlk).call(p, ino, fh, owner, lock, ctx), (l) => {
        const { reply, v: o, x } = replyOf(h.unique, Size.lkOut);
        o.setBigUint64(x, l.start === Infinity ? OFFSET_MAX : BigInt(Math.max(0, Math.floor(l.start))), true);
        o.setBigUint64(x + 8, l.end === Infinity ? OFFSET_MAX : BigInt(Math.max(0, Math.floor(l.end))), true);
        o.setUint32(x + 16, l.type, true);
        o.setUint32(x + 20, l.pid >>> 0, true);
        return reply;
      });
    }
    const wait = h.opcode === Op.SETLKW;
    const abort = new AbortController();
    const r = this.need(p.setlk).call(p, ino, fh, owner, lock, wait, ctx, abort.signal);
    if (r !== undefined && typeof (r as Promise<void>).then === 'function') {
      this.pending.set(h.unique, { abort });
      const done = () => this.pending.delete(h.unique);
      return (r as Promise<void>).then(
        () => {
          done();
          return replyOf(h.unique, 0).reply;
        },
        (e: unknown) => {
          done();
          throw e;
        },
      );
    }
    return replyOf(h.unique, 0).reply;
  }
}
