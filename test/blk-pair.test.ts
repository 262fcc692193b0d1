// Block driver <-> block device over loopback, both ring formats, memory and file backends.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { Monitor } from '../src/monitor/monitor.js';
import { LoopbackTransport } from '../src/transports/loopback/loopback.js';
import { BlkDevice } from '../src/devices/blk/device.js';
import { MemoryBlockStorage, type BlockStorage } from '../src/devices/blk/storage.js';
import { FileBlockStorage } from '../src/node/file-block.js';
import { BlkDriver, BlkError } from '../src/drivers/blk.js';
import { Feature } from '../src/spec/constants.js';
import { bit, TRANSPORT_FEATURES_SPLIT } from '../src/spec/features.js';

const FORMATS = {
  split: TRANSPORT_FEATURES_SPLIT,
  packed: TRANSPORT_FEATURES_SPLIT | bit(Feature.RING_PACKED) | bit(Feature.IN_ORDER),
};

function pattern(seed: number, len: number): Uint8Array {
  const b = new Uint8Array(len);
  let x = seed * 2654435761 + 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

async function pair(backend: BlockStorage, accept: bigint, options: { numQueues?: number; mode?: 'sync' | 'async' } = {}) {
  const devMon = new Monitor();
  const drvMon = new Monitor();
  const device = new BlkDevice({ backend, monitor: devMon, numQueues: options.numQueues ?? 1, maxSegments: 4 });
  if (!(accept & bit(Feature.RING_PACKED))) device.withholdFeatures(bit(Feature.RING_PACKED));
  const transport = new LoopbackTransport(device, GuestMemory.create(16 << 20), { mode: options.mode ?? 'async' });
  const driver = new BlkDriver(transport, { monitor: drvMon, transportFeatures: accept, numQueues: options.numQueues ?? 1 });
  await driver.start();
  return { device, driver, devMon, drvMon };
}

for (const [format, accept] of Object.entries(FORMATS)) {
  test(`block pair (${format}, memory backend, 2 queues): every request type, data byte-exact, no verdicts`, async () => {
    const backend = new MemoryBlockStorage(4 << 20, false, 'disk-0123456789-abcdef-too-long');
    const { device, driver, devMon, drvMon } = await pair(backend, accept, { numQueues: 2 });
    assert.equal(driver.capacity, (4 << 20) / 512);
    assert.equal(device.activeQueues, 2);
    // Many writes in flight at once, then read everything back.
    const writes = Array.from({ length: 64 }, (_, i) => driver.write(i * 65536, pattern(i, 65536)));
    await Promise.all(writes);
    await driver.flush();
    assert.ok(backend.flushes >= 1);
    for (let i = 0; i < 64; i += 7) {
      const back = new Uint8Array(65536);
      await driver.read(i * 65536, back);
      assert.deepEqual(back, pattern(i, 65536));
      assert.deepEqual(backend.bytes.subarray(i * 65536, (i + 1) * 65536), pattern(i, 65536));
    }
    // A large I/O is split by size_max x seg_max.
    const big = pattern(99, 3 << 20);
    await driver.write(512 * 1024, big);
    const bigBack = new Uint8Array(3 << 20);
    await driver.read(512 * 1024, bigBack);
    assert.deepEqual(bigBack, big);
    await driver.writeZeroes(0, 8192);
    const z = new Uint8Array(8192);
    await driver.read(0, z);
    assert.ok(z.every((b) => b === 0), 'blk.device-operation.device.9: zeroes read back');
    await driver.writeZeroes(8192, 4096, { unmap: true });
    await driver.discard(65536, 65536);
    await driver.secureErase(131072, 512);
    assert.equal(await driver.getId(), 'disk-0123456789-abcd');
    await assert.rejects(driver.read(4 << 20, new Uint8Array(512)), RangeError);
    assert.deepEqual([...devMon.verdicts, ...drvMon.verdicts], []);
    assert.ok(device.stats.ok > 60);
    assert.equal(device.stats.ioerr + device.stats.unsupp, 0);
  });

  test(`block pair (${format}, file backend): what the driver writes is in the file; FLUSH is an fdatasync`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-blk-'));
    try {
      const path = join(dir, 'disk.img');
      writeFileSync(path, new Uint8Array(2 << 20));
      const backend = await FileBlockStorage.open(path);
      const { device, driver, devMon, drvMon } = await pair(backend, accept);
      const data = pattern(7, 128 * 1024);
      await driver.write(1 << 20, data);
      const syncsBefore = backend.syncs;
      await driver.flush();
      assert.equal(backend.syncs, syncsBefore + 1, 'a FLUSH costs one fdatasync before its status');
      const onDisk = readFileSync(path);
      assert.deepEqual(new Uint8Array(onDisk.subarray(1 << 20, (1 << 20) + data.length)), data);
      // Writethrough: every write is synced before it completes.
      await driver.setWriteback(false);
      assert.equal(await driver.writeback(), false);
      const before = backend.syncs;
      await driver.write(0, pattern(8, 4096));
      assert.equal(backend.syncs, before + 1);
      assert.equal(device.writebackMode, false);
      // The file changed behind the disk's back: the driver reads what is there.
      const fresh = pattern(9, 4096);
      writeFileSync(path, Buffer.concat([Buffer.from(fresh), onDisk.subarray(4096)]));
      const back = new Uint8Array(4096);
      await driver.read(0, back);
      assert.deepEqual(back, fresh);
      assert.deepEqual([...devMon.verdicts, ...drvMon.verdicts], []);
      await backend.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test(`block pair (${format}): a read-only disk fails writes with IOERR and keeps its data`, async () => {
    const backend = new MemoryBlockStorage(1 << 20, true);
    backend.bytes.set(pattern(1, 4096));
    const { driver, devMon } = await pair(backend, accept, { mode: 'sync' });
    assert.equal(driver.readOnly, true);
    await assert.rejects(driver.write(0, new Uint8Array(4096)), (e: unknown) => e instanceof BlkError && e.status === 1);
    await assert.rejects(driver.writeZeroes(0, 4096), BlkError);
    assert.deepEqual(backend.bytes.subarray(0, 4096), pattern(1, 4096));
    const back = new Uint8Array(4096);
    await driver.read(0, back);
    assert.deepEqual(back, pattern(1, 4096));
    assert.deepEqual(devMon.verdicts, []);
  });
}
