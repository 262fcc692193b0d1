// Connects a driver-side transport to a device behind a register model (virtio-mmio or
// virtio-pci), wired straight through the in-process buses: what the pair, interrupt and
// negative tests share.
import type { VirtioDevice } from '../src/device/device.js';
import type { DriverTransport } from '../src/driver/transport.js';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { Monitor } from '../src/monitor/monitor.js';
import { VirtioMmioDevice } from '../src/transports/mmio/device.js';
import { MmioTransport, directMmioBus } from '../src/transports/mmio/driver.js';
import { VirtioPciDevice, type PciDeviceOptions } from '../src/transports/pci/device.js';
import { PciTransport, directPciBus } from '../src/transports/pci/driver.js';

/** Every way a driver reaches a device through registers. */
export const KINDS = ['mmio-v2', 'mmio-v1', 'pci-modern', 'pci-modern-io', 'pci-modern-intx', 'pci-transitional-modern', 'pci-transitional-legacy'] as const;
export type Kind = (typeof KINDS)[number];

/** Whether the interface is a legacy one (split rings only, no FEATURES_OK). */
export const isLegacy = (kind: Kind) => kind === 'mmio-v1' || kind === 'pci-transitional-legacy';

export interface Connected {
  transport: DriverTransport;
  model: VirtioMmioDevice | VirtioPciDevice;
  /** Register accesses the driver made so far. */
  traps(): number;
  memory: GuestMemory;
  drvMon: Monitor;
}

/** Puts `device` behind the register model `kind` and opens the driver-side transport on it. */
export async function connect(kind: Kind, device: VirtioDevice, options: { memory?: GuestMemory; drvMon?: Monitor; pci?: PciDeviceOptions } = {}): Promise<Connected> {
  const memory = options.memory ?? GuestMemory.create(8 << 20);
  const drvMon = options.drvMon ?? new Monitor();
  if (kind === 'mmio-v1' || kind === 'mmio-v2') {
    const model = new VirtioMmioDevice(device, memory, { version: kind === 'mmio-v1' ? 1 : 2 });
    const bus = directMmioBus(model);
    const transport = await MmioTransport.open(bus, memory, { monitor: drvMon });
    return { transport, model, traps: () => bus.traps, memory, drvMon };
  }
  const model = new VirtioPciDevice(device, memory, {
    transitional: kind.startsWith('pci-transitional'),
    virtioBar: kind === 'pci-modern-io' ? 'io' : 'memory64',
    ...options.pci,
  });
  const bus = directPciBus(model);
  const transport = await PciTransport.open(bus, memory, {
    monitor: drvMon,
    mode: kind === 'pci-transitional-legacy' ? 'legacy' : 'modern',
    msix: kind !== 'pci-modern-intx',
  });
  return { transport, model, traps: () => bus.traps, memory, drvMon };
}
