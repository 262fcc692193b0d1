/**
 * Real-guest block benchmark (`npm run bench:guest`): fio inside a Linux guest (QEMU TCG, pc,
 * 1 vCPU, vhost-user-blk-pci num-queues=1) against `virtio-ts serve blk` and, in the same run,
 * against qemu-storage-daemon's vhost-user-blk export (the reference), on one 64 MiB raw image
 * file in the host page cache (written with random bytes and read once before the first boot).
 *
 * Points (fio, libaio, direct=1, time_based, on /dev/vda): 4 KiB random read at queue depth 1
 * and 32, 1 MiB sequential read at queue depth 8. Each guest boot runs all three points (the
 * guest is scripts/guest/build-bench-guest.sh's initramfs; scripts/guest/bench-init runs the
 * jobs named on the kernel command line and prints one VT-FIO line per job). A round boots one
 * guest per back-end; rounds alternate the order (virtio-ts first, then qemu-storage-daemon
 * first, ...) so a drift in host load hits both alike.
 *
 * Figures: per point and back-end the median over the rounds (and the range); the ratio
 * virtio-ts / qemu-storage-daemon of the medians (higher is better for virtio-ts; the goal
 * stated in the issue is >= 1.0 at every point) and the range of the per-round paired ratios.
 * Runs on this kind of machine (2 cores, TCG) vary by about ±30 %: read the ratio, not the
 * absolute figures. Nothing here asserts on time.
 *
 * A third back-end in the same run: the same `virtio-ts serve blk` behind `virtio-ts monitor`
 * (the monitor proxy, src/proxy/), with its ratio to the direct row (the proxy's cost; goal:
 * at most 10 %, ratio >= 0.90).
 *
 * Options: --json (one JSON object instead of the text), --rounds N (BENCH_ROUNDS, default 3),
 * --runtime S (BENCH_RUNTIME_S, default 4; seconds measured per job), --ramp S
 * (BENCH_RAMP_S, default 1; seconds run before measuring), --proxy-only (only the direct and the
 * proxied serve blk: the proxy's cost in half the boots; no qemu-storage-daemon row).
 * BENCH_MONITOR_NODE_ARGS: node options for the proxy's process (e.g. `--cpu-prof
 * --cpu-prof-dir=DIR` to profile it). BENCH_DIR: where the image goes
 * (default os.tmpdir()). Needs qemu-system-x86_64, qemu-storage-daemon, .guest/vmlinux and
 * .guest/bench-initramfs.cpio (the npm script builds it; that needs fio on the host).
 */
import os from 'node:os';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { markdownTable, quantile, si } from './common.js';

const root = join(fileURLToPath(import.meta.url), '../../..');
const bin = join(root, 'dist/src/cli/main.js');
const guest = join(root, '.guest');
const IMAGE_SIZE = 64 << 20;
const MEM = '512M'; // the fio initramfs (84 MB uncompressed) does not unpack in 256M

interface Point {
  job: string; // the spec bench-init takes, rw:bs:qd
  name: string; // the job name bench-init prints
  label: string;
  metric: 'iops' | 'bw';
}
const POINTS: Point[] = [
  { job: 'randread:4k:1', name: 'randread-4k-qd1', label: '4k randread QD1', metric: 'iops' },
  { job: 'randread:4k:32', name: 'randread-4k-qd32', label: '4k randread QD32', metric: 'iops' },
  { job: 'read:1m:8', name: 'read-1m-qd8', label: '1M seq read QD8', metric: 'bw' },
];

/** `virtio-ts+monitor`: virtio-ts serve blk behind `virtio-ts monitor` (the monitor proxy, its own process). */
type BackendId = 'virtio-ts' | 'qemu-storage-daemon' | 'virtio-ts+monitor';
const BACKENDS: BackendId[] = ['virtio-ts', 'qemu-storage-daemon', 'virtio-ts+monitor'];

interface Figure {
  iops: number;
  bw: number; // bytes/s
  latUs: number; // mean total latency
}
interface Boot {
  round: number;
  backend: BackendId;
  seconds: number;
  figures: Record<string, Figure>;
}

function usage(msg: string): never {
  process.stderr.write(`bench:guest: ${msg}\n`);
  process.exit(2);
}

function options(): { json: boolean; rounds: number; runtime: number; ramp: number; proxyOnly: boolean } {
  const args = process.argv.slice(2);
  const num = (flag: string, env: string | undefined, dflt: number, min: number): number => {
    const i = args.indexOf(flag);
    const raw = i >= 0 ? args[i + 1] : env;
    if (raw === undefined) return dflt;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min) usage(`${flag} wants an integer >= ${min}, got ${raw}`);
    return n;
  };
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--json' || args[i] === '--proxy-only') continue;
    if (['--rounds', '--runtime', '--ramp'].includes(args[i])) i++;
    else usage(`unknown argument ${args[i]} (options: --json, --rounds N, --runtime S, --ramp S, --proxy-only)`);
  }
  return {
    json: args.includes('--json'),
    proxyOnly: args.includes('--proxy-only'),
    rounds: num('--rounds', process.env.BENCH_ROUNDS, 3, 1),
    runtime: num('--runtime', process.env.BENCH_RUNTIME_S, 4, 1),
    ramp: num('--ramp', process.env.BENCH_RAMP_S, 1, 0),
  };
}

const which = (cmd: string): string => (spawnSync('/bin/sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).stdout ?? '').trim();

const children = new Set<ChildProcess>();
let tmpDir: string | undefined;
function cleanup(): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  if (tmpDir) rmSync(tmpDir, { recursive: true, force: true });
  tmpDir = undefined;
}
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    cleanup();
    process.exit(128 + (sig === 'SIGINT' ? 2 : 15));
  });
}

function start(cmd: string, args: string[]): { child: ChildProcess; log: () => string } {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let log = '';
  child.stdout!.on('data', (d) => (log += d));
  child.stderr!.on('data', (d) => (log += d));
  child.once('exit', () => children.delete(child));
  return { child, log: () => log };
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

function backendCommand(b: BackendId, image: string, sock: string): [string, string[]] {
  if (b === 'virtio-ts' || b === 'virtio-ts+monitor') return [process.execPath, [bin, 'serve', 'blk', '--socket-path', sock, '--image', image, ...(process.env.BENCH_SERVE_ARGS ?? '').split(' ').filter(Boolean)]];
  return [
    'qemu-storage-daemon',
    [
      '--blockdev', `driver=file,node-name=f0,filename=${image}`,
      '--blockdev', 'driver=raw,node-name=d0,file=f0',
      '--export', `type=vhost-user-blk,id=e0,node-name=d0,addr.type=unix,addr.path=${sock},writable=on`,
    ],
  ];
}

const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/** A process's user + system CPU seconds so far (/proc/PID/stat). */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / CLK_TCK;
}

const khz = (() => {
  const m = /cpu MHz\s*:\s*([\d.]+)/.exec(readFileSync('/proc/cpuinfo', 'utf8'));
  return m ? Math.round(Number(m[1]) * 1000) : 0;
})();

let guestInfo = '';
const notes: string[] = [];

async function boot(b: BackendId, round: number, image: string, o: { runtime: number; ramp: number }): Promise<Boot> {
  const sock = join(tmpDir!, `${b}.sock`);
  rmSync(sock, { force: true });
  const [cmd, args] = backendCommand(b, image, sock);
  const backend = start(cmd, args);
  let proxy: ReturnType<typeof start> | null = null;
  try {
    for (let i = 0; i < 500 && !existsSync(sock) && backend.child.exitCode === null; i++) await new Promise((r) => setTimeout(r, 10));
    if (!existsSync(sock)) throw new Error(`${b} did not listen on ${sock}: ${backend.log().slice(-2000)}`);
    // The proxied row: QEMU connects to the monitor proxy, which connects to serve.
    let chardev = sock;
    if (b === 'virtio-ts+monitor') {
      chardev = `${sock}.monitor`;
      rmSync(chardev, { force: true });
      proxy = start(process.execPath, [...(process.env.BENCH_MONITOR_NODE_ARGS ?? '').split(' ').filter(Boolean), bin, 'monitor', '--listen', chardev, '--connect', sock, '--quiet']);
      for (let i = 0; i < 500 && !existsSync(chardev) && proxy.child.exitCode === null; i++) await new Promise((r) => setTimeout(r, 10));
      if (!existsSync(chardev)) throw new Error(`virtio-ts monitor did not listen on ${chardev}: ${proxy.log().slice(-2000)}`);
    }
    const append = [
      'console=ttyS0 panic=-1 quiet no_timer_check', `tsc_early_khz=${khz}`,
      `vt.fio=${POINTS.map((p) => p.job).join(',')}`, `vt.runtime=${o.runtime}`, `vt.ramp=${o.ramp}`,
    ].join(' ');
    const qemuArgs = [
      '-M', 'pc', '-accel', 'tcg', '-cpu', 'max', '-smp', '1,maxcpus=2', '-m', MEM,
      '-object', `memory-backend-memfd,id=mem,size=${MEM},share=on`, '-numa', 'node,memdev=mem',
      '-nodefaults', '-no-user-config', '-display', 'none', '-serial', 'stdio', '-monitor', 'none', '-no-reboot',
      '-kernel', join(guest, 'vmlinux'), '-initrd', join(guest, 'bench-initramfs.cpio'), '-append', append,
      '-chardev', `socket,id=c0,path=${chardev}`, '-device', 'vhost-user-blk-pci,chardev=c0,num-queues=1',
    ];
    const t0 = performance.now();
    // The proxy's CPU from here on: its cost while the guest runs (node's own start-up, about a
    // second of loading modules before it listens, is not a cost of watching the rings).
    const proxyCpu0 = proxy !== null ? cpuSeconds(proxy.child.pid!) : 0;
    const qemu = start('qemu-system-x86_64', qemuArgs);
    const limitS = 60 + POINTS.length * (o.runtime + o.ramp) * 3;
    const timer = setTimeout(() => qemu.child.kill('SIGKILL'), limitS * 1000);
    const code = await new Promise<number | null>((r) => qemu.child.once('exit', (c) => r(c)));
    clearTimeout(timer);
    const seconds = (performance.now() - t0) / 1000;
    const out = qemu.log();
    const fail = (why: string): never => {
      throw new Error(`round ${round + 1}, ${b}: ${why}\n--- guest console (tail) ---\n${out.slice(-3000)}\n--- ${b} log (tail) ---\n${backend.log().slice(-2000)}`);
    };
    if (code !== 0) fail(`qemu exited ${code ?? 'on a signal'}${seconds >= limitS ? ` (killed after ${limitS} s)` : ''}`);
    for (const m of out.matchAll(/^VT-FIO-ERROR (.*?)\r?$/gm)) fail(`fio failed in the guest: ${m[1]}`);
    if (!/^VT-END/m.test(out)) fail('the guest did not finish its jobs');
    guestInfo ||= /^VT-INFO (.*?)\r?$/m.exec(out)?.[1] ?? '';
    const figures: Record<string, Figure> = {};
    for (const m of out.matchAll(/^VT-FIO (\S+) (\S+) (\S+) (\S+)\r?$/gm)) figures[m[1]] = { iops: Number(m[2]), bw: Number(m[3]), latUs: Number(m[4]) };
    for (const p of POINTS) if (!figures[p.name]) fail(`no figure for ${p.name}`);
    if (b !== 'qemu-storage-daemon' && /"severity":"violation"/.test(backend.log())) {
      notes.push(`round ${round + 1}: the virtio-ts monitor logged a violation by the guest driver (see serve's log)`);
    }
    if (proxy !== null) {
      // The proxy's own CPU over the boot (user + system), to tell its cost from the host's noise.
      const cpu = cpuSeconds(proxy.child.pid!);
      notes.push(`round ${round + 1}: virtio-ts monitor used ${(cpu - proxyCpu0).toFixed(2)} s CPU while the ${seconds.toFixed(0)} s boot ran (${((100 * (cpu - proxyCpu0)) / seconds).toFixed(1)} % of one core; ${cpu.toFixed(2)} s with its start-up)`);
      await stop(proxy.child);
      const said = proxy.log().split('\n').filter((l) => /^(VIOLATION|WARNING)/.test(l));
      if (said.length > 0) notes.push(`round ${round + 1}: virtio-ts monitor reported: ${said.slice(0, 5).join(' | ')}`);
    }
    return { round, backend: b, seconds, figures };
  } finally {
    if (proxy !== null) await stop(proxy.child);
    await stop(backend.child);
  }
}

function writeImage(path: string): void {
  const fd = openSync(path, 'w');
  const chunk = new Uint8Array(1 << 20);
  for (let off = 0; off < IMAGE_SIZE; off += chunk.length) writeSync(fd, randomFillSync(chunk));
  closeSync(fd);
  const rfd = openSync(path, 'r'); // read it once: the page cache holds it for both back-ends
  while (readSync(rfd, chunk) > 0);
  closeSync(rfd);
}

function stats(xs: number[]): { median: number; min: number; max: number } {
  const s = [...xs].sort((a, b) => a - b);
  return { median: quantile(s, 0.5), min: s[0], max: s[s.length - 1] };
}

function fmt(p: Point, x: number): string {
  if (p.metric === 'bw') return (x / 1e9).toFixed(2);
  return x >= 1000 ? si(x).replace(' ', '') : x.toFixed(0);
}

function load(): string {
  return os.loadavg().map((x) => x.toFixed(2)).join(' ');
}

async function main(): Promise<number> {
  const o = options();
  const missing = [
    !which('qemu-system-x86_64') && 'qemu-system-x86_64 (apt-get install qemu-system-x86)',
    !which('qemu-storage-daemon') && 'qemu-storage-daemon (apt-get install qemu-system-common)',
    !existsSync(bin) && 'dist/src/cli/main.js (npm run build)',
    !existsSync(join(guest, 'vmlinux')) && '.guest/vmlinux (bash scripts/guest/build-guest.sh .guest)',
    !existsSync(join(guest, 'bench-initramfs.cpio')) && '.guest/bench-initramfs.cpio (bash scripts/guest/build-bench-guest.sh .guest; needs fio: apt-get install fio)',
  ].filter((x): x is string => typeof x === 'string');
  if (missing.length > 0) {
    process.stderr.write(`bench:guest: cannot run, missing:\n${missing.map((m) => `  - ${m}\n`).join('')}`);
    return 1;
  }
  const log = (s: string): void => void (o.json ? process.stderr : process.stdout).write(`${s}\n`);
  const qemuVersion = spawnSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0];
  const loadBefore = load();
  const started = new Date();
  log(`# bench:guest — fio in a Linux guest, virtio-ts serve blk vs qemu-storage-daemon (vhost-user-blk)`);
  log(`host: ${os.cpus().length} cores, load ${loadBefore} (1/5/15 min); ${qemuVersion}; TCG, pc, 1 vCPU, ${MEM}, vhost-user-blk-pci num-queues=1`);
  log(`${o.rounds} round${o.rounds > 1 ? 's' : ''} x ${o.proxyOnly ? 2 : 3} back-ends (order alternates by round), each boot runs every point: fio libaio direct=1, ${o.runtime} s measured after ${o.ramp} s ramp`);

  tmpDir = mkdtempSync(join(process.env.BENCH_DIR ?? os.tmpdir(), 'virtio-ts-guest-bench-'));
  const image = join(tmpDir, 'disk.img');
  writeImage(image);

  const boots: Boot[] = [];
  const backends = o.proxyOnly ? BACKENDS.filter((b) => b !== 'qemu-storage-daemon') : BACKENDS;
  for (let round = 0; round < o.rounds; round++) {
    const order = round % 2 === 0 ? backends : [...backends].reverse();
    for (const b of order) {
      const r = await boot(b, round, image, o);
      boots.push(r);
      log(`round ${round + 1}/${o.rounds} ${b.padEnd(19)} ${POINTS.map((p) => `${p.label}: ${fmt(p, r.figures[p.name][p.metric])} ${p.metric === 'iops' ? 'IOPS' : 'GB/s'}`).join(', ')} (${r.seconds.toFixed(1)} s)`);
    }
  }
  const loadAfter = load();

  const summary = POINTS.map((p) => {
    const per = (b: BackendId) => boots.filter((x) => x.backend === b).map((x) => x.figures[p.name][p.metric]);
    const vt = stats(per('virtio-ts'));
    const qsd = stats(per('qemu-storage-daemon'));
    const paired = [...Array(o.rounds).keys()].map((round) => {
      const f = (b: BackendId) => boots.find((x) => x.round === round && x.backend === b)?.figures[p.name][p.metric] ?? NaN;
      return f('virtio-ts') / f('qemu-storage-daemon');
    });
    const proxied = stats(per('virtio-ts+monitor'));
    const proxiedPaired = [...Array(o.rounds).keys()].map((round) => {
      const f = (b: BackendId) => boots.find((x) => x.round === round && x.backend === b)!.figures[p.name][p.metric];
      return f('virtio-ts+monitor') / f('virtio-ts');
    });
    return {
      point: p.label, job: p.name, metric: p.metric === 'iops' ? 'IOPS' : 'bytes/s', virtioTs: vt, qemuStorageDaemon: qsd, ratio: vt.median / qsd.median, pairedRatios: paired,
      /** serve blk behind virtio-ts monitor; proxiedRatio = proxied / direct virtio-ts medians (goal >= 0.90: at most 10 % cost). */
      proxied, proxiedRatio: proxied.median / vt.median, proxiedPairedRatios: proxiedPaired,
    };
  });

  if (o.json) {
    const result = {
      started: started.toISOString(), host: { cores: os.cpus().length, loadBefore, loadAfter, qemu: qemuVersion }, guest: guestInfo,
      rounds: o.rounds, runtimeS: o.runtime, rampS: o.ramp, goal: 'ratio >= 1.0 at every point', summary, boots, notes,
    };
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    return 0;
  }
  const range = (p: Point, s: { min: number; max: number }) => (o.rounds > 1 ? ` (${fmt(p, s.min)}–${fmt(p, s.max)})` : '');
  const rows = o.proxyOnly ? [] : summary.map((s, i) => {
    const p = POINTS[i];
    const pr = stats(s.pairedRatios);
    return [s.point, p.metric === 'iops' ? 'IOPS' : 'GB/s', `${fmt(p, s.virtioTs.median)}${range(p, s.virtioTs)}`, `${fmt(p, s.qemuStorageDaemon.median)}${range(p, s.qemuStorageDaemon)}`, s.ratio.toFixed(2), o.rounds > 1 ? `${pr.min.toFixed(2)}–${pr.max.toFixed(2)}` : pr.median.toFixed(2)];
  });
  log('');
  log(`Medians over ${o.rounds} run${o.rounds > 1 ? 's' : ''} per back-end (range in parentheses); ratio = virtio-ts / qemu-storage-daemon of the medians, higher is better; goal >= 1.0 at every point.`);
  log('');
  if (!o.proxyOnly) {
    log(markdownTable(['point', 'metric', 'virtio-ts', 'qemu-storage-daemon', 'ratio', 'per-round ratios'], rows, [false, false, true, true, true, true]));
    log('');
  }
  log('The same serve blk behind `virtio-ts monitor` (the monitor proxy, its own process, watching the rings), same run; ratio = via monitor / direct, goal >= 0.90.');
  log('');
  const proxiedRows = summary.map((s, i) => {
    const p = POINTS[i];
    const pr = stats(s.proxiedPairedRatios);
    return [s.point, p.metric === 'iops' ? 'IOPS' : 'GB/s', `${fmt(p, s.virtioTs.median)}${range(p, s.virtioTs)}`, `${fmt(p, s.proxied.median)}${range(p, s.proxied)}`, s.proxiedRatio.toFixed(2), o.rounds > 1 ? `${pr.min.toFixed(2)}–${pr.max.toFixed(2)}` : pr.median.toFixed(2), s.proxiedPairedRatios.map((r) => r.toFixed(2)).join(' ')];
  });
  log(markdownTable(['point', 'metric', 'direct', 'via monitor', 'ratio', 'per-round ratios', 'each round'], proxiedRows, [false, false, true, true, true, true, false]));
  log('');
  log(`guest: ${guestInfo}; load before ${loadBefore}, after ${loadAfter}; ${boots.reduce((a, b) => a + b.seconds, 0).toFixed(0)} s in guests`);
  for (const n of notes) log(`note: ${n}`);
  return 0;
}

main().then(
  (code) => {
    cleanup();
    process.exitCode = code;
  },
  (err: unknown) => {
    cleanup();
    process.stderr.write(`bench:guest: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
