/**
 * A raw vhost-user front-end session on a unix socket: guest RAM in its own memfd (filled with
 * a canary byte, so a device write outside the buffers it was given shows), every message and
 * byte under the caller's control, so a probe can send what QEMU never would. Every wait is
 * bounded; nothing here waits on a time when an event (an fd turning readable) can say it.
 *
 * This is not the front-end library (transports/vhost-user/frontend): that one drives a
 * back-end the right way for the project's drivers; this one is for the malformed messages,
 * bad tables and hand-written rings of `virtio-ts probe --hostile` and of the project's own
 * hostile tests (test/vhost-user/hostile-cases.ts).
 */
import { ftruncateSync, openSync } from 'node:fs';
import { fdReady, native } from '../native/index.js';
import { HEADER_SIZE, ProtocolFeature, Req, encodeMessage, memRegionsPayload, statePayload, u64Payload, vringAddrPayload } from '../transports/vhost-user/protocol.js';
import { USER_BASE } from '../transports/vhost-user/frontend/memory.js';
import { layoutSplitQueue } from '../virtqueue/split/driver.js';

/** The raw session puts its guest RAM where the front-end library does (ring addresses are given in it, as QEMU's are). */
export { USER_BASE };

/** The byte guest memory is filled with, so a write outside the granted buffers shows. */
export const CANARY = 0xa5;

/** The default bound of a wait for the back-end (a reply, a close, a used entry). */
export const RAW_WAIT_MS = 10_000;

/** VHOST_USER_F_PROTOCOL_FEATURES as a feature mask. */
export const PROTOCOL_FEATURES_BIT = 1n << 30n;

/** One front-end message: header (request, flags, size) then the payload; flags default to version 1. */
export function message(request: number, payload?: Uint8Array, flags = 1): Uint8Array {
  return encodeMessage(request, flags, payload);
}

/**
 * Resolves true when `fd` is readable (or its peer hung up), false after `timeoutMs`.
 * An fd watch on the event loop: no polling.
 */
export function readable(fd: number, timeoutMs = RAW_WAIT_MS): Promise<boolean> {
  return fdReady(native(), fd, true, false, timeoutMs);
}

/**
 * One message from `fd` and the fds that came with it. A message may arrive in pieces (a
 * back-end whose socket was full sends the rest when it drains): header and payload are
 * gathered until whole. Throws 'no reply in N ms', 'a message cut short', or 'back-end closed
 * the connection' (an Error; ECONNRESET comes through with its `code`).
 */
export async function receiveMessage(fd: number, timeoutMs = RAW_WAIT_MS): Promise<{ data: Uint8Array; fds: number[] }> {
  const n = native();
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

/** Waits for one message on `fd` (a reply, or a back-end request on the back-end channel). */
export async function receive(fd: number, timeoutMs = RAW_WAIT_MS): Promise<Uint8Array> {
  return (await receiveMessage(fd, timeoutMs)).data;
}

/** SET_MEM_TABLE's payload for one region: `size` bytes of guest RAM at guest address 0, at USER_BASE in the front-end. */
export function memTablePayload(size: number): Uint8Array {
  return memRegionsPayload([[0, size, USER_BASE, 0]]);
}

/** What a raw session sees of its connection once the back-end ends it: how, and the replies that came first. */
export interface Ending {
  how: 'eof' | 'reset';
  replies: Uint8Array[];
}

/**
 * A front-end on a real unix socket path: guest RAM in its own memfd filled with CANARY, raw
 * access to every message and byte. Every wait is bounded.
 */
export class RawSession {
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
   * Connects to `path` (throws the connect error: ECONNREFUSED, ENOENT...). Guest RAM is a
   * memfd (sealable, as QEMU's memory-backend-memfd), or with `ramFile` a regular file of that
   * path (as memory-backend-file: it cannot be sealed against shrinking).
   */
  constructor(
    readonly path: string,
    readonly ramSize = 1 << 20,
    ramFile?: string,
    /** The bound of each wait of this session. */
    readonly waitMs = RAW_WAIT_MS,
  ) {
    const n = native();
    this.fd = n.connect(path);
    try {
      if (ramFile === undefined) this.memfd = n.memfdCreate('hostile-guest', ramSize);
      else {
        this.memfd = openSync(ramFile, 'w+');
        ftruncateSync(this.memfd, ramSize);
      }
    } catch (err) {
      n.close(this.fd);
      throw err;
    }
    this.ram = n.mmap(this.memfd, 0, ramSize);
    this.bytes = new Uint8Array(this.ram);
    this.view = new DataView(this.ram);
    this.bytes.fill(CANARY);
  }

  /** Whether close() ran. */
  get isClosed(): boolean {
    return this.closed;
  }

  /** Sends bytes (and fds with the first of them), waiting (bounded) while the socket is full. */
  async write(data: Uint8Array, fds: number[] = [], timeoutMs = this.waitMs): Promise<void> {
    const n = native();
    const deadline = Date.now() + timeoutMs;
    let at = 0;
    while (at < data.length) {
      const sent = n.sendmsg(this.fd, data.subarray(at), at === 0 ? fds : []);
      if (sent > 0) at += sent;
      else if (Date.now() > deadline) throw new Error(`the back-end took ${at} of ${data.length} bytes in ${timeoutMs} ms`);
      else await new Promise((res) => setTimeout(res, 1));
    }
  }

  /** Sends one message (flags default to version 1). */
  send(request: number, payload?: Uint8Array, fds: number[] = [], flags = 1): Promise<void> {
    return this.write(message(request, payload, flags), fds);
  }

  /** A request with a reply: the reply's payload (header not checked: see the probe's own checks). */
  async ask(request: number, payload?: Uint8Array, flags = 1): Promise<DataView> {
    await this.send(request, payload, [], flags);
    const r = await receive(this.fd, this.waitMs);
    return new DataView(r.buffer, HEADER_SIZE);
  }

  /** A request whose reply is one u64 (GET_FEATURES, GET_PROTOCOL_FEATURES, ...). */
  async askU64(request: number): Promise<bigint> {
    return (await this.ask(request)).getBigUint64(0, true);
  }

  /**
   * Negotiates as QEMU does, up to guest memory: features, protocol features (those asked and
   * offered), the back-end request channel when BACKEND_REQ is among them, SET_OWNER,
   * SET_FEATURES (`features` & offered, with VHOST_USER_F_PROTOCOL_FEATURES), one memory region.
   * Returns the features and protocol features agreed.
   */
  async negotiate(features: bigint, protocol: bigint): Promise<{ features: bigint; protocol: bigint; offered: bigint }> {
    const n = native();
    const offered = await this.askU64(Req.GET_FEATURES);
    let agreed = 0n;
    if (offered & PROTOCOL_FEATURES_BIT) {
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
    const f = (features & offered) | (offered & PROTOCOL_FEATURES_BIT);
    await this.send(Req.SET_FEATURES, u64Payload(f));
    await this.send(Req.SET_MEM_TABLE, memTablePayload(this.ramSize), [this.memfd]);
    return { features: f, protocol: agreed, offered };
  }

  /**
   * Sets up split ring `index` of `size` at guest address `base` (SET_VRING_NUM, ADDR, BASE,
   * CALL, KICK with new eventfds, then ENABLE unless `enable` is false); it starts on its first
   * kick. `zero`: the ring memory is zeroed first (a new ring; false to set up a stopped ring
   * again over the same memory).
   */
  async splitRing(index: number, size: number, base: number, ringBase = 0, enable = true, zero = true): Promise<RawSplitRing> {
    const n = native();
    const layout = layoutSplitQueue(base, size);
    // The driver side zeroes its ring memory before use (the canary is for the rest).
    if (zero) this.bytes.fill(0, layout.desc, layout.pool);
    await this.send(Req.SET_VRING_NUM, statePayload(index, size));
    await this.send(Req.SET_VRING_ADDR, vringAddrPayload(index, USER_BASE + layout.desc, USER_BASE + layout.used, USER_BASE + layout.avail));
    await this.send(Req.SET_VRING_BASE, statePayload(index, ringBase));
    const call = n.eventfd();
    const kick = n.eventfd();
    this.owned.push(call, kick);
    await this.send(Req.SET_VRING_CALL, u64Payload(BigInt(index)), [call]);
    await this.send(Req.SET_VRING_KICK, u64Payload(BigInt(index)), [kick]);
    if (enable) await this.send(Req.SET_VRING_ENABLE, statePayload(index, 1));
    return new RawSplitRing(this, size, layout, kick, call, ringBase & 0xffff);
  }

  /** An fd closed with the session. */
  own(fd: number): number {
    this.owned.push(fd);
    return fd;
  }

  /**
   * Waits (bounded) until the back-end ends the connection, reading whatever it sends first.
   * Throws if it does not end in time.
   */
  async ended(timeoutMs = this.waitMs): Promise<Ending> {
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

  /** Offsets of guest RAM that lost the canary, outside [from, to) ranges the device may write (at most 16). */
  touched(allowed: readonly (readonly [number, number])[] = []): number[] {
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

  /** Closes the socket and every fd the session holds, unmaps guest RAM. */
  close(): void {
    if (this.closed) return;
    const n = native();
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

/** A split ring written by hand (no driver queue): a probe places any descriptor it likes. */
export class RawSplitRing {
  private availIdx: number;
  /** A ring `fe` set up (splitRing()): its layout in guest RAM, its kick and call eventfds, the available index it starts at. */
  constructor(
    readonly fe: RawSession,
    readonly size: number,
    readonly layout: { desc: number; avail: number; used: number; pool: number },
    readonly kick: number,
    readonly call: number,
    base = 0,
  ) {
    this.availIdx = base;
  }

  /** Writes descriptor `i` of the table at `table` (default: the ring's own table). */
  desc(i: number, addr: number, len: number, flags: number, next = 0, table = this.layout.desc): void {
    const v = this.fe.view;
    const at = table + i * 16;
    v.setBigUint64(at, BigInt(addr), true);
    v.setUint32(at + 8, len >>> 0, true);
    v.setUint16(at + 12, flags, true);
    v.setUint16(at + 14, next, true);
  }

  /** Makes `head` available (avail.idx moves by `step`, 1 for a well-behaved driver) and kicks (unless `kick` is false). */
  offer(head: number, step = 1, kick = true): void {
    const v = this.fe.view;
    v.setUint16(this.layout.avail + 4 + 2 * (this.availIdx % this.size), head, true);
    this.availIdx = (this.availIdx + step) & 0xffff;
    v.setUint16(this.layout.avail + 2, this.availIdx, true);
    if (kick) native().eventfdWrite(this.kick, 1);
  }

  /** The driver's available index so far. */
  get avail(): number {
    return this.availIdx;
  }

  /** Continues from another ring object's available index (a ring set up again over the same memory). */
  set avail(idx: number) {
    this.availIdx = idx & 0xffff;
  }

  /** used.idx as the device last wrote it. */
  usedIdx(): number {
    return this.fe.view.getUint16(this.layout.used + 2, true);
  }

  /** The used element `i`: [id, len]. */
  used(i: number): [number, number] {
    const at = this.layout.used + 4 + 8 * (i % this.size);
    return [this.fe.view.getUint32(at, true), this.fe.view.getUint32(at + 4, true)];
  }

  /** Waits (bounded) for used.idx to reach `idx`, woken by the call eventfd; throws when it does not in time. */
  async waitUsed(idx: number, timeoutMs = this.fe.waitMs): Promise<void> {
    const n = native();
    const deadline = Date.now() + timeoutMs;
    while (this.usedIdx() !== idx) {
      if (Date.now() > deadline) throw new Error(`used.idx is ${this.usedIdx()}, not ${idx}, after ${timeoutMs} ms`);
      n.eventfdRead(this.call);
      // The call eventfd is the event; a short bound on each wait also catches a device that
      // writes the used ring without signalling (suppressed notifications).
      await readable(this.call, Math.min(20, Math.max(1, deadline - Date.now())));
    }
  }
}
