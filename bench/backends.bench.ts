/**
 * `npm run bench:backends`: the vhost-user-blk back-ends themselves, with no guest in the way.
 * BlkDriver runs over the vhost-user front-end (VhostUserFrontEnd) in this process against
 * `virtio-ts serve blk` and qemu-storage-daemon, both serving the same raw image in the page
 * cache, over split rings (qemu-storage-daemon 7.2 has no packed ring), in the same run: per round and per point the two are measured one after the other,
 * the order alternating (ABBA), for several rounds.
 *
 * Points: 4 KiB random read at queue depth 1 and 32, 4 KiB random write at depth 32, 1 MiB
 * sequential read at depth 8. Per point and back-end: IOPS and GB/s (medians over the rounds,
 * with their range), the ratio virtio-ts / qemu-storage-daemon (higher is better; goal >= 1.0),
 * and the CPU time the back-end process used per request (utime + stime from /proc/PID/stat
 * before and after; lower is better), with its ratio. The front-end's own CPU is the same
 * code for both and is not counted.
 *
 * A third row in the same run: a second `virtio-ts serve blk` behind `virtio-ts monitor` (the
 * monitor proxy of src/proxy/, in its own process, watching the rings); its ratio against the
 * direct row is the proxy's cost (goal: at most 10 %, ratio >= 0.90), with the proxy's own CPU
 * per request. The three are measured in a rotating order.
 *
 * Options: --rounds N (default 3), --seconds S per measurement (default 2), --json.
 * Figures only: nothing here asserts a time.
 */
import { spawn, spawnSync } from 'node:child_process';
import os from 'node:os';
import { existsSync, readFileSync } from 'node:fs';
import { BlkDriver } from '../src/drivers/blk.js';
import { DeviceId } from '../src/spec/constants.js';
import { VhostUserFrontEnd } from '../src/transports/vhost-user/frontend/front-end.js';
import { CLI, haveQsd, makeImage, scratch, SPLIT, startQsd, startServe, type Peer } from '../test/vhost-user/frontend-peers.js';
import { markdownTable, quantile } from './common.js';

const MiB = 1 << 20;
const IMAGE_SIZE = 256 * MiB;

interface Point {
  name: string;
  label: string;
  bs: number;
  depth: number;
  write: boolean;
  sequential: boolean;
}

const POINTS: Point[] = [
  { name: 'randread-qd1', label: '4k randread QD1', bs: 4096, depth: 1, write: false, sequential: false },
  { name: 'randread-qd32', label: '4k randread QD32', bs: 4096, depth: 32, write: false, sequential: false },
  { name: 'randwrite-qd32', label: '4k randwrite QD32', bs: 4096, depth: 32, write: true, sequential: false },
  { name: 'seqread-1m-qd8', label: '1M seqread QD8', bs: MiB, depth: 8, write: false, sequential: true },
];

/** `proxied`: virtio-ts serve blk behind `virtio-ts monitor` (the monitor proxy, its own process). */
type BackendId = 'virtio-ts' | 'qsd' | 'proxied';

function usage(msg: string): never {
  process.stderr.write(`bench:backends: ${msg}\n`);
  process.exit(2);
}

function options(): { json: boolean; rounds: number; seconds: number } {
  const args = process.argv.slice(2);
  const num = (flag: string, dflt: number, min: number): number => {
    const i = args.indexOf(flag);
    if (i < 0) return dflt;
    const n = Number(args[i + 1]);
    if (!Number.isFinite(n) || n < min) usage(`${flag} wants a number >= ${min}, got ${args[i + 1]}`);
    return n;
  };
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--json') continue;
    if (['--rounds', '--seconds'].includes(args[i])) i++;
    else usage(`unknown argument ${args[i]} (options: --json, --rounds N, --seconds S)`);
  }
  return { json: args.includes('--json'), rounds: Math.floor(num('--rounds', 3, 1)), seconds: num('--seconds', 2, 0.2) };
}

const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/** CPU seconds (user + system) process `pid` has used so far. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) start after the last ')'.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / CLK_TCK; // utime, stime: fields 14 and 15
}

interface Figure {
  iops: number;
  bytesPerSecond: number;
  cpuUsPerRequest: number;
  /** The monitor proxy's CPU per request (the proxied row only). */
  proxyCpuUsPerRequest: number;
}

/** Runs `p` for `seconds` (after a ramp of a quarter of that) over `blk`; the back-end is process `pid` (and the monitor proxy `proxyPid`, counted apart). */
async function measure(blk: BlkDriver, pid: number, p: Point, seconds: number, proxyPid?: number): Promise<Figure> {
  const sectors = IMAGE_SIZE / p.bs;
  let seq = 0;
  let requests = 0;
  let counting = false;
  const rampMs = (seconds * 1000) / 4;
  const stopAt = performance.now() + rampMs + seconds * 1000;
  const offset = () => (p.sequential ? (seq++ % sectors) * p.bs : Math.floor(Math.random() * sectors) * p.bs);
  const workers = Array.from({ length: p.depth }, async () => {
    const buf = new Uint8Array(p.bs).fill(0x5a);
    while (performance.now() < stopAt) {
      if (p.write) await blk.write(offset(), buf);
      else await blk.read(offset(), buf);
      if (counting) requests++;
    }
  });
  await new Promise((res) => setTimeout(res, rampMs));
  counting = true;
  const cpu0 = cpuSeconds(pid);
  const proxy0 = proxyPid === undefined ? 0 : cpuSeconds(proxyPid);
  const t0 = performance.now();
  await Promise.all(workers);
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = cpuSeconds(pid) - cpu0;
  const proxyCpu = proxyPid === undefined ? 0 : cpuSeconds(proxyPid) - proxy0;
  return { iops: requests / elapsed, bytesPerSecond: (requests * p.bs) / elapsed, cpuUsPerRequest: (cpu * 1e6) / Math.max(1, requests), proxyCpuUsPerRequest: (proxyCpu * 1e6) / Math.max(1, requests) };
}

function stats(xs: number[]): { median: number; min: number; max: number } {
  const s = [...xs].sort((a, b) => a - b);
  return { median: quantile(s, 0.5), min: s[0], max: s[s.length - 1] };
}

/** `virtio-ts monitor --listen socket --connect backend` (its verdicts on stdout, text), up once it accepts. */
async function startMonitor(socket: string, backend: string): Promise<Peer> {
  const child = spawn(process.execPath, [CLI, 'monitor', '--listen', socket, '--connect', backend, '--quiet'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | string | null>((res) => child.on('exit', (code, signal) => res(code ?? signal)));
  const end = async (signal: NodeJS.Signals) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    await exited;
  };
  const p: Peer = { name: 'virtio-ts monitor', socket, child, log: () => out, exited, stop: () => end('SIGTERM'), kill: () => end('SIGKILL') };
  // A probing connect would be a session of its own (and a connection to serve): wait for the file instead.
  const deadline = Date.now() + 30_000;
  while (!existsSync(socket)) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`virtio-ts monitor did not listen: ${out}`);
    await new Promise((res) => setTimeout(res, 10));
  }
  return p;
}

async function main(): Promise<number> {
  const o = options();
  if (!haveQsd()) usage('qemu-storage-daemon is not installed (apt-get install qemu-system-common or qemu-utils)');
  const dir = scratch('vt-bench-backends-');
  const peers: Peer[] = [];
  // Interrupted: the back-ends and the image go too.
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      for (const p of peers) p.child.kill('SIGKILL');
      dir.remove();
      process.exit(128 + (sig === 'SIGINT' ? 2 : 15));
    });
  }
  const fronts: VhostUserFrontEnd[] = [];
  try {
    const image = `${dir.dir}/disk.img`;
    makeImage(image, IMAGE_SIZE);
    const vt = await startServe('blk', `${dir.dir}/vt.sock`, ['--image', image, '--format', 'raw']);
    peers.push(vt);
    const qsd = await startQsd(image, `${dir.dir}/qsd.sock`);
    peers.push(qsd);
    // The proxied row: a second serve (one front-end at a time each) behind the monitor proxy.
    const vt2 = await startServe('blk', `${dir.dir}/vt2.sock`, ['--image', image, '--format', 'raw']);
    peers.push(vt2);
    const monitor = await startMonitor(`${dir.dir}/monitor.sock`, vt2.socket);
    peers.push(monitor);
    const drivers = new Map<BackendId, { blk: BlkDriver; pid: number; proxyPid?: number }>();
    for (const [id, peer, socket] of [
      ['virtio-ts', vt, vt.socket],
      ['qsd', qsd, qsd.socket],
      ['proxied', vt2, monitor.socket],
    ] as const) {
      const fe = await VhostUserFrontEnd.connect({ socketPath: socket, deviceId: DeviceId.BLOCK, memorySize: 64 * MiB });
      fronts.push(fe);
      // The same ring for both: qemu-storage-daemon 7.2 has no packed ring.
      const blk = new BlkDriver(fe, { transportFeatures: SPLIT });
      await blk.start();
      drivers.set(id, { blk, pid: peer.child.pid!, ...(id === 'proxied' ? { proxyPid: monitor.child.pid! } : {}) });
    }
    const results = new Map<string, Record<BackendId, Figure[]>>(POINTS.map((p) => [p.name, { 'virtio-ts': [], qsd: [], proxied: [] }]));
    let turn = 0;
    const ORDERS: BackendId[][] = [
      ['virtio-ts', 'qsd', 'proxied'],
      ['proxied', 'qsd', 'virtio-ts'],
      ['qsd', 'proxied', 'virtio-ts'],
      ['virtio-ts', 'proxied', 'qsd'],
    ];
    for (let round = 0; round < o.rounds; round++) {
      for (const p of POINTS) {
        const order = ORDERS[turn++ % ORDERS.length];
        for (const id of order) {
          const d = drivers.get(id)!;
          const f = await measure(d.blk, d.pid, p, o.seconds, d.proxyPid);
          results.get(p.name)![id].push(f);
          if (!o.json) process.stderr.write(`round ${round + 1} ${p.label} ${id}: ${Math.round(f.iops)} IOPS, ${f.cpuUsPerRequest.toFixed(1)} us CPU/request\n`);
        }
      }
    }
    const summary = POINTS.map((p) => {
      const r = results.get(p.name)!;
      const s = (id: BackendId, k: keyof Figure) => stats(r[id].map((f) => f[k]));
      return {
        point: p.label,
        job: p.name,
        virtioTs: { iops: s('virtio-ts', 'iops'), bytesPerSecond: s('virtio-ts', 'bytesPerSecond'), cpuUsPerRequest: s('virtio-ts', 'cpuUsPerRequest') },
        qemuStorageDaemon: { iops: s('qsd', 'iops'), bytesPerSecond: s('qsd', 'bytesPerSecond'), cpuUsPerRequest: s('qsd', 'cpuUsPerRequest') },
        proxied: { iops: s('proxied', 'iops'), bytesPerSecond: s('proxied', 'bytesPerSecond'), cpuUsPerRequest: s('proxied', 'cpuUsPerRequest'), proxyCpuUsPerRequest: s('proxied', 'proxyCpuUsPerRequest') },
        /** virtio-ts behind the monitor proxy / virtio-ts direct, IOPS medians (goal >= 0.9: at most 10 % cost). */
        proxiedRatio: s('proxied', 'iops').median / s('virtio-ts', 'iops').median,
      };
    });
    if (o.json) {
      process.stdout.write(`${JSON.stringify({ rounds: o.rounds, seconds: o.seconds, imageBytes: IMAGE_SIZE, load: os.loadavg(), points: summary, monitor: monitor.log().split('\n').filter((l) => /violation|warning|internal/i.test(l)) }, null, 2)}\n`);
      return 0;
    }
    const k = (x: number) => (x >= 1e6 ? `${(x / 1e6).toFixed(2)}M` : x >= 1e3 ? `${(x / 1e3).toFixed(1)}k` : x.toFixed(0));
    const range = (r: { min: number; max: number }, f: (x: number) => string) => (o.rounds > 1 ? ` (${f(r.min)}–${f(r.max)})` : '');
    const rows = summary.map((s) => [
      s.point,
      `${k(s.virtioTs.iops.median)}${range(s.virtioTs.iops, k)}`,
      `${k(s.qemuStorageDaemon.iops.median)}${range(s.qemuStorageDaemon.iops, k)}`,
      (s.virtioTs.iops.median / s.qemuStorageDaemon.iops.median).toFixed(2),
      `${(s.virtioTs.bytesPerSecond.median / 1e9).toFixed(3)} / ${(s.qemuStorageDaemon.bytesPerSecond.median / 1e9).toFixed(3)}`,
      `${s.virtioTs.cpuUsPerRequest.median.toFixed(1)} / ${s.qemuStorageDaemon.cpuUsPerRequest.median.toFixed(1)}`,
      (s.qemuStorageDaemon.cpuUsPerRequest.median / s.virtioTs.cpuUsPerRequest.median).toFixed(2),
    ]);
    const proxiedRows = summary.map((s) => [
      s.point,
      `${k(s.virtioTs.iops.median)}${range(s.virtioTs.iops, k)}`,
      `${k(s.proxied.iops.median)}${range(s.proxied.iops, k)}`,
      s.proxiedRatio.toFixed(2),
      `${s.proxied.proxyCpuUsPerRequest.median.toFixed(1)}`,
    ]);
    process.stdout.write(
      `BlkDriver over the vhost-user front-end, ${o.rounds} round(s) of ${o.seconds} s per point and back-end, alternating; ${IMAGE_SIZE / MiB} MiB raw image in the page cache.\n` +
        'IOPS: median (range); ratio = virtio-ts / qemu-storage-daemon IOPS (higher is better, goal >= 1.0). CPU: back-end process user+system time per request;\n' +
        'CPU ratio = qsd / virtio-ts (higher is better for virtio-ts, goal >= 1.0).\n\n' +
        markdownTable(['point', 'virtio-ts IOPS', 'qsd IOPS', 'ratio', 'GB/s vt / qsd', 'CPU µs/req vt / qsd', 'CPU ratio'], rows, [false, true, true, true, true, true, true]) +
        '\n\nThe same serve blk behind `virtio-ts monitor` (the monitor proxy, its own process), in the same run: ratio = via monitor / direct IOPS (goal >= 0.90);\n' +
        `the proxy's own CPU per request. Load average during the run: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}.\n\n` +
        markdownTable(['point', 'direct IOPS', 'via monitor IOPS', 'ratio', 'monitor CPU µs/req'], proxiedRows, [false, true, true, true, true]) +
        '\n',
    );
    const flagged = monitor.log().split('\n').filter((l) => /VIOLATION|WARNING|internal/.test(l));
    if (flagged.length > 0) process.stdout.write(`\nthe monitor proxy reported:\n${flagged.slice(0, 20).join('\n')}\n`);
    return 0;
  } finally {
    for (const fe of fronts) await fe.close().catch(() => undefined);
    for (const p of peers) await p.stop();
    dir.remove();
  }
}

process.exitCode = await main();
