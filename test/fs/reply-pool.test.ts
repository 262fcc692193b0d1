// The FUSE server's reply heads are reused once released (releaseReply, which the virtio-fs
// device calls after copying a reply into the driver's buffers): a reused head carries exactly
// the bytes a new one would (zero where the reply sets nothing), a reply released twice is
// pooled once, and a reply not released is never handed out again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FuseServer, releaseReply, errorReply, type FuseReply } from '../../src/fs/fuse/server.js';
import { FuseClient, fuseRequest } from '../../src/fs/fuse/client.js';
import { Op, Size } from '../../src/fs/fuse/wire.js';
import { MemoryFs } from '../../src/fs/memory.js';

/** A server past INIT (through the client), with a file `f` looked up: its nodeid. */
async function server(): Promise<{ server: FuseServer; nodeid: number }> {
  const server = new FuseServer(new MemoryFs());
  // The reply's bytes copied out (as the device would); these replies are not released.
  const client = new FuseClient(async (req, room) => ((r) => (r === null ? null : new Uint8Array(Buffer.concat([r.head, r.data ?? new Uint8Array(0)]))))(await server.handle(req, room)));
  await client.init();
  const { entry, fh } = await client.create(1, 'f', 0o644);
  await client.release(entry.nodeid, fh);
  return { server, nodeid: entry.nodeid };
}

let unique = 100n;
async function getattr(s: FuseServer, nodeid: number): Promise<FuseReply> {
  const r = await s.handle(fuseRequest(Op.GETATTR, unique++, nodeid, [new Uint8Array(Size.getattrIn)]), 4096);
  assert.ok(r !== null);
  return r;
}

/** A reply's bytes with its unique (bytes 8..16) zeroed, to compare replies of different requests. */
function shape(r: FuseReply): number[] {
  const b = [...r.head];
  b.fill(0, 8, 16);
  return b;
}

test('a released reply head is reused for the next reply of its size, with the bytes a new head would have', async () => {
  const { server: s, nodeid } = await server();
  const first = await getattr(s, nodeid);
  const expected = shape(first);
  // Scribbled on (as if the device had left anything in it) and released: the next reply of
  // the same size reuses the head and must not show any of it (fuse_attr's padding stays 0).
  first.head.fill(0xee, Size.outHeader);
  const head = first.head;
  releaseReply(first);
  const second = await getattr(s, nodeid);
  assert.equal(second.head, head, 'the head was reused');
  assert.deepEqual(shape(second), expected, 'a reused head has exactly the bytes of a new one');
  assert.equal(new DataView(second.head.buffer).getBigUint64(8, true), unique - 1n, 'its own unique');
});

test('a reply released twice is pooled once; one not released is never handed out again', async () => {
  const { server: s, nodeid } = await server();
  const kept = await getattr(s, nodeid);
  const twice = await getattr(s, nodeid);
  assert.notEqual(kept.head, twice.head);
  releaseReply(twice);
  releaseReply(twice);
  const a = await getattr(s, nodeid);
  const b = await getattr(s, nodeid);
  assert.equal(a.head, twice.head);
  assert.notEqual(b.head, twice.head, 'the second release was ignored: one head, one reuse');
  assert.notEqual(a.head, kept.head);
  assert.notEqual(b.head, kept.head, 'a reply still held is not reused');
  // Replies built elsewhere are ignored.
  releaseReply({ head: new Uint8Array(Size.outHeader), data: null, length: Size.outHeader });
  const e = errorReply(7n, 2);
  releaseReply(e);
  assert.equal(errorReply(8n, 5).head, e.head, 'error replies are pooled too');
});
