// QEMU's own virtio-net model with a stream netdev on a unix socket the test listens on (QEMU
// 7.2's `-netdev stream`: each frame is a 4-byte big-endian length, then the frame). The project
// has no NetDriver yet: the driver core (VirtioDriver) negotiates VIRTIO_NET_F_MAC and sets up
// the receiveq and transmitq, and the test exchanges one Ethernet frame each way through the raw
// queues, with the virtio_net_hdr (12 bytes with VERSION_1, 10 on a legacy interface: 5.1.6).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VirtioDriver } from '../../src/driver/driver.js';
import { DeviceId } from '../../src/spec/constants.js';
import { NET_FEATURES } from '../../src/spec/net.js';
import { PDESC_F_WRITE, PDESC_FLAGS, PDESC_LEN } from '../../src/spec/packed-layout.js';
import type { DriverQueue } from '../../src/virtqueue/queue.js';
import { bounded, clauses, deviceArg, needQemu, recordingMonitor, VARIANTS, variantMachine, variantTransport } from './harness.js';
import { until } from '../wait.js';

const MAC = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const ETHERTYPE = 0x88b5; // IEEE 802 local experimental

function frame(text: string, src: number[]): Buffer {
  const f = Buffer.alloc(64);
  f.fill(0xff, 0, 6);
  Buffer.from(src).copy(f, 6);
  f.writeUInt16BE(ETHERTYPE, 12);
  f.write(text, 14, 'latin1');
  return f;
}

for (const v of VARIANTS) {
  test(`virtio-net (raw queues): ${v.name}`, async (t) => {
    if (!needQemu(t)) return;
    const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-qtest-net-'));
    const path = join(dir, 'net.sock');
    let fromQemu = Buffer.alloc(0);
    let peer: Socket | null = null;
    const server = createServer((s) => {
      peer = s;
      s.on('data', (c: Buffer) => (fromQemu = Buffer.concat([fromQemu, c])));
      s.on('error', () => undefined);
    });
    await new Promise<void>((res) => server.listen(path, res));
    t.after(() => {
      peer?.destroy();
      server.close();
      rmSync(dir, { recursive: true, force: true });
    });
    const mac = MAC.map((b) => b.toString(16).padStart(2, '0')).join(':');
    const m = await variantMachine(t, v, ['-netdev', `stream,id=n0,server=off,addr.type=unix,addr.path=${path}`, '-device', deviceArg(v, 'net', ['netdev=n0', `mac=${mac}`])]);
    await until(() => peer !== null, 'QEMU to connect the netdev');
    const monitor = recordingMonitor();
    const d = new VirtioDriver<{ addr: number }>(await variantTransport(m, v, DeviceId.NET, monitor), {
      deviceId: DeviceId.NET,
      deviceFeatures: 1n << BigInt(NET_FEATURES.MAC),
      monitor,
      queueSize: 64,
    });
    const received: Buffer[] = [];
    let sent = 0;
    d.onUsed = (q: DriverQueue<{ addr: number }>) => {
      let tok: { addr: number } | undefined;
      while ((tok = q.getUsed()) !== undefined) {
        if (q.index === 0) received.push(Buffer.from(m.memory.bytes(tok.addr, q.lastLen)));
        else sent++;
      }
    };
    let rxq!: DriverQueue<{ addr: number }>;
    let txq!: DriverQueue<{ addr: number }>;
    await bounded(
      d.init({
        setup: async () => {
          rxq = await d.setupQueue(0);
          txq = await d.setupQueue(1);
        },
      }),
      'the driver to start',
    );
    const readMac: number[] = [];
    for (let i = 0; i < 6; i++) readMac.push(Number(await d.transport.readConfig(i, 1)));
    assert.deepEqual(readMac, MAC);
    const legacy = v.legacyMmio === true || v.pciMode === 'legacy';
    const hdr = legacy ? 10 : 12;
    for (let i = 0; i < 8; i++) {
      const a = d.allocator.alloc(2048, 64);
      rxq.begin().addWritable(a, 2048).commit({ addr: a });
    }
    d.kick(rxq);
    // Driver -> QEMU -> socket.
    const out = frame('virtio-ts to QEMU', MAC);
    const ta = d.allocator.alloc(hdr + out.length, 64);
    m.memory.bytes(ta, hdr).fill(0);
    m.memory.bytes(ta + hdr, out.length).set(out);
    txq.begin().addReadable(ta, hdr + out.length).commit({ addr: ta });
    d.kick(txq);
    await until(() => fromQemu.length >= 4 + out.length, 'the frame on the socket');
    assert.equal(fromQemu.readUInt32BE(0), out.length);
    assert.deepEqual(fromQemu.subarray(4, 4 + out.length), out);
    await until(() => sent === 1, 'the transmit buffer back');
    // Socket -> QEMU -> driver.
    const back = frame('QEMU to virtio-ts', [0x02, 0, 0, 0, 0, 1]);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(back.length);
    peer!.write(Buffer.concat([len, back]));
    if (v.packed) {
      // Finding F2: the used descriptor carries the length without VIRTQ_DESC_F_WRITE, so the
      // driver, reading 2.8.4 to the letter, sees an empty buffer.
      await until(() => received.length === 1, 'the received buffer');
      assert.equal(received[0].length, 0);
      assert.equal(m.memory.readU32(rxq.addrs.desc + PDESC_LEN), hdr + back.length);
      assert.equal(m.memory.readU16(rxq.addrs.desc + PDESC_FLAGS) & PDESC_F_WRITE, 0);
    } else {
      await until(() => received.length === 1, 'the received frame');
      assert.equal(received[0].length, hdr + back.length);
      assert.deepEqual(received[0].subarray(hdr), back);
    }
    assert.deepEqual(clauses(monitor), []);
  });
}
