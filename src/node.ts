/**
 * virtio-ts for Node: everything in the browser-safe entry, plus the Node-only parts: the
 * adapters (file block storage, stream console endpoints) and serveVhostUser, which serves any
 * VirtioDevice to a vhost-user front-end such as QEMU.
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
