// A small vhost-user front-end for tests, the way QEMU drives a back-end: a real socketpair,
// guest RAM in a memfd mapped on both sides, eventfds for kick and call. Rings are driven by
// the project's driver queues over the same memory (the "guest driver").
import assert from 'node:assert/strict';
import { ftruncateSync, openSync } from 'node:fs';
import { native } from '../../src/native/index.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Monitor } from '../../src/monitor/monitor.js';
import type { VhostUserBackend } from '../../src/transports/vhost-user/backend.js';
import type { VhostUserErrorKind } from '../../src/transports/vhost-user/errors.js';
import { HEADER_SIZE, encodeMessage, ProtocolFeature, Req, statePayload, u64Payload } from '../../src/transports/vhost-user/protocol.js';
import type { DriverQueue, RingFormat } from '../../src/virtqueue/queue.js';
import { createDriverQueue } from '../../src/virtqueue/create.js';
import { layoutPackedQueue } from '../../src/virtqueue/packed/driver.js';
import { layoutSplitQueue } from '../../src/virtqueue/split/driver.js';

export const n = native();
/** Where "QEMU" has guest RAM in its own address space (ring addresses are given in it). */
export const USER_BASE = 0x7f0000000000;

export function message(request: number, payload?: Uint8Array, flags = 1): Uint8Array {
  return encodeMessage(request, flags, payload);
}

/**
 * How long a wait for the back-end may last before the test fails (../wait.ts). Waits end on
 * the event (an fd turning readable, the connection closing), never on a time: the bound only
 * keeps a broken back-end from hanging the suite.
 */
export { WAIT_MS, until } from '../wait.js';
import { WAIT_MS } from '../wait.js';

/**
 * Resolves true when `fd` is readable (or its peer hung up), false after `timeoutMs`.
 * An fd watch on the event loop: no polling.
 */
export function readable(fd: number, timeoutMs = WAIT_MS): Promise<boolean> {
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
    const watch = n.watch(fd, true, false, () => finish(true));
  });
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

/** SET_MEM_TABLE's payload for one region: `size` bytes of guest RAM at guest address 0, at USER_BASE in the front-end. */
export function memTablePayload(size: number): Uint8Array {
  const region = new Uint8Array(8 + 32);
  const rv = new DataView(region.buffer);
  rv.setUint32(0, 1, true);
  rv.setBigUint64(8, 0n, true);
  rv.setBigUint64(16, BigInt(size), true);
  rv.setBigUint64(24, BigInt(USER_BASE), true);
  rv.setBigUint64(32, 0n, true);
  return region;
}

/** Waits for one message on `fd` (a reply, or a back-end request on the back-end channel). */
export async function receive(fd: number, timeoutMs = WAIT_MS): Promise<Uint8Array> {
  return (await receiveMessage(fd, timeoutMs)).data;
}

/**
 * One message and the fds that came with it. A message may arrive in pieces (a back-end whose
 * socket was full sends the rest when it drains): header and payload are gathered until whole.
 */
export async function receiveMessage(fd: number, timeoutMs = WAIT_MS): Promise<{ data: Uint8Array; fds: number[] }> {
  const header = new Uint8Array(HEADER_SIZE);
  const deadline = Date.now() + timeoutMs;
  const fds: number[] = [];
  let out: Uint8Array | null = null;
  let have = 0;
  for (;;) {
    // One message at a time: the header, then exactly the payload it announces.
    const into: Uint8Array = out === null ? header.subarray(have) : out.subarray(have);
    const r = into.length === 0 ? { bytes: 0, fds: [] } : n.recvmsg(fd, into);
    if (into.length > 0 && r.bytes === 0) throw new Error('back-end closed the connection');
    fds.push(...r.fds);
    if (r.bytes > 0) have += r.bytes;
    if (out === null && have === HEADER_SIZE) {
      out = new Uint8Array(HEADER_SIZE + new DataView(header.buffer).getUint32(8, true));
      out.set(header);
    }
    if (out !== null && have === out.length) return { data: out, fds };
    if (r.bytes > 0) continue;
    // Nothing there yet: wait until the socket turns readable (or hangs up), not for a time.
    if (!(await readable(fd, Math.max(0, deadline - Date.now())))) {
      throw new Error(have === 0 ? `no reply in ${timeoutMs} ms` : `a message cut short: ${have} bytes in ${timeoutMs} ms`);
    }
  }
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
    this.send(Req.ADD_MEM_REG, regionPayload(0, this.ramSize, USER_BASE), [this.memfd], flags);
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
    this.send(Req.ADD_MEM_REG, regionPayload(guestAddr, size, USER_BASE + guestAddr), [memfd], flags);
    return r;
  }

  /** Unplugs a region: REM_MEM_REG (with its fd when `withFd`: QEMU 7.2 sends one, later QEMUs none). */
  unplugRegion(r: PluggedRegion, flags = 1, withFd = false): void {
    this.send(Req.REM_MEM_REG, regionPayload(r.guestAddr, r.size, USER_BASE + r.guestAddr), withFd ? [r.memfd] : [], flags);
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
    const addr = new Uint8Array(40);
    const av = new DataView(addr.buffer);
    av.setUint32(0, index, true);
    if (options.logAddr !== undefined) {
      av.setUint32(4, 1, true); // VHOST_VRING_F_LOG
      av.setBigUint64(32, BigInt(options.logAddr), true);
    }
    av.setBigUint64(8, BigInt(USER_BASE + layout.desc), true);
    av.setBigUint64(16, BigInt(USER_BASE + layout.used), true);
    av.setBigUint64(24, BigInt(USER_BASE + layout.avail), true);
    this.send(Req.SET_VRING_ADDR, addr);
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

/** The single-region payload of ADD_MEM_REG / REM_MEM_REG: padding, then the region. */
export function regionPayload(guestAddr: number, size: number, userAddr: number, mmapOffset = 0): Uint8Array {
  const b = new Uint8Array(8 + 32);
  const v = new DataView(b.buffer);
  v.setBigUint64(8, BigInt(guestAddr), true);
  v.setBigUint64(16, BigInt(size), true);
  v.setBigUint64(24, BigInt(userAddr), true);
  v.setBigUint64(32, BigInt(mmapOffset), true);
  return b;
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

/** What a hostile front-end sees of its connection once it ends: the replies that came first. */
export interface Ending {
  how: 'eof' | 'reset';
  replies: Uint8Array[];
}

/** The byte guest memory is filled with, so a write outside the granted buffers shows. */
export const CANARY = 0xa5;

/**
 * A front-end on a real unix socket path (a `virtio-ts serve` process, or qemu-storage-daemon):
 * guest RAM in its own memfd filled with CANARY, raw access to every message and byte, so
 * tests can send what QEMU never would. Every wait is bounded.
 */
export class SocketFrontEnd {
  readonly fd: number;
  readonly memfd: number;
  readonly ram: ArrayBuffer;
  readonly bytes: Uint8Array;
  readonly view: DataView;
  /** Our end of the back-end request channel (SET_BACKEND_REQ_FD), or -1. */
  channel = -1;
  private readonly owned: number[] = [];
  private closed = false;

  /**
   * Guest RAM is a memfd (sealable, as QEMU's memory-backend-memfd), or with `ramFile` a regular
   * file of that path (as memory-backend-file: it cannot be sealed against shrinking).
   */
  constructor(
    readonly path: string,
    readonly ramSize = 1 << 20,
    ramFile?: string,
  ) {
    this.fd = n.connect(path);
    if (ramFile === undefined) this.memfd = n.memfdCreate('hostile-guest', ramSize);
    else {
      this.memfd = openSync(ramFile, 'w+');
      ftruncateSync(this.memfd, ramSize);
    }
    this.ram = n.mmap(this.memfd, 0, ramSize);
    this.bytes = new Uint8Array(this.ram);
    this.view = new DataView(this.ram);
    this.bytes.fill(CANARY);
  }

  /** Sends bytes (and fds with the first of them), waiting (bounded) while the socket is full. */
  async write(data: Uint8Array, fds: number[] = [], timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let at = 0;
    while (at < data.length) {
      const sent = n.sendmsg(this.fd, data.subarray(at), at === 0 ? fds : []);
      if (sent > 0) at += sent;
      else if (Date.now() > deadline) throw new Error(`the back-end took ${at} of ${data.length} bytes in ${timeoutMs} ms`);
      else await new Promise((res) => setTimeout(res, 1));
    }
  }

  send(request: number, payload?: Uint8Array, fds: number[] = [], flags = 1): Promise<void> {
    return this.write(message(request, payload, flags), fds);
  }

  /** A request with a reply: the reply's payload. */
  async ask(request: number, payload?: Uint8Array, flags = 1): Promise<DataView> {
    await this.send(request, payload, [], flags);
    const r = await receive(this.fd, 10_000);
    return new DataView(r.buffer, HEADER_SIZE);
  }

  async askU64(request: number): Promise<bigint> {
    return (await this.ask(request)).getBigUint64(0, true);
  }

  /**
   * Negotiates as QEMU does, up to guest memory: features, protocol features (those asked and
   * offered), the back-end request channel when BACKEND_REQ is among them, SET_OWNER,
   * SET_FEATURES (`features` & offered, with VHOST_USER_F_PROTOCOL_FEATURES), one memory region.
   * Returns the features and protocol features agreed.
   */
  async negotiate(features: bigint, protocol: bigint): Promise<{ features: bigint; protocol: bigint }> {
    const offered = await this.askU64(Req.GET_FEATURES);
    let agreed = 0n;
    if (offered & (1n << 30n)) {
      agreed = protocol & (await this.askU64(Req.GET_PROTOCOL_FEATURES));
      await this.send(Req.SET_PROTOCOL_FEATURES, u64Payload(agreed));
      if (agreed & (1n << BigInt(ProtocolFeature.BACKEND_REQ))) {
        const [ours, theirs] = n.socketpair();
        this.channel = ours;
        this.owned.push(ours);
        await this.send(Req.SET_BACKEND_REQ_FD, undefined, [theirs]);
        n.close(theirs);
      }
    }
    await this.send(Req.SET_OWNER);
    const f = (features & offered) | (offered & (1n << 30n));
    await this.send(Req.SET_FEATURES, u64Payload(f));
    await this.send(Req.SET_MEM_TABLE, memTablePayload(this.ramSize), [this.memfd]);
    return { features: f, protocol: agreed };
  }

  /** Sets up split ring `index` of `size` at guest address `base`, enabled; it starts on its first kick. */
  async splitRing(index: number, size: number, base: number, ringBase = 0): Promise<SplitTestRing> {
    const layout = layoutSplitQueue(base, size);
    // The driver side zeroes its ring memory before use (the canary is for the rest).
    this.bytes.fill(0, layout.desc, layout.pool);
    await this.send(Req.SET_VRING_NUM, statePayload(index, size));
    const addr = new Uint8Array(40);
    const av = new DataView(addr.buffer);
    av.setUint32(0, index, true);
    av.setBigUint64(8, BigInt(USER_BASE + layout.desc), true);
    av.setBigUint64(16, BigInt(USER_BASE + layout.used), true);
    av.setBigUint64(24, BigInt(USER_BASE + layout.avail), true);
    await this.send(Req.SET_VRING_ADDR, addr);
    await this.send(Req.SET_VRING_BASE, statePayload(index, ringBase));
    const call = n.eventfd();
    const kick = n.eventfd();
    this.owned.push(call, kick);
    await this.send(Req.SET_VRING_CALL, u64Payload(BigInt(index)), [call]);
    await this.send(Req.SET_VRING_KICK, u64Payload(BigInt(index)), [kick]);
    await this.send(Req.SET_VRING_ENABLE, statePayload(index, 1));
    return new SplitTestRing(this, size, layout, kick, call);
  }

  /**
   * Waits (bounded) until the back-end ends the connection, reading whatever it sends first.
   * Throws if it does not end in time.
   */
  async ended(timeoutMs = 10_000): Promise<Ending> {
    const replies: Uint8Array[] = [];
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        replies.push(await receive(this.fd, Math.max(1, deadline - Date.now())));
      } catch (err) {
        const e = err as { code?: string; message?: string };
        if (e.code === 'ECONNRESET') return { how: 'reset', replies };
        if (/closed the connection/.test(e.message ?? '')) return { how: 'eof', replies };
        if (/^no reply in/.test(e.message ?? '')) throw new Error(`the back-end did not end the connection in ${timeoutMs} ms`);
        throw err;
      }
    }
  }

  /** Offsets of guest RAM that lost the canary, outside [from, to) ranges the device may write. */
  touched(allowed: readonly [number, number][] = []): number[] {
    const out: number[] = [];
    if (this.closed) return out; // unmapped: the case checked what it needed before closing
    for (let i = 0; i < this.ramSize; i++) {
      if (this.bytes[i] === CANARY) continue;
      if (allowed.some(([a, b]) => i >= a && i < b)) continue;
      out.push(i);
      if (out.length >= 16) break;
    }
    return out;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const fd of [this.fd, this.memfd, ...this.owned]) {
      try {
        n.close(fd);
      } catch {
        // closed already
      }
    }
    n.munmap(this.ram);
  }
}

/** A split ring written by hand (no driver queue): hostile tests place any descriptor they like. */
export class SplitTestRing {
  private availIdx = 0;
  constructor(
    readonly fe: SocketFrontEnd,
    readonly size: number,
    readonly layout: { desc: number; avail: number; used: number; pool: number },
    readonly kick: number,
    readonly call: number,
  ) {}

  /** Writes descriptor `i` of the table at `table` (default: the ring's own table). */
  desc(i: number, addr: number, len: number, flags: number, next = 0, table = this.layout.desc): void {
    const v = this.fe.view;
    const at = table + i * 16;
    v.setBigUint64(at, BigInt(addr), true);
    v.setUint32(at + 8, len >>> 0, true);
    v.setUint16(at + 12, flags, true);
    v.setUint16(at + 14, next, true);
  }

  /** Makes `head` available (avail.idx moves by `step`, 1 for a well-behaved driver) and kicks. */
  offer(head: number, step = 1): void {
    const v = this.fe.view;
    v.setUint16(this.layout.avail + 4 + 2 * (this.availIdx % this.size), head, true);
    this.availIdx = (this.availIdx + step) & 0xffff;
    v.setUint16(this.layout.avail + 2, this.availIdx, true);
    n.eventfdWrite(this.kick, 1);
  }

  usedIdx(): number {
    return this.fe.view.getUint16(this.layout.used + 2, true);
  }

  /** The used element `i`: [id, len]. */
  used(i: number): [number, number] {
    const at = this.layout.used + 4 + 8 * (i % this.size);
    return [this.fe.view.getUint32(at, true), this.fe.view.getUint32(at + 4, true)];
  }

  /** Waits (bounded) for the call eventfd, then for used.idx to reach `idx`. */
  async waitUsed(idx: number, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.usedIdx() !== idx) {
      if (Date.now() > deadline) throw new Error(`used.idx is ${this.usedIdx()}, not ${idx}, after ${timeoutMs} ms`);
      n.eventfdRead(this.call);
      await new Promise((res) => setTimeout(res, 1));
    }
  }
}
