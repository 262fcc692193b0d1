/**
 * Register model benchmark (`npm run bench`): the cost of a request through virtio-mmio and
 * virtio-pci, beside the loopback transport, in one process.
 *
 * One request is an entropy read of 64 bytes (RngDriver.read -> chain -> notify -> device ->
 * used -> interrupt -> driver), so the ring work is small and the transport's share shows.
 * Each transport runs the same driver and device; the register models are reached through the
 * in-process buses (directMmioBus / directPciBus), where every register access is one "trap"
 * (what an emulator's MMIO/PIO exit would be). Per transport: ns per request (median over
 * interleaved rounds), register traps per request and interrupts per request, at queue depth
 * 1 (one request at a time) and 16 (sixteen in flight), and the ratio to loopback (async mode,
 * the same asynchronous delivery a register model has). Nothing here asserts on time.
 *
 * Environment: BENCH_TIME_MS (per transport per round), BENCH_ROUNDS.
 */
import { GuestMemory } from '../src/memory/guest-memory.js';
import { Monitor } from '../src/monitor/monitor.js';
import { RngDevice } from '../src/devices/rng/device.js';
import { RngDriver } from '../src/drivers/rng.js';
import { LoopbackTransport } from '../src/transports/loopback/loopback.js';
import type { DriverTransport } from '../src/driver/transport.js';
import { Feature } from '../src/spec/constants.js';
import { bit } from '../src/spec/features.js';
import { VirtioMmioDevice } from '../src/transports/mmio/device.js';
import { MmioTransport, directMmioBus } from '../src/transports/mmio/driver.js';
import { VirtioPciDevice } from '../src/transports/pci/device.js';
import { PciTransport, directPciBus } from '../src/transports/pci/driver.js';
import { quantile, si, table } from './common.js';

const TIME_MS = Number(process.env.BENCH_TIME_MS ?? 300);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const BYTES = 64;

interface Rig {
  name: string;
  driver: RngDriver;
  traps(): number;
  interrupts(): number;
}

async function rig(name: string): Promise<Rig> {
  const memory = GuestMemory.create(4 << 20);
  const device = new RngDevice({ monitor: new Monitor(), queueMaxSize: 64, source: (d) => d.fill(7) });
  device.withholdFeatures(bit(Feature.RING_PACKED));
  let transport: DriverTransport;
  let traps = () => 0;
  let interrupts = () => 0;
  if (name.startsWith('loopback')) {
    const t = new LoopbackTransport(device, memory, { mode: name === 'loopback sync' ? 'sync' : 'async' });
    transport = t;
    interrupts = () => t.counts.interrupts;
  } else if (name.startsWith('mmio')) {
    const model = new VirtioMmioDevice(device, memory, { version: name === 'mmio v1 (legacy)' ? 1 : 2 });
    const bus = directMmioBus(model);
    transport = await MmioTransport.open(bus, memory);
    traps = () => bus.traps;
    interrupts = () => model.counts.interrupts;
  } else {
    const model = new VirtioPciDevice(device, memory, { transitional: name.includes('legacy') });
    const bus = directPciBus(model);
    transport = await PciTransport.open(bus, memory, { mode: name.includes('legacy') ? 'legacy' : 'modern', msix: !name.includes('INTx') });
    traps = () => bus.traps;
    interrupts = () => model.counts.msi + model.counts.intx;
  }
  const driver = new RngDriver(transport, { monitor: new Monitor(), chunk: BYTES });
  await driver.start();
  return { name, driver, traps, interrupts };
}

/** Runs `depth` requests at a time until `ms` passed; per-request nanoseconds of each batch. */
async function run(r: Rig, depth: number, ms: number, samples: number[]): Promise<number> {
  const end = performance.now() + ms;
  let n = 0;
  const batch = Array.from({ length: depth });
  while (performance.now() < end) {
    const t0 = performance.now();
    for (let i = 0; i < 8; i++) await Promise.all(batch.map(() => r.driver.read(BYTES)));
    samples.push(((performance.now() - t0) * 1e6) / (8 * depth));
    n += 8 * depth;
  }
  return n;
}

const NAMES = ['loopback sync', 'loopback async', 'mmio v2', 'mmio v1 (legacy)', 'pci modern, MSI-X', 'pci modern, INTx', 'pci transitional, legacy I/O'];
const rigs = await Promise.all(NAMES.map(rig));
const rows: string[][] = [];
for (const depth of [1, 16]) {
  const samples = new Map<string, number[]>(rigs.map((r) => [r.name, []]));
  const counts = new Map<string, { n: number; traps: number; irqs: number }>(rigs.map((r) => [r.name, { n: 0, traps: 0, irqs: 0 }]));
  for (const r of rigs) await run(r, depth, 100, []); // warm-up
  for (let round = 0; round < ROUNDS; round++) {
    for (const r of rigs) {
      const t0 = r.traps();
      const i0 = r.interrupts();
      const n = await run(r, depth, TIME_MS, samples.get(r.name)!);
      const c = counts.get(r.name)!;
      c.n += n;
      c.traps += r.traps() - t0;
      c.irqs += r.interrupts() - i0;
    }
  }
  const median = (name: string) => quantile(samples.get(name)!.sort((a, b) => a - b), 0.5);
  const reference = median('loopback async');
  for (const r of rigs) {
    const c = counts.get(r.name)!;
    const ns = median(r.name);
    rows.push([String(depth), r.name, `${ns.toFixed(0)} ns`, (c.traps / c.n).toFixed(1), (c.irqs / c.n).toFixed(2), si(1e9 / ns, '/s'), (ns / reference).toFixed(2)]);
  }
}
console.log(`\nOne ${BYTES}-byte entropy request through each transport (median of ${ROUNDS} interleaved rounds of ${TIME_MS} ms)\n`);
console.log(table(['depth', 'transport', 'per request', 'traps/req', 'irqs/req', 'requests', 'x loopback async'], rows, [true, false, true, true, true, true, true]));
process.exit(0);
