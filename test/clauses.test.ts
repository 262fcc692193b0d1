// Clauses that bind our own side where no peer can catch us, or permissions a peer must
// tolerate: each test shows the behaviour the clause asks for. Test names start with the
// clause id; the catalogue marks these "tested".
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { Monitor } from '../src/monitor/monitor.js';
import { LoopbackTransport } from '../src/transports/loopback/loopback.js';
import { RngDevice, type RngDeviceOptions } from '../src/devices/rng/device.js';
import { RngDriver } from '../src/drivers/rng.js';
import { VirtioDevice } from '../src/device/device.js';
import { VirtioDriver, DriverError } from '../src/driver/driver.js';
import { DeviceId, Feature, Status, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../src/spec/constants.js';
import { bit, hasFeature } from '../src/spec/features.js';
import { NET_FEATURES } from '../src/spec/net.js';
import { AVAIL_RING, DESC_SIZE, RING_FLAGS, RING_IDX, availEventOffset, usedEventOffset } from '../src/spec/split-layout.js';
import type { SplitDeviceQueue } from '../src/virtqueue/split/device.js';
import type { SplitDriverQueue } from '../src/virtqueue/split/driver.js';
import { WAIT_MS, turns, until } from './wait.js';

const V1 = bit(Feature.VERSION_1);
/** These tests look at split-ring memory: the driver does not take VIRTIO_F_RING_PACKED. */
const SPLIT_ALL = V1 | bit(Feature.INDIRECT_DESC) | bit(Feature.EVENT_IDX) | bit(Feature.SUSPEND);

function clauseTest(ids: string[], title: string, fn: () => Promise<void> | void): void {
  test(`${ids.join(', ')}: ${title}`, fn);
}

/** A device with a small config space and no queue work, for config and status tests. */
class ConfigDevice extends VirtioDevice {
  reads = 0;
  written: [number, number | bigint][] = [];
  constructor(
    monitor: Monitor,
    private readonly hooks: { onRead?: (d: ConfigDevice) => void; statusReads?: (d: ConfigDevice, real: number) => number; features?: bigint; deviceId?: number } = {},
  ) {
    let self: ConfigDevice | null = null;
    super(
      {
        deviceId: hooks.deviceId ?? DeviceId.ENTROPY,
        numQueues: 1,
        configSize: 8,
        features: hooks.features ?? 0n,
        process() {},
        configRead: () => {
          self!.reads++;
          hooks.onRead?.(self!);
        },
        configWrite: (offset, _size, value) => void self!.written.push([offset, value]),
      },
      { monitor },
    );
    self = this;
  }
  override readStatus(): number {
    const real = super.readStatus();
    return this.hooks.statusReads ? this.hooks.statusReads(this, real) : real;
  }
  bump(): void {
    this.context.updateConfig((v) => v.setUint32(0, v.getUint32(0, true) + 1, true));
  }
}

function pair(device: (m: Monitor) => VirtioDevice, driverMonitor = new Monitor(), mem = GuestMemory.create(1 << 20)) {
  const devMon = new Monitor();
  const dev = device(devMon);
  dev.withholdFeatures(bit(Feature.RING_PACKED)); // these tests look at split rings
  const transport = new LoopbackTransport(dev, mem);
  return { mem, dev, transport, devMon, drvMon: driverMonitor };
}

async function liveRng(options: Partial<RngDeviceOptions> = {}, accept?: bigint, driverMonitor = new Monitor()) {
  const p = pair((m) => new RngDevice({ monitor: m, ...options }), driverMonitor);
  const driver = new RngDriver(p.transport, { monitor: p.drvMon, transportFeatures: accept ?? SPLIT_ALL });
  await driver.start();
  return { ...p, driver, q: driver.queues[0] as SplitDriverQueue, devQ: (p.dev as RngDevice).queues[0] as SplitDeviceQueue };
}

function writeDesc(mem: GuestMemory, table: number, i: number, addr: number, len: number, flags: number, next: number): void {
  mem.writeU64(table + i * DESC_SIZE, BigInt(addr));
  mem.writeU32(table + i * DESC_SIZE + 8, len);
  mem.writeU16(table + i * DESC_SIZE + 12, flags);
  mem.writeU16(table + i * DESC_SIZE + 14, next);
}

clauseTest(['basic.status.device.2', 'basic.status.device.3'], 'an internal device error sets DEVICE_NEEDS_RESET and tells the live driver', async () => {
  const r = await liveRng({
    source: () => {
      throw new Error('entropy source broke');
    },
  });
  await assert.rejects(r.driver.read(8));
  assert.ok(r.dev.getStatus() & Status.DEVICE_NEEDS_RESET);
  assert.equal(r.transport.counts.configInterrupts, 1);
  await until(() => r.driver.state === 'broken', 'the driver to handle the notification');
  assert.equal(r.driver.state, 'broken');
  assert.deepEqual(r.drvMon.verdicts, []);
});

clauseTest(['basic.features.driver.2'], 'the driver drops an offered feature whose requirement is missing, and reports the device', async () => {
  const drvMon = new Monitor({ mode: 'tolerant' });
  const p = pair((m) => new ConfigDevice(m, { deviceId: DeviceId.NET, features: bit(NET_FEATURES.CTRL_VQ) | bit(NET_FEATURES.MQ) | bit(NET_FEATURES.HOST_ECN) }), drvMon);
  const d = new VirtioDriver(p.transport, { deviceId: DeviceId.NET, monitor: drvMon, deviceFeatures: (1n << 64n) - 1n });
  await d.init();
  assert.ok(hasFeature(d.features, NET_FEATURES.MQ) && hasFeature(d.features, NET_FEATURES.CTRL_VQ));
  assert.ok(!hasFeature(d.features, NET_FEATURES.HOST_ECN), 'HOST_ECN needs HOST_TSO4 or HOST_TSO6');
  assert.deepEqual(drvMon.verdicts.map((v) => v.clause), ['basic.features.device.1']);
  assert.deepEqual(p.devMon.verdicts, []);
});

clauseTest(['basic.features.driver.3', 'basic.features.driver.7'], 'an undescribed offered bit is ignored, never accepted, and no reason to fail', async () => {
  const r = await liveRng({ core: { deviceFeatures: 1n << 60n } });
  assert.equal(r.driver.state, 'live');
  assert.ok(!hasFeature(r.driver.features, 60));
  assert.deepEqual(r.drvMon.verdicts.map((v) => v.clause), ['basic.features.device.4']);
  assert.equal((await r.driver.read(32)).length, 32);
});

clauseTest(['basic.features.driver.6', 'init.sequence.driver.5'], 'without VERSION_1 the driver sets FAILED and goes no further', async () => {
  const p = pair((m) => new RngDevice({ monitor: m, core: { transportFeatures: bit(Feature.EVENT_IDX) } }));
  const d = new RngDriver(p.transport, { monitor: p.drvMon });
  await assert.rejects(d.start(), DriverError);
  const s = p.dev.getStatus();
  assert.ok(s & Status.FAILED);
  assert.equal(s & (Status.FEATURES_OK | Status.DRIVER_OK), 0);
  assert.deepEqual(p.devMon.verdicts, []);
});

clauseTest(['basic.features.device.3'], 'the device leaves FEATURES_OK clear for a subset it cannot accept', async () => {
  const p = pair((m) => new RngDevice({ monitor: m }));
  await p.transport.setStatus(Status.ACKNOWLEDGE);
  await p.transport.setStatus(Status.ACKNOWLEDGE | Status.DRIVER);
  await p.transport.setDriverFeatures(V1 | bit(Feature.ACCESS_PLATFORM));
  await p.transport.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
  assert.equal(p.dev.getStatus() & Status.FEATURES_OK, 0);
});

clauseTest(['basic.reset.driver.1'], 'the driver waits until the status reads 0 after a reset', async () => {
  let slow = 0;
  const p = pair((m) => new ConfigDevice(m, { statusReads: (_d, real) => (real === 0 && slow-- > 0 ? Status.ACKNOWLEDGE : real) }));
  const d = new VirtioDriver(p.transport, { deviceId: DeviceId.ENTROPY, monitor: p.drvMon });
  slow = 3;
  await d.init();
  assert.equal(slow, -1, 'the driver read the status until it was 0');
  assert.equal(d.state, 'live');
  assert.deepEqual(p.drvMon.verdicts, []);
});

clauseTest(['basic.config.driver.2'], 'config reads repeat until config_generation is stable', async () => {
  let changed = false;
  const p = pair((m) => new ConfigDevice(m, { onRead: (d) => !changed && ((changed = true), d.bump()) }));
  const d = new VirtioDriver(p.transport, { deviceId: DeviceId.ENTROPY, monitor: p.drvMon });
  await d.init();
  const dev = p.dev as ConfigDevice;
  const before = dev.reads;
  const value = await d.readConfig((read) => read(0, 4));
  assert.equal(value, 1, 'the value after the change');
  assert.equal(dev.reads - before, 2, 'read twice: the generation moved during the first pass');
});

clauseTest(['init.suspend.driver.2', 'init.suspend.driver.6', 'init.suspend.device.8'], 'suspend waits for the buffer in progress; resume waits for DRIVER_OK; requests wait meanwhile', async () => {
  const pending: (() => void)[] = [];
  const r = await liveRng({ asyncSource: (dst) => new Promise<void>((res) => pending.push(() => (dst.fill(5), res()))) });
  const inProgress = r.driver.request(16);
  await until(() => pending.length > 0, 'the request at the source');
  assert.equal(pending.length, 1);
  let suspended = false;
  const suspending = r.driver.suspend({ timeoutMs: WAIT_MS }).then(() => (suspended = true));
  await turns();
  assert.equal(suspended, false, 'not suspended while a buffer is in progress');
  assert.equal(r.dev.getStatus() & Status.DRIVER_OK, Status.DRIVER_OK);
  pending.shift()!();
  assert.deepEqual(Array.from(await inProgress), new Array(16).fill(5));
  await suspending;
  assert.equal(r.dev.getStatus() & (Status.SUSPEND | Status.DRIVER_OK), Status.SUSPEND);
  let done = false;
  const later = r.driver.request(8).then((b) => ((done = true), b));
  await turns();
  assert.equal(done, false, 'no buffer is made available while suspended');
  assert.equal(pending.length, 0);
  await r.driver.resume({ timeoutMs: WAIT_MS });
  assert.equal(r.dev.getStatus() & (Status.SUSPEND | Status.DRIVER_OK), Status.DRIVER_OK);
  await until(() => pending.length > 0, 'the request made available after resume');
  pending.shift()!();
  assert.equal((await later).length, 8);
  assert.deepEqual([...r.devMon.verdicts, ...r.drvMon.verdicts], []);
});

clauseTest(['init.suspend.device.1'], 'the device ignores SUSPEND before initialization is complete', async () => {
  const p = pair((m) => new RngDevice({ monitor: new Monitor({ mode: 'tolerant' }) }));
  await p.transport.setStatus(Status.ACKNOWLEDGE);
  await p.transport.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.SUSPEND);
  assert.equal(p.dev.getStatus() & Status.SUSPEND, 0);
  assert.equal(p.dev.getStatus(), Status.ACKNOWLEDGE | Status.DRIVER);
});

clauseTest(['init.suspend.device.2'], 'a suspended device ignores configuration writes', async () => {
  const devMon = new Monitor({ mode: 'tolerant' });
  const dev = new ConfigDevice(devMon);
  const transport = new LoopbackTransport(dev, GuestMemory.create(1 << 20));
  const d = new VirtioDriver(transport, { deviceId: DeviceId.ENTROPY });
  await d.init({ setup: async () => void (await d.setupQueue(0)) });
  await transport.writeConfig(0, 4, 7);
  assert.equal(dev.written.length, 1);
  await d.suspend({ timeoutMs: WAIT_MS });
  await transport.writeConfig(0, 4, 9);
  assert.equal(dev.written.length, 1, 'the write while suspended was ignored');
  assert.deepEqual(devMon.verdicts.map((v) => v.clause), ['init.suspend.driver.5']);
});

clauseTest(['split.message-framing.device.1'], 'the entropy device serves any split of the writable space alike', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 12 }), async (lens) => {
      let n = 0;
      const r = await liveRng({ source: (dst) => dst.forEach((_, i) => (dst[i] = n++ & 0xff)) });
      const base = r.driver.allocator.alloc(1024, 16);
      let addr = base;
      r.q.begin();
      for (const len of lens) {
        r.q.addWritable(addr, len);
        addr += len;
      }
      r.q.commit('split', { indirect: false });
      r.driver.kick(r.q);
      const total = lens.reduce((a, b) => a + b, 0);
      const got = new Uint8Array(total);
      r.mem.read(base, got);
      assert.deepEqual(Array.from(got), Array.from({ length: total }, (_, i) => i & 0xff));
      assert.deepEqual(r.devMon.verdicts, []);
    }),
    { numRuns: 50 },
  );
});

/** Exposes a hand-built chain behind the driver's back and lets the device take it. */
function exposeRaw(r: Awaited<ReturnType<typeof liveRng>>, head: number): void {
  const idx = r.q.nextAvailIdx;
  r.mem.writeU16(r.q.addrs.avail + AVAIL_RING + 2 * (idx & r.q.mask), head);
  r.mem.storeU16(r.q.addrs.avail + RING_IDX, (idx + 1) & 0xffff);
  r.transport.notify(0);
}

clauseTest(['split.indirect-descs.device.1'], 'the WRITE flag of the descriptor naming an indirect table is ignored', async () => {
  const r = await liveRng({ source: (d) => d.fill(0x5a) });
  const table = r.driver.allocator.alloc(64, 16);
  const buf = r.driver.allocator.alloc(32, 16);
  writeDesc(r.mem, table, 0, buf, 32, VIRTQ_DESC_F_WRITE, 0);
  writeDesc(r.mem, r.q.addrs.desc, r.q.size - 1, table, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE, 0);
  exposeRaw(r, r.q.size - 1);
  assert.deepEqual(r.devMon.verdicts, []);
  assert.equal(r.mem.readU8(buf + 31), 0x5a);
  assert.equal(r.devQ.nextUsed, 1);
});

clauseTest(['split.indirect-descs.device.2'], 'direct descriptors followed by one indirect descriptor form one chain', async () => {
  const r = await liveRng({ source: (d) => d.fill(0x77) });
  const table = r.driver.allocator.alloc(64, 16);
  const bufs = [0, 1, 2].map(() => r.driver.allocator.alloc(16, 16));
  writeDesc(r.mem, table, 0, bufs[1], 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
  writeDesc(r.mem, table, 1, bufs[2], 16, VIRTQ_DESC_F_WRITE, 0);
  const a = r.q.size - 1;
  const b = r.q.size - 2;
  writeDesc(r.mem, r.q.addrs.desc, a, bufs[0], 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, b);
  writeDesc(r.mem, r.q.addrs.desc, b, table, 32, VIRTQ_DESC_F_INDIRECT, 0);
  exposeRaw(r, a);
  assert.deepEqual(r.devMon.verdicts, []);
  for (const buf of bufs) assert.equal(r.mem.readU8(buf + 15), 0x77);
  assert.equal(r.mem.readU32(r.q.addrs.used + 4 + 4), 48, 'used length covers all three buffers');
});

clauseTest(['split.used-buffer-notif-suppr.driver.5'], 'a used-buffer notification with nothing new is harmless', async () => {
  const r = await liveRng();
  r.transport.interrupt(0);
  r.transport.interrupt(0);
  assert.equal(r.driver.state, 'live');
  assert.equal((await r.driver.read(64)).length, 64);
});

clauseTest(['split.avail-buffer-notif-suppr.device.5'], 'an available-buffer notification with nothing new is harmless', async () => {
  const r = await liveRng();
  r.transport.notify(0);
  r.transport.notify(0);
  assert.ok(r.dev.live);
  assert.deepEqual(r.devMon.verdicts, []);
  assert.equal((await r.driver.read(64)).length, 64);
});

clauseTest(['split.used-buffer-notif-suppr.device.1'], 'without EVENT_IDX the device ignores used_event', async () => {
  const r = await liveRng({}, V1);
  r.mem.writeU16(r.q.addrs.avail + usedEventOffset(r.q.size), 1000);
  const before = r.transport.counts.interrupts;
  await r.driver.read(8);
  assert.equal(r.transport.counts.interrupts, before + 1);
});

clauseTest(['split.used-buffer-notif-suppr.device.4'], 'with EVENT_IDX the device ignores the low bit of avail.flags', async () => {
  const r = await liveRng({ monitor: new Monitor({ mode: 'tolerant' }) });
  r.mem.writeU16(r.q.addrs.avail + RING_FLAGS, 1);
  const before = r.transport.counts.interrupts;
  await r.driver.read(8);
  assert.equal(r.transport.counts.interrupts, before + 1, 'notified as used_event asks, flags notwithstanding');
});

clauseTest(['split.avail-buffer-notif-suppr.driver.2'], 'without EVENT_IDX the driver ignores avail_event', async () => {
  const r = await liveRng({}, V1);
  r.mem.writeU16(r.q.addrs.used + availEventOffset(r.q.size), 1000);
  const before = r.transport.counts.notifications;
  await r.driver.read(8);
  assert.equal(r.transport.counts.notifications, before + 1);
});

clauseTest(['split.avail-buffer-notif-suppr.driver.5'], 'with EVENT_IDX the driver ignores the low bit of used.flags', async () => {
  const r = await liveRng({}, undefined, new Monitor({ mode: 'tolerant' }));
  const kick = (r.q.nextAvailIdx) & 0xffff;
  r.mem.writeU16(r.q.addrs.used + availEventOffset(r.q.size), kick);
  r.mem.writeU16(r.q.addrs.used + RING_FLAGS, 1);
  const before = r.transport.counts.notifications;
  await r.driver.read(8);
  assert.equal(r.transport.counts.notifications, before + 1, 'kicked as avail_event asks, flags notwithstanding');
  assert.deepEqual(r.drvMon.verdicts.map((v) => v.clause), ['split.avail-buffer-notif-suppr.device.3']);
});

clauseTest(['entropy.device-operation.driver.2'], 'the driver takes exactly the used length as the random bytes received', async () => {
  let n = 1;
  const r = await liveRng({ maxBytesPerRequest: 10, source: (d) => d.forEach((_, i) => (d[i] = n++ & 0xff || 1)) });
  const one = await r.driver.request(64);
  assert.equal(one.length, 10, 'one request of 64 bytes yields the 10 the device wrote');
  const many = await r.driver.read(100);
  assert.equal(many.length, 100);
  assert.ok(many.every((b) => b !== 0), 'no byte past a used length was taken');
});

