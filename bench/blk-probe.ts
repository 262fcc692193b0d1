/**
 * One block rig of blk.bench.ts, driven without timing, for load-independent measurement:
 * `valgrind --tool=callgrind` (instructions; run two request counts and take the difference
 * per request, which cancels start-up and compilation), `node --cpu-prof` or `perf record`.
 *
 *   node --expose-gc dist/bench/blk-probe.js [key] [requests] [warm-up requests]
 *
 * key: a row of blk.bench.ts, "backend/api/ring/mode/qdN" (default memory/raw/split/sync/qd32).
 * Prints the CPU time per measured request (user + system, this process).
 */
import { ALL_WORKLOADS, BlkRig, key } from './blk.bench.js';

const want = process.argv[2] ?? 'memory/raw/split/sync/qd32';
const n = Number(process.argv[3] ?? 200_000);
const warm = Number(process.argv[4] ?? 50_000);
const w = ALL_WORKLOADS.find((x) => key(x) === want);
if (w === undefined) {
  console.error(`blk-probe: no row ${want}; one of:\n${ALL_WORKLOADS.map(key).join('\n')}`);
  process.exit(2);
}
const rig = new BlkRig(w);
await rig.start();
const bad = (await rig.verify()) ?? rig.sound();
if (bad !== null) throw new Error(`${want} is not sound: ${bad}`);
const round = (k: number): number => Math.max(w.qd, Math.round(k / w.qd) * w.qd);
// In chunks, as the bench's samples are.
const chunk = round(4096);
for (let done = 0; done < warm; done += chunk) await rig.load.run(chunk);
const cpu0 = process.cpuUsage();
const total = round(n);
for (let done = 0; done < total; done += chunk) await rig.load.run(Math.min(chunk, total - done));
const cpu = process.cpuUsage(cpu0);
const after = rig.sound();
if (after !== null) throw new Error(`${want} is not sound after the run: ${after}`);
console.log(`${want}: ${total} requests, ${(((cpu.user + cpu.system) * 1000) / total).toFixed(1)} ns CPU per request`);
await rig.close();
