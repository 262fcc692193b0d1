// The project's own hostile front-end: cases to drive the real `virtio-ts serve blk` and `serve rng`
// processes (dist/src/cli/main.js on a real unix socket), through every class of abuse:
// protocol, memory table, ring setup, chains, floods and disconnects mid-message. Each case
// asserts its outcome: refused with a logged reason (the connection closed, or a non-zero
// REPLY_ACK when the front-end asked for one), a device error (CONFIG_CHANGE_MSG, then the
// connection closed with the reason), or served. After each case the process is alive, holds
// no more fds or guest mappings than before, a correct session on a new connection is served,
// and guest memory outside the granted buffers still holds its canary.
// Nothing here waits on time: every wait is for an event (EOF, a reply, a log line, a used
// entry) with a bound.
//
// The injections are virtio-ts probe's own (src/probe/hostile.ts: one id per case, run with
// `inject(id)`); this file adds what is particular to `virtio-ts serve`: the exact reason and
// error kind it logs. hostile.test.ts runs them; `virtio-ts probe --hostile` runs the same
// injections against any back-end (qemu-storage-daemon: test/probe/).
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, ftruncateSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BackendReq, FLAG_NEED_REPLY, HEADER_SIZE, ProtocolFeature, Req, statePayload, u64Payload } from '../../src/transports/vhost-user/protocol.js';
import { Feature } from '../../src/spec/constants.js';
import { bit } from '../../src/spec/features.js';
import type { VhostUserErrorKind } from '../../src/transports/vhost-user/errors.js';
import { HOSTILE_FEATURES as FEATURES, HOSTILE_PROTOCOL as PROTOCOL, RING_AREA, ackOf, hostileCase, liveRing, withMemory } from '../../src/probe/hostile.js';
import { NEXT, WRITE, placeRequest } from '../../src/probe/requests.js';
import { CANARY, SocketFrontEnd, USER_BASE, memTablePayload, message, n, receive, memRegionPayload, type SplitTestRing } from './front-end.js';

export { RING_AREA };

const root = join(fileURLToPath(import.meta.url), '../../../..');
const bin = join(root, 'dist/src/cli/main.js');

const ACK = 1 | FLAG_NEED_REPLY;
const pf = (f: number) => 1n << BigInt(f);
const PROTOCOL_FEATURES = 1n << 30n;
const IMAGE_SIZE = 1 << 20;
/** How long any one wait may take (the by-hand comparison shortens it for a back-end that logs differently). */
export const bounds = { waitMs: 10_000 };

/** Byte `i` of the blk image (a pattern a read can be checked against). */
const imageByte = (i: number) => (i * 7 + (i >> 9)) & 0xff;

/** A running back-end process (`virtio-ts serve`, or another given by `command`) and its log. */
export class Server {
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  private stderr = '';
  fdBaseline = 0;

  constructor(
    readonly type: 'blk' | 'rng',
    readonly dir: string,
    readonly path: string,
    /** Another back-end: its command line, given the socket path and the image path. */
    command?: (path: string, image: string) => string[],
    /** `virtio-ts serve`'s monitor mode. */
    readonly mode: 'strict' | 'tolerant' = 'tolerant',
  ) {
    const args = ['serve', type, '--socket-path', path, `--${mode}`];
    const image = join(dir, 'disk.img');
    if (type === 'blk') {
      writeFileSync(image, Uint8Array.from({ length: IMAGE_SIZE }, (_, i) => imageByte(i)));
      args.push('--image', image);
    }
    const [cmd, ...rest] = command?.(path, image) ?? [process.execPath, bin, ...args];
    this.child = spawn(cmd, rest, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout!.on('data', (d) => (this.stderr += d));
    this.child.stderr!.on('data', (d) => (this.stderr += d));
    this.exited = new Promise((res) => this.child.on('exit', (code) => res(code)));
  }

  /** The log lines so far: each line's message (JSON logs) or the line itself. */
  lines(): string[] {
    return this.stderr
      .split('\n')
      .filter(Boolean)
      .map((l) => {
        try {
          return String((JSON.parse(l) as { msg?: unknown }).msg);
        } catch {
          return l;
        }
      });
  }

  /** The log so far, one object per line: its message (`msg`) and fields (JSON logs; `kind` on the back-end's errors). */
  records(): Record<string, unknown>[] {
    return this.stderr
      .split('\n')
      .filter(Boolean)
      .map((l) => {
        try {
          return JSON.parse(l) as Record<string, unknown>;
        } catch {
          return { msg: l };
        }
      });
  }

  /**
   * Waits (bounded) for a log line matching `re` from line `from` on and checks the error kind
   * it carries (the VhostUserError's `kind` field of the JSON line); returns the line.
   */
  async loggedKind(re: RegExp, kind: string, from: number): Promise<string> {
    const line = await this.logged(re, from);
    const record = this.records().slice(from).find((r) => re.test(String(r.msg)));
    assert.equal(record?.kind, kind, `the error kind logged with "${line}"`);
    return line;
  }

  /** Waits (bounded) for a log line matching `re` from line `from` on; returns it. */
  async logged(re: RegExp, from: number, timeoutMs = bounds.waitMs): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.lines().slice(from).find((l) => re.test(l));
      if (hit !== undefined) return hit;
      if (!this.alive) assert.fail(`serve ${this.type} exited (${this.child.exitCode ?? this.child.signalCode}) before logging ${re}`);
      if (Date.now() > deadline) assert.fail(`no log line ${re} in ${timeoutMs} ms; since the case began:\n${this.lines().slice(from).join('\n')}`);
      await new Promise((res) => setTimeout(res, 2));
    }
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  fds(): number {
    return readdirSync(`/proc/${this.child.pid}/fd`).length;
  }

  /** Guest memory the process has mapped from our memfds. */
  guestMappings(): number {
    return readFileSync(`/proc/${this.child.pid}/maps`, 'utf8')
      .split('\n')
      .filter((l) => l.includes('hostile-guest')).length;
  }

  /** Waits (bounded) until the process holds no guest mapping and no more fds than at rest. */
  async atRest(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.guestMappings() > 0 || this.fds() > this.fdBaseline) {
      if (Date.now() > deadline) assert.fail(`serve ${this.type} still holds ${this.guestMappings()} guest mapping(s) and ${this.fds()} fds (${this.fdBaseline} at rest)`);
      await new Promise((res) => setTimeout(res, 2));
    }
  }

  /** SIGTERM; `serve` exits 1 when it logged a violation during its run, else 0 (src/cli/exit-codes.ts). */
  async stop(sawViolations: boolean): Promise<void> {
    this.child.kill('SIGTERM');
    assert.equal(await this.exited, sawViolations ? 1 : 0);
  }
}

/**
 * Starts a back-end in `dir` and waits (bounded) until it listens and has served a correct
 * session (the reference for every case); its fd count at rest is taken before that session.
 */
export async function startServer(type: 'blk' | 'rng', dir: string, command?: (path: string, image: string) => string[], mode: 'strict' | 'tolerant' = 'tolerant'): Promise<Server> {
  const srv = new Server(type, dir, join(dir, `${type}.sock`), command, mode);
  const deadline = Date.now() + 20_000;
  while (!existsSync(srv.path)) {
    if (!srv.alive || Date.now() > deadline) assert.fail(`${type} back-end did not listen:\n${srv.lines().join('\n')}`);
    await new Promise((res) => setTimeout(res, 5));
  }
  if (command === undefined) await srv.logged(/listening on/, 0);
  srv.fdBaseline = srv.fds();
  await correctSession(srv);
  return srv;
}

/** The session is still usable: GET_FEATURES is answered. */
async function stillServed(fe: SocketFrontEnd): Promise<void> {
  assert.ok((await fe.askU64(Req.GET_FEATURES)) & bit(Feature.VERSION_1), 'the session goes on');
}

/** Refused with a reason: the reason logged with the error's kind, and the connection closed. */
async function refused(srv: Server, fe: SocketFrontEnd, from: number, reason: RegExp, kind: VhostUserErrorKind): Promise<void> {
  await fe.ended(bounds.waitMs);
  const line = await srv.loggedKind(reason, kind, from);
  assert.match(line, /closing the connection/);
}

/** A device error: CONFIG_CHANGE_MSG on the back-end channel, then the connection closed with the reason. */
async function deviceError(srv: Server, fe: SocketFrontEnd, from: number, reason: RegExp): Promise<void> {
  const note = new DataView((await receive(fe.channel, bounds.waitMs)).buffer);
  assert.equal(note.getUint32(0, true), BackendReq.CONFIG_CHANGE_MSG, 'CONFIG_CHANGE_MSG on the back-end request channel');
  await fe.ended(bounds.waitMs);
  // The case's own reason (a line of an earlier case may still be on its way through the pipe).
  assert.match(await srv.loggedKind(new RegExp(`device error: .*(${reason.source})`), 'device-error', from), /closing the connection/);
}

/**
 * A correct request on ring `ring`, placed at guest address `at` (readable header for blk);
 * resolves to the ranges the device may write, once it is used. rng: 64 writable bytes. blk:
 * a read of sector 1 in `segments` data segments (through an indirect table when `indirect`).
 */
async function goodRequest(type: 'blk' | 'rng', fe: SocketFrontEnd, ring: SplitTestRing, at: number, segments = 1, indirect = false): Promise<[number, number][]> {
  const before = ring.usedIdx();
  const granted = placeRequest(type, fe, ring, at, segments, indirect).granted;
  await ring.waitUsed((before + 1) & 0xffff);
  const [id, len] = ring.used(before);
  assert.equal(id, 0, 'the used entry names the chain');
  if (type === 'rng') {
    assert.ok(len > 0 && len <= 64, `entropy bytes written (${len})`);
    assert.ok(!fe.bytes.subarray(at, at + 16).every((b) => b === CANARY), 'entropy landed');
  } else {
    const status = at + 0x1000 + segments * 0x200;
    assert.equal(fe.bytes[status], 0, 'VIRTIO_BLK_S_OK');
    for (let i = 0; i < segments * 512; i++) {
      const got = fe.bytes[at + 0x1000 + i];
      if (got !== imageByte(512 + i)) assert.fail(`data byte ${i} of sector 1 is ${got}, not ${imageByte(512 + i)}`);
    }
    assert.equal(len, segments * 512 + 1, 'used length: data and status');
  }
  return [[at, at + 16], ...granted];
}

/** The check after every case: alive, at rest, and a correct session on a new connection served. */
export async function correctSession(srv: Server): Promise<void> {
  assert.ok(srv.alive, `serve ${srv.type} is alive`);
  await srv.atRest();
  const fe = new SocketFrontEnd(srv.path);
  try {
    const ring = await liveRing(fe);
    const granted = await goodRequest(srv.type, fe, ring, 0x20000);
    assert.deepEqual(fe.touched([RING_AREA, ...granted]), [], 'guest memory outside the granted buffers untouched');
  } finally {
    fe.close();
  }
  await srv.atRest();
}

export interface Case {
  name: string;
  only?: 'blk' | 'rng';
  /** Guest RAM in a regular file (it cannot be sealed) instead of a memfd. */
  ramInFile?: boolean;
  /** Runs the case and asserts its outcome; returns guest ranges the device may have written (beyond the ring area). */
  run(srv: Server, fe: SocketFrontEnd, from: number): Promise<[number, number][] | void>;
}

/** Runs the injection of virtio-ts probe's hostile case `id` (src/probe/hostile.ts) on this session. */
async function inject(id: string, srv: Server, fe: SocketFrontEnd): Promise<void> {
  await hostileCase(id).inject({ fe, type: srv.type, requests: srv.type });
}

const REPLY_ACK = pf(ProtocolFeature.REPLY_ACK);

const protocolCases: Case[] = [
  { name: 'an unknown request (99)', run: async (srv, fe, from) => { await inject('message.unknown-request', srv, fe); await refused(srv, fe, from, /request 99: not a request this back-end serves/, 'unsupported-request'); } },
  { name: 'protocol version 2', run: async (srv, fe, from) => { await inject('message.version-2', srv, fe); await refused(srv, fe, from, /GET_FEATURES: protocol version 2, expected 1/, 'malformed-message'); } },
  { name: 'a request with the reply flag', run: async (srv, fe, from) => { await inject('message.reply-flag', srv, fe); await refused(srv, fe, from, /with the reply flag set/, 'malformed-message'); } },
  { name: 'unknown header flags', run: async (srv, fe, from) => { await inject('message.unknown-flags', srv, fe); await refused(srv, fe, from, /unknown flags 0x101/, 'malformed-message'); } },
  { name: 'SET_FEATURES with a 4-byte payload', run: async (srv, fe, from) => { await inject('message.short-payload', srv, fe); await refused(srv, fe, from, /SET_FEATURES: payload of 4 bytes, expected 8/, 'malformed-message'); } },
  { name: 'a header announcing 5000 payload bytes', run: async (srv, fe, from) => { await inject('message.huge-size', srv, fe); await refused(srv, fe, from, /payload of 5000 bytes \(at most 4096\)/, 'malformed-message'); } },
  { name: 'GET_FEATURES carrying an fd', run: async (srv, fe, from) => { await inject('message.unexpected-fd', srv, fe); await refused(srv, fe, from, /GET_FEATURES: 1 file descriptors, expected 0/, 'malformed-message'); } },
  { name: 'SET_VRING_KICK without an fd or the invalid-fd flag', run: async (srv, fe, from) => { await inject('message.no-fd', srv, fe); await refused(srv, fe, from, /SET_VRING_KICK: the invalid-fd flag is clear but 0 fds came/, 'malformed-message'); } },
  { name: 'SET_PROTOCOL_FEATURES with a bit never offered', run: async (srv, fe, from) => { await inject('features.protocol-unoffered', srv, fe); await refused(srv, fe, from, /protocol features 0x[0-9a-f]+ were never offered/, 'feature-not-offered'); } },
  { name: 'SET_FEATURES with a bit never offered', run: async (srv, fe, from) => { await inject('features.unoffered', srv, fe); await refused(srv, fe, from, /SET_FEATURES: features never offered: .*0x8000000000000000/, 'feature-not-offered'); } },
  {
    name: 'SET_FEATURES with a bit never offered, REPLY_ACK asked',
    run: async (srv, fe, from) => {
      await fe.askU64(Req.GET_FEATURES);
      await fe.send(Req.SET_PROTOCOL_FEATURES, u64Payload(REPLY_ACK));
      await fe.send(Req.SET_FEATURES, u64Payload(bit(Feature.VERSION_1) | (1n << 50n)), [], ACK);
      assert.deepEqual(await ackOf(fe), [Req.SET_FEATURES, 1n], 'a non-zero REPLY_ACK');
      await srv.loggedKind(/SET_FEATURES: features never offered: .*refused \(non-zero REPLY_ACK\)/, 'feature-not-offered', from);
      await fe.send(Req.SET_FEATURES, u64Payload(bit(Feature.VERSION_1) | PROTOCOL_FEATURES), [], ACK);
      assert.deepEqual(await ackOf(fe), [Req.SET_FEATURES, 0n], 'offered features are then taken');
      await stillServed(fe);
    },
  },
];

const memoryCases: Case[] = [
  { name: 'a memory region past the end of its fd', run: async (srv, fe, from) => { await inject('memory.past-fd-end', srv, fe); await refused(srv, fe, from, /SET_MEM_TABLE: region 0 \[offset 0x0, \+0x200000\) goes past the end of its fd \(0x100000 bytes\)/, 'bad-fd'); } },

  { name: 'a memory region whose offset puts its end past the fd', run: async (srv, fe, from) => { await inject('memory.offset-past-end', srv, fe); await refused(srv, fe, from, /region 0 \[offset 0xff000, \+0x2000\) goes past the end of its fd/, 'bad-fd'); } },

  {
    name: 'a memory region past the end of its fd, REPLY_ACK asked; then a good table',
    run: async (srv, fe, from) => {
      await fe.askU64(Req.GET_FEATURES);
      await fe.send(Req.SET_PROTOCOL_FEATURES, u64Payload(REPLY_ACK));
      await fe.send(Req.SET_MEM_TABLE, memTablePayload(2 * fe.ramSize), [fe.memfd], ACK);
      assert.deepEqual(await ackOf(fe), [Req.SET_MEM_TABLE, 1n]);
      await srv.loggedKind(/goes past the end of its fd.*refused \(non-zero REPLY_ACK\)/, 'bad-fd', from);
      await fe.send(Req.SET_MEM_TABLE, memTablePayload(fe.ramSize), [fe.memfd], ACK);
      assert.deepEqual(await ackOf(fe), [Req.SET_MEM_TABLE, 0n]);
      await stillServed(fe);
    },
  },
  {
    name: 'guest RAM shrunk after it was given (the memfd is sealed against it)',
    run: async (srv, fe) => {
      const ring = await liveRing(fe);
      await stillServed(fe); // a reply: the memory table before it was taken
      assert.throws(() => ftruncateSync(fe.memfd, 0x1000), { code: 'EPERM' }, 'the back-end sealed the memfd against shrinking');
      const granted = await goodRequest(srv.type, fe, ring, 0x20000);
      await stillServed(fe);
      return granted;
    },
  },
  {
    // QEMU's memory-backend-file (tmpfs, hugetlbfs) gives a file the back-end cannot seal. A
    // shrink under the mapping would raise SIGBUS where the device touches it; the addon absorbs
    // it (a zero page) and the session ends as a device error instead of the process dying.
    name: 'guest RAM in a file that cannot be sealed, shrunk under a request (SIGBUS absorbed, device error)',
    ramInFile: true,
    run: async (srv, fe, from) => {
      const ring = await liveRing(fe);
      await srv.logged(/cannot be sealed against shrinking/, from);
      // blk: header at 0x40000 (kept), data and status from 0x41000 (cut off); rng: 64 bytes at 0x41000.
      placeRequest(srv.type, fe, ring, srv.type === 'blk' ? 0x40000 : 0x41000, 1, false, () => ftruncateSync(fe.memfd, 0x41000));
      await deviceError(srv, fe, from, /guest memory shrank under its mapping/);
      ftruncateSync(fe.memfd, fe.ramSize); // our own view again (the cut-off pages are gone: zeros)
      return [[0x40000, 0x40010], [0x41000, fe.ramSize]]; // blk: the driver's own header; the pages it cut off
    },
  },
  { name: 'a memory region of size 0', run: async (srv, fe, from) => { await inject('memory.zero-size', srv, fe); await refused(srv, fe, from, /SET_MEM_TABLE: region 0: size 0/, 'malformed-message'); } },
  { name: 'overlapping memory regions', run: async (srv, fe, from) => { await inject('memory.overlap', srv, fe); await refused(srv, fe, from, /regions overlap at 0x80000/, 'memory-table'); } },

  { name: 'nine memory regions', run: async (srv, fe, from) => { await inject('memory.nine-regions', srv, fe); await refused(srv, fe, from, /SET_MEM_TABLE: payload of 296 bytes, expected 8\.\.264/, 'malformed-message'); } },

  { name: 'a memory region whose mmap offset overflows', run: async (srv, fe, from) => { await inject('memory.huge-offset', srv, fe); await refused(srv, fe, from, /region 0: mmapOffset beyond 2\^53/, 'malformed-message'); } },

  { name: 'a memory region whose fd is an eventfd', run: async (srv, fe, from) => { await inject('memory.eventfd', srv, fe); await refused(srv, fe, from, /region 0: its fd is not a file/, 'bad-fd'); } },
  { name: 'two memory regions, one fd', run: async (srv, fe, from) => { await inject('memory.fd-count', srv, fe); await refused(srv, fe, from, /SET_MEM_TABLE: 2 regions but 1 file descriptors/, 'malformed-message'); } },
  { name: 'a memory region of 2^63 bytes', run: async (srv, fe, from) => { await inject('memory.huge-size', srv, fe); await refused(srv, fe, from, /region 0: size beyond 2\^53/, 'malformed-message'); } },
  {
    name: "a memory region twice its fd, then a request past the fd's end",
    run: async (srv, fe, from) => {
      // Refused at the table: the rest of the injection meets a closed connection.
      await inject('memory.past-fd-end-used', srv, fe).catch(() => undefined);
      await refused(srv, fe, from, /SET_MEM_TABLE: region 0 \[offset 0x0, \+0x200000\) goes past the end of its fd/, 'bad-fd');
      return [[0x20000, 0x20010], [0x20100, 0x20101]]; // the driver's own header and status byte, if it got that far
    },
  },

  {
    name: 'a dirty log past the end of its fd',
    run: async (srv, fe, from) => {
      await withMemory(fe);
      const log = n.memfdCreate('hostile-log', 0x1000);
      const p = new Uint8Array(16);
      new DataView(p.buffer).setBigUint64(0, 0x10000n, true);
      await fe.send(Req.SET_LOG_BASE, p, [log]);
      n.close(log);
      await refused(srv, fe, from, /SET_LOG_BASE: dirty log \[offset 0x0, \+0x10000\) goes past the end of its fd \(0x1000 bytes\)/, 'bad-fd');
    },
  },
  {
    name: 'an inflight buffer past the end of its fd',
    run: async (srv, fe, from) => {
      await withMemory(fe);
      const buf = n.memfdCreate('hostile-inflight', 0x100);
      const p = new Uint8Array(24);
      const v = new DataView(p.buffer);
      v.setBigUint64(0, 0x100000n, true); // mmap_size
      v.setUint16(16, 1, true); // one queue
      v.setUint16(18, 16, true); // of 16
      await fe.send(Req.SET_INFLIGHT_FD, p, [buf]);
      n.close(buf);
      await refused(srv, fe, from, /SET_INFLIGHT_FD: inflight buffer \[offset 0x0, \+0x[0-9a-f]+\) goes past the end of its fd \(0x100 bytes\)/, 'bad-fd');
    },
  },
];

const ringCases: Case[] = [
  // Each size is refused for the rule it broke: 2048 and 65536 are powers of two, too large for
  // the device's largest queue (serve's default --queue-size 1024), not misshapen.
  ...(
    [
      [0, /split ring size 0: a ring holds at least one descriptor/],
      [100, /split ring size 100 is not a power of two;/],
      [2048, /split ring size 2048 is larger than the device's largest queue, 1024 \(`serve --queue-size 1024`; QEMU's queue-size= must not exceed it\)/],
      [65536, /split ring size 65536 is larger than the device's largest queue, 1024 /],
    ] as const
  ).map(
    ([num, reason]): Case => ({
      name: `SET_VRING_NUM ${num} on a split ring`,
      run: async (srv, fe, from) => {
        await withMemory(fe);
        await fe.send(Req.SET_VRING_NUM, statePayload(0, num));
        await refused(srv, fe, from, reason, 'ring-size');
        const line = await srv.logged(reason, from);
        assert.doesNotMatch(line, num === 100 ? /larger/ : /power of two/, 'one reason, the true one');
      },
    }),
  ),
  {
    name: 'SET_VRING_NUM on a packed ring: 100 taken, 0 and 65536 refused (REPLY_ACK)',
    run: async (srv, fe, from) => {
      await withMemory(fe, FEATURES | bit(Feature.RING_PACKED), PROTOCOL | REPLY_ACK);
      for (const [num, ack] of [[100, 0n], [0, 1n], [65536, 1n], [1, 0n]] as const) {
        await fe.send(Req.SET_VRING_NUM, statePayload(0, num), [], ACK);
        assert.deepEqual(await ackOf(fe), [Req.SET_VRING_NUM, ack], `packed ring size ${num}`);
      }
      await srv.loggedKind(/packed ring size 65536 is larger than the device's largest queue, 1024 .*; refused/, 'ring-size', from);
      await srv.loggedKind(/packed ring size 0: a ring holds at least one descriptor; refused/, 'ring-size', from);
      await stillServed(fe);
    },
  },
  { name: 'ring addresses outside guest memory', run: async (srv, fe, from) => { await inject('ring.addr-outside', srv, fe); await refused(srv, fe, from, /SET_VRING_ADDR: frontend address 0x7f0001000000 \(\+16\) is in no memory region/, 'ring-address'); } },

  {
    name: 'a descriptor table running off the end of guest memory (found when the ring starts)',
    run: async (srv, fe, from) => {
      await inject('ring.desc-table-off-end', srv, fe);
      await deviceError(srv, fe, from, /struct.buffer-range.driver.1: .*descriptor table/);
    },
  },

  { name: 'a split ring base beyond 16 bits', run: async (srv, fe, from) => { await inject('ring.base-17-bits', srv, fe); await refused(srv, fe, from, /split ring base 65536 is not a 16-bit index/, 'ring-base'); } },

  { name: 'a ring base more than the ring size ahead of the used index', run: async (srv, fe, from) => { await inject('ring.base-ahead', srv, fe); await refused(srv, fe, from, /ring 0: base 100 is more than the ring size 16 ahead of the used index 0/, 'ring-base'); } },

  { name: 'a kick fd that is not an eventfd', run: async (srv, fe, from) => { await inject('ring.kick-not-eventfd', srv, fe); await refused(srv, fe, from, /SET_VRING_KICK: the kick fd is not an eventfd/, 'bad-fd'); } },

  { name: 'SET_VRING_ENABLE 2', run: async (srv, fe, from) => { await inject('ring.enable-2', srv, fe); await refused(srv, fe, from, /ring enable value 2/, 'ring-state'); } },
  { name: 'a ring that does not exist', run: async (srv, fe, from) => { await inject('ring.no-such-queue', srv, fe); await refused(srv, fe, from, /SET_VRING_NUM: queue 255 does not exist/, 'malformed-message'); } },
  { name: 'queue 0xffffffff', run: async (srv, fe, from) => { await inject('ring.queue-index-huge', srv, fe); await refused(srv, fe, from, /SET_VRING_NUM: queue 4294967295 does not exist/, 'malformed-message'); } },
  {
    name: 'ring addresses outside guest memory, REPLY_ACK asked',
    run: async (srv, fe, from) => {
      const inj = await hostileCase('ring.addr-outside-ack').inject({ fe, type: srv.type, requests: srv.type });
      assert.equal(inj.outcome, 'refused', `a non-zero REPLY_ACK (${inj.note})`);
      await srv.loggedKind(/SET_VRING_ADDR: frontend address 0x7f0001000000 \(\+16\) is in no memory region.*refused \(non-zero REPLY_ACK\)/, 'ring-address', from);
      await stillServed(fe);
    },
  },

  {
    name: 'SET_MEM_TABLE under a running ring',
    run: async (srv, fe, from) => {
      const ring = await liveRing(fe);
      const granted = await goodRequest(srv.type, fe, ring, 0x20000);
      await fe.send(Req.SET_MEM_TABLE, memTablePayload(fe.ramSize), [fe.memfd]);
      await refused(srv, fe, from, /SET_MEM_TABLE: ring 0 is running: stop it \(GET_VRING_BASE\) before replacing the memory table/, 'ring-state');
      return granted;
    },
  },
  {
    name: 'SET_VRING_NUM on a running ring',
    run: async (srv, fe, from) => {
      const ring = await liveRing(fe);
      const granted = await goodRequest(srv.type, fe, ring, 0x20000);
      await fe.send(Req.SET_VRING_NUM, statePayload(0, 32));
      await refused(srv, fe, from, /ring 0 is running \(stop it with GET_VRING_BASE first\)/, 'ring-state');
      return granted;
    },
  },
];

/** A chain the device cannot serve (virtio-ts probe's case `id`): a device error in every mode. */
function chainCase(id: string, reason: RegExp): Case {
  const c = hostileCase(id);
  return {
    name: c.title,
    run: async (srv, fe, from) => {
      const { ring, granted } = await c.inject({ fe, type: srv.type, requests: srv.type });
      await deviceError(srv, fe, from, reason);
      assert.equal(ring?.usedIdx(), 0, 'nothing used');
      return granted; // what the driver itself wrote (an indirect table)
    },
  };
}

const chainCases: Case[] = [
  chainCase('chain.loop', /split.desc-table.driver.1: .*loops/),
  chainCase('chain.next-beyond-size', /struct.desc-next.driver.1: .*chains to 100, beyond the queue size 16/),
  chainCase('chain.head-beyond-size', /avail ring names descriptor 200, beyond the queue size 16/),
  chainCase('chain.buffer-outside-memory', /struct.buffer-range.driver.1: .*outside guest memory/),
  chainCase('chain.buffer-len-max', /struct.buffer-range.driver.1: .*buffer \[0x20000, \+4294967295\) of chain 0 is outside guest memory/),
  chainCase('chain.buffer-straddles-end', /struct.buffer-range.driver.1: .*outside guest memory/),
  chainCase('chain.indirect-17', /struct.indirect-len.driver.1: .*indirect table length 17/),
  chainCase('chain.indirect-outside', /indirect table \[0x40000000, \+64\) is outside guest memory/),
  chainCase('chain.indirect-nested', /split.indirect-descs.driver.2/),
  chainCase('chain.avail-jump', /split.avail-ring.driver.1: .*jumped from 0 to 100/),
  {
    name: 'a long but valid indirect table (as many entries as the queue size)',
    run: async (srv, fe) => {
      const ring = await liveRing(fe);
      // blk: header + 14 data segments + status = 16 descriptors; rng: 16 writable pieces.
      const granted = await goodRequest(srv.type, fe, ring, 0x40000, srv.type === 'blk' ? 14 : 16, true);
      await stillServed(fe);
      return [...granted, [0x48000, 0x48000 + 16 * 16]];
    },
  },
];

/**
 * A servable violation (the driver broke a rule, but what it asked is well-defined and inside
 * guest memory): tolerant mode logs the verdict and serves it; strict mode makes it a device error.
 */
/**
 * A servable violation of `clause`: `place` makes one chain available; tolerant mode serves it
 * (`served` checks the result) and logs the verdict, strict mode makes it a device error.
 * `driverBytes` are what the driver itself wrote, `written` what the device may write.
 */
function servableCase(
  name: string,
  only: 'blk' | 'rng',
  clause: string,
  features: bigint,
  place: (fe: SocketFrontEnd, ring: SplitTestRing) => void,
  served: (fe: SocketFrontEnd, ring: SplitTestRing) => void,
  driverBytes: [number, number][],
  written: [number, number][],
): Case {
  return {
    name: `${name} (${clause})`,
    only,
    run: async (srv, fe, from) => {
      const ring = await liveRing(fe, features);
      place(fe, ring);
      if (srv.mode === 'strict') {
        await deviceError(srv, fe, from, new RegExp(clause.replaceAll('.', '\\.')));
        return driverBytes;
      }
      await ring.waitUsed(1);
      served(fe, ring);
      await srv.logged(new RegExp(`VIOLATION ${clause.replaceAll('.', '\\.')}`), from);
      await stillServed(fe);
      return [...driverBytes, ...written];
    },
  };
}

const servableCases: Case[] = [
  servableCase(
    'an entropy request with a device-readable buffer first',
    'rng',
    'entropy.device-operation.driver.1',
    FEATURES,
    (fe, ring) => {
      fe.bytes.fill(0, 0x20000, 0x20010); // the driver's readable bytes
      ring.desc(0, 0x20000, 16, NEXT, 1);
      ring.desc(1, 0x20100, 64, WRITE);
      ring.offer(0);
    },
    (_fe, ring) => assert.ok(ring.used(0)[1] > 0, 'served: entropy bytes written'),
    [[0x20000, 0x20010]],
    [[0x20100, 0x20140]],
  ),
  servableCase(
    'a FLUSH request with a non-zero sector',
    'blk',
    'blk.device-operation.driver.4',
    FEATURES | bit(9), // VIRTIO_BLK_F_FLUSH
    (fe, ring) => {
      fe.view.setUint32(0x20000, 4, true); // VIRTIO_BLK_T_FLUSH
      fe.view.setUint32(0x20004, 0, true);
      fe.view.setBigUint64(0x20008, 5n, true);
      ring.desc(0, 0x20000, 16, NEXT, 1);
      ring.desc(1, 0x20100, 1, WRITE);
      ring.offer(0);
    },
    (fe) => assert.equal(fe.bytes[0x20100], 0, 'served: VIRTIO_BLK_S_OK'),
    [[0x20000, 0x20010]],
    [[0x20100, 0x20101]],
  ),
];

servableCases.push({
  // What Linux does when a device advertises a seg_max larger than the queue QEMU set up
  // (catalogue/deviations.tsv): well-formed, inside guest memory, at most LONG_CHAIN_CAP entries.
  name: 'an indirect table longer than the queue size: 32 entries on a 16-entry queue (split.indirect-descs.driver.3)',
  run: async (srv, fe, from) => {
    const ring = await liveRing(fe);
    const segments = srv.type === 'blk' ? 30 : 32; // 32 descriptors in all
    const table: [number, number] = [0x48000, 0x48000 + 32 * 16];
    if (srv.mode === 'strict') {
      placeRequest(srv.type, fe, ring, 0x40000, segments, true);
      await deviceError(srv, fe, from, /split.indirect-descs.driver.3/);
      return srv.type === 'blk' ? [[0x40000, 0x40010], table] : [table]; // the driver's own bytes
    }
    const granted = await goodRequest(srv.type, fe, ring, 0x40000, segments, true);
    await srv.logged(/VIOLATION split.indirect-descs.driver.3/, from);
    await stillServed(fe);
    return [...granted, table];
  },
});

const floodCases: Case[] = [
  {
    name: '10,000 GET_FEATURES in one write get 10,000 replies',
    run: async (srv, fe) => {
      const one = message(Req.GET_FEATURES);
      const all = new Uint8Array(one.length * 10_000);
      for (let i = 0; i < 10_000; i++) all.set(one, i * one.length);
      const writing = fe.write(all); // the back-end takes it as it can; the replies are read meanwhile
      const offered = new Set<bigint>();
      for (let i = 0; i < 10_000; i++) {
        const r = new DataView((await receive(fe.fd, bounds.waitMs)).buffer);
        assert.equal(r.getUint32(0, true), Req.GET_FEATURES, `reply ${i}`);
        offered.add(r.getBigUint64(HEADER_SIZE, true));
      }
      await writing;
      assert.equal(offered.size, 1, 'every reply the same');
      await stillServed(fe);
    },
  },
  {
    name: 'a front-end that stops reading its replies, then resumes',
    run: async (srv, fe, from) => {
      const one = message(Req.GET_FEATURES);
      const all = new Uint8Array(one.length * 10_000);
      for (let i = 0; i < 10_000; i++) all.set(one, i * one.length);
      const writing = fe.write(all, [], 30_000);
      // The back-end's replies fill the socket and its queue; it stops reading our messages.
      await srv.logged(/the front-end is not reading its replies/, from);
      for (let i = 0; i < 10_000; i++) assert.equal(new DataView((await receive(fe.fd, bounds.waitMs)).buffer).getUint32(0, true), Req.GET_FEATURES, `reply ${i}`);
      await writing;
      await stillServed(fe);
    },
  },
];

const disconnectCases: Case[] = [
  {
    name: 'half a header, then the connection closed',
    run: async (srv, fe, from) => {
      await fe.write(message(Req.GET_FEATURES).subarray(0, 6));
      fe.close();
      await srv.loggedKind(/short header \(6 bytes\)/, 'malformed-message', from);
    },
  },
  {
    name: 'a header without its payload, then the connection closed',
    run: async (srv, fe, from) => {
      await fe.write(message(Req.SET_FEATURES, new Uint8Array(8)).subarray(0, HEADER_SIZE));
      fe.close();
      await srv.logged(/front-end closed mid-message|SET_FEATURES: 8 payload bytes missing/, from);
    },
  },
  {
    name: 'a header without its payload on an open connection',
    run: async (srv, fe, from) => {
      await fe.write(message(Req.SET_FEATURES, new Uint8Array(8)).subarray(0, HEADER_SIZE));
      await refused(srv, fe, from, /SET_FEATURES: 8 payload bytes missing/, 'malformed-message');
    },
  },
  {
    name: 'a memory table with its fd and half its payload, then the connection closed',
    run: async (srv, fe, from) => {
      await fe.write(message(Req.SET_MEM_TABLE, memTablePayload(fe.ramSize)).subarray(0, HEADER_SIZE + 20), [fe.memfd]);
      fe.close();
      // Either way the message is incomplete: whether the close or the read comes first.
      await srv.logged(/front-end closed mid-message|SET_MEM_TABLE: 20 payload bytes missing/, from);
    },
  },
  {
    name: 'a memory table with its fd, then the connection closed',
    run: async (srv, fe, from) => {
      await fe.send(Req.SET_MEM_TABLE, memTablePayload(fe.ramSize), [fe.memfd]);
      await fe.send(Req.ADD_MEM_REG, memRegionPayload(0x200000, 0x1000, USER_BASE + 0x200000), [fe.memfd]);
      fe.close();
      await srv.loggedKind(/ADD_MEM_REG: protocol feature 15 was not negotiated/, 'unsupported-request', from);
    },
  },
];

export const classes: [string, Case[]][] = [
  ['protocol', protocolCases],
  ['memory table', memoryCases],
  ['ring setup', ringCases],
  ['chains', chainCases],
  ['servable violations', servableCases],
  ['floods', floodCases],
  ['disconnects', disconnectCases],
];

