/**
 * Misbehaving peers, one per enforced clause: each scenario runs a real device and driver
 * over the loopback transport, makes one side break exactly one clause on purpose, and
 * returns what the other side's monitor said. The negative tests (test/negative) run every
 * scenario and assert the clause id; `virtio-ts demo --misbehave <clause>` runs one.
 *
 * Browser-safe: no Node import.
 */
import { GuestMemory } from '../memory/guest-memory.js';
import { Monitor, type MonitorMode, type Verdict } from '../monitor/monitor.js';
import type { Side } from '../monitor/catalogue.js';
import { DeviceId, Feature, Status, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../spec/constants.js';
import { bit } from '../spec/features.js';
import { VirtioDevice } from '../device/device.js';
import type { DeviceContext, DeviceType } from '../device/type.js';
import { VirtioDriver, type DriverState } from '../driver/driver.js';
import { NET_FEATURES } from '../spec/net.js';
import { DescriptorChain } from '../virtqueue/chain.js';
import type { SplitDeviceQueue } from '../virtqueue/split/device.js';
import type { DriverQueue } from '../virtqueue/queue.js';
import type { SplitDriverQueue } from '../virtqueue/split/driver.js';
import type { PackedDriverQueue } from '../virtqueue/packed/driver.js';
import type { PackedDeviceQueue } from '../virtqueue/packed/device.js';
import { PDESC_F_INDIRECT, PDESC_F_NEXT, PDESC_F_WRITE, PDESC_SIZE, availFlags, usedFlags } from '../spec/packed-layout.js';
import { AVAIL_RING, DESC_SIZE, RING_FLAGS, RING_IDX, USED_RING, availEventOffset, usedEventOffset } from '../spec/split-layout.js';
import { LoopbackTransport } from '../transports/loopback/loopback.js';
import { RngDevice, RngDeviceType, type RngDeviceOptions } from '../devices/rng/device.js';
import { RngDriver } from '../drivers/rng.js';
import { BlkDevice, BlkDeviceType, BlkType, type BlkDeviceOptions } from '../devices/blk/device.js';
import { MemoryBlockStorage } from '../devices/blk/storage.js';
import { BlkDriver } from '../drivers/blk.js';
import { BLK_FEATURES } from '../spec/blk.js';

/**
 * What one run of a {@link Scenario} ended with: the observing side's verdicts (one of them
 * must name the scenario's clause), the culprit's own verdicts, and where both sides stopped.
 */
export interface ScenarioOutcome {
  /** Verdicts of the monitor on the observing side. */
  verdicts: Verdict[];
  /** Verdicts of the culprit's own monitor (about the observer): should stay empty. */
  againstObserver: Verdict[];
  deviceStatus: number;
  driverState: DriverState;
}

/**
 * One misbehaving peer: a device or a driver that breaks exactly `clause` on purpose while
 * its partner is the real virtio-ts driver or device, each side with its own monitor.
 */
export interface Scenario {
  /** The clause id broken (catalogue/clauses.tsv). */
  clause: string;
  /** Side that breaks the clause. */
  culprit: Side;
  title: string;
  /**
   * Verdicts the culprit's own monitor makes about the observer that are only echoes of the
   * culprit's raw writes (both sides shadow the descriptor table; each blames the other).
   */
  echoes?: readonly string[];
  /**
   * Other clauses the verdict covers through `context.permits`: a driver permission (MAY)
   * whose exercise the device refused.
   */
  covers?: readonly string[];
  /** The observer records the verdict but must not act on it (another clause forbids it). */
  recordOnly?: string;
  /**
   * Builds a fresh device and driver over the loopback transport, lets the culprit break the
   * clause and resolves with what the monitors said. `mode` is both monitors' ('strict' by
   * default: the observer acts on a violation, the device by DEVICE_NEEDS_RESET, the driver
   * by giving up; 'tolerant' only records it).
   */
  run(mode?: MonitorMode): Promise<ScenarioOutcome>;
}

const V1 = bit(Feature.VERSION_1);
const ALL = V1 | bit(Feature.INDIRECT_DESC) | bit(Feature.EVENT_IDX) | bit(Feature.SUSPEND);
const PACKED = ALL | bit(Feature.RING_PACKED);
const IN_ORDER = bit(Feature.IN_ORDER);

interface Rig {
  mem: GuestMemory;
  device: VirtioDevice;
  transport: LoopbackTransport;
  driver: VirtioDriver;
  devMon: Monitor;
  drvMon: Monitor;
}

interface RigOptions {
  mode: MonitorMode;
  /** Transport features the driver accepts (default VERSION_1 | INDIRECT_DESC | EVENT_IDX). */
  accept?: bigint;
  device?: (monitor: Monitor) => VirtioDevice;
  rng?: Partial<RngDeviceOptions>;
  driverId?: number;
  memory?: GuestMemory;
}

function rig(o: RigOptions): Rig {
  const mem = o.memory ?? GuestMemory.create(1 << 20);
  const devMon = new Monitor({ mode: o.mode });
  const drvMon = new Monitor({ mode: o.mode });
  const device = o.device ? o.device(devMon) : new RngDevice({ monitor: devMon, ...o.rng });
  // A driver set up for split rings meets a device configured without packed ones (as a VMM's
  // packed=off): otherwise declining the offer draws reserved.bits.driver.6 warnings.
  if (!((o.accept ?? ALL) & bit(Feature.RING_PACKED))) device.withholdFeatures(bit(Feature.RING_PACKED));
  const transport = new LoopbackTransport(device, mem);
  const driverOptions = { monitor: drvMon, transportFeatures: o.accept ?? ALL };
  const driver =
    o.driverId !== undefined && o.driverId !== DeviceId.ENTROPY
      ? new VirtioDriver(transport, { deviceId: o.driverId, ...driverOptions, deviceFeatures: (1n << 128n) - 1n })
      : new RngDriver(transport, driverOptions);
  return { mem, device, transport, driver, devMon, drvMon };
}

function outcome(r: Rig, culprit: Side): ScenarioOutcome {
  const observer = culprit === 'driver' ? r.devMon : r.drvMon;
  const own = culprit === 'driver' ? r.drvMon : r.devMon;
  return { verdicts: [...observer.verdicts], againstObserver: [...own.verdicts], deviceStatus: r.device.status, driverState: r.driver.state };
}

/** A live entropy pair (driver initialized, queue 0 set up). */
async function live(o: RigOptions): Promise<Rig & { q: SplitDriverQueue }> {
  const r = rig(o);
  await (r.driver as RngDriver).start();
  // Scenarios here break split-ring rules: the rig never accepts VIRTIO_F_RING_PACKED.
  return { ...r, q: r.driver.queues[0] as SplitDriverQueue };
}

/** Steps 1-5 of 3.1.1 by hand: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK. */
async function upToFeaturesOk(r: Rig, features = V1): Promise<void> {
  const t = r.transport;
  await t.setStatus(0);
  await t.getStatus(); // the reset is complete once the status reads 0 (basic.reset.driver.1)
  await t.setStatus(Status.ACKNOWLEDGE);
  await t.setStatus(Status.ACKNOWLEDGE | Status.DRIVER);
  await t.setDriverFeatures(features);
  await t.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
}

/** Steps 1-8 by hand with one queue at the given (possibly bad) layout. */
async function startRawQueue(r: Rig, size: number, addrs: { desc: number; avail: number; used: number }): Promise<void> {
  await upToFeaturesOk(r);
  await r.transport.setupQueue(0, size, addrs);
  await r.transport.enableQueue(0);
  await r.transport.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
}

// ------------------------------------------------------------------ raw ring writes

function writeDesc(mem: GuestMemory, table: number, i: number, addr: number, len: number, flags: number, next: number): void {
  const o = table + i * DESC_SIZE;
  mem.writeU64(o, BigInt(addr));
  mem.writeU32(o + 8, len);
  mem.writeU16(o + 12, flags);
  mem.writeU16(o + 14, next);
}

/** Exposes `head` through the avail ring behind the driver's back and notifies. */
function exposeRaw(r: Rig, q: SplitDriverQueue, head: number, notify = true): void {
  const idx = q.nextAvailIdx;
  r.mem.writeU16(q.addrs.avail + AVAIL_RING + 2 * (idx & q.mask), head);
  r.mem.storeU16(q.addrs.avail + RING_IDX, (idx + 1) & 0xffff);
  if (notify) r.transport.notify(q.index);
}

/** A free descriptor index the driver is not using (the top of the table). */
function spare(q: SplitDriverQueue, k = 0): number {
  return q.size - 1 - k;
}

/** Runs a raw chain scenario: `build` writes descriptors, returns the head to expose. */
function rawChain(clause: string, title: string, build: (r: Rig, q: SplitDriverQueue, buf: number) => number, o: Partial<RigOptions> = {}): Scenario {
  return {
    clause,
    culprit: 'driver',
    title,
    async run(mode = 'strict') {
      const r = await live({ mode, ...o });
      const buf = r.driver.allocator.alloc(4096, 16);
      const head = build(r, r.q, buf);
      exposeRaw(r, r.q, head);
      return outcome(r, 'driver');
    },
  };
}

// ------------------------------------------------------------------ scripted devices

/**
 * An entropy device whose request handling a scenario scripts (to break device rules): its
 * type's `process` runs the script on each chain; the device adds raw ring writes and
 * notifications the core would never make.
 */
class ScriptedDevice extends VirtioDevice {
  readonly scratch = new DescriptorChain(200);
  constructor(monitor: Monitor, script: (d: ScriptedDevice, q: SplitDeviceQueue, chain: DescriptorChain) => boolean, options: { queueMaxSize?: number } = {}) {
    let self: ScriptedDevice | null = null;
    super(
      {
        deviceId: DeviceId.ENTROPY,
        name: 'virtio-rng',
        numQueues: 1,
        queueMaxSize: options.queueMaxSize ?? 64,
        process(queue, ctx) {
          const q = queue as SplitDeviceQueue;
          const d = self!;
          do {
            while (q.pop(d.scratch)) {
              if (script(d, q, d.scratch)) ctx.complete(q);
            }
          } while (q.enableNotifications());
        },
      },
      { monitor },
    );
    self = this;
  }
  /** Raw access for scripts. */
  publishUsedRaw(q: SplitDeviceQueue, id: number, len: number, idx: number): void {
    this.memory.writeU32(q.usedAddr + USED_RING + 8 * ((idx - 1) & (q.size - 1)), id);
    this.memory.writeU32(q.usedAddr + USED_RING + 8 * ((idx - 1) & (q.size - 1)) + 4, len);
    this.memory.storeU16(q.usedAddr + RING_IDX, idx & 0xffff);
  }
  notifyDriver(q: SplitDeviceQueue): void {
    this.host?.interrupt(q.index);
  }
}

function deviceScenario(
  clause: string,
  title: string,
  script: (d: ScriptedDevice, q: SplitDeviceQueue, chain: DescriptorChain) => boolean,
  o: { accept?: bigint; before?: (r: Rig & { q: SplitDriverQueue }) => void; echoes?: string[] } = {},
): Scenario {
  return {
    clause,
    culprit: 'device',
    title,
    echoes: o.echoes,
    async run(mode = 'strict') {
      const r = await live({ mode, accept: o.accept, device: (m) => new ScriptedDevice(m, script) });
      o.before?.(r);
      // A device that never completes (or never notifies) must not hang the scenario.
      await Promise.race([(r.driver as RngDriver).request(64).catch(() => undefined), sleep(20)]);
      return outcome(r, 'device');
    },
  };
}

/** An entropy device that polls its queue as soon as it is enabled, DRIVER_OK or not. */
class EagerDevice extends RngDevice {
  override enableQueue(index: number): void {
    super.enableQueue(index);
    setTimeout(() => {
      const q = this.queues[index];
      if (q.active || q.activate(this.queueFeatures())) this.type.process(q, this.context);
    }, 1);
  }
}

/** Network config fields that exist only with their feature (spec 5.1.4). */
const NET_CONDITIONAL_FIELDS = [
  { name: 'mac', offset: 0, size: 6, feature: NET_FEATURES.MAC },
  { name: 'status', offset: 6, size: 2, feature: NET_FEATURES.STATUS },
  { name: 'max_virtqueue_pairs', offset: 8, size: 2, feature: NET_FEATURES.MQ },
  { name: 'mtu', offset: 10, size: 2, feature: NET_FEATURES.MTU },
];

/** A block-type device that writes into the readable part of each request. */
class ScribblingDevice extends VirtioDevice {
  constructor(monitor: Monitor) {
    const chain = new DescriptorChain(300);
    super(
      {
        deviceId: DeviceId.BLOCK,
        numQueues: 1,
        process(q, ctx) {
          while (q.pop(chain)) {
            ctx.memory.writeU8(chain.addrs[0], 0xee); // the header is device-readable
            q.addUsed(chain.head, 1);
          }
          ctx.complete(q);
        },
      },
      { monitor },
    );
  }
}

interface PlainTwist {
  readConfig: (d: PlainDevice, offset: number) => void;
  validate: (d: PlainDevice) => boolean;
  reset: (d: PlainDevice) => void;
  status: (d: PlainDevice, value: number) => number | null;
  silentConfig: boolean;
  queueReset: (d: PlainDevice, index: number) => void;
}

/** A device with a scripted twist in its type's hooks or in the core itself, and no queue work. */
class PlainDevice extends VirtioDevice {
  constructor(
    monitor: Monitor,
    deviceId: number,
    features: bigint,
    private readonly twist: Partial<PlainTwist> = {},
  ) {
    let self: PlainDevice | null = null;
    const type: DeviceType = {
      deviceId,
      numQueues: 1,
      features,
      configSize: 16,
      conditionalFields: deviceId === DeviceId.NET ? NET_CONDITIONAL_FIELDS : [],
      process() {},
      configRead: (offset) => twist.readConfig?.(self!, offset),
      validateFeatures: () => (twist.validate ? twist.validate(self!) : true),
      queueReset: (index) => twist.queueReset?.(self!, index),
    };
    super(type, { monitor });
    self = this;
  }
  refusals = 0;
  override reset(): void {
    super.reset();
    this.twist.reset?.(this);
  }
  override setStatus(value: number): void {
    const v = this.twist.status ? this.twist.status(this, value) : value;
    if (v !== null) super.setStatus(v);
  }
  protected override notifyConfigChange(): void {
    if (!this.twist.silentConfig) super.notifyConfigChange();
  }
  raiseStatus(bits: number): void {
    this.statusValue |= bits;
  }
  sendConfigChange(): void {
    this.host?.configChanged();
  }
  sendInterrupt(queue: number): void {
    this.host?.interrupt(queue);
  }
  changeConfig(): void {
    this.context.updateConfig((view) => view.setUint32(0, view.getUint32(0, true) + 1, true));
  }
}

function plainDeviceScenario(
  clause: string,
  title: string,
  make: (m: Monitor) => PlainDevice,
  act: (r: Rig) => Promise<void>,
  driverId: number = DeviceId.ENTROPY,
  extra: Partial<Scenario> = {},
  accept?: bigint,
): Scenario {
  return {
    ...extra,
    clause,
    culprit: 'device',
    title,
    async run(mode = 'strict') {
      const r = rig({ mode, device: make, driverId, accept });
      await act(r).catch(() => undefined);
      return outcome(r, 'device');
    },
  };
}

function driverScenario(clause: string, title: string, act: (r: Rig) => Promise<void>, o: Partial<RigOptions> = {}): Scenario {
  return {
    clause,
    culprit: 'driver',
    title,
    async run(mode = 'strict') {
      const r = rig({ mode, ...o });
      await act(r);
      return outcome(r, 'driver');
    },
  };
}

function liveDriverScenario(
  clause: string,
  title: string,
  act: (r: Rig & { q: SplitDriverQueue }) => Promise<void> | void,
  o: Partial<RigOptions> = {},
  echoes?: string[],
): Scenario {
  return {
    clause,
    culprit: 'driver',
    title,
    echoes,
    async run(mode = 'strict') {
      const r = await live({ mode, ...o });
      await act(r);
      return outcome(r, 'driver');
    },
  };
}

/** 4 GiB of guest address space over one 64 MiB buffer, to build a 2^32-byte chain cheaply. */
function aliasedMemory(): GuestMemory {
  const piece = 64 << 20;
  const buffer = new ArrayBuffer(piece);
  return new GuestMemory(Array.from({ length: 66 }, (_, i) => ({ guestAddr: i * piece, size: piece, buffer })));
}

const S = Status;

function sleep(ms: number): Promise<void> {
  return new Promise((res) => setTimeout(res, ms));
}

/** All the scenarios (the negative tests run every one); {@link scenariosFor} picks those of one clause. */
export const SCENARIOS: readonly Scenario[] = [
  // ---------------------------------------------------------------- driver: init sequence and status
  driverScenario('init.sequence.driver.1', 'driver sets DRIVER_OK without ever setting FEATURES_OK', async (r) => {
    const t = r.transport;
    await t.setStatus(0);
    await t.setStatus(S.ACKNOWLEDGE);
    await t.setStatus(S.ACKNOWLEDGE | S.DRIVER);
    await t.setDriverFeatures(V1);
    await t.setStatus(S.ACKNOWLEDGE | S.DRIVER | S.DRIVER_OK);
  }),
  driverScenario('init.sequence.driver.3', 'driver writes device configuration space before FEATURES_OK', async (r) => {
    const t = r.transport;
    await t.setStatus(0);
    await t.setStatus(S.ACKNOWLEDGE);
    await t.setStatus(S.ACKNOWLEDGE | S.DRIVER);
    await t.writeConfig(0, 4, 0x1234);
  }, { device: (m) => new PlainDevice(m, DeviceId.ENTROPY, 0n) }),
  driverScenario('init.sequence.driver.4', 'driver accepts another feature after FEATURES_OK', async (r) => {
    await upToFeaturesOk(r, V1);
    await r.transport.setDriverFeatures(V1 | bit(Feature.EVENT_IDX));
  }),
  driverScenario(
    'init.sequence.driver.5',
    'device refuses FEATURES_OK; the driver neither sets FAILED nor resets, and tries other features',
    async (r) => {
      await upToFeaturesOk(r, V1 | bit(Feature.EVENT_IDX));
      await r.transport.setDriverFeatures(V1);
    },
    { device: (m) => new PlainDevice(m, DeviceId.ENTROPY, 0n, { validate: () => false }) },
  ),
  driverScenario('init.sequence.driver.6', 'driver sets FAILED and then goes on to FEATURES_OK', async (r) => {
    const t = r.transport;
    await t.setStatus(0);
    await t.setStatus(S.ACKNOWLEDGE);
    await t.setStatus(S.ACKNOWLEDGE | S.DRIVER);
    await t.setStatus(S.ACKNOWLEDGE | S.DRIVER | S.FAILED);
    await t.setDriverFeatures(V1);
    await t.setStatus(S.ACKNOWLEDGE | S.DRIVER | S.FAILED | S.FEATURES_OK);
  }),
  driverScenario('init.sequence.driver.7', 'driver notifies a queue before DRIVER_OK', async (r) => {
    await upToFeaturesOk(r);
    await r.transport.setupQueue(0, 16, { desc: 0x1000, avail: 0x2000, used: 0x3000 });
    await r.transport.enableQueue(0);
    r.transport.notify(0);
  }),
  liveDriverScenario('basic.status.driver.2', 'driver clears FEATURES_OK on a live device', async (r) => {
    await r.transport.setStatus(S.ACKNOWLEDGE | S.DRIVER | S.DRIVER_OK);
  }),
  driverScenario('basic.status.driver.3', 'driver clears FAILED to start again without a reset', async (r) => {
    const t = r.transport;
    await t.setStatus(0);
    await t.setStatus(S.ACKNOWLEDGE);
    await t.setStatus(S.ACKNOWLEDGE | S.FAILED);
    await t.setStatus(S.ACKNOWLEDGE);
  }),
  driverScenario('basic.status.driver.1', 'driver writes its features having set only ACKNOWLEDGE, not DRIVER', async (r) => {
    const t = r.transport;
    await t.setStatus(0);
    await t.setStatus(S.ACKNOWLEDGE);
    await t.setDriverFeatures(V1);
  }),
  driverScenario(
    'basic.config.driver.3',
    'driver reads the network mac field although VIRTIO_NET_F_MAC is not offered',
    async (r) => {
      const t = r.transport;
      await t.setStatus(0);
      await t.setStatus(S.ACKNOWLEDGE);
      await t.setStatus(S.ACKNOWLEDGE | S.DRIVER);
      await t.readConfig(0, 4);
    },
    { device: (m) => new PlainDevice(m, DeviceId.NET, bit(NET_FEATURES.MTU)), driverId: DeviceId.NET },
  ),
  driverScenario('split.avail-buffer-notif-suppr.driver.1', 'driver starts a queue whose used ring flags are not zeroed', async (r) => {
    r.mem.writeU16(0x3000 + RING_FLAGS, 1);
    await startRawQueue(r, 16, { desc: 0x1000, avail: 0x2000, used: 0x3000 });
  }),
  liveDriverScenario(
    'split.avail-buffer-notif-suppr.driver.4',
    'driver makes a buffer available with used.flags 0 and does not notify',
    async (r) => {
      r.q.begin().addWritable(r.driver.allocator.alloc(64, 16), 64).commit('silent');
      r.q.publish();
      await r.transport.getStatus();
    },
    { accept: V1 | bit(Feature.INDIRECT_DESC) },
  ),
  liveDriverScenario('split.avail-buffer-notif-suppr.driver.6', 'driver moves avail.idx past avail_event and does not notify', async (r) => {
    r.q.begin().addWritable(r.driver.allocator.alloc(64, 16), 64).commit('silent');
    r.q.publish();
    await r.transport.getStatus();
  }),
  liveDriverScenario(
    'split.avail-buffer-notif-suppr.driver.3',
    'driver notifies although the device set VIRTQ_USED_F_NO_NOTIFY',
    async (r) => {
      r.mem.writeU16(r.q.addrs.used + RING_FLAGS, 1); // the device asks for no notifications
      r.q.begin().addWritable(r.driver.allocator.alloc(64, 16), 64).commit('noisy');
      r.q.publish();
      r.transport.notify(0);
    },
    { accept: V1 | bit(Feature.INDIRECT_DESC) },
  ),
  liveDriverScenario('split.avail-buffer-notif-suppr.driver.7', 'driver notifies although avail_event was not reached', async (r) => {
    r.mem.writeU16(r.q.addrs.used + availEventOffset(r.q.size), (r.q.nextAvailIdx + 50) & 0xffff); // the device's threshold
    r.q.begin().addWritable(r.driver.allocator.alloc(64, 16), 64).commit('noisy');
    r.q.publish();
    r.transport.notify(0);
  }),
  liveDriverScenario(
    'split.avail-buffer-notif-suppr.driver.2',
    'driver without EVENT_IDX goes by avail_event (not reached yet) and does not notify although used.flags is 0',
    async (r) => {
      r.mem.writeU16(r.q.addrs.used + availEventOffset(r.q.size), (r.q.nextAvailIdx + 50) & 0xffff);
      r.q.begin().addWritable(r.driver.allocator.alloc(64, 16), 64).commit('silent');
      r.q.publish();
      await r.transport.getStatus();
    },
    { accept: V1 | bit(Feature.INDIRECT_DESC) },
  ),
  liveDriverScenario(
    'split.avail-buffer-notif-suppr.driver.5',
    'driver with EVENT_IDX goes by the NO_NOTIFY bit of used.flags and does not notify at avail_event',
    async (r) => {
      r.mem.writeU16(r.q.addrs.used + RING_FLAGS, 1);
      r.q.begin().addWritable(r.driver.allocator.alloc(64, 16), 64).commit('silent');
      r.q.publish();
      await r.transport.getStatus();
    },
    {},
    // The precondition is a device fault too (used.flags must stay 0 with EVENT_IDX): the
    // driver's own monitor names it; it is the scenario's raw write, not the observer's.
    ['split.avail-buffer-notif-suppr.device.3'],
  ),
  driverScenario(
    'reserved.bits.driver.6',
    'driver declines VIRTIO_F_RING_PACKED, which the device offers',
    async (r) => {
      await upToFeaturesOk(r, V1);
    },
    { accept: PACKED },
  ),
  driverScenario('reserved.bits.driver.1', 'driver accepts features without VIRTIO_F_VERSION_1, which is offered', async (r) => {
    await upToFeaturesOk(r, bit(Feature.EVENT_IDX));
  }),
  driverScenario('basic.features.driver.1', 'driver accepts VIRTIO_F_ACCESS_PLATFORM, which the device did not offer', async (r) => {
    await upToFeaturesOk(r, V1 | bit(Feature.ACCESS_PLATFORM));
  }),
  driverScenario(
    'basic.features.driver.4',
    'driver accepts bit 60, which the spec does not describe for an entropy device',
    async (r) => {
      await upToFeaturesOk(r, V1 | (1n << 60n));
    },
    { rng: { core: { deviceFeatures: 1n << 60n } } },
  ),
  driverScenario(
    'basic.features.driver.3',
    'driver accepts every bit offered, bit 60 too, which a probing device offers though the spec does not describe it for an entropy device',
    async (r) => {
      await upToFeaturesOk(r, await r.transport.getDeviceFeatures());
    },
    { rng: { core: { offerUndescribedBits: 1n << 60n } } },
  ),
  driverScenario('basic.reset.driver.1', 'driver resets the device and writes ACKNOWLEDGE without reading the status back as 0', async (r) => {
    await r.transport.setStatus(0);
    await r.transport.setStatus(Status.ACKNOWLEDGE);
  }),

  // ---------------------------------------------------------------- driver: suspend
  driverScenario('init.suspend.driver.1', 'driver sets SUSPEND before DRIVER_OK', async (r) => {
    await upToFeaturesOk(r, V1 | bit(Feature.SUSPEND));
    await r.transport.setStatus(S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK | S.SUSPEND);
  }),
  liveDriverScenario('init.suspend.driver.3', 'driver makes a buffer available while the device is suspended', async (r) => {
    await r.driver.suspend();
    r.q.begin().addWritable(r.driver.allocator.alloc(64, 16), 64).commit('sneaky');
    r.q.publish();
    await r.driver.resume({ timeoutMs: 20 }).catch(() => undefined);
  }),
  liveDriverScenario('init.suspend.driver.4', 'driver notifies a queue while the device is suspended', async (r) => {
    await r.driver.suspend();
    r.transport.notify(0);
  }),
  liveDriverScenario('init.suspend.driver.5', 'driver writes configuration space while the device is suspended', async (r) => {
    await r.driver.suspend();
    await r.transport.writeConfig(0, 4, 1);
  }),

  // ---------------------------------------------------------------- driver: live virtqueues
  {
    clause: 'init.cleanup.driver.1',
    culprit: 'driver',
    title: 'driver rewrites the descriptor of a buffer the device is still filling',
    echoes: ['split.desc-table.device.4'],
    async run(mode = 'strict') {
      let release: () => void = () => undefined;
      const r = await live({ mode, rng: { asyncSource: (dst) => new Promise<void>((res) => (release = () => (dst.fill(7), res()))) } });
      const pending = (r.driver as RngDriver).request(32).catch(() => undefined);
      const head = 0; // the only chain on a fresh queue starts at descriptor 0
      r.mem.writeU32(r.q.addrs.desc + head * DESC_SIZE + 8, 16); // shrink it while exposed
      release();
      await pending;
      await new Promise((res) => setTimeout(res, 0));
      return outcome(r, 'driver');
    },
  },
  liveDriverScenario('init.cleanup.driver.2', 'driver moves the rings of a live queue without resetting the device', async (r) => {
    await r.transport.setupQueue(0, r.q.size, { desc: 0x40000, avail: 0x41000, used: 0x42000 });
  }),
  liveDriverScenario('split.avail-ring.driver.1', 'driver decrements avail.idx to take a buffer back', async (r) => {
    const rng = r.driver as RngDriver;
    await rng.read(8);
    r.mem.storeU16(r.q.addrs.avail + RING_IDX, (r.q.nextAvailIdx - 1) & 0xffff);
    r.transport.notify(0);
  }),
  rawChain('split.desc-table.driver.1', 'driver exposes a descriptor chain that loops (a -> b -> a)', (r, q, buf) => {
    const a = spare(q, 0);
    const b = spare(q, 1);
    writeDesc(r.mem, q.addrs.desc, a, buf, 16, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, b);
    writeDesc(r.mem, q.addrs.desc, b, buf + 16, 16, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, a);
    return a;
  }),
  {
    clause: 'split.desc-table.driver.1',
    culprit: 'driver',
    title: 'driver exposes a chain longer than 2^32 bytes (3 GiB + 1 GiB + 1 byte)',
    async run(mode = 'strict') {
      const r = await live({ mode, memory: aliasedMemory() });
      const q = r.q;
      writeDesc(r.mem, q.addrs.desc, spare(q, 0), 0, 0xc0000000, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, spare(q, 1));
      writeDesc(r.mem, q.addrs.desc, spare(q, 1), 0, 0x40000001, VIRTQ_DESC_F_WRITE, 0);
      exposeRaw(r, q, spare(q, 0));
      return outcome(r, 'driver');
    },
  },
  rawChain(
    'split.indirect-descs.driver.1',
    'driver uses an indirect descriptor although VIRTIO_F_INDIRECT_DESC was not negotiated',
    (r, q, buf) => {
      writeDesc(r.mem, buf, 0, buf + 256, 16, VIRTQ_DESC_F_WRITE, 0);
      writeDesc(r.mem, q.addrs.desc, spare(q), buf, 16, VIRTQ_DESC_F_INDIRECT, 0);
      return spare(q);
    },
    { accept: V1 | bit(Feature.EVENT_IDX) },
  ),
  rawChain('split.indirect-descs.driver.2', 'driver puts an INDIRECT descriptor inside an indirect table', (r, q, buf) => {
    writeDesc(r.mem, buf, 0, buf + 256, 16, VIRTQ_DESC_F_INDIRECT, 0);
    writeDesc(r.mem, q.addrs.desc, spare(q), buf, 16, VIRTQ_DESC_F_INDIRECT, 0);
    return spare(q);
  }),
  rawChain('split.indirect-descs.driver.3', 'driver exposes an indirect chain longer than the queue size', (r, q, buf) => {
    const n = q.size + 1;
    for (let i = 0; i < n; i++) writeDesc(r.mem, buf, i, buf + 2048, 1, VIRTQ_DESC_F_WRITE | (i < n - 1 ? VIRTQ_DESC_F_NEXT : 0), i + 1);
    writeDesc(r.mem, q.addrs.desc, spare(q), buf, n * DESC_SIZE, VIRTQ_DESC_F_INDIRECT, 0);
    return spare(q);
  }),
  rawChain('split.indirect-descs.driver.4', 'driver sets both INDIRECT and NEXT on one descriptor', (r, q, buf) => {
    writeDesc(r.mem, buf, 0, buf + 256, 16, VIRTQ_DESC_F_WRITE, 0);
    writeDesc(r.mem, q.addrs.desc, spare(q, 0), buf, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, spare(q, 1));
    writeDesc(r.mem, q.addrs.desc, spare(q, 1), buf + 512, 16, VIRTQ_DESC_F_WRITE, 0);
    return spare(q);
  }),
  rawChain('split.message-framing.driver.1', 'driver puts a device-readable buffer after a device-writable one', (r, q, buf) => {
    writeDesc(r.mem, q.addrs.desc, spare(q, 0), buf, 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, spare(q, 1));
    writeDesc(r.mem, q.addrs.desc, spare(q, 1), buf + 16, 16, 0, 0);
    return spare(q);
  }),
  driverScenario('split.alignment.driver.1', 'driver places the descriptor table at an address that is not 16-byte aligned', async (r) => {
    await startRawQueue(r, 16, { desc: 0x1008, avail: 0x2000, used: 0x3000 });
  }),
  liveDriverScenario(
    'split.used-buffer-notif-suppr.driver.1',
    'driver writes avail.flags = 2 (only 0 or 1 are allowed without EVENT_IDX)',
    async (r) => {
      r.mem.writeU16(r.q.addrs.avail + RING_FLAGS, 2);
      await (r.driver as RngDriver).read(8);
    },
    { accept: V1 | bit(Feature.INDIRECT_DESC) },
  ),
  liveDriverScenario('split.used-buffer-notif-suppr.driver.3', 'driver writes avail.flags = 1 although EVENT_IDX was negotiated', async (r) => {
    r.mem.writeU16(r.q.addrs.avail + RING_FLAGS, 1);
    await (r.driver as RngDriver).read(8);
  }),
  liveDriverScenario('entropy.device-operation.driver.1', 'driver puts a device-readable buffer in the entropy queue', async (r) => {
    const buf = r.driver.allocator.alloc(64, 16);
    r.q.begin().addReadable(buf, 32).commit('bad', { indirect: false });
    r.driver.kick(r.q);
  }),
  rawChain('struct.desc-next.driver.1', 'driver chains a descriptor to an index beyond the queue size', (r, q, buf) => {
    writeDesc(r.mem, q.addrs.desc, spare(q), buf, 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, q.size + 3);
    return spare(q);
  }),
  rawChain('struct.buffer-range.driver.1', 'driver exposes a buffer beyond the end of guest memory', (r, q) => {
    writeDesc(r.mem, q.addrs.desc, spare(q), r.mem.size - 8, 64, VIRTQ_DESC_F_WRITE, 0);
    return spare(q);
  }),
  rawChain('struct.indirect-len.driver.1', 'driver gives an indirect table a length that is not a multiple of 16', (r, q, buf) => {
    writeDesc(r.mem, buf, 0, buf + 256, 16, VIRTQ_DESC_F_WRITE, 0);
    writeDesc(r.mem, q.addrs.desc, spare(q), buf, 24, VIRTQ_DESC_F_INDIRECT, 0);
    return spare(q);
  }),
  driverScenario('struct.queue-config.driver.1', 'driver sets a queue size that is not a power of two', async (r) => {
    await startRawQueue(r, 48, { desc: 0x1000, avail: 0x2000, used: 0x3000 });
  }),

  // ---------------------------------------------------------------- device: status, reset, features, config
  {
    clause: 'basic.status.device.1',
    culprit: 'device',
    title: 'device consumes a buffer the driver placed before DRIVER_OK',
    async run(mode = 'strict') {
      const r = rig({ mode, device: (m) => new EagerDevice({ monitor: m }) });
      const d = r.driver;
      await d
        .init({
          setup: async () => {
            // 3.1.1 step 7 lets the driver populate queues before DRIVER_OK (no notification).
            const q = await d.setupQueue(0);
            q.begin().addWritable(d.allocator.alloc(64, 16), 64).commit('early');
            q.publish();
            await new Promise((res) => setTimeout(res, 10)); // the polling device looks meanwhile
          },
        })
        .catch(() => undefined);
      return outcome(r, 'device');
    },
  },
  plainDeviceScenario(
    'basic.status.device.3',
    'device sets DEVICE_NEEDS_RESET while live and sends no configuration change notification',
    (m) => new PlainDevice(m, DeviceId.ENTROPY, 0n),
    async (r) => {
      await r.driver.init({ setup: async () => void (await r.driver.setupQueue(0)) });
      (r.device as PlainDevice).raiseStatus(S.DEVICE_NEEDS_RESET);
      await r.driver.checkStatus();
    },
  ),
  plainDeviceScenario(
    'basic.reset.device.1',
    'device keeps its status after the driver resets it',
    (m) => new PlainDevice(m, DeviceId.ENTROPY, 0n, { reset: (d) => d.raiseStatus(S.ACKNOWLEDGE) }),
    async (r) => r.driver.init(),
  ),
  plainDeviceScenario(
    'basic.reset.device.2',
    'device sends a configuration change notification right after a reset',
    (m) => new PlainDevice(m, DeviceId.ENTROPY, 0n, { reset: (d) => d.sendConfigChange() }),
    async (r) => r.driver.init(),
  ),
  plainDeviceScenario(
    'basic.config.device.1',
    'device refuses configuration reads before FEATURES_OK (which init.sequence.driver.2 lets the driver do)',
    (m) =>
      new PlainDevice(m, DeviceId.ENTROPY, 0n, {
        readConfig: (d) => {
          if (!(d.status & S.FEATURES_OK)) throw new Error('config space not readable yet');
        },
      }),
    async (r) => r.driver.init({ check: async () => void (await r.driver.readConfig((read) => read(0, 4))) }),
    DeviceId.ENTROPY,
    { covers: ['init.sequence.driver.2'] },
  ),
  plainDeviceScenario(
    'basic.features.device.1',
    'network device offers GUEST_TSO4 without GUEST_CSUM, which it requires',
    (m) => new PlainDevice(m, DeviceId.NET, bit(NET_FEATURES.GUEST_TSO4)),
    async (r) => r.driver.init(),
    DeviceId.NET,
  ),
  plainDeviceScenario(
    'basic.features.device.2',
    'device refuses FEATURES_OK for a valid subset of what it offered',
    (m) => new PlainDevice(m, DeviceId.ENTROPY, 0n, { validate: () => false }),
    async (r) => r.driver.init(),
  ),
  plainDeviceScenario(
    'basic.features.device.4',
    'entropy device offers bit 60, which the spec does not describe for it',
    (m) => new PlainDevice(m, DeviceId.ENTROPY, 1n << 60n),
    async (r) => r.driver.init(),
    DeviceId.ENTROPY,
    { recordOnly: 'basic.features.driver.7: a driver must not fail solely because an unknown feature is offered' },
  ),
  {
    clause: 'reserved.bits.device.1',
    culprit: 'device',
    title: 'device does not offer VIRTIO_F_VERSION_1',
    async run(mode = 'strict') {
      const r = rig({ mode, device: (m) => new RngDevice({ monitor: m, core: { transportFeatures: bit(Feature.EVENT_IDX) } }) });
      await r.driver.init().catch(() => undefined);
      return outcome(r, 'device');
    },
  },
  plainDeviceScenario(
    'basic.features.device.5',
    'device accepts a feature set once, then refuses the same set after a reset',
    (m) => new PlainDevice(m, DeviceId.ENTROPY, 0n, { validate: (d) => d.refusals++ === 0 }),
    async (r) => {
      await r.driver.init();
      await r.driver.init();
    },
  ),

  // ---------------------------------------------------------------- device: suspend
  plainDeviceScenario(
    'init.suspend.device.3',
    'device sends a used-buffer notification while suspended',
    (m) => new PlainDevice(m, DeviceId.ENTROPY, 0n),
    async (r) => {
      await r.driver.init({ setup: async () => void (await r.driver.setupQueue(0)) });
      await r.driver.suspend();
      (r.device as PlainDevice).sendInterrupt(0);
    },
  ),
  plainDeviceScenario(
    'init.suspend.device.4',
    'device sends a configuration change notification while suspended',
    (m) => new PlainDevice(m, DeviceId.ENTROPY, 0n),
    async (r) => {
      await r.driver.init({ setup: async () => void (await r.driver.setupQueue(0)) });
      await r.driver.suspend();
      (r.device as PlainDevice).sendConfigChange();
    },
  ),
  plainDeviceScenario(
    'init.suspend.device.5',
    'device applies a configuration change held back during suspension but does not notify on resume',
    (m) => new PlainDevice(m, DeviceId.ENTROPY, 0n, { silentConfig: true }),
    async (r) => {
      await r.driver.init({ setup: async () => void (await r.driver.setupQueue(0)) });
      await r.driver.suspend();
      (r.device as PlainDevice).changeConfig();
      await r.driver.resume();
    },
  ),
  plainDeviceScenario(
    'init.suspend.device.6',
    'device ignores SUSPEND and does not set DEVICE_NEEDS_RESET either',
    (m) => new PlainDevice(m, DeviceId.ENTROPY, 0n, { status: (_d, v) => v & ~S.SUSPEND }),
    async (r) => {
      await r.driver.init({ setup: async () => void (await r.driver.setupQueue(0)) });
      await r.driver.suspend({ timeoutMs: 20 });
    },
  ),
  plainDeviceScenario(
    'init.suspend.device.7',
    'device stays suspended when the driver sets DRIVER_OK to resume it',
    (m) => new PlainDevice(m, DeviceId.ENTROPY, 0n, { status: (d, v) => (d.suspendState === 'suspended' ? null : v) }),
    async (r) => {
      await r.driver.init({ setup: async () => void (await r.driver.setupQueue(0)) });
      await r.driver.suspend();
      await r.driver.resume({ timeoutMs: 20 });
    },
  ),

  // ---------------------------------------------------------------- device: rings
  deviceScenario(
    'split.desc-table.device.4',
    'device writes into the descriptor table',
    (d, q, chain) => {
      d.memory.writeU32(q.descAddr + chain.head * DESC_SIZE + 8, 1);
      q.addUsed(chain.head, 1);
      return true;
    },
    { echoes: ['init.cleanup.driver.1'] },
  ),
  {
    clause: 'split.desc-table.device.1',
    culprit: 'device',
    title: 'block-style device writes into the device-readable request header',
    async run(mode = 'strict') {
      const devMon = new Monitor({ mode });
      const drvMon = new Monitor({ mode });
      const mem = GuestMemory.create(1 << 20);
      const device = new ScribblingDevice(devMon);
      device.withholdFeatures(bit(Feature.RING_PACKED));
      const transport = new LoopbackTransport(device, mem);
      const driver = new VirtioDriver(transport, { deviceId: DeviceId.BLOCK, monitor: drvMon, auditReadable: true, transportFeatures: ALL });
      let q: DriverQueue | null = null;
      driver.onUsed = (dq) => {
        while (dq.getUsed() !== undefined);
        dq.enableInterrupts();
      };
      await driver.init({ setup: async () => void (q = await driver.setupQueue(0)) });
      const header = driver.allocator.alloc(16, 16);
      const status = driver.allocator.alloc(1, 1);
      q!.begin().addReadable(header, 16).addWritable(status, 1).commit('req');
      driver.kick(q!);
      return outcome({ mem, device, transport, driver, devMon, drvMon }, 'device');
    },
  },
  deviceScenario('split.used-ring.device.2', 'device reports a used length larger than the writable buffer', (_d, q, chain) => {
    q.addUsed(chain.head, chain.writableBytes + 100);
    return true;
  }),
  deviceScenario(
    'split.used-ring.device.2',
    'with IN_ORDER, device reports a used length larger than the writable buffer',
    (_d, q, chain) => {
      q.addUsed(chain.head, chain.writableBytes + 100);
      return true;
    },
    { accept: ALL | IN_ORDER },
  ),
  deviceScenario('struct.used-id.device.1', 'device returns a descriptor id the driver never exposed', (d, q) => {
    d.publishUsedRaw(q, q.size - 1, 4, q.nextUsed + 1);
    d.notifyDriver(q);
    return false;
  }),
  deviceScenario('struct.used-idx.device.1', 'device moves used.idx five entries ahead with one buffer in flight', (d, q, chain) => {
    d.publishUsedRaw(q, chain.head, 4, q.nextUsed + 5);
    d.notifyDriver(q);
    return false;
  }),
  deviceScenario(
    'split.avail-buffer-notif-suppr.device.1',
    'device writes used.flags = 2 (only 0 or 1 are allowed without EVENT_IDX)',
    (d, q, chain) => {
      d.memory.writeU16(q.usedAddr + RING_FLAGS, 2);
      q.addUsed(chain.head, 4);
      return true;
    },
    { accept: V1 | bit(Feature.INDIRECT_DESC), before: (r) => r.mem.writeU16(r.q.addrs.used + RING_FLAGS, 2) },
  ),
  deviceScenario(
    'split.avail-buffer-notif-suppr.device.3',
    'device writes used.flags = 1 although EVENT_IDX was negotiated',
    (_d, q, chain) => {
      q.addUsed(chain.head, 4);
      return true;
    },
    { before: (r) => r.mem.writeU16(r.q.addrs.used + RING_FLAGS, 1) },
  ),
  deviceScenario('entropy.device-operation.device.1', 'device returns an entropy buffer with no bytes in it', (_d, q, chain) => {
    q.addUsed(chain.head, 0);
    return true;
  }),
  deviceScenario(
    'split.used-buffer-notif-suppr.device.3',
    'device uses a buffer and does not notify although avail.flags is 0',
    (_d, q, chain) => {
      q.addUsed(chain.head, 4);
      q.publish();
      return false;
    },
    { accept: V1 | bit(Feature.INDIRECT_DESC) },
  ),
  deviceScenario('split.used-buffer-notif-suppr.device.5', 'device writes the used entry named by used_event and does not notify', (_d, q, chain) => {
    q.addUsed(chain.head, 4);
    q.publish();
    return false;
  }),
  deviceScenario(
    'split.used-buffer-notif-suppr.device.2',
    'device notifies although the driver set VIRTQ_AVAIL_F_NO_INTERRUPT',
    (d, q, chain) => {
      q.addUsed(chain.head, 4);
      q.publish();
      d.notifyDriver(q);
      return false;
    },
    { accept: V1 | bit(Feature.INDIRECT_DESC), before: (r) => r.q.disableInterrupts() },
  ),
  deviceScenario(
    'split.used-buffer-notif-suppr.device.6',
    'device notifies although used_event asks for no notification yet',
    (d, q, chain) => {
      q.addUsed(chain.head, 4);
      q.publish();
      d.notifyDriver(q);
      return false;
    },
    { before: (r) => r.mem.writeU16(r.q.addrs.avail + usedEventOffset(r.q.size), (r.q.collectedIdx + 100) & 0xffff) },
  ),
  deviceScenario(
    'split.used-buffer-notif-suppr.device.1',
    'device without EVENT_IDX goes by used_event (which asks for no notification yet) and does not notify',
    (_d, q, chain) => {
      q.addUsed(chain.head, 4);
      q.publish();
      return false; // silent, as used_event would allow: flags 0 required a notification
    },
    {
      accept: V1 | bit(Feature.INDIRECT_DESC),
      before: (r) => r.mem.writeU16(r.q.addrs.avail + usedEventOffset(r.q.size), (r.q.collectedIdx + 100) & 0xffff),
    },
  ),
  deviceScenario(
    'split.used-buffer-notif-suppr.device.4',
    'device with EVENT_IDX goes by the NO_INTERRUPT bit of avail.flags and does not notify at used_event',
    (_d, q, chain) => {
      q.addUsed(chain.head, 4);
      q.publish();
      return false; // silent, as avail.flags bit 0 would ask without EVENT_IDX
    },
    // The precondition is a driver fault too (avail.flags must stay 0 with EVENT_IDX): the
    // device's own monitor names it; it is the scenario's raw write, not the observer's.
    { before: (r) => r.mem.writeU16(r.q.addrs.avail + RING_FLAGS, 1), echoes: ['split.used-buffer-notif-suppr.driver.3'] },
  ),

  // ---------------------------------------------------------------- packed ring: driver
  packedChain('packed.ring.driver.1', 'driver places the packed descriptor ring at an address that is not 16-byte aligned', null, { misalign: true }),
  packedChain('packed.scatter-gather-support.driver.2', 'driver exposes a list longer than the queue (NEXT on every slot)', (r, q, buf) => {
    for (let i = 0; i < q.size; i++) r.writeSlot(i, buf, 8, 0, PDESC_F_WRITE | PDESC_F_NEXT);
    return 0;
  }),
  packedChain(
    'packed.scatter-gather-support.driver.1',
    'driver exposes a list of 3 buffers to a device that takes at most 2',
    (r, _q, buf) => {
      for (let i = 0; i < 3; i++) r.writeSlot(i, buf + 16 * i, 8, 7, PDESC_F_WRITE | (i < 2 ? PDESC_F_NEXT : 0));
      return 0;
    },
    { maxChain: 2 },
  ),
  packedChain('packed.scatter-gather-support.driver.3', 'driver puts a device-readable descriptor after a device-writable one', (r, _q, buf) => {
    r.writeSlot(1, buf + 16, 8, 7, 0);
    r.writeSlot(0, buf, 8, 7, PDESC_F_WRITE | PDESC_F_NEXT);
    return 0;
  }),
  packedChain('packed.scatter-gather-support.driver.6', 'driver makes the first descriptor available before the rest of its list', (r, _q, buf) => {
    r.writeSlot(0, buf, 8, 7, PDESC_F_WRITE | PDESC_F_NEXT); // slot 1 never made available
    return 0;
  }),
  packedChain(
    'packed.indirect-descs.driver.1',
    'driver uses an indirect descriptor although VIRTIO_F_INDIRECT_DESC was not negotiated',
    (r, _q, buf) => {
      writePackedDesc(r.mem, buf, 0, buf + 256, 8, 0, PDESC_F_WRITE);
      r.writeSlot(0, buf, PDESC_SIZE, 7, PDESC_F_INDIRECT);
      return 0;
    },
    { accept: PACKED & ~bit(Feature.INDIRECT_DESC) },
  ),
  packedChain('packed.indirect-descs.driver.2', 'driver sets NEXT inside an indirect table', (r, _q, buf) => {
    writePackedDesc(r.mem, buf, 0, buf + 256, 8, 0, PDESC_F_WRITE | PDESC_F_NEXT);
    writePackedDesc(r.mem, buf, 1, buf + 512, 8, 0, PDESC_F_WRITE);
    r.writeSlot(0, buf, 2 * PDESC_SIZE, 7, PDESC_F_INDIRECT);
    return 0;
  }),
  packedChain(
    'packed.indirect-descs.driver.3',
    'driver gives an indirect table more descriptors than the device allows',
    (r, _q, buf) => {
      for (let i = 0; i < 3; i++) writePackedDesc(r.mem, buf, i, buf + 256 + 16 * i, 8, 0, PDESC_F_WRITE);
      r.writeSlot(0, buf, 3 * PDESC_SIZE, 7, PDESC_F_INDIRECT);
      return 0;
    },
    { maxChain: 2 },
  ),
  packedChain('packed.indirect-descs.driver.4', 'driver puts an INDIRECT descriptor in a list linked by NEXT', (r, _q, buf) => {
    writePackedDesc(r.mem, buf, 0, buf + 256, 8, 0, PDESC_F_WRITE);
    r.writeSlot(1, buf, PDESC_SIZE, 7, PDESC_F_INDIRECT);
    r.writeSlot(0, buf + 512, 8, 7, PDESC_F_WRITE | PDESC_F_NEXT);
    return 0;
  }),
  {
    clause: 'struct.packed-buffer-id.driver.1',
    culprit: 'driver',
    title: 'driver makes buffer id 7 available again while the device still holds it',
    async run(mode = 'strict') {
      const r = await livePacked({ mode, hold: true });
      const buf = r.driver.allocator.alloc(256, 16);
      r.writeSlot(0, buf, 8, 7, PDESC_F_WRITE);
      r.writeSlot(1, buf + 16, 8, 7, PDESC_F_WRITE);
      r.transport.notify(0, undefined);
      return outcome(r, 'driver');
    },
  },
  {
    clause: 'packed.desc-table.driver.1',
    culprit: 'driver',
    title: 'driver laps the ring and rewrites a slot whose buffer the device still holds',
    async run(mode = 'strict') {
      const r = await livePacked({ mode, hold: true, size: 4 });
      const buf = r.driver.allocator.alloc(256, 16);
      for (let i = 0; i < 4; i++) r.writeSlot(i, buf + 16 * i, 8, i, PDESC_F_WRITE);
      r.transport.notify(0, undefined); // the device takes all four and holds them
      r.writeSlot(0, buf, 8, 9, PDESC_F_WRITE, false); // second lap, wrap counter flipped
      r.transport.notify(0, undefined);
      return outcome(r, 'driver');
    },
  },
  {
    clause: 'packed.scatter-gather-support.driver.5',
    culprit: 'driver',
    title: 'driver writes a list that runs into slots the device has not used yet',
    async run(mode = 'strict') {
      const r = await livePacked({ mode, hold: true, size: 4 });
      const buf = r.driver.allocator.alloc(256, 16);
      for (let i = 0; i < 3; i++) r.writeSlot(i, buf + 16 * i, 8, i, PDESC_F_WRITE);
      r.transport.notify(0, undefined); // slots 0-2 held by the device
      r.writeSlot(0, buf, 8, 9, PDESC_F_WRITE, false); // the list's second slot laps into slot 0
      r.writeSlot(3, buf + 64, 8, 9, PDESC_F_WRITE | PDESC_F_NEXT);
      r.transport.notify(0, undefined);
      return outcome(r, 'driver');
    },
  },
  {
    clause: 'packed.desc-table.driver.2',
    culprit: 'driver',
    title: 'driver changes a descriptor it made available while the device works on it',
    async run(mode = 'strict') {
      const r = await livePacked({ mode, hold: true });
      const pending = (r.driver as RngDriver).request(32).catch(() => undefined);
      r.mem.writeU32(r.q.addrs.desc + 8, 16); // slot 0's length, while the device holds the buffer
      r.release();
      await pending;
      return outcome(r, 'driver');
    },
  },
  {
    clause: 'packed.desc-table.driver.3',
    culprit: 'driver',
    title: 'driver notifies with next_off naming a slot it already made available',
    async run(mode = 'strict') {
      const r = await livePacked({ mode, accept: PACKED | bit(Feature.NOTIFICATION_DATA), hold: true });
      const buf = r.driver.allocator.alloc(64, 16);
      r.writeSlot(0, buf, 8, 3, PDESC_F_WRITE);
      r.transport.notify(0, 0); // next_off 0, wrap 0: should be slot 1, wrap 1
      return outcome(r, 'driver');
    },
  },
  liveDriverScenario(
    'struct.notification-data.driver.1',
    'driver notifies a split queue with an avail index in the data that is not the ring\'s',
    async (r) => {
      r.q.begin().addWritable(r.driver.allocator.alloc(64, 16), 64).commit('x');
      r.q.publish();
      r.transport.notify(0, (7 << 16) | 0);
    },
    { accept: ALL | bit(Feature.NOTIFICATION_DATA) },
  ),

  // ---------------------------------------------------------------- IN_ORDER: driver
  rawChain(
    'split.desc-table.driver.2',
    'with IN_ORDER, driver chains descriptor 2 to descriptor 5 instead of 3',
    (r, q, buf) => {
      writeDesc(r.mem, q.addrs.desc, 2, buf, 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 5);
      writeDesc(r.mem, q.addrs.desc, 5, buf + 16, 16, VIRTQ_DESC_F_WRITE, 0);
      return 2;
    },
    { accept: ALL | IN_ORDER },
  ),
  rawChain(
    'split.indirect-descs.driver.5',
    'with IN_ORDER, driver chains indirect entry 0 to entry 2',
    (r, q, buf) => {
      writeDesc(r.mem, buf, 0, buf + 256, 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2);
      writeDesc(r.mem, buf, 1, buf + 512, 16, VIRTQ_DESC_F_WRITE, 0);
      writeDesc(r.mem, buf, 2, buf + 768, 16, VIRTQ_DESC_F_WRITE, 0);
      writeDesc(r.mem, q.addrs.desc, spare(q), buf, 48, VIRTQ_DESC_F_INDIRECT, 0);
      return spare(q);
    },
    { accept: ALL | IN_ORDER },
  ),

  // ---------------------------------------------------------------- queue reset: driver
  liveDriverScenario(
    'basic.vq-reenable.driver.1',
    'driver resets queue 0 and enables it again without configuring its rings',
    async (r) => {
      await r.transport.resetQueue(0);
      await r.transport.enableQueue(0);
    },
    { accept: ALL | bit(Feature.RING_RESET) },
  ),

  // ---------------------------------------------------------------- packed ring and IN_ORDER: device
  packedDeviceScenario('packed.desc-table.device.3', 'device marks a buffer id used that the driver never made available', (d, q, _chain) => {
    d.writeUsedDesc(q, 0, 40, 4);
    return false;
  }),
  {
    clause: 'packed.desc-table.device.1',
    culprit: 'device',
    title: 'block-style device writes into the device-readable request header (packed ring)',
    async run(mode = 'strict') {
      const devMon = new Monitor({ mode });
      const drvMon = new Monitor({ mode });
      const mem = GuestMemory.create(1 << 20);
      const device = new ScribblingDevice(devMon);
      const transport = new LoopbackTransport(device, mem);
      const driver = new VirtioDriver(transport, { deviceId: DeviceId.BLOCK, monitor: drvMon, auditReadable: true, transportFeatures: PACKED });
      let q: DriverQueue | null = null;
      driver.onUsed = (dq) => {
        while (dq.getUsed() !== undefined);
        dq.enableInterrupts();
      };
      await driver.init({ setup: async () => void (q = await driver.setupQueue(0)) });
      q!.begin().addReadable(driver.allocator.alloc(16, 16), 16).addWritable(driver.allocator.alloc(1, 1), 1).commit('req');
      driver.kick(q!);
      return outcome({ mem, device, transport, driver, devMon, drvMon }, 'device');
    },
  },
  packedDeviceScenario('struct.used-len.device.1', 'device reports a used length beyond the writable part of the buffer', (_d, q, chain) => {
    q.addUsed(chain.head, chain.writableBytes + 50);
    return true;
  }),
  {
    clause: 'packed.desc-table.device.4',
    culprit: 'device',
    title: 'device rewrites a descriptor after marking it used',
    async run(mode = 'strict') {
      let dev: ScriptedDevice | null = null;
      // A one-slot ring: every request reuses slot 0, so the driver looks at it again.
      const r = await live({ mode, accept: PACKED, device: (m) => (dev = new ScriptedDevice(m, (_d, q, c) => (q.addUsed(c.head, 4), true), { queueMaxSize: 1 })) });
      const rng = r.driver as RngDriver;
      await rng.request(16);
      const q = r.driver.queues[0] as unknown as PackedDriverQueue;
      dev!.memory.writeU32(q.addrs.desc + 8, 999); // slot 0, already used and collected
      await Promise.race([rng.request(16).catch(() => undefined), sleep(20)]);
      return outcome(r, 'device');
    },
  },
  {
    clause: 'reserved.bits.device.5',
    culprit: 'device',
    title: 'with IN_ORDER, device uses the second buffer before the first',
    async run(mode = 'strict') {
      const held: DescriptorChain[] = [];
      const r = await live({
        mode,
        accept: ALL | IN_ORDER,
        device: (m) =>
          new ScriptedDevice(m, (d, q, c) => {
            const copy = new DescriptorChain(4);
            copy.head = c.head;
            held.push(copy);
            if (held.length === 2) {
              // Out of order, and one used element per buffer: used.idx moves by 1 only.
              d.publishUsedRaw(q, held[1].head, 4, q.nextUsed + 1);
              d.notifyDriver(q);
            }
            return false;
          }),
      });
      const rng = r.driver as RngDriver;
      await Promise.race([Promise.all([rng.request(8), rng.request(8)]).catch(() => undefined), sleep(20)]);
      return outcome(r, 'device');
    },
  },
  plainDeviceScenario(
    'basic.vq-reset.device.1',
    'device sends a used-buffer notification for a queue the driver reset',
    (m) => new PlainDevice(m, DeviceId.ENTROPY, 0n),
    async (r) => {
      await r.driver.init({ setup: async () => void (await r.driver.setupQueue(0)) });
      await r.driver.resetQueue(0);
      (r.device as PlainDevice).sendInterrupt(0);
    },
    DeviceId.ENTROPY,
    {},
    ALL | bit(Feature.RING_RESET),
  ),
  plainDeviceScenario(
    'basic.vq-reset.device.2',
    'device leaves a queue enabled after resetting it',
    (m) => new PlainDevice(m, DeviceId.ENTROPY, 0n, { queueReset: (d, i) => d.queues[i].setEnabled(true) }),
    async (r) => {
      await r.driver.init({ setup: async () => void (await r.driver.setupQueue(0)) });
      await r.driver.resetQueue(0);
    },
    DeviceId.ENTROPY,
    {},
    ALL | bit(Feature.RING_RESET),
  ),

  // ---------------------------------------------------------------- block: driver
  blkRaw('blk.device-operation.driver.2', 'driver reads the sector just past the end of the disk', { type: BlkType.IN, sector: 2048, writable: 512 }),
  blkRaw('blk.device-operation.driver.4', 'driver sends a FLUSH with sector 5', { type: BlkType.FLUSH, sector: 5 }),
  blkRaw('blk.device-operation.driver.6', 'driver reads 100 bytes (not a multiple of 512)', { type: BlkType.IN, sector: 0, writable: 100 }),
  blkRaw('blk.device-operation.driver.7', 'driver sends a DISCARD with 24 bytes of segments', { type: BlkType.DISCARD, sector: 0, segments: [[0, 1, 0]], extra: 8 }),
  blkRaw('blk.device-operation.driver.8', 'driver asks GET_ID for 10 bytes', { type: BlkType.GET_ID, sector: 0, writable: 10 }),
  blkRaw('blk.device-operation.driver.9', 'driver sends 2 discard segments to a device that takes 1', { type: BlkType.DISCARD, sector: 0, segments: [[0, 1, 0], [8, 1, 0]] }),
  blkRaw('blk.device-operation.driver.10', 'driver sends 2 secure-erase segments to a device that takes 1', { type: BlkType.SECURE_ERASE, sector: 0, segments: [[0, 1, 0], [8, 1, 0]] }),
  blkRaw('blk.device-operation.driver.11', 'driver sends 2 write-zeroes segments to a device that takes 1', { type: BlkType.WRITE_ZEROES, sector: 0, segments: [[0, 1, 0], [8, 1, 0]] }),
  blkRaw('blk.device-operation.driver.14', 'driver sets the unmap flag on a discard', { type: BlkType.DISCARD, sector: 0, segments: [[0, 1, 1]] }),
  blkRaw('blk.device-operation.driver.5', 'driver puts 512 data bytes in a FLUSH request', { type: BlkType.FLUSH, sector: 0, writable: 512 }),
  {
    clause: 'blk.device-operation.driver.3',
    culprit: 'driver',
    title: 'driver declines VIRTIO_BLK_F_RO on a read-only disk',
    async run(mode = 'strict') {
      const f = BLK_FEATURES;
      const r = blkRig(mode, { readOnly: true, driverFeatures: bit(f.FLUSH) | bit(f.BLK_SIZE) });
      await (r.driver as BlkDriver).start().catch(() => undefined);
      return outcome(r, 'driver');
    },
  },
  blkRaw('struct.blk-status.driver.1', 'driver sends a request with no status byte', { type: BlkType.IN, sector: 0, noStatus: true }),
  {
    clause: 'blk.device-init.driver.4',
    culprit: 'driver',
    title: 'driver reads the writeback field before FEATURES_OK',
    async run(mode = 'strict') {
      const r = blkRig(mode);
      await r.transport.setStatus(0);
      await r.transport.setStatus(S.ACKNOWLEDGE);
      await r.transport.setStatus(S.ACKNOWLEDGE | S.DRIVER);
      await r.transport.readConfig(32, 1);
      return outcome(r, 'driver');
    },
  },

  // ---------------------------------------------------------------- block: device
  blkDeviceScenario('blk.device-init.device.2', 'device offers VIRTIO_BLK_F_CONFIG_WCE without VIRTIO_BLK_F_FLUSH', (d) => d.withholdFeatures(bit(BLK_FEATURES.FLUSH))),
  blkDeviceScenario('blk.device-init.device.1', 'device offers neither VIRTIO_BLK_F_FLUSH nor a cache switch', (d) => d.withholdFeatures(bit(BLK_FEATURES.FLUSH) | bit(BLK_FEATURES.CONFIG_WCE))),
  blkDeviceScenario(
    'blk.device-init.device.3',
    'device keeps writeback at 1 although CONFIG_WCE was negotiated without FLUSH',
    () => undefined,
    { device: (o) => new VirtioDevice(new StickyWritebackBlk(o), { monitor: o.monitor }), driverFeatures: bit(BLK_FEATURES.CONFIG_WCE) },
  ),
  blkDeviceScenario('blk.device-init.device.4', 'device leaves a non-zero byte in the unused0 padding', (d) => (d as unknown as { config: Uint8Array }).config.fill(1, 33, 34)),
  {
    clause: 'blk.device-operation.device.3',
    culprit: 'device',
    title: 'read-only device completes a write with OK',
    async run(mode = 'strict') {
      const r = blkRig(mode, { device: (o) => new VirtioDevice(new CarelessReadOnlyBlk(o), { monitor: o.monitor }) });
      await (r.driver as BlkDriver).start();
      await (r.driver as BlkDriver).write(0, new Uint8Array(512)).catch(() => undefined);
      return outcome(r, 'device');
    },
  },
];

// ------------------------------------------------------------------ block helpers

/** A block device type that forgets to start in writethrough when FLUSH is not negotiated. */
class StickyWritebackBlk extends BlkDeviceType {
  override featuresOk(): void {}
}

/** A block device type offered read-only that writes anyway. */
class CarelessReadOnlyBlk extends BlkDeviceType {
  constructor(o: BlkDeviceOptions) {
    super({ ...o, readOnly: true });
  }
  protected override refusesWrites(): boolean {
    return false;
  }
}

function blkRig(mode: MonitorMode, o: { device?: (o: BlkDeviceOptions) => VirtioDevice; driverFeatures?: bigint; readOnly?: boolean } = {}): Rig {
  const devMon = new Monitor({ mode });
  const drvMon = new Monitor({ mode });
  const options: BlkDeviceOptions = { storage: new MemoryBlockStorage(1 << 20), monitor: devMon, maxSegments: 1, readOnly: o.readOnly };
  const device = o.device ? o.device(options) : new BlkDevice(options);
  device.withholdFeatures(bit(Feature.RING_PACKED));
  const mem = GuestMemory.create(4 << 20);
  const transport = new LoopbackTransport(device, mem);
  const driver = new BlkDriver(transport, { monitor: drvMon, transportFeatures: ALL, ...(o.driverFeatures !== undefined ? { deviceFeatures: o.driverFeatures } : {}) });
  return { mem, device, transport, driver, devMon, drvMon };
}

interface RawBlk {
  type: number;
  sector: number;
  /** Device-writable data bytes before the status byte. */
  writable?: number;
  /** Segments {sector, sectors, flags} as driver-to-device data. */
  segments?: [number, number, number][];
  /** Extra driver-to-device bytes after the segments. */
  extra?: number;
  noStatus?: boolean;
}

/** A block request written by hand on a live split queue. */
function blkRaw(clause: string, title: string, req: RawBlk): Scenario {
  return {
    clause,
    culprit: 'driver',
    title,
    async run(mode = 'strict') {
      const r = blkRig(mode);
      const d = r.driver as BlkDriver;
      await d.start();
      const q = d.queues[0];
      const out = (req.segments?.length ?? 0) * 16 + (req.extra ?? 0);
      const inn = req.writable ?? 0;
      const base = d.allocator.alloc(16 + out + inn + 1, 16);
      r.mem.writeU32(base, req.type);
      r.mem.writeU64(base + 8, BigInt(req.sector));
      (req.segments ?? []).forEach(([sector, sectors, flags], i) => {
        r.mem.writeU64(base + 16 + 16 * i, BigInt(sector));
        r.mem.writeU32(base + 24 + 16 * i, sectors);
        r.mem.writeU32(base + 28 + 16 * i, flags);
      });
      q.begin().addReadable(base, 16);
      if (out > 0) q.addReadable(base + 16, out);
      if (inn > 0) q.addWritable(base + 16 + out, inn);
      if (!req.noStatus) q.addWritable(base + 16 + out + inn, 1);
      // A token shaped like the driver's own requests, so its completion is handled as usual.
      q.commit({ mem: base, dataLen: out + inn, resolve: () => undefined, reject: () => undefined }, { indirect: false });
      d.kick(q);
      await sleep(5);
      return outcome(r, 'driver');
    },
  };
}

function blkDeviceScenario(
  clause: string,
  title: string,
  twist: (d: VirtioDevice) => void,
  o: { device?: (o: BlkDeviceOptions) => VirtioDevice; driverFeatures?: bigint } = {},
): Scenario {
  return {
    clause,
    culprit: 'device',
    title,
    async run(mode = 'strict') {
      const r = blkRig(mode, o);
      twist(r.device);
      await (r.driver as BlkDriver).start().catch(() => undefined);
      return outcome(r, 'device');
    },
  };
}

// ------------------------------------------------------------------ packed helpers

function writePackedDesc(mem: GuestMemory, table: number, i: number, addr: number, len: number, id: number, flags: number): void {
  const o = table + i * PDESC_SIZE;
  mem.writeU64(o, BigInt(addr));
  mem.writeU32(o + 8, len);
  mem.writeU16(o + 12, id);
  mem.writeU16(o + 14, flags);
}

interface PackedRig extends Rig {
  q: PackedDriverQueue;
  /** Writes ring slot `slot` as available in the first pass (wrap 1), or the second (`firstPass` false). */
  writeSlot(slot: number, addr: number, len: number, id: number, flags: number, firstPass?: boolean): void;
  /** Lets a held (asynchronous) request complete. */
  release(): void;
}

async function livePacked(o: { mode: MonitorMode; accept?: bigint; hold?: boolean; size?: number; maxChain?: number; misalign?: boolean }): Promise<PackedRig> {
  const waiting: (() => void)[] = [];
  const rngOptions: Partial<RngDeviceOptions> = {
    queueMaxSize: o.size ?? 64,
    ...(o.hold ? { asyncSource: (dst: Uint8Array) => new Promise<void>((res) => waiting.push(() => (dst.fill(1), res()))) } : {}),
  };
  const r = rig({
    mode: o.mode,
    accept: o.accept ?? PACKED,
    device: (m) => new VirtioDevice(new LimitedRng(rngOptions, o.maxChain), { monitor: m }),
  });
  const d = r.driver as RngDriver;
  if (o.misalign) {
    await d.init({
      setup: async () => {
        await r.transport.setupQueue(0, 8, { desc: 0x10008, avail: 0x11000, used: 0x11004 });
        await r.transport.enableQueue(0);
      },
    }).catch(() => undefined);
    return { ...r, q: undefined as unknown as PackedDriverQueue, writeSlot: () => undefined, release: () => undefined };
  }
  await d.start();
  const q = r.driver.queues[0] as unknown as PackedDriverQueue;
  return {
    ...r,
    q,
    writeSlot(slot, addr, len, id, flags, firstPass = true) {
      writePackedDesc(r.mem, q.addrs.desc, slot, addr, len, id, flags | availFlags(firstPass));
    },
    release() {
      for (const w of waiting.splice(0)) w();
    },
  };
}

/** An entropy device type whose packed queues take lists of at most `maxChain` buffers. */
class LimitedRng extends RngDeviceType {
  constructor(
    options: RngDeviceOptions,
    private readonly maxChain?: number,
  ) {
    super(options);
  }
  driverOk(ctx: DeviceContext): void {
    if (this.maxChain !== undefined) for (const q of ctx.queues) if (q.format === 'packed') (q as PackedDeviceQueue).maxChainLength = this.maxChain;
  }
}

/** A packed-ring scenario in which the driver writes slots by hand; `null` build: setup itself is the misbehaviour. */
function packedChain(
  clause: string,
  title: string,
  build: ((r: PackedRig, q: PackedDriverQueue, buf: number) => number) | null,
  o: { accept?: bigint; maxChain?: number; misalign?: boolean } = {},
): Scenario {
  return {
    clause,
    culprit: 'driver',
    title,
    async run(mode = 'strict') {
      const r = await livePacked({ mode, ...o });
      if (build !== null) {
        const buf = r.driver.allocator.alloc(4096, 16);
        build(r, r.q, buf);
        r.transport.notify(0, undefined);
      }
      return outcome(r, 'driver');
    },
  };
}

/** A device scenario on the packed ring. */
function packedDeviceScenario(
  clause: string,
  title: string,
  script: (d: PackedScriptedDevice, q: PackedDeviceQueue, chain: DescriptorChain) => boolean,
): Scenario {
  return {
    clause,
    culprit: 'device',
    title,
    async run(mode = 'strict') {
      const r = await live({ mode, accept: PACKED, device: (m) => new PackedScriptedDevice(m, script) });
      await Promise.race([(r.driver as RngDriver).request(64).catch(() => undefined), sleep(20)]);
      return outcome(r, 'device');
    },
  };
}

/** The packed-ring twin of ScriptedDevice. */
class PackedScriptedDevice extends VirtioDevice {
  constructor(monitor: Monitor, script: (d: PackedScriptedDevice, q: PackedDeviceQueue, chain: DescriptorChain) => boolean) {
    const scratch = new DescriptorChain(200);
    let self: PackedScriptedDevice | null = null;
    super(
      {
        deviceId: DeviceId.ENTROPY,
        name: 'virtio-rng',
        numQueues: 1,
        queueMaxSize: 64,
        process(queue, ctx) {
          const q = queue as PackedDeviceQueue;
          while (q.pop(scratch)) if (script(self!, q, scratch)) ctx.complete(q);
        },
      },
      { monitor },
    );
    self = this;
  }
  /** Writes a used descriptor by hand at the device's used position and notifies. */
  writeUsedDesc(q: PackedDeviceQueue, slot: number, id: number, len: number): void {
    writePackedDesc(this.memory, q.descAddr, slot, 0, len, id, usedFlags(true));
    this.host?.interrupt(q.index);
  }
}

/** The scenarios that break `clause`. */
export function scenariosFor(clause: string): Scenario[] {
  return SCENARIOS.filter((s) => s.clause === clause);
}
