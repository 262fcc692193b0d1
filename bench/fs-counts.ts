/**
 * Per-phase FUSE request counts and server CPU time of the bench:fs guest workload
 * (`npm run bench:fs:counts`): evidence that does not depend on host load, beside bench:fs's
 * wall-clock ratios.
 *
 * - **virtio-ts**: the server runs in this process (HostDirFs behind an FsDevice, served with
 *   serveVhostUser: what `virtio-ts serve fs --shared-dir` runs); at each phase's end line
 *   (VT-RESULT <phase>-cs) the per-opcode counters and this process's CPU time
 *   (process.cpuUsage, user + system: the server's work, the harness's console reading is
 *   negligible) are read.
 * - **virtiofsd** (`--virtiofsd`, root): QEMU's C virtiofsd with `-d` (its debug log names each
 *   request's opcode): the same counts from its log. Its debug log slows it, so only its counts
 *   are read, not its times.
 *
 * Options: --files N (default 2000), --mb N (default 32), --direct-io, --xattr, --posix-locks
 * (as `serve fs`'s: off by default, as there), --virtiofsd (its cache
 * mode: --virtiofsd-cache auto|none, default auto, as bench:fs's headline anchor), --json,
 * --dir DIR (as bench:fs's: default /dev/shm).
 * Nothing here asserts anything but the workload's correctness (checkWorkload).
 */
import { loadavg } from 'node:os';
import { boot } from '../test/guest/harness.js';
import { benchShareParent, checkWorkload, makeShare, virtiofsdArgs, virtiofsdMissing, VIRTIOFSD, workloadAppend } from '../test/guest/fs-host-guest.js';
import { FsDevice } from '../src/devices/fs/device.js';
import { HostDirFs } from '../src/node/fs/host-dir.js';
import { serveVhostUser } from '../src/transports/vhost-user/daemon.js';
import { native } from '../src/native/index.js';
import { opName } from '../src/fs/fuse/wire.js';
import { spawn } from 'node:child_process';
import { intOption, markdownTable } from './common.js';

const argv = process.argv.slice(2);
const opt = (name: string, dflt: number) => intOption(argv, name, dflt);
const FILES = opt('--files', 2000);
const MB = Math.max(16, opt('--mb', 32));
const DIRECT = argv.includes('--direct-io');
const XATTR = argv.includes('--xattr');
const POSIX_LOCKS = argv.includes('--posix-locks');
const VCACHE = argv.includes('--virtiofsd-cache') ? argv[argv.indexOf('--virtiofsd-cache') + 1] : 'auto';
if (VCACHE !== 'auto' && VCACHE !== 'none') throw new Error('--virtiofsd-cache auto|none');
const JSON_OUT = argv.includes('--json');
const SHARE_PARENT = benchShareParent(argv);
const PHASES = ['create', 'list', 'read', 'rename', 'delete', 'write', 'bigread', 'concurrent', 'fsync'] as const;

interface Phase {
  phase: string;
  ms: number;
  cpuMs: number;
  requests: number;
  ops: Record<string, number>;
}

/**
 * Boots the workload against `server` (given its socket and the shared directory) and calls `mark` at the start of the first phase and at
 * the end of each; checks the files it left. Returns the guest's results.
 */
async function runPhases(server: (sock: string, root: string) => { close(): Promise<unknown> }, mark: () => void): Promise<Map<string, string>> {
  const share = makeShare(SHARE_PARENT);
  try {
    const run = await boot({
      kind: 'fs',
      test: 'fshost',
      timeoutMs: 900_000,
      append: workloadAppend({ files: FILES, mb: MB }),
      device: 'vhost-user-fs-pci,chardev=c0,tag=vtfs',
      serveArgs: [],
      server: (sock) => server(sock, share.root),
      during: async (g) => {
        // The first phase starts where the guest has its big file ready.
        await g.waitFor(/VT-RESULT big-md5/);
        mark();
        for (const p of PHASES) {
          await g.waitFor(new RegExp(`VT-RESULT ${p}-cs`));
          mark();
        }
      },
    });
    checkWorkload(run, share.root, FILES);
    return run.results;
  } finally {
    share.remove();
  }
}

/** Per phase: the guest's time, this process's CPU time and the requests by opcode. */
async function runVirtioTs(): Promise<Phase[]> {
  let device: FsDevice | undefined;
  const snaps: { cpu: number; ops: Uint32Array }[] = [];
  const results = await runPhases(
    (sock, root) => {
      // As `virtio-ts serve fs` runs it: no idle-time metrics on the loop (one poll per wakeup).
      native().loopIdleMetrics(false);
      const provider = HostDirFs.open(root, { directIo: DIRECT });
      // serve fs's defaults: no xattrs, no remote POSIX locks (--xattr, --posix-locks turn them on).
      device = new FsDevice({ provider, tag: 'vtfs', xattr: XATTR, posixLocks: POSIX_LOCKS });
      const daemon = serveVhostUser(device, { socket: sock });
      return { close: async () => (await daemon.close(), provider.close()) };
    },
    () => {
      const u = process.cpuUsage();
      snaps.push({ cpu: (u.user + u.system) / 1000, ops: device!.server.opStats.requests.slice() });
    },
  );
  return PHASES.map((p, i) => {
    const a = snaps[i];
    const b = snaps[i + 1];
    const ops: Record<string, number> = {};
    let requests = 0;
    for (let op = 0; op < 64; op++) {
      const n = b.ops[op] - a.ops[op];
      if (n > 0) ops[opName(op)] = n;
      requests += n;
    }
    return { phase: p, ms: Number(results.get(`${p}-cs`)) * 10, cpuMs: b.cpu - a.cpu, requests, ops };
  });
}

/** Per phase: virtiofsd's requests by opcode, from its debug log (no times: the log slows it). */
async function runVirtiofsd(): Promise<Phase[]> {
  let log = '';
  const marks: number[] = [];
  await runPhases(
    (sock, root) => {
      const child = spawn(VIRTIOFSD, [...virtiofsdArgs(sock, root, VCACHE as 'auto' | 'none'), '-d'], { stdio: ['ignore', 'pipe', 'pipe'] });
      child.stdout!.on('data', (d) => (log += d));
      child.stderr!.on('data', (d) => (log += d));
      const exited = new Promise<void>((res) => child.once('exit', () => res()));
      return { close: async () => (child.exitCode === null && child.signalCode === null && child.kill('SIGTERM'), await exited) };
    },
    () => marks.push(log.length),
  );
  return PHASES.map((p, i) => {
    const ops: Record<string, number> = {};
    let requests = 0;
    for (const m of log.slice(marks[i], marks[i + 1]).matchAll(/opcode: (\w+) \(\d+\)/g)) {
      ops[m[1]] = (ops[m[1]] ?? 0) + 1;
      requests++;
    }
    return { phase: p, ms: NaN, cpuMs: NaN, requests, ops };
  });
}

const load = loadavg()[0];
const ours = await runVirtioTs();
let theirs: Phase[] | null = null;
if (argv.includes('--virtiofsd')) {
  const why = virtiofsdMissing();
  if (why !== null) throw new Error(`virtiofsd: ${why}`);
  theirs = await runVirtiofsd();
}
if (JSON_OUT) {
  console.log(JSON.stringify({ files: FILES, mb: MB, dir: SHARE_PARENT, directIo: DIRECT, load, virtioTs: ours, virtiofsd: theirs }, null, 2));
} else {
  const fmt = (ops: Record<string, number>) =>
    Object.entries(ops)
      .sort((a, b) => b[1] - a[1])
      .map(([k, n]) => `${k} ${n}`)
      .join(', ');
  console.log(`\nbench:fs:counts: FUSE requests per phase, ${FILES} files, ${MB} MiB${DIRECT ? ', --direct-io' : ''}, under ${SHARE_PARENT} (load ${load.toFixed(2)} at start)`);
  console.log(
    markdownTable(
      ['phase', 'guest ms', 'server CPU ms', 'requests', 'CPU µs / request', 'virtio-ts requests by opcode', ...(theirs ? [`virtiofsd cache=${VCACHE} requests`, 'virtiofsd by opcode'] : [])],
      ours.map((p, i) => [p.phase, p.ms.toFixed(0), p.cpuMs.toFixed(0), String(p.requests), p.requests > 0 ? ((p.cpuMs * 1000) / p.requests).toFixed(0) : '-', fmt(p.ops), ...(theirs ? [String(theirs[i].requests), fmt(theirs[i].ops)] : [])]),
      [false, true, true, true, true, false, ...(theirs ? [true, false] : [])],
    ),
  );
}
