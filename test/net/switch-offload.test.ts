// NetSwitch (learning, ageing, flooding, link down), software UFO over IPv4, and the stream
// frame port (QEMU -netdev stream framing) including a hostile length.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetSwitch } from '../../src/net/switch.js';
import { ALL_OFFLOADS, NO_OFFLOADS, type FramePort, type NetOffload, type OffloadSupport } from '../../src/net/frame-port.js';
import { completeOffloads, offloadCounters } from '../../src/net/offload.js';
import { StreamFramePort, listenSwitch } from '../../src/node/net/stream-port.js';
import { BROADCAST, MAC_A, MAC_B, ether, ipFrame, pattern } from './frames.js';
import { until } from '../wait.js';

/** A port that records what it is sent. */
class Probe implements FramePort {
  readonly got: Uint8Array[] = [];
  onFrame: FramePort['onFrame'] = null;
  onLinkChange: FramePort['onLinkChange'] = null;
  linkUp = true;
  constructor(readonly name: string, readonly accepts: OffloadSupport = NO_OFFLOADS) {}
  send(frame: Uint8Array, _o?: NetOffload): boolean {
    this.got.push(frame.slice());
    return true;
  }
  /** This port's side sends a frame into the switch. */
  emit(frame: Uint8Array, o?: NetOffload): void {
    this.onFrame?.(frame, o);
  }
  close(): void {}
}

test('NetSwitch: floods unknown and broadcast, learns sources, ages them out, forgets a port that goes down', () => {
  let now = 0;
  const sw = new NetSwitch({ ageingMs: 1000, now: () => now });
  const [a, b, c] = [new Probe('a'), new Probe('b'), new Probe('c')];
  for (const p of [a, b, c]) sw.attach(p);
  a.emit(ether(MAC_B, MAC_A, 0x88b5, pattern(50))); // B unknown: flooded to b and c
  assert.deepEqual([a.got.length, b.got.length, c.got.length], [0, 1, 1]);
  b.emit(ether(MAC_A, MAC_B, 0x88b5, pattern(50))); // A learned: unicast to a only
  assert.deepEqual([a.got.length, b.got.length, c.got.length], [1, 1, 1]);
  a.emit(ether(MAC_B, MAC_A, 0x88b5, pattern(50))); // B learned now
  assert.deepEqual([a.got.length, b.got.length, c.got.length], [1, 2, 1]);
  c.emit(ether(BROADCAST, Uint8Array.of(2, 0, 0, 0, 0, 0xc), 0x0806, pattern(46)));
  assert.deepEqual([a.got.length, b.got.length, c.got.length], [2, 3, 1]);
  now = 5000; // B aged out: flooded again
  a.emit(ether(MAC_B, MAC_A, 0x88b5, pattern(50)));
  assert.deepEqual([a.got.length, b.got.length, c.got.length], [2, 4, 2]);
  b.emit(ether(MAC_A, MAC_B, 0x88b5, pattern(50)));
  b.onLinkChange!(false); // b down: its addresses forgotten, floods skip it
  a.emit(ether(MAC_B, MAC_A, 0x88b5, pattern(50)));
  assert.deepEqual([a.got.length, b.got.length, c.got.length], [3, 4, 3]);
  assert.equal(sw.portCount, 3);
  sw.detach(c);
  assert.equal(sw.portCount, 2);
  assert.equal(c.onFrame, null);
});

test('NetSwitch: a TSO frame goes whole to a port that takes TSO and segmented to one that does not', () => {
  const sw = new NetSwitch();
  const src = new Probe('src', ALL_OFFLOADS);
  const big = new Probe('big', ALL_OFFLOADS);
  const small = new Probe('small', NO_OFFLOADS);
  for (const p of [src, big, small]) sw.attach(p);
  const { frame, l4 } = ipFrame({ proto: 'tcp', payload: pattern(9000), partial: true });
  src.emit(frame, { needsCsum: { start: l4, offset: 16 }, gso: { type: 'tcpv4', segmentSize: 1000, headerLength: l4 + 20, ecn: false } });
  assert.equal(big.got.length, 1);
  assert.equal(small.got.length, 9);
});

test('completeOffloads: UFO over IPv4 becomes IP fragments whose reassembly is the datagram with a valid UDP checksum', () => {
  const payload = pattern(4000, 9);
  const { frame, l4 } = ipFrame({ proto: 'udp', payload, partial: true });
  const frags: Uint8Array[] = [];
  const before = offloadCounters.segmented;
  const n = completeOffloads(frame, { needsCsum: { start: l4, offset: 6 }, gso: { type: 'udp', segmentSize: 1480, headerLength: l4 + 8, ecn: false } }, NO_OFFLOADS, (f) => frags.push(f.slice()));
  assert.equal(n, 3);
  assert.equal(offloadCounters.segmented, before + 1);
  // Reassemble by fragment offset; check MF flags and header checksums.
  const ip = new Uint8Array(8 + 4000);
  frags.forEach((f, i) => {
    const fl = (f[20] << 8) | f[21];
    assert.equal((fl & 0x2000) !== 0, i < 2, 'MF on all but the last');
    const off = (fl & 0x1fff) * 8;
    ip.set(f.subarray(34), off);
    let s = 0;
    for (let j = 14; j < 34; j += 2) s += (f[j] << 8) | f[j + 1];
    while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
    assert.equal(s, 0xffff, 'IP header checksum');
  });
  assert.deepEqual(ip.subarray(8), payload);
  // The UDP checksum over the whole datagram (pseudo-header: 169.254.0.1 -> .2, proto 17).
  let s = 0xa9fe + 0x0001 + 0xa9fe + 0x0002 + 17 + ip.length;
  for (let j = 0; j < ip.length; j += 2) s += (ip[j] << 8) | (j + 1 < ip.length ? ip[j + 1] : 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  assert.equal(s, 0xffff);
});

test('stream port and switch socket: frames cross in QEMU -netdev stream framing; a length over the limit ends the connection', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-stream-'));
  const path = join(dir, 'sw.sock');
  const sw = new NetSwitch();
  const server = await listenSwitch(path, sw);
  try {
    const a = await StreamFramePort.connect(path);
    const b = await StreamFramePort.connect(path);
    await until(() => sw.portCount === 2, 'two ports');
    const got: Uint8Array[] = [];
    b.onFrame = (f) => got.push(f.slice());
    const f1 = ether(BROADCAST, MAC_A, 0x88b5, pattern(1400));
    assert.ok(a.send(f1));
    const { frame, l4 } = ipFrame({ proto: 'tcp', payload: pattern(5000), partial: true });
    // An offload the stream cannot carry is segmented before it is written.
    assert.ok(a.send(frame, { needsCsum: { start: l4, offset: 16 }, gso: { type: 'tcpv4', segmentSize: 1448, headerLength: l4 + 20, ecn: false } }));
    await until(() => got.length === 5, 'the frames arrive');
    assert.deepEqual(got[0], f1);
    // A hostile peer announces a 1 GiB frame: the switch drops that connection, nothing more.
    const raw = createConnection({ path });
    await new Promise((r) => raw.once('connect', r));
    await until(() => sw.portCount === 3, 'three ports');
    raw.write(Uint8Array.of(0x40, 0, 0, 0));
    await until(() => sw.portCount === 2, 'the hostile port is gone');
    raw.destroy();
    a.close();
    b.close();
  } finally {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('stream port: a burst of frames written in one tick arrives whole and in order; a backed-up socket makes send() false and the switch counts the drop', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-stream-'));
  const path = join(dir, 'sw.sock');
  const sw = new NetSwitch();
  const server = await listenSwitch(path, sw, { maxQueuedBytes: 64 * 1024 });
  try {
    const a = await StreamFramePort.connect(path, { maxQueuedBytes: 64 * 1024 });
    const b = await StreamFramePort.connect(path);
    await until(() => sw.portCount === 2, 'two ports');
    const got: number[] = [];
    b.onFrame = (f) => got.push(f.length === 60 + (f[14] ?? 0) ? f[14] : -1);
    // 200 frames of different lengths in one synchronous run (they leave corked, in one write).
    for (let i = 0; i < 200; i++) {
      const f = ether(BROADCAST, MAC_A, 0x88b5, pattern(46 + i));
      f[14] = i;
      assert.ok(a.send(f));
    }
    await until(() => got.length === 200, 'the burst arrives');
    assert.deepEqual(got, Array.from({ length: 200 }, (_, i) => i));
    // A peer that never reads: the switch's writes to it back up past 64 KiB and are refused.
    const raw = createConnection({ path });
    await new Promise((r) => raw.once('connect', r));
    await until(() => sw.portCount === 3, 'three ports');
    raw.pause();
    b.close();
    await until(() => sw.portCount === 2, 'b left');
    const big = ether(BROADCAST, MAC_A, 0x88b5, pattern(1400));
    for (let i = 0; i < 2000 && sw.counters.dropped === 0; i++) {
      a.send(big);
      if (i % 50 === 49) await new Promise((r) => setImmediate(r));
    }
    await until(() => sw.counters.dropped > 0, 'the switch counts a drop');
    // And a port whose own socket is backed up says so.
    let refused = false;
    for (let i = 0; i < 2000 && !refused; i++) refused = !a.send(big);
    assert.ok(refused, 'send() returned false once 64 KiB waited in the socket');
    assert.ok(a.dropped > 0);
    raw.destroy();
    a.close();
  } finally {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
