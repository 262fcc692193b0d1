/**
 * Real-guest file-system benchmark (`npm run bench:fs`): one guest workload (scripts/guest/init
 * `fshost`: small files created, listed with attributes, read, renamed, half deleted; a large
 * file written with fsync and read back after the guest drops its caches; four concurrent
 * writers; 50 fsynced files) over three servers of one host directory, in the same run:
 *
 * - **virtio-ts**: `virtio-ts serve fs --shared-dir DIR` (vhost-user-fs-pci), and again with
 *   `--direct-io` (no guest page cache for file data: what virtiofsd's cache=none does);
 * - **virtiofsd**: QEMU's C virtiofsd (/usr/lib/qemu/virtiofsd, as root, `-o sandbox=chroot`:
 *   test/guest/fs-host-guest.ts virtiofsdArgs) behind the same vhost-user-fs-pci, twice: with
 *   `-o cache=auto` (its default: 1 s entry and attribute timeouts and the guest's page cache,
 *   the cache policy of `virtio-ts serve fs`, so the fair anchor of the headline ratio) and with
 *   `-o cache=none` (timeouts 0, FOPEN_DIRECT_IO: compared with `virtio-ts --direct-io`, which
 *   keeps its 1 s timeouts);
 * - **9p**: QEMU's built-in 9p (`-virtfs local,path=DIR,mount_tag=vt9,security_model=none`; the
 *   guest mounts `-t 9p -o trans=virtio,version=9p2000.L,msize=512000`).
 *
 * The guest times each phase (centiseconds of /proc/uptime, printed as VT-RESULT <phase>-cs);
 * every run's files are checked on the host (test/guest/fs-host-guest.ts checkWorkload), so a
 * server that got something wrong fails the bench instead of posting a time. QEMU TCG, pc, 1
 * vCPU, 256 MiB. A round boots one guest per server; rounds rotate the order so host-load drift
 * hits all alike. Figures: per phase and server the median over rounds; ratios
 * virtiofsd (cache=auto) time / virtio-ts time, virtiofsd cache=none time / virtio-ts
 * --direct-io time and 9p time / virtio-ts time (above 1.0: virtio-ts is faster; the issue's
 * goal: >= 1.0 against virtiofsd, far ahead of 9p). `npm run bench:fs:counts` gives the same
 * workload's FUSE requests per phase and the server's CPU time per request (load-independent). Runs on this kind of
 * machine (2 shared cores, TCG) vary by ±30 %: read the ratios. Nothing here asserts a time.
 *
 * Options: --rounds N (default 3), --files N (default 2000), --mb N (default 32), --json,
 * --only NAME,NAME (run only these servers, by their column names; ratios need their pair),
 * --dir DIR (where the shared directories go; default /dev/shm, a tmpfs: see benchShareParent
 * for why not ext4's temporary directory),
 * --baseline MAIN_JS (another checkout's dist/src/cli/main.js, run as one more server,
 * `virtio-ts baseline`, in the same rounds: a before/after under the same load).
 * Both servers run at their defaults, which are alike: no xattrs, no remote POSIX locks
 * (virtiofsd's no_xattr and no_posix_lock; `serve fs` without --xattr and --posix-locks).
 * `--only '...,virtio-ts --xattr --posix-locks,virtiofsd xattr'` adds the pair with both on
 * (virtiofsd `-o xattr -o posix_lock`), run only when named: each new file then costs both
 * servers a GETXATTR(security.capability) before its first write and a FLUSH at close.
 * virtiofsd needs root and the binary (Debian qemu-system-common); without them its column says why.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { boot, missing, type GuestRun } from '../test/guest/harness.js';
import { benchShareParent, checkWorkload, makeShare, startVirtiofsd, virtiofsdMissing, workloadAppend } from '../test/guest/fs-host-guest.js';
import { intOption, markdownTable, quantile } from './common.js';

const argv = process.argv.slice(2);
const opt = (name: string, dflt: number) => intOption(argv, name, dflt);
const ROUNDS = opt('--rounds', 3);
const FILES = opt('--files', 2000);
const MB = Math.max(16, opt('--mb', 32)); // the concurrent writers take 4 x 4 MiB of it
const JSON_OUT = argv.includes('--json');
const SHARE_PARENT = benchShareParent(argv);
const BASELINE = argv.includes('--baseline') ? argv[argv.indexOf('--baseline') + 1] : undefined;

/** --only a,b: run only these servers (names as in the table: virtio-ts, virtiofsd, 9p, ...). */
const ONLY = argv.includes('--only') ? argv[argv.indexOf('--only') + 1]?.split(',') : undefined;
type Server = 'virtio-ts' | 'virtio-ts --direct-io' | 'virtiofsd' | 'virtiofsd cache=none' | '9p' | 'virtio-ts baseline' | 'virtio-ts --xattr --posix-locks' | 'virtiofsd xattr';
/** Run only when named in --only: both servers with xattrs and remote POSIX locks on. */
const ON_REQUEST: Server[] = ['virtio-ts --xattr --posix-locks', 'virtiofsd xattr'];
const SERVERS: Server[] = ['virtio-ts', 'virtio-ts --direct-io', 'virtiofsd', 'virtiofsd cache=none', '9p', ...(BASELINE !== undefined ? (['virtio-ts baseline'] as const) : []), ...ON_REQUEST];
const PHASES = [
  ['create', `create + write ${FILES} small files`],
  ['list', 'ls -l of them'],
  ['read', 'read them all (cat)'],
  ['rename', 'rename them all (mv)'],
  ['delete', 'delete half (rm)'],
  ['write', `${MB} MiB sequential write + fsync`],
  ['bigread', `${MB} MiB read back (caches dropped)`],
  ['concurrent', '4 writers: appends + 4 MiB each'],
  ['fsync', '50 x (4 KiB write + fsync)'],
] as const;

/** One guest run against `server`: the phases' milliseconds, and the wall time of the boot. */
async function runOnce(server: Server): Promise<{ ms: Record<string, number>; wallMs: number }> {
  const share = makeShare(SHARE_PARENT);
  const started = Date.now();
  try {
    const common = { kind: 'fs' as const, test: 'fshost', timeoutMs: 600_000, append: workloadAppend({ files: FILES, mb: MB, fstype: server === '9p' ? '9p' : 'virtiofs' }) };
    let run: GuestRun;
    if (server === 'virtio-ts' || server === 'virtio-ts --direct-io' || server === 'virtio-ts --xattr --posix-locks') {
      // The column name is the command line: `virtio-ts --direct-io` runs `serve fs ... --direct-io`.
      const options = server === 'virtio-ts' ? [] : server.slice('virtio-ts '.length).split(' ');
      run = await boot({ ...common, device: 'vhost-user-fs-pci,chardev=c0,tag=vtfs', serveArgs: ['--tag', 'vtfs', '--shared-dir', share.root, ...options] });
    } else if (server === 'virtio-ts baseline') {
      run = await boot({
        ...common,
        device: 'vhost-user-fs-pci,chardev=c0,tag=vtfs',
        serveArgs: [],
        server: (sock) => {
          const child = spawn(process.execPath, [BASELINE!, 'serve', 'fs', '--socket-path', sock, '--tag', 'vtfs', '--shared-dir', share.root], { stdio: 'ignore' });
          const exited = new Promise((res) => child.once('exit', res));
          return { close: () => (child.kill('SIGTERM'), exited) };
        },
      });
    } else if (server === 'virtiofsd' || server === 'virtiofsd cache=none' || server === 'virtiofsd xattr') {
      run = await boot({
        ...common,
        device: 'vhost-user-fs-pci,chardev=c0,tag=vtfs',
        serveArgs: [],
        server: (sock) => {
          const d = startVirtiofsd(sock, share.root, server === 'virtiofsd cache=none' ? 'none' : 'auto', server === 'virtiofsd xattr' ? ['xattr', 'posix_lock'] : []);
          return { close: () => d.close() };
        },
      });
    } else {
      run = await boot({ ...common, device: null, serveArgs: [], qemuArgs: ['-virtfs', `local,path=${share.root},mount_tag=vt9,security_model=none`] });
    }
    checkWorkload(run, share.root, FILES);
    const ms: Record<string, number> = {};
    for (const [p] of PHASES) {
      const cs = Number(run.results.get(`${p}-cs`));
      if (!Number.isFinite(cs)) throw new Error(`${server}: the guest did not time ${p}`);
      ms[p] = cs * 10;
    }
    ms.total = PHASES.reduce((s, [p]) => s + ms[p], 0);
    return { ms, wallMs: Date.now() - started };
  } finally {
    share.remove();
  }
}

async function main(): Promise<void> {
  if (missing.length > 0) throw new Error(`bench:fs needs ${missing.join(', ')}`);
  const why: Partial<Record<Server, string>> = {};
  const vfs = virtiofsdMissing();
  if (vfs !== null) why.virtiofsd = why['virtiofsd cache=none'] = why['virtiofsd xattr'] = vfs;
  for (const s of SERVERS) if (ONLY !== undefined ? !ONLY.includes(s) : ON_REQUEST.includes(s)) why[s] = 'not in --only';
  const servers = SERVERS.filter((s) => why[s] === undefined);
  const samples = new Map<Server, Record<string, number>[]>(servers.map((s) => [s, []]));
  const load: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const order = servers.map((_, i) => servers[(i + round) % servers.length]);
    for (const s of order) {
      load.push(loadavg()[0]);
      const r = await runOnce(s);
      samples.get(s)!.push(r.ms);
      if (!JSON_OUT) process.stderr.write(`round ${round + 1}/${ROUNDS} ${s}: total ${r.ms.total} ms of workload (${(r.wallMs / 1000).toFixed(1)} s with boot)\n`);
    }
  }
  const median = (s: Server, p: string) => {
    const xs = samples.get(s)!.map((m) => m[p]).sort((a, b) => a - b);
    return quantile(xs, 0.5);
  };
  const rows = [...PHASES, ['total', 'all phases'] as const].map(([p, label]) => {
    const m = Object.fromEntries(servers.map((s) => [s, median(s, p)])) as Record<Server, number>;
    const ref = m['virtio-ts'];
    return { phase: p, label, ms: m, vsVirtiofsd: m.virtiofsd / ref, directVsVirtiofsd: m['virtiofsd cache=none'] / m['virtio-ts --direct-io'], vs9p: m['9p'] / ref, vsBaseline: m['virtio-ts baseline'] / ref, xattrVsVirtiofsd: m['virtiofsd xattr'] / m['virtio-ts --xattr --posix-locks'] };
  });
  const XATTR = servers.includes('virtio-ts --xattr --posix-locks') && servers.includes('virtiofsd xattr');
  const cpu = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown CPU';
  if (JSON_OUT) {
    console.log(JSON.stringify({ rounds: ROUNDS, files: FILES, mb: MB, dir: SHARE_PARENT, servers, skipped: why, rows, samples: Object.fromEntries(samples), loadavg: load, cpu }, null, 2));
    return;
  }
  const f = (x: number) => (Number.isFinite(x) ? x.toFixed(0) : 'n/a');
  const r = (x: number) => (Number.isFinite(x) ? `${x.toFixed(2)}x` : 'n/a');
  console.log(`\nbench:fs: guest workload over one host directory under ${SHARE_PARENT} (QEMU TCG, 1 vCPU), median of ${ROUNDS} round(s), milliseconds (lower is better); virtiofsd: cache=auto (its default, the cache policy of virtio-ts serve fs)`);
  console.log(
    markdownTable(
      ['phase', ...servers.map((s) => `${s} ms`), 'virtiofsd / virtio-ts', 'virtiofsd cache=none / virtio-ts --direct-io', '9p / virtio-ts', ...(BASELINE !== undefined ? ['baseline / virtio-ts'] : []), ...(XATTR ? ['virtiofsd xattr / virtio-ts --xattr --posix-locks'] : [])],
      rows.map((x) => [x.label, ...servers.map((s) => f(x.ms[s])), r(x.vsVirtiofsd), r(x.directVsVirtiofsd), r(x.vs9p), ...(BASELINE !== undefined ? [r(x.vsBaseline)] : []), ...(XATTR ? [r(x.xattrVsVirtiofsd)] : [])]),
      [false, ...servers.map(() => true), true, true, true, ...(BASELINE !== undefined ? [true] : []), ...(XATTR ? [true] : [])],
    ),
  );
  console.log(`ratios above 1.0: virtio-ts is faster. ${cpu}; load average during the run ${Math.min(...load).toFixed(2)} to ${Math.max(...load).toFixed(2)}`);
  for (const [s, w] of Object.entries(why)) console.log(`${s}: not run (${w})`);
}

await main();
