// Block clauses our device or driver keeps where no peer can catch us: each test shows it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { Monitor } from '../src/monitor/monitor.js';
import { LoopbackTransport } from '../src/transports/loopback/loopback.js';
import { BlkDevice, BlkConfig, BlkStatus, BlkType } from '../src/devices/blk/device.js';
import { MemoryBlockStorage, type BlockStorage } from '../src/devices/blk/storage.js';
import { FileBlockStorage } from '../src/node/file-block.js';
import { BlkDriver } from '../src/drivers/blk.js';
import { DeviceError } from '../src/device/errors.js';
import { isVirtioTsError } from '../src/errors.js';
import { Feature } from '../src/spec/constants.js';
import { bit, hasFeature } from '../src/spec/features.js';
import { BLK_FEATURES } from '../src/spec/blk.js';
import { until } from './wait.js';

function clauseTest(ids: string[], title: string, fn: () => Promise<void>): void {
  for (const format of ['split', 'packed'] as const) {
    test(`${ids.join(', ')}: ${title} (${format} ring)`, async () => {
      FORMAT = format;
      await fn();
      FORMAT = 'split';
    });
  }
}

/** Ring format for the hand-written requests below; every such test runs on both. */
let FORMAT: 'split' | 'packed' = 'split';

async function live(backend: BlockStorage = new MemoryBlockStorage(1 << 20), readOnly = false) {
  const devMon = new Monitor({ mode: 'tolerant' });
  const device = new BlkDevice({ backend, monitor: devMon, readOnly, maxSegments: 2 });
  if (FORMAT === 'split') device.withholdFeatures(bit(Feature.RING_PACKED));
  const transport = new LoopbackTransport(device, GuestMemory.create(4 << 20));
  const driver = new BlkDriver(transport, { monitor: new Monitor() });
  await driver.start();
  return { device, transport, driver, devMon };
}

/** Sends one hand-written request and returns its status byte. */
async function raw(r: Awaited<ReturnType<typeof live>>, type: number, sector: number, out: Uint8Array, inn: number): Promise<number> {
  const d = r.driver;
  const q = d.queues[0];
  const m = r.transport.memory;
  const base = d.allocator.alloc(16 + out.length + inn + 1, 16);
  m.writeU32(base, type);
  m.writeU64(base + 8, BigInt(sector));
  m.write(base + 16, out);
  m.writeU8(base + 16 + out.length + inn, 0xff);
  q.begin().addReadable(base, 16);
  if (out.length > 0) q.addReadable(base + 16, out.length);
  if (inn > 0) q.addWritable(base + 16 + out.length, inn);
  q.addWritable(base + 16 + out.length + inn, 1);
  let done!: () => void;
  const answered = new Promise<void>((res) => (done = res));
  q.commit({ mem: base, dataLen: out.length + inn, resolve: () => done(), reject: () => done() }, { indirect: false });
  d.kick(q);
  await answered;
  return m.readU8(base + 16 + out.length + inn);
}

function segment(sector: number, sectors: number, flags: number): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, BigInt(sector), true);
  v.setUint32(8, sectors, true);
  v.setUint32(12, flags, true);
  return b;
}

clauseTest(['blk.device-operation.device.4'], 'a read-only disk writes nothing, whatever the request', async () => {
  const backend = new MemoryBlockStorage(1 << 20);
  backend.bytes.fill(0x5a);
  const r = await live(backend, true);
  assert.ok(hasFeature(r.driver.features, BLK_FEATURES.RO));
  assert.equal(await raw(r, BlkType.OUT, 0, new Uint8Array(512), 0), BlkStatus.IOERR);
  assert.equal(await raw(r, BlkType.WRITE_ZEROES, 0, segment(0, 8, 0), 0), BlkStatus.IOERR);
  assert.equal(await raw(r, BlkType.SECURE_ERASE, 0, segment(0, 8, 0), 0), BlkStatus.IOERR);
  assert.ok(backend.bytes.every((b) => b === 0x5a));
});

clauseTest(['blk.device-operation.device.5', 'blk.device-operation.device.6'], 'unknown segment flags, or unmap on a discard, are UNSUPP', async () => {
  const r = await live();
  assert.equal(await raw(r, BlkType.WRITE_ZEROES, 0, segment(0, 1, 0x2), 0), BlkStatus.UNSUPP);
  assert.equal(await raw(r, BlkType.DISCARD, 0, segment(0, 1, 0x80), 0), BlkStatus.UNSUPP);
  assert.equal(await raw(r, BlkType.DISCARD, 0, segment(0, 1, 1), 0), BlkStatus.UNSUPP);
  assert.equal(await raw(r, BlkType.DISCARD, 0, segment(0, 1, 0), 0), BlkStatus.OK);
});

clauseTest(['blk.device-operation.device.9'], 'after write zeroes, with or without unmap, the range reads as zeroes', async () => {
  const backend = new MemoryBlockStorage(1 << 20);
  backend.bytes.fill(7);
  const r = await live(backend);
  await r.driver.writeZeroes(0, 4096);
  await r.driver.writeZeroes(8192, 4096, { unmap: true });
  const a = new Uint8Array(4096);
  const b = new Uint8Array(4096);
  await r.driver.read(0, a);
  await r.driver.read(8192, b);
  assert.ok(a.every((x) => x === 0) && b.every((x) => x === 0));
  assert.equal(backend.bytes[4096], 7, 'outside the ranges nothing changed');
});

clauseTest(['blk.device-operation.device.10'], 'write_zeroes_may_unmap is clear: no backend here deallocates', async () => {
  const r = await live();
  assert.equal(Number(await r.transport.readConfig(BlkConfig.writeZeroesMayUnmap, 1)), 0);
});

clauseTest(['blk.device-operation.device.13'], 'in writethrough mode a write is on stable storage (fdatasync) before it completes', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-blk-'));
  try {
    writeFileSync(join(dir, 'd.img'), new Uint8Array(1 << 20));
    const backend = await FileBlockStorage.open(join(dir, 'd.img'));
    let syncedBeforeStatus = 0;
    const flush = backend.flush.bind(backend);
    backend.flush = async () => {
      await flush();
      syncedBeforeStatus++;
    };
    const r = await live(backend);
    await r.driver.setWriteback(false);
    const before = syncedBeforeStatus;
    await r.driver.write(0, new Uint8Array(4096).fill(3));
    assert.equal(syncedBeforeStatus, before + 1, 'the write completed after its fdatasync');
    await backend.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

clauseTest(['blk.device-operation.device.18'], 'zone requests without VIRTIO_BLK_F_ZONED are UNSUPP', async () => {
  const r = await live();
  for (const type of [15, 16, 18, 20, 22, 24, 26]) assert.equal(await raw(r, type, 0, new Uint8Array(0), type === 16 ? 512 : 0), BlkStatus.UNSUPP, `type ${type}`);
});

clauseTest(['blk.device-operation.device.2', 'blk.device-operation.driver.1'], 'a capacity change is notified, and the driver reads the new capacity', async () => {
  const backend = new MemoryBlockStorage(1 << 20);
  const r = await live(backend);
  assert.equal(r.driver.capacity, 2048);
  (backend as unknown as { bytes: Uint8Array }).bytes = new Uint8Array(2 << 20);
  r.device.resize();
  await until(() => r.driver.capacity !== 2048, 'the driver to handle the notification');
  assert.equal(r.driver.capacity, 4096);
});

clauseTest(['blk.device-init.device.5', 'blk.device-operation.device.16'], 'neither VIRTIO_BLK_F_ZONED nor VIRTIO_BLK_F_LIFETIME is offered (no zones, no lifetime metrics)', async () => {
  const r = await live();
  assert.ok(!hasFeature(r.driver.offered, BLK_FEATURES.ZONED));
  assert.ok(!hasFeature(r.driver.offered, BLK_FEATURES.LIFETIME));
  assert.equal(await raw(r, BlkType.GET_LIFETIME, 0, new Uint8Array(0), 8), BlkStatus.UNSUPP);
});

clauseTest(['blk.device-init.driver.3'], 'with FLUSH but no CONFIG_WCE the driver assumes a writeback cache', async () => {
  const backend = new MemoryBlockStorage(1 << 20);
  const device = new BlkDevice({ backend });
  device.withholdFeatures(bit(BLK_FEATURES.CONFIG_WCE));
  const driver = new BlkDriver(new LoopbackTransport(device, GuestMemory.create(4 << 20)));
  await driver.start();
  assert.equal(await driver.writeback(), true);
});

test('seg_max: 126 by default whatever the queue size above 128, so the chains of a driver (seg_max + 2) fit the default queue of QEMU (128); --seg-max overrides', async () => {
  const segMax = async (o: { queueMaxSize: number; segMax?: number }) => {
    const device = new BlkDevice({ backend: new MemoryBlockStorage(1 << 20, false, 's'), ...o });
    const t = new LoopbackTransport(device, GuestMemory.create(1 << 16));
    return Number(await t.readConfig(12, 4));
  };
  assert.equal(await segMax({ queueMaxSize: 1024 }), 126);
  assert.equal(await segMax({ queueMaxSize: 32768 }), 126);
  assert.equal(await segMax({ queueMaxSize: 128 }), 126);
  assert.equal(await segMax({ queueMaxSize: 64 }), 62, 'a smaller largest queue: its size - 2');
  assert.equal(await segMax({ queueMaxSize: 2 }), 1, 'at least one segment');
  assert.equal(await segMax({ queueMaxSize: 1024, segMax: 1022 }), 1022);
});

test('block config layout is byte-exact (5.2.4)', async () => {
  const backend = new MemoryBlockStorage(64 << 20, false, 'serial');
  const device = new BlkDevice({ backend, numQueues: 3, queueMaxSize: 128, sizeMax: 65536, maxSegments: 2 });
  const t = new LoopbackTransport(device, GuestMemory.create(1 << 20));
  const cfg = async (off: number, size: 1 | 2 | 4 | 8) => Number(await t.readConfig(off, size));
  assert.equal(await cfg(0, 8), (64 << 20) / 512); // capacity
  assert.equal(await cfg(8, 4), 65536); // size_max
  assert.equal(await cfg(12, 4), 126); // seg_max = queue size - 2
  assert.equal(await cfg(16, 2), Math.floor(131072 / (16 * 63))); // geometry.cylinders
  assert.equal(await cfg(18, 1), 16); // heads
  assert.equal(await cfg(19, 1), 63); // sectors
  assert.equal(await cfg(20, 4), 512); // blk_size
  assert.equal(await cfg(26, 2), 1); // topology.min_io_size
  const drv = new BlkDriver(t);
  await drv.start();
  assert.deepEqual(drv.topology, { physicalBlockExp: 0, alignmentOffset: 0, minIoSize: 1, optIoSize: 0 });
  await drv.shutdown();
  assert.equal(await cfg(32, 1), 1); // writeback
  assert.equal(await cfg(33, 1), 0); // unused0
  assert.equal(await cfg(34, 2), 3); // num_queues
  assert.equal(await cfg(40, 4), 2); // max_discard_seg
  assert.equal(await cfg(52, 4), 2); // max_write_zeroes_seg
  assert.equal(await cfg(56, 1), 0); // write_zeroes_may_unmap
  for (const off of [57, 58, 59]) assert.equal(await cfg(off, 1), 0); // unused1
  assert.equal(await cfg(64, 4), 2); // max_secure_erase_seg
  const offered = await t.getDeviceFeatures();
  for (const b of ['SIZE_MAX', 'SEG_MAX', 'GEOMETRY', 'BLK_SIZE', 'FLUSH', 'TOPOLOGY', 'CONFIG_WCE', 'MQ', 'DISCARD', 'WRITE_ZEROES', 'SECURE_ERASE'] as const) {
    assert.ok(hasFeature(offered, BLK_FEATURES[b]), b);
  }
  assert.ok(!hasFeature(offered, BLK_FEATURES.RO));
});

test('a live shrink: requests past the new end fail with IOERR; only those past the capacity the driver was shown are verdicts', async () => {
  const backend = new MemoryBlockStorage(1 << 20); // 2048 sectors
  const r = await live(backend);
  (backend as unknown as { bytes: Uint8Array }).bytes = new Uint8Array(512 << 10); // 1024 sectors
  r.device.resize();
  // Sent before the driver handled the notification: inside the old capacity, no verdict.
  assert.equal(await raw(r, BlkType.IN, 1500, new Uint8Array(0), 4096), BlkStatus.IOERR);
  assert.equal(await raw(r, BlkType.OUT, 1020, new Uint8Array(4096), 0), BlkStatus.IOERR, 'a write across the new end');
  assert.deepEqual(r.devMon.verdicts.map((v) => v.clause), []);
  assert.equal(await raw(r, BlkType.IN, 1016, new Uint8Array(0), 4096), BlkStatus.OK, 'inside the new end');
  // Past anything the driver was ever shown: a verdict, as before.
  assert.equal(await raw(r, BlkType.IN, 2048, new Uint8Array(0), 512), BlkStatus.IOERR);
  assert.deepEqual(r.devMon.verdicts.map((v) => v.clause), ['blk.device-operation.driver.2']);
  await until(() => r.driver.capacity !== 2048, 'the driver to handle the notification');
  assert.equal(r.driver.capacity, 1024, 'the driver read the new capacity');
});

test('FileBlockStorage.refreshSize measures the file again; a file below one sector keeps the old size', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-blk-'));
  try {
    const path = join(dir, 'd.img');
    writeFileSync(path, new Uint8Array(1 << 20));
    const backend = await FileBlockStorage.open(path, { readOnly: true });
    truncateSync(path, (3 << 20) + 100); // rounded down to whole sectors
    assert.deepEqual(await backend.refreshSize(), { before: 1 << 20, after: 3 << 20 });
    assert.equal(backend.size, 3 << 20);
    truncateSync(path, 100);
    await assert.rejects(backend.refreshSize(), (e: unknown) => isVirtioTsError(e, 'storage-too-small') && e instanceof DeviceError);
    assert.equal(backend.size, 3 << 20);
    await backend.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
