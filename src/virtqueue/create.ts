/**
 * Creates a device or driver queue of either ring format (the format follows the negotiated
 * VIRTIO_F_RING_PACKED). The one place above both formats; everything else programs against
 * the format-neutral interfaces in queue.ts.
 */
import type { GuestMemory } from '../memory/guest-memory.js';
import type { Monitor } from '../monitor/monitor.js';
import type { DeviceQueue, DriverQueue, DriverQueueOptions, RingFormat, ViolationSink } from './queue.js';
import { SplitDeviceQueue } from './split/device.js';
import { PackedDeviceQueue } from './packed/device.js';
import { SplitDriverQueue, layoutSplitQueue, splitQueueFootprint } from './split/driver.js';
import { PackedDriverQueue, layoutPackedQueue, packedQueueFootprint } from './packed/driver.js';

/** The device side of queue `index` in `format`, of at most `maxSize` entries; verdicts go to `monitor` and `sink`. */
export function createDeviceQueue(format: RingFormat, mem: GuestMemory, index: number, maxSize: number, monitor: Monitor, sink: ViolationSink): DeviceQueue {
  return format === 'packed' ? new PackedDeviceQueue(mem, index, maxSize, monitor, sink) : new SplitDeviceQueue(mem, index, maxSize, monitor, sink);
}


/** Guest bytes a driver queue needs (rings, event structures, indirect pool). */
export function driverQueueFootprint(format: RingFormat, size: number, indirectMax: number): number {
  return format === 'packed' ? packedQueueFootprint(size, indirectMax) : splitQueueFootprint(size, indirectMax);
}

/** Lays out and creates a driver queue at `base` (zeroing its rings). */
export function createDriverQueue<T extends {} | null = {} | null>(
  format: RingFormat,
  mem: GuestMemory,
  index: number,
  size: number,
  base: number,
  options: DriverQueueOptions,
  monitor: Monitor,
  sink: ViolationSink,
): DriverQueue<T> {
  const indirectMax = options.indirect ? options.indirectMax : 0;
  const layout = format === 'packed' ? layoutPackedQueue(base, size, indirectMax) : layoutSplitQueue(base, size, indirectMax, options.usedAlign);
  // The same options for both formats: the layout puts each format's indirect pool.
  const ringOptions = {
    eventIdx: options.eventIdx,
    indirect: indirectMax > 0,
    indirectPool: layout.pool,
    indirectMax,
    inOrder: options.inOrder === true,
    auditReadable: options.auditReadable ?? false,
  };
  return format === 'packed'
    ? new PackedDriverQueue<T>(mem, index, size, layout, ringOptions, monitor, sink)
    : new SplitDriverQueue<T>(mem, index, size, layout, ringOptions, monitor, sink);
}
