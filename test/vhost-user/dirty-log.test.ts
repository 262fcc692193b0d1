// vhost-user dirty logging for live migration (vhost-user.rst "Migration"): with VHOST_F_LOG_ALL
// negotiated and a log given by SET_LOG_BASE (VHOST_USER_PROTOCOL_F_LOG_SHMFD), every write the
// device makes to guest memory sets its 4 KiB page's bit, and the used ring's writes are logged
// at the ring's log address (VHOST_VRING_F_LOG). Exactly those bits: a page the device only
// read stays clean. Logging switched off leaves the log alone, and the device keeps running.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Monitor } from '../../src/monitor/monitor.js';
import { RngDevice } from '../../src/devices/rng/device.js';
import { BlkDevice, BlkType } from '../../src/devices/blk/device.js';
import { MemoryBlockBackend } from '../../src/devices/blk/storage.js';
import type { VirtioDevice } from '../../src/device/device.js';
import { VhostUserBackend } from '../../src/transports/vhost-user/backend.js';
import { F_LOG_ALL, ProtocolFeature, Req, u64Payload } from '../../src/transports/vhost-user/protocol.js';
import { Feature } from '../../src/spec/constants.js';
import type { RingFormat } from '../../src/virtqueue/queue.js';
import { bit } from '../../src/spec/features.js';
import { TestFrontEnd, barrier, closedWith, logPayload, n, receive, type TestRing } from './front-end.js';

const PROTOCOL_FEATURES_BIT = 1n << 30n;
const LOG_ALL = 1n << BigInt(F_LOG_ALL);
const LOG_SHMFD = 1n << BigInt(ProtocolFeature.LOG_SHMFD);
const RING = 0x1000; // page 1
/** Where the used ring's writes are logged: not the page it lives in, so the test sees the difference. */
const USED_LOG = 0x80000; // page 0x80
/** 1 MiB of guest RAM: 256 pages, 32 bytes of log. */
const LOG_BYTES = 32;

interface Logged {
  fe: TestFrontEnd;
  ring: TestRing;
  /** The log as the front-end maps it. */
  log: Uint8Array;
  features: bigint;
  lines: string[];
}

/** A new log memfd (QEMU allocates one with memfd too) and SET_LOG_BASE for it; waits for the reply. */
async function setLogBase(fe: TestFrontEnd, size = LOG_BYTES): Promise<Uint8Array> {
  const fd = n.memfdCreate('vhost-log', 4096);
  const log = new Uint8Array(n.mmap(fd, 0, 4096));
  fe.send(Req.SET_LOG_BASE, logPayload(size), [fd]);
  n.close(fd);
  const r = new DataView((await receive(fe.front)).buffer);
  assert.equal(r.getUint32(0, true), Req.SET_LOG_BASE, `SET_LOG_BASE answered (${fe.backend.lastError})`);
  return log;
}

/** Negotiates the way QEMU starts a migration: log base, then LOG_ALL, then the ring with VHOST_VRING_F_LOG. */
async function start(device: VirtioDevice, format: RingFormat): Promise<Logged> {
  if (format === 'split') device.withholdFeatures(bit(Feature.RING_PACKED));
  const lines: string[] = [];
  const fe = new TestFrontEnd(new VhostUserBackend(device, { info: (m) => lines.push(m), warn: (m) => lines.push(m) }));
  const offered = (await fe.ask(Req.GET_FEATURES)).getBigUint64(0, true);
  assert.ok(offered & LOG_ALL, 'VHOST_F_LOG_ALL offered');
  const proto = (await fe.ask(Req.GET_PROTOCOL_FEATURES)).getBigUint64(0, true);
  assert.ok(proto & LOG_SHMFD, 'VHOST_USER_PROTOCOL_F_LOG_SHMFD offered');
  fe.send(Req.SET_PROTOCOL_FEATURES, u64Payload(LOG_SHMFD));
  const features = bit(Feature.VERSION_1) | bit(Feature.EVENT_IDX) | PROTOCOL_FEATURES_BIT | (format === 'packed' ? bit(Feature.RING_PACKED) : 0n);
  fe.send(Req.SET_FEATURES, u64Payload(features | LOG_ALL));
  fe.sendMemTable();
  const log = await setLogBase(fe);
  const ring = fe.setRing(0, format, 16, RING, format === 'packed' ? 0x80008000 : 0, { eventIdx: true, logAddr: USED_LOG });
  return { fe, ring, log, features, lines };
}

/** The pages whose bits are set. */
function dirtyPages(log: Uint8Array): number[] {
  const pages: number[] = [];
  for (let byte = 0; byte < log.length; byte++) for (let b = 0; b < 8; b++) if (log[byte] & (1 << b)) pages.push(byte * 8 + b);
  return pages;
}

async function kickAndWait(l: Logged, what: string): Promise<void> {
  l.ring.queue.publish();
  l.ring.queue.enableInterrupts();
  n.eventfdWrite(l.ring.kick, 1);
  assert.ok((await l.ring.waitCall()) > 0, `${what}: the back-end signalled (${l.fe.backend.lastError})`);
}

for (const format of ['split', 'packed'] as const) {
  test(`vhost-user dirty log (${format} ring): entropy writes mark their pages and the used ring's log page, nothing else`, async () => {
    const monitor = new Monitor();
    const l = await start(new RngDevice({ monitor, source: (d) => d.fill(0x42) }), format);
    try {
      const q = l.ring.queue;
      q.begin().addWritable(0x20000, 64).commit('a');
      q.begin().addWritable(0x22ff0, 0x20).commit('b'); // crosses into page 0x23
      await kickAndWait(l, 'two requests');
      assert.deepEqual([q.getUsed(), q.getUsed()], ['a', 'b']);
      // Split: the used ring (page 1) is logged at USED_LOG only. Packed: the device writes used
      // descriptors into the descriptor ring (page 1, logged where it is) and its event
      // suppression structure (logged at USED_LOG).
      const expected = format === 'split' ? [0x20, 0x22, 0x23, 0x80] : [0x01, 0x20, 0x22, 0x23, 0x80];
      assert.deepEqual(dirtyPages(l.log), expected);
      assert.deepEqual(monitor.verdicts, []);
    } finally {
      l.fe.close();
    }
  });
}

test('vhost-user dirty log: blk reads mark the data and status pages, writes only the status page; off again, the log is left alone and the device runs on', async () => {
  const monitor = new Monitor();
  const disk = new MemoryBlockBackend(1 << 20);
  disk.bytes.fill(0x5a, 0, 8192);
  const device = new BlkDevice({ backend: disk, monitor, queueMaxSize: 16 });
  const l = await start(device, 'split');
  try {
    const { fe } = l;
    const q = l.ring.queue;
    const header = (at: number, type: number) => {
      const dv = new DataView(fe.ram, at, 16);
      dv.setUint32(0, type, true);
      dv.setBigUint64(8, 0n, true);
    };
    // IN: header in page 0x40 (only read), 8 KiB of data in pages 0x31-0x32, status in page 0x30.
    header(0x40000, BlkType.IN);
    q.begin().addReadable(0x40000, 16).addWritable(0x31000, 8192).addWritable(0x30100, 1).commit('read');
    // OUT: header in 0x41, data in 0x42 (both only read), status in page 0x43.
    header(0x41000, BlkType.OUT);
    fe.bytes(0x42000, 512).fill(0x77);
    q.begin().addReadable(0x41000, 16).addReadable(0x42000, 512).addWritable(0x43000, 1).commit('write');
    await kickAndWait(l, 'read and write');
    // The two requests may complete in separate batches (two calls): wait for each call, not for a time.
    while (q.usedPending() < 2) assert.ok((await l.ring.waitCall()) > 0, `the second request answered (${l.fe.backend.lastError})`);
    assert.deepEqual([q.getUsed(), q.getUsed()].sort(), ['read', 'write']);
    assert.ok(fe.bytes(0x31000, 8192).every((b) => b === 0x5a), 'the read landed');
    assert.deepEqual(dirtyPages(l.log), [0x30, 0x31, 0x32, 0x43, 0x80]);

    // A new log (QEMU resizes it as memory changes): the old one is unmapped, writes go to the new one.
    const before = dirtyPages(l.log);
    const log2 = await setLogBase(fe);
    header(0x44000, BlkType.IN);
    q.begin().addReadable(0x44000, 16).addWritable(0x45000, 512).addWritable(0x44100, 1).commit('read2');
    await kickAndWait(l, 'a read with the new log');
    assert.equal(q.getUsed(), 'read2');
    assert.deepEqual(dirtyPages(log2), [0x44, 0x45, 0x80]);
    assert.deepEqual(dirtyPages(l.log), before, 'the old log was not written');

    // Migration over: SET_FEATURES without LOG_ALL. Nothing is reset; nothing is logged.
    // SET_FEATURES has no reply, and the kick below travels on another fd (the kick eventfd):
    // a back-end that sees both ready at once may serve the kick first, with logging still on.
    // QEMU waits for SET_FEATURES to be acted on before it goes on (enforce_reply: GET_FEATURES
    // as a barrier without REPLY_ACK); so does this test.
    fe.send(Req.SET_FEATURES, u64Payload(l.features));
    await barrier(fe);
    log2.fill(0);
    header(0x46000, BlkType.IN);
    q.begin().addReadable(0x46000, 16).addWritable(0x47000, 512).addWritable(0x46100, 1).commit('read3');
    await kickAndWait(l, 'a read after logging ended');
    assert.equal(q.getUsed(), 'read3', 'served without a restart');
    assert.deepEqual(dirtyPages(log2), [], 'nothing logged once LOG_ALL went away');
    assert.equal(device.live, true, 'the device was not reset');
    assert.equal(l.lines.filter((m) => /ring 0 started/.test(m)).length, 1, 'the ring started once');
    assert.ok(l.lines.some((m) => /dirty logging off \(\d+ writes logged\)/.test(m)), l.lines.join('\n'));
    assert.deepEqual(monitor.verdicts, []);
  } finally {
    l.fe.close();
  }
});

for (const [name, act, reason, kind] of [
  [
    'a log too small for guest memory',
    async (fe: TestFrontEnd) => {
      fe.send(Req.SET_PROTOCOL_FEATURES, u64Payload(LOG_SHMFD));
      fe.sendMemTable();
      const fd = n.memfdCreate('vhost-log', 4096);
      fe.send(Req.SET_LOG_BASE, logPayload(LOG_BYTES / 2), [fd]);
      n.close(fd);
    },
    /SET_LOG_BASE: the dirty log \(16 bytes\) covers guest addresses below 0x80000; the region at \[0x0, \+0x100000\) is beyond it/,
    'dirty-log',
  ],
  [
    'a log without VHOST_USER_PROTOCOL_F_LOG_SHMFD',
    async (fe: TestFrontEnd) => {
      const fd = n.memfdCreate('vhost-log', 4096);
      fe.send(Req.SET_LOG_BASE, logPayload(LOG_BYTES), [fd]);
      n.close(fd);
    },
    /SET_LOG_BASE: protocol feature 1 was not negotiated/,
    'unsupported-request',
  ],
  [
    'a used ring logged beyond the log',
    async (fe: TestFrontEnd) => {
      fe.send(Req.SET_PROTOCOL_FEATURES, u64Payload(LOG_SHMFD));
      fe.send(Req.SET_FEATURES, u64Payload(bit(Feature.VERSION_1) | PROTOCOL_FEATURES_BIT | LOG_ALL));
      fe.sendMemTable();
      await setLogBase(fe);
      fe.setRing(0, 'split', 16, RING, 0, { eventIdx: false, logAddr: 0x100000 });
    },
    /ring 0's used ring is logged at 0x100000, beyond it/,
    'dirty-log',
  ],
] as const) {
  test(`vhost-user dirty log: ${name} ends the connection with a reason`, async () => {
    const device = new RngDevice({ monitor: new Monitor() });
    const backend = new VhostUserBackend(device);
    const fe = new TestFrontEnd(backend);
    try {
      await act(fe);
      await closedWith(fe, reason, kind);
    } finally {
      fe.close();
    }
  });
}
