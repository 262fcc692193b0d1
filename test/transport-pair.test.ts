// Every device (rng, blk, console) and its driver over every register model: virtio-mmio
// version 2 and 1 (legacy), virtio-pci modern (memory and I/O BAR, MSI-X and INTx) and
// transitional (modern and legacy interface), on split and packed rings where the interface
// has them (legacy: split only). Data is checked byte for byte; neither monitor has a verdict.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Monitor } from '../src/monitor/monitor.js';
import { RngDevice } from '../src/devices/rng/device.js';
import { RngDriver } from '../src/drivers/rng.js';
import { BlkDevice } from '../src/devices/blk/device.js';
import { BlkDriver } from '../src/drivers/blk.js';
import { MemoryBlockStorage } from '../src/devices/blk/storage.js';
import { ConsoleDevice, MemoryConsoleEndpoint } from '../src/devices/console/device.js';
import { ConsoleDriver } from '../src/drivers/console.js';
import { Feature, Status } from '../src/spec/constants.js';
import { bit, TRANSPORT_FEATURES_SPLIT } from '../src/spec/features.js';
import { concat, pattern, sink, total, until } from './console-helpers.js';
import { KINDS, connect, isLegacy } from './register-harness.js';

// NOTIFICATION_DATA on both (QueueNotify / the notify structure carry the 2.9 value; a legacy
// interface cannot see bit 38 and notifies with the index); IN_ORDER on packed.
const FORMATS = {
  split: TRANSPORT_FEATURES_SPLIT | bit(Feature.RING_RESET) | bit(Feature.NOTIFICATION_DATA),
  packed: TRANSPORT_FEATURES_SPLIT | bit(Feature.RING_RESET) | bit(Feature.NOTIFICATION_DATA) | bit(Feature.RING_PACKED) | bit(Feature.IN_ORDER),
} as const;

for (const kind of KINDS) {
  for (const format of ['split', 'packed'] as const) {
    if (format === 'packed' && isLegacy(kind)) continue; // a legacy interface has 32 feature bits: no VIRTIO_F_RING_PACKED
    const live = isLegacy(kind) ? Status.ACKNOWLEDGE | Status.DRIVER | Status.DRIVER_OK : Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK;

    test(`entropy over ${kind}, ${format} ring: bytes arrive, no verdicts`, async () => {
      const devMon = new Monitor();
      let counter = 0;
      const device = new RngDevice({ monitor: devMon, queueMaxSize: 16, source: (d) => d.forEach((_, i) => (d[i] = counter++ & 0xff)) });
      if (format === 'split') device.withholdFeatures(bit(Feature.RING_PACKED));
      const { transport, drvMon } = await connect(kind, device);
      const driver = new RngDriver(transport, { monitor: drvMon, transportFeatures: FORMATS[format], chunk: 100 });
      await driver.start();
      assert.equal(device.status, live);
      assert.equal(device.negotiated(Feature.NOTIFICATION_DATA), !isLegacy(kind));
      assert.equal(device.ringFormat, format);
      const parts = await Promise.all(Array.from({ length: 40 }, () => driver.read(250)));
      const bytes = concat(parts);
      assert.equal(bytes.length, 40 * 250);
      const sorted = [...bytes].sort((a, b) => a - b);
      const expected = Array.from({ length: 40 * 250 }, (_, i) => i & 0xff).sort((a, b) => a - b);
      assert.deepEqual(sorted, expected, 'every byte the source made, once');
      assert.deepEqual(devMon.verdicts, []);
      assert.deepEqual(drvMon.verdicts, []);
      await driver.shutdown();
      assert.equal(device.status, 0);
    });

    test(`block over ${kind}, ${format} ring: writes read back byte-exact, flush, zeroes, no verdicts`, async () => {
      const devMon = new Monitor();
      const storage = new MemoryBlockStorage(2 << 20, false, 'regs');
      const device = new BlkDevice({ storage, monitor: devMon, numQueues: 2, queueMaxSize: 32 });
      if (format === 'split') device.withholdFeatures(bit(Feature.RING_PACKED));
      const { transport, drvMon } = await connect(kind, device);
      const driver = new BlkDriver(transport, { monitor: drvMon, transportFeatures: FORMATS[format], numQueues: 2 });
      await driver.start();
      assert.equal(device.ringFormat, format);
      assert.equal(driver.capacity, (2 << 20) / 512);
      await Promise.all(Array.from({ length: 24 }, (_, i) => driver.write(i * 65536, pattern(i, 65536))));
      await driver.flush();
      for (let i = 0; i < 24; i += 5) {
        const back = new Uint8Array(65536);
        await driver.read(i * 65536, back);
        assert.deepEqual(back, pattern(i, 65536));
        assert.deepEqual(storage.bytes.subarray(i * 65536, (i + 1) * 65536), pattern(i, 65536));
      }
      await driver.writeZeroes(0, 4096);
      const z = new Uint8Array(4096);
      await driver.read(0, z);
      assert.ok(z.every((b) => b === 0));
      assert.equal(await driver.getId(), 'regs');
      assert.deepEqual([...devMon.verdicts, ...drvMon.verdicts], []);
    });

    test(`console over ${kind}, ${format} ring: data both ways, resize (config change), no verdicts`, async () => {
      const devMon = new Monitor();
      const backend = new MemoryConsoleEndpoint();
      const device = new ConsoleDevice({ monitor: devMon, queueMaxSize: 32, backend, size: { cols: 80, rows: 25 } });
      if (format === 'split') device.withholdFeatures(bit(Feature.RING_PACKED));
      const { transport, drvMon } = await connect(kind, device);
      const driver = new ConsoleDriver(transport, { monitor: drvMon, transportFeatures: FORMATS[format], receiveBufferSize: 512, receiveBuffers: 8 });
      await driver.start();
      const port = await driver.waitForPort(0);
      const out = pattern(1, 50_000);
      await port.write(out);
      assert.deepEqual(backend.bytes, out);
      const got = sink(port);
      const input = pattern(2, 40_000);
      for (let off = 0; off < input.length; off += 10_000) backend.send(input.subarray(off, off + 10_000));
      await until(() => total(got) === input.length, 'host bytes at the driver');
      assert.deepEqual(concat(got), input);
      const resized = new Promise((res) => (port.onResize = res));
      device.resize(132, 43);
      assert.deepEqual(await resized, { cols: 132, rows: 43 });
      assert.deepEqual([...devMon.verdicts, ...drvMon.verdicts], []);
    });
  }
}
