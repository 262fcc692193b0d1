/**
 * virtio-ts: the OASIS VIRTIO specification in TypeScript.
 * This entry point is browser-safe (no Node import); the CLI lives in src/cli.
 */
export { GuestMemory, MemoryRegion, MemoryError, MAX_GUEST_ADDRESS, type MemoryRegionInit, type WriteHook } from './memory/guest-memory.js';
export { GuestAllocator } from './memory/allocator.js';

export * from './core/constants.js';
export * from './core/features.js';
export { DEVICE_TYPES, NET_FEATURES, BLK_FEATURES, CONSOLE_FEATURES, brokenDependency, isDescribedFeature, type DeviceTypeInfo, type FeatureDependency } from './core/device-types.js';
export { VirtioDevice, type DeviceHost, type VirtioDeviceOptions, type DevicePhase, type ConditionalConfigField } from './core/device.js';
export { VirtioDriver, DriverError, type VirtioDriverOptions, type DriverState } from './core/driver.js';
export type { DriverTransport, TransportEvents } from './core/transport.js';
export { DescriptorChain, ChainReader, ChainWriter, ChainBoundsError } from './core/virtqueue/chain.js';
export { SplitDeviceQueue, type ViolationSink } from './core/virtqueue/split-device.js';
export { SplitDriverQueue, layoutSplitQueue, splitQueueFootprint, type SplitDriverQueueOptions } from './core/virtqueue/split-driver.js';
export * as splitLayout from './core/virtqueue/split-layout.js';

export { LoopbackTransport, type LoopbackMode, type LoopbackOptions } from './transports/loopback.js';

export { RngDevice, cryptoEntropy, type EntropySource, type AsyncEntropySource, type RngDeviceOptions } from './devices/rng.js';
export { RngDriver, type RngDriverOptions } from './drivers/rng.js';
export { BlkDevice, BlkType, BlkStatus, BlkConfig, type BlkDeviceOptions } from './devices/blk.js';
export { MemoryBlockBackend, type BlockBackend } from './devices/blk-backend.js';
export { BlkDriver, BlkError, type BlkDriverOptions } from './drivers/blk.js';
export {
  ConsoleDevice,
  ConsoleConfig,
  ConsoleEvent,
  MemoryConsoleBackend,
  type ConsoleDeviceOptions,
  type ConsolePortBackend,
  type ConsoleHostPort,
  type ConsolePortConfig,
  type ConsoleSize,
} from './devices/console.js';
export { ConsoleDriver, ConsolePort, type ConsoleDriverOptions } from './drivers/console.js';
export { createDeviceQueue, createDriverQueue, type DeviceQueue, type DriverQueue, type RingFormat, type RingPosition, type InflightTracker } from './core/virtqueue/queue.js';
export { PackedDeviceQueue } from './core/virtqueue/packed-device.js';
export { PackedDriverQueue, layoutPackedQueue, packedQueueFootprint } from './core/virtqueue/packed-driver.js';

export { Monitor, formatVerdict, type Verdict, type Severity, type MonitorMode, type MonitorOptions } from './conformance/monitor.js';
export { parseDeviations, type KnownDeviation } from './conformance/deviations.js';
export { allClauses, clauseInfo, partOf, type ClauseEntry, type CoverageStatus, type Side, type Level } from './conformance/catalogue.js';
export { SCENARIOS, scenariosFor, type Scenario, type ScenarioOutcome } from './conformance/scenarios.js';
