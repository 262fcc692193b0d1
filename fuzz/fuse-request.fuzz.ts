/**
 * Fuzz target: the FUSE server's request handling (FuseServer.handle, src/fs/fuse/server.ts)
 * over an in-memory file system that keeps its state from input to input (a small tree made at
 * start; nodeids 1 to 8 exist, so hostile requests reach the operations, not only the checks).
 * Every guest request is untrusted input.
 * Invariants: handle never throws; its answer is null or a reply no longer than the room the
 * input gave, whose fuse_out_header says its own length, echoes the request's unique and
 * carries 0 or a negative errno above -4096; an error reply has no body. The session is
 * started again (INIT) whenever an input ended it, so later inputs reach the operations.
 * Input: [0..1] the reply room (u16), then the request bytes.
 */
import { FuseServer, type FuseReply } from '../src/fs/fuse/server.js';
import { fuseRequest } from '../src/fs/fuse/client.js';
import { MemoryFs } from '../src/fs/memory.js';
import { Op } from '../src/fs/fuse/wire.js';
import { S_IFREG } from '../src/fs/vfs.js';
import { check, onlyTyped } from './common.js';

const fs = new MemoryFs({ maxBytes: 1 << 20, maxNodes: 256 });
const server = new FuseServer(fs, { maxWrite: 64 << 10, log: () => {} });
const ctx = { uid: 0, gid: 0, pid: 1 };

function start(): void {
  const init = new Uint8Array(64);
  const v = new DataView(init.buffer);
  v.setUint32(0, 7, true);
  v.setUint32(4, 38, true);
  v.setUint32(12, 0xffffffff, true);
  server.handle(fuseRequest(Op.INIT, 1n, 0, [init]), 4096);
  // The kernel's view: a few nodes it holds (LOOKUP replies counted by the server).
  for (const name of ['d', 'f', 'l']) {
    const req = fuseRequest(Op.LOOKUP, 2n, 1, [new TextEncoder().encode(name + '\0')]);
    server.handle(req, 4096);
  }
}
fs.mkdir(1, 'd', 0o755, 0, ctx);
fs.mknod(1, 'f', S_IFREG | 0o644, 0, 0, ctx);
fs.symlink(1, 'l', 'f', ctx);
start();

function judge(reply: FuseReply | null, req: Uint8Array, room: number): void {
  if (reply === null) return;
  check(reply.length <= room, `a reply of ${reply.length} bytes for ${room} bytes of room`);
  check(reply.length === reply.head.length + (reply.data?.length ?? 0), 'reply.length is not its parts');
  const v = new DataView(reply.head.buffer, reply.head.byteOffset, reply.head.byteLength);
  check(v.getUint32(0, true) === reply.length, 'out.len is not the reply length');
  const error = v.getInt32(4, true);
  check(error <= 0 && error > -4096, `error ${error}`);
  if (error !== 0) check(reply.length === 16, 'an error reply with a body');
  if (req.length >= 40) {
    const unique = new DataView(req.buffer, req.byteOffset, req.byteLength).getBigUint64(8, true);
    check(v.getBigUint64(8, true) === unique, 'the reply does not echo the request unique');
  }
}

export function fuzz(data: Uint8Array): void {
  const room = data.length >= 2 ? data[0] | (data[1] << 8) : 0;
  const req = data.subarray(Math.min(2, data.length));
  const out = onlyTyped(() => server.handle(req, room), [], 'FuseServer.handle');
  if (out !== null && out !== undefined && typeof (out as Promise<unknown>).then === 'function') {
    // A waiting SETLKW: judged when it settles (a rejection would be a finding too).
    void (out as Promise<FuseReply | null>).then((r) => judge(r, req, room));
  } else judge(out as FuseReply | null, req, room);
  if (!server.initialized) start();
}
