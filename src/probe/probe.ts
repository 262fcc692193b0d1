/**
 * runProbe: drives a vhost-user back-end (any: QEMU's, a Rust one, `virtio-ts serve`) through a
 * scripted session and reports, rule by rule and clause by clause, what it did; with `hostile`,
 * injects faults too and reports what became of each (hostile.ts).
 *
 * The default run has two parts:
 * - a raw protocol session (raw-session.ts) that checks the vhost-user rules of rules.ts on
 *   every reply: flags, request code, size, fds, REPLY_ACK, GET_QUEUE_NUM, GET_CONFIG, and the
 *   ring states (started by its kick, stopped by GET_VRING_BASE with the right base, not
 *   processed while stopped, restarted from the base), GET_STATUS;
 * - driver sessions (driver-session.ts): the project's own drivers over the vhost-user
 *   front-end library, once per ring format and notification mode the back-end offers, with
 *   a tolerant Monitor: every device-side clause the driver checks (features, config
 *   generation, used ids and lengths, status bytes, notification suppression, IN_ORDER) is
 *   reported by catalogue id.
 *
 * Every wait is bounded (`waitMs` each, `timeoutMs` for the whole run); the probe never hangs.
 */
import { clauseInfo } from '../monitor/catalogue.js';
import { Feature, Status } from '../spec/constants.js';
import { bit } from '../spec/features.js';
import { BlkStatus } from '../spec/blk.js';
import { FLAG_NEED_REPLY, FLAG_REPLY, HEADER_SIZE, ProtocolFeature, Req, requestName, statePayload, u64Payload } from '../transports/vhost-user/protocol.js';
import { native } from '../native/index.js';
import { FAILING_OUTCOMES, HOSTILE_CASES, RING_AREA, liveRing, withMemory, type HostileCase, type HostileOutcome, type Injection } from './hostile.js';
import { PROTOCOL_FEATURES_BIT, RawSession, memTablePayload, readable, receiveMessage, type RawSplitRing } from './raw-session.js';
import { placeRequest, type Range, type RequestType } from './requests.js';
import { PROBE_REPORT_SCHEMA, type ProbeBackendInfo, type ProbeCheck, type ProbeHostileResult, type ProbeReport } from './report.js';
import { VHOST_USER_RULES } from './rules.js';
import { runDriverSessions } from './driver-session.js';

/** The device types a probe knows: the device id, and the requests it can place (null: protocol level only). */
export const PROBE_TYPES: Readonly<Record<string, { deviceId: number; requests: RequestType | null }>> = {
  blk: { deviceId: 2, requests: 'blk' },
  rng: { deviceId: 4, requests: 'rng' },
  fs: { deviceId: 26, requests: null },
  net: { deviceId: 1, requests: null },
  console: { deviceId: 3, requests: null },
  scsi: { deviceId: 8, requests: null },
  gpu: { deviceId: 16, requests: null },
  input: { deviceId: 18, requests: null },
  vsock: { deviceId: 19, requests: null },
  sound: { deviceId: 25, requests: null },
  i2c: { deviceId: 34, requests: null },
  gpio: { deviceId: 41, requests: null },
};

/** runProbe's options. */
export interface ProbeOptions {
  /** The back-end's listening unix socket. */
  socketPath: string;
  /** The device type behind it: a key of {@link PROBE_TYPES}. */
  type: string;
  /** Run the hostile cases after the default run. */
  hostile?: boolean;
  /** Only these hostile cases (ids; implies `hostile`). */
  cases?: string[];
  /** The bound of each wait for the back-end (a reply, a used buffer, a close). Default 5000 ms. */
  waitMs?: number;
  /**
   * How long to watch for a reaction that has no event of its own (a chain the back-end may
   * silently drop, a ring that must stay stopped). Default 500 ms. Longer finds slow
   * reactions; it never makes a clean back-end fail.
   */
  settleMs?: number;
  /** The bound of the whole run; cases not reached by then are reported skipped. Default 300000 ms. */
  timeoutMs?: number;
  /** blk: also write (the same bytes back over a sector it read) and read back. Off by default: a probe does not change the disk. */
  write?: boolean;
  /** Called with a line per step (the CLI prints them with --verbose). */
  onProgress?: (line: string) => void;
}

/** The usage errors runProbe refuses before touching the socket. */
export class ProbeUsageError extends Error {
  override readonly name = 'ProbeUsageError';
}

/** The checks the default run records, rule by rule (vhost-user) and clause by clause (virtio). */
export class CheckBook {
  private readonly map = new Map<string, ProbeCheck>();

  constructor() {
    for (const r of VHOST_USER_RULES) this.map.set(r.id, { id: r.id, source: 'vhost-user', title: r.text, status: 'not-run', checked: 0 });
  }

  private entry(id: string): ProbeCheck {
    let c = this.map.get(id);
    if (c === undefined) {
      const info = clauseInfo(id);
      c = { id, source: id.startsWith('vhost-user.') ? 'vhost-user' : 'virtio', title: info?.summary ?? id, status: 'not-run', checked: 0 };
      this.map.set(id, c);
    }
    return c;
  }

  /** `id` was checked and held. */
  pass(id: string): void {
    const c = this.entry(id);
    c.checked++;
    if (c.status === 'not-run') c.status = 'pass';
  }

  /** `id` was broken (the first detail is kept). */
  fail(id: string, detail: string, session?: string): void {
    const c = this.entry(id);
    c.checked++;
    if (c.status !== 'fail') {
      c.status = 'fail';
      c.detail = detail;
      if (session !== undefined) c.session = session;
    }
  }

  /** Records the check of `id`: pass when `ok`, else fail with `detail`. */
  check(id: string, ok: boolean, detail: () => string, session?: string): boolean {
    if (ok) this.pass(id);
    else this.fail(id, detail(), session);
    return ok;
  }

  /** `id` could not be checked: why (kept only while it was never checked). */
  notRun(id: string, why: string): void {
    const c = this.entry(id);
    if (c.status === 'not-run' && c.detail === undefined) c.detail = why;
  }

  /** Every check, vhost-user rules first, then clauses by id. */
  list(): ProbeCheck[] {
    const all = [...this.map.values()];
    return [...all.filter((c) => c.source === 'vhost-user'), ...all.filter((c) => c.source === 'virtio').sort((a, b) => a.id.localeCompare(b.id))];
  }
}

const hex = (x: bigint) => `0x${x.toString(16)}`;
const errText = (err: unknown) => (err instanceof Error ? err.message : String(err));
const PROTOCOL_SESSION = 'protocol';

/** A reply the raw protocol session read and checked. */
interface Reply {
  request: number;
  payload: DataView;
}

/**
 * A raw session that checks every reply against the vhost-user rules. `pending` are messages
 * sent without a reply of their own: a reply to one of them is vhost-user.reply.unasked.
 */
class CheckedSession {
  readonly pending = new Set<number>();
  constructor(
    readonly fe: RawSession,
    readonly book: CheckBook,
  ) {}

  /** Sends a message that has no reply (need_reply clear). */
  async tell(request: number, payload?: Uint8Array, fds: number[] = []): Promise<void> {
    this.pending.add(request);
    await this.fe.send(request, payload, fds);
  }

  /** Reads the reply to `request` (skipping, and reporting, replies nobody asked for) and checks its header, size and fds. */
  async reply(request: number, size: number): Promise<Reply> {
    for (;;) {
      const { data, fds } = await receiveMessage(this.fe.fd, this.fe.waitMs);
      for (const fd of fds) native().close(fd);
      const v = new DataView(data.buffer);
      const got = v.getUint32(0, true);
      const flags = v.getUint32(4, true);
      const len = v.getUint32(8, true);
      if (got !== request && this.pending.has(got)) {
        this.book.fail('vhost-user.reply.unasked', `a reply to ${requestName(got)}, sent without need_reply`, PROTOCOL_SESSION);
        continue;
      }
      const name = requestName(request);
      this.book.check('vhost-user.reply.request', got === request, () => `the reply to ${name} says ${requestName(got)}`, PROTOCOL_SESSION);
      this.book.check('vhost-user.reply.flags', flags === (1 | FLAG_REPLY), () => `the reply to ${name} has flags 0x${flags.toString(16)} (0x5 expected)`, PROTOCOL_SESSION);
      this.book.check('vhost-user.reply.size', len === size, () => `the reply to ${name} has a ${len}-byte payload (${size} expected)`, PROTOCOL_SESSION);
      this.book.check('vhost-user.reply.fds', fds.length === 0, () => `the reply to ${name} carries ${fds.length} fd(s)`, PROTOCOL_SESSION);
      const payload = new Uint8Array(Math.max(size, len));
      payload.set(data.subarray(HEADER_SIZE));
      return { request: got, payload: new DataView(payload.buffer) };
    }
  }

  /** A request with a reply of `size` bytes. */
  async ask(request: number, size: number, payload?: Uint8Array): Promise<Reply> {
    await this.fe.send(request, payload);
    return this.reply(request, size);
  }

  /** A u64 reply. */
  async askU64(request: number): Promise<bigint> {
    return (await this.ask(request, 8)).payload.getBigUint64(0, true);
  }

  /** With REPLY_ACK: sends with need_reply and checks the ack is zero; without: tell(). */
  async acked(replyAck: boolean, request: number, payload?: Uint8Array, fds: number[] = []): Promise<void> {
    if (!replyAck) return this.tell(request, payload, fds);
    await this.fe.send(request, payload, fds, 1 | FLAG_NEED_REPLY);
    const ack = (await this.reply(request, 8)).payload.getBigUint64(0, true);
    this.book.check('vhost-user.reply-ack.success', ack === 0n, () => `${requestName(request)} of a correct session answered REPLY_ACK ${ack}`, PROTOCOL_SESSION);
  }
}

/** What the protocol session learnt of the back-end. */
interface Learnt {
  offered: bigint;
  protocol: bigint | null;
  queues?: number;
}

const WANT_PROTOCOL = [ProtocolFeature.MQ, ProtocolFeature.REPLY_ACK, ProtocolFeature.CONFIG, ProtocolFeature.STATUS].reduce((a, f) => a | (1n << BigInt(f)), 0n);

/** Waits up to `ms` for used.idx to leave `from`; true if it did. */
async function usedMoves(ring: RawSplitRing, from: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (ring.usedIdx() === from) {
    const left = deadline - Date.now();
    if (left <= 0) return false;
    await readable(ring.call, Math.min(left, 20));
    native().eventfdRead(ring.call);
  }
  return true;
}

/** The raw protocol session of the default run: the vhost-user rules. */
async function protocolSession(o: Required<Pick<ProbeOptions, 'socketPath' | 'waitMs' | 'settleMs'>>, requests: RequestType | null, book: CheckBook, sessions: ProbeReport['sessions']): Promise<Learnt | null> {
  // The first GET_FEATURES is checked like every reply (a connection turned away before it is tried again).
  const { fe, offered } = await openSession(o.socketPath, o.waitMs, (f) => new CheckedSession(f, book).askU64(Req.GET_FEATURES));
  const s = new CheckedSession(fe, book);
  const n = native();
  try {
    const learnt: Learnt = { offered, protocol: null };
    let agreed = 0n;
    if (offered & PROTOCOL_FEATURES_BIT) {
      learnt.protocol = await s.askU64(Req.GET_PROTOCOL_FEATURES);
      agreed = learnt.protocol & WANT_PROTOCOL;
      await s.tell(Req.SET_PROTOCOL_FEATURES, u64Payload(agreed));
    } else for (const r of ['vhost-user.reply-ack.success', 'vhost-user.queue-num', 'vhost-user.config.echo', 'vhost-user.status.echo']) book.notRun(r, 'VHOST_USER_F_PROTOCOL_FEATURES not offered');
    const has = (f: number) => ((agreed >> BigInt(f)) & 1n) === 1n;
    const ack = has(ProtocolFeature.REPLY_ACK);
    if (learnt.protocol !== null && !ack) book.notRun('vhost-user.reply-ack.success', 'REPLY_ACK not offered');
    if (has(ProtocolFeature.MQ)) {
      learnt.queues = Number(await s.askU64(Req.GET_QUEUE_NUM));
      book.check('vhost-user.queue-num', learnt.queues >= 1, () => `GET_QUEUE_NUM answered ${learnt.queues}`, PROTOCOL_SESSION);
    } else if (learnt.protocol !== null) book.notRun('vhost-user.queue-num', 'MQ not offered');
    await s.acked(ack, Req.SET_OWNER);
    // The device status the way QEMU walks it: ACKNOWLEDGE | DRIVER, the features, FEATURES_OK.
    const status = has(ProtocolFeature.STATUS);
    if (status) await s.acked(ack, Req.SET_STATUS, u64Payload(Status.ACKNOWLEDGE | Status.DRIVER));
    const features = offered & (bit(Feature.VERSION_1) | PROTOCOL_FEATURES_BIT);
    await s.acked(ack, Req.SET_FEATURES, u64Payload(features));
    if (status) {
      const want = Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK;
      await s.acked(ack, Req.SET_STATUS, u64Payload(want));
      const got = Number((await s.ask(Req.GET_STATUS, 8)).payload.getBigUint64(0, true));
      book.check('vhost-user.status.echo', (got & want) === want && (got & (Status.DEVICE_NEEDS_RESET | Status.FAILED)) === 0, () => `SET_STATUS 0x${want.toString(16)} (VERSION_1 only: a valid feature set), then GET_STATUS answered 0x${got.toString(16)}`, PROTOCOL_SESSION);
    } else if (learnt.protocol !== null) book.notRun('vhost-user.status.echo', 'STATUS not offered');
    if (has(ProtocolFeature.CONFIG)) {
      // From offset 0, then from offset 8: the second must be the first's bytes 8..16.
      const getConfig = async (offset: number, size: number) => {
        const ask = new Uint8Array(12 + size);
        const av = new DataView(ask.buffer);
        av.setUint32(0, offset, true);
        av.setUint32(4, size, true);
        const r = await s.ask(Req.GET_CONFIG, 12 + size, ask);
        const [off, len] = [r.payload.getUint32(0, true), r.payload.getUint32(4, true)];
        book.check('vhost-user.config.echo', off === offset && len === size, () => `GET_CONFIG (offset ${offset}, size ${size}) answered offset ${off}, size ${len}`, PROTOCOL_SESSION);
        return new Uint8Array(r.payload.buffer, 12, size);
      };
      const whole = await getConfig(0, 16);
      const part = await getConfig(8, 8);
      if (!whole.subarray(8, 16).every((b, i) => b === whole[i])) {
        book.check('vhost-user.config.echo', part.every((b, i) => b === whole[8 + i]), () => `GET_CONFIG from offset 8 answered [${[...part].join(', ')}]: config bytes 0..8 [${[...whole.subarray(0, 8)].join(', ')}], not bytes 8..16 [${[...whole.subarray(8, 16)].join(', ')}]`, PROTOCOL_SESSION);
      }
    } else if (learnt.protocol !== null) book.notRun('vhost-user.config.echo', 'CONFIG not offered');
    await s.acked(ack, Req.SET_MEM_TABLE, memTablePayload(fe.ramSize), [fe.memfd]);

    // Ring 0: started by its kick, stopped by GET_VRING_BASE, quiet while stopped, restarted from its base.
    let ring = await fe.splitRing(0, 16, RING_AREA[0], 0, (offered & PROTOCOL_FEATURES_BIT) !== 0n);
    for (const m of [Req.SET_VRING_NUM, Req.SET_VRING_ADDR, Req.SET_VRING_BASE, Req.SET_VRING_CALL, Req.SET_VRING_KICK, Req.SET_VRING_ENABLE]) s.pending.add(m);
    let result = 'negotiated, memory table and ring 0 set up';
    if (requests !== null) {
      placeRequest(requests, fe, ring, 0x20000);
      try {
        await ring.waitUsed(1);
        book.pass('vhost-user.ring.start');
      } catch (err) {
        book.fail('vhost-user.ring.start', `a correct request on ring 0 was not used: ${errText(err)}`, PROTOCOL_SESSION);
      }
    } else book.notRun('vhost-user.ring.start', `no request the probe can place on a ${requests ?? 'protocol-level'} device`);
    const stop = await s.ask(Req.GET_VRING_BASE, 8, statePayload(0, 0));
    const [index, base] = [stop.payload.getUint32(0, true), stop.payload.getUint32(4, true)];
    // With every available entry used, the next one to process is the available index.
    if (requests === null || ring.usedIdx() === ring.avail) {
      book.check('vhost-user.ring.stop-base', index === 0 && base === ring.avail, () => `GET_VRING_BASE answered ring ${index}, base ${base} (ring 0, base ${ring.avail}: every available entry used)`, PROTOCOL_SESSION);
    } else book.notRun('vhost-user.ring.stop-base', 'the request on ring 0 was not used: the base to expect is not known');
    if (requests !== null) {
      const before = ring.usedIdx();
      placeRequest(requests, fe, ring, 0x28000);
      // Watched for the settle time, at most a second: a slow machine can only miss a fault here, never invent one.
      const moved = await usedMoves(ring, before, Math.min(o.settleMs, 1000));
      book.check('vhost-user.ring.stopped', !moved, () => `a request made available (and kicked) after GET_VRING_BASE was used`, PROTOCOL_SESSION);
      const restarted = await fe.splitRing(0, 16, RING_AREA[0], base, (offered & PROTOCOL_FEATURES_BIT) !== 0n, false);
      restarted.avail = ring.avail;
      ring = restarted;
      n.eventfdWrite(ring.kick, 1);
      try {
        await ring.waitUsed((before + 1) & 0xffff);
        book.pass('vhost-user.ring.restart');
      } catch (err) {
        book.fail('vhost-user.ring.restart', `after SET_VRING_BASE ${base} and a new kick fd, the waiting request was not used: ${errText(err)}`, PROTOCOL_SESSION);
      }
      result = 'ring 0 started, stopped, restarted';
    } else {
      book.notRun('vhost-user.ring.stopped', 'no request the probe can place on this device type');
      book.notRun('vhost-user.ring.restart', 'no request the probe can place on this device type');
    }
    // Nothing answered out of turn since the last reply: the next reply is to this GET_FEATURES.
    await s.askU64(Req.GET_FEATURES);
    book.pass('vhost-user.reply.each');
    if (!book.list().some((c) => c.id === 'vhost-user.reply.unasked' && c.status === 'fail')) book.pass('vhost-user.reply.unasked');
    sessions.push({ name: PROTOCOL_SESSION, result });
    return learnt;
  } catch (err) {
    sessions.push({ name: PROTOCOL_SESSION, result: `ended early: ${errText(err)}` });
    book.fail('vhost-user.reply.each', `the protocol session ended early: ${errText(err)}`, PROTOCOL_SESSION);
    return null;
  } finally {
    fe.close();
  }
}

/**
 * A new raw session that the back-end has taken: GET_FEATURES answered. A back-end that serves
 * one front-end at a time turns a connection away (closes it) while it is still letting go of
 * the last one, so a connection closed before its first answer is tried again, with a growing
 * pause, until `waitMs` has passed. `first` is that first exchange (it resolves to GET_FEATURES).
 * Throws the connect error (ECONNREFUSED, ENOENT) at once,
 * the last failure once the bound is reached.
 */
export async function openSession(path: string, waitMs: number, first: (fe: RawSession) => Promise<bigint> = (fe) => fe.askU64(Req.GET_FEATURES)): Promise<{ fe: RawSession; offered: bigint }> {
  const deadline = Date.now() + waitMs;
  for (let pause = 5; ; pause = Math.min(pause * 2, 200)) {
    let fe: RawSession;
    try {
      fe = new RawSession(path, 1 << 20, undefined, waitMs);
    } catch (err) {
      throw Object.assign(err as Error, { connectFailed: true });
    }
    try {
      return { fe, offered: await first(fe) };
    } catch (err) {
      fe.close();
      // No answer at all is not a turned-away connection: that is the back-end's answer.
      if (Date.now() + pause > deadline || /^no reply in|cut short/.test(errText(err))) throw err;
      await new Promise((res) => setTimeout(res, pause));
    }
  }
}

/** The after-check of a hostile case: a fresh session, served? */
async function freshSession(path: string, requests: RequestType | null, waitMs: number): Promise<{ after: 'served' | 'wedged' | 'crashed'; note?: string }> {
  let fe: RawSession;
  try {
    fe = (await openSession(path, waitMs)).fe;
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ECONNREFUSED' || code === 'ENOENT') return { after: 'crashed', note: `the socket no longer accepts: ${code}` };
    return { after: 'wedged', note: `the next session failed: ${errText(err)}` };
  }
  try {
    if (requests !== null) {
      const ring = await liveRing(fe);
      const placed = placeRequest(requests, fe, ring, 0x20000);
      await ring.waitUsed(1);
      if (placed.status !== undefined && fe.bytes[placed.status] !== BlkStatus.OK) return { after: 'wedged', note: `the next session's correct read got status ${fe.bytes[placed.status]}` };
    } else {
      await withMemory(fe);
      await fe.askU64(Req.GET_FEATURES);
    }
    return { after: 'served' };
  } catch (err) {
    return { after: 'wedged', note: `the next session failed: ${errText(err)}` };
  } finally {
    fe.close();
  }
}

/** Whether the connection ended: reads what is there without waiting (replies are dropped). */
function connectionEnded(fe: RawSession): boolean {
  const n = native();
  const buf = new Uint8Array(4096);
  for (;;) {
    try {
      const r = n.recvmsg(fe.fd, buf);
      for (const fd of r.fds) n.close(fd);
      if (r.bytes === 0) return true;
      if (r.bytes < 0) return false;
    } catch {
      return true; // ECONNRESET and the like
    }
  }
}

/** A CONFIG_CHANGE_MSG (or any back-end request) arrived on the back-end channel. */
function channelMessage(fe: RawSession): boolean {
  if (fe.channel < 0) return false;
  try {
    const r = native().recvmsg(fe.channel, new Uint8Array(256));
    for (const fd of r.fds) native().close(fd);
    return r.bytes > 0;
  } catch {
    return false;
  }
}

/** Watches a case's session: what did the back-end do? */
async function observe(fe: RawSession, inj: Injection, settleMs: number): Promise<{ reaction: HostileOutcome; note?: string }> {
  const ring = inj.ring;
  const used0 = 0;
  let ended = false;
  let deviceError = false;
  // Reactions without an event of their own (a dropped chain): watched for settleMs.
  const deadline = Date.now() + (ring !== undefined || inj.kicked ? settleMs : 0);
  for (;;) {
    deviceError ||= channelMessage(fe);
    ended = connectionEnded(fe);
    if (ended || deviceError || (ring !== undefined && ring.usedIdx() !== used0)) break;
    const left = deadline - Date.now();
    if (left <= 0) break;
    await readable(fe.fd, Math.min(left, 20));
  }
  if (!ended) {
    // In-order processing: once GET_FEATURES is answered, the case's messages were taken.
    try {
      await fe.send(Req.GET_FEATURES);
      for (;;) {
        const { data, fds } = await receiveMessage(fe.fd, fe.waitMs);
        for (const fd of fds) native().close(fd);
        if (new DataView(data.buffer).getUint32(0, true) === Req.GET_FEATURES) break;
      }
    } catch (err) {
      const e = err as { code?: string; message?: string };
      if (/^no reply in|cut short/.test(e.message ?? '')) return { reaction: 'hung', note: `GET_FEATURES after the case: ${e.message}` };
      ended = true;
    }
    deviceError ||= channelMessage(fe);
  }
  if (ring !== undefined && ring.usedIdx() !== used0) {
    const [id, len] = ring.used(0);
    const placed = inj.placed;
    if (placed?.status !== undefined) {
      const st = fe.bytes[placed.status];
      return { reaction: st === BlkStatus.OK ? 'served' : 'status', note: `used id ${id}, len ${len}, status ${st}` };
    }
    return { reaction: 'served', note: `used id ${id}, len ${len}` };
  }
  if (deviceError) return { reaction: 'status', note: `CONFIG_CHANGE_MSG on the back-end channel${ended ? ', then the connection closed' : ''}` };
  if (ended) return { reaction: 'refused', note: 'connection closed' };
  return { reaction: 'ignored' };
}

/** Runs one hostile case: inject, observe, check the canary, then a fresh session. */
async function runCase(c: HostileCase, o: Required<Pick<ProbeOptions, 'socketPath' | 'waitMs' | 'settleMs' | 'type'>>, requests: RequestType | null, protocolOffered: bigint | null): Promise<ProbeHostileResult> {
  const base = { id: c.id, class: c.class, title: c.title };
  const skipped = (note: string): ProbeHostileResult => ({ ...base, outcome: 'skipped', reaction: 'skipped', ok: true, note });
  if (c.needsRequests && requests === null) return skipped(`no request the probe can place on a ${o.type} device`);
  for (const f of c.needsProtocol ?? []) {
    if (protocolOffered === null || ((protocolOffered >> BigInt(f)) & 1n) === 0n) return skipped(`protocol feature ${f} not offered`);
  }
  let fe: RawSession;
  try {
    fe = (await openSession(o.socketPath, o.waitMs)).fe;
  } catch (err) {
    const code = (err as { code?: string }).code;
    const outcome: HostileOutcome = code === 'ECONNREFUSED' || code === 'ENOENT' ? 'crashed' : 'wedged';
    return { ...base, outcome, reaction: outcome, ok: false, note: `no session before the case: ${code ?? errText(err)}` };
  }
  let reaction: HostileOutcome;
  let note: string | undefined;
  let breaks: string | undefined;
  let outside: number[] = [];
  try {
    let inj: Injection;
    try {
      inj = await c.inject({ fe, type: o.type, requests });
    } catch (err) {
      // The injection itself could not finish: the back-end refused along the way (closed), or stopped answering.
      const m = errText(err);
      inj = /^no reply in|cut short|took \d+ of/.test(m) && !connectionEnded(fe) ? { outcome: 'hung', note: m } : { outcome: 'refused', note: `connection ended during the case: ${m}` };
    }
    breaks = inj.breaks;
    if (inj.closedByUs) {
      reaction = 'ignored';
      note = 'connection closed by the probe';
    } else if (inj.outcome !== undefined) {
      reaction = inj.outcome;
      note = inj.note;
    } else {
      const seen = await observe(fe, inj, o.settleMs);
      reaction = seen.reaction;
      note = [inj.note, seen.note].filter(Boolean).join('; ') || undefined;
    }
    if (reaction === 'skipped') return skipped(note ?? '');
    outside = fe.touched([RING_AREA, ...(inj.granted ?? []), ...(inj.placed?.granted ?? []), ...(inj.placed?.driver ?? [])] as Range[]);
  } finally {
    fe.close();
  }
  let outcome: HostileOutcome = reaction;
  if (outside.length > 0) {
    outcome = 'wrote-outside';
    note = `guest memory outside the granted buffers written at ${outside.map((x) => `0x${x.toString(16)}`).join(', ')}${note ? `; ${note}` : ''}`;
  }
  const fresh = await freshSession(o.socketPath, requests, o.waitMs);
  if (fresh.after !== 'served') {
    if (fresh.after === 'crashed' || outcome !== 'wrote-outside') outcome = fresh.after === 'crashed' ? 'crashed' : outcome === 'hung' ? 'hung' : 'wedged';
    note = [note, fresh.note].filter(Boolean).join('; ');
  }
  const ok = !FAILING_OUTCOMES.has(outcome) && (c.accept ?? ['refused', 'status', 'served', 'ignored']).includes(outcome) && breaks === undefined;
  const r: ProbeHostileResult = { ...base, outcome, reaction, ok };
  if (!ok && (breaks ?? c.clause) !== undefined) r.clause = breaks ?? c.clause;
  if (note) r.note = note;
  return r;
}

/**
 * Probes the back-end at `options.socketPath`: the default run, then (with `hostile` or
 * `cases`) the hostile cases. Resolves to the report (never rejects for what the back-end
 * does; a ProbeUsageError for bad options).
 */
export async function runProbe(options: ProbeOptions): Promise<ProbeReport> {
  const typeInfo = PROBE_TYPES[options.type];
  if (typeInfo === undefined) throw new ProbeUsageError(`unknown device type "${options.type}" (one of: ${Object.keys(PROBE_TYPES).join(', ')})`);
  const unknown = (options.cases ?? []).filter((id) => !HOSTILE_CASES.some((c) => c.id === id));
  if (unknown.length > 0) throw new ProbeUsageError(`unknown hostile case(s): ${unknown.join(', ')} (virtio-ts probe --list-cases)`);
  const o = { socketPath: options.socketPath, type: options.type, waitMs: options.waitMs ?? 5000, settleMs: options.settleMs ?? 500 };
  const progress = options.onProgress ?? (() => undefined);
  const start = Date.now();
  const deadline = start + (options.timeoutMs ?? 300_000);
  const book = new CheckBook();
  const sessions: ProbeReport['sessions'] = [];
  progress('protocol session');
  let learnt: Learnt | null = null;
  let connected = true;
  try {
    learnt = await protocolSession(o, typeInfo.requests, book, sessions);
  } catch (err) {
    // Not even a connection (openSession marks a failed connect; anything else is the back-end's doing).
    connected = (err as { connectFailed?: boolean }).connectFailed !== true;
    const why = (err as { code?: string }).code ?? errText(err);
    sessions.push({ name: PROTOCOL_SESSION, result: connected ? `no session: ${why}` : `could not connect: ${why}` });
    book.fail('vhost-user.reply.each', connected ? `the first GET_FEATURES was not answered: ${why}` : `could not connect to ${o.socketPath}: ${why}`, PROTOCOL_SESSION);
  }
  let backend: ProbeBackendInfo | undefined;
  if (learnt !== null) {
    backend = { features: hex(learnt.offered), ringFormats: [] };
    if (learnt.protocol !== null) backend.protocolFeatures = hex(learnt.protocol);
    if (learnt.queues !== undefined) backend.queues = learnt.queues;
    progress('driver sessions');
    backend.ringFormats = await runDriverSessions({ ...o, deviceId: typeInfo.deviceId, offered: learnt.offered, write: options.write ?? false, deadline, progress }, book, sessions);
  }
  let hostile: ProbeHostileResult[] | undefined;
  if (options.hostile || options.cases !== undefined) {
    hostile = [];
    const cases = options.cases !== undefined ? HOSTILE_CASES.filter((c) => options.cases!.includes(c.id)) : HOSTILE_CASES;
    let gone = false;
    for (const c of cases) {
      if (gone || Date.now() > deadline) {
        hostile.push({ id: c.id, class: c.class, title: c.title, outcome: 'skipped', reaction: 'skipped', ok: true, note: gone ? 'the back-end is gone (crashed)' : 'the run reached its time bound' });
        continue;
      }
      progress(`hostile ${c.id}`);
      const r = await runCase(c, o, typeInfo.requests, learnt?.protocol ?? null);
      hostile.push(r);
      // A case that checks a rule or clause counts in the table too.
      if (c.clause !== undefined && r.outcome !== 'skipped') {
        if (r.ok) book.pass(c.clause);
        else book.fail(c.clause, `hostile case ${c.id}: ${r.outcome}${r.note ? ` (${r.note})` : ''}`, `hostile ${c.id}`);
      }
      if (r.outcome === 'crashed') gone = true;
    }
  }
  if (hostile === undefined) book.notRun('vhost-user.reply-ack.failure', 'checked by --hostile (ring.addr-outside-ack)');
  const checks = book.list();
  const count = (s: ProbeCheck['status']) => checks.filter((c) => c.status === s).length;
  const hostileFailed = hostile?.filter((h) => !h.ok).length ?? 0;
  const report: ProbeReport = {
    schema: PROBE_REPORT_SCHEMA,
    target: { socketPath: o.socketPath, type: o.type, connected },
    started: new Date(start).toISOString(),
    durationMs: Date.now() - start,
    checks,
    sessions,
    summary: {
      pass: count('pass'),
      fail: count('fail'),
      notRun: count('not-run'),
      hostileOk: hostile?.filter((h) => h.ok && h.outcome !== 'skipped').length ?? 0,
      hostileFailed,
      hostileSkipped: hostile?.filter((h) => h.outcome === 'skipped').length ?? 0,
      clean: count('fail') === 0 && hostileFailed === 0,
    },
  };
  if (backend !== undefined) report.backend = backend;
  if (hostile !== undefined) report.hostile = hostile;
  return report;
}
