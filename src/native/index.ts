/**
 * The native addon (native/addon.c): the one module the rest of the code imports for fd passing,
 * mmap, memfd, eventfd and fd watches. Node only. Errors from its calls are JS Errors whose
 * `code` is the errno name (ENOENT, EBADF, ...).
 *
 * Where the binary comes from (node-gyp-build's order): build/Release (compiled at install, or by
 * `npm run build:native` in a checkout), else the package's prebuilt binary for this platform
 * (prebuilds/linux-x64, prebuilds/linux-arm64, built by scripts/prebuild.mjs when the package is
 * packed). Without either, the library still works; native() throws a NativeAddonError.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { readlinkSync } from 'node:fs';
import { VirtioTsError } from '../errors.js';
import type { NativeFs } from './fs.js';

export type { NativeFs } from './fs.js';

/** The addon's calls (native/addon.c and, for file systems, native/fs.c). */
export interface NativeAddon extends NativeFs {
  /** A connected pair of non-blocking unix stream sockets. */
  socketpair(): [number, number];
  /** A listening unix stream socket (non-blocking). */
  listen(path: string, backlog?: number): number;
  /** The accepted fd (non-blocking), or -1 when none is waiting. */
  accept(fd: number): number;
  connect(path: string): number;
  /** Bytes sent with `fds` as SCM_RIGHTS, or -1 when the socket is full (never blocks). */
  sendmsg(fd: number, data: Uint8Array, fds?: number[]): number;
  /** Bytes received (-1: nothing yet, 0: end of stream) and the fds that came with them (CLOEXEC). */
  recvmsg(fd: number, into: Uint8Array): { bytes: number; fds: number[]; truncated: boolean };
  close(fd: number): void;
  memfdCreate(name: string, size: number): number;
  /** An ArrayBuffer over a shared mapping of `fd` (at most 4 GiB: map big regions in pieces). */
  mmap(fd: number, offset: number, length: number, writable?: boolean): ArrayBuffer;
  /**
   * 1 when `fd` can no longer shrink (a memfd sealed with F_SEAL_SHRINK, already or by this
   * call), 0 when it cannot be sealed (not a memfd, or its seals are sealed).
   */
  sealShrink(fd: number): number;
  /** Unmaps now and detaches the ArrayBuffer (its byteLength becomes 0). */
  munmap(buffer: ArrayBuffer): void;
  /**
   * SIGBUS faults absorbed so far, process-wide: a page of a mapping from mmap() that lay past
   * its file's end when touched (the file shrank) is replaced by a zero page instead of killing
   * the process. A SIGBUS anywhere else is left to the previous handler.
   */
  faultCount(): number;
  /** Whether a page of this mapping (from mmap(), not yet unmapped) faulted that way. */
  faulted(buffer: ArrayBuffer): boolean;
  eventfd(initial?: number): number;
  /** The counter, reset to 0 (0 when it was 0). */
  eventfdRead(fd: number): number;
  eventfdWrite(fd: number, value?: number): void;
  /**
   * preadv2(RWF_NOWAIT): bytes read from the page cache without waiting, -1 when the read
   * would wait for the disk, -2 when the file system cannot tell (then use a normal read).
   */
  preadvNowait(fd: number, buffers: readonly Uint8Array[], offset: number): number;
  /**
   * Calls `callback(events)` on this thread's loop while `fd` is ready (1 readable, 2 writable,
   * 4 disconnect: only when watching for readable; -1 error).
   */
  watch(fd: number, readable: boolean, writable: boolean, callback: (events: number) => void): { close(): void };
  /**
   * Watches an eventfd: each time it is readable the addon reads it (resetting the counter) and
   * calls `callback(count)` with the counter read (a read that finds it already 0 calls
   * nothing; a failed read or poll is a negative count: -errno, or -1). One call into
   * JavaScript per wakeup instead of a watch callback and an eventfdRead: the kick path of a
   * vhost-user ring.
   */
  watchEventfd(fd: number, callback: (count: number) => void): { close(): void };
  /**
   * native/loop.c: whether this thread's event loop keeps idle-time metrics (what
   * `performance.eventLoopUtilization()` reads; Node turns them on). With them on, libuv polls
   * twice each time the loop would wait (once without waiting, to tell idle time from events
   * already there), one more system call per wakeup. Returns false when the addon does not know
   * this libuv's private layout (1.39 to 1.51 known), and then changes nothing.
   */
  loopIdleMetrics(on: boolean): boolean;
  /**
   * native/tap.c: /dev/net/tun attached to the TAP interface `name` (IFF_TAP | IFF_NO_PI; made if
   * it does not exist), non-blocking; `vnetHdrBytes` > 0 adds IFF_VNET_HDR with that header
   * size. Throws with code ENOENT (no /dev/net/tun), EPERM (no CAP_NET_ADMIN), EBUSY (held
   * elsewhere), EINVAL (the name is not a TAP interface).
   */
  tapOpen(name: string, vnetHdrBytes: number): { fd: number; name: string };
  /** TUNSETOFFLOAD: the TUN_F_* offloads the kernel may hand this TAP's reader. */
  tapSetOffload(fd: number, flags: number): void;
  /** One read(): bytes (a whole frame or datagram), -1 when nothing is waiting. */
  fdRead(fd: number, into: Uint8Array): number;
  /** One writev() of `a` then `b`: bytes written, -1 when it would block (EAGAIN, ENOBUFS). */
  fdWrite2(fd: number, a: Uint8Array, b?: Uint8Array): number;
  /** A non-blocking unix datagram socket bound to `path` (which must not exist). */
  dgramBind(path: string): number;
  /** Connects a datagram socket to `path`: '' when done, else the errno name (ENOENT, ECONNREFUSED). */
  dgramConnect(fd: number, path: string): string;
}

/**
 * Why the native addon cannot be used:
 * - `addon-missing`: no binary for this platform (no prebuilt one in the package, and none was
 *   compiled at install, which needs a C compiler, make and python3);
 * - `addon-load-failed`: a binary was found but did not load (e.g. a C library older than the
 *   glibc 2.28 the prebuilt binaries need, or a binary for another platform).
 */
export type NativeAddonErrorKind = 'addon-missing' | 'addon-load-failed';

/** The native addon is not available; `kind` says why, the message says how to get it. */
export class NativeAddonError extends VirtioTsError<NativeAddonErrorKind> {}

const HOW =
  'The library does not need it; vhost-user (`virtio-ts serve`) does. To build it, install a C compiler, make and python3, then run `npm rebuild virtio-ts` (in a checkout: `npm run build:native`).';

let cached: NativeAddon | null = null;

/** The addon (loaded once), or a NativeAddonError saying why it is not available. */
export function native(): NativeAddon {
  if (cached !== null) return cached;
  // dist/src/native/index.js -> the package root, where build/ and prebuilds/ are.
  const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
  const require = createRequire(import.meta.url);
  const gypBuild = require('node-gyp-build') as { path(dir: string): string };
  const where = `${process.platform}-${process.arch}, Node ${process.versions.node}`;
  let file: string;
  try {
    file = gypBuild.path(root);
  } catch (err) {
    throw new NativeAddonError(
      'addon-missing',
      `the virtio-ts native addon is not available for ${where}: the package has no prebuilt binary for it (prebuilds/ holds linux-x64 and linux-arm64, glibc) and none was compiled at install. ${HOW}`,
      { cause: err },
    );
  }
  try {
    cached = require(file) as NativeAddon;
  } catch (err) {
    throw new NativeAddonError(
      'addon-load-failed',
      `the virtio-ts native addon ${file} does not load on ${where}: ${err instanceof Error ? err.message : String(err)}. ${HOW}`,
      { cause: err },
    );
  }
  return cached;
}

/**
 * Resolves true when `fd` becomes readable or writable as asked (or its peer hangs up), false
 * after `timeoutMs`: one fd watch on the event loop, no polling, closed either way.
 */
export function fdReady(n: Pick<NativeAddon, 'watch'>, fd: number, readable: boolean, writable: boolean, timeoutMs: number): Promise<boolean> {
  return new Promise((res) => {
    let done = false;
    const finish = (ok: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      watch.close();
      res(ok);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    const watch = n.watch(fd, readable, writable, () => finish(true));
  });
}

export const POLL_READABLE = 1;
export const POLL_WRITABLE = 2;
export const POLL_DISCONNECT = 4;

/**
 * Whether `fd` is an eventfd (Linux names it anon_inode:[eventfd]). A kick or call fd that is
 * anything else (a file is always "readable", a socket reads short) would make the ring spin
 * or fail: it is refused before it is used.
 */
export function isEventfd(fd: number): boolean {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`) === 'anon_inode:[eventfd]';
  } catch {
    return false;
  }
}
