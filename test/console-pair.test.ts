// Console driver <-> console device over loopback (sync and async), both ring formats:
// single port and multiport, data both ways byte-exact, resize, emergency write, hot-plug,
// a real Node stream backend, and the console.* checks each side makes of the other.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { Monitor } from '../src/monitor/monitor.js';
import { LoopbackTransport } from '../src/transports/loopback/loopback.js';
import { ConsoleDevice, ConsoleEvent, MemoryConsoleEndpoint, type ConsoleDeviceOptions } from '../src/devices/console/device.js';
import { VirtioDevice } from '../src/device/device.js';
import { ConsoleDriver, type ConsoleDriverOptions, type ConsolePort } from '../src/drivers/console.js';
import { StreamConsoleEndpoint, listenConsole } from '../src/node/console-stream.js';
import { CONSOLE_FEATURES } from '../src/spec/console.js';
import { Feature, Status } from '../src/spec/constants.js';
import { bit, hasFeature, TRANSPORT_FEATURES_SPLIT } from '../src/spec/features.js';
import { concat, pattern, settle, sink, total, until } from './console-helpers.js';
import { WAIT_MS } from './wait.js';

const FORMATS = {
  split: TRANSPORT_FEATURES_SPLIT | bit(Feature.SUSPEND),
  packed: TRANSPORT_FEATURES_SPLIT | bit(Feature.SUSPEND) | bit(Feature.RING_PACKED),
} as const;
const MODES = ['sync', 'async'] as const;

function pair(
  format: keyof typeof FORMATS,
  mode: 'sync' | 'async',
  deviceOptions: ConsoleDeviceOptions,
  driverOptions: ConsoleDriverOptions = {},
  monitors: { dev?: Monitor; drv?: Monitor } = {},
) {
  const devMon = monitors.dev ?? new Monitor();
  const drvMon = monitors.drv ?? new Monitor();
  const device = new ConsoleDevice({ monitor: devMon, queueMaxSize: 32, ...deviceOptions });
  if (format === 'split') device.withholdFeatures(bit(Feature.RING_PACKED));
  const transport = new LoopbackTransport(device, GuestMemory.create(8 << 20), { mode });
  const driver = new ConsoleDriver(transport, { monitor: drvMon, transportFeatures: FORMATS[format], receiveBufferSize: 512, receiveBuffers: 8, ...driverOptions });
  return { device, driver, transport, devMon, drvMon };
}

for (const format of ['split', 'packed'] as const) {
  for (const mode of MODES) {
    test(`console pair, single port, ${format} ring, loopback ${mode}: data both ways, resize, emergency write, suspend; no verdicts`, async () => {
      const backend = new MemoryConsoleEndpoint();
      const emergency: number[] = [];
      const { device, driver, devMon, drvMon } = pair(format, mode, { backend, size: { cols: 80, rows: 25 }, emergencyWrite: (b) => emergency.push(b) });
      // emerg_wr works on an unconfigured device (before any status write).
      await driver.emergWrite('!');
      assert.deepEqual(emergency, [0x21]);
      await driver.start();
      assert.equal(device.ringFormat, format);
      assert.equal(driver.multiport, false);
      const f = CONSOLE_FEATURES;
      assert.ok(hasFeature(driver.features, f.SIZE) && hasFeature(driver.features, f.EMERG_WRITE) && !hasFeature(driver.features, f.MULTIPORT));
      const port = await driver.waitForPort(0);
      assert.deepEqual(port.size, { cols: 80, rows: 25 });
      assert.equal(device.port(0)!.guestOpen, true);

      // Driver -> host: 200 000 bytes in 4 KiB transmit buffers through a 32-entry ring.
      const out = pattern(1, 200_000);
      await port.write(out);
      await port.write('');
      assert.deepEqual(backend.bytes, out);

      // Host -> driver: 300 000 bytes through 8 receive buffers of 512 bytes (hundreds of refills).
      const got = sink(port);
      const input = pattern(2, 300_000);
      for (let off = 0; off < input.length; off += 25_000) backend.send(input.subarray(off, off + 25_000));
      await until(() => total(got) === input.length, 'host bytes at the driver');
      assert.deepEqual(concat(got), input);
      assert.equal(device.port(0)!.buffered, 0);
      assert.equal(device.port(0)!.dropped, 0);
      assert.ok(got.every((c) => c.length <= 512));

      // Resize: configuration change notification, port 0 only.
      const resized = new Promise((res) => (port.onResize = res));
      device.resize(132, 43);
      assert.deepEqual(await resized, { cols: 132, rows: 43 });
      assert.deepEqual(driver.size, { cols: 132, rows: 43 });

      await driver.emergWrite('ok');
      assert.deepEqual(emergency, [0x21, 0x6f, 0x6b]);

      // Suspend: host bytes and driver writes wait, then flow after resume.
      await driver.suspend({ timeoutMs: WAIT_MS });
      got.length = 0;
      backend.send('typed while suspended');
      const written = port.write('written while suspended');
      await settle();
      assert.equal(total(got), 0);
      assert.equal(device.port(0)!.buffered, 'typed while suspended'.length);
      await driver.resume({ timeoutMs: WAIT_MS });
      await written;
      await until(() => total(got) === 'typed while suspended'.length, 'bytes after resume');
      assert.equal(new TextDecoder().decode(concat(got)), 'typed while suspended');
      assert.ok(backend.text.endsWith('written while suspended'));

      assert.deepEqual(devMon.verdicts, []);
      assert.deepEqual(drvMon.verdicts, []);
      await driver.shutdown();
      assert.deepEqual(devMon.verdicts, []);
    });

    test(`console pair, multiport with 3 ports, ${format} ring, loopback ${mode}: names, open/close, data, resize, hot-plug; no verdicts`, async () => {
      const b = [new MemoryConsoleEndpoint(), new MemoryConsoleEndpoint(), new MemoryConsoleEndpoint()];
      const emergency: number[] = [];
      const { device, driver, devMon, drvMon } = pair(format, mode, {
        ports: [
          { backend: b[0], name: 'console0' },
          { backend: b[1], name: 'org.example.data' },
          { backend: b[2], name: 'org.example.log', hostOpen: false },
        ],
        maxPorts: 4,
        size: { cols: 80, rows: 25 },
        emergencyWrite: (x) => emergency.push(x),
      });
      const added: number[] = [];
      driver.onPort = (p) => added.push(p.id);
      await driver.start();
      assert.equal(driver.multiport, true);
      assert.equal(driver.maxNrPorts, 4);
      assert.equal(device.numQueues, 10);
      const [p0, p1, p2] = await Promise.all(['console0', 'org.example.data', 'org.example.log'].map((n) => driver.waitForPort(n)));
      assert.deepEqual([p0.id, p1.id, p2.id], [0, 1, 2]);
      assert.deepEqual(added.sort(), [0, 1, 2]);
      // Port 0 is the console: the driver answered CONSOLE_PORT with PORT_OPEN 1.
      assert.equal(p0.console, true);
      assert.equal(p1.console, false);
      await until(() => device.port(0)!.guestOpen, 'PORT_OPEN for the console port');
      assert.equal(p0.isOpen, true);
      assert.deepEqual(p0.size, { cols: 80, rows: 25 });
      await until(() => p1.hostOpen, 'PORT_OPEN from the device');
      assert.equal(p2.hostOpen, false);

      // Port 1 is not open yet: the device holds host bytes until the driver opens it.
      const guestOpen1: boolean[] = [];
      b[1].onGuestOpen = (o) => guestOpen1.push(o);
      const got1 = sink(p1);
      b[1].send('early bytes');
      await settle();
      assert.equal(total(got1), 0);
      assert.equal(device.port(1)!.buffered, 11);
      await p1.open();
      await until(() => total(got1) === 11, 'held bytes after PORT_OPEN');
      assert.equal(new TextDecoder().decode(concat(got1)), 'early bytes');
      assert.deepEqual(guestOpen1, [true]);
      got1.length = 0;

      // The host side of port 2 connects.
      const hostOpened = new Promise((res) => (p2.onHostOpen = res));
      device.port(2)!.setHostOpen(true);
      assert.equal(await hostOpened, true);
      await p2.open();

      // Data both ways on three ports at once, byte-exact; the async iterator on port 2.
      const got0 = sink(p0);
      const out = [pattern(10, 5_000), pattern(11, 150_000), pattern(12, 90_000)];
      const input = [pattern(20, 7_000), pattern(21, 120_000), pattern(22, 100_000)];
      const reading2 = (async () => {
        const chunks: Uint8Array[] = [];
        for await (const c of p2) {
          chunks.push(c);
          if (total(chunks) >= input[2].length) break;
        }
        return concat(chunks);
      })();
      const writes = [p0.write(out[0]), p1.write(out[1]), p2.write(out[2])];
      for (let i = 0; i < 3; i++) for (let off = 0; off < input[i].length; off += 10_000) b[i].send(input[i].subarray(off, off + 10_000));
      await Promise.all(writes);
      for (let i = 0; i < 3; i++) assert.deepEqual(b[i].bytes, out[i], `port ${i} driver -> host`);
      await until(() => total(got0) === input[0].length && total(got1) === input[1].length, 'host bytes on ports 0 and 1');
      assert.deepEqual(concat(got0), input[0]);
      assert.deepEqual(concat(got1), input[1]);
      assert.deepEqual(await reading2, input[2]);

      // RESIZE for port 1; port 0 by config change and RESIZE, reported once.
      const sizes1: unknown[] = [];
      const sizes0: unknown[] = [];
      p1.onResize = (s) => sizes1.push(s);
      p0.onResize = (s) => sizes0.push(s);
      device.resize(100, 30, 1);
      device.resize(120, 40);
      await until(() => sizes1.length === 1 && sizes0.length === 1, 'resize events');
      await settle();
      assert.deepEqual(sizes1, [{ cols: 100, rows: 30 }]);
      assert.deepEqual(sizes0, [{ cols: 120, rows: 40 }]);
      assert.deepEqual(driver.size, { cols: 120, rows: 40 });

      // Closing port 1: the device keeps the host's bytes to itself.
      await p1.close();
      await until(() => guestOpen1.length === 2, 'PORT_OPEN 0 at the device');
      assert.deepEqual(guestOpen1, [true, false]);
      got1.length = 0;
      b[1].send('while closed');
      await settle();
      assert.equal(total(got1), 0);
      assert.equal(device.port(1)!.buffered, 12);

      // Hot-unplug port 2, hot-plug port 3.
      const removed = new Promise<void>((res) => (p2.onRemove = res));
      device.removePort(2);
      await removed;
      assert.equal(p2.removed, true);
      assert.equal(driver.ports.has(2), false);
      await assert.rejects(p2.write('x'), /removed/);
      const b3 = new MemoryConsoleEndpoint();
      device.addPort(3, { backend: b3, name: 'hotplug' });
      const p3 = await driver.waitForPort('hotplug');
      assert.equal(p3.id, 3);
      await p3.open();
      const got3 = sink(p3);
      b3.send(pattern(3, 20_000));
      await p3.write('hello from the guest');
      await until(() => total(got3) === 20_000, 'port 3 bytes');
      assert.deepEqual(concat(got3), pattern(3, 20_000));
      assert.equal(b3.text, 'hello from the guest');

      await driver.emergWrite('E');
      assert.deepEqual(emergency, [0x45]);

      assert.deepEqual(devMon.verdicts, []);
      assert.deepEqual(drvMon.verdicts, []);
      await driver.shutdown();
      assert.deepEqual(devMon.verdicts, [], 'DEVICE_READY was sent: nothing to say at reset');
    });
  }
}

test('console pair, feature variants (IN_ORDER, NOTIFICATION_DATA, no EVENT_IDX, no INDIRECT_DESC, MULTIPORT declined), sync and async: byte-exact, no verdicts', async () => {
  const base = TRANSPORT_FEATURES_SPLIT | bit(Feature.SUSPEND);
  const f = CONSOLE_FEATURES;
  const variants: [string, bigint, bigint | undefined][] = [
    ['split IN_ORDER NOTIFICATION_DATA', base | bit(Feature.IN_ORDER) | bit(Feature.NOTIFICATION_DATA), undefined],
    ['split, no EVENT_IDX', base & ~bit(Feature.EVENT_IDX), undefined],
    ['split, no EVENT_IDX, IN_ORDER', (base & ~bit(Feature.EVENT_IDX)) | bit(Feature.IN_ORDER), undefined],
    ['split, no INDIRECT_DESC, MULTIPORT declined', base & ~bit(Feature.INDIRECT_DESC), bit(f.SIZE) | bit(f.EMERG_WRITE)],
    ['packed IN_ORDER NOTIFICATION_DATA', base | bit(Feature.RING_PACKED) | bit(Feature.IN_ORDER) | bit(Feature.NOTIFICATION_DATA), undefined],
    ['packed, no EVENT_IDX', (base | bit(Feature.RING_PACKED)) & ~bit(Feature.EVENT_IDX), undefined],
  ];
  for (const [name, features, deviceFeatures] of variants) {
    for (const mode of MODES) {
      const b = [new MemoryConsoleEndpoint(), new MemoryConsoleEndpoint()];
      const devMon = new Monitor();
      const drvMon = new Monitor();
      // Emergency bytes go to port 0's backend by default.
      const device = new ConsoleDevice({ ports: [{ backend: b[0] }, { backend: b[1], name: 'data' }], monitor: devMon, queueMaxSize: 16 });
      if (!(features & bit(Feature.RING_PACKED))) device.withholdFeatures(bit(Feature.RING_PACKED));
      const transport = new LoopbackTransport(device, GuestMemory.create(4 << 20), { mode });
      const driver = new ConsoleDriver(transport, {
        monitor: drvMon,
        transportFeatures: features,
        ...(deviceFeatures !== undefined ? { deviceFeatures } : {}),
        receiveBufferSize: 100,
        receiveBuffers: 5,
        transmitChunk: 777,
      });
      await driver.start();
      const multiport = deviceFeatures === undefined;
      assert.equal(driver.multiport, multiport, name);
      const port = await driver.waitForPort(multiport ? 'data' : 0);
      await port.open();
      const backend = b[port.id];
      const got = sink(port);
      const input = pattern(30, 30_000);
      for (let off = 0; off < input.length; off += 3_333) backend.send(input.subarray(off, off + 3_333));
      const out = pattern(31, 40_000);
      await Promise.all([port.write(out.subarray(0, 25_000)), port.write(out.subarray(25_000))]);
      await until(() => total(got) === input.length, `${name} ${mode}: host bytes`);
      assert.deepEqual(concat(got), input, `${name} ${mode}`);
      assert.deepEqual(backend.bytes, out, `${name} ${mode}`);
      await driver.suspend({ timeoutMs: WAIT_MS });
      backend.send('z');
      await driver.resume({ timeoutMs: WAIT_MS });
      await until(() => total(got) === input.length + 1, `${name} ${mode}: byte after resume`);
      await driver.emergWrite('#');
      assert.equal(b[0].text.endsWith('#'), true, `${name} ${mode}: emergency byte on port 0`);
      await driver.shutdown();
      assert.deepEqual([...devMon.verdicts, ...drvMon.verdicts], [], `${name} ${mode}`);
    }
  }
});

test('console pair: a reader that falls behind holds the device back (bounded buffers on both sides), nothing is lost', async () => {
  const backend = new MemoryConsoleEndpoint();
  const { device, driver, devMon, drvMon } = pair('split', 'async', { backend, highWater: 4096 }, { inboxLimit: 2048, receiveBufferSize: 256, receiveBuffers: 4 });
  await driver.start();
  const port = await driver.waitForPort(0);
  const input = pattern(40, 64_000);
  let accepted = true;
  for (let off = 0; off < input.length; off += 8_000) accepted = backend.send(input.subarray(off, off + 8_000)) && accepted;
  assert.equal(accepted, false, 'push says stop over the high-water mark');
  await until(() => port.inboxBytes >= 2048, 'the inbox to fill');
  await settle();
  assert.ok(port.inboxBytes <= 2048 + 4 * 256, `the driver stopped posting receive buffers (inbox ${port.inboxBytes})`);
  assert.ok(device.port(0)!.buffered > 60_000, 'the rest waits in the device');
  const chunks: Uint8Array[] = [];
  for await (const c of port) {
    chunks.push(c);
    if (total(chunks) === input.length) break;
  }
  assert.deepEqual(concat(chunks), input);
  assert.equal(device.port(0)!.dropped, 0);
  assert.ok(backend.drains >= 1, 'the backend was told to go on');
  assert.deepEqual([...devMon.verdicts, ...drvMon.verdicts], []);
});

test('console pair with a Node stream backend: a unix socket client talks to a driver port, host open/close follows the connection', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-console-'));
  const path = join(dir, 'port1.sock');
  const stream = new StreamConsoleEndpoint();
  const server = await listenConsole(stream, path);
  let client: Socket | null = null;
  try {
    const { device, driver, devMon, drvMon } = pair('packed', 'async', {
      ports: [{ backend: new MemoryConsoleEndpoint() }, { backend: stream, name: 'socket' }],
      highWater: 16 * 1024,
    });
    await driver.start();
    const port = await driver.waitForPort('socket');
    assert.equal(port.hostOpen, false, 'nobody connected yet');
    await port.open();
    const opened = new Promise((res) => (port.onHostOpen = res));
    const c = connect(path);
    client = c;
    await new Promise<void>((res, rej) => c.once('connect', res).once('error', rej));
    assert.equal(await opened, true);

    // Socket -> driver port (more than the device buffers before pausing the socket).
    const toGuest = pattern(5, 400_000);
    const got = sink(port);
    c.write(toGuest);
    await until(() => total(got) === toGuest.length, 'socket bytes at the driver');
    assert.deepEqual(concat(got), toGuest);

    // Driver port -> socket.
    const toHost = pattern(6, 250_000);
    const received: Buffer[] = [];
    c.on('data', (d: Buffer) => received.push(d));
    await port.write(toHost);
    await until(() => received.reduce((n, d) => n + d.length, 0) === toHost.length, 'driver bytes at the socket');
    assert.deepEqual(new Uint8Array(Buffer.concat(received)), toHost);
    assert.equal(stream.stats.read, toGuest.length);
    assert.equal(stream.stats.written, toHost.length);
    assert.equal(device.port(1)!.dropped, 0);

    // The client goes away: PORT_OPEN 0 reaches the driver.
    const closed = new Promise((res) => (port.onHostOpen = res));
    c.end();
    assert.equal(await closed, false);
    assert.deepEqual([...devMon.verdicts, ...drvMon.verdicts], []);
    await driver.shutdown();
  } finally {
    client?.destroy();
    await new Promise((res) => server.close(res));
    rmSync(dir, { recursive: true, force: true });
  }
});
