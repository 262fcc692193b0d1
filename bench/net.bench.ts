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
 * says (no hugepages: --no-huge -m 512). The machine is shared: the load average is printed
 * with the figures. Figures only: nothing here asserts a time.
 *
 * Options: --seconds S per point (default 3).
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
import { haveTestpmd, startTestpmd, testpmdArgs, type Testpmd } from '../test/testpmd.js';

const seconds = Number(process.argv[process.argv.indexOf('--seconds') + 1] ?? 3) || 3;
const SIZES = [60, 1514];
const MAC_A = Uint8Array.of(0x52, 0x54, 0, 0x15, 0, 1);
const MAC_B = Uint8Array.of(0x52, 0x54, 0, 0x15, 0, 2);
const hex = (m: Uint8Array): string => Array.from(m, (x) => x.toString(16).padStart(2, '0')).join(':');

async function inProcess(size: number): Promise<number> {
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
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  while (performance.now() < end) {
    for (let i = 0; i < 32; i++) a.driver.send(f);
    a.driver.flush();
  }
  const pps = got / ((performance.now() - t0) / 1000);
  a.driver.close();
  b.driver.close();
  return pps;
}

/** The median of testpmd's periodic "Rx-pps:" lines of port 0 after the first two (ramp-up). */
function rxPps(log: string): number {
  const v = [...log.matchAll(/Rx-pps:\s+(\d+)/g)].map((m) => Number(m[1])).slice(2).filter((x) => x > 0);
  if (v.length === 0) return 0;
  v.sort((x, y) => x - y);
  return v[v.length >> 1];
}

async function run(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

async function ceiling(size: number): Promise<number> {
  const s = scratch('vt-bench-net-');
  const sock = `${s.dir}/vh.sock`;
  const sink = startTestpmd(testpmdArgs([`net_vhost0,iface=${sock},queues=1`], ['--forward-mode=rxonly', '--stats-period=1']));
  let src: Testpmd | null = null;
  try {
    await sink.waitFor('binding succeeded', 'the vhost socket');
    src = startTestpmd(testpmdArgs([`net_virtio_user0,path=${sock},queues=1`], ['--forward-mode=txonly', `--txpkts=${size}`]));
    await src.waitFor('forwards packets on', 'the source');
    await run((seconds + 3) * 1000);
    return rxPps(sink.log());
  } finally {
    await src?.stop();
    await sink.stop();
    s.remove();
  }
}

function child(args: string[]): { stop: () => Promise<void>; log: () => string } {
  const c = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
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

async function throughServe(size: number): Promise<{ pps: number; verdicts: number }> {
  const s = scratch('vt-bench-net-');
  const sw = child(['switch', '--socket', `${s.dir}/sw.sock`]);
  const serves: ReturnType<typeof child>[] = [];
  const pmds: Testpmd[] = [];
  try {
    await waitFor(() => existsSync(`${s.dir}/sw.sock`), 'the switch');
    // Only now: serve net exits 3 when its --switch socket is not there yet (a loaded machine
    // starts the switch slowly).
    for (const [i, m] of [MAC_A, MAC_B].entries()) serves.push(child(['serve', 'net', '--socket-path', `${s.dir}/n${i}.sock`, '--mac', hex(m), '--switch', `${s.dir}/sw.sock`, '--report', `${s.dir}/r${i}.json`, '--log-format', 'json']));
    for (const x of serves) await waitFor(() => x.log().includes('listening on'), 'serve net');
    const sink = startTestpmd(testpmdArgs([`net_virtio_user0,path=${s.dir}/n1.sock,queues=1,mac=${hex(MAC_B)}`], ['--forward-mode=rxonly', '--stats-period=1']));
    pmds.push(sink);
    await sink.waitFor('forwards packets on', 'the sink');
    const src = startTestpmd(testpmdArgs([`net_virtio_user0,path=${s.dir}/n0.sock,queues=1,mac=${hex(MAC_A)}`], ['--forward-mode=txonly', `--txpkts=${size}`, `--eth-peer=0,${hex(MAC_B)}`]));
    pmds.push(src);
    await src.waitFor('forwards packets on', 'the source');
    await run((seconds + 3) * 1000);
    const pps = rxPps(sink.log());
    for (const p of pmds) await p.stop();
    for (const x of serves) await x.stop();
    let verdicts = 0;
    for (let i = 0; i < 2; i++) if (existsSync(`${s.dir}/r${i}.json`)) verdicts += (JSON.parse(readFileSync(`${s.dir}/r${i}.json`, 'utf8')) as { totals: { verdicts: number } }).totals.verdicts;
    return { pps, verdicts };
  } finally {
    for (const p of pmds) await p.stop();
    for (const x of serves) await x.stop();
    await sw.stop();
    s.remove();
  }
}

const fmt = (x: number): string => (x >= 1e6 ? `${(x / 1e6).toFixed(2)} M` : `${(x / 1e3).toFixed(1)} k`);
console.log(`bench:net — ${seconds} s per point; load average before: ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
const rows: string[][] = [];
for (const size of SIZES) {
  const inproc = await inProcess(size);
  let serve = { pps: NaN, verdicts: 0 };
  let ceil = NaN;
  if (haveTestpmd()) {
    ceil = await ceiling(size);
    serve = await throughServe(size);
  }
  rows.push([`${size + 4}`, fmt(inproc), Number.isNaN(serve.pps) ? 'no testpmd' : fmt(serve.pps), Number.isNaN(ceil) ? 'no testpmd' : fmt(ceil), (serve.pps / ceil).toFixed(3), (inproc / ceil).toFixed(3), `${serve.verdicts}`]);
}
console.log('| frame (with FCS) | in-process driver-device-switch pps | testpmd -> serve net -> switch -> serve net -> testpmd pps | testpmd -> testpmd pps (ceiling) | serve / ceiling | in-process / ceiling | serve verdicts |');
console.log('|---|---|---|---|---|---|---|');
for (const r of rows) console.log(`| ${r.join(' | ')} |`);
console.log(`load average after: ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
