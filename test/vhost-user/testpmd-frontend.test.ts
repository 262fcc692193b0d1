// DPDK testpmd as a vhost-user FRONT-END (`--vdev net_virtio_user0,path=SOCK`) against
// `virtio-ts serve net`, with no VM: serve net joins a `virtio-ts switch`; this test joins the
// same switch through a StreamFramePort and sends frames to testpmd's MAC; testpmd forwards them
// back with the addresses swapped (`--forward-mode=macswap --port-topology=loop`); every frame
// is checked byte for byte, and serve's --report must hold no verdict but the catalogued
// deviation of DPDK's virtio PMD (num_buffers 1 in transmit headers: docs/findings.md N2).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { StreamFramePort } from '../../src/node/net/stream-port.js';
import { missingPrerequisite } from '../prerequisites.js';
import { haveTestpmd, startTestpmd, testpmdArgs } from '../testpmd.js';
import { until } from '../wait.js';
import { CLI, scratch } from './frontend-peers.js';

const TP_MAC = [0x52, 0x54, 0x00, 0x15, 0x00, 0x01];
const ME = [0x02, 0, 0, 0, 0, 0x99];

/** A CLI child with its output collected; waits (bounded) for `ready` in it. */
export async function cli(args: string[], ready: string): Promise<{ child: ChildProcess; log: () => string; stop: () => Promise<number | null> }> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
  const deadline = Date.now() + 30_000;
  while (!out.includes(ready)) {
    if (child.exitCode !== null) throw new Error(`${args.join(' ')} exited: ${out}`);
    if (Date.now() > deadline) throw new Error(`${args.join(' ')}: no "${ready}" in 30 s: ${out}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    child,
    log: () => out,
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
}

function frame(i: number): Uint8Array {
  const f = new Uint8Array(60 + ((i * 89) % 1455));
  f.set(TP_MAC, 0);
  f.set(ME, 6);
  f[12] = 0x88;
  f[13] = 0xb5;
  for (let k = 14; k < f.length; k++) f[k] = (k * 13 + i) & 0xff;
  return f;
}

test('testpmd net_virtio_user front-end against virtio-ts serve net (through virtio-ts switch), macswap: frames back byte for byte, no verdict but the catalogued one', async (t) => {
  if (!haveTestpmd()) return missingPrerequisite(t, 'dpdk-testpmd (Debian package dpdk-dev)');
  const s = scratch('vt-testpmd-fe-');
  t.after(() => s.remove());
  const swSock = `${s.dir}/switch.sock`;
  const vuSock = `${s.dir}/net.sock`;
  const report = `${s.dir}/report.json`;
  const sw = await cli(['switch', '--socket', swSock], '');
  t.after(() => sw.stop());
  await until(() => existsSync(swSock), 'the switch socket', 30_000);
  const serve = await cli(['serve', 'net', '--socket-path', vuSock, '--mac', TP_MAC.map((x) => x.toString(16).padStart(2, '0')).join(':'), '--switch', swSock, '--report', report, '--log-format', 'json'], 'listening on');
  t.after(() => serve.stop());
  const port = await StreamFramePort.connect(swSock);
  t.after(() => port.close());
  const got: Uint8Array[] = [];
  let probesBack = 0;
  port.onFrame = (f) => {
    if (f[13] === 0xb6) probesBack++; // a link probe (below), not one of the numbered frames
    else got.push(f.slice());
  };
  const pmd = startTestpmd(testpmdArgs([`net_virtio_user0,path=${vuSock},queues=1,mac=${TP_MAC.map((x) => x.toString(16).padStart(2, '0')).join(':')}`], ['--forward-mode=macswap', '--port-topology=loop']));
  t.after(() => pmd.stop());
  await pmd.waitFor('forwards packets on', 'testpmd to forward');
  // The link is up when a frame comes back: "forwards packets on" can be printed before
  // testpmd's receive ring is live, and a frame that meets no ring is lost as Ethernet loses
  // it (the first CI run of this test on a loaded machine timed out on frames 0..15). A probe
  // frame (EtherType 0x88b6, counted apart from the numbered frames) is sent every 50 passes
  // of `until` until one is back.
  const probe = frame(0);
  probe[13] = 0xb6;
  let passes = 0;
  await until(() => {
    if (probesBack > 0) return true;
    if (passes++ % 50 === 0) port.send(probe);
    return false;
  }, 'a probe frame back through testpmd (the link up)', 60_000);
  const N = 256;
  for (let w = 0; w < N; w += 16) {
    for (let i = w; i < w + 16; i++) assert.ok(port.send(frame(i)));
    await until(() => got.length === w + 16, `frames ${w}..${w + 15} back through testpmd`, 30_000);
  }
  for (let i = 0; i < N; i++) {
    const want = frame(i);
    want.set(ME, 0);
    want.set(TP_MAC, 6);
    assert.deepEqual(got[i], want, `frame ${i}`);
  }
  await pmd.stop();
  // Tolerant serve: the catalogued deviation N2 (DPDK's virtio PMD leaves num_buffers 1 in its
  // transmit headers) is logged as known and does not fail the run; nothing else may show.
  assert.equal(await serve.stop(), 0, serve.log());
  const r = JSON.parse(readFileSync(report, 'utf8')) as { schema: string; totals: { violations: number; knownDeviations: number }; clauses: { clause: string }[]; counters: { txFrames: number } };
  assert.equal(r.schema, 'virtio-ts/run-report@1');
  assert.deepEqual(r.clauses.map((c) => c.clause).filter((c) => c !== 'net.packet-transmission.driver.2'), [], serve.log());
  // Violations other than the catalogued deviation (N2): none.
  assert.equal(r.totals.violations - r.totals.knownDeviations, 0);
  assert.ok(r.counters.txFrames >= N);
});
