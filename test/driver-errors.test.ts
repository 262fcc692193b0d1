/**
 * The driver layer's errors carry a machine-readable kind (DriverError, and BlkError for block
 * request statuses): each misuse of a driver and each way a request can end without an answer
 * gives its kind, so callers branch on `kind`, never on message text.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { Monitor } from '../src/monitor/monitor.js';
import { LoopbackTransport } from '../src/transports/loopback/loopback.js';
import { RngDevice } from '../src/devices/rng/device.js';
import { BlkDevice } from '../src/devices/blk/device.js';
import { MemoryBlockBackend } from '../src/devices/blk/storage.js';
import { RngDriver } from '../src/drivers/rng.js';
import { BlkDriver, BlkError } from '../src/drivers/blk.js';
import { DriverError, type DriverErrorKind } from '../src/driver/driver.js';
import { isVirtioTsError } from '../src/errors.js';
import { BlkStatus } from '../src/spec/blk.js';
import { Feature } from '../src/spec/constants.js';
import { bit, TRANSPORT_FEATURES_SPLIT } from '../src/spec/features.js';

const is = (kind: DriverErrorKind) => (e: unknown) => e instanceof DriverError && e.kind === kind && isVirtioTsError(e, kind);

function rng(accept = TRANSPORT_FEATURES_SPLIT) {
  const device = new RngDevice({ monitor: new Monitor(), queueMaxSize: 8 });
  const transport = new LoopbackTransport(device, GuestMemory.create(1 << 20));
  return new RngDriver(transport, { monitor: new Monitor(), transportFeatures: accept });
}

test('DriverError kinds: requests before start and after shutdown, operations in the wrong state or without their feature', async () => {
  const d = rng();
  await assert.rejects(d.request(8), is('not-started'));
  await assert.rejects(d.suspend(), is('wrong-state'));
  await assert.rejects(d.resume(), is('wrong-state'));
  await d.start();
  assert.equal((await d.read(8)).length, 8);
  await assert.rejects(d.suspend(), is('not-negotiated'), 'VIRTIO_F_SUSPEND not accepted');
  await assert.rejects(d.resetQueue(0), is('not-negotiated'), 'VIRTIO_F_RING_RESET not accepted');
  await assert.rejects(d.reenableQueue(0), is('no-queue'), 'a queue that was not reset');
  await assert.rejects(d.setupQueue(5), is('no-queue'), 'the entropy device has one queue');
  await d.shutdown();
  await assert.rejects(d.request(8), is('not-started'));
});

test('DriverError kinds: a queue reset the transport cannot do; a queue that is not set up', async () => {
  const d = rng(TRANSPORT_FEATURES_SPLIT | bit(Feature.RING_RESET));
  await d.start();
  const t = d.transport;
  await assert.rejects(d.resetQueue(3), is('no-queue'));
  const saved = t.resetQueue;
  t.resetQueue = undefined; // a transport without single-queue reset
  try {
    await assert.rejects(d.resetQueue(0), is('unsupported'));
  } finally {
    t.resetQueue = saved;
  }
});

test('BlkError kinds follow the status byte; a request type that was not negotiated is a DriverError', async () => {
  assert.equal(new BlkError('x', BlkStatus.IOERR).kind, 'io-error');
  assert.equal(new BlkError('x', BlkStatus.UNSUPP).kind, 'unsupported');
  assert.equal(new BlkError('x', 7).kind, 'bad-status');
  assert.equal(new BlkError('x', 7).status, 7);
  const device = new BlkDevice({ backend: new MemoryBlockBackend(1 << 16), monitor: new Monitor() });
  const driver = new BlkDriver(new LoopbackTransport(device, GuestMemory.create(1 << 20)), { monitor: new Monitor(), transportFeatures: TRANSPORT_FEATURES_SPLIT, deviceFeatures: 0n });
  await driver.start();
  await assert.rejects(driver.discard(0, 512), is('not-negotiated'));
  await assert.rejects(driver.setWriteback(true), is('not-negotiated'));
  // Caller misuse stays a RangeError: not whole sectors, beyond the disk.
  await assert.rejects(driver.read(1, new Uint8Array(512)), RangeError);
  await assert.rejects(driver.read(1 << 16, new Uint8Array(512)), RangeError);
});
