// A small vhost-user front-end for tests, the way QEMU drives a back-end: a real socketpair,
// guest RAM in a memfd mapped on both sides, eventfds for kick and call. Rings are driven by
// the project's driver queues over the same memory (the "guest driver").
import assert from 'node:assert/strict';
import { native } from '../../src/native/index.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Monitor } from '../../src/monitor/monitor.js';
import type { VhostUserBackend } from '../../src/transports/vhost-user/backend.js';
import type { VhostUserErrorKind } from '../../src/transports/vhost-user/errors.js';
import { HEADER_SIZE, Req, memRegionPayload, statePayload, u64Payload, vringAddrPayload } from '../../src/transports/vhost-user/protocol.js';
import * as raw from '../../src/probe/raw-session.js';
import { USER_BASE, memTablePayload, message } from '../../src/probe/raw-session.js';

export { USER_BASE, memTablePayload, memRegionPayload, message };
import type { DriverQueue, RingFormat } from '../../src/virtqueue/queue.js';
import { createDriverQueue } from '../../src/virtqueue/create.js';
import { layoutPackedQueue } from '../../src/virtqueue/packed/driver.js';
import { layoutSplitQueue } from '../../src/virtqueue/split/driver.js';

export const n = native();


/**
 * How long a wait for the back-end may last before the test fails (../wait.ts). Waits end on
 * the event (an fd turning readable, the connection closing), never on a time: the bound only
 * keeps a broken back-end from hanging the suite.
 */
export { WAIT_MS, until } from '../wait.js';
import { WAIT_MS } from '../wait.js';

/** Resolves true when `fd` is readable (or its peer hung up), false after `timeoutMs` (src/probe/raw-session.ts). */
export function readable(fd: number, timeoutMs = WAIT_MS): Promise<boolean> {
  return raw.readable(fd, timeoutMs);
}

/** Resolves when `backend` ends its connection (its lastError is then set); fails after `timeoutMs`. */
export function backendClosed(backend: VhostUserBackend, timeoutMs = WAIT_MS): Promise<void> {
  if (backend.lastError !== '') return Promise.resolve();
  return new Promise((res, rej) => {
    const prev = backend.onClose;
    const timer = setTimeout(() => {
      backend.onClose = prev;
      rej(new Error(`the back-end did not end the connection in ${timeoutMs} ms`));
    }, timeoutMs);
    backend.onClose = (end) => {
      backend.onClose = prev;
      clearTimeout(timer);
      prev(end);
      res();
    };
  });
}

/**
 * A round trip through the back-end's message queue: GET_FEATURES and its reply. The back-end
 * handles messages in order, so when the reply is here every message sent before it has been
 * acted on (QEMU's enforce_reply does the same when REPLY_ACK is not negotiated). Not usable
 * while a stop (GET_VRING_BASE) holds the messages behind it.
 */
export async function barrier(fe: TestFrontEnd): Promise<void> {
  await fe.ask(Req.GET_FEATURES);
}

/** Waits for one message on `fd` (a reply, or a back-end request on the back-end channel). */
export async function receive(fd: number, timeoutMs = WAIT_MS): Promise<Uint8Array> {
  return raw.receive(fd, timeoutMs);
}

/** One message and the fds that came with it (src/probe/raw-session.ts). */
export function receiveMessage(fd: number, timeoutMs = WAIT_MS): Promise<{ data: Uint8Array; fds: number[] }> {
  return raw.receiveMessage(fd, timeoutMs);
}

export interface TestRing {
  queue: DriverQueue;
  kick: number;
  call: number;
  /** Waits until the back-end signals the call eventfd; returns the count read (0: timed out after `timeoutMs`). */
  waitCall(timeoutMs?: number): Promise<number>;
  /**
   * Waits, call by call, until `count` used buffers are waiting in the driver queue (requests
   * that complete in separate batches signal separately); false after `timeoutMs`.
   */
  waitUsed(count: number, timeoutMs?: number): Promise<boolean>;
}

export class TestFrontEnd {
  front: number;
  readonly memfd: number;
  readonly ram: ArrayBuffer;
  readonly guest: GuestMemory;
  /** Fds closed by close(). */
  readonly fds: number[] = [];

  constructor(
    public backend: VhostUserBackend,
    readonly ramSize = 1 << 20,
  ) {
    this.front = this.connect(backend);
    this.memfd = n.memfdCreate('guest', ramSize);
    this.ram = n.mmap(this.memfd, 0, ramSize);
    this.guest = new GuestMemory([{ guestAddr: 0, size: ramSize, buffer: this.ram, concurrent: true }]);
  }

  /**
   * A new connection to `backend` (a back-end restarted after a crash, say): guest RAM and the
   * fds this front-end holds stay. Returns the front-end's socket, also kept in `front`.
   */
  connect(backend: VhostUserBackend): number {
    const [front, back] = n.socketpair();
    backend.serve(back);
    this.front = front;
    this.fds.push(front);
    return front;
  }

  send(request: number, payload?: Uint8Array, fds: number[] = [], flags = 1): void {
    n.sendmsg(this.front, message(request, payload, flags), fds);
  }

  /** Sends a request that has a reply and returns the reply's payload. */
  async ask(request: number, payload?: Uint8Array): Promise<DataView> {
    this.send(request, payload);
    const r = await receive(this.front);
    return new DataView(r.buffer, HEADER_SIZE);
  }

  /** SET_MEM_TABLE with one region: all of guest RAM at guest address 0. */
  sendMemTable(): void {
    this.send(Req.SET_MEM_TABLE, memTablePayload(this.ramSize), [this.memfd]);
  }

  /** Guest RAM the VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS way: one ADD_MEM_REG instead of SET_MEM_TABLE. */
  sendMemSlot(flags = 1): void {
    this.send(Req.ADD_MEM_REG, memRegionPayload(0, this.ramSize, USER_BASE), [this.memfd], flags);
  }

  /** Regions plugged in after guest RAM (unmapped and closed by close()). */
  private readonly plugged: PluggedRegion[] = [];

  /**
   * Plugs in one more region (its own memfd) at `guestAddr`, the way QEMU hot-adds memory:
   * the driver side sees it at once, the back-end through ADD_MEM_REG.
   */
  plugRegion(guestAddr: number, size: number, flags = 1): PluggedRegion {
    const memfd = n.memfdCreate('guest-plugged', size);
    const ram = n.mmap(memfd, 0, size);
    const r = { guestAddr, size, memfd, ram };
    this.plugged.push(r);
    this.guest.addRegions([{ guestAddr, size, buffer: ram, userAddr: USER_BASE + guestAddr, concurrent: true }]);
    this.send(Req.ADD_MEM_REG, memRegionPayload(guestAddr, size, USER_BASE + guestAddr), [memfd], flags);
    return r;
  }

  /** Unplugs a region: REM_MEM_REG (with its fd when `withFd`: QEMU 7.2 sends one, later QEMUs none). */
  unplugRegion(r: PluggedRegion, flags = 1, withFd = false): void {
    this.send(Req.REM_MEM_REG, memRegionPayload(r.guestAddr, r.size, USER_BASE + r.guestAddr), withFd ? [r.memfd] : [], flags);
    this.guest.removeRegions(r.guestAddr, r.size);
  }

  /** SET_VRING_NUM / ADDR / BASE / CALL / KICK for a ring laid out at `base` in guest RAM. */
  /**
   * `options.logAddr`: the used ring's writes are logged there (VHOST_VRING_F_LOG, as QEMU sets
   * it while it migrates).
   */
  setRing(index: number, format: RingFormat, size: number, base: number, ringBase: number, options: { eventIdx: boolean; logAddr?: number }, existing?: DriverQueue): TestRing {
    const layout = format === 'packed' ? layoutPackedQueue(base, size) : layoutSplitQueue(base, size);
    const queue = existing ?? createDriverQueue(format, this.guest, index, size, base, { eventIdx: options.eventIdx, indirect: false, indirectMax: 0 }, new Monitor(), () => undefined);
    this.send(Req.SET_VRING_NUM, statePayload(index, size));
    const log = options.logAddr !== undefined; // VHOST_VRING_F_LOG (flags bit 0) and where
    this.send(Req.SET_VRING_ADDR, vringAddrPayload(index, USER_BASE + layout.desc, USER_BASE + layout.used, USER_BASE + layout.avail, log ? 1 : 0, options.logAddr ?? 0));
    this.send(Req.SET_VRING_BASE, statePayload(index, ringBase));
    const call = n.eventfd();
    const kick = n.eventfd();
    this.fds.push(call, kick);
    this.send(Req.SET_VRING_CALL, u64Payload(BigInt(index)), [call]);
    this.send(Req.SET_VRING_KICK, u64Payload(BigInt(index)), [kick]);
    this.send(Req.SET_VRING_ENABLE, statePayload(index, 1));
    const waitCall = async (timeoutMs = WAIT_MS) => {
      // The call eventfd turning readable is the event; no polling.
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const got = n.eventfdRead(call);
        if (got > 0) return got;
        if (!(await readable(call, Math.max(0, deadline - Date.now())))) return 0;
      }
    };
    return {
      queue,
      kick,
      call,
      waitCall,
      waitUsed: async (count: number, timeoutMs = WAIT_MS) => {
        const deadline = Date.now() + timeoutMs;
        while (queue.usedPending() < count) {
          if ((await waitCall(Math.max(0, deadline - Date.now()))) === 0) return queue.usedPending() >= count;
        }
        return true;
      },
    };
  }

  /** GET_VRING_BASE: stops the ring; returns the base the back-end answered. */
  async getVringBase(index: number): Promise<number> {
    const v = await this.ask(Req.GET_VRING_BASE, statePayload(index, 0));
    return v.getUint32(4, true);
  }

  u16(addr: number): number {
    return new DataView(this.ram).getUint16(addr, true);
  }

  bytes(addr: number, len: number): Uint8Array {
    return new Uint8Array(this.ram, addr, len);
  }

  /** Closes everything the front-end holds and ends the back-end's connection. */
  close(): void {
    this.backend.close();
    for (const fd of [this.memfd, ...this.fds]) {
      try {
        n.close(fd);
      } catch {
        // already closed
      }
    }
    this.fds.length = 0;
    n.munmap(this.ram);
    for (const r of this.plugged.splice(0)) {
      n.munmap(r.ram);
      n.close(r.memfd);
    }
  }
}

/** SET_LOG_BASE's payload: log size, log offset. */
export function logPayload(size: number, offset = 0): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, BigInt(size), true);
  v.setBigUint64(8, BigInt(offset), true);
  return b;
}

/** A memory region plugged in after guest RAM (its own memfd, mapped on the front-end side too). */
export interface PluggedRegion {
  guestAddr: number;
  size: number;
  memfd: number;
  ram: ArrayBuffer;
}

/**
 * Waits until the back-end ends the connection and checks why (its lastError, and the kind of
 * the error that ended it) and that the socket is closed without a reply; a reset counts as
 * closed (the back-end may close with messages of ours still unread).
 */
export async function closedWith(fe: TestFrontEnd, reason: RegExp, kind: VhostUserErrorKind): Promise<void> {
  await backendClosed(fe.backend);
  assert.match(fe.backend.lastError, reason);
  assert.equal(fe.backend.lastFailure?.kind, kind, `the kind of "${fe.backend.lastError}"`);
  let end: number | string;
  try {
    end = n.recvmsg(fe.front, new Uint8Array(HEADER_SIZE)).bytes;
  } catch (err) {
    end = (err as { code?: string }).code ?? String(err);
  }
  assert.ok(end === 0 || end === 'ECONNRESET', `the socket was closed without a reply (${end})`);
}

// ------------------------------------------------------------------ a front-end over a real socket

// The raw front-end on a real unix socket path (a `virtio-ts serve` process, or
// qemu-storage-daemon) lives in src/probe/raw-session.ts: `virtio-ts probe --hostile` uses it too.
export { RawSession as SocketFrontEnd, RawSplitRing as SplitTestRing, CANARY, type Ending } from '../../src/probe/raw-session.js';
