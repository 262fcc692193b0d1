/**
 * virtio-ts: the OASIS VIRTIO specification in TypeScript.
 * This entry point is browser-safe (no Node import). Node-only parts (files, streams, the
 * vhost-user daemon) are in `virtio-ts/node`; misbehaving peers for tests in `virtio-ts/testing`.
 *
 * @packageDocumentation
 */
export { VirtioTsError, isVirtioTsError } from './errors.js';
export { GuestMemory, MemoryRegion, MemoryError, MAX_GUEST_ADDRESS, type MemoryErrorKind, type MemoryRegionInit, type WriteHook } from './memory/guest-memory.js';
export { GuestAllocator } from './memory/allocator.js';

export * from './spec/constants.js';
export * from './spec/features.js';
export { DEVICE_TYPES, unmetDependency, isDescribedFeature, type DeviceTypeInfo, type FeatureDependency, type UnmetDependency } from './spec/device-types.js';
export { NET_FEATURES } from './spec/net.js';
export { BLK_FEATURES, BlkType, BlkStatus, BlkConfig } from './spec/blk.js';
export { CONSOLE_FEATURES, ConsoleConfig, ConsoleEvent, type ConsoleSize } from './spec/console.js';
export { VirtioDevice, DEFAULT_DEVICE_TRANSPORT_FEATURES, type DeviceHost, type VirtioDeviceOptions, type DevicePhase } from './device/device.js';
export type { DeviceType, DeviceContext, ConditionalConfigField } from './device/type.js';
export { DeviceError, type DeviceErrorKind } from './device/errors.js';
export { VirtioDriver, DriverError, type DriverErrorKind, type VirtioDriverOptions, type DriverState } from './driver/driver.js';
export type { DriverTransport, TransportEvents } from './driver/transport.js';
export { DescriptorChain, ChainReader, ChainWriter, ChainBuilder } from './virtqueue/chain.js';
export { VirtqueueError, type VirtqueueErrorKind } from './virtqueue/errors.js';
export { SplitDeviceQueue } from './virtqueue/split/device.js';
export { SplitDriverQueue, layoutSplitQueue, splitQueueFootprint, type SplitDriverQueueOptions } from './virtqueue/split/driver.js';
export * as splitLayout from './spec/split-layout.js';

export { LoopbackTransport, type LoopbackMode, type LoopbackOptions } from './transports/loopback/loopback.js';
export { VirtioMmioDevice, MmioError, legacySplitLayout, type MmioErrorKind, type MmioDeviceOptions, type SharedMemoryRegion } from './transports/mmio/device.js';
export { MmioTransport, directMmioBus, type MmioBus, type MmioTransportOptions } from './transports/mmio/driver.js';
export { VirtioMmioPlaceholder, type MmioPlaceholderKind } from './transports/mmio/placeholder.js';
export { MmioReg, MMIO_MAGIC, MMIO_INT_VRING, MMIO_INT_CONFIG, mmioRegisterAccess } from './transports/mmio/registers.js';
export { VirtioPciDevice, PciError, type PciErrorKind, type PciBarInfo, type PciDeviceOptions } from './transports/pci/device.js';
export { PciTransport, directPciBus, type PciBus, type PciInterrupt, type PciWindow, type PciTransportOptions, type VirtioPciCapability } from './transports/pci/driver.js';
export * as pciLayout from './transports/pci/layout.js';

export { RngDevice, RngDeviceType, cryptoEntropy, type EntropySource, type AsyncEntropySource, type RngDeviceOptions } from './devices/rng/device.js';
export { RngDriver, type RngDriverOptions, type RngRequestToken } from './drivers/rng.js';
export { parseMac, formatMac, randomMac } from './net/mac.js';
export { NetDevice, NetDeviceType, type NetDeviceOptions, type NetDeviceCounters, type NetPairCounters } from './devices/net/device.js';
export { NO_OFFLOADS, ALL_OFFLOADS, type FramePort, type NetOffload, type OffloadSupport } from './net/frame-port.js';
export { NetSwitch, connectPorts, macAt, type NetSwitchOptions, type NetSwitchCounters } from './net/switch.js';
export { completeOffloads, acceptsOffload, fillChecksum, onesSum, foldSum, l3Offset, offloadCounters, MAX_GSO_FRAME, type OffloadCounters } from './net/offload.js';
export {
  VSOCK_FEATURES,
  VSOCK_FEATURE_NAMES,
  VsockConfig,
  VsockQueue,
  VsockHdr,
  VsockOp,
  VsockType,
  VsockShutdown,
  VsockSeq,
  VsockEvent,
  HOST_CID,
  isReservedCid,
  vsockOpName,
  readVsockHeader,
  writeVsockHeader,
  type VsockHeader,
} from './spec/vsock.js';
export {
  VsockEngine,
  VsockConnection,
  VsockError,
  type VsockErrorKind,
  type VsockSide,
  type VsockEngineHost,
  type VsockEngineOptions,
  type VsockConnectionState,
  type VsockAcceptHandler,
  type VsockRequestHandler,
} from './vsock/engine.js';
export { VsockDevice, VsockDeviceType, type VsockDeviceOptions } from './devices/vsock/device.js';
export { VsockDriver, type VsockDriverOptions, type VsockBufferToken } from './drivers/vsock.js';
// virtio-fs (spec 5.11): the file system provider interface, the in-memory file system, the FUSE server and client, the device and driver.
export {
  FsError,
  fsError,
  ROOT_INO,
  S_IFMT,
  S_IFDIR,
  S_IFREG,
  S_IFLNK,
  S_IFCHR,
  S_IFBLK,
  S_IFIFO,
  S_IFSOCK,
  LockType,
  Whence,
  RenameFlags,
  FallocMode,
  XattrFlags,
  type FsErrorKind,
  type MaybePromise,
  type FsContext,
  type FileAttr,
  type SetTime,
  type SetAttr,
  type OpenResult,
  type CreateResult,
  type DirEntry,
  type StatFs,
  type FileLock,
  type FsProvider,
} from './fs/vfs.js';
export { Errno, errnoName, errnoFromName, type ErrnoName } from './fs/errno.js';
export { MemoryFs, type MemoryFsOptions } from './fs/memory.js';
export { PosixLocks } from './fs/locks.js';
export { FuseServer, errorReply, type FuseServerOptions, type FuseReply, type FuseHeader, type FuseStats, type FuseOpStats } from './fs/fuse/server.js';
export { FuseClient, fuseRequest, readAttr, type FuseSend, type FuseEntry, type FuseDirent } from './fs/fuse/client.js';
export { Op as FuseOp, InitFlag as FuseInitFlag, opName as fuseOpName } from './fs/fuse/wire.js';
export { FS_FEATURES, FS_FEATURE_NAMES, FsConfig, FS_HIPRIO_QUEUE } from './spec/fs.js';
export { FsDevice, FsDeviceType, type FsDeviceOptions, type FsDeviceStats } from './devices/fs/device.js';
export { FsDriver, type FsDriverOptions, type FsRequestToken } from './drivers/fs.js';
export { BlkDevice, BlkDeviceType, defaultSegMax, type BlkDeviceOptions, type BlkOptions, type BlkStorageOption } from './devices/blk/device.js';
export { parseBlkRequest, BlkRequestHeader, type ParsedBlkRequest, type Segment } from './devices/blk/request.js';
export type { Range as BlkRange } from './devices/blk/request.js';
export { MemoryBlockStorage, type BlockStorage, MemoryBlockBackend, type BlockBackend } from './devices/blk/storage.js';
export { BlkDriver, BlkBatch, BlkBuffer, BlkError, type BlkErrorKind, type BlkDriverOptions, type BlkRequestToken } from './drivers/blk.js';
export {
  ConsoleDevice,
  ConsoleDeviceType,
  MemoryConsoleEndpoint,
  type ConsoleDeviceOptions,
  type ConsolePortEndpoint,
  type ConsoleHostPort,
  type ConsolePortConfig,
  type ConsolePortOptions,
  type ConsolePortEndpointOption,
  MemoryConsoleBackend,
  type ConsolePortBackend,
} from './devices/console/device.js';
export {
  ConsoleDriver,
  ConsolePort,
  ConsoleError,
  type ConsoleErrorKind,
  type ConsoleDriverOptions,
  type ConsoleToken,
  type ConsoleReceiveBuffer,
  type ConsoleTransmitBuffer,
  type ConsoleWrite,
} from './drivers/console.js';
export { NetDriver, NET_DRIVER_FEATURES, rarpFrame, type NetDriverOptions, type NetDriverCounts, type ReceivedFrame } from './drivers/net.js';
export type { DeviceQueue, DriverQueue, RingFormat, RingPosition, QueueObserver, PriorBuffer, ViolationSink, QueueFeatures, DriverQueueOptions } from './virtqueue/queue.js';
export type { RingAddresses } from './spec/ring.js';
export { createDeviceQueue, createDriverQueue, driverQueueFootprint } from './virtqueue/create.js';
export { PackedDeviceQueue } from './virtqueue/packed/device.js';
export { PackedDriverQueue, layoutPackedQueue, packedQueueFootprint, type PackedDriverQueueOptions } from './virtqueue/packed/driver.js';
export { DriverQueueBase, type DriverRingOptions } from './virtqueue/driver-queue-base.js';

export { Monitor, formatVerdict, type Verdict, type Severity, type MonitorMode, type MonitorOptions } from './monitor/monitor.js';
export { parseDeviations, type KnownDeviation } from './monitor/deviations.js';
export { RunReportRecorder, runReportJson, RUN_REPORT_SCHEMA, type RunReport, type RunReportClause, type RunReportOccurrence } from './monitor/run-report.js';
export { MonitorError, type MonitorErrorKind } from './monitor/errors.js';
export { allClauses, clauseInfo, partOf, type ClauseEntry, type CheckSite, type CheckCondition, type CoverageStatus, type Side, type Level } from './monitor/catalogue.js';
