/**
 * POSIX byte-range locks (fcntl F_GETLK / F_SETLK / F_SETLKW) for one file system: a table per
 * inode of who holds which range, with waiters for F_SETLKW. Providers that keep their locks in
 * JavaScript use it ({@link MemoryFs} does); a host-directory provider may use the host's own.
 *
 * Semantics as fcntl(2): locks belong to an owner (the kernel's lock owner, one per open file
 * table); an owner's new lock replaces its own locks on the range (splitting or merging them);
 * read locks share, a write lock excludes other owners. Deadlock detection is not done (a
 * waiter waits until the lock is free or its wait is aborted). Browser-safe.
 */
import { Errno, FsError, LockType, type FileLock } from './vfs.js';

interface Held {
  owner: bigint;
  type: number;
  start: number;
  end: number;
  pid: number;
}

interface Waiter {
  owner: bigint;
  lock: FileLock;
  resolve: () => void;
  reject: (e: unknown) => void;
  signal?: AbortSignal;
  onAbort?: () => void;
}

const overlaps = (a: { start: number; end: number }, b: { start: number; end: number }) => a.start <= b.end && b.start <= a.end;

/** Lock tables of every inode of one file system. */
export class PosixLocks {
  private readonly held = new Map<number, Held[]>();
  private readonly waiting = new Map<number, Waiter[]>();

  /** The first lock of another owner that conflicts with `lock` on `ino`, or null. */
  private conflict(ino: number, owner: bigint, lock: FileLock): Held | null {
    for (const h of this.held.get(ino) ?? []) {
      if (h.owner === owner || !overlaps(h, lock)) continue;
      if (h.type === LockType.F_WRLCK || lock.type === LockType.F_WRLCK) return h;
    }
    return null;
  }

  /** F_GETLK: the conflicting lock, or `lock` with type F_UNLCK. */
  get(ino: number, owner: bigint, lock: FileLock): FileLock {
    const c = this.conflict(ino, owner, lock);
    return c === null ? { ...lock, type: LockType.F_UNLCK } : { start: c.start, end: c.end, type: c.type, pid: c.pid };
  }

  /**
   * F_SETLK (wait false: EAGAIN on a conflict) or F_SETLKW (a Promise that settles once the
   * lock is taken, or rejects with EINTR when `signal` aborts).
   */
  set(ino: number, owner: bigint, lock: FileLock, wait: boolean, signal?: AbortSignal): void | Promise<void> {
    if (lock.type !== LockType.F_UNLCK && lock.type !== LockType.F_RDLCK && lock.type !== LockType.F_WRLCK) throw new FsError(Errno.EINVAL, `lock type ${lock.type}`);
    if (!(lock.start >= 0) || !(lock.end >= lock.start)) throw new FsError(Errno.EINVAL, 'lock range');
    if (lock.type === LockType.F_UNLCK || this.conflict(ino, owner, lock) === null) {
      this.apply(ino, owner, lock);
      return;
    }
    if (!wait) throw new FsError(Errno.EAGAIN);
    if (signal?.aborted) throw new FsError(Errno.EINTR);
    return new Promise<void>((resolve, reject) => {
      const w: Waiter = { owner, lock, resolve, reject, signal };
      if (signal !== undefined) {
        w.onAbort = () => {
          this.dropWaiter(ino, w);
          reject(new FsError(Errno.EINTR));
        };
        signal.addEventListener('abort', w.onAbort, { once: true });
      }
      let list = this.waiting.get(ino);
      if (list === undefined) this.waiting.set(ino, (list = []));
      list.push(w);
    });
  }

  /** Drops every lock `owner` holds on `ino` (close of its last descriptor there). */
  releaseOwner(ino: number, owner: bigint): void {
    this.apply(ino, owner, { start: 0, end: Infinity, type: LockType.F_UNLCK, pid: 0 });
  }

  /** Drops all locks and fails the waiters of `ino` (the node is gone). */
  forget(ino: number): void {
    this.held.delete(ino);
    for (const w of this.waiting.get(ino) ?? []) {
      this.unlisten(w);
      w.reject(new FsError(Errno.ENOENT));
    }
    this.waiting.delete(ino);
  }

  /** Locks held on `ino` (for tests). */
  locksOf(ino: number): readonly FileLock[] {
    return (this.held.get(ino) ?? []).map((h) => ({ start: h.start, end: h.end, type: h.type, pid: h.pid }));
  }

  private unlisten(w: Waiter): void {
    if (w.signal !== undefined && w.onAbort !== undefined) w.signal.removeEventListener('abort', w.onAbort);
  }

  private dropWaiter(ino: number, w: Waiter): void {
    const list = this.waiting.get(ino);
    if (list === undefined) return;
    const i = list.indexOf(w);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this.waiting.delete(ino);
  }

  /** Sets `owner`'s locks on the range to `lock.type` (F_UNLCK: none), then wakes waiters that now fit. */
  private apply(ino: number, owner: bigint, lock: FileLock): void {
    const list = this.held.get(ino) ?? [];
    const next: Held[] = [];
    for (const h of list) {
      if (h.owner !== owner || !overlaps(h, lock)) {
        next.push(h);
        continue;
      }
      // The part of the old lock outside the new range stays.
      if (h.start < lock.start) next.push({ ...h, end: lock.start - 1 });
      if (h.end > lock.end) next.push({ ...h, start: lock.end + 1 });
    }
    if (lock.type !== LockType.F_UNLCK) next.push({ owner, type: lock.type, start: lock.start, end: lock.end, pid: lock.pid });
    if (next.length === 0) this.held.delete(ino);
    else this.held.set(ino, next);
    this.wake(ino);
  }

  private wake(ino: number): void {
    const list = this.waiting.get(ino);
    if (list === undefined) return;
    for (const w of [...list]) {
      if (this.conflict(ino, w.owner, w.lock) !== null) continue;
      this.dropWaiter(ino, w);
      this.unlisten(w);
      this.apply(ino, w.owner, w.lock);
      w.resolve();
      return; // apply() woke the rest
    }
  }
}
