/**
 * `npm run bench:net`: packets per second for 60-byte ("64-byte" with the FCS) and 1514-byte
 * ("1500-byte" MTU) Ethernet frames, in one run:
 *
 * 1. in-process: NetDriver -> NetDevice -> NetSwitch -> NetDevice -> NetDriver over the
 *    synchronous loopback (the project's whole data path in one thread);
 * 2. through `virtio-ts serve net`: testpmd (net_virtio_user, txonly) -> serve net A ->
 *    virtio-ts switch -> serve net B -> testpmd (net_virtio_user, rxonly), pps at the sink;
 * 3. the ceiling: testpmd (net_virtio_user, txonly) -> testpmd (net_vhost, rxonly).
 *
 * Ratios: serve net / testpmd ceiling, in-process / ceiling. testpmd runs as test/testpmd.ts
 * says (no hugepages: --no-huge -m 512); the sink forwards on CPU 0 and the source on CPU 1 (on
 * one CPU two busy-polling testpmds take turns in scheduler slices and the "ceiling" was ring
 * size x slices per second, ~30 k pps). The pps are the median of testpmd's per-second Rx-pps
 * after two seconds of ramp-up. Under the table: the in-process frames lost (must be 0: the
 * sync loopback runs the whole path inside flush()) and, through serve net, where frames were
 * dropped (serve A, the switch socket, the switch, serve B's hold when the sink's ring is full).
 * The machine is shared: the load average is printed with the figures. Figures only: nothing
 * here asserts a time. Without /usr/bin/dpdk-testpmd the testpmd rows are skipped, with the reason.
 *
 * Options: --seconds S per point (default 3); --size N (one frame size, without FCS);
 * --only inproc|ceiling|serve; --cpu-prof DIR (the switch and both serve net write V8 CPU
 * profiles there; summarize with scripts/cpuprofile-top.mjs); --pmd-nice N (run both testpmds
 * at niceness N). BENCH_NET_DEBUG=1 prints the per-second pps series and testpmd's totals.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { Monitor } from '../src/monitor/monitor.js';
import { LoopbackTransport } from '../src/transports/loopback/loopback.js';
import { NetDevice } from '../src/devices/net/device.js';
import { NetSwitch } from '../src/net/switch.js';
import { NetDriver } from '../src/drivers/net.js';
import { CLI, scratch } from '../test/vhost-user/frontend-peers.js';
import { haveTestpmd, startTestpmd, testpmdArgs, TESTPMD, type Testpmd } from '../test/testpmd.js';

const arg = (name: string): string | undefined => (process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : undefined);
const seconds = Number(arg('--seconds') ?? 3) || 3;
/** --only inproc|ceiling|serve: one row kind (for profiling); --cpu-prof DIR: profile the node children. */
const only = arg('--only');
const profDir = arg('--cpu-prof');
const pmdNice = arg('--pmd-nice') === undefined ? undefined : Number(arg('--pmd-nice'));
const SIZES = arg('--size') !== undefined ? [Number(arg('--size'))] : [60, 1514];
const MAC_A = Uint8Array.of(0x52, 0x54, 0, 0x15, 0, 1);
const MAC_B = Uint8Array.of(0x52, 0x54, 0, 0x15, 0, 2);
const hex = (m: Uint8Array): string => Array.from(m, (x) => x.toString(16).padStart(2, '0')).join(':');

/** Delivered frames per second at the far driver, and the frames lost anywhere on the way (must be 0). */
async function inProcess(size: number): Promise<{ pps: number; lost: number }> {
  const mk = async (mac: Uint8Array) => {
    const device = new NetDevice({ mac, monitor: new Monitor({ mode: 'tolerant' }), queueMaxSize: 256 });
    const driver = new NetDriver(new LoopbackTransport(device, GuestMemory.create(32 << 20), { mode: 'sync' }), { monitor: new Monitor({ mode: 'tolerant' }), queueSize: 256 });
    await driver.start();
    return { device, driver };
  };
  const a = await mk(MAC_A);
  const b = await mk(MAC_B);
  const sw = new NetSwitch();
  sw.attach(a.device.port);
  sw.attach(b.device.port);
  let got = 0;
  b.driver.onFrame = () => got++;
  const f = new Uint8Array(size);
  f.set(MAC_B, 0);
  f.set(MAC_A, 6);
  f[12] = 0x88;
  f[13] = 0xb5;
  let sent = 0;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  // The sync loopback runs the whole path inside flush(): device, switch, far device, far
  // driver's receive and refill. Every 256 bursts the loop yields a task so the drivers'
  // queued microtasks (send() schedules a flush) run and nothing piles up.
  while (performance.now() < end) {
    for (let n = 0; n < 256; n++) {
      for (let i = 0; i < 32; i++) if (a.driver.send(f)) sent++;
      a.driver.flush();
    }
    await new Promise<void>((r) => setImmediate(r));
  }
  const pps = got / ((performance.now() - t0) / 1000);
  const lost = sent - got + a.driver.counts.txDropped;
  a.driver.close();
  b.driver.close();
  return { pps, lost };
}

/** The median of testpmd's periodic `${dir}-pps:` lines (one port each here) after the first two (ramp-up). */
function pps(log: string, dir: 'Rx' | 'Tx'): number {
  const v = [...log.matchAll(dir === 'Rx' ? /Rx-pps:\s+(\d+)/g : /Tx-pps:\s+(\d+)/g)].map((m) => Number(m[1])).slice(2).filter((x) => x > 0);
  if (process.env.BENCH_NET_DEBUG) console.log(dir, v.join(' '));
  if (v.length === 0) return 0;
  v.sort((x, y) => x - y);
  return v[v.length >> 1];
}

async function run(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

async function ceiling(size: number): Promise<{ rx: number; tx: number }> {
  const s = scratch('vt-bench-net-');
  const sock = `${s.dir}/vh.sock`;
  // The sink forwards (busy-polls) on CPU 0, the source on CPU 1: on one CPU the two pollers
  // would take turns in scheduler slices and the figure would be ring size x slices per second.
  const sink = startTestpmd(testpmdArgs([`net_vhost0,iface=${sock},queues=1`], ['--forward-mode=rxonly', '--stats-period=1'], undefined, 0));
  let src: Testpmd | null = null;
  try {
    await sink.waitFor('binding succeeded', 'the vhost socket');
    src = startTestpmd(testpmdArgs([`net_virtio_user0,path=${sock},queues=1`], ['--forward-mode=txonly', `--txpkts=${size}`, '--stats-period=1'], undefined, 1));
    await src.waitFor('forwards packets on', 'the source');
    await run((seconds + 3) * 1000);
    return { rx: pps(sink.log(), 'Rx'), tx: pps(src.log(), 'Tx') };
  } finally {
    await src?.stop();
    await sink.stop();
    s.remove();
  }
}

function child(args: string[]): { stop: () => Promise<void>; log: () => string } {
  // --cpu-prof DIR: every node child (switch, both serve net) writes a V8 CPU profile there.
  const node = profDir === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', profDir, '--cpu-prof-name', `${args[0]}${args[1] === 'net' ? `-${args[3].replace(/.*\//, '')}` : ''}-${process.hrtime.bigint()}.cpuprofile`];
  const c = spawn(process.execPath, [...node, CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  c.stdout!.on('data', (d) => (out += d));
  c.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<void>((res) => c.on('exit', () => res()));
  return {
    log: () => out,
    stop: async () => {
      if (c.exitCode === null) c.kill('SIGTERM');
      await exited;
    },
  };
}

async function waitFor(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await run(20);
  }
}

interface ServeResult {
  /** Frames per second at the sink testpmd, and what the source testpmd sent. */
  rx: number;
  tx: number;
  verdicts: number;
  /** Frames serve net A took from the source, serve net B gave the sink, and the drops on the way (whole run). */
  aTx: number;
  aTxDropped: number;
  /** Frames serve net A could not send to the switch socket (backed up). */
  aSwitchDropped: number;
  bRx: number;
  bRxDropped: number;
  switchDropped: number;
}

async function throughServe(size: number): Promise<ServeResult> {
  const s = scratch('vt-bench-net-');
  const sw = child(['switch', '--socket', `${s.dir}/sw.sock`, '--log-format', 'json']);
  const serves: ReturnType<typeof child>[] = [];
  const pmds: Testpmd[] = [];
  try {
    await waitFor(() => existsSync(`${s.dir}/sw.sock`), 'the switch');
    // Only now: serve net exits 3 when its --switch socket is not there yet (a loaded machine
    // starts the switch slowly).
    for (const [i, m] of [MAC_A, MAC_B].entries()) serves.push(child(['serve', 'net', '--socket-path', `${s.dir}/n${i}.sock`, '--mac', hex(m), '--switch', `${s.dir}/sw.sock`, '--report', `${s.dir}/r${i}.json`, '--log-format', 'json']));
    for (const x of serves) await waitFor(() => x.log().includes('listening on'), 'serve net');
    // Sink and source forward on different CPUs, as in the ceiling.
    const sink = startTestpmd(testpmdArgs([`net_virtio_user0,path=${s.dir}/n1.sock,queues=1,mac=${hex(MAC_B)}`], ['--forward-mode=rxonly', '--stats-period=1'], undefined, 0), { nice: pmdNice });
    pmds.push(sink);
    await sink.waitFor('forwards packets on', 'the sink');
    const src = startTestpmd(testpmdArgs([`net_virtio_user0,path=${s.dir}/n0.sock,queues=1,mac=${hex(MAC_A)}`], ['--forward-mode=txonly', `--txpkts=${size}`, `--eth-peer=0,${hex(MAC_B)}`, '--stats-period=1'], undefined, 1), { nice: pmdNice });
    pmds.push(src);
    await src.waitFor('forwards packets on', 'the source');
    await run((seconds + 3) * 1000);
    const rx = pps(sink.log(), 'Rx');
    const tx = pps(src.log(), 'Tx');
    for (const p of pmds) await p.stop();
    if (process.env.BENCH_NET_DEBUG) for (const p of pmds) console.log(p.log().split('\n').filter((l) => /packets|Accumulated|dropped/i.test(l)).slice(-8).join('\n'));
    for (const x of serves) await x.stop();
    await sw.stop();
    const res: ServeResult = { rx, tx, verdicts: 0, aTx: 0, aTxDropped: 0, aSwitchDropped: 0, bRx: 0, bRxDropped: 0, switchDropped: 0 };
    for (let i = 0; i < 2; i++) {
      if (!existsSync(`${s.dir}/r${i}.json`)) continue;
      const r = JSON.parse(readFileSync(`${s.dir}/r${i}.json`, 'utf8')) as { totals: { verdicts: number }; counters?: Record<string, number> };
      res.verdicts += r.totals.verdicts;
      if (i === 0) {
        res.aTx = r.counters?.txFrames ?? 0;
        res.aTxDropped = r.counters?.txDropped ?? 0;
        res.aSwitchDropped = r.counters?.switchSendDropped ?? 0;
      } else {
        res.bRx = r.counters?.rxFrames ?? 0;
        res.bRxDropped = r.counters?.rxDropped ?? 0;
      }
    }
    const stop = /"counters":\{[^}]*"dropped":(\d+)/.exec(sw.log());
    res.switchDropped = stop === null ? NaN : Number(stop[1]);
    return res;
  } finally {
    for (const p of pmds) await p.stop();
    for (const x of serves) await x.stop();
    await sw.stop();
    s.remove();
  }
}

const fmt = (x: number): string => (Number.isNaN(x) ? '-' : x >= 1e6 ? `${(x / 1e6).toFixed(2)} M` : `${(x / 1e3).toFixed(1)} k`);
const load = (): string => loadavg().map((x) => x.toFixed(2)).join(' ');
console.log(`bench:net — ${seconds} s per point; load average before: ${load()}`);
const testpmd = haveTestpmd();
if (!testpmd) console.log(`skipping the serve net and testpmd rows: ${TESTPMD} is not installed (Debian: apt-get install dpdk)`);
const rows: string[][] = [];
const losses: string[] = [];
for (const size of SIZES) {
  const inproc = only === undefined || only === 'inproc' ? await inProcess(size) : { pps: NaN, lost: 0 };
  if (inproc.lost !== 0) losses.push(`in-process ${size + 4} B: ${inproc.lost} frames lost`);
  let ceil = { rx: NaN, tx: NaN };
  let serve: ServeResult | null = null;
  // testpmd that cannot run here (no permission for its EAL, a broken install) skips its rows
  // with the reason instead of ending `npm run bench`.
  try {
    if (testpmd && (only === undefined || only === 'ceiling')) ceil = await ceiling(size);
  } catch (e) {
    losses.push(`testpmd ceiling ${size + 4} B skipped: ${e instanceof Error ? e.message.slice(0, 500) : String(e)}`);
  }
  try {
    if (testpmd && (only === undefined || only === 'serve')) serve = await throughServe(size);
  } catch (e) {
    losses.push(`serve net ${size + 4} B skipped: ${e instanceof Error ? e.message.slice(0, 500) : String(e)}`);
  }
  if (serve !== null) {
    losses.push(`serve net ${size + 4} B: source sent ${fmt(serve.tx)} pps; serve A took ${serve.aTx} frames (${serve.aTxDropped} dropped, ${serve.aSwitchDropped} not taken by the switch socket), the switch dropped ${serve.switchDropped} (serve B's socket backed up), serve B delivered ${serve.bRx} (${serve.bRxDropped} dropped: the sink's ring full)`);
  }
  const srv = serve?.rx ?? NaN;
  rows.push([`${size + 4}`, fmt(inproc.pps), testpmd ? fmt(srv) : 'no testpmd', testpmd ? fmt(ceil.rx) : 'no testpmd', (srv / ceil.rx).toFixed(3), (inproc.pps / ceil.rx).toFixed(3), `${serve?.verdicts ?? '-'}`]);
}
console.log('| frame (with FCS) | in-process driver-device-switch pps | testpmd -> serve net -> switch -> serve net -> testpmd pps | testpmd -> testpmd pps (ceiling) | serve / ceiling | in-process / ceiling | serve verdicts |');
console.log('|---|---|---|---|---|---|---|');
for (const r of rows) console.log(`| ${r.join(' | ')} |`);
for (const l of losses) console.log(l);
console.log(`load average after: ${load()}`);
