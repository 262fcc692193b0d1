// The device core and its per-type contract: a DeviceType's hooks in the order the driver's
// actions call them, with one DeviceContext for the device's life; the core's errors by kind;
// `status` (a look) against `readStatus()` (the driver's read); the old names as aliases.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { Monitor } from '../src/monitor/monitor.js';
import { LoopbackTransport } from '../src/transports/loopback/loopback.js';
import { VirtioDevice, type DeviceContext, type DeviceType } from '../src/device/device.js';
import { DeviceError, type DeviceErrorKind } from '../src/device/errors.js';
import { isVirtioTsError } from '../src/errors.js';
import { RngDevice, RngDeviceType } from '../src/devices/rng/device.js';
import { BlkDevice } from '../src/devices/blk/device.js';
import { MemoryBlockBackend, MemoryBlockStorage } from '../src/devices/blk/storage.js';
import { ConsoleDevice, ConsoleDeviceType, MemoryConsoleBackend, MemoryConsoleEndpoint } from '../src/devices/console/device.js';
import { FileBlockBackend, FileBlockStorage } from '../src/node/file-block.js';
import { StreamConsoleBackend, StreamConsoleEndpoint, stdioConsoleBackend, stdioConsoleEndpoint } from '../src/node/console-stream.js';
import { RngDriver } from '../src/drivers/rng.js';
import { DeviceId, Feature, Status } from '../src/spec/constants.js';
import { bit } from '../src/spec/features.js';
import { ChainWriter, DescriptorChain } from '../src/virtqueue/chain.js';
import type { DeviceQueue } from '../src/virtqueue/queue.js';

/** assert.throws/rejects predicate: a DeviceError of this kind. */
function deviceError(kind: DeviceErrorKind): (e: unknown) => boolean {
  return (e) => e instanceof DeviceError && isVirtioTsError(e, kind);
}

/** An entropy type that records each hook it gets, and the context it was given. */
class Recorder implements DeviceType {
  readonly deviceId = DeviceId.ENTROPY;
  readonly numQueues = 1;
  readonly queueMaxSize = 16;
  readonly calls: string[] = [];
  readonly contexts = new Set<DeviceContext>();
  /** ctx.status at each stop: the session that ends is still visible. */
  readonly statusAtStop: number[] = [];
  private readonly chain = new DescriptorChain(16);
  private readonly writer = new ChainWriter();
  private seen(what: string, ctx: DeviceContext): void {
    if (this.calls.at(-1) !== what) this.calls.push(what);
    this.contexts.add(ctx);
  }
  init(ctx: DeviceContext): void {
    this.seen('init', ctx);
  }
  validateFeatures(_f: bigint, ctx: DeviceContext): boolean {
    this.seen('validateFeatures', ctx);
    return true;
  }
  featuresOk(_f: bigint, ctx: DeviceContext): void {
    this.seen('featuresOk', ctx);
  }
  driverOk(ctx: DeviceContext): void {
    this.seen('driverOk', ctx);
  }
  process(q: DeviceQueue, ctx: DeviceContext): void {
    this.seen('process', ctx);
    while (q.pop(this.chain)) {
      this.writer.reset(ctx.memory, this.chain).fill(this.chain.writableBytes, 0xab);
      q.addUsed(this.chain.head, this.chain.writableBytes);
    }
    ctx.complete(q);
  }
  stop(reason: 'reset' | 'failed', ctx: DeviceContext): void {
    this.seen(`stop:${reason}`, ctx);
    this.statusAtStop.push(ctx.status);
  }
  reset(ctx: DeviceContext): void {
    this.seen('reset', ctx);
    assert.equal(ctx.status, 0);
  }
}

test('a DeviceType gets its hooks in the order of the driver\'s actions, with one context for the device\'s life', async () => {
  const type = new Recorder();
  const device = new VirtioDevice(type, { monitor: new Monitor() });
  assert.equal(device.type, type);
  assert.equal(device.name, 'device 4', 'no name: the core names it by id');
  const driver = new RngDriver(new LoopbackTransport(device, GuestMemory.create(1 << 20)), { monitor: new Monitor() });
  await driver.start();
  assert.deepEqual([...(await driver.read(8))], new Array(8).fill(0xab));
  await driver.shutdown();
  // The driver's start resets the device first (3.1.1 step 1): stop and reset come before negotiation.
  assert.deepEqual(type.calls, ['init', 'stop:reset', 'reset', 'validateFeatures', 'featuresOk', 'driverOk', 'process', 'stop:reset', 'reset']);
  assert.equal(type.contexts.size, 1);
  assert.equal(type.statusAtStop.at(-1)! & Status.DRIVER_OK, Status.DRIVER_OK, 'stop comes before the core forgets the session');
  assert.deepEqual(device.monitor.verdicts, []);
  assert.deepEqual(driver.monitor.verdicts, []);
});

test('a stateless type object may serve many devices; a type that keeps state refuses a second one (type-in-use)', async () => {
  let served = 0;
  const stateless: DeviceType = {
    deviceId: DeviceId.ENTROPY,
    numQueues: 1,
    process(q, ctx) {
      const chain = new DescriptorChain(q.size);
      while (q.pop(chain)) {
        q.addUsed(chain.head, 1);
        served++;
      }
      ctx.complete(q);
    },
  };
  for (let i = 0; i < 2; i++) {
    const driver = new RngDriver(new LoopbackTransport(new VirtioDevice(stateless), GuestMemory.create(1 << 20)));
    await driver.start();
    await driver.request(1);
  }
  assert.equal(served, 2);
  const rng = new RngDeviceType();
  new VirtioDevice(rng);
  assert.throws(() => new VirtioDevice(rng), deviceError('type-in-use'));
});

test('an exception from a type\'s process is an internal device error: DEVICE_NEEDS_RESET with the reason', async () => {
  const device = new VirtioDevice({
    deviceId: DeviceId.ENTROPY,
    numQueues: 1,
    process(q) {
      if (q.pop(new DescriptorChain(q.size))) throw new Error('boom');
    },
  });
  const driver = new RngDriver(new LoopbackTransport(device, GuestMemory.create(1 << 20)));
  await driver.start();
  await assert.rejects(driver.read(4));
  assert.ok(device.status & Status.DEVICE_NEEDS_RESET);
  assert.match(device.needsResetReason, /internal error on queue 0: boom/);
});

test('status is a look at the register; readStatus() is the driver\'s read, which audits the driver on a synchronous transport (getStatus: its deprecated name)', async () => {
  const device = new RngDevice({ monitor: new Monitor({ mode: 'tolerant' }) });
  device.withholdFeatures(bit(Feature.RING_PACKED));
  const driver = new RngDriver(new LoopbackTransport(device, GuestMemory.create(1 << 20), { mode: 'sync' }), { transportFeatures: bit(Feature.VERSION_1) });
  await driver.start();
  // A buffer made available with notifications wanted, and no notification.
  const q = driver.queues[0];
  q.begin().addWritable(driver.allocator.alloc(16, 8), 16).commit({ addr: 0, len: 16, resolve: () => undefined, reject: () => undefined });
  q.publish();
  assert.equal(device.status & Status.DRIVER_OK, Status.DRIVER_OK);
  assert.equal(device.monitor.verdicts.length, 0, 'a look judges nothing');
  assert.equal(device.readStatus(), device.status);
  assert.deepEqual(
    device.monitor.verdicts.map((v) => v.clause),
    ['split.avail-buffer-notif-suppr.driver.4'],
    'the driver\'s read is a point where the missing notification shows',
  );
  assert.equal(device.getStatus(), device.readStatus());
});

test('DeviceError kinds: features-locked, not-attached, port-exists, no-such-port, no-multiport', async () => {
  const device = new RngDevice();
  assert.throws(() => device.memory, deviceError('not-attached'));
  const driver = new RngDriver(new LoopbackTransport(device, GuestMemory.create(1 << 20)));
  await driver.start();
  assert.throws(() => device.withholdFeatures(bit(Feature.EVENT_IDX)), deviceError('features-locked'));

  const single = new ConsoleDevice({ endpoint: new MemoryConsoleEndpoint(), multiport: false, maxPorts: 1 });
  assert.throws(() => single.addPort(0, { endpoint: new MemoryConsoleEndpoint() }), deviceError('port-exists'));
  assert.throws(() => single.removePort(0), deviceError('no-multiport'));
  assert.throws(() => single.resize(80, 25, 3), deviceError('no-such-port'));
  const multi = new ConsoleDevice({ endpoint: new MemoryConsoleEndpoint(), maxPorts: 4 });
  assert.throws(() => multi.removePort(2), deviceError('no-such-port'));
  const unattached = new ConsoleDeviceType({ ports: [{ endpoint: new MemoryConsoleEndpoint() }, undefined], maxPorts: 2 });
  assert.throws(() => new MemoryConsoleEndpoint().send('x'), deviceError('not-attached'));
  assert.throws(() => new ConsoleDeviceType({}), TypeError, 'no port 0: caller misuse');
  assert.throws(() => new ConsoleDeviceType({ ports: [{ endpoint: new MemoryConsoleEndpoint() }, { endpoint: new MemoryConsoleEndpoint() }], maxPorts: 1 }), RangeError);
  // A console type's ports are added when its device is made.
  assert.deepEqual(unattached.portIds, []);
  assert.deepEqual(new VirtioDevice(unattached).type.portIds, [0]);
});

test('FileBlockStorage errors are DeviceErrors: read-only, storage-too-small', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-core-'));
  try {
    const path = join(dir, 'd.img');
    writeFileSync(path, new Uint8Array(4096));
    const ro = await FileBlockStorage.open(path, { readOnly: true });
    await assert.rejects(ro.write(0, [new Uint8Array(512)]), deviceError('read-only'));
    await ro.close();
    writeFileSync(path, new Uint8Array(100));
    await assert.rejects(FileBlockStorage.open(path), deviceError('storage-too-small'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the old names still work, as deprecated aliases of the new ones', async () => {
  assert.equal(MemoryBlockBackend, MemoryBlockStorage);
  assert.equal(FileBlockBackend, FileBlockStorage);
  assert.equal(MemoryConsoleBackend, MemoryConsoleEndpoint);
  assert.equal(StreamConsoleBackend, StreamConsoleEndpoint);
  assert.equal(stdioConsoleBackend, stdioConsoleEndpoint);
  const storage = new MemoryBlockBackend(1 << 20);
  const disk = new BlkDevice({ backend: storage });
  assert.equal(disk.storage, storage);
  assert.equal(disk.backend, storage);
  const endpoint = new MemoryConsoleBackend();
  const console = new ConsoleDevice({ backend: endpoint });
  assert.equal(console.port(0), endpoint.host);
  const ported = new ConsoleDevice({ ports: [{ backend: new MemoryConsoleBackend() }] });
  assert.deepEqual(ported.portIds, [0]);
});
