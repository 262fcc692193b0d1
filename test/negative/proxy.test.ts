// The project's misbehaving peers run through the monitor proxy, and the proxy names the same
// clause (or vhost-user rule) as the peer's own monitor:
// - message level, back-end faults: a back-end whose replies are changed by the probe's
//   MutatingProxy (test/probe/proxy.ts); `virtio-ts probe` is the front-end and names the rule;
// - ring level, driver faults on a split ring: the probe's hostile chain cases (a raw
//   front-end), against a back-end whose device monitor names the clause;
// - ring level, driver faults on a packed ring: a raw front-end placing one bad descriptor;
// - ring level, a device fault: a back-end that returns a descriptor id the driver never made
//   available; the project's driver (over VhostUserFrontEnd) names it.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Monitor, type Verdict } from '../../src/monitor/monitor.js';
import { BlkDevice } from '../../src/devices/blk/device.js';
import { MemoryBlockStorage } from '../../src/devices/blk/storage.js';
import { RngDevice } from '../../src/devices/rng/device.js';
import { RngDriver } from '../../src/drivers/rng.js';
import { VirtioDevice } from '../../src/device/device.js';
import type { SplitDeviceQueue } from '../../src/virtqueue/split/device.js';
import { DescriptorChain } from '../../src/virtqueue/chain.js';
import { DeviceId, Feature } from '../../src/spec/constants.js';
import { bit } from '../../src/spec/features.js';
import { PDESC_F_AVAIL, PDESC_F_INDIRECT, PDESC_F_NEXT, PDESC_F_USED, PDESC_F_WRITE } from '../../src/spec/packed-layout.js';
import { RING_IDX, USED_RING } from '../../src/spec/split-layout.js';
import { serveVhostUser, type VhostUserDaemon } from '../../src/transports/vhost-user/daemon.js';
import { FLAG_REPLY, Req, statePayload, u64Payload, vringAddrPayload } from '../../src/transports/vhost-user/protocol.js';
import { VhostUserFrontEnd } from '../../src/transports/vhost-user/frontend/front-end.js';
import { native } from '../../src/native/index.js';
import { runProbe } from '../../src/probe/probe.js';
import type { ProbeReport } from '../../src/probe/report.js';
import { RawSession, USER_BASE } from '../../src/probe/raw-session.js';
import { HOSTILE_PROTOCOL, liveRing, withMemory } from '../../src/probe/hostile.js';
import type { RawSplitRing } from '../../src/probe/raw-session.js';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../../src/spec/constants.js';
import { MutatingProxy, asIs, encode, type Mutation, type ProxiedReply } from '../probe/proxy.js';
import { show, startProxy } from '../proxy/helpers.js';
import { WAIT_MS, until } from '../wait.js';

const n = native();
let dir = '';
let k = 0;
/** What each back-end's device monitor said (they are tolerant: they record and go on, or reset). */
const deviceVerdicts: Verdict[] = [];
let rng: VhostUserDaemon;
let blk: VhostUserDaemon;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'virtio-ts-proxy-faults-'));
  const monitor = () => new Monitor({ mode: 'tolerant', onVerdict: (v) => deviceVerdicts.push(v) });
  rng = serveVhostUser(() => new RngDevice({ monitor: monitor() }), { socket: join(dir, 'rng.sock') });
  blk = serveVhostUser(() => new BlkDevice({ storage: new MemoryBlockStorage(1 << 20), monitor: monitor() }), { socket: join(dir, 'blk.sock') });
});
after(async () => {
  await rng.close();
  await blk.close();
  rmSync(dir, { recursive: true, force: true });
});

const sock = (name: string) => join(dir, `${name}-${k++}.sock`);

/** Only the first reply of `request` changed by `change`. */
function onFirst(request: number, change: (r: ProxiedReply) => { data: Uint8Array; fds: number[] }[]): Mutation {
  let seen = 0;
  return (r) => (r.request === request && (r.flags & FLAG_REPLY) !== 0 && seen++ === 0 ? change(r) : [asIs(r)]);
}

function failed(r: ProbeReport): string[] {
  return [...r.checks.filter((c) => c.status === 'fail').map((c) => c.id), ...(r.hostile ?? []).filter((h) => !h.ok && h.clause).map((h) => h.clause!)];
}

/** probe -> monitor proxy -> mutating proxy -> serve `type`: the probe and the proxy must both name `rule`. */
function replyCase(rule: string, mutate: Mutation, type: 'rng' | 'blk' = 'rng'): void {
  test(`${rule}`, async () => {
    const faulty = sock('mutating');
    const mutating = new MutatingProxy(faulty, join(dir, `${type}.sock`), mutate);
    const { proxy, verdicts } = startProxy(sock('monitor'), faulty);
    try {
      const report = await runProbe({ socketPath: proxy.path, type, waitMs: WAIT_MS });
      assert.ok(failed(report).includes(rule), `the probe names ${rule}: ${failed(report).join(', ')}`);
      const v = verdicts.find((x) => x.clause === rule);
      assert.ok(v !== undefined, `the proxy names ${rule}:\n${show(verdicts)}`);
      assert.equal(v.side, 'device', 'the back-end broke it');
      assert.equal(v.source, 'vhost-user');
      assert.match(v.cause ?? '', /^reply to VHOST_USER_/);
    } finally {
      proxy.close();
      mutating.close();
    }
  });
}

describe('message level: a back-end breaks a vhost-user rule; the probe and the proxy name it', () => {
  replyCase('vhost-user.reply.flags', onFirst(Req.GET_FEATURES, (r) => [{ data: encode(r.request, 1 | FLAG_REPLY | 8, r.payload), fds: r.fds }]));
  replyCase('vhost-user.queue-num', onFirst(Req.GET_QUEUE_NUM, (r) => [{ data: encode(r.request, r.flags, u64Payload(0)), fds: r.fds }]));
  replyCase('vhost-user.reply.request', onFirst(Req.GET_PROTOCOL_FEATURES, (r) => [{ data: encode(Req.GET_QUEUE_NUM, r.flags, r.payload), fds: r.fds }]));
  replyCase('vhost-user.config.echo', onFirst(Req.GET_CONFIG, (r) => {
    const p = r.payload.slice();
    new DataView(p.buffer).setUint32(0, 4, true); // an offset that was not asked
    return [{ data: encode(r.request, r.flags, p), fds: r.fds }];
  }), 'blk');

  test('a front-end request with protocol version 2 in its header: vhost-user.request.header, the front-end', async () => {
    const { proxy, verdicts } = startProxy(sock('monitor'), join(dir, 'rng.sock'));
    try {
      const report = await runProbe({ socketPath: proxy.path, type: 'rng', waitMs: WAIT_MS, cases: ['message.version-2'] });
      assert.ok(report.hostile?.[0].ok, JSON.stringify(report.hostile));
      const v = verdicts.find((x) => x.clause === 'vhost-user.request.header');
      assert.ok(v !== undefined, show(verdicts));
      assert.equal(v.side, 'driver');
    } finally {
      proxy.close();
    }
  });
});

/**
 * Runs the probe's hostile chain case `id` (a raw front-end places the chain) through the proxy
 * against serve blk: the device's monitor and the proxy must both name `clause`.
 */
function chainCase(id: string, clause: string): void {
  test(`${id}: ${clause}`, async () => {
    const { proxy, verdicts } = startProxy(sock('monitor'), join(dir, 'blk.sock'));
    const mark = deviceVerdicts.length;
    try {
      await runProbe({ socketPath: proxy.path, type: 'blk', waitMs: WAIT_MS, cases: [id] });
      const device = deviceVerdicts.slice(mark).map((v) => v.clause);
      assert.ok(device.includes(clause), `the device names ${clause}: ${device.join(', ')}`);
      const v = verdicts.find((x) => x.clause === clause);
      assert.ok(v !== undefined, `the proxy names ${clause}:\n${show(verdicts)}`);
      assert.equal(v.side, 'driver');
      assert.equal(v.queue, 0);
      assert.ok(v.position !== undefined && 'availIdx' in v.position, JSON.stringify(v));
    } finally {
      proxy.close();
    }
  });
}

/**
 * A split chain placed by hand on a raw front-end's live ring 0 (16 entries; `features` as
 * negotiated): the device's monitor and the proxy must both name `clause`.
 */
function splitCase(title: string, clause: string, place: (r: RawSplitRing) => void, features = bit(Feature.VERSION_1) | bit(Feature.INDIRECT_DESC)): void {
  test(`${title}: ${clause}`, async () => {
    const { proxy, verdicts } = startProxy(sock('monitor'), join(dir, 'blk.sock'));
    const mark = deviceVerdicts.length;
    const fe = new RawSession(proxy.path);
    try {
      const ring = await liveRing(fe, features);
      place(ring);
      await until(() => deviceVerdicts.length > mark, 'the device judged the chain');
      fe.close();
      await until(() => proxy.openSessions === 0, 'the session ended');
      const device = deviceVerdicts.slice(mark).map((v) => v.clause);
      assert.ok(device.includes(clause), `the device names ${clause}: ${device.join(', ')}`);
      assert.ok(verdicts.some((v) => v.clause === clause && v.queue === 0), `the proxy names ${clause}:\n${show(verdicts)}`);
    } finally {
      fe.close();
      proxy.close();
    }
  });
}

const [NEXT, WRITE, INDIRECT] = [VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_INDIRECT];

describe('ring level, split: a front-end breaks a clause in its chains; the device and the proxy name the same clause', () => {
  splitCase('INDIRECT and NEXT on one descriptor', 'split.indirect-descs.driver.4', (r) => {
    r.desc(0, 0x30000, 32, INDIRECT | NEXT, 1);
    r.desc(1, 0x20000, 16, WRITE);
    r.offer(0);
  });
  splitCase('an INDIRECT descriptor without VIRTIO_F_INDIRECT_DESC', 'split.indirect-descs.driver.1', (r) => {
    r.desc(0, 0x30000, 32, INDIRECT);
    r.offer(0);
  }, bit(Feature.VERSION_1));
  splitCase('an indirect entry chaining beyond its table', 'struct.desc-next.driver.1', (r) => {
    r.desc(0, 0x20000, 16, WRITE | NEXT, 5, 0x30000);
    r.desc(0, 0x30000, 32, INDIRECT);
    r.offer(0);
  });
  splitCase('an indirect table that loops', 'split.desc-table.driver.1', (r) => {
    r.desc(0, 0x20000, 16, WRITE | NEXT, 1, 0x30000);
    r.desc(1, 0x20100, 16, WRITE | NEXT, 0, 0x30000);
    r.desc(0, 0x30000, 32, INDIRECT);
    r.offer(0);
  });

  // 17 entries on a queue of 16: still well-defined (Linux does it, catalogue/deviations.tsv), a verdict from both.
  splitCase('an indirect table of 17 descriptors on a queue of 16', 'split.indirect-descs.driver.3', (r) => {
    for (let i = 0; i < 17; i++) r.desc(i, 0x20000 + i * 0x100, 16, i < 16 ? WRITE | NEXT : WRITE, i + 1, 0x30000);
    r.desc(0, 0x30000, 17 * 16, INDIRECT);
    r.offer(0);
  });
  chainCase('chain.loop', 'split.desc-table.driver.1');
  chainCase('chain.next-beyond-size', 'struct.desc-next.driver.1');
  chainCase('chain.head-beyond-size', 'struct.desc-next.driver.1');
  chainCase('chain.buffer-outside-memory', 'struct.buffer-range.driver.1');
  chainCase('chain.indirect-outside', 'struct.buffer-range.driver.1');
  chainCase('chain.indirect-17', 'struct.indirect-len.driver.1');
  chainCase('chain.indirect-nested', 'split.indirect-descs.driver.2');
  chainCase('chain.avail-jump', 'split.avail-ring.driver.1');
});

/**
 * A raw front-end with one packed ring of 16 at 0x1000 (VERSION_1, INDIRECT_DESC, RING_PACKED):
 * `place` writes descriptors into the ring (slot, addr, len, flags, id), then the ring is kicked.
 */
async function packedFault(place: (desc: (slot: number, addr: number, len: number, flags: number, id: number) => void, fe: RawSession) => void, features = bit(Feature.VERSION_1) | bit(Feature.INDIRECT_DESC) | bit(Feature.RING_PACKED)): Promise<{ proxyVerdicts: string[]; device: string[]; all: string }> {
  const { proxy, verdicts } = startProxy(sock('monitor'), join(dir, 'blk.sock'));
  const mark = deviceVerdicts.length;
  const fe = new RawSession(proxy.path);
  try {
    const agreed = await fe.negotiate(features, HOSTILE_PROTOCOL);
    assert.ok(agreed.features & bit(Feature.RING_PACKED), 'the back-end offers packed rings');
    const ring = 0x1000;
    const size = 16;
    fe.bytes.fill(0, ring, ring + 16 * size + 8);
    await fe.send(Req.SET_VRING_NUM, statePayload(0, size));
    await fe.send(Req.SET_VRING_ADDR, vringAddrPayload(0, USER_BASE + ring, USER_BASE + ring + 16 * size + 4, USER_BASE + ring + 16 * size));
    await fe.send(Req.SET_VRING_BASE, statePayload(0, 0x80008000)); // slot 0 of both, wrap counters 1
    const call = fe.own(n.eventfd());
    const kick = fe.own(n.eventfd());
    await fe.send(Req.SET_VRING_CALL, u64Payload(0n), [call]);
    await fe.send(Req.SET_VRING_KICK, u64Payload(0n), [kick]);
    await fe.send(Req.SET_VRING_ENABLE, statePayload(0, 1));
    place((slot, addr, len, flags, id) => {
      const at = ring + slot * 16;
      fe.view.setBigUint64(at, BigInt(addr), true);
      fe.view.setUint32(at + 8, len, true);
      fe.view.setUint16(at + 12, id, true);
      fe.view.setUint16(at + 14, flags, true);
    }, fe);
    n.eventfdWrite(kick, 1);
    await until(() => deviceVerdicts.length > mark, 'the device judged the chain');
    fe.close();
    await until(() => proxy.openSessions === 0, 'the session ended');
    return { proxyVerdicts: verdicts.map((v) => v.clause), device: deviceVerdicts.slice(mark).map((v) => v.clause), all: show(verdicts) };
  } finally {
    fe.close();
    proxy.close();
  }
}

/** Entry `i` of a packed indirect table at guest address `table`. */
function indirectEntry(fe: RawSession, table: number, i: number, addr: number, len: number, flags: number): void {
  const at = table + i * 16;
  fe.view.setBigUint64(at, BigInt(addr), true);
  fe.view.setUint32(at + 8, len, true);
  fe.view.setUint16(at + 12, 0, true);
  fe.view.setUint16(at + 14, flags, true);
}

/** A packed-ring fault placed by `place`: the device's monitor and the proxy must both name `clause`. */
function packedCase(title: string, clause: string, place: Parameters<typeof packedFault>[0], features?: bigint): void {
  test(`${title}: ${clause}`, async () => {
    const r = await packedFault(place, features);
    assert.ok(r.device.includes(clause), `the device names ${clause}: ${r.device.join(', ')}`);
    assert.ok(r.proxyVerdicts.includes(clause), `the proxy names ${clause}:\n${r.all}`);
  });
}

describe('ring level, packed: a front-end breaks a clause in its descriptors; the device and the proxy name the same clause', () => {
  packedCase('a buffer outside guest memory', 'struct.buffer-range.driver.1', (desc) => desc(0, 0x4000_0000, 64, PDESC_F_AVAIL | PDESC_F_WRITE, 0));
  // Later descriptors first, the head made available last (2.8.6).
  packedCase('an INDIRECT descriptor inside a list linked by NEXT', 'packed.indirect-descs.driver.4', (desc) => {
    desc(1, 0x30000, 16, PDESC_F_AVAIL | PDESC_F_INDIRECT, 0);
    desc(0, 0x20000, 16, PDESC_F_AVAIL | PDESC_F_NEXT, 0);
  });
  packedCase('a device-readable descriptor after a device-writable one', 'packed.scatter-gather-support.driver.3', (desc) => {
    desc(1, 0x20100, 16, PDESC_F_AVAIL, 0);
    desc(0, 0x20000, 16, PDESC_F_AVAIL | PDESC_F_WRITE | PDESC_F_NEXT, 0);
  });
  packedCase('an indirect table of 17 bytes', 'struct.indirect-len.driver.1', (desc) => desc(0, 0x30000, 17, PDESC_F_AVAIL | PDESC_F_INDIRECT, 0));
  packedCase('a list longer than the queue (every slot linked by NEXT)', 'packed.scatter-gather-support.driver.2', (desc) => {
    for (let slot = 15; slot >= 0; slot--) desc(slot, 0x20000 + slot * 0x100, 16, PDESC_F_AVAIL | PDESC_F_WRITE | PDESC_F_NEXT, 0);
  });
  packedCase('an INDIRECT descriptor without VIRTIO_F_INDIRECT_DESC', 'packed.indirect-descs.driver.1', (desc) => desc(0, 0x30000, 32, PDESC_F_AVAIL | PDESC_F_INDIRECT, 0), bit(Feature.VERSION_1) | bit(Feature.RING_PACKED));
  // 17 entries on a queue of 16: still well-defined, so a verdict from both and the buffer served.
  packedCase('an indirect table of 17 descriptors on a queue of 16', 'packed.indirect-descs.driver.3', (desc, fe) => {
    for (let i = 0; i < 17; i++) indirectEntry(fe, 0x30000, i, 0x20000 + i * 0x100, 16, PDESC_F_WRITE);
    desc(0, 0x30000, 17 * 16, PDESC_F_AVAIL | PDESC_F_INDIRECT, 0);
  });
  packedCase('an indirect table with a device-readable entry after a device-writable one', 'packed.scatter-gather-support.driver.3', (desc, fe) => {
    indirectEntry(fe, 0x30000, 0, 0x20000, 16, PDESC_F_WRITE);
    indirectEntry(fe, 0x30000, 1, 0x20100, 16, 0);
    desc(0, 0x30000, 32, PDESC_F_AVAIL | PDESC_F_INDIRECT, 0);
  });
  packedCase('an indirect table outside guest memory', 'struct.buffer-range.driver.1', (desc) => desc(0, 0x4000_0000, 32, PDESC_F_AVAIL | PDESC_F_INDIRECT, 0));
});

/** An entropy device that answers every request with a used element naming the last descriptor of the table, never exposed. */
class WrongIdDevice extends VirtioDevice {
  constructor(monitor: Monitor) {
    const chain = new DescriptorChain(64);
    let self: WrongIdDevice | null = null;
    super(
      {
        deviceId: DeviceId.ENTROPY,
        name: 'virtio-rng',
        numQueues: 1,
        queueMaxSize: 64,
        process(queue, ctx) {
          const q = queue as SplitDeviceQueue;
          while (q.pop(chain)) {
            const idx = q.nextUsed;
            const at = q.usedAddr + USED_RING + 8 * (idx & (q.size - 1));
            ctx.memory.writeU32(at, q.size - 1); // the driver's free list hands out low heads first
            ctx.memory.writeU32(at + 4, 4);
            ctx.memory.storeU16(q.usedAddr + RING_IDX, (idx + 1) & 0xffff);
            self!.host?.interrupt(q.index);
          }
        },
      },
      { monitor, transportFeatures: bit(Feature.VERSION_1) },
    );
    self = this;
  }
}

describe('ring level, a device fault: the back-end returns an id the driver never made available', () => {
  test('struct.used-id.device.1: named by the driver (over VhostUserFrontEnd) and by the proxy', async () => {
    const backend = sock('wrong-id');
    const daemon = serveVhostUser(() => new WrongIdDevice(new Monitor({ mode: 'tolerant' })), { socket: backend });
    const { proxy, verdicts } = startProxy(sock('monitor'), backend);
    const driverMonitor = new Monitor({ mode: 'tolerant' });
    const fe = await VhostUserFrontEnd.connect({ socketPath: proxy.path, deviceId: DeviceId.ENTROPY });
    try {
      const driver = new RngDriver(fe, { monitor: driverMonitor });
      await driver.start();
      await Promise.race([driver.request(16).catch(() => undefined), until(() => driverMonitor.has('struct.used-id.device.1'), 'the driver saw it')]);
      await until(() => verdicts.some((v) => v.clause === 'struct.used-id.device.1'), `the proxy names it:\n${show(verdicts)}`);
      const v = verdicts.find((x) => x.clause === 'struct.used-id.device.1')!;
      assert.equal(v.side, 'device');
      assert.equal(v.queue, 0);
      assert.ok(driverMonitor.has('struct.used-id.device.1'), 'the driver names it too');
    } finally {
      await fe.close().catch(() => undefined);
      proxy.close();
      await daemon.close();
    }
  });
});

/**
 * A raw front-end sets ring 0 up with `num` entries at desc/driver/device areas (guest
 * addresses) and sends its kick fd: the proxy judges the ring where it starts watching it (its
 * create checks) and must name `clause`. The back-end judges what it judges; only the proxy's
 * verdict is asserted here (the device-side sites of these clauses have their own scenarios).
 */
function setupCase(title: string, clause: string, features: bigint, num: number, desc: number, driver: number, device: number): void {
  test(`${title}: ${clause}`, async () => {
    const { proxy, verdicts } = startProxy(sock('monitor'), join(dir, 'blk.sock'));
    const fe = new RawSession(proxy.path);
    try {
      await withMemory(fe, features);
      await fe.send(Req.SET_VRING_NUM, statePayload(0, num));
      await fe.send(Req.SET_VRING_ADDR, vringAddrPayload(0, USER_BASE + desc, USER_BASE + device, USER_BASE + driver));
      await fe.send(Req.SET_VRING_BASE, statePayload(0, features & bit(Feature.RING_PACKED) ? 0x80008000 : 0));
      await fe.send(Req.SET_VRING_KICK, u64Payload(0n), [fe.own(n.eventfd())]);
      await until(() => verdicts.some((v) => v.clause === clause), `the proxy names ${clause}:\n${show(verdicts)}`);
      const v = verdicts.find((x) => x.clause === clause)!;
      assert.equal(v.side, 'driver');
      assert.equal(v.queue, 0);
    } finally {
      fe.close();
      proxy.close();
    }
  });
}

const SPLIT_FEATURES = bit(Feature.VERSION_1) | bit(Feature.INDIRECT_DESC);
const PACKED_FEATURES = SPLIT_FEATURES | bit(Feature.RING_PACKED);

describe('ring set-up: a front-end gives a ring the layout forbids; the proxy names the clause when it starts watching', () => {
  // Split: 16 entries -> descriptor table 256 bytes (16-aligned), driver area 38 (2), device area 134 (4).
  setupCase('a split queue of 15 entries (not a power of two)', 'struct.queue-config.driver.1', SPLIT_FEATURES, 15, 0x1000, 0x2000, 0x3000);
  setupCase('a split descriptor table at 0x1008 (not 16-byte aligned)', 'split.alignment.driver.1', SPLIT_FEATURES, 16, 0x1008, 0x2000, 0x3000);
  setupCase('a split driver area at 0x2001 (not 2-byte aligned)', 'split.alignment.driver.1', SPLIT_FEATURES, 16, 0x1000, 0x2001, 0x3000);
  setupCase('a split device area at 0x3002 (not 4-byte aligned)', 'split.alignment.driver.1', SPLIT_FEATURES, 16, 0x1000, 0x2000, 0x3002);
  // The table starts in guest memory (1 MiB) and runs past its end.
  setupCase('a split descriptor table running past the end of guest memory', 'struct.buffer-range.driver.1', SPLIT_FEATURES, 16, (1 << 20) - 16, 0x2000, 0x3000);
  // Packed: 1..32768 entries; the ring 16-aligned, both event suppression areas 4-aligned.
  setupCase('a packed queue of 40000 entries (more than 32768)', 'struct.queue-config.driver.1', PACKED_FEATURES, 40000, 0x1000, 0x2000, 0x3000);
  setupCase('a packed descriptor ring at 0x1008 (not 16-byte aligned)', 'packed.ring.driver.1', PACKED_FEATURES, 16, 0x1008, 0x2000, 0x3000);
  setupCase('a packed driver event suppression area at 0x2002 (not 4-byte aligned)', 'packed.ring.driver.1', PACKED_FEATURES, 16, 0x1000, 0x2002, 0x3000);
  setupCase('a packed device event suppression area at 0x3002 (not 4-byte aligned)', 'packed.ring.driver.1', PACKED_FEATURES, 16, 0x1000, 0x2000, 0x3002);
});

describe('ring level, packed, a device fault: a used descriptor names a buffer id the driver never made available', () => {
  // The back-end is never kicked, so it writes nothing; the test writes the device's part of
  // the ring (slot 0 marked used, naming buffer 9) as a misbehaving back-end would. Each look of
  // the proxy is forced by a request it relays (it looks at the rings after each message, before
  // the reply can come back), so nothing here depends on timing.
  test('packed.desc-table.device.3: the proxy names the device', async () => {
    const { proxy, verdicts } = startProxy(sock('monitor'), join(dir, 'blk.sock'));
    const fe = new RawSession(proxy.path);
    try {
      await withMemory(fe, PACKED_FEATURES);
      const ring = 0x1000;
      const size = 16;
      fe.bytes.fill(0, ring, ring + 16 * size + 8);
      await fe.send(Req.SET_VRING_NUM, statePayload(0, size));
      await fe.send(Req.SET_VRING_ADDR, vringAddrPayload(0, USER_BASE + ring, USER_BASE + ring + 16 * size + 4, USER_BASE + ring + 16 * size));
      await fe.send(Req.SET_VRING_BASE, statePayload(0, 0x80008000));
      await fe.send(Req.SET_VRING_CALL, u64Payload(0n), [fe.own(n.eventfd())]);
      await fe.send(Req.SET_VRING_KICK, u64Payload(0n), [fe.own(n.eventfd())]);
      const put = (slot: number, id: number, flags: number) => {
        const at = ring + slot * 16;
        fe.view.setBigUint64(at, BigInt(0x20000 + slot * 0x100), true);
        fe.view.setUint32(at + 8, 16, true);
        fe.view.setUint16(at + 12, id, true);
        fe.view.setUint16(at + 14, flags, true);
      };
      // Buffers 0 and 1 made available (wrap counter 1: AVAIL set, USED clear); the proxy looks.
      put(0, 0, PDESC_F_AVAIL | PDESC_F_WRITE);
      put(1, 1, PDESC_F_AVAIL | PDESC_F_WRITE);
      await fe.askU64(Req.GET_FEATURES);
      assert.equal(verdicts.length, 0, show(verdicts));
      // Slot 0 marked used (AVAIL and USED both equal to the wrap counter) with buffer id 9.
      put(0, 9, PDESC_F_AVAIL | PDESC_F_USED | PDESC_F_WRITE);
      await fe.askU64(Req.GET_FEATURES);
      const v = verdicts.find((x) => x.clause === 'packed.desc-table.device.3');
      assert.ok(v !== undefined, show(verdicts));
      assert.equal(v.side, 'device');
      assert.equal(v.queue, 0);
    } finally {
      fe.close();
      proxy.close();
    }
  });
});
