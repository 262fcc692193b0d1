// Real back-ends for the front-end's tests and the backends benchmark: `virtio-ts serve` (the
// CLI, as a user runs it) and qemu-storage-daemon, each a child process on a unix socket in a
// temp directory the test made. Waits are for events (the socket accepting), bounded.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { native } from '../../src/native/index.js';
import { Feature } from '../../src/spec/constants.js';
import { bit } from '../../src/spec/features.js';
import { VhostUserFrontEnd, type VhostUserFrontEndOptions } from '../../src/transports/vhost-user/frontend/front-end.js';

const root = join(fileURLToPath(import.meta.url), '../../../..');
export const CLI = join(root, 'dist/src/cli/main.js');
export const QSD = '/usr/bin/qemu-storage-daemon';

/** A back-end child process serving a vhost-user socket. */
export interface Peer {
  readonly name: string;
  readonly socket: string;
  readonly child: ChildProcess;
  /** Its stderr so far (for failure messages). */
  log(): string;
  /** Resolves with the exit code (or the signal) once it exited. */
  readonly exited: Promise<number | string | null>;
  /** SIGTERM, then waits for the exit. */
  stop(): Promise<void>;
  /** SIGKILL (a crash), then waits for the exit. */
  kill(): Promise<void>;
}

/** A temp directory for sockets and images, removed by the returned function. */
export function scratch(prefix = 'vt-fe-'): { dir: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A raw disk image of `size` bytes filled with a recognizable pattern (byte i = (i * 7 + seed) & 255 per sector). */
export function makeImage(path: string, size: number, seed = 1): Uint8Array {
  const b = new Uint8Array(size);
  for (let i = 0; i < size; i++) b[i] = ((i >> 9) * 7 + seed + (i & 511)) & 0xff;
  writeFileSync(path, b);
  return b;
}

export function readImage(path: string): Uint8Array {
  return new Uint8Array(readFileSync(path));
}

/** Waits (bounded) until something accepts connections on `path`. */
export async function socketUp(path: string, child: ChildProcess, log: () => string, timeoutMs = 30_000): Promise<void> {
  const n = native();
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the back-end exited before listening: ${log()}`);
    if (existsSync(path)) {
      try {
        n.close(n.connect(path));
        return;
      } catch {
        // not listening yet
      }
    }
    if (Date.now() > deadline) throw new Error(`nothing listens on ${path} after ${timeoutMs} ms: ${log()}`);
    await new Promise((res) => setTimeout(res, 20));
  }
}

function peer(name: string, socket: string, cmd: string, args: string[]): Peer {
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<number | string | null>((res) => child.on('exit', (code, signal) => res(code ?? signal)));
  const end = async (signal: NodeJS.Signals) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    await exited;
  };
  return { name, socket, child, log: () => err, exited, stop: () => end('SIGTERM'), kill: () => end('SIGKILL') };
}

/**
 * `virtio-ts serve blk|rng|fs` on `socket` (the connection served one at a time, as the CLI does;
 * a front-end that reconnects gets the same device).
 */
export async function startServe(type: 'blk' | 'rng' | 'fs', socket: string, args: string[] = []): Promise<Peer> {
  const p = peer(`virtio-ts serve ${type}`, socket, process.execPath, [CLI, 'serve', type, '--socket-path', socket, '--log-level', 'info', '--log-format', 'json', ...args]);
  // The CLI serves one front-end at a time: a probing connection would be the one it serves
  // (and a real one right after it refused), so the log line says when it listens.
  const deadline = Date.now() + 30_000;
  while (!p.log().includes('"listening on ')) {
    if (p.child.exitCode !== null || p.child.signalCode !== null) throw new Error(`${p.name} exited before listening: ${p.log()}`);
    if (Date.now() > deadline) throw new Error(`${p.name} did not listen in 30 s: ${p.log()}`);
    await new Promise((res) => setTimeout(res, 10));
  }
  return p;
}

/** Whether qemu-storage-daemon is installed. */
export function haveQsd(): boolean {
  return existsSync(QSD);
}

/** qemu-storage-daemon exporting `image` as vhost-user-blk on `socket` (writable; `extra` export options, e.g. num-queues=4). */
export async function startQsd(image: string, socket: string, extra = ''): Promise<Peer> {
  const p = peer('qemu-storage-daemon', socket, QSD, [
    '--blockdev',
    `driver=file,node-name=f,filename=${image},cache.direct=off`,
    '--export',
    `type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path=${socket},writable=on${extra === '' ? '' : `,${extra}`}`,
  ]);
  await socketUp(socket, p.child, p.log);
  return p;
}

/** Driver transport features for each ring format (without VIRTIO_F_RING_PACKED: split). */
export const SPLIT = bit(Feature.VERSION_1) | bit(Feature.INDIRECT_DESC) | bit(Feature.EVENT_IDX);
export const PACKED = SPLIT | bit(Feature.RING_PACKED);
export const RING_FORMATS = [
  ['split', SPLIT],
  ['packed', PACKED],
] as const;

/** The bytes of request `i` (distinct per request and per byte). */
export function pattern(i: number, len: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let k = 0; k < len; k++) b[k] = (i * 31 + k * 13 + 5) & 0xff;
  return b;
}

/** Front-ends a test opened, closed after it whatever happened (their fd watches would keep the test process alive). */
const opened: VhostUserFrontEnd[] = [];

/** VhostUserFrontEnd.connect, remembered for closeFrontEnds(). */
export async function connectFrontEnd(options: VhostUserFrontEndOptions): Promise<VhostUserFrontEnd> {
  const fe = await VhostUserFrontEnd.connect(options);
  opened.push(fe);
  return fe;
}

/** Closes every front-end connectFrontEnd() opened. */
export async function closeFrontEnds(): Promise<void> {
  for (const fe of opened.splice(0)) await fe.close();
}
