// The block request path (issue 12): the synchronous path for storages that answer at once,
// the asynchronous path for those that do not (or decline a request), request state pooled per
// queue entry, FLUSH and writethrough ordering on both paths, and the driver's batch API.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileBlockStorage } from '../src/node/file-block.js';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { Monitor } from '../src/monitor/monitor.js';
import { LoopbackTransport } from '../src/transports/loopback/loopback.js';
import { BlkDevice, BlkStatus, BlkType } from '../src/devices/blk/device.js';
import { MemoryBlockStorage, type BlockStorage } from '../src/devices/blk/storage.js';
import { BlkBatch, BlkBuffer, BlkDriver, BlkError } from '../src/drivers/blk.js';
import { DriverError } from '../src/driver/driver.js';
import { Feature } from '../src/spec/constants.js';
import { bit, TRANSPORT_FEATURES_SPLIT } from '../src/spec/features.js';
import { turns, until } from './wait.js';
import { pattern } from './console-helpers.js';

const FORMATS = {
  split: TRANSPORT_FEATURES_SPLIT,
  packed: TRANSPORT_FEATURES_SPLIT | bit(Feature.RING_PACKED) | bit(Feature.IN_ORDER),
} as const;
type Format = keyof typeof FORMATS;

/** A storage of the user's own with only the promise methods (the asynchronous path), whose answers wait until released. */
class GatedStorage implements BlockStorage {
  readonly disk: MemoryBlockStorage;
  readonly log: string[] = [];
  held = 0;
  private gates: (() => void)[] = [];
  gated = false;
  constructor(
    size: number,
    readonly readOnly = false,
  ) {
    this.disk = new MemoryBlockStorage(size, readOnly);
  }
  get size(): number {
    return this.disk.size;
  }
  get serial(): string {
    return 'gated';
  }
  private async gate(): Promise<void> {
    if (!this.gated) return;
    this.held++;
    await new Promise<void>((res) => this.gates.push(res));
    this.held--;
  }
  /** Lets every held answer go. */
  release(): void {
    for (const g of this.gates.splice(0)) g();
  }
  async read(offset: number, views: readonly Uint8Array[]): Promise<void> {
    await this.gate();
    this.log.push(`read ${offset}`);
    await this.disk.read(offset, views);
  }
  async write(offset: number, views: readonly Uint8Array[]): Promise<void> {
    await this.gate();
    this.log.push(`write ${offset}`);
    await this.disk.write(offset, views);
  }
  async flush(): Promise<void> {
    await this.gate();
    this.log.push('flush');
  }
  async writeZeroes(offset: number, length: number): Promise<void> {
    await this.gate();
    this.log.push(`zeroes ${offset}`);
    await this.disk.writeZeroes(offset, length);
  }
}

/** A memory disk that answers some requests synchronously and declines others (so they go the asynchronous way). */
class MixedStorage extends MemoryBlockStorage {
  readonly calls = { readSync: 0, read: 0, writeSync: 0, write: 0, flushSync: 0, flush: 0 };
  constructor(
    size: number,
    /** Whether a synchronous call for this byte offset is declined (flushes: offset -1). */
    readonly decline: (op: 'read' | 'write' | 'flush', offset: number) => boolean,
  ) {
    super(size);
  }
  override readSync(offset: number, into: Uint8Array, at: number, length: number): boolean {
    this.calls.readSync++;
    if (this.decline('read', offset)) {
      into.fill(0xee, at, at + length); // a partial job before declining must do no harm
      return false;
    }
    return super.readSync(offset, into, at, length);
  }
  override async read(offset: number, views: readonly Uint8Array[]): Promise<void> {
    this.calls.read++;
    await turns(1);
    return super.read(offset, views);
  }
  override writeSync(offset: number, from: Uint8Array, at: number, length: number): boolean {
    this.calls.writeSync++;
    if (this.decline('write', offset)) return false;
    return super.writeSync(offset, from, at, length);
  }
  override async write(offset: number, views: readonly Uint8Array[]): Promise<void> {
    this.calls.write++;
    await turns(1);
    return super.write(offset, views);
  }
  override flushSync(): boolean {
    this.calls.flushSync++;
    if (this.decline('flush', -1)) return false;
    return super.flushSync();
  }
  override async flush(): Promise<void> {
    this.calls.flush++;
    await turns(1);
    this.flushes++;
  }
}

interface PairOptions {
  format?: Format;
  mode?: 'sync' | 'async';
  queueSize?: number;
  maxInFlight?: number;
  readOnly?: boolean;
  tolerant?: boolean;
}

async function pair(storage: BlockStorage, o: PairOptions & { extra?: bigint } = {}) {
  const format = o.format ?? 'split';
  const devMon = new Monitor(o.tolerant ? { mode: 'tolerant' } : {});
  const drvMon = new Monitor();
  const device = new BlkDevice({ storage, monitor: devMon, maxSegments: 2, maxInFlight: o.maxInFlight, readOnly: o.readOnly });
  if (format === 'split') device.withholdFeatures(bit(Feature.RING_PACKED));
  const transport = new LoopbackTransport(device, GuestMemory.create(8 << 20), { mode: o.mode ?? 'async' });
  const driver = new BlkDriver(transport, { monitor: drvMon, transportFeatures: FORMATS[format] | (o.extra ?? 0n), queueSize: o.queueSize });
  await driver.start();
  assert.equal(device.ringFormat, format);
  return { device, transport, driver, devMon, drvMon, mem: transport.memory };
}

type Pair = Awaited<ReturnType<typeof pair>>;

/** One hand-made request (header | out | in | status) on queue 0, kicked; `answered` tells whether (and how) it came back. */
function submitRaw(p: Pair, type: number, sector: number, out: Uint8Array, inn: number) {
  const d = p.driver;
  const q = d.queues[0];
  const m = p.mem;
  const base = d.allocator.alloc(16 + out.length + inn + 1, 16);
  m.writeU32(base, type);
  m.writeU32(base + 4, 0);
  m.writeU32(base + 8, sector >>> 0);
  m.writeU32(base + 12, Math.floor(sector / 2 ** 32));
  m.write(base + 16, out);
  const statusAddr = base + 16 + out.length + inn;
  m.writeU8(statusAddr, 0xff);
  q.begin().addReadable(base, 16);
  if (out.length > 0) q.addReadable(base + 16, out.length);
  if (inn > 0) q.addWritable(base + 16 + out.length, inn);
  q.addWritable(statusAddr, 1);
  const r = { answered: false, status: -1, len: -1, data: () => m.bytes(base + 16 + out.length, inn).slice() };
  const token = {
    mem: base,
    dataLen: out.length + inn,
    resolve: (status: number) => {
      r.answered = true;
      r.status = status;
      r.len = q.lastLen;
    },
    reject: () => {
      r.answered = true;
    },
  };
  assert.ok(q.commit(token, { indirect: false }) >= 0);
  d.kick(q);
  return r;
}

/**
 * One hand-made request whose device-readable part (header | out) is cut into descriptors at
 * `cuts` (byte positions in it), kicked: the header in a buffer of its own, split across
 * buffers, or sharing a buffer with the payload. The pieces lie apart, with 0xee bytes between
 * them, so a reader that runs past a piece reads the wrong bytes. Answered inside the kick
 * (sync transport).
 */
function submitCut(p: Pair, type: number, sector: number, out: Uint8Array, inn: number, cuts: number[]) {
  const d = p.driver;
  const q = d.queues[0];
  const m = p.mem;
  const GAP = 64;
  const readable = new Uint8Array(16 + out.length);
  const v = new DataView(readable.buffer);
  v.setUint32(0, type, true);
  v.setUint32(8, sector >>> 0, true);
  v.setUint32(12, Math.floor(sector / 2 ** 32), true);
  readable.set(out, 16);
  const edges = [0, ...cuts, readable.length];
  const size = readable.length + GAP * edges.length + inn + 1;
  const base = d.allocator.alloc(size, 16);
  m.fill(base, size, 0xee);
  q.begin();
  let at = base;
  for (let i = 0; i + 1 < edges.length; i++) {
    const piece = readable.subarray(edges[i], edges[i + 1]);
    m.write(at, piece);
    q.addReadable(at, piece.length);
    at += piece.length + GAP;
  }
  const dataAddr = at;
  const statusAddr = dataAddr + inn;
  if (inn > 0) q.addWritable(dataAddr, inn);
  q.addWritable(statusAddr, 1);
  let status = -1;
  // The driver reads the status byte at mem + 16 + dataLen.
  const token = { mem: statusAddr - 16, dataLen: 0, resolve: (s: number) => void (status = s), reject: () => undefined };
  assert.ok(q.commit(token, { indirect: false }) >= 0);
  d.kick(q);
  const data = m.bytes(dataAddr, inn).slice();
  d.allocator.release(base);
  return { status, data };
}

for (const format of ['split', 'packed'] as const) {
  test(`the request header is read alike wherever it lies (${format}): its own buffer, split across buffers, or sharing one with the payload`, async () => {
    const storage = new MemoryBlockStorage(1 << 20);
    storage.bytes.set(pattern(3, 1 << 20));
    const p = await pair(storage, { format, mode: 'sync', tolerant: true });
    const layouts: [string, (n: number) => number[]][] = [
      ['header alone', (n) => (n > 0 ? [16] : [])],
      ['header and payload in one buffer', () => []],
      ['header split 4 + 12', (n) => (n > 0 ? [4, 16] : [4])],
      ['header split 8 + 8', (n) => (n > 0 ? [8, 16] : [8])],
      ['header split 12 + 4 + payload', () => [12]],
      ['header in bytes of 1', (n) => [...Array.from({ length: 15 }, (_, i) => i + 1), ...(n > 0 ? [16] : [])]],
    ];
    for (const [what, cuts] of layouts) {
      // IN: the data read from sector 9.
      const r = submitCut(p, BlkType.IN, 9, new Uint8Array(0), 1024, cuts(0));
      assert.equal(r.status, BlkStatus.OK, `${what}: IN status`);
      assert.deepEqual(r.data, storage.bytes.subarray(9 * 512, 9 * 512 + 1024), `${what}: IN data`);
      // A sector past 2^32: the high word of the header's sector is read (IOERR: beyond the disk).
      assert.equal(submitCut(p, BlkType.IN, 2 ** 32 + 9, new Uint8Array(0), 512, cuts(0)).status, BlkStatus.IOERR, `${what}: IN beyond 2^32 sectors`);
      // OUT: the payload after the header lands at sector 20.
      const w = pattern(what.length, 512);
      assert.equal(submitCut(p, BlkType.OUT, 20, w, 0, cuts(512)).status, BlkStatus.OK, `${what}: OUT status`);
      assert.deepEqual(storage.bytes.subarray(20 * 512, 21 * 512), w, `${what}: OUT data`);
      // WRITE_ZEROES: one segment after the header (sector 20, 1 sector, no flags).
      const seg = new Uint8Array(16);
      new DataView(seg.buffer).setUint32(0, 20, true);
      new DataView(seg.buffer).setUint32(8, 1, true);
      assert.equal(submitCut(p, BlkType.WRITE_ZEROES, 0, seg, 0, cuts(16)).status, BlkStatus.OK, `${what}: WRITE_ZEROES status`);
      assert.deepEqual(storage.bytes.subarray(20 * 512, 21 * 512), new Uint8Array(512), `${what}: WRITE_ZEROES zeroed the segment's sector`);
      // An unknown type: UNSUPP.
      assert.equal(submitCut(p, 99, 0, new Uint8Array(0), 512, cuts(0)).status, BlkStatus.UNSUPP, `${what}: unknown type`);
    }
    assert.deepEqual(p.devMon.verdicts.map((v) => v.clause), ['blk.device-operation.driver.2', 'blk.device-operation.driver.2', 'blk.device-operation.driver.2', 'blk.device-operation.driver.2', 'blk.device-operation.driver.2', 'blk.device-operation.driver.2']);
    assert.equal(p.drvMon.total, 0);
  });
}

for (const format of ['split', 'packed'] as const) {
  test(`sync path (${format}): a memory disk answers every request type inside the kick, no promise in between; data and status bytes exact`, async () => {
    const storage = new MemoryBlockStorage(1 << 20);
    storage.bytes.set(pattern(1, 1 << 20));
    const p = await pair(storage, { format, mode: 'sync', tolerant: true });
    const cases: [string, () => ReturnType<typeof submitRaw>, number][] = [
      ['IN', () => submitRaw(p, BlkType.IN, 8, new Uint8Array(0), 4096), BlkStatus.OK],
      ['OUT', () => submitRaw(p, BlkType.OUT, 16, pattern(2, 2048), 0), BlkStatus.OK],
      ['FLUSH', () => submitRaw(p, BlkType.FLUSH, 0, new Uint8Array(0), 0), BlkStatus.OK],
      ['GET_ID', () => submitRaw(p, BlkType.GET_ID, 0, new Uint8Array(0), 20), BlkStatus.OK],
      ['IN past the end', () => submitRaw(p, BlkType.IN, 2047, new Uint8Array(0), 1024), BlkStatus.IOERR],
      ['IN not whole sectors', () => submitRaw(p, BlkType.IN, 0, new Uint8Array(0), 100), BlkStatus.IOERR],
      ['unknown type', () => submitRaw(p, 99, 0, new Uint8Array(0), 512), BlkStatus.UNSUPP],
      ['IN of no bytes', () => submitRaw(p, BlkType.IN, 0, new Uint8Array(0), 0), BlkStatus.OK],
    ];
    for (const [what, send, want] of cases) {
      const r = send();
      // Answered before kick() returned: the request never waited for a promise.
      assert.equal(r.answered, true, `${what}: answered inside the kick`);
      assert.equal(r.status, want, `${what}: status`);
    }
    const read = submitRaw(p, BlkType.IN, 8, new Uint8Array(0), 4096);
    assert.deepEqual(read.data(), storage.bytes.subarray(4096, 8192));
    assert.equal(read.len, 4096 + 1, 'used length: data and status byte');
    assert.deepEqual(storage.bytes.subarray(8192, 8192 + 2048), pattern(2, 2048));
    const id = submitRaw(p, BlkType.GET_ID, 0, new Uint8Array(0), 20);
    assert.equal(new TextDecoder().decode(id.data().subarray(0, 13)), 'virtio-ts-mem');
    assert.equal(p.device.stats.flushes, 1);
    assert.deepEqual(
      p.devMon.verdicts.map((v) => v.clause),
      ['blk.device-operation.driver.2', 'blk.device-operation.driver.6'],
    );
  });

  test(`async path (${format}): a storage with only promise methods serves the same requests, answered after its promises`, async () => {
    const storage = new GatedStorage(1 << 20);
    storage.disk.bytes.set(pattern(3, 1 << 20));
    const p = await pair(storage, { format, mode: 'sync', tolerant: true });
    storage.gated = true;
    // Judged without the storage: answered at once. (First: with IN_ORDER, packed here, a
    // later answer waits for the earlier ones.)
    const past = submitRaw(p, BlkType.IN, 2047, new Uint8Array(0), 1024);
    const unsupp = submitRaw(p, 99, 0, new Uint8Array(0), 512);
    assert.equal(past.answered && past.status, BlkStatus.IOERR);
    assert.equal(unsupp.answered && unsupp.status, BlkStatus.UNSUPP);
    // The rest waits for the storage.
    const read = submitRaw(p, BlkType.IN, 8, new Uint8Array(0), 4096);
    const write = submitRaw(p, BlkType.OUT, 16, pattern(4, 1024), 0);
    const flush = submitRaw(p, BlkType.FLUSH, 0, new Uint8Array(0), 0);
    await until(() => storage.held === 3, 'three requests in the storage');
    assert.equal(read.answered || write.answered || flush.answered, false);
    assert.equal(p.device.type.inProgress(), 3);
    storage.release();
    await until(() => read.answered && write.answered && flush.answered, 'the answers');
    assert.deepEqual([read.status, write.status, flush.status], [BlkStatus.OK, BlkStatus.OK, BlkStatus.OK]);
    assert.deepEqual(read.data(), storage.disk.bytes.subarray(4096, 8192));
    assert.deepEqual(storage.disk.bytes.subarray(8192, 9216), pattern(4, 1024));
    assert.equal(p.device.type.inProgress(), 0);
  });

  test(`read-only, both paths (${format}): writes fail with IOERR and write nothing`, async () => {
    for (const storage of [new MemoryBlockStorage(1 << 20), new GatedStorage(1 << 20)]) {
      const disk = storage instanceof MemoryBlockStorage ? storage : storage.disk;
      disk.bytes.fill(0x5a);
      const p = await pair(storage, { format, mode: 'sync', readOnly: true });
      await assert.rejects(p.driver.write(0, new Uint8Array(4096)), (e: unknown) => e instanceof BlkError && e.kind === 'io-error');
      await assert.rejects(p.driver.writeZeroes(0, 4096), (e: unknown) => e instanceof BlkError && e.kind === 'io-error');
      assert.ok(disk.bytes.every((b) => b === 0x5a));
      const back = new Uint8Array(512);
      await p.driver.read(0, back);
      assert.ok(back.every((b) => b === 0x5a));
    }
  });

  test(`a storage that throws or rejects fails that request with IOERR, on either path (${format})`, async () => {
    const storage = new MixedStorage(1 << 20, (op, off) => op === 'read' && off === 0);
    storage.readSync = (offset) => {
      if (offset === 4096) throw new Error('sync read failed');
      return false;
    };
    storage.read = async (offset) => {
      if (offset === 0) throw new Error('async read failed');
    };
    const p = await pair(storage, { format });
    await assert.rejects(p.driver.read(4096, new Uint8Array(4096)), (e: unknown) => e instanceof BlkError && e.kind === 'io-error');
    await assert.rejects(p.driver.read(0, new Uint8Array(4096)), (e: unknown) => e instanceof BlkError && e.kind === 'io-error');
    await p.driver.read(8192, new Uint8Array(4096)); // the device goes on
    assert.equal(p.device.stats.ioerr, 2);
    assert.equal(p.driver.state, 'live');
  });

  test(`FLUSH and writethrough (${format}): the status byte comes only after the storage's flush, sync or async`, async () => {
    // Asynchronous flush, held: the FLUSH is not answered until it resolves.
    const gated = new GatedStorage(1 << 20);
    const p = await pair(gated, { format, mode: 'sync' });
    await p.driver.write(0, pattern(5, 4096));
    gated.gated = true;
    let flushed = false;
    const flush = p.driver.flush().then(() => (flushed = true));
    await until(() => gated.held === 1, 'the flush in the storage');
    await turns();
    assert.equal(flushed, false, 'FLUSH answered before the storage flushed');
    gated.release();
    await flush;
    assert.deepEqual(gated.log.slice(-2), ['write 0', 'flush']);
    // Writethrough: each write waits for a flush before its status.
    await p.driver.setWriteback(false);
    let written = false;
    const w = p.driver.write(4096, pattern(6, 4096)).then(() => (written = true));
    await until(() => gated.held === 1, 'the write in the storage');
    gated.release();
    await until(() => gated.log.at(-1) === 'write 4096' && gated.held === 1, 'its flush in the storage');
    await turns();
    assert.equal(written, false, 'writethrough write answered before its flush');
    gated.release();
    await w;
    assert.deepEqual(gated.log.slice(-2), ['write 4096', 'flush']);

    // Synchronous write, flush declined: the data goes now, the answer after the async flush.
    const mixed = new MixedStorage(1 << 20, (op) => op === 'flush');
    const m = await pair(mixed, { format, mode: 'sync' });
    await m.driver.setWriteback(false);
    const r = submitRaw(m, BlkType.OUT, 0, pattern(7, 512), 0);
    assert.equal(mixed.calls.writeSync, 1);
    assert.deepEqual(mixed.bytes.subarray(0, 512), pattern(7, 512), 'written synchronously');
    assert.equal(r.answered, false, 'not answered before the flush');
    await until(() => r.answered, 'the answer');
    assert.equal(r.status, BlkStatus.OK);
    assert.equal(mixed.calls.write, 0, 'the data was not written twice');
    assert.deepEqual([mixed.calls.flushSync, mixed.calls.flush], [1, 1]);
    // A synchronous flush: answered inside the kick, counted once.
    const sync = new MixedStorage(1 << 20, () => false);
    const s = await pair(sync, { format, mode: 'sync' });
    const f = submitRaw(s, BlkType.FLUSH, 0, new Uint8Array(0), 0);
    assert.equal(f.answered && f.status, BlkStatus.OK);
    assert.deepEqual([sync.calls.flushSync, sync.calls.flush, sync.flushes], [1, 0, 1]);
  });

  test(`a storage that answers some requests synchronously and declines others (${format}): every byte lands, both paths used`, async () => {
    const size = 1 << 20;
    const storage = new MixedStorage(size, (op, off) => (op === 'flush' ? false : ((off / 4096) | 0) % 3 === 0));
    const model = new Uint8Array(size);
    for (const mode of ['sync', 'async'] as const) {
      const p = await pair(storage, { format, mode });
      const batch = p.driver.batch({ depth: 8 });
      const writes = p.driver.batch({ depth: 1 }); // a second batch on the same queue
      let rng = 12345;
      const next = () => {
        rng ^= rng << 13;
        rng ^= rng >>> 17;
        rng ^= rng << 5;
        return rng >>> 0;
      };
      for (let round = 0; round < 20; round++) {
        const reads: [number, Uint8Array][] = [];
        for (let i = 0; i < 8; i++) {
          const off = (next() % (size / 4096)) * 4096;
          const len = 512 * (1 + (next() % 16));
          if (off + len > size) continue;
          if (next() % 2 === 0) {
            const data = pattern(next(), len);
            // Through the promise API or the batch, on the same queue.
            if (i % 2 === 0) await p.driver.write(off, data);
            else {
              assert.ok(writes.write(off, data, i));
              writes.submit();
              await until(() => writes.ready > 0, 'a batch write');
              const t = [0];
              const st = [0];
              assert.equal(writes.reap(t, st), 1);
              assert.deepEqual([t[0], st[0]], [i, BlkStatus.OK]);
            }
            model.set(data, off);
          } else {
            const into = new Uint8Array(len);
            assert.ok(batch.read(off, into, i));
            reads.push([off, into]);
          }
        }
        batch.submit();
        await until(() => batch.inFlight === 0, 'the batch reads');
        const tags = new Float64Array(8);
        const statuses = new Int32Array(8);
        assert.equal(batch.reap(tags, statuses), reads.length);
        assert.ok(statuses.subarray(0, reads.length).every((s) => s === BlkStatus.OK));
        for (const [off, into] of reads) assert.deepEqual(into, model.subarray(off, off + into.length), `read at ${off}`);
      }
      await p.driver.flush();
      assert.deepEqual([...p.devMon.verdicts, ...p.drvMon.verdicts], []);
    }
    assert.deepEqual(storage.bytes, model);
    const c = storage.calls;
    assert.ok(c.readSync > 0 && c.read > 0 && c.writeSync > 0 && c.write > 0, `both paths taken: ${JSON.stringify(c)}`);
  });

  test(`request state is pooled per queue entry (${format}): a full queue of asynchronous requests, again and again, no more states than entries`, async () => {
    const storage = new GatedStorage(1 << 20);
    storage.disk.bytes.set(pattern(8, 1 << 20));
    const QS = 16;
    const p = await pair(storage, { format, queueSize: QS, maxInFlight: QS });
    const batch = p.driver.batch({ depth: QS });
    assert.equal(batch.depth, QS);
    storage.gated = true;
    const bufs = Array.from({ length: QS }, () => new Uint8Array(4096));
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < QS; i++) assert.ok(batch.read(((round * QS + i) % 256) * 4096, bufs[i], i), `slot ${i}`);
      assert.equal(batch.read(0, new Uint8Array(512), 99), false, 'no slot left');
      batch.submit();
      await until(() => storage.held === QS, 'the whole queue in the storage');
      assert.equal(p.device.type.inProgress(), QS);
      assert.equal(p.device.type.pooledRequests, QS, 'one state per queue entry');
      storage.release();
      await until(() => batch.ready === QS, 'every answer');
      const tags = new Float64Array(QS);
      const statuses = new Int32Array(QS);
      assert.equal(batch.reap(tags, statuses), QS);
      assert.deepEqual([...tags].sort((a, b) => a - b), Array.from({ length: QS }, (_, i) => i));
      assert.ok(statuses.every((s) => s === BlkStatus.OK));
      for (let i = 0; i < QS; i++) {
        const off = ((round * QS + i) % 256) * 4096;
        assert.deepEqual(bufs[i], storage.disk.bytes.subarray(off, off + 4096), `round ${round} slot ${i}`);
      }
    }
    assert.equal(p.device.type.pooledRequests, QS, 'no state made after the first round');
  });

  test(`batch API (${format}): statuses, tags, flush, and the promise API beside it`, async () => {
    const storage = new MemoryBlockStorage(8 << 20);
    const p = await pair(storage, { format, mode: 'sync' });
    const batch = p.driver.batch({ depth: 4 });
    assert.ok(batch.write(0, pattern(9, 4096), 10));
    assert.ok(batch.flush(11));
    const back = new Uint8Array(4096);
    assert.ok(batch.read(0, back, 12));
    assert.equal(batch.inFlight, 3);
    let ready = 0;
    batch.onReady = () => ready++;
    batch.submit();
    assert.equal(ready, 1, 'onReady inside submit on a synchronous transport');
    assert.equal(batch.inFlight, 0);
    const tags: number[] = [0, 0];
    const statuses: number[] = [0, 0];
    assert.equal(batch.reap(tags, statuses), 2, 'as many as the arrays hold');
    assert.deepEqual(tags, [10, 11]);
    assert.equal(batch.reap(tags, statuses), 1);
    assert.deepEqual([tags[0], statuses[0]], [12, BlkStatus.OK]);
    assert.deepEqual(back, pattern(9, 4096));
    assert.equal(batch.reap(tags, statuses), 0);
    assert.throws(() => batch.read(8 << 20, back, 1), RangeError, 'beyond the disk');
    assert.throws(() => batch.read(100, back, 1), RangeError, 'not whole sectors');
    assert.throws(() => batch.read(0, new Uint8Array(p.driver.maxRequestBytes + 512), 1), RangeError, 'more than one request holds');
    // A request the device fails: its status, not an exception.
    const ro = await pair(new MemoryBlockStorage(1 << 20), { format, mode: 'sync', readOnly: true });
    const rb = ro.driver.batch();
    assert.ok(rb.write(0, new Uint8Array(512), 7));
    rb.submit();
    assert.equal(rb.reap(tags, statuses), 1);
    assert.deepEqual([tags[0], statuses[0]], [7, BlkStatus.IOERR]);
    assert.equal(BlkBatch.FAILED, -1);
    // The promise API on the same queue meanwhile.
    await p.driver.write(8192, pattern(10, 512));
    const b2 = new Uint8Array(512);
    await p.driver.read(8192, b2);
    assert.deepEqual(b2, pattern(10, 512));
  });

  for (const mode of ['sync', 'async'] as const) {
    test(`batch API on BlkBuffers (${format}, ${mode}): reads land in guest memory where the buffer is, writes go from there; busy and foreign buffers refused`, async () => {
      const storage = new MemoryBlockStorage(1 << 20);
      storage.bytes.set(pattern(21, 1 << 20));
      const p = await pair(storage, { format, mode });
      const batch = p.driver.batch({ depth: 8 });
      const bufs = Array.from({ length: 4 }, (_, i) => p.driver.buffer(512 * (1 + i)));
      // The view is guest memory at the buffer's address: what the device writes there is what the caller sees.
      for (const b of bufs) assert.equal(b.data.buffer, p.mem.region(b.addr, b.data.length)!.bytes.buffer);
      const tags = new Float64Array(8);
      const statuses = new Int32Array(8);
      const reapAll = async (n: number): Promise<number> => {
        batch.submit();
        await until(() => batch.ready === n, `${n} completions`);
        return batch.reap(tags, statuses);
      };
      // Reads at scattered offsets, each into its own buffer.
      const offs = [0, 4096, 65536 + 512, (1 << 20) - 2048];
      bufs.forEach((b, i) => assert.ok(batch.readBuffer(offs[i], b, i)));
      assert.throws(() => batch.readBuffer(0, bufs[0], 9), (e: unknown) => e instanceof DriverError && e.kind === 'wrong-state', 'in flight already');
      assert.throws(() => p.driver.releaseBuffer(bufs[0]), (e: unknown) => e instanceof DriverError && e.kind === 'wrong-state', 'release while in flight');
      assert.equal(await reapAll(4), 4);
      assert.ok(statuses.subarray(0, 4).every((st) => st === BlkStatus.OK));
      bufs.forEach((b, i) => assert.deepEqual(b.data, storage.bytes.subarray(offs[i], offs[i] + b.data.length), `read ${i}`));
      // Writes from the buffers, then read back through the promise API.
      bufs.forEach((b, i) => b.data.set(pattern(30 + i, b.data.length)));
      bufs.forEach((b, i) => assert.ok(batch.writeBuffer(8192 * (i + 1), b, 10 + i)));
      assert.equal(await reapAll(4), 4);
      assert.deepEqual([...tags.subarray(0, 4)].sort((a, b) => a - b), [10, 11, 12, 13]);
      for (let i = 0; i < bufs.length; i++) {
        const back = new Uint8Array(bufs[i].data.length);
        await p.driver.read(8192 * (i + 1), back);
        assert.deepEqual(back, pattern(30 + i, back.length), `write ${i}`);
      }
      // A read the device fails leaves its status, and the buffer usable again.
      assert.throws(() => batch.readBuffer(1 << 20, bufs[0], 1), RangeError, 'beyond the disk');
      // Another driver's buffer, a released one, bad lengths.
      const other = await pair(new MemoryBlockStorage(1 << 20), { format, mode });
      const foreign = other.driver.buffer(512);
      assert.throws(() => batch.readBuffer(0, foreign, 1), (e: unknown) => e instanceof DriverError && e.kind === 'wrong-state');
      assert.throws(() => p.driver.releaseBuffer(foreign), (e: unknown) => e instanceof DriverError && e.kind === 'wrong-state');
      const before = p.driver.allocator.available;
      p.driver.releaseBuffer(bufs[3]);
      assert.ok(p.driver.allocator.available > before, 'given back to the allocator');
      assert.throws(() => batch.writeBuffer(0, bufs[3], 1), (e: unknown) => e instanceof DriverError && e.kind === 'wrong-state');
      assert.throws(() => p.driver.releaseBuffer(bufs[3]), (e: unknown) => e instanceof DriverError && e.kind === 'wrong-state');
      assert.throws(() => p.driver.buffer(100), RangeError);
      assert.throws(() => p.driver.buffer(0), RangeError);
      assert.throws(() => p.driver.buffer(p.driver.maxRequestBytes + 512), RangeError);
      assert.ok(bufs[0] instanceof BlkBuffer);
      assert.deepEqual([...p.devMon.verdicts, ...p.drvMon.verdicts], []);
    });
  }

  test(`batch API (${format}, sync transport): resubmitting from onReady runs on without growing the stack`, async () => {
    const storage = new MemoryBlockStorage(1 << 20);
    storage.bytes.set(pattern(11, 1 << 20));
    const p = await pair(storage, { format, mode: 'sync' });
    const batch = p.driver.batch({ depth: 2 });
    const bufs = [new Uint8Array(512), new Uint8Array(512)];
    const tags = new Float64Array(2);
    const statuses = new Int32Array(2);
    let left = 50_000; // far more round trips than a recursive exchange could stack
    let done = 0;
    let bad = 0;
    batch.onReady = () => {
      const n = batch.reap(tags, statuses);
      for (let i = 0; i < n; i++) {
        done++;
        const slot = tags[i];
        const off = ((done * 7) % 2048) * 512;
        if (statuses[i] !== BlkStatus.OK) bad++;
        if (left > 0) {
          left--;
          batch.read(off, bufs[slot], slot);
        }
      }
      batch.submit();
    };
    left -= 2;
    batch.read(0, bufs[0], 0);
    batch.read(512, bufs[1], 1);
    batch.submit(); // returns when the exchange is over
    assert.equal(done, 50_000);
    assert.equal(bad, 0);
  });
}

for (const io of ['auto', 'sync', 'async'] as const) {
  test(`FileBlockStorage io=${io} under the device: what it answers synchronously follows the mode (auto: page-cache reads only; sync: everything; async: nothing)`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-fast-'));
    try {
      const path = join(dir, 'disk.img');
      const image = pattern(12, 1 << 20);
      writeFileSync(path, image);
      readFileSync(path); // in the page cache
      const storage = await FileBlockStorage.open(path, { io });
      const p = await pair(storage, { mode: 'sync' });
      const read = submitRaw(p, BlkType.IN, 8, new Uint8Array(0), 4096);
      // auto: answered inside the kick exactly when the page cache held it (RWF_NOWAIT); a file
      // system that cannot say sends it to the thread pool.
      assert.equal(read.answered, io === 'sync' || (io === 'auto' && storage.stats.cachedReads === 1), 'read answered inside the kick');
      await until(() => read.answered, 'the read');
      assert.equal(read.status, BlkStatus.OK);
      assert.deepEqual(read.data(), image.subarray(4096, 8192));
      const write = submitRaw(p, BlkType.OUT, 16, pattern(13, 4096), 0);
      assert.equal(write.answered, io === 'sync', 'write answered inside the kick');
      await until(() => write.answered, 'the write');
      assert.deepEqual(new Uint8Array(readFileSync(path).subarray(8192, 12288)), pattern(13, 4096));
      const syncs = storage.syncs;
      const flush = submitRaw(p, BlkType.FLUSH, 0, new Uint8Array(0), 0);
      assert.equal(flush.answered, io === 'sync', 'flush answered inside the kick');
      if (flush.answered) assert.equal(storage.syncs, syncs + 1, 'fdatasync before the status');
      await until(() => flush.answered, 'the flush');
      assert.equal(storage.syncs, syncs + 1);
      assert.deepEqual([...p.devMon.verdicts, ...p.drvMon.verdicts], []);
      await storage.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('a MemoryBlockStorage subclass written before the synchronous methods: its promise overrides are still called', async () => {
  class Counted extends MemoryBlockStorage {
    reads = 0;
    zeroes = 0;
    override async read(offset: number, views: readonly Uint8Array[]): Promise<void> {
      this.reads++;
      return super.read(offset, views);
    }
    override async writeZeroes(offset: number, length: number): Promise<void> {
      this.zeroes++;
      return super.writeZeroes(offset, length);
    }
  }
  const storage = new Counted(1 << 20);
  const p = await pair(storage, { mode: 'sync' });
  await p.driver.write(4096, pattern(14, 4096)); // write not overridden: answered synchronously
  const back = new Uint8Array(4096);
  await p.driver.read(4096, back);
  assert.deepEqual(back, pattern(14, 4096));
  assert.equal(storage.reads, 1, 'the overriding read() served the read');
  await p.driver.writeZeroes(4096, 512);
  assert.equal(storage.zeroes, 1, 'the overriding writeZeroes() served it');
  assert.equal(storage.bytes[4096], 0);
  const r = submitRaw(p, BlkType.OUT, 0, pattern(15, 512), 0);
  assert.equal(r.answered && r.status, BlkStatus.OK, 'a write, not overridden, answered inside the kick');
});

for (const format of ['split', 'packed'] as const) {
  test(`a queue reset while a request is in the storage (${format}): its late answer is dropped, and the request that reuses its entry gets its own`, async () => {
    const storage = new GatedStorage(1 << 20);
    storage.disk.bytes.set(pattern(16, 1 << 20));
    const p = await pair(storage, { format, mode: 'sync', extra: bit(Feature.RING_RESET) });
    storage.gated = true;
    const old = submitRaw(p, BlkType.IN, 8, new Uint8Array(0), 4096);
    await until(() => storage.held === 1, 'the first read in the storage');
    await p.driver.resetQueue(0);
    await p.driver.reenableQueue(0);
    const fresh = submitRaw(p, BlkType.IN, 16, new Uint8Array(0), 4096); // the same entry as the first
    await until(() => storage.held === 2, 'the second read in the storage');
    storage.release();
    await until(() => fresh.answered, 'the second answer');
    await turns();
    assert.equal(fresh.status, BlkStatus.OK);
    assert.equal(fresh.len, 4096 + 1);
    assert.deepEqual(fresh.data(), storage.disk.bytes.subarray(16 * 512, 16 * 512 + 4096), 'its own sectors, not the first request\'s');
    assert.equal(old.answered, false);
    assert.equal(p.device.stats.ok, 1, 'one answer: the stale one was dropped');
    assert.equal(p.device.type.inProgress(), 0);
  });
}
