/**
 * virtio-ts for Node: everything in the browser-safe entry, plus the Node-only backends.
 */
export * from './index.js';
export { FileBlockBackend } from './node/file-block.js';
export { StreamConsoleBackend, stdioConsoleBackend, listenConsole, type ConsoleStream, type StreamConsoleBackendOptions } from './node/console-stream.js';
export { loadDeviations, DEVIATIONS_FILE } from './node/deviations.js';
