// Shared pieces of the CLI tests: the real binary, a server child with its log, waits bounded
// by a count (never a sleep-and-hope), and a front-end that drives a device over vhost-user.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { native } from '../../src/native/index.js';
import { HEADER_SIZE, ProtocolFeature, Req, u64Payload } from '../../src/transports/vhost-user/protocol.js';
import { memTablePayload, message, receive, TestFrontEnd } from '../vhost-user/front-end.js';
import type { VhostUserBackend } from '../../src/transports/vhost-user/backend.js';
import { Feature, Status } from '../../src/spec/constants.js';
import { bit } from '../../src/spec/features.js';

export const root = join(fileURLToPath(import.meta.url), '../../../..');
export const bin = join(root, 'dist/src/cli/main.js');
export const n = native();

/** The binary run to completion (bounded). */
export function run(...args: string[]): { code: number | null; out: string; err: string } {
  const r: SpawnSyncReturns<string> = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** Waits for `cond`, checked every 10 ms, at most 30 s (a bound for a loaded machine; then the test fails naming `what`). */
export async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 3000; i++) {
    if (cond()) return;
    await new Promise((res) => setTimeout(res, 10));
  }
  assert.fail(`timed out waiting for ${what}`);
}

export interface LogLine {
  level: number;
  msg: string;
  [k: string]: unknown;
}

export interface Served {
  child: ReturnType<typeof spawn>;
  exited: Promise<number | null>;
  stderr(): string;
  /** The JSON log lines so far. */
  logs(): LogLine[];
  /** Waits for a log line whose msg matches `re` and returns it. */
  logged(re: RegExp): Promise<LogLine>;
}

export function startServe(args: string[], options: { uid?: number; gid?: number } = {}): Served {
  const child = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...options });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
  const logs = () => stderr.trim().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as LogLine);
  return {
    child,
    exited,
    stderr: () => stderr,
    logs,
    async logged(re: RegExp) {
      await until(() => logs().some((l) => re.test(l.msg)), `a log line ${re} (log so far: ${stderr})`);
      return logs().find((l) => re.test(l.msg))!;
    },
  };
}

/** GET_FEATURES on a new connection to `path`. */
export async function getFeatures(path: string): Promise<bigint> {
  const fd = n.connect(path);
  try {
    n.sendmsg(fd, message(Req.GET_FEATURES));
    return new DataView((await receive(fd)).buffer).getBigUint64(HEADER_SIZE, true);
  } finally {
    n.close(fd);
  }
}

/** A connection to `path` with `send` (a message, no reply awaited) and `ask` (a message and its reply). */
export function connection(path: string) {
  const fd = n.connect(path);
  const send = (req: number, payload?: Uint8Array, fds?: number[]) => n.sendmsg(fd, message(req, payload), fds);
  const ask = async (req: number, payload?: Uint8Array) => {
    send(req, payload);
    return new DataView((await receive(fd)).buffer);
  };
  return { fd, send, ask };
}

/** A front-end that negotiates (STATUS, CONFIG) and attaches 1 MiB of guest memory. */
export async function frontEnd(path: string) {
  const { fd, send, ask } = connection(path);
  assert.ok((await ask(Req.GET_FEATURES)).getBigUint64(HEADER_SIZE, true) & (1n << 30n));
  const proto = (1n << BigInt(ProtocolFeature.CONFIG)) | (1n << BigInt(ProtocolFeature.STATUS));
  send(Req.SET_PROTOCOL_FEATURES, u64Payload(proto));
  send(Req.SET_OWNER);
  send(Req.SET_FEATURES, u64Payload(bit(Feature.VERSION_1) | (1n << 30n)));
  const memfd = n.memfdCreate('guest', 1 << 20);
  send(Req.SET_MEM_TABLE, memTablePayload(1 << 20), [memfd]);
  n.close(memfd);
  const status = async () => Number((await ask(Req.GET_STATUS)).getBigUint64(HEADER_SIZE, true));
  const capacity = async () => {
    const cfg = new Uint8Array(12 + 8);
    new DataView(cfg.buffer).setUint32(4, 8, true); // offset 0 (capacity), 8 bytes, flags 0
    return Number((await ask(Req.GET_CONFIG, cfg)).getBigUint64(HEADER_SIZE + 12, true));
  };
  return { send, ask, status, capacity, close: () => n.close(fd) };
}

/** A front-end talking to the child over `path` (TestFrontEnd's ring helpers, a real connection). */
export function frontEndOver(path: string): TestFrontEnd {
  const connectionless = { serve: (fd: number) => n.close(fd), close: () => undefined } as unknown as VhostUserBackend;
  const fe = new TestFrontEnd(connectionless);
  fe.front = n.connect(path);
  fe.fds.push(fe.front);
  return fe;
}

export { Status, Req, u64Payload };
