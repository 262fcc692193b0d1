/**
 * Ring round-trip benchmark (`npm run bench`): split and packed virtqueues side by side.
 *
 * One core, one GuestMemory, the driver side (SplitDriverQueue / PackedDriverQueue) and the
 * device side (SplitDeviceQueue / PackedDeviceQueue) of one queue of size 256 with
 * VIRTIO_F_EVENT_IDX. One round trip is
 *
 *   driver begin / addReadable / addWritable / commit  -> driver publish (kick decision)
 *   -> device pop -> addUsed -> device publish (interrupt decision) -> driver getUsed
 *
 * done in batches (32 chains per publish, like a device draining its ring, and 1 per
 * publish). Both sides re-arm notifications after draining (avail_event / used_event on the
 * split ring, the event suppression structures on the packed ring), so every batch costs one
 * kick and one interrupt decision, as in a real device loop. Only ring work is measured: no
 * payload bytes are copied.
 *
 * Each workload runs on both formats, each with its own rig class (its own copy of the
 * round-trip loop), so the two never share call-site feedback: each loop stays monomorphic
 * on its queue classes. A second table gives packed time / split time per workload.
 *
 * Figures, per workload: median time per chain, chains/s, descriptors/s (buffers per chain
 * x chains/s), the ratio to a reference run made in this same process (a plain loop doing
 * the same number of DataView u32 accesses over an ArrayBuffer as the round trip makes on
 * guest memory; that count is measured in a child process, not guessed), and heap bytes
 * allocated per chain in steady state. The allocation method is validated in the same run
 * on loops that allocate a known object per iteration (and on one that allocates nothing).
 * Goals are printed next to the figures; nothing here asserts on time.
 *
 * Timing is interleaved: ROUNDS rounds, each timing the reference and every workload for
 * TIME_MS, samples merged, medians reported. On a shared or virtual machine this spreads
 * interference from other processes over all rows instead of landing on one.
 *
 * Environment: BENCH_TIME_MS (per task per round), BENCH_ROUNDS, BENCH_FILTER (substring
 * of "kind/batch", packed rows "packed:kind/batch", e.g. "indirect", "/32" or "packed:").
 */
import os from 'node:os';
import v8 from 'node:v8';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { Monitor } from '../src/monitor/monitor.js';
import { SplitDeviceQueue } from '../src/virtqueue/split/device.js';
import { SplitDriverQueue, layoutSplitQueue, splitQueueFootprint } from '../src/virtqueue/split/driver.js';
import { PackedDeviceQueue } from '../src/virtqueue/packed/device.js';
import { PackedDriverQueue, layoutPackedQueue, packedQueueFootprint } from '../src/virtqueue/packed/driver.js';
import type { RingFormat } from '../src/virtqueue/queue.js';
import type { DescriptorChain } from '../src/virtqueue/chain.js';
import { fmtBytes, measureAlloc as measureAllocN, si, table, timeAll, type AllocResult } from './common.js';

const measureAlloc = (fn: (n: number) => void, n: number): AllocResult => measureAllocN(fn, n, ALLOC_REPS);

const QUEUE_SIZE = 256;
const INDIRECT_MAX = 8;
/** Chains per timed tinybench iteration (keeps the timer's own cost far below a sample). */
const CHAINS_PER_ITER = 4096;
/** Chains (or loop iterations) per allocation measurement. */
const ALLOC_N = 100_000;
const ALLOC_REPS = 3;
const GOAL_DESCS_PER_S = 5e6;
const GOAL_BYTES_PER_CHAIN = 0;
/** Packed time per chain at most this many times the split time, per workload. */
const GOAL_PACKED_RATIO = 1.1;
const TIME_MS = Number(process.env.BENCH_TIME_MS ?? 450);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const WARMUP_MS = 200;
const TIMING = { rounds: ROUNDS, timeMs: TIME_MS, warmupMs: WARMUP_MS, warmupIterations: 8 };

type Kind = 'direct-1' | 'direct-3' | 'indirect-3';

interface Workload {
  format: RingFormat;
  kind: Kind;
  batch: number;
  label: string;
  buffers: number;
  /** Diagnostic: pass a preallocated options object to commit() instead of relying on its default. */
  preallocOpts?: boolean;
}

const ALL_WORKLOADS: Workload[] = [];
for (const format of ['split', 'packed'] as const) {
  for (const batch of [32, 1]) {
    ALL_WORKLOADS.push({ format, kind: 'direct-1', batch, buffers: 1, label: '1 desc (w 512 B)' });
    ALL_WORKLOADS.push({ format, kind: 'direct-3', batch, buffers: 3, label: '3 desc (hdr r, data r, status w)' });
    ALL_WORKLOADS.push({ format, kind: 'indirect-3', batch, buffers: 3, label: 'indirect (3 segs in 1 table)' });
  }
}
// Diagnostics: the same split round trips calling commit(token, OPTS) with OPTS preallocated,
// to show what passing an options object to commit costs (see the note printed below).
for (const batch of [32, 1]) {
  ALL_WORKLOADS.push({ format: 'split', kind: 'direct-1', batch, buffers: 1, label: 'diag: 1 desc, commit(t, OPTS)', preallocOpts: true });
  ALL_WORKLOADS.push({ format: 'split', kind: 'direct-3', batch, buffers: 3, label: 'diag: 3 desc, commit(t, OPTS)', preallocOpts: true });
  ALL_WORKLOADS.push({ format: 'split', kind: 'indirect-3', batch, buffers: 3, label: 'diag: indirect, commit(t, OPTS)', preallocOpts: true });
}

const key = (w: Workload): string => `${w.format === 'packed' ? 'packed:' : ''}${w.kind}/${w.batch}${w.preallocOpts ? '/opts' : ''}`;
const FILTER = process.env.BENCH_FILTER;
const WORKLOADS = FILTER ? ALL_WORKLOADS.filter((w) => key(w).includes(FILTER)) : ALL_WORKLOADS;

// ---------------------------------------------------------------------------------------
// The ring pair.

const DATA_BASE = 0x10_0000;
const SLOT_STRIDE = 1024;
const MEM_SIZE = DATA_BASE + QUEUE_SIZE * SLOT_STRIDE + 0x1000;
const COMMIT_OPTS: { indirect?: boolean } = {};

/** What the report needs from a rig, whatever its ring format. */
abstract class RigBase {
  readonly mem: GuestMemory;
  readonly drvMon = new Monitor();
  readonly devMon = new Monitor();
  /** Preallocated request objects used as tokens (what a real driver passes to commit). */
  readonly reqs: { slot: number }[] = [];
  readonly kind: Kind;
  readonly batch: number;
  readonly preallocOpts: boolean;
  readonly indirect: boolean;
  readonly indirectMax: number;
  slot = 0;
  kicks = 0;
  interrupts = 0;
  batches = 0;
  committed = 0;
  collected = 0;
  sinkCalls = 0;
  protected readonly sink = (): void => {
    this.sinkCalls++;
  };
  abstract readonly drv: { readonly numFree: number; readonly broken: boolean };
  abstract readonly dev: { readonly broken: boolean };

  constructor(w: Workload, footprint: (size: number, indirectMax: number) => number) {
    this.kind = w.kind;
    this.batch = w.batch;
    this.preallocOpts = w.preallocOpts === true;
    this.indirect = w.kind === 'indirect-3';
    this.indirectMax = this.indirect ? INDIRECT_MAX : 0;
    if (footprint(QUEUE_SIZE, this.indirectMax) + 0x1000 > DATA_BASE) throw new Error('rings do not fit below the data area');
    this.mem = GuestMemory.create(MEM_SIZE);
    for (let i = 0; i < QUEUE_SIZE; i++) this.reqs.push({ slot: i });
  }

  /** Configures the device side as the driver laid the ring out and starts it. */
  protected startDevice<Q extends SplitDeviceQueue | PackedDeviceQueue>(dev: Q, lay: { desc: number; avail: number; used: number }): Q {
    dev.setSize(QUEUE_SIZE);
    dev.setAddresses({ desc: lay.desc, avail: lay.avail, used: lay.used });
    dev.setEnabled(true);
    if (!dev.activate({ eventIdx: true, indirect: this.indirect })) throw new Error('device queue did not activate');
    return dev;
  }

  /** Runs `n` round trips (n a multiple of the batch). */
  abstract run(n: number): void;

  /** null when everything came back and nobody reported a verdict; else what went wrong. */
  sound(): string | null {
    if (this.collected !== this.committed) return `collected ${this.collected} of ${this.committed}`;
    if (this.drv.numFree !== QUEUE_SIZE) return `driver has ${this.drv.numFree} free descriptors`;
    if (this.drv.broken || this.dev.broken) return 'queue broken';
    if (this.drvMon.total + this.devMon.total + this.sinkCalls > 0) {
      const v = this.drvMon.verdicts[0] ?? this.devMon.verdicts[0];
      return `verdicts: ${v ? `${v.clause}: ${v.message}` : this.sinkCalls}`;
    }
    return null;
  }
}

class SplitRig extends RigBase {
  readonly drv: SplitDriverQueue;
  readonly dev: SplitDeviceQueue;
  readonly chain: DescriptorChain;

  constructor(w: Workload) {
    super(w, splitQueueFootprint);
    const { indirect, indirectMax } = this;
    const lay = layoutSplitQueue(0x1000, QUEUE_SIZE, indirectMax);
    this.drv = new SplitDriverQueue(
      this.mem,
      0,
      QUEUE_SIZE,
      { desc: lay.desc, avail: lay.avail, used: lay.used },
      indirect ? { eventIdx: true, indirect: true, indirectPool: lay.pool, indirectMax } : { eventIdx: true, indirect: false },
      this.drvMon,
      this.sink,
    );
    this.dev = this.startDevice(new SplitDeviceQueue(this.mem, 0, QUEUE_SIZE, this.devMon, this.sink), lay);
    this.chain = this.dev.newChain();
  }

  // The same loop as PackedRig.run, kept as a separate copy on purpose (see the header).
  run(n: number): void {
    const drv = this.drv;
    const dev = this.dev;
    const chain = this.chain;
    const batch = this.batch;
    const oneDesc = this.kind === 'direct-1';
    const prealloc = this.preallocOpts;
    for (let done = 0; done < n; done += batch) {
      // Driver: build and expose a batch.
      for (let i = 0; i < batch; i++) {
        const slot = this.slot;
        this.slot = (slot + 1) & (QUEUE_SIZE - 1);
        const base = DATA_BASE + slot * SLOT_STRIDE;
        drv.begin();
        if (oneDesc) drv.addWritable(base, 512);
        else drv.addReadable(base, 16).addReadable(base + 64, 512).addWritable(base + 576, 1);
        const head = prealloc ? drv.commit(this.reqs[slot], COMMIT_OPTS) : drv.commit(this.reqs[slot]);
        if (head < 0) throw new Error('queue full');
      }
      if (drv.publish()) this.kicks++;
      // Device: drain, re-arm notifications (avail_event), publish the used batch.
      for (;;) {
        while (dev.pop(chain)) dev.addUsed(chain.head, chain.writableBytes);
        if (!dev.enableNotifications()) break;
      }
      if (dev.publish()) this.interrupts++;
      // Driver: collect, re-arm interrupts (used_event).
      let got = 0;
      for (;;) {
        while (drv.getUsed() !== undefined) got++;
        if (!drv.enableInterrupts()) break;
      }
      this.committed += batch;
      this.collected += got;
      this.batches++;
    }
  }
}

class PackedRig extends RigBase {
  readonly drv: PackedDriverQueue;
  readonly dev: PackedDeviceQueue;
  readonly chain: DescriptorChain;

  constructor(w: Workload) {
    super(w, packedQueueFootprint);
    const { indirect, indirectMax } = this;
    const lay = layoutPackedQueue(0x1000, QUEUE_SIZE, indirectMax);
    this.drv = new PackedDriverQueue(
      this.mem,
      0,
      QUEUE_SIZE,
      { desc: lay.desc, avail: lay.avail, used: lay.used },
      indirect ? { eventIdx: true, indirect: true, indirectPool: lay.pool, indirectMax } : { eventIdx: true, indirect: false },
      this.drvMon,
      this.sink,
    );
    this.dev = this.startDevice(new PackedDeviceQueue(this.mem, 0, QUEUE_SIZE, this.devMon, this.sink), lay);
    this.chain = this.dev.newChain();
  }

  // The same loop as SplitRig.run, kept as a separate copy on purpose (see the header).
  run(n: number): void {
    const drv = this.drv;
    const dev = this.dev;
    const chain = this.chain;
    const batch = this.batch;
    const oneDesc = this.kind === 'direct-1';
    const prealloc = this.preallocOpts;
    for (let done = 0; done < n; done += batch) {
      // Driver: build and expose a batch.
      for (let i = 0; i < batch; i++) {
        const slot = this.slot;
        this.slot = (slot + 1) & (QUEUE_SIZE - 1);
        const base = DATA_BASE + slot * SLOT_STRIDE;
        drv.begin();
        if (oneDesc) drv.addWritable(base, 512);
        else drv.addReadable(base, 16).addReadable(base + 64, 512).addWritable(base + 576, 1);
        const head = prealloc ? drv.commit(this.reqs[slot], COMMIT_OPTS) : drv.commit(this.reqs[slot]);
        if (head < 0) throw new Error('queue full');
      }
      if (drv.publish()) this.kicks++;
      // Device: drain, re-arm notifications (device event suppression), publish the used batch.
      for (;;) {
        while (dev.pop(chain)) dev.addUsed(chain.head, chain.writableBytes);
        if (!dev.enableNotifications()) break;
      }
      if (dev.publish()) this.interrupts++;
      // Driver: collect, re-arm interrupts (driver event suppression: off_wrap, RING_EVENT_FLAGS_DESC).
      let got = 0;
      for (;;) {
        while (drv.getUsed() !== undefined) got++;
        if (!drv.enableInterrupts()) break;
      }
      this.committed += batch;
      this.collected += got;
      this.batches++;
    }
  }
}

type Rig = SplitRig | PackedRig;
const makeRig = (w: Workload): Rig => (w.format === 'packed' ? new PackedRig(w) : new SplitRig(w));

// ---------------------------------------------------------------------------------------
// Child mode: count the guest-memory accesses one round trip makes (DataView get/set and
// Atomics load/store on the ring views) by wrapping the builtins. Done in a separate
// process so the wrapped builtins never pollute the type feedback of the timed code.

const ACCESS_METHODS = ['getUint8', 'getUint16', 'getUint32', 'setUint8', 'setUint16', 'setUint32', 'getBigUint64', 'setBigUint64'];

function countAccessesChild(): void {
  let count = 0;
  const proto = DataView.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
  for (const m of ACCESS_METHODS) {
    const orig = proto[m];
    proto[m] = function (this: DataView, ...a: unknown[]) {
      count++;
      return orig.apply(this, a);
    };
  }
  const atomics = Atomics as unknown as Record<string, (...a: unknown[]) => unknown>;
  for (const m of ['load', 'store']) {
    const orig = atomics[m];
    atomics[m] = (...a: unknown[]) => {
      count++;
      return orig.apply(Atomics, a);
    };
  }
  const out: Record<string, number> = {};
  for (const w of WORKLOADS) {
    const rig = makeRig(w);
    rig.run(1024);
    count = 0;
    rig.run(1024);
    out[key(w)] = count / 1024;
  }
  process.stdout.write(JSON.stringify(out));
}

function measureAccessCounts(): Record<string, number> | null {
  const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--count-accesses'], {
    encoding: 'utf8',
    env: process.env,
  });
  if (r.status !== 0) return null;
  try {
    return JSON.parse(r.stdout) as Record<string, number>;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------
// Reference: a plain loop of DataView u32 accesses (half writes, half reads, little-endian)
// over an ArrayBuffer about the size of the rings.

const refView = new DataView(new ArrayBuffer(8192));
let refSink = 0;
const REF_ACCESSES_PER_ITER = 1 << 17;

function refLoop(accesses: number): void {
  const v = refView;
  let acc = refSink;
  for (let i = 0; i < accesses; i += 2) {
    const o = (i * 12) & 8188; // 4-byte aligned, wanders over the buffer like ring slots do
    v.setUint32(o, i ^ acc, true);
    acc = (acc + v.getUint32((o + 64) & 8188, true)) | 0;
  }
  refSink = acc;
}

// ---------------------------------------------------------------------------------------
// Heap bytes allocated per iteration: common.ts measureAlloc (method described there). The
// method is validated in the same run by loops allocating {a, b} (expected exactly 5 tagged
// words), a Uint8Array(64) (more than 64 bytes), and nothing at all (expected 0).

const objSink: unknown[] = new Array(1024).fill(null);
function allocObjects(n: number): void {
  for (let i = 0; i < n; i++) objSink[i & 1023] = { a: i, b: i };
}
function allocU8(n: number): void {
  for (let i = 0; i < n; i++) objSink[i & 1023] = new Uint8Array(64);
}

async function main(): Promise<void> {
  const t0 = performance.now();
  const cpus = os.cpus();
  console.log(
    `virtio-ts ring bench | node ${process.version} (V8 ${process.versions.v8}) | ${cpus[0]?.model?.trim() ?? 'unknown CPU'} (${cpus.length} cpus) | ${new Date().toISOString()}`,
  );
  console.log(
    `split and packed queues of size ${QUEUE_SIZE}, EVENT_IDX on, one core, ring work only (no payload copies); ${ROUNDS} interleaved rounds x ${TIME_MS} ms per row, ${CHAINS_PER_ITER} chains per sample, medians`,
  );

  // Soundness first: every rig must give back all it took, with no verdicts.
  const rigs = WORKLOADS.map((w) => makeRig(w));
  for (const [i, rig] of rigs.entries()) {
    rig.run(65536); // also a warm-up of the shared code with every chain shape
    const bad = rig.sound();
    if (bad !== null) {
      console.log(`workload ${key(WORKLOADS[i])} is not sound: ${bad}`);
      process.exitCode = 1;
      return;
    }
  }

  const accessCounts = measureAccessCounts();

  // --- Timing. ---
  const REF = 'reference';
  const timings = await timeAll([
    [REF, () => refLoop(REF_ACCESSES_PER_ITER)],
    ...WORKLOADS.map((w, i): [string, () => void] => [key(w), () => rigs[i].run(CHAINS_PER_ITER)]),
  ], TIMING);
  const ref = timings.get(REF)!;
  const nsPerRefAccess = (ref.median * 1e6) / REF_ACCESSES_PER_ITER;

  // --- Allocation. ---
  const ptr = (process.config.variables as { v8_enable_pointer_compression?: unknown }).v8_enable_pointer_compression ? 4 : 8;
  const refObj = measureAlloc(allocObjects, ALLOC_N);
  const refU8 = measureAlloc(allocU8, ALLOC_N);
  const refNone = measureAlloc((n) => refLoop(n * 32), ALLOC_N);
  const allocs = WORKLOADS.map((w) => {
    const rig = makeRig(w);
    return measureAlloc((n) => rig.run(n), ALLOC_N);
  });

  // --- Report. ---
  const newSpace = v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space');
  console.log('');
  console.log(
    `heap bytes per iteration: used_heap_size delta over ${ALLOC_N} iterations after gc(), least of ${ALLOC_REPS}; young generation ${(
      (newSpace?.space_size ?? 0) /
      2 ** 20
    ).toFixed(0)} MiB so no GC runs inside (checked: GCs column must be 0)`,
  );
  const check = (r: AllocResult, lo: number, hi: number): string =>
    !r.valid ? 'INVALID' : r.perIter >= lo && r.perIter <= hi ? 'ok, method sees it' : 'NOT PLAUSIBLE: method broken';
  const objWords = 5 * ptr;
  console.log(
    table(
      ['method check', 'B/iter', 'GCs', 'expected', 'verdict'],
      [
        ['allocates {a: i, b: i}', fmtBytes(refObj), String(refObj.gcs), `${objWords} (map, props, elements, a, b: 5 x ${ptr} B)`, check(refObj, objWords - 0.5, objWords + 1)],
        ['allocates new Uint8Array(64)', fmtBytes(refU8), String(refU8.gcs), '> 64 (payload + typed-array headers)', check(refU8, 65, 1024)],
        ['allocates nothing (DataView loop)', fmtBytes(refNone), String(refNone.gcs), '0', check(refNone, -0.5, 0.5)],
      ],
      [false, true, true, false, false],
    ),
  );

  console.log('');
  console.log(
    `reference (same process): DataView u32 loop, ${REF_ACCESSES_PER_ITER} accesses per sample (half set, half get) over an 8 KiB ArrayBuffer: ` +
      `${nsPerRefAccess.toFixed(3)} ns/access (${si(1e9 / nsPerRefAccess, 'access/s')}, IQR ${ref.iqrPct.toFixed(1)}%)`,
  );
  console.log(
    'x ref = time per chain / time of acc/chain reference accesses; acc/chain = DataView + Atomics accesses per round trip on guest memory (counted)',
  );
  console.log('');
  const rows: string[][] = [];
  WORKLOADS.forEach((w, i) => {
    const t = timings.get(key(w))!;
    const alloc = allocs[i];
    const nsPerChain = (t.median * 1e6) / CHAINS_PER_ITER;
    const chainsPerS = 1e9 / nsPerChain;
    const descsPerS = chainsPerS * w.buffers;
    const acc = accessCounts?.[key(w)];
    const ratio = acc !== undefined ? nsPerChain / (acc * nsPerRefAccess) : NaN;
    const rig = rigs[i];
    const speedGoal = descsPerS >= GOAL_DESCS_PER_S ? 'met' : 'MISSED';
    const heapGoal = alloc.valid ? (alloc.perIter <= GOAL_BYTES_PER_CHAIN + 0.5 ? 'met' : 'MISSED') : '?';
    rows.push([
      w.format,
      w.label,
      String(w.batch),
      String(w.buffers),
      nsPerChain.toFixed(1),
      `${t.iqrPct.toFixed(1)}%`,
      si(chainsPerS),
      si(descsPerS),
      `${(rig.kicks / rig.batches).toFixed(2)}/${(rig.interrupts / rig.batches).toFixed(2)}`,
      acc !== undefined ? acc.toFixed(1) : 'n/a',
      Number.isFinite(ratio) ? `${ratio.toFixed(2)}x` : 'n/a',
      fmtBytes(alloc),
      speedGoal,
      heapGoal,
    ]);
  });
  console.log(
    table(
      ['ring', 'workload', 'batch', 'bufs', 'ns/chain', 'IQR', 'chains/s', 'descs/s', 'kick/irq per batch', 'acc/chain', 'x ref', 'heap B/chain', '>=5M desc/s', '0 B/chain'],
      rows,
      [false, false, true, true, true, true, true, true, true, true, true, true, false, false],
    ),
  );
  console.log('goals: >= 5 M descriptors/s on one core; 0 bytes allocated per chain in steady state.');
  console.log(
    "'diag' rows call commit(token, OPTS) with a preallocated OPTS instead of commit(token); a difference in heap B/chain would be what " +
      'SplitDriverQueue.commit allocates when called without options (it once had a default parameter `options = {}`, an object literal per call).',
  );

  // --- Packed against split, workload by workload (same process, same interleaved rounds). ---
  const pairs: [Workload, number, Workload, number][] = [];
  WORKLOADS.forEach((w, i) => {
    if (w.format !== 'packed') return;
    const j = WORKLOADS.findIndex((v) => v.format === 'split' && v.kind === w.kind && v.batch === w.batch && !v.preallocOpts && !w.preallocOpts);
    if (j >= 0) pairs.push([WORKLOADS[j], j, w, i]);
  });
  if (pairs.length > 0) {
    console.log('');
    console.log(
      `packed / split: ratio of median time per chain (< 1: packed faster); goal: packed within ${Math.round((GOAL_PACKED_RATIO - 1) * 100)}% of split or faster, and 0 B/chain`,
    );
    const ratioRows = pairs.map(([sw, si_, pw, pi]) => {
      const ns = (w: Workload) => (timings.get(key(w))!.median * 1e6) / CHAINS_PER_ITER;
      const r = ns(pw) / ns(sw);
      const heap = allocs[pi];
      const heapMet = heap.valid && heap.perIter <= GOAL_BYTES_PER_CHAIN + 0.5 && allocs[si_].valid;
      return [
        pw.label,
        String(pw.batch),
        ns(sw).toFixed(1),
        ns(pw).toFixed(1),
        `${r.toFixed(3)}`,
        `${((r - 1) * 100).toFixed(1)}%`,
        fmtBytes(heap),
        r <= GOAL_PACKED_RATIO ? 'met' : 'MISSED',
        heapMet ? 'met' : heap.valid ? 'MISSED' : '?',
      ];
    });
    console.log(
      table(
        ['workload', 'batch', 'split ns/chain', 'packed ns/chain', 'packed/split', 'packed vs split', 'packed heap B/chain', `<= ${GOAL_PACKED_RATIO.toFixed(2)}x`, '0 B/chain'],
        ratioRows,
        [false, true, true, true, true, true, true, false, false],
      ),
    );
  }

  for (const [i, rig] of rigs.entries()) {
    const bad = rig.sound();
    if (bad !== null) {
      console.log(`after timing, ${key(WORKLOADS[i])} is not sound: ${bad}`);
      process.exitCode = 1;
    }
  }
  if (!refObj.valid || !refU8.valid || !refNone.valid || allocs.some((a) => !a.valid)) {
    console.log('note: some heap figures are invalid (a GC ran in a measured loop, or gc() is not exposed): run with --expose-gc and a larger --max-semi-space-size');
  }
  console.log(`total ${((performance.now() - t0) / 1000).toFixed(1)} s${refSink === 0x7fffffff ? ' ' : ''}`);
}

if (process.argv.includes('--count-accesses')) countAccessesChild();
else await main();
