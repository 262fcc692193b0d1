// The README's "Embed in your emulator" example is test/embed/machine.ts, line for line; here a
// guest driver (the project's BlkDriver) uses the machine's disks through its loads, stores and
// interrupt lines (MMIO) and through its PCI function (MSI-X), and the data reads back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { Machine } from './embed/machine.js';
import { BlkDriver, MemoryBlockStorage, MmioTransport, PciTransport, directPciBus, type MmioBus } from '../src/index.js';

const root = join(fileURLToPath(import.meta.url), '../../..');

test('the README\'s "Embed in your emulator" example is test/embed/machine.ts', () => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const m = /<!-- readme:embed [^>]*-->\n```ts\n([\s\S]*?)```\n<!-- \/readme:embed -->/.exec(readme);
  assert.ok(m !== null, 'the README has the embed example between its markers');
  const file = readFileSync(join(root, 'test/embed/machine.ts'), 'utf8');
  const shown = file.slice(file.indexOf('import {')).replace("from '../../src/index.js';", "from 'virtio-ts';");
  assert.equal(m[1], shown);
  assert.ok(m[1].split('\n').length <= 45, 'about 40 lines');
});

test('embed example: a driver writes and reads the MMIO disk through the machine, then the PCI disk', async () => {
  const handlers = new Map<number, (level: boolean) => void>();
  const machine = new Machine((line, level) => queueMicrotask(() => handlers.get(line)?.(level)));
  const mmioDisk = new MemoryBlockStorage(1 << 20, false);
  machine.addMmioDisk(0xd0000000, 5, mmioDisk);
  const bus: MmioBus = {
    read: async (offset, size) => machine.load(0xd0000000 + offset, size),
    write: async (offset, size, value) => machine.store(0xd0000000 + offset, size, value),
    onInterrupt: (h) => handlers.set(5, h),
  };
  const blk = new BlkDriver(await MmioTransport.open(bus, machine.ram), {});
  await blk.start();
  await blk.write(4096, new Uint8Array(4096).fill(0x5a));
  const back = new Uint8Array(4096);
  await blk.read(4096, back);
  assert.ok(back.every((b) => b === 0x5a));
  assert.ok(mmioDisk.bytes.subarray(4096, 8192).every((b) => b === 0x5a));

  const pciDisk = new MemoryBlockStorage(1 << 20, false);
  const fn = machine.addPciDisk(pciDisk);
  const pbus = directPciBus(fn); // stands in for the emulator's PCI host bridge
  const pblk = new BlkDriver(await PciTransport.open(pbus, machine.ram), {});
  await pblk.start();
  await pblk.write(0, new Uint8Array(512).fill(3));
  const pback = new Uint8Array(512);
  await pblk.read(0, pback);
  assert.ok(pback.every((b) => b === 3) && pciDisk.bytes[0] === 3);
  assert.ok(fn.counts.msi > 0);
});
