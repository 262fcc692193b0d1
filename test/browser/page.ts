/**
 * Test support (not a test file): what test/browser/chromium.test.ts runs inside a Chromium
 * page, bundled by esbuild for the browser (no Node import may reach here). A block device on an
 * in-page backing store (MemoryBlockStorage: a Uint8Array in the page) is driven by the
 * project's block driver over the loopback transport, over the virtio-mmio register model and
 * over the virtio-pci register model; each run writes a pattern, flushes, reads it back and
 * reports what it read, what the disk holds and every monitor verdict.
 */
import {
  BlkDevice,
  BlkDriver,
  GuestMemory,
  LoopbackTransport,
  MemoryBlockStorage,
  MmioTransport,
  Monitor,
  PciTransport,
  VirtioMmioDevice,
  VirtioPciDevice,
  directMmioBus,
  directPciBus,
  type DriverTransport,
} from '../../src/index.js';

/** Which path a run takes between driver and device. */
export type Path = 'loopback' | 'mmio-v2' | 'mmio-v1' | 'pci-modern' | 'pci-legacy';

/** What a run reports back to the test (plain data: it crosses from the page to Node). */
export interface RunResult {
  path: Path;
  /** Hex of what was written, of what the driver read back, of the disk's bytes at that place. */
  written: string;
  readBack: string;
  onDisk: string;
  /** Register traps the driver made (0 over loopback). */
  traps: number;
  verdicts: string[];
  /** The page's environment: proof it ran in a browser. */
  userAgent: string;
  hasProcess: boolean;
}

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');

/** One write / flush / read-back round over `path`, `sectors` sectors at sector `at`. */
export async function run(path: Path, sectors = 64, at = 8): Promise<RunResult> {
  const memory = GuestMemory.create(4 << 20, { shared: false });
  const storage = new MemoryBlockStorage(1 << 20);
  const devMon = new Monitor();
  const drvMon = new Monitor();
  const device = new BlkDevice({ storage, monitor: devMon });
  let transport: DriverTransport;
  let traps = () => 0;
  if (path === 'loopback') {
    transport = new LoopbackTransport(device, memory, { mode: 'async' });
  } else if (path === 'mmio-v2' || path === 'mmio-v1') {
    const bus = directMmioBus(new VirtioMmioDevice(device, memory, { version: path === 'mmio-v2' ? 2 : 1 }));
    traps = () => bus.traps;
    transport = await MmioTransport.open(bus, memory, { monitor: drvMon });
  } else {
    const legacy = path === 'pci-legacy';
    const bus = directPciBus(new VirtioPciDevice(device, memory, { transitional: legacy }));
    traps = () => bus.traps;
    transport = await PciTransport.open(bus, memory, { monitor: drvMon, mode: legacy ? 'legacy' : 'modern' });
  }
  const driver = new BlkDriver(transport, { monitor: drvMon });
  await driver.start();
  const data = new Uint8Array(sectors * 512);
  crypto.getRandomValues(data);
  await driver.write(at * 512, data);
  await driver.flush();
  const back = new Uint8Array(data.length);
  await driver.read(at * 512, back);
  const verdicts = [...devMon.verdicts, ...drvMon.verdicts].map((v) => `${v.observer} saw ${v.clause}: ${v.message}`);
  return {
    path,
    written: hex(data),
    readBack: hex(back),
    onDisk: hex(storage.bytes.subarray(at * 512, at * 512 + data.length)),
    traps: traps(),
    verdicts,
    userAgent: (globalThis as { navigator?: { userAgent: string } }).navigator?.userAgent ?? '',
    hasProcess: typeof (globalThis as { process?: unknown }).process !== 'undefined',
  };
}
