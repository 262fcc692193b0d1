/**
 * Server CPU per FUSE request with no guest (`npm run bench:fs:lat`): the request path around
 * the FUSE handlers (kick eventfd, event loop, ring, reply, used ring, call eventfd) measured
 * the way bench:fs's guest uses it, one request at a time, against the same path in QEMU's C
 * virtiofsd.
 *
 * This process is the VMM side: a {@link VhostUserFrontEnd} with an {@link FsDriver} and a
 * {@link FuseClient} over it (no VM). The servers run as their own processes, each sharing a
 * directory of two small files: `virtio-ts serve fs --shared-dir` (this checkout's CLI; with `--baseline
 * OTHER/dist/src/cli/main.js` another checkout's too) and, when it can run here (root,
 * Debian's qemu-system-common), virtiofsd with `cache=auto`. Each server gets the same
 * sequences of requests, each sent when the previous one's reply came back:
 *
 * - `getattr`: GETATTR of a file (the smallest request: nearly all of its cost is the path);
 * - `lookup`: LOOKUP of an existing name (one FORGET per 64 LOOKUPs, on hiprio, as Linux batches);
 * - `read`: OPEN, READ of 4 KiB, FLUSH, RELEASE of a small file (cat);
 * - `rename`: RENAME of a file back and forth.
 *
 * The figure is the server process's CPU time (all its threads, from
 * /proc/PID/task/TID/schedstat: nanoseconds on CPU) per request: it does not depend on how long
 * the server waited for the CPU, so it can be compared on a loaded machine. The servers run side
 * by side, each on its own copy of the directory; after a warm-up (the JIT) each round runs every
 * sequence on each server in turn, the order alternating (A B, B A, ...) so that a change of
 * load reaches each alike. Printed: the median per server and sequence, and per other server the
 * median of the rounds' ratios other / virtio-ts (each pair measured back to back; above 1.0:
 * virtio-ts needs less CPU). FSLAT_TICKS=1 also prints user and system time per request (from
 * /proc/PID/stat), FSLAT_NODE_ARGS passes node flags to the virtio-ts servers (profiling).
 * Nothing here asserts anything.
 *
 * Options: --requests N per sequence and round (default 4000), --rounds N (default 5),
 * --baseline PATH, --no-virtiofsd (or --only-ours), --seq getattr,lookup,... (some sequences only), --json.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { VhostUserFrontEnd } from '../src/transports/vhost-user/frontend/front-end.js';
import type { FuseClient } from '../src/fs/fuse/client.js';
import { connectFs, type FsFrontEnd } from '../test/fs/fs-frontend.js';
import { virtiofsdArgs, virtiofsdMissing, VIRTIOFSD } from '../test/guest/fs-host-guest.js';
import { intOption, markdownTable } from './common.js';

const argv = process.argv.slice(2);
const REQUESTS = intOption(argv, '--requests', 4000);
const ROUNDS = intOption(argv, '--rounds', 5);
const BASELINE = argv.includes('--baseline') ? resolve(argv[argv.indexOf('--baseline') + 1]) : undefined;
const JSON_OUT = argv.includes('--json');
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const ALL = ['getattr', 'lookup', 'read', 'rename'] as const;
type Sequence = (typeof ALL)[number];
/** --seq a,b: only these sequences (for profiling one). */
const SEQUENCES: readonly Sequence[] = argv.includes('--seq') ? (argv[argv.indexOf('--seq') + 1].split(',') as Sequence[]) : ALL;
for (const q of SEQUENCES) if (!ALL.includes(q)) throw new Error(`--seq: ${ALL.join(', ')}`);

interface Server {
  name: string;
  start(sock: string, dir: string): ChildProcess;
}

/** FSLAT_NODE_ARGS: node flags for the virtio-ts servers (profiling: --perf-basic-prof, --log-ic, ...). */
const NODE_ARGS = (process.env.FSLAT_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');
const servers: Server[] = [
  { name: 'virtio-ts', start: (sock, dir) => spawn(process.execPath, [...NODE_ARGS, CLI, 'serve', 'fs', '--socket-path', sock, '--tag', 'vtfs', '--shared-dir', dir], { stdio: ['ignore', process.env.FSLAT_SERVER_OUT ? 'inherit' : 'ignore', 'ignore'] }) },
];
if (BASELINE !== undefined) {
  servers.push({ name: 'baseline', start: (sock, dir) => spawn(process.execPath, [...NODE_ARGS, BASELINE, 'serve', 'fs', '--socket-path', sock, '--tag', 'vtfs', '--shared-dir', dir], { stdio: 'ignore' }) });
}
if (!argv.includes('--no-virtiofsd') && !argv.includes('--only-ours') && virtiofsdMissing() === null) {
  servers.push({ name: 'virtiofsd', start: (sock, dir) => spawn(VIRTIOFSD, virtiofsdArgs(sock, dir, 'auto'), { stdio: 'ignore' }) });
}

/** CPU nanoseconds of a process: its threads' schedstat (a thread that ends meanwhile is not counted: the servers keep theirs). */
function cpuNs(pid: number): number {
  let ns = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // the thread ended meanwhile
    }
  }
  return ns;
}

/** User and system CPU ticks of a process (all its threads, ended ones too): /proc/PID/stat utime and stime. */
function ticks(pid: number): [number, number] {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return [Number(rest[11]), Number(rest[12])];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Connects a front-end and an fs driver to the server on `sock` (waiting for the socket). */
async function connect(sock: string): Promise<FsFrontEnd> {
  for (let i = 0; !existsSync(sock); i++) {
    if (i > 500) throw new Error(`no socket at ${sock}`);
    await sleep(10);
  }
  return connectFs(sock);
}

/** Runs `n` requests of sequence `seq` (each waits for the previous reply); returns the requests sent. */
async function run(client: FuseClient, seq: Sequence, n: number): Promise<number> {
  let sent = 0;
  switch (seq) {
    case 'getattr': {
      const e = await client.lookup(1, 'a');
      for (; sent < n; sent++) await client.getattr(e.nodeid);
      await client.forget(e.nodeid, 1);
      return sent + 2;
    }
    case 'lookup': {
      let id = 0;
      let count = 0;
      for (; sent < n; sent++) {
        id = (await client.lookup(1, 'a')).nodeid;
        if (++count === 64) {
          await client.forget(id, count);
          sent++;
          count = 0;
        }
      }
      if (count > 0) await client.forget(id, count);
      return sent + 1;
    }
    case 'read': {
      const e = await client.lookup(1, 'a');
      for (; sent < n; sent += 4) {
        const fh = await client.open(e.nodeid, 0);
        await client.read(e.nodeid, fh, 0, 4096);
        await client.flush(e.nodeid, fh);
        await client.release(e.nodeid, fh);
      }
      await client.forget(e.nodeid, 1);
      return sent + 2;
    }
    case 'rename': {
      // virtiofsd renames only names it looked up (as Linux always does first).
      const e = await client.lookup(1, 'b');
      for (; sent < n; sent += 2) {
        await client.rename(1, 'b', 1, 'c');
        await client.rename(1, 'c', 1, 'b');
      }
      await client.forget(e.nodeid, 1);
      return sent + 2;
    }
  }
}

/** A server running on its own copy of the shared directory, with a front-end connected to it. */
interface Running {
  server: Server;
  child: ChildProcess;
  client: FuseClient;
  close(): Promise<void>;
}

async function launch(server: Server): Promise<Running> {
  const dir = mkdtempSync(join(tmpdir(), 'vt-fslat-'));
  const share = join(dir, 'share');
  const sock = join(dir, 'fs.sock');
  mkdirSync(share);
  writeFileSync(join(share, 'a'), Buffer.alloc(4096, 7));
  writeFileSync(join(share, 'b'), 'b');
  const child = server.start(sock, share);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const close = async (fe?: VhostUserFrontEnd) => {
    await fe?.close();
    child.kill('SIGTERM');
    await Promise.race([exited, sleep(5000)]);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const { fe, client } = await connect(sock);
    return { server, child, client, close: () => close(fe) };
  } catch (err) {
    await close();
    throw err;
  }
}

/** One block: `seq` on `r`; its CPU ns per request (and user/system µs per request from the ticks, for FSLAT_TICKS). */
async function block(r: Running, seq: Sequence): Promise<{ cpu: number; wall: number }> {
  const pid = r.child.pid!;
  const before = cpuNs(pid);
  const t0 = ticks(pid);
  const w0 = performance.now();
  const sent = await run(r.client, seq, REQUESTS);
  const wall = ((performance.now() - w0) * 1e6) / sent;
  const ns = (cpuNs(pid) - before) / sent;
  const t1 = ticks(pid);
  if (process.env.FSLAT_TICKS) console.error(`${r.server.name} ${seq}: user ${(((t1[0] - t0[0]) * 10000) / sent).toFixed(1)} µs, system ${(((t1[1] - t0[1]) * 10000) / sent).toFixed(1)} µs per request`);
  return { cpu: ns, wall };
}

const running: Running[] = [];
const results = new Map<string, Record<Sequence, number[]>>();
/** Round trip per request (request sent to reply seen, this process's side included), ns. */
const walls = new Map<string, Record<Sequence, number[]>>();
try {
  for (const s of servers) {
    running.push(await launch(s));
    results.set(s.name, { getattr: [], lookup: [], read: [], rename: [] });
    walls.set(s.name, { getattr: [], lookup: [], read: [], rename: [] });
  }
  // Warm-up (the JIT), not counted.
  for (const r of running) for (const seq of SEQUENCES) await run(r.client, seq, REQUESTS);
  // Rounds of blocks, the servers alternating (A B, B A, ...) so that load changes reach each alike.
  for (let round = 0; round < ROUNDS; round++) {
    for (const seq of SEQUENCES) {
      for (const r of round % 2 === 0 ? running : [...running].reverse()) {
        const b = await block(r, seq);
        results.get(r.server.name)![seq].push(b.cpu);
        walls.get(r.server.name)![seq].push(b.wall);
      }
    }
    if (!JSON_OUT) console.error(`round ${round + 1}: ${running.map((r) => `${r.server.name} ${SEQUENCES.map((q) => (results.get(r.server.name)![q][round] / 1000).toFixed(1)).join('/')} (wall ${SEQUENCES.map((q) => (walls.get(r.server.name)![q][round] / 1000).toFixed(1)).join('/')})`).join(', ')} µs`);
  }
} finally {
  for (const r of running) await r.close();
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
/** The median over rounds of `a[i] / b[i]` (each pair measured back to back). */
const ratio = (a: number[], b: number[]) => median(a.map((x, i) => x / b[i]));
if (JSON_OUT) {
  console.log(JSON.stringify({ requests: REQUESTS, rounds: ROUNDS, results: Object.fromEntries(results), walls: Object.fromEntries(walls) }, null, 2));
} else {
  const ours = results.get('virtio-ts')!;
  const others = servers.filter((s) => s.name !== 'virtio-ts');
  console.log(`\nbench:fs:lat: server CPU µs per FUSE request (median of ${ROUNDS} rounds of ${REQUESTS} requests per sequence; ratios: median of the rounds' ratios, above 1.0: virtio-ts needs less CPU)`);
  console.log(
    markdownTable(
      ['sequence', ...servers.map((s) => s.name), ...others.map((s) => `${s.name} / virtio-ts`)],
      SEQUENCES.map((q) => [q, ...servers.map((s) => (median(results.get(s.name)![q]) / 1000).toFixed(1)), ...others.map((s) => `${ratio(results.get(s.name)![q], ours[q]).toFixed(3)}x`)]),
      [false, ...servers.map(() => true), ...others.map(() => true)],
    ),
  );
  const wallOf = walls.get('virtio-ts')!;
  console.log(`\nround trip µs per FUSE request (request sent to reply seen, this process's side included: the same for every server), median of ${ROUNDS} rounds; ratios as above (above 1.0: virtio-ts answers sooner)`);
  console.log(
    markdownTable(
      ['sequence', ...servers.map((s) => s.name), ...others.map((s) => `${s.name} / virtio-ts`)],
      SEQUENCES.map((q) => [q, ...servers.map((s) => (median(walls.get(s.name)![q]) / 1000).toFixed(1)), ...others.map((s) => `${ratio(walls.get(s.name)![q], wallOf[q]).toFixed(3)}x`)]),
      [false, ...servers.map(() => true), ...others.map(() => true)],
    ),
  );
}
