// The block driver's checks of the device (issue 17): a misbehaving block device
// (src/testing/blk-peers.ts) breaks exactly one clause; the driver's monitor names it, and in
// strict mode the driver gives up on a MUST. The same requests to the project's BlkDevice
// (and to the sloppy device with nothing wrong switched on) draw no verdict.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Monitor } from '../../src/monitor/monitor.js';
import type { VirtioDevice } from '../../src/device/device.js';
import { BlkDevice } from '../../src/devices/blk/device.js';
import { MemoryBlockStorage } from '../../src/devices/blk/storage.js';
import { BlkDriver } from '../../src/drivers/blk.js';
import { LoopbackTransport } from '../../src/transports/loopback/loopback.js';
import { BLK_FEATURES, BlkStatus, BlkType } from '../../src/spec/blk.js';
import { Feature } from '../../src/spec/constants.js';
import { bit } from '../../src/spec/features.js';
import { sloppyBlkDevice, type SloppyBlkOptions, type SloppyBlkType } from '../../src/testing/blk-peers.js';
import { until, turns } from '../wait.js';

const ZONE_OPEN = 18;

async function pair(make: (m: Monitor) => VirtioDevice, deviceMode: 'strict' | 'tolerant' = 'strict') {
  const devMon = new Monitor({ mode: deviceMode });
  const drvMon = new Monitor();
  const device = make(devMon);
  device.withholdFeatures(bit(Feature.RING_PACKED));
  const driver = new BlkDriver(new LoopbackTransport(device, GuestMemory.create(4 << 20)), { monitor: drvMon });
  await driver.start();
  return { device, driver, devMon, drvMon, clauses: () => drvMon.verdicts.map((v) => v.clause) };
}

const sloppy = (o: SloppyBlkOptions) => (m: Monitor) => sloppyBlkDevice(m, o);
const real = (m: Monitor) => new BlkDevice({ storage: new MemoryBlockStorage(1 << 20), monitor: m, maxSegments: 1 });

function segment(sector: number, sectors: number, flags: number): Uint8Array {
  const s = new Uint8Array(16);
  const v = new DataView(s.buffer);
  v.setBigUint64(0, BigInt(sector), true);
  v.setUint32(8, sectors, true);
  v.setUint32(12, flags, true);
  return s;
}

function expectGaveUp(p: Awaited<ReturnType<typeof pair>>, clause: string): void {
  assert.deepEqual(p.clauses(), [clause]);
  assert.equal(p.drvMon.verdicts[0].side, 'device');
  assert.equal(p.driver.state, 'broken', 'strict: the driver gives up on the device');
  assert.deepEqual(p.devMon.verdicts, [], 'nothing against the driver');
}

test('blk.device-operation.device.18: without ZONED the device answers a ZONE_OPEN with OK', async () => {
  const p = await pair(sloppy({ servesEverything: true }));
  const r = await p.driver.rawRequest(ZONE_OPEN, 0);
  assert.equal(r.status, BlkStatus.OK);
  expectGaveUp(p, 'blk.device-operation.device.18');
});

test('blk.device-operation.device.5: the device serves a write zeroes whose segment has an unknown flag (0x2)', async () => {
  const p = await pair(sloppy({ servesEverything: true }));
  await p.driver.rawRequest(BlkType.WRITE_ZEROES, 0, { out: segment(0, 1, 2) });
  expectGaveUp(p, 'blk.device-operation.device.5');
});

test('blk.device-operation.device.6: the device serves a discard with the unmap flag set', async () => {
  const p = await pair(sloppy({ servesEverything: true }));
  // The request breaks blk.device-operation.driver.14 on purpose: a probe of the device's answer.
  await p.driver.rawRequest(BlkType.DISCARD, 0, { out: segment(0, 1, 1) });
  expectGaveUp(p, 'blk.device-operation.device.6');
});

test('blk.device-operation.device.16: the device offers LIFETIME and reports every metric undefined', async () => {
  const p = await pair(sloppy({ lifetime: [0, 0, 0] }));
  await p.driver.lifetime();
  expectGaveUp(p, 'blk.device-operation.device.16');
});

test('blk.device-operation.device.17: the device reports a reserved lifetime estimate (12)', async () => {
  const p = await pair(sloppy({ lifetime: [1, 12, 1] }));
  await p.driver.lifetime();
  expectGaveUp(p, 'blk.device-operation.device.17');
});

test('blk.device-operation.device.2: the disk shrinks with no configuration change notification', async () => {
  const p = await pair(sloppy({}));
  (p.device.type as SloppyBlkType).shrinkSilently(1024);
  await assert.rejects(p.driver.read(2000 * 512, new Uint8Array(512)));
  await until(() => p.drvMon.verdicts.length > 0, 'the capacity re-read');
  assert.deepEqual(p.clauses(), ['blk.device-operation.device.2']);
  assert.equal(p.drvMon.verdicts[0].severity, 'warning', 'a SHOULD: recorded');
  assert.equal(p.driver.capacity, 1024, 'the driver goes on with the new capacity');
  assert.equal(p.driver.state, 'live');
});

test('blk.device-operation.device.9: after a completed write zeroes the device still returns the old data', async () => {
  const p = await pair(sloppy({ keepsDataOnWriteZeroes: true }));
  await p.driver.write(0, new Uint8Array(4096).fill(7));
  await p.driver.writeZeroes(0, 4096);
  const back = new Uint8Array(4096);
  await p.driver.read(0, back);
  expectGaveUp(p, 'blk.device-operation.device.9');
});

test('blk.device-operation.device.9, read into a BlkBuffer (the data is judged where the device put it)', async () => {
  const p = await pair(sloppy({ keepsDataOnWriteZeroes: true }));
  await p.driver.write(0, new Uint8Array(4096).fill(7));
  await p.driver.writeZeroes(0, 4096);
  const batch = p.driver.batch({ depth: 1 });
  assert.ok(batch.readBuffer(0, p.driver.buffer(4096), 1));
  batch.submit();
  await until(() => batch.ready === 1, 'the read');
  expectGaveUp(p, 'blk.device-operation.device.9');
});

// ------------------------------------------------------------------ the well-behaved devices

test('write zeroes, then writes over part of the range, then reads, on a device that zeroes: no verdict', async () => {
  const p = await pair(sloppy({}));
  await p.driver.write(0, new Uint8Array(8192).fill(7));
  await p.driver.writeZeroes(0, 8192);
  const back = new Uint8Array(8192).fill(1);
  await p.driver.read(0, back); // judged: all zero
  assert.ok(back.every((b) => b === 0));
  await p.driver.write(1024, new Uint8Array(512).fill(9)); // sector 2 written again: forgotten
  await p.driver.read(0, back);
  assert.equal(back[1024], 9);
  assert.equal(back[0] | back[4096], 0);
  // A read sent together with a write of the same sectors may see either: never judged.
  await p.driver.writeZeroes(0, 8192);
  await Promise.all([p.driver.write(0, new Uint8Array(512).fill(5)), p.driver.read(0, new Uint8Array(512))]);
  assert.deepEqual(p.drvMon.verdicts, []);
});


test('the project block device refuses zone requests, unknown segment flags and unmap on a discard with UNSUPP: no verdict', async () => {
  // Tolerant device: the unmap discard below breaks blk.device-operation.driver.14 on purpose.
  const p = await pair(real, 'tolerant');
  assert.equal((await p.driver.rawRequest(ZONE_OPEN, 0)).status, BlkStatus.UNSUPP);
  assert.equal((await p.driver.rawRequest(BlkType.WRITE_ZEROES, 0, { out: segment(0, 1, 2) })).status, BlkStatus.UNSUPP);
  assert.equal((await p.driver.rawRequest(BlkType.DISCARD, 0, { out: segment(0, 1, 1) })).status, BlkStatus.UNSUPP);
  assert.equal((await p.driver.rawRequest(BlkType.WRITE_ZEROES, 0, { out: segment(0, 1, 1) })).status, BlkStatus.OK, 'unmap is a write zeroes flag');
  assert.deepEqual(p.drvMon.verdicts, []);
  assert.equal(p.driver.state, 'live');
  // The driver's requests broke blk.device-operation.driver.14 (the unmap discard) on purpose.
  assert.deepEqual(p.devMon.verdicts.map((v) => v.clause), ['blk.device-operation.driver.14']);
});

test('a device with real lifetime metrics, and one that refuses what it must: no verdict', async () => {
  const p = await pair(sloppy({ lifetime: [1, 3, 11] }));
  assert.deepEqual(await p.driver.lifetime(), { preEolInfo: 1, slcEstimate: 3, mlcEstimate: 11 });
  assert.equal((await p.driver.rawRequest(ZONE_OPEN, 0)).status, BlkStatus.UNSUPP);
  assert.equal((await p.driver.rawRequest(BlkType.SECURE_ERASE, 0, { out: segment(0, 1, 4) })).status, BlkStatus.UNSUPP);
  assert.deepEqual(p.drvMon.verdicts, []);
});

test('a disk that shrinks with a notification, and a read past the new end sent before the driver re-read: no verdict', async () => {
  const p = await pair(sloppy({}));
  (p.device.type as SloppyBlkType).shrink(1024);
  // Same turn: the driver still holds the old capacity, so the read goes out and fails.
  await assert.rejects(p.driver.read(2000 * 512, new Uint8Array(512)));
  await until(() => p.driver.capacity === 1024, 'the driver to re-read the capacity');
  await turns();
  assert.deepEqual(p.drvMon.verdicts, []);
});
