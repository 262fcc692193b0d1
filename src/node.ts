/**
 * virtio-ts for Node: everything in the browser-safe entry, plus the Node-only adapters (file
 * block storage, stream console endpoints).
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
