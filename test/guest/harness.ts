// Booting a real Linux guest against `virtio-ts serve` (or a device served in this process with
// the library's serveVhostUser), with the guest's serial console read as a stream so the host
// can act while the guest runs (resize the image, send signals).
// The prerequisite rule of guest.test.ts: in CI a missing prerequisite is a failure;
// elsewhere the test says what is missing and skips. Every real-guest test boots through here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { createConnection, type Socket } from 'node:net';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { missingPrerequisite } from '../prerequisites.js';

export const root = join(fileURLToPath(import.meta.url), '../../../..');
export const bin = join(root, 'dist/src/cli/main.js');
export const guestDir = join(root, '.guest');
/** The qemu-system-x86_64 on PATH ('' when there is none). */
export const qemu = spawnSync('sh', ['-c', 'command -v qemu-system-x86_64'], { encoding: 'utf8' }).stdout.trim();
export const missing = [
  !qemu && 'qemu-system-x86_64',
  !existsSync(join(guestDir, 'vmlinux')) && '.guest/vmlinux (scripts/guest/build-guest.sh)',
  !existsSync(join(guestDir, 'initramfs.cpio')) && '.guest/initramfs.cpio',
].filter(Boolean);
/** The host's CPU clock in kHz (the guests' tsc_early_khz: TCG's TSC calibration can hang without it). */
export const khz = (() => {
  const m = /cpu MHz\s*:\s*([\d.]+)/.exec(readFileSync('/proc/cpuinfo', 'utf8'));
  return m ? Math.round(Number(m[1]) * 1000) : 0;
})();

export const MICROVM = ['-M', 'microvm', '-global', 'virtio-mmio.force-legacy=false'];

export interface GuestRun {
  /** VT-RESULT name -> value, as the guest printed them. */
  results: Map<string, string>;
  serveLog: string;
  console: string;
}

export interface BootOptions {
  kind: 'rng' | 'blk' | 'vsock' | 'fs';
  /**
   * QEMU -device for the chardev c0; null: no vhost-user back-end at all (nothing is served
   * or waited for: QEMU's own device in `qemuArgs`, e.g. -virtfs).
   */
  device: string | null;
  /** More QEMU arguments (after the device). */
  qemuArgs?: string[];
  serveArgs: string[];
  machine?: string[];
  /** The init case (vt.test=); default: kind. */
  test?: string;
  /** Each console line as it arrives (without the line end); the host may act on it. */
  onLine?: (line: string, serve: ChildProcess) => void | Promise<void>;
  /** Runs alongside the guest (QEMU gets a QMP socket for it); its failure fails the boot. */
  during?: (g: Running) => Promise<void>;
  /** QEMU reconnects to a back-end that went away (-chardev socket,...,reconnect=1). */
  reconnect?: boolean;
  timeoutMs?: number;
  /** The initramfs (default .guest/initramfs.cpio). */
  initrd?: string;
  /** Guest memory in MiB (default 256). */
  memoryMiB?: number;
  /** More kernel arguments (e.g. vt.seq=64 for the workload case). */
  append?: string;
  /** Guest CPUs (default 1; Linux's virtio_blk uses min(num-queues, CPUs) queues). */
  smp?: number;
  /**
   * QEMU's maxcpus (hot-pluggable CPUs; default: 2, or `smp` when larger). Above 1 it makes QEMU 7.2's
   * TCG translate the guest's memory barriers into host barriers, which it leaves out when
   * maxcpus is 1 (tcg_gen_mb and CF_PARALLEL; fixed upstream in QEMU 8.1): without them the
   * guest's smp_mb() between publishing avail.idx and reading avail_event (and between writing
   * used_event and re-reading used.idx) orders nothing against a vhost-user back-end in another
   * process, and a kick or an interrupt can be lost for good (docs/findings.md, T1). Every guest gets at least 2 for that reason.
   * Linux then counts that many possible CPUs (nr_cpu_ids), which sizes some drivers' queues.
   */
  maxCpus?: number;
  /**
   * Serves the device in this process instead of spawning `virtio-ts serve` (the library API):
   * called with the socket path before QEMU starts, closed once QEMU has ended. Not with
   * `onLine`, `reconnect` or `restartServe`, which act on the serve process. `serveArgs` unused.
   */
  server?: (socketPath: string) => { close(): Promise<unknown> };
  /**
   * Puts something between QEMU and the back-end (the monitor proxy): called with the back-end's
   * socket once it listens; QEMU connects to the returned path instead. Closed once QEMU ended,
   * before the back-end stops.
   */
  interpose?: (socketPath: string) => Promise<{ path: string; close(): Promise<unknown> }>;
}

/** What a test can do while its guest runs. */
export interface Running {
  /** Resolves when the guest's console has printed a line matching `re` (rejects if QEMU ends first). */
  waitFor(re: RegExp): Promise<void>;
  /** Runs a QMP command on the QEMU monitor (the reply's "return"). */
  qmp(command: string, args?: Record<string, unknown>): Promise<unknown>;
  /** Kills `virtio-ts serve` with SIGKILL (no clean-up at all), starts a new one on the same socket, waits for QEMU to reconnect (needs `reconnect`). */
  restartServe(): Promise<void>;
}

/** A QMP client: one command at a time, events skipped. */
class Qmp {
  private buffer = '';
  private waiting: ((msg: Record<string, unknown>) => void) | null = null;
  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      this.buffer += d;
      let nl;
      while ((nl = this.buffer.indexOf('\n')) >= 0) {
        const msg = JSON.parse(this.buffer.slice(0, nl)) as Record<string, unknown>;
        this.buffer = this.buffer.slice(nl + 1);
        if ('event' in msg) continue;
        const w = this.waiting;
        this.waiting = null;
        w?.(msg);
      }
    });
  }

  static async connect(path: string): Promise<Qmp> {
    const socket = createConnection(path);
    await new Promise((res, rej) => socket.once('connect', res).once('error', rej));
    const q = new Qmp(socket);
    await q.next(); // greeting
    await q.run('qmp_capabilities');
    return q;
  }

  private next(): Promise<Record<string, unknown>> {
    return new Promise((res) => (this.waiting = res));
  }

  async run(command: string, args?: Record<string, unknown>): Promise<unknown> {
    const reply = this.next();
    this.socket.write(JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}) }) + '\n');
    const msg = await reply;
    if ('error' in msg) throw new Error(`QMP ${command}: ${JSON.stringify(msg.error)}`);
    return msg.return;
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Boots the guest against `virtio-ts serve` (or `o.server`); resolves once QEMU exited 0 and the guest printed VT-END. */
export async function boot(o: BootOptions): Promise<GuestRun> {
  assert.ok(o.server === undefined || (o.onLine === undefined && !o.reconnect), 'an in-process server has no serve process to act on');
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-guest-'));
  const sock = join(dir, `${o.kind}.sock`);
  let serveLog = '';
  const startServe = () => {
    const child = spawn(process.execPath, [bin, 'serve', o.kind, '--socket-path', sock, ...o.serveArgs], { stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr!.on('data', (d) => (serveLog += d));
    return child;
  };
  let serve: ChildProcess | null = null;
  let inProcess: { close(): Promise<unknown> } | null = null;
  let between: { path: string; close(): Promise<unknown> } | null = null;
  if (o.device === null) {
    // QEMU's own device: no back-end.
  } else if (o.server !== undefined) inProcess = o.server(sock);
  else serve = startServe();
  try {
    // Hang guards only, ended early by a serve that exited: starting node and loading the addon
    // takes seconds on a loaded 2-core box (2 s was seen to be too short at load 13).
    for (let i = 0; i < 3000 && o.device !== null && !existsSync(sock) && (serve === null || serve.exitCode === null); i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(o.device === null || existsSync(sock), `virtio-ts serve did not listen: ${serveLog}`);
    if (o.interpose !== undefined) between = await o.interpose(sock);
    const args = [
      ...(o.machine ?? []),
      '-accel', 'tcg', '-cpu', 'max', '-m', `${o.memoryMiB ?? 256}M`, '-smp', `${o.smp ?? 1},maxcpus=${o.maxCpus ?? Math.max(2, o.smp ?? 1)}`,
      '-object', `memory-backend-memfd,id=mem,size=${o.memoryMiB ?? 256}M,share=on`, '-numa', 'node,memdev=mem',
      '-nodefaults', '-no-user-config', '-display', 'none', '-serial', 'stdio', '-monitor', 'none', '-no-reboot',
      '-kernel', join(guestDir, 'vmlinux'), '-initrd', o.initrd ?? join(guestDir, 'initramfs.cpio'),
      // no_timer_check: Linux's boot-time check that the PIT timer reaches the IO-APIC fails when a
      // loaded host starves TCG, and the guest panics ("IO-APIC + timer doesn't work!"; seen at load 8).
      '-append', `console=ttyS0 panic=-1 quiet no_timer_check vt.test=${o.test ?? o.kind} tsc_early_khz=${khz}${o.append ? ' ' + o.append : ''}`,
      ...(o.device === null ? [] : ['-chardev', `socket,id=c0,path=${between?.path ?? sock}${o.reconnect ? ',reconnect=1' : ''}`, '-device', o.device]),
      ...(o.qemuArgs ?? []),
    ];
    const qmpPath = join(dir, 'qmp.sock');
    if (o.during) args.push('-qmp', `unix:${qmpPath},server=on,wait=off`);
    const q = spawn(qemu, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let stderr = '';
    q.stderr!.on('data', (d) => (stderr += d));
    let hostError: unknown;
    let ended = false;
    const watchers = new Set<() => void>();
    const lines = createInterface({ input: q.stdout! });
    lines.on('line', (raw) => {
      const line = raw.replace(/\r$/, '');
      out += line + '\n';
      // VT_GUEST_CONSOLE=1: the guest's console on stderr as it runs (debugging a hang).
      if (process.env.VT_GUEST_CONSOLE) process.stderr.write(`guest: ${line}\n`);
      for (const w of watchers) w();
      if (o.onLine === undefined) return;
      try {
        void Promise.resolve(o.onLine(line, serve!)).catch((e: unknown) => (hostError ??= e));
      } catch (e) {
        hostError ??= e;
      }
    });
    const timeoutMs = o.timeoutMs ?? 90_000;
    const timer = setTimeout(() => q.kill('SIGKILL'), timeoutMs);
    const closed = new Promise<number | null>((res) =>
      q.on('close', (code) => {
        ended = true;
        for (const w of watchers) w();
        res(code);
      }),
    );
    let qmp: Qmp | null = null;
    const running: Running = {
      waitFor: (re) =>
        new Promise<void>((res, rej) => {
          const check = () => {
            if (re.test(out)) {
              watchers.delete(check);
              res();
            } else if (ended) {
              watchers.delete(check);
              rej(new Error(`QEMU ended before the guest printed ${re}`));
            }
          };
          watchers.add(check);
          check();
        }),
      qmp: async (command, cmdArgs) => {
        qmp ??= await Qmp.connect(qmpPath);
        return qmp.run(command, cmdArgs);
      },
      restartServe: async () => {
        const old = serve!;
        old.kill('SIGKILL');
        if (old.exitCode === null && old.signalCode === null) await new Promise((r) => old.once('exit', r));
        const mark = serveLog.length;
        serve = startServe();
        // Hang guards only (30 s each; 3 s was seen to be too short at load 12).
        for (let i = 0; i < 3000 && !serveLog.slice(mark).includes('listening on') && serve!.exitCode === null; i++) await new Promise((r) => setTimeout(r, 10));
        assert.ok(serveLog.slice(mark).includes('listening on'), `the restarted virtio-ts serve did not listen: ${serveLog.slice(mark)}`);
        // QEMU retries every second (reconnect=1): back only when it is connected again.
        for (let i = 0; i < 3000 && !serveLog.slice(mark).includes('front-end connected'); i++) await new Promise((r) => setTimeout(r, 10));
        assert.ok(serveLog.slice(mark).includes('front-end connected'), `QEMU did not reconnect to the restarted virtio-ts serve: ${serveLog.slice(mark)}`);
      },
    };
    const duringDone = o.during ? o.during(running).catch((e: unknown) => (hostError ??= e)) : Promise.resolve();
    const status = await closed;
    clearTimeout(timer);
    await duringDone;
    (qmp as Qmp | null)?.close();
    if (hostError !== undefined) throw hostError;
    const all = out + stderr;
    assert.equal(status, 0, `qemu exited ${status} (timeout ${timeoutMs} ms): ${all.slice(-4000)}\n--- virtio-ts serve:\n${serveLog.slice(-3000)}`);
    const results = new Map<string, string>();
    for (const m of out.matchAll(/^VT-RESULT (\S+) ?(.*)$/gm)) results.set(m[1], m[2].trim());
    assert.match(out, /VT-END/, `the guest test did not finish: ${all.slice(-2000)}`);
    return { results, serveLog, console: all };
  } finally {
    await between?.close();
    const child = serve;
    if (child !== null) {
      child.kill('SIGTERM');
      if (child.exitCode === null && child.signalCode === null) await new Promise((r) => child.once('exit', r));
    }
    await inProcess?.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** No verdict of level violation in serve's log: Linux kept every rule the monitor checks. */
export function noViolations(run: GuestRun): void {
  assert.doesNotMatch(run.serveLog, /"severity":"violation"/, `the monitor saw Linux break a rule:\n${run.serveLog}`);
}

/** A real-guest test: skips with the reason when prerequisites are missing, fails instead in CI. */
export function guestTest(name: string, fn: () => Promise<void>): void {
  test(name, async (t) => {
    if (missing.length > 0) return missingPrerequisite(t, `real guest: ${missing.join(', ')}`);
    await fn();
  });
}

/** Runs `fn` with a fresh, zeroed 64 MiB image file, removed afterwards. */
export async function withImage(fn: (image: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-disk-'));
  try {
    const image = join(dir, 'disk.img');
    writeFileSync(image, new Uint8Array(64 << 20));
    await fn(image);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** No write failed, the guest read back what it wrote, and the first `bytes` of the image hold it. */
export function assertWritten(run: GuestRun, image: string, bytes: number): void {
  assert.equal(run.results.get('write-error'), undefined, 'no write failed');
  const written = run.results.get('pattern-md5');
  assert.match(written ?? '', /^[0-9a-f]{32}$/);
  assert.equal(run.results.get('readback-md5'), written, 'the guest read back what it wrote');
  const onHost = createHash('md5').update(readFileSync(image).subarray(0, bytes)).digest('hex');
  assert.equal(onHost, written, 'the image file holds what the guest wrote (after its sync)');
}

/** What the init case stopcont writes: a 64 KiB pattern 48 times. */
export const STOPCONT_BYTES = 48 * 16 * 4096;

/**
 * Every ring of the virtio devices named `name` (QEMU's virtio name, e.g. 'virtio-user-fs' for vhost-user-fs-pci) as
 * QEMU reads them from guest memory right now (QMP x-query-virtio-queue-element, split rings):
 * avail.idx (the driver has made that many buffers available), used.idx (the back-end has
 * returned that many) and both flags. For a vhost-user device this is the only view of the
 * rings that does not ask the back-end: it tells a buffer the back-end never returned (avail
 * ahead of used) from a notification that never reached the guest (equal). One line per ring.
 */
export async function ringIndices(g: Running, name: string): Promise<string> {
  const devices = (await g.qmp('x-query-virtio')) as { path: string; name: string }[];
  const out: string[] = [];
  for (const d of devices.filter((x) => x.name === name)) {
    const st = (await g.qmp('x-query-virtio-status', { path: d.path })) as { status: unknown; 'num-vqs': number; 'vhost-started'?: boolean };
    for (let q = 0; q < st['num-vqs']; q++) {
      try {
        const e = (await g.qmp('x-query-virtio-queue-element', { path: d.path, queue: q })) as { avail: { idx: number; flags: number }; used: { idx: number; flags: number } };
        out.push(`${d.path} ring ${q}: avail.idx ${e.avail.idx} used.idx ${e.used.idx} (${(e.avail.idx - e.used.idx) & 0xffff} not returned) avail.flags ${e.avail.flags} used.flags ${e.used.flags}`);
      } catch (err) {
        out.push(`${d.path} ring ${q}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
  }
  return out.join('\n');
}
