// Issue 15, real guests: two QEMU guests, each with a virtio-net-pci on `-netdev vhost-user`
// served by `virtio-ts serve net`, joined through `virtio-ts switch` (a unix stream socket in
// QEMU's -netdev stream framing). They ping each other and move N MiB over TCP with busybox nc,
// checked by md5 on both ends. Addresses are link-local (169.254.0.0/16) on a network that
// exists only inside the test. Each serve's monitor verdicts must be zero (its --report).
//
// The matrix: split and packed rings, MRG_RXBUF on and off (virtio-net-pci,mrg_rxbuf=off),
// offloads on and off (virtio-net-pci properties turn off the features QEMU offers:
// csum, guest_csum, gso, host_/guest_ tso4/tso6/ecn/ufo). Under TCG on a loaded 2-core box the
// 64 MiB transfer runs in one configuration; the others move 8 MiB. One test per file
// (test/guest/net-*.test.ts): each file has the runner's 300 s budget to itself, which the four
// together overran on a loaded CI machine.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bin, guestDir } from './harness.js';

const qemu = spawnSync('sh', ['-c', 'command -v qemu-system-x86_64'], { encoding: 'utf8' }).stdout.trim();
const khz = (() => {
  const m = /cpu MHz\s*:\s*([\d.]+)/.exec(readFileSync('/proc/cpuinfo', 'utf8'));
  return m ? Math.round(Number(m[1]) * 1000) : 0;
})();

const OFFLOADS_OFF = 'csum=off,guest_csum=off,gso=off,host_tso4=off,host_tso6=off,host_ecn=off,host_ufo=off,guest_tso4=off,guest_tso6=off,guest_ecn=off,guest_ufo=off';

/** One run of the two-guest matrix. */
export interface Config {
  packed: boolean;
  mrg: boolean;
  offloads: boolean;
  mb: number;
}

/** A guest's VT-RESULT lines and its console. */
export interface GuestOut {
  results: Map<string, string>;
  console: string;
}

/** `virtio-ts ARGS` with its stderr collected in `log` (`prefix`: a command to run it under, e.g. ip netns exec NS). */
export function spawnLogged(args: string[], log: { text: string }, prefix: string[] = []): ChildProcess {
  const child = prefix.length > 0 ? spawn(prefix[0], [...prefix.slice(1), process.execPath, bin, ...args], { stdio: ['ignore', 'ignore', 'pipe'] }) : spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr!.on('data', (d) => (log.text += d));
  return child;
}

/** Waits (bounded) for `path` to exist; fails with `what()` (a log) when it does not. */
export async function waitFile(path: string, what: () => string): Promise<void> {
  for (let i = 0; i < 3000 && !existsSync(path); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(existsSync(path), `${path} did not appear: ${what()}`);
}

/** SIGTERM, then the exit code. */
export async function stop(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  child.kill('SIGTERM');
  return new Promise((r) => child.once('exit', (code) => r(code)));
}

/** One guest on `-netdev vhost-user` at `sock` (or on `netArgs`) running the init's `vt.test=<test>` case; its VT-RESULT lines. */
export function runGuest(sock: string, mac: string, device: string, append: string, timeoutMs: number, testName = 'net', netArgs?: string[]): Promise<GuestOut> {
  const args = [
    // maxcpus=2: QEMU 7.2's TCG emits a guest's barriers only then (docs/findings.md T1).
    '-accel', 'tcg', '-cpu', 'max', '-smp', '1,maxcpus=2', '-m', '384M',
    '-object', 'memory-backend-memfd,id=mem,size=384M,share=on', '-numa', 'node,memdev=mem',
    '-nodefaults', '-no-user-config', '-display', 'none', '-serial', 'stdio', '-monitor', 'none', '-no-reboot',
    '-kernel', join(guestDir, 'vmlinux'), '-initrd', join(guestDir, 'initramfs.cpio'),
    '-append', `console=ttyS0 panic=-1 quiet no_timer_check vt.test=${testName} tsc_early_khz=${khz} ${append}`,
    // netArgs: another netdev and NIC instead (QEMU's own virtio-net on -netdev dgram, say).
    ...(netArgs ?? ['-chardev', `socket,id=c0,path=${sock}`, '-netdev', 'vhost-user,id=n0,chardev=c0', '-device', `virtio-net-pci,netdev=n0,mac=${mac}${device ? ',' + device : ''}`]),
  ];
  const q = spawn(qemu, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  q.stderr!.on('data', (d) => (out += d));
  createInterface({ input: q.stdout! }).on('line', (l) => (out += l.replace(/\r$/, '') + '\n'));
  const timer = setTimeout(() => q.kill('SIGKILL'), timeoutMs);
  return new Promise((resolve, reject) =>
    q.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0 || !/VT-END/.test(out)) return reject(new Error(`qemu exited ${code}: ${out.slice(-3000)}`));
      const results = new Map<string, string>();
      for (const m of out.matchAll(/^VT-RESULT (\S+) ?(.*)$/gm)) results.set(m[1], m[2].trim());
      resolve({ results, console: out });
    }),
  );
}

const seconds = (v: string | undefined) => {
  const [a, b] = (v ?? '').split(' ').map(Number);
  return b - a;
};

export async function twoGuests(c: Config): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-net-'));
  const swSock = join(dir, 'switch.sock');
  const logs = { sw: { text: '' }, a: { text: '' }, b: { text: '' } };
  const sw = spawnLogged(['switch', '--socket', swSock, '--log-format', 'json'], logs.sw);
  const serves: ChildProcess[] = [];
  try {
    await waitFile(swSock, () => logs.sw.text);
    const sides = [
      { name: 'a', mac: '52:54:00:15:00:01', ip: '169.254.15.1', peer: '169.254.15.2', role: 'server', log: logs.a },
      { name: 'b', mac: '52:54:00:15:00:02', ip: '169.254.15.2', peer: '169.254.15.1', role: 'client', log: logs.b },
    ];
    for (const s of sides) {
      const sock = join(dir, `${s.name}.sock`);
      serves.push(spawnLogged(['serve', 'net', '--socket-path', sock, '--mac', s.mac, '--switch', swSock, '--report', join(dir, `${s.name}.json`), '--log-format', 'json'], s.log));
      await waitFile(sock, () => s.log.text);
    }
    // vectors=0 (INTx, no MSI-X): QEMU 7.2 under TCG crashes (SIGSEGV in vhost_net_start ->
    // msix_set_vector_notifiers) when a vhost-user virtio-net-pci with MSI-X starts; seen with
    // this back-end whatever its features (docs/findings.md).
    const device = ['vectors=0', c.packed ? 'packed=on' : '', c.mrg ? '' : 'mrg_rxbuf=off', c.offloads ? '' : OFFLOADS_OFF].filter(Boolean).join(',');
    // Below the runner's 300 s per-file budget, so a stalled transfer fails here with both guests'
    // consoles and both serves' logs instead of a bare runner timeout.
    const timeoutMs = Number(process.env.VT_NET_GUEST_TIMEOUT_MS ?? 240_000);
    const [ga, gb] = await Promise.all(
      sides.map((s) => runGuest(join(dir, `${s.name}.sock`), s.mac, device, `vt.ip=${s.ip} vt.peer=${s.peer} vt.role=${s.role} vt.mb=${c.mb}`, timeoutMs)),
    ).catch((err: Error) => {
      // A guest that did not finish: add what each back-end and the switch logged.
      const tail = (t: string) => t.slice(-4000);
      throw new Error(`${err.message}\n--- serve a:\n${tail(logs.a.text)}\n--- serve b:\n${tail(logs.b.text)}\n--- switch:\n${tail(logs.sw.text)}`);
    });
    for (const [g, s] of [[ga, sides[0]], [gb, sides[1]]] as const) {
      assert.equal(g.results.get('ping'), 'ok', `${s.name} pings its peer:\n${g.console.slice(-2000)}\n${s.log.text.slice(-2000)}`);
      assert.equal(g.results.get('net-error'), undefined);
    }
    const sent = gb.results.get('send-md5');
    assert.match(sent ?? '', /^[0-9a-f]{32}$/);
    assert.equal(ga.results.get('recv-md5'), sent, `the server received what the client sent (${c.mb} MiB)`);
    // Features the guest negotiated (a string of 0/1 per bit): MRG_RXBUF is bit 15, CSUM bit 0, RING_PACKED bit 34.
    const feats = ga.results.get('features') ?? '';
    assert.equal(feats[15], c.mrg ? '1' : '0', 'MRG_RXBUF as configured');
    assert.equal(feats[0], c.offloads ? '1' : '0', 'CSUM as configured');
    assert.equal(feats[34], c.packed ? '1' : '0', 'RING_PACKED as configured');
    const secs = seconds(gb.results.get('send-seconds'));
    process.stdout.write(`# net guests ${JSON.stringify(c)}: ${c.mb} MiB in ${secs.toFixed(2)} s = ${(c.mb / secs).toFixed(1)} MiB/s (TCG, load ${readFileSync('/proc/loadavg', 'utf8').split(' ')[0]})\n`);
  } finally {
    for (const s of serves) await stop(s);
    await stop(sw);
  }
  // Each serve's monitor: no violation, no warning.
  for (const name of ['a', 'b']) {
    const path = join(dir, `${name}.json`);
    assert.ok(existsSync(path), `serve net ${name} wrote its report: ${logs[name as 'a'].text.slice(-2000)}`);
    const r = JSON.parse(readFileSync(path, 'utf8')) as { schema: string; totals: { verdicts: number }; clauses: unknown[]; counters: { txFrames: number; rxFrames: number } };
    assert.equal(r.schema, 'virtio-ts/run-report@1');
    assert.deepEqual([r.totals.verdicts, r.clauses], [0, []], `serve net ${name}'s monitor verdicts`);
    assert.ok(r.counters.txFrames > 0 && r.counters.rxFrames > 0);
  }
  rmSync(dir, { recursive: true, force: true });
}
