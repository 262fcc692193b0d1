// vsock driver <-> vsock device over loopback (sync and async, split and packed): connections
// both ways as Duplex streams, MiB of data checked by hash, many connections at once, credit
// flow control (a reader that stops holds the writer; the buffers stay bounded), shutdown and
// RST semantics, seqpacket message boundaries, TRANSPORT_RESET. No verdicts on either side.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Monitor } from '../../src/monitor/monitor.js';
import { LoopbackTransport } from '../../src/transports/loopback/loopback.js';
import { VsockDevice, type VsockDeviceOptions } from '../../src/devices/vsock/device.js';
import { VsockDriver, type VsockDriverOptions } from '../../src/drivers/vsock.js';
import { vsockStreams, type VsockStream } from '../../src/node/vsock/streams.js';
import { VsockError } from '../../src/vsock/engine.js';
import { Feature } from '../../src/spec/constants.js';
import { bit, TRANSPORT_FEATURES_SPLIT } from '../../src/spec/features.js';
import { turns, until } from '../wait.js';

const FORMATS = {
  split: TRANSPORT_FEATURES_SPLIT,
  packed: TRANSPORT_FEATURES_SPLIT | bit(Feature.RING_PACKED),
} as const;

export async function vsockPair(format: keyof typeof FORMATS = 'split', mode: 'sync' | 'async' = 'async', dev: VsockDeviceOptions = {}, drv: VsockDriverOptions = {}) {
  const devMon = new Monitor();
  const drvMon = new Monitor();
  const device = new VsockDevice({ monitor: devMon, guestCid: 42, ...dev });
  if (format === 'split') device.withholdFeatures(bit(Feature.RING_PACKED));
  const transport = new LoopbackTransport(device, GuestMemory.create(16 << 20), { mode });
  const driver = new VsockDriver(transport, { monitor: drvMon, transportFeatures: FORMATS[format], ...drv });
  await driver.start();
  return { device, driver, devMon, drvMon, host: vsockStreams(device), guest: vsockStreams(driver) };
}

function md5(b: Uint8Array): string {
  return createHash('md5').update(b).digest('hex');
}

/** Everything the stream gives until its end (not destroying it, as for-await would). */
export function readAll(s: VsockStream | NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  return new Promise((resolve, reject) => {
    s.on('data', (c: Buffer) => parts.push(c));
    s.on('end', () => resolve(Buffer.concat(parts)));
    s.on('error', reject);
  });
}

for (const format of ['split', 'packed'] as const) {
  for (const mode of ['sync', 'async'] as const) {
    test(`vsock pair, ${format} ring, loopback ${mode}: guest -> host and host -> guest, 3 MiB each way by md5, clean close; no verdicts`, async () => {
      const { driver, device, devMon, drvMon, host, guest } = await vsockPair(format, mode);
      assert.equal(driver.guestCid, 42n);
      const listener = host.listen(1234);
      const g = guest.connect(1234);
      await once(g, 'connect');
      const h = await listener.accept();
      assert.equal(h.remotePort, g.localPort);
      const up = randomBytes(3 << 20);
      const down = randomBytes(3 << 20);
      const gotUp = readAll(h);
      const gotDown = readAll(g);
      g.end(up);
      h.end(down);
      assert.equal(md5(await gotUp), md5(up));
      assert.equal(md5(await gotDown), md5(down));
      await until(() => device.engine.connections().length === 0 && driver.engine.connections().length === 0, 'both sides forget the flow');
      assert.deepEqual(devMon.verdicts, []);
      assert.deepEqual(drvMon.verdicts, []);
      listener.close();
    });
  }
}

test('vsock pair: host connects to a guest listener; seqpacket keeps message boundaries and EOR', async () => {
  const { driver, device, devMon, drvMon, host, guest } = await vsockPair();
  const gl = guest.listen(5000);
  const h = host.connect(5000, { seqpacket: true });
  await once(h, 'connect');
  const g = await gl.accept();
  const msgs = [randomBytes(10), randomBytes(40_000), randomBytes(1)];
  for (const m of msgs) h.write(m);
  const got: Buffer[] = [];
  g.on('data', (c: Buffer) => got.push(c));
  await until(() => got.length === msgs.length, 'all messages');
  assert.deepEqual(got.map((b) => b.length), msgs.map((m) => m.length));
  assert.ok(got.every((b, i) => b.equals(msgs[i])));
  // EOR through the engine: the connection API marks records.
  h.connection.write(Uint8Array.of(1, 2, 3), true);
  await until(() => g.connection.rxBuffered > 0 || got.length > msgs.length, 'record');
  assert.deepEqual(devMon.verdicts, []);
  assert.deepEqual(drvMon.verdicts, []);
  void driver;
  void device;
});

test('vsock pair: 100 concurrent connections, each its own data', async () => {
  const { devMon, drvMon, host, guest } = await vsockPair('split', 'async', {}, { rxBuffers: 128, queueSize: 256 });
  const listener = host.listen(7);
  listener.on('connection', (s) => s.pipe(s)); // echo
  const results = await Promise.all(
    Array.from({ length: 100 }, async (_, i) => {
      const g = guest.connect(7);
      await once(g, 'connect');
      const data = randomBytes(20_000 + i);
      const got = readAll(g);
      g.end(data);
      return (await got).equals(data);
    }),
  );
  assert.ok(results.every(Boolean));
  assert.deepEqual(devMon.verdicts, []);
  assert.deepEqual(drvMon.verdicts, []);
});

test('vsock pair: a guest that stops reading holds the host writer; the host sent exactly the guest credit and holds at most its mark', async () => {
  const bufAlloc = 64 * 1024;
  const txHighWater = 32 * 1024;
  const { device, driver, host, guest } = await vsockPair('split', 'async', { txHighWater }, { bufAlloc });
  const gl = guest.listen(9);
  const h = host.connect(9);
  await once(h, 'connect');
  const g = await gl.accept();
  g.pause();
  // The host program writes for as long as the stream lets it.
  const chunk = Buffer.alloc(8192, 7);
  let written = 0;
  let stop = false;
  const writer = (async () => {
    while (!stop) {
      written += chunk.length;
      if (!h.write(chunk)) await once(h, 'drain');
    }
  })();
  const c = device.engine.connections()[0];
  await until(() => c.peerFree === 0 && c.txBuffered >= txHighWater / 2, 'the guest credit used and the host queue at its mark');
  const sent = c.txCnt;
  await turns(50); // nothing more moves while the guest reads nothing
  assert.equal(c.txCnt, sent);
  // The credit logic: exactly the guest's buf_alloc went out (it never read: fwd_cnt 0) ...
  assert.equal(sent, bufAlloc);
  assert.equal(driver.engine.connections()[0].rxBuffered + g.readableLength, bufAlloc);
  // ... and the host holds its bounded queue: the mark, one chunk over it, and the stream's own buffer.
  assert.ok(device.engine.bufferedBytes <= txHighWater + chunk.length, `host queue ${device.engine.bufferedBytes}`);
  assert.ok(h.writableLength <= h.writableHighWaterMark + chunk.length);
  assert.ok(h.writableNeedDrain, 'the writer waits for drain');
  // The guest reads again: everything arrives, in order.
  let got = 0;
  g.on('data', (b: Buffer) => (got += b.length));
  g.resume();
  await until(() => got > sent + txHighWater, 'the writer moves again');
  stop = true;
  await writer;
  h.end();
  await until(() => got === written, 'all bytes after the guest reads again');
});

test('vsock pair: connect to a port nobody listens on is refused; destroy sends RST (reset at the peer)', async () => {
  const { host, guest, devMon, drvMon } = await vsockPair();
  const g = guest.connect(4444);
  const [err] = (await once(g, 'error').catch((e: unknown) => [e])) as [VsockError];
  assert.ok(err instanceof VsockError);
  assert.equal(err.kind, 'refused');
  const l = host.listen(4445);
  const g2 = guest.connect(4445);
  await once(g2, 'connect');
  const h2 = await l.accept();
  h2.destroy();
  const [err2] = (await once(g2, 'error').catch((e: unknown) => [e])) as [VsockError];
  assert.equal(err2.kind, 'reset');
  assert.deepEqual(devMon.verdicts, []);
  assert.deepEqual(drvMon.verdicts, []);
});

test('vsock pair: TRANSPORT_RESET ends connections with transport-reset, the guest reads the new CID, listeners stay', async () => {
  const { device, driver, host, guest, devMon, drvMon } = await vsockPair('split', 'sync');
  const gl = guest.listen(80);
  const h = host.connect(80);
  await once(h, 'connect');
  const g = await gl.accept();
  const hostErr = once(h, 'error');
  const reset = new Promise<void>((r) => (driver.onTransportReset = r));
  device.transportReset(77);
  await reset;
  assert.equal(driver.guestCid, 77n);
  assert.equal(driver.transportResets, 1);
  const [e] = (await once(g, 'error').catch((x: unknown) => [x])) as [VsockError];
  assert.equal(e.kind, 'transport-reset');
  assert.equal(((await hostErr)[0] as VsockError).kind, 'transport-reset');
  // The listener still works, on the new CID.
  const h2 = host.connect(80);
  await once(h2, 'connect');
  const g2 = await gl.accept();
  h2.end('after reset');
  assert.equal((await readAll(g2)).toString(), 'after reset');
  g2.end();
  await until(() => device.engine.connections().length === 0, 'the flow closed cleanly');
  assert.deepEqual(devMon.verdicts, []);
  assert.deepEqual(drvMon.verdicts, []);
});

test('vsock engine: a packet of unknown type is answered with RST (vsock.receive-and-transmit.*.2), never an RST for an RST', async () => {
  const { VsockEngine } = await import('../../src/vsock/engine.js');
  const { VsockHdr, VsockOp, writeVsockHeader, readVsockHeader } = await import('../../src/spec/vsock.js');
  const violations: string[] = [];
  const e = new VsockEngine('device', { violation: (c) => violations.push(c), wake: () => undefined });
  e.localCid = 2n;
  e.peerCid = 3n;
  const v = new DataView(new ArrayBuffer(VsockHdr.size));
  const pkt = { srcCid: 3n, dstCid: 2n, srcPort: 5, dstPort: 6, len: 0, type: 9, op: VsockOp.REQUEST, flags: 0, bufAlloc: 0, fwdCnt: 0 };
  writeVsockHeader(v, 0, pkt);
  e.receive(v, 0, new Uint8Array(0));
  assert.ok(e.hasOutput());
  const out = new DataView(new ArrayBuffer(VsockHdr.size));
  assert.deepEqual(e.produce(out, 0, 4096), new Uint8Array(0));
  const h = readVsockHeader(out);
  assert.deepEqual([h.op, h.type, h.srcPort, h.dstPort, h.srcCid, h.dstCid], [VsockOp.RST, 9, 6, 5, 2n, 3n]);
  writeVsockHeader(v, 0, { ...pkt, op: VsockOp.RST });
  e.receive(v, 0, new Uint8Array(0));
  assert.equal(e.hasOutput(), false);
  assert.deepEqual(violations, []);
});
