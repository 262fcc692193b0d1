/**
 * CPU time per FUSE request of the FUSE server and the host-directory provider alone
 * (`npm run bench:fs:ops`): FuseServer.handle over HostDirFs, called in-process with prebuilt
 * requests, no guest, no ring, no event loop. The opcodes and sizes are those the bench:fs
 * guest workload sends in its small-file phases (create, ls -l, cat, mv, rm: see
 * bench/fs-counts.ts for the counts), each opcode timed in its own loop over `--files` files
 * with process.cpuUsage (user + system: load-independent, unlike wall time), in `--rounds`
 * rounds; the table gives each opcode's median over the rounds.
 *
 * Each request is first copied into one reused buffer and handed over as a view of it, as the
 * virtio-fs device does (FsDeviceType.request).
 *
 * What it leaves out, on purpose: the vhost-user ring and the eventfds (bench:fs:counts has the
 * whole server). Options: --files N (default 2000), --rounds N (default 5), --json, and
 * --baseline DIST (another checkout's built `dist` directory, its native addon beside it: its
 * FuseServer and HostDirFs run in the same process, round for round alternating with this
 * one's, so both see the same load; the table adds its figures and the ratio).
 * Figures only: nothing here asserts a time.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { FuseServer, type FuseReply } from '../src/fs/fuse/server.js';
import { fuseRequest } from '../src/fs/fuse/client.js';
import { InitFlag, Op, Size, FUSE_MAJOR, FUSE_MINOR } from '../src/fs/fuse/wire.js';
import { HostDirFs } from '../src/node/fs/host-dir.js';
import { intOption, markdownTable, quantile } from './common.js';

const argv = process.argv.slice(2);
const FILES = intOption(argv, '--files', 2000);
const ROUNDS = intOption(argv, '--rounds', 5);
const JSON_OUT = argv.includes('--json');
const BASELINE = argv.includes('--baseline') ? argv[argv.indexOf('--baseline') + 1] : undefined;
const ROOM = 4096 + Size.outHeader + 4096;

const enc = new TextEncoder();
function cstr(s: string): Uint8Array {
  const b = enc.encode(s);
  const out = new Uint8Array(b.length + 1);
  out.set(b);
  return out;
}
function struct(size: number, fill: (v: DataView) => void): Uint8Array {
  const b = new Uint8Array(size);
  fill(new DataView(b.buffer));
  return b;
}

let unique = 1n;
const req = (op: number, nodeid: number, parts: Uint8Array[]) => fuseRequest(op, unique++, nodeid, parts, { uid: 0, gid: 0, pid: 1 });

/** A reply's u64 at `off` of its body (after fuse_out_header), or an Error for an error reply. */
function replyU64(r: FuseReply | null | Promise<unknown>, off: number): number {
  if (r === null || r instanceof Promise) throw new Error('expected a synchronous reply');
  const v = new DataView(r.head.buffer, r.head.byteOffset, r.head.byteLength);
  const err = v.getInt32(4, true);
  if (err !== 0) throw new Error(`error reply ${-err}`);
  return v.getUint32(Size.outHeader + off, true) + v.getUint32(Size.outHeader + off + 4, true) * 2 ** 32;
}

/** Every request is copied here before it is handed over, as the virtio-fs device does (one buffer for all). */
const scratch = new Uint8Array(1 << 20);

/** Calls `handle` on every request; returns CPU µs per request. */
function timed(server: Server, reqs: Uint8Array[], check?: (r: ReturnType<FuseServer['handle']>, i: number) => void): number {
  const t0 = process.cpuUsage();
  for (let i = 0; i < reqs.length; i++) {
    const q = reqs[i];
    scratch.set(q);
    const r = server.handle(scratch.subarray(0, q.length), ROOM);
    if (check !== undefined) check(r, i);
  }
  const t = process.cpuUsage(t0);
  return (t.user + t.system) / reqs.length;
}

/** What a round needs of a checkout: its server and provider classes. */
interface Impl {
  FuseServer: typeof FuseServer;
  HostDirFs: typeof HostDirFs;
}
type Server = InstanceType<typeof FuseServer>;

/** Per opcode, CPU µs per request of each round. */
type Results = Map<string, number[]>;

/**
 * One round over a fresh directory: yields after each timed step, so two checkouts' rounds run
 * step by step in turn (see lockstep).
 */
function* round(impl: Impl, results: Results): Generator<void> {
  const note = (name: string, us: number) => (results.get(name) ?? results.set(name, []).get(name)!).push(us);
  const root = mkdtempSync(join(tmpdir(), 'vt-fsops-'));
  const fs = impl.HostDirFs.open(root);
  try {
    const server = new impl.FuseServer(fs);
    const init = struct(Size.initIn, (v) => {
      v.setUint32(0, FUSE_MAJOR, true);
      v.setUint32(4, FUSE_MINOR, true);
      v.setUint32(8, 128 << 10, true);
      v.setUint32(12, InitFlag.ASYNC_READ | InitFlag.BIG_WRITES | InitFlag.DO_READDIRPLUS | InitFlag.READDIRPLUS_AUTO | InitFlag.MAX_PAGES | InitFlag.PARALLEL_DIROPS | InitFlag.HANDLE_KILLPRIV_V2, true);
    });
    server.handle(req(Op.INIT, 0, [init]), ROOM);
    const dir = 'small';
    const dirId = replyU64(server.handle(req(Op.MKDIR, 1, [struct(Size.mkdirIn, (v) => v.setUint32(0, 0o755, true)), cstr(dir)]), ROOM), 0);
    const names = Array.from({ length: FILES }, (_, i) => `f${i}`);
    const ids: number[] = [];
    const fhs: number[] = [];
    const forget = (id: number, n: number) => req(Op.FORGET, id, [struct(Size.forgetIn, (v) => v.setUint32(0, n, true))]);

    // LOOKUP of names the server does not hold yet (files made on the host), then FORGET.
    for (const n of names) writeFileSync(join(root, `h${n}`), 'on the host\n');
    const hostIds: number[] = [];
    note('LOOKUP (new node)', timed(server, names.map((nm) => req(Op.LOOKUP, 1, [cstr(`h${nm}`)])), (r, i) => (hostIds[i] = replyU64(r, 0))));
    yield;
    note('FORGET', timed(server, hostIds.map((id) => forget(id, 1))));
    yield;

    // create: CREATE, WRITE, FLUSH, RELEASE (as `echo > file`; the files are the workload's).
    const createIn = struct(Size.createIn, (v) => {
      v.setUint32(0, 0o1101, true); // O_WRONLY | O_CREAT | O_TRUNC
      v.setUint32(4, 0o100644, true);
      v.setUint32(8, 0o022, true);
    });
    note('CREATE', timed(server, names.map((n) => req(Op.CREATE, dirId, [createIn, cstr(n)])), (r, i) => {
      ids[i] = replyU64(r, 0);
      fhs[i] = replyU64(r, Size.entryOut);
    }));
    yield;
    // The guest kernel's security.capability check before each new file's first write (ENODATA).
    const getxattrIn = struct(Size.getxattrIn, (v) => v.setUint32(0, 0, true));
    note('GETXATTR (ENODATA)', timed(server, ids.map((id) => req(Op.GETXATTR, id, [getxattrIn, cstr('security.capability')]))));
    yield;
    const body = (i: number) => enc.encode(`small file ${i}\n`);
    note('WRITE', timed(server, names.map((_, i) => req(Op.WRITE, ids[i], [struct(Size.writeIn, (v) => (v.setUint32(0, fhs[i], true), v.setUint32(16, body(i).length, true))), body(i)]))));
    yield;
    const flushIn = (i: number) => struct(Size.flushIn, (v) => v.setUint32(0, fhs[i], true));
    const releaseIn = (i: number) => struct(Size.releaseIn, (v) => (v.setUint32(0, fhs[i], true), v.setUint32(8, 0o1, true)));
    note('FLUSH', timed(server, names.map((_, i) => req(Op.FLUSH, ids[i], [flushIn(i)]))));
    yield;
    note('RELEASE', timed(server, names.map((_, i) => req(Op.RELEASE, ids[i], [releaseIn(i)]))));
    yield;

    // ls -l: OPENDIR, READDIRPLUS by 4 KiB pages, RELEASEDIR (of nodes the kernel holds, as
    // after the workload's create phase).
    const dfh = replyU64(server.handle(req(Op.OPENDIR, dirId, [struct(Size.openIn, () => {})]), ROOM), 0);
    let off = 0;
    let n = 0;
    let t = 0;
    const seen: number[] = [];
    for (;;) {
      const rq = req(Op.READDIRPLUS, dirId, [struct(Size.readIn, (v) => (v.setUint32(0, dfh, true), v.setUint32(8, off, true), v.setUint32(16, 4096, true)))]);
      const t0 = process.cpuUsage();
      const r = server.handle(rq, ROOM) as FuseReply;
      const d = process.cpuUsage(t0);
      t += d.user + d.system;
      n++;
      if (r.data === null || r.data.length === 0) break;
      const v = new DataView(r.data.buffer, r.data.byteOffset, r.data.byteLength);
      for (let p = 0; p < r.data.length; ) {
        const nodeid = v.getUint32(p, true);
        if (nodeid !== 0) seen.push(nodeid);
        off = v.getUint32(p + Size.entryOut + 8, true);
        p = (p + Size.entryOut + Size.dirent + v.getUint32(p + Size.entryOut + 16, true) + 7) & ~7;
      }
    }
    server.handle(req(Op.RELEASEDIR, dirId, [struct(Size.releaseIn, (v) => v.setUint32(0, dfh, true))]), ROOM);
    note('READDIRPLUS (4 KiB)', t / n);
    yield;
    if (seen.length !== FILES) throw new Error(`READDIRPLUS gave ${seen.length} entries with attributes, ${FILES} files`);

    // cat: LOOKUP (the guest's entries timed out: of nodes it holds), OPEN, READ 4 KiB, FLUSH,
    // RELEASE; GETATTR.
    note('LOOKUP', timed(server, names.map((nm) => req(Op.LOOKUP, dirId, [cstr(nm)])), (r, i) => (ids[i] = replyU64(r, 0))));
    yield;
    note('OPEN', timed(server, names.map((_, i) => req(Op.OPEN, ids[i], [struct(Size.openIn, () => {})])), (r, i) => (fhs[i] = replyU64(r, 0))));
    yield;
    note('READ', timed(server, names.map((_, i) => req(Op.READ, ids[i], [struct(Size.readIn, (v) => (v.setUint32(0, fhs[i], true), v.setUint32(16, 4096, true)))])), (r, i) => {
      if ((r as FuseReply).length !== Size.outHeader + body(i).length) throw new Error('short READ');
    }));
    yield;
    note('FLUSH', timed(server, names.map((_, i) => req(Op.FLUSH, ids[i], [flushIn(i)]))));
    yield;
    note('RELEASE', timed(server, names.map((_, i) => req(Op.RELEASE, ids[i], [releaseIn(i)]))));
    yield;
    note('GETATTR', timed(server, names.map((_, i) => req(Op.GETATTR, ids[i], [struct(Size.getattrIn, () => {})]))));
    yield;

    // mv: LOOKUP of the new name (ENOENT), RENAME; then rm: UNLINK, FORGET.
    const renamed = names.map((nm) => `r${nm}`);
    note('LOOKUP (ENOENT)', timed(server, renamed.map((nm) => req(Op.LOOKUP, dirId, [cstr(nm)]))));
    yield;
    const renameIn = struct(Size.renameIn, (v) => v.setUint32(0, dirId, true));
    note('RENAME', timed(server, names.map((nm, i) => req(Op.RENAME, dirId, [renameIn, cstr(nm), cstr(renamed[i])]))));
    yield;
    note('UNLINK', timed(server, renamed.map((nm) => req(Op.UNLINK, dirId, [cstr(nm)]))));
    yield;
    // The kernel's three references to each: CREATE, READDIRPLUS, LOOKUP.
    note('FORGET', timed(server, ids.map((id) => forget(id, 3))));
    yield;
    if (fs.counts.nodes !== 2 || fs.counts.handles !== 0) throw new Error(`left ${JSON.stringify(fs.counts)}`);
  } finally {
    fs.close();
    rmSync(root, { recursive: true, force: true });
  }
}

const ours: Impl = { FuseServer, HostDirFs };
let base: Impl | null = null;
if (BASELINE !== undefined) {
  const at = (f: string) => pathToFileURL(resolve(BASELINE, f)).href;
  base = {
    FuseServer: ((await import(at('src/fs/fuse/server.js'))) as { FuseServer: typeof FuseServer }).FuseServer,
    HostDirFs: ((await import(at('src/node/fs/host-dir.js'))) as { HostDirFs: typeof HostDirFs }).HostDirFs,
  };
}
const mine: Results = new Map();
const theirs: Results = new Map();
/** Runs rounds step by step in turn: each timed step of one checkout right after the other's. */
function lockstep(rounds: Generator<void>[]): void {
  let live = rounds;
  while (live.length > 0) live = live.filter((g) => g.next().done !== true);
}
// One round of each to warm the JIT, then the measured rounds, the order swapped every round.
lockstep([round(ours, new Map()), ...(base !== null ? [round(base, new Map())] : [])]);
for (let r = 0; r < ROUNDS; r++) {
  const pair = [round(ours, mine), ...(base !== null ? [round(base, theirs)] : [])];
  lockstep(r % 2 === 0 ? pair : pair.reverse());
}
const stats = (xs: number[] | undefined) => {
  const s = [...(xs ?? [])].sort((a, b) => a - b);
  return { us: quantile(s, 0.5), min: s[0], max: s[s.length - 1] };
};
const rows = [...mine.keys()].map((op) => ({ op, ...stats(mine.get(op)), ...(base !== null ? { baseline: stats(theirs.get(op)) } : {}) }));
if (JSON_OUT) console.log(JSON.stringify({ files: FILES, rounds: ROUNDS, baseline: BASELINE ?? null, ops: rows }, null, 2));
else {
  console.log(`\nbench:fs:ops: FuseServer + HostDirFs CPU per request, ${FILES} files, median of ${ROUNDS} rounds${base !== null ? `, alternating with ${BASELINE}` : ''}`);
  const f = (x: number) => x.toFixed(2);
  console.log(
    markdownTable(
      ['opcode', 'CPU µs / request', 'min', 'max', ...(base !== null ? ['baseline µs', 'min', 'max', 'this / baseline'] : [])],
      rows.map((r) => [r.op, f(r.us), f(r.min), f(r.max), ...(r.baseline !== undefined ? [f(r.baseline.us), f(r.baseline.min), f(r.baseline.max), f(r.us / r.baseline.us)] : [])]),
      [false, true, true, true, true, true, true, true],
    ),
  );
}
