/**
 * The driver sessions of a probe's default run: the project's own drivers (BlkDriver,
 * RngDriver) over the vhost-user front-end library, against the back-end, once per ring format
 * and notification mode it offers. Their monitor (tolerant: it records and goes on) watches the
 * device side; every device clause the driver checks along the way is reported by its catalogue
 * id: pass when the session ran through and no verdict named it, fail with the verdict.
 */
import { Monitor } from '../monitor/monitor.js';
import { Feature } from '../spec/constants.js';
import { bit } from '../spec/features.js';
import { BlkDriver } from '../drivers/blk.js';
import { RngDriver } from '../drivers/rng.js';
import type { VirtioDriver } from '../driver/driver.js';
import { VhostUserFrontEnd } from '../transports/vhost-user/frontend/front-end.js';
import { FrontEndError } from '../transports/vhost-user/frontend/errors.js';
import type { CheckBook } from './probe.js';
import type { ProbeReport } from './report.js';

/** What the driver sessions need to know. */
export interface DriverSessionOptions {
  socketPath: string;
  deviceId: number;
  /** GET_FEATURES as the protocol session read it. */
  offered: bigint;
  waitMs: number;
  /** blk: write the same bytes back and read them again. */
  write: boolean;
  /** The run's time bound (epoch ms): no session starts after it. */
  deadline: number;
  progress: (line: string) => void;
}

/** One combination of ring format and notification mode. */
interface Mode {
  name: string;
  features: bigint;
  packed: boolean;
  eventIdx: boolean;
  inOrder: boolean;
}

const has = (f: bigint, b: number) => ((f >> BigInt(b)) & 1n) === 1n;

/** Device clauses the driver core checks on every session (features, status, used ids, reset). */
const COMMON = ['basic.features.device.1', 'basic.features.device.2', 'basic.features.device.4', 'reserved.bits.device.1', 'basic.status.device.1', 'basic.reset.device.1', 'struct.used-id.device.1'];
/** ... on split rings (auditReadable: device-readable buffers hashed). */
const SPLIT = ['struct.used-idx.device.1', 'split.used-ring.device.2', 'split.desc-table.device.1', 'split.desc-table.device.4'];
/** ... on packed rings. */
const PACKED = ['packed.desc-table.device.1', 'packed.desc-table.device.3', 'packed.desc-table.device.4', 'struct.used-len.device.1'];
/** Per device type. */
const BY_TYPE: Record<number, string[]> = { 2: ['blk.device-init.device.1', 'blk.device-init.device.2', 'blk.device-init.device.4'], 4: ['entropy.device-operation.device.1'] };

/** The clauses one session checks. */
function clausesOf(m: Mode, deviceId: number, offered: bigint): string[] {
  const out = [...COMMON, ...(m.packed ? PACKED : SPLIT), ...(BY_TYPE[deviceId] ?? [])];
  if (!m.packed) {
    // Kicks: used.flags is read before each (avail-buffer notification suppression); a used
    // buffer the device wrote without a notification stalls a request (used-buffer suppression).
    out.push(m.eventIdx ? 'split.avail-buffer-notif-suppr.device.3' : 'split.avail-buffer-notif-suppr.device.1');
    out.push(m.eventIdx ? 'split.used-buffer-notif-suppr.device.5' : 'split.used-buffer-notif-suppr.device.3');
  }
  if (m.inOrder) out.push('reserved.bits.device.5');
  if (deviceId === 2 && has(offered, 11) && !has(offered, 9)) out.push('blk.device-init.device.3'); // CONFIG_WCE without FLUSH
  return out;
}

/** The modes the back-end offers: split always; EVENT_IDX, packed and IN_ORDER when offered. */
function modesFor(offered: bigint): Mode[] {
  const base = bit(Feature.VERSION_1) | bit(Feature.INDIRECT_DESC);
  const modes: Mode[] = [];
  for (const packed of has(offered, Feature.RING_PACKED) ? [false, true] : [false]) {
    for (const eventIdx of has(offered, Feature.EVENT_IDX) ? [false, true] : [false]) {
      const features = base | (packed ? bit(Feature.RING_PACKED) : 0n) | (eventIdx ? bit(Feature.EVENT_IDX) : 0n);
      modes.push({ name: `${packed ? 'packed' : 'split'}${eventIdx ? ' event-idx' : ''}`, features, packed, eventIdx, inOrder: false });
    }
    if (has(offered, Feature.IN_ORDER)) {
      modes.push({ name: `${packed ? 'packed' : 'split'} in-order`, features: base | bit(Feature.IN_ORDER) | (packed ? bit(Feature.RING_PACKED) : 0n), packed, eventIdx: false, inOrder: true });
    }
  }
  return modes;
}

/**
 * The front-end connected and negotiated. A back-end that serves one front-end at a time turns
 * a connection away while it still lets go of the last one (the probe's previous session): a
 * connection it closes is tried again, with a growing pause, for `waitMs` at most.
 */
async function connectFrontEnd(o: DriverSessionOptions): Promise<VhostUserFrontEnd> {
  const deadline = Date.now() + o.waitMs;
  for (let pause = 5; ; pause = Math.min(pause * 2, 200)) {
    try {
      return await VhostUserFrontEnd.connect({ socketPath: o.socketPath, deviceId: o.deviceId, timeoutMs: o.waitMs, memorySize: 8 << 20, queueSize: 64 });
    } catch (err) {
      if (!(err instanceof FrontEndError && err.kind === 'disconnected') || Date.now() + pause > deadline) throw err;
      await new Promise((res) => setTimeout(res, pause));
    }
  }
}

/** `p`, or a rejection naming `what` after `ms`. */
function bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, rej) => (timer = setTimeout(() => rej(new Error(`${what}: no answer in ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer));
}

/** The blk workload: a sequential read, 32 reads at once (the same bytes again), a flush; with `write`, a sector written back as it was. */
async function blkWork(d: BlkDriver, write: boolean, ms: number): Promise<string> {
  const bytes = d.capacity * 512;
  const head = new Uint8Array(Math.min(64 * 1024, bytes - (bytes % 4096)));
  if (head.length === 0) return 'a disk under 4 KiB: nothing read';
  await bounded(d.read(0, head), ms, 'a read of the disk\'s first bytes');
  const parts = Array.from({ length: 32 }, (_, i) => ({ at: ((i * 7) % (head.length / 4096)) * 4096, buf: new Uint8Array(4096) }));
  await bounded(Promise.all(parts.map((p) => d.read(p.at, p.buf))), ms, '32 concurrent 4 KiB reads');
  const same = parts.every((p) => p.buf.every((b, k) => b === head[p.at + k]));
  let done = `read ${head.length} bytes, then 32 x 4 KiB at once${same ? '' : ' (DIFFERENT bytes the second time)'}`;
  if (d.negotiated(9)) {
    await bounded(d.flush(), ms, 'a flush');
    done += ', flushed';
  }
  if (write && !d.readOnly) {
    const sector = head.subarray(0, 512).slice();
    await bounded(d.write(0, sector), ms, 'a write of sector 0 (its own bytes)');
    const back = new Uint8Array(512);
    await bounded(d.read(0, back), ms, 'the read back of sector 0');
    done += back.every((b, k) => b === sector[k]) ? ', sector 0 written back and read back the same' : ', sector 0 read back DIFFERENT';
  }
  return done;
}

/** The entropy workload: 8 requests at once, then 4 KiB. */
async function rngWork(d: RngDriver, ms: number): Promise<string> {
  await bounded(Promise.all(Array.from({ length: 8 }, () => d.request(256))), ms, '8 concurrent entropy requests');
  const b = await bounded(d.read(4096), ms, 'a 4 KiB entropy read');
  return `8 requests at once, then ${b.length} bytes`;
}

/**
 * Runs a driver session per mode the back-end offers (blk and rng; other types have no driver
 * here: their clauses are reported not run). Returns the ring formats driven.
 */
export async function runDriverSessions(o: DriverSessionOptions, book: CheckBook, sessions: ProbeReport['sessions']): Promise<('split' | 'packed')[]> {
  const formats = new Set<'split' | 'packed'>();
  if (o.deviceId !== 2 && o.deviceId !== 4) {
    sessions.push({ name: 'driver', result: 'no driver for this device type in virtio-ts: protocol-level probing only' });
    return [];
  }
  for (const m of modesFor(o.offered)) {
    const name = `driver ${m.name}`;
    if (Date.now() > o.deadline) {
      sessions.push({ name, result: 'not run: the run reached its time bound' });
      continue;
    }
    o.progress(name);
    const monitor = new Monitor({ mode: 'tolerant' });
    const seen = new Set<string>();
    monitor.onVerdict((v) => {
      if (v.side !== 'device') return;
      seen.add(v.clause);
      book.fail(v.clause, v.message, name);
    });
    let fe: VhostUserFrontEnd | null = null;
    let driver: VirtioDriver | null = null;
    let result: string;
    let ranThrough = false;
    try {
      fe = await connectFrontEnd(o);
      // vhost-user has no way to learn a back-end's largest ring: 64 fits every back-end we know (QEMU's smallest default is 128; RngDevice's largest 64).
      const common = { monitor, transportFeatures: m.features, auditReadable: true, queueSize: 64 };
      if (o.deviceId === 2) {
        const d = new BlkDriver(fe, common);
        driver = d;
        await bounded(d.start(), o.waitMs * 2, 'driver initialization');
        result = await blkWork(d, o.write, o.waitMs);
      } else {
        const d = new RngDriver(fe, common);
        driver = d;
        await bounded(d.start(), o.waitMs * 2, 'driver initialization');
        result = await rngWork(d, o.waitMs);
      }
      await bounded(driver.shutdown(), o.waitMs, 'device reset');
      formats.add(m.packed ? 'packed' : 'split');
      ranThrough = true;
    } catch (err) {
      result = `ended early: ${err instanceof Error ? err.message : String(err)}`;
      // A request that never completed although the device used it: its notification was missed.
      const q = driver?.queues.find((x) => x.usedPending() > 0);
      if (q !== undefined && !m.packed) {
        const clause = m.eventIdx ? 'split.used-buffer-notif-suppr.device.5' : 'split.used-buffer-notif-suppr.device.3';
        book.fail(clause, `queue ${q.index}: the device used ${q.usedPending()} buffer(s) and sent no used-buffer notification`, name);
        seen.add(clause);
      } else if (/SET_VRING_NUM: the back-end refused/.test(result)) {
        // The back-end's largest ring is smaller than the probe's: nothing the device did wrong.
        result = `not run: ${result.slice('ended early: '.length)} (a ring of 64 entries)`;
      } else if (driver?.failure == null || seen.size === 0) {
        book.fail('vhost-user.ring.start', `the ${m.name} session did not complete: ${result.slice('ended early: '.length)}`, name);
      }
    } finally {
      await fe?.close().catch(() => undefined);
    }
    for (const c of clausesOf(m, o.deviceId, o.offered)) {
      if (seen.has(c)) continue;
      if (ranThrough) book.pass(c);
      else book.notRun(c, `the ${m.name} session did not run through`);
    }
    sessions.push({ name, result });
  }
  return [...formats];
}
