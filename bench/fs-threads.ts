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
 * poll and file system calls during the phase, to /tmp/fs-threads-trace-SERVER.txt. `--stat`:
 * `perf stat --per-thread` of software events (task-clock, context switches, migrations, page
 * faults) of both processes. `--record`: `perf record -g -e cpu-clock` of the server, to
 * /tmp/fs-threads-SERVER.data (this machine has no hardware counters; run `node:--perf-basic-prof`
 * for JavaScript names). `--syscalls`: `strace -c -f` of the server (counts; strace slows the
 * phase). FS_THREADS_PIN=S,Q: taskset the server's threads to CPU S and QEMU's to CPU Q for the
 * phase (S = Q: everything on one CPU, no wakeup crosses CPUs). Each thread's line splits its CPU
 * time into user and system (clock ticks of /proc/PID/task/TID/stat).
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
const RECORD = argv.includes('--record');
const STAT = argv.includes('--stat');
const SYSCALLS = argv.includes('--syscalls');
const PHASES = ['create', 'list', 'read', 'rename', 'delete', 'write', 'bigread', 'concurrent', 'fsync'];
const prev = PHASES.indexOf(PHASE) === 0 ? 'big-md5' : `${PHASES[PHASES.indexOf(PHASE) - 1]}-cs`;

interface T { comm: string; ns: number; vol: number; invol: number; ut: number; st: number }
function threads(pid: number): Map<string, T> {
  const m = new Map<string, T>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const st = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
      const comm = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      const ns = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      // utime and stime (fields 14 and 15, in clock ticks of 10 ms: USER_HZ is 100 on Linux)
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      m.set(tid, { comm, ns, vol: Number(/voluntary_ctxt_switches:\s*(\d+)/.exec(st)![1]), invol: Number(/nonvoluntary_ctxt_switches:\s*(\d+)/.exec(st)![1]), ut: Number(f[11]) * 10, st: Number(f[12]) * 10 });
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
      // FS_THREADS_PIN=S,Q: the server's threads on CPU S and QEMU's on CPU Q over the phase (is the
      // server's CPU per request from a cache the vCPU thread left cold?)
      if (process.env.FS_THREADS_PIN) {
        const [sc, qc] = process.env.FS_THREADS_PIN.split(',');
        spawnSync('taskset', ['-a', '-p', '-c', sc, String(sp)], { stdio: 'ignore' });
        spawnSync('taskset', ['-a', '-p', '-c', qc, String(qp)], { stdio: 'ignore' });
      }
      const a = threads(sp), qa = threads(qp);
      let perf: ChildProcess | null = null;
      if (PERF) perf = spawn('perf', ['trace', '-T', '-p', `${sp},${qp}`, '-o', `/tmp/fs-threads-trace-${SERVER.replace(/\W/g, '_')}.txt`, '-e', 'read,write,ppoll,epoll_pwait,epoll_wait,futex,io_uring_enter,writev,recvmsg,sendmsg,openat,fstat,newfstatat,close,pread64,preadv2'], { stdio: 'ignore' });
      let pstat: ChildProcess | null = null;
      const pstatOut = `/tmp/fs-threads-stat-${SERVER.replace(/\W/g, '_')}.txt`;
      if (STAT) pstat = spawn('perf', ['stat', '--per-thread', '-e', 'task-clock,context-switches,cpu-migrations,page-faults', '-p', `${sp},${qp}`, '-o', pstatOut], { stdio: 'ignore' });
      // --record: perf record (cpu-clock samples, no hardware counters needed) of the server over the phase
      let prec: ChildProcess | null = null;
      if (RECORD) prec = spawn('perf', ['record', '-g', '-F', '4000', '-e', 'cpu-clock', '-p', `${sp}`, '-o', `/tmp/fs-threads-${SERVER.replace(/\W/g, '_')}.data`], { stdio: 'ignore' });
      // --syscalls: strace -c of the server's threads over the phase (counts; strace slows it)
      let strace: ChildProcess | null = null;
      const straceOut = `/tmp/fs-threads-strace-${SERVER.replace(/\W/g, '_')}.txt`;
      if (SYSCALLS) strace = spawn('strace', ['-c', '-f', '-p', `${sp}`, '-o', straceOut], { stdio: 'ignore' });
      await g.waitFor(new RegExp(`VT-RESULT ${PHASE}-cs`));
      if (strace) { const done = new Promise((r) => strace!.once('exit', r)); strace.kill('SIGINT'); await done; console.log(readFileSync(straceOut, 'utf8')); }
      if (prec) { const done = new Promise((r) => prec!.once('exit', r)); prec.kill('SIGINT'); await done; }
      perf?.kill('SIGINT');
      if (pstat) { const done = new Promise((r) => pstat!.once('exit', r)); pstat.kill('SIGINT'); await done; console.log(readFileSync(pstatOut, 'utf8')); }
      const b = threads(sp), qb = threads(qp);
      for (const [name, x, y] of [['server', a, b], ['qemu', qa, qb]] as const) {
        for (const [tid, t] of y) {
          const o = x.get(tid) ?? { ns: 0, vol: 0, invol: 0, ut: 0, st: 0 };
          const d = { ms: (t.ns - o.ns) / 1e6, vol: t.vol - o.vol, invol: t.invol - o.invol, ut: t.ut - o.ut, st: t.st - o.st };
          if (d.ms > 0.5 || d.vol > 10) console.log(`${name} ${tid} ${t.comm}: cpu ${d.ms.toFixed(0)} ms (user ${d.ut}, sys ${d.st}), vol ${d.vol}, invol ${d.invol}`);
        }
      }
    },
  });
  checkWorkload(run, share.root, 2000);
  console.log(`${SERVER}: ${PHASE} ${Number(run.results.get(`${PHASE}-cs`)) * 10} ms; all: ${PHASES.map((p) => `${p} ${Number(run.results.get(`${p}-cs`)) * 10}`).join(', ')}`);
} finally {
  share.remove();
}
