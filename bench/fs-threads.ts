/**
 * Where one phase of the bench:fs workload spends its time, per thread (`npm run bench:fs:threads
 * -- SERVER PHASE [--perf]`): boots the workload (2000 files, 32 MiB, share under /dev/shm)
 * against one server and prints, for the phase's span (from the previous phase's VT-RESULT line
 * to its own), each thread's CPU time (/proc/PID/task/TID/schedstat) and voluntary /
 * involuntary context switches, for the server's threads (event loop, V8 helpers, libuv pool)
 * and QEMU's (main loop, vCPU), then the guest's phase times.
 *
 * SERVER: `ours` (this checkout's `serve fs --shared-dir`; PROBE_SERVE_ARGS adds serve
 * arguments; FS_THREADS_CLI=OTHER/dist/src/cli/main.js runs another checkout's), `node:FLAGS` (the same with node flags, e.g. `node:--single-threaded`) or
 * `virtiofsd` (cache=auto, root). PHASE: create, list, read, rename, delete, write, bigread,
 * concurrent, fsync (default read). `--perf`: also `perf trace` of both processes' eventfd,
 * poll and file system calls during the phase, to /tmp/fs-threads-trace-SERVER.txt.
 *
 * This is how the thread-pool hand-off per READ on tmpfs was found (the libuv pool threads woke
 * about 5000 times during cat). Wall times here depend on the load; the CPU and switch counts
 * much less. Nothing here asserts anything but the workload's correctness.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { boot, bin } from '../test/guest/harness.js';
import { benchShareParent, checkWorkload, makeShare, virtiofsdArgs, VIRTIOFSD, workloadAppend } from '../test/guest/fs-host-guest.js';

const argv = process.argv.slice(2);
const SERVER = argv[0]; // ours | virtiofsd | node:<flags>
const PHASE = argv[1] ?? 'read';
const PERF = argv.includes('--perf');
const PHASES = ['create', 'list', 'read', 'rename', 'delete', 'write', 'bigread', 'concurrent', 'fsync'];
const prev = PHASES.indexOf(PHASE) === 0 ? 'big-md5' : `${PHASES[PHASES.indexOf(PHASE) - 1]}-cs`;

interface T { comm: string; ns: number; vol: number; invol: number }
function threads(pid: number): Map<string, T> {
  const m = new Map<string, T>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const st = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
      const comm = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      const ns = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      m.set(tid, { comm, ns, vol: Number(/voluntary_ctxt_switches:\s*(\d+)/.exec(st)![1]), invol: Number(/nonvoluntary_ctxt_switches:\s*(\d+)/.exec(st)![1]) });
    } catch {
      // the thread ended meanwhile
    }
  }
  return m;
}
const qemuPid = (sockPart: string) => Number(spawnSync('pgrep', ['-f', `qemu-system.*${sockPart}`], { encoding: 'utf8' }).stdout.trim().split('\n')[0]);

const share = makeShare(benchShareParent([]));
let child: ChildProcess | null = null;
let sockPath = '';
try {
  const run = await boot({
    kind: 'fs', test: 'fshost', timeoutMs: 600_000, append: workloadAppend({ files: 2000, mb: 32 }),
    device: 'vhost-user-fs-pci,chardev=c0,tag=vtfs', serveArgs: [],
    server: (sock) => {
      sockPath = sock;
      if (SERVER === 'virtiofsd') child = spawn(VIRTIOFSD, virtiofsdArgs(sock, share.root, 'auto'), { stdio: 'ignore' });
      else {
        const flags = SERVER.startsWith('node:') ? SERVER.slice(5).split(' ').filter((x) => x) : [];
        child = spawn(process.execPath, [...flags, process.env.FS_THREADS_CLI ?? bin, 'serve', 'fs', '--socket-path', sock, '--tag', 'vtfs', '--shared-dir', share.root, ...(process.env.PROBE_SERVE_ARGS ?? '').split(' ').filter((x) => x)], { stdio: 'ignore' });
      }
      const exited = new Promise((r) => child!.once('exit', r));
      return { close: () => (child!.kill('SIGTERM'), exited) };
    },
    during: async (g) => {
      await g.waitFor(new RegExp(`VT-RESULT ${prev}`));
      const qp = qemuPid(sockPath.split('/').slice(-2, -1)[0]);
      const sp = child!.pid!;
      const a = threads(sp), qa = threads(qp);
      let perf: ChildProcess | null = null;
      if (PERF) perf = spawn('perf', ['trace', '-T', '-p', `${sp},${qp}`, '-o', `/tmp/fs-threads-trace-${SERVER.replace(/\W/g, '_')}.txt`, '-e', 'read,write,ppoll,epoll_pwait,epoll_wait,futex,io_uring_enter,writev,recvmsg,sendmsg,openat,fstat,newfstatat,close,pread64,preadv2'], { stdio: 'ignore' });
      await g.waitFor(new RegExp(`VT-RESULT ${PHASE}-cs`));
      perf?.kill('SIGINT');
      const b = threads(sp), qb = threads(qp);
      for (const [name, x, y] of [['server', a, b], ['qemu', qa, qb]] as const) {
        for (const [tid, t] of y) {
          const o = x.get(tid) ?? { ns: 0, vol: 0, invol: 0 };
          const d = { ms: (t.ns - o.ns) / 1e6, vol: t.vol - o.vol, invol: t.invol - o.invol };
          if (d.ms > 0.5 || d.vol > 10) console.log(`${name} ${tid} ${t.comm}: cpu ${d.ms.toFixed(0)} ms, vol ${d.vol}, invol ${d.invol}`);
        }
      }
    },
  });
  checkWorkload(run, share.root, 2000);
  console.log(`${SERVER}: ${PHASE} ${Number(run.results.get(`${PHASE}-cs`)) * 10} ms; all: ${PHASES.map((p) => `${p} ${Number(run.results.get(`${p}-cs`)) * 10}`).join(', ')}`);
} finally {
  share.remove();
}
