/**
 * virtio-ts for Node: everything in the browser-safe entry, plus the Node-only parts: the
 * adapters (file block storage, stream console endpoints), serveVhostUser, which serves any
 * VirtioDevice to a vhost-user front-end such as QEMU, VhostUserFrontEnd, which drives any
 * vhost-user back-end from Node (the drivers run over it), and the qtest buses, which let the
 * project's drivers drive QEMU's own device models with no guest (QtestMachine).
 *
 * @packageDocumentation
 */
export * from './index.js';
export { FileBlockStorage, FileBlockBackend, type FileIoMode } from './node/file-block.js';
export {
  StreamConsoleEndpoint,
  stdioConsoleEndpoint,
  listenConsole,
  type ConsoleStream,
  type StreamConsoleEndpointOptions,
  StreamConsoleBackend,
  stdioConsoleBackend,
  type StreamConsoleBackendOptions,
} from './node/console-stream.js';
export { loadDeviations, DEVIATIONS_FILE } from './node/deviations.js';
export { HostDirFs, type HostDirFsOptions } from './node/fs/host-dir.js';
export { VsockStream, VsockListener, vsockStreams, type VsockStreams, type VsockSideApi } from './node/vsock/streams.js';
export { serveHybridVsock, splice as spliceVsock, type HybridVsock, type HybridVsockOptions } from './node/vsock/hybrid.js';
export {
  serveVhostUser,
  VhostUserDaemon,
  type DeviceSource,
  type DaemonEnd,
  type DaemonLogger,
  type VhostUserDaemonEvents,
  type VhostUserDaemonOptions,
} from './transports/vhost-user/daemon.js';
export type { ConnectionEnd } from './transports/vhost-user/backend.js';
export { VhostUserError, type VhostUserErrorKind } from './transports/vhost-user/errors.js';
export { NativeAddonError, type NativeAddonErrorKind } from './native/index.js';
export { QtestClient, QtestError, type QtestErrorKind, type QtestLaunchOptions, type IrqListener } from './node/qtest/client.js';
export { QtestMachine, type QtestMachineOptions, type QtestMachineType, type QtestMmioTransport } from './node/qtest/machine.js';
export { QtestRam, QTEST_RAM_BASE, QTEST_RAM_RESERVED } from './node/qtest/ram.js';
export { QtestMmioWindow, findMmioTransports, MICROVM_MMIO_BASE, MICROVM_MMIO_STRIDE, MICROVM_MMIO_SLOTS, MICROVM_MMIO_IRQ_BASE } from './node/qtest/mmio.js';
export { QtestPciFunction, enumeratePci, type MsiMailboxes, MAILBOX_EMPTY, MAILBOX_VECTORS } from './node/qtest/pci.js';
export {
  VhostUserFrontEnd,
  FRONT_END_PROTOCOL_FEATURES,
  HIDDEN_FEATURES,
  type VhostUserFrontEndOptions,
  type FrontEndCounts,
  type RingState,
} from './transports/vhost-user/frontend/front-end.js';
export { FrontEndError, type FrontEndErrorKind } from './transports/vhost-user/frontend/errors.js';
export { GuestRam, USER_BASE, type RamRegion } from './transports/vhost-user/frontend/memory.js';
export type { ReplyShape, Reply } from './transports/vhost-user/frontend/channel.js';
export { runProbe, PROBE_TYPES, ProbeUsageError, type ProbeOptions } from './probe/probe.js';
export { formatProbeReport, PROBE_REPORT_SCHEMA, type ProbeReport, type ProbeCheck, type ProbeHostileResult, type ProbeBackendInfo } from './probe/report.js';
export { HOSTILE_CASES, type HostileCase, type HostileClass, type HostileOutcome, type HostileContext, type Injection } from './probe/hostile.js';
export type { RequestType, PlacedRequest, Range } from './probe/requests.js';
export { RawSession, RawSplitRing, type Ending } from './probe/raw-session.js';
export { VHOST_USER_RULES, type VhostUserRule } from './probe/rules.js';
export { MonitorProxy, type MonitorProxyOptions, type ProxyVerdict, type ProxySessionSummary } from './proxy/proxy.js';
export { buildMonitorReport, formatMonitorReport, formatProxyVerdict, MONITOR_REPORT_SCHEMA, type MonitorReport, type MonitorReportClause } from './proxy/report.js';
export { ProxyError, type ProxyErrorKind } from './proxy/errors.js';
export { FRONT_END_RULES } from './proxy/rules.js';
export type { RingStats } from './proxy/rings.js';
export { StreamFramePort, listenSwitch, MAX_STREAM_FRAME, type StreamPortOptions, type SwitchServer } from './node/net/stream-port.js';
export { TapFramePort, interfaceNameProblem, TAP_VNET_HDR_BYTES, TUN_F, type TapPortOptions, type TapPortCounters } from './node/net/tap-port.js';
export { DgramFramePort, MAX_DGRAM_FRAME, type DgramPortCounters } from './node/net/dgram-port.js';
export { NetPortError, type NetPortErrorKind } from './node/net/errors.js';
