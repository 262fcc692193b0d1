/**
 * `virtio-ts demo`: an entropy driver and device over the loopback transport, no setup.
 * Prints the negotiation, some traffic, a suspend/resume and the conformance verdicts;
 * `--misbehave <clause>` makes one side break that clause so the monitor names it.
 */
import { GuestMemory } from '../memory/guest-memory.js';
import { Monitor, formatVerdict, type Verdict } from '../monitor/monitor.js';
import { SCENARIOS, scenariosFor } from '../testing/scenarios.js';
import { clauseInfo } from '../monitor/catalogue.js';
import { statusNames } from '../spec/constants.js';
import { bit, featureNames } from '../spec/features.js';
import { Feature } from '../spec/constants.js';
import { LoopbackTransport, type LoopbackMode } from '../transports/loopback/loopback.js';
import { RngDevice } from '../devices/rng/device.js';
import { RngDriver } from '../drivers/rng.js';

export interface DemoOptions {
  bytes: number;
  mode: LoopbackMode;
  ring: 'split' | 'packed';
  misbehave?: string;
  listMisbehaviours?: boolean;
  tolerant?: boolean;
  json?: boolean;
}

interface Writable {
  write(s: string): unknown;
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(' ');
}

function verdictLines(vs: Verdict[]): string {
  return vs.length === 0 ? '    none\n' : vs.map((v) => `    ${formatVerdict(v)}\n`).join('');
}

export async function runDemo(opts: DemoOptions, out: Writable): Promise<number> {
  const mode = opts.tolerant ? 'tolerant' : 'strict';
  if (opts.listMisbehaviours) {
    const seen = new Set<string>();
    for (const s of SCENARIOS) {
      if (seen.has(s.clause)) continue;
      seen.add(s.clause);
      out.write(`${s.clause.padEnd(44)} ${s.culprit.padEnd(6)} ${s.title}\n`);
    }
    return 0;
  }
  if (opts.misbehave !== undefined) return misbehave(opts.misbehave, mode, opts.json === true, out);

  const mem = GuestMemory.create(1 << 20);
  const deviceMonitor = new Monitor({ mode });
  const driverMonitor = new Monitor({ mode });
  const device = new RngDevice({ monitor: deviceMonitor });
  if (opts.ring === 'split') device.withholdFeatures(bit(Feature.RING_PACKED)); // as a VMM's packed=off
  const transport = new LoopbackTransport(device, mem, { mode: opts.mode });
  const driver = new RngDriver(transport, { monitor: driverMonitor });
  await driver.start();
  const offered = featureNames(driver.offered);
  const accepted = featureNames(driver.features);
  const started = performance.now();
  const bytes = await driver.read(opts.bytes);
  const ms = performance.now() - started;
  await driver.suspend();
  const suspendedStatus = statusNames(device.status);
  await driver.resume();
  const after = await driver.read(16);
  await driver.restartQueue({ size: 16 });
  const afterReset = await driver.read(32);
  const result = {
    transport: `loopback (${opts.mode})`,
    ring: device.ringFormat,
    monitor: mode,
    offered,
    accepted,
    status: statusNames(device.status),
    bytesRead: bytes.length,
    first16: hex(bytes.subarray(0, 16)),
    milliseconds: Number(ms.toFixed(3)),
    notifications: { ...transport.counts },
    suspend: { suspendedStatus, resumedStatus: statusNames(device.status), readAfterResume: after.length },
    queueReset: { newSize: driver.queues[0].size, readAfterReset: afterReset.length },
    verdicts: { deviceSawDriver: deviceMonitor.verdicts, driverSawDevice: driverMonitor.verdicts },
  };
  await driver.shutdown();
  const violations = deviceMonitor.violations.length + driverMonitor.violations.length;
  if (opts.json) {
    out.write(JSON.stringify(result, null, 2) + '\n');
    return violations > 0 ? 1 : 0;
  }
  out.write(`virtio-ts demo: entropy driver <-> entropy device over the ${result.transport} transport, ${mode} monitor\n\n`);
  out.write('negotiation (spec 3.1.1)\n');
  out.write(`  device offers : ${offered.join(', ')}\n`);
  out.write(`  driver accepts: ${accepted.join(', ')}\n`);
  out.write(`  device status : ${result.status}\n`);
  out.write(`  virtqueues    : ${result.ring} ring (2.${result.ring === 'packed' ? 8 : 7})\n\n`);
  out.write('traffic (entropy requestq)\n');
  out.write(`  read ${bytes.length} random bytes in ${result.milliseconds} ms; first 16: ${result.first16}\n`);
  out.write(`  notifications: driver->device ${transport.counts.notifications}, device->driver ${transport.counts.interrupts}\n\n`);
  out.write('suspend and resume (VIRTIO_F_SUSPEND)\n');
  out.write(`  suspended: ${suspendedStatus}; resumed: ${result.suspend.resumedStatus}; read ${after.length} more bytes\n\n`);
  out.write('queue reset (VIRTIO_F_RING_RESET)\n');
  out.write(`  queue 0 reset while the device runs, re-enabled with ${result.queueReset.newSize} entries; read ${afterReset.length} more bytes\n\n`);
  out.write('conformance verdicts\n');
  out.write('  the device watching the driver:\n' + verdictLines(deviceMonitor.verdicts));
  out.write('  the driver watching the device:\n' + verdictLines(driverMonitor.verdicts));
  out.write('\nsee a clause broken on purpose: virtio-ts demo --misbehave split.desc-table.driver.1\n');
  out.write('all the clauses it can break:   virtio-ts demo --list-misbehaviours\n');
  return violations > 0 ? 1 : 0;
}

async function misbehave(clause: string, mode: 'strict' | 'tolerant', json: boolean, out: Writable): Promise<number> {
  const scenarios = scenariosFor(clause);
  if (scenarios.length === 0) {
    const info = clauseInfo(clause);
    process.stderr.write(
      `virtio-ts demo: no misbehaviour is built for ${clause}` +
        (info ? ` (status: ${info.status}${info.reason ? `, ${info.reason}` : ''})` : '') +
        '; see virtio-ts demo --list-misbehaviours\n',
    );
    return 2;
  }
  let caught = true;
  const results = [];
  for (const s of scenarios) {
    const o = await s.run(mode);
    const named = o.verdicts.some((v) => v.clause === clause);
    caught &&= named;
    results.push({ clause, culprit: s.culprit, title: s.title, named, verdicts: o.verdicts, deviceStatus: statusNames(o.deviceStatus), driverState: o.driverState });
    if (!json) {
      const observer = s.culprit === 'driver' ? 'device' : 'driver';
      out.write(`misbehaving ${s.culprit}: ${s.title}\n`);
      out.write(`  the ${observer}'s monitor (${mode}) says:\n${verdictLines(o.verdicts)}`);
      out.write(`  afterwards: device status ${statusNames(o.deviceStatus)}, driver ${o.driverState}\n`);
      out.write(named ? `  the oracle named ${clause}\n\n` : `  NOT CAUGHT: no verdict names ${clause}\n\n`);
    }
  }
  if (json) out.write(JSON.stringify(results, null, 2) + '\n');
  return caught ? 0 : 1;
}
