// The native addon, with real unix sockets, memfds, mappings and eventfds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ftruncateSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { native, POLL_READABLE } from '../src/native/index.js';

test('socketpair + SCM_RIGHTS: a memfd passed over the socket maps to the same memory on both ends', () => {
  const n = native();
  const [a, b] = n.socketpair();
  const mfd = n.memfdCreate('guest-ram', 1 << 20);
  assert.equal(n.sendmsg(a, new TextEncoder().encode('mem'), [mfd]), 3);
  const got = n.recvmsg(b, new Uint8Array(16));
  assert.equal(got.bytes, 3);
  assert.equal(got.fds.length, 1);
  assert.notEqual(got.fds[0], mfd, 'a new descriptor arrived');
  const mine = new Uint8Array(n.mmap(mfd, 0, 1 << 20));
  const theirs = new Uint8Array(n.mmap(got.fds[0], 4096, 4096));
  mine[4096 + 7] = 0xab;
  assert.equal(theirs[7], 0xab, 'shared mapping at an offset');
  theirs[8] = 0xcd;
  assert.equal(mine[4096 + 8], 0xcd);
  const buf = theirs.buffer;
  n.munmap(buf);
  assert.equal(buf.byteLength, 0, 'detached after munmap');
  assert.throws(() => n.munmap(buf), (e: NodeJS.ErrnoException) => e.code === 'EINVAL');
  n.munmap(mine.buffer);
  for (const fd of [a, b, mfd, got.fds[0]]) n.close(fd);
});

test('listen / connect / accept on a unix socket path; recvmsg says EAGAIN as -1 and end of stream as 0', async () => {
  const n = native();
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-native-'));
  try {
    const path = join(dir, 'sock');
    const l = n.listen(path);
    assert.equal(n.accept(l), -1, 'nothing waiting yet');
    const c = n.connect(path);
    let s = -1;
    for (let i = 0; i < 100 && s < 0; i++) s = n.accept(l);
    assert.ok(s >= 0);
    assert.equal(n.recvmsg(s, new Uint8Array(8)).bytes, -1);
    n.sendmsg(c, new Uint8Array([1, 2, 3]));
    const r = n.recvmsg(s, new Uint8Array(8));
    assert.deepEqual([r.bytes, r.fds], [3, []]);
    n.close(c);
    assert.equal(n.recvmsg(s, new Uint8Array(8)).bytes, 0);
    n.close(s);
    n.close(l);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('errors carry the errno name', () => {
  const n = native();
  assert.throws(() => n.connect('/nonexistent/virtio-ts.sock'), (e: NodeJS.ErrnoException) => e.code === 'ENOENT');
  assert.throws(() => n.close(987654), (e: NodeJS.ErrnoException) => e.code === 'EBADF');
  assert.throws(() => n.mmap(987654, 0, 4096), (e: NodeJS.ErrnoException) => e.code === 'EBADF');
});

test('eventfd: counts, reads back to 0; a watch on the event loop fires when it is written', async () => {
  const n = native();
  const fd = n.eventfd();
  assert.equal(n.eventfdRead(fd), 0);
  n.eventfdWrite(fd, 2);
  n.eventfdWrite(fd);
  assert.equal(n.eventfdRead(fd), 3);
  const seen: number[] = [];
  const got = new Promise<void>((resolve) => {
    const w = n.watch(fd, true, false, (events) => {
      seen.push(events);
      n.eventfdRead(fd);
      w.close();
      resolve();
    });
  });
  setTimeout(() => n.eventfdWrite(fd, 5), 5);
  await got;
  assert.ok(seen[0] & POLL_READABLE);
  n.close(fd);
});

test('watchEventfd: the addon reads the counter and passes it; a counter already read calls nothing; an fd it cannot watch throws', async () => {
  const n = native();
  const fd = n.eventfd();
  const seen: number[] = [];
  let wake: () => void = () => undefined;
  const w = n.watchEventfd(fd, (count) => {
    seen.push(count);
    wake();
  });
  const next = () => new Promise<void>((resolve) => (wake = resolve));
  try {
    let got = next();
    n.eventfdWrite(fd, 2);
    n.eventfdWrite(fd, 3);
    await got;
    assert.deepEqual(seen, [5], 'one callback with the counter');
    assert.equal(n.eventfdRead(fd), 0, 'the addon reset it');
    // Written and read back before the loop polls: readable no more, no callback. The write
    // after it is the next callback's only count (a callback for the first would make it [.., 1, 4]).
    n.eventfdWrite(fd, 1);
    assert.equal(n.eventfdRead(fd), 1);
    await new Promise((r) => setImmediate(r));
    got = next();
    n.eventfdWrite(fd, 4);
    await got;
    assert.deepEqual(seen, [5, 4]);
  } finally {
    w.close();
    n.close(fd);
  }
  assert.throws(() => n.watchEventfd(-2, () => undefined), (e: NodeJS.ErrnoException) => e.code === 'EINVAL' || e.code === 'EBADF');
});

test('loopIdleMetrics: off, the loop measures no idle time while it waits; on again, it does', async () => {
  const n = native();
  const { performance } = await import('node:perf_hooks');
  const wait = () => new Promise((r) => setTimeout(r, 30));
  try {
    assert.equal(n.loopIdleMetrics(false), true, 'this libuv is one the addon knows');
    await wait(); // the wait that began before the switch ends
    const a = performance.eventLoopUtilization();
    await wait();
    assert.equal(performance.eventLoopUtilization(a).idle, 0, 'no idle time measured');
  } finally {
    n.loopIdleMetrics(true);
  }
  await wait();
  const b = performance.eventLoopUtilization();
  await wait();
  assert.ok(performance.eventLoopUtilization(b).idle > 0, 'idle time measured again');
});

test('worker threads: the addon loads in a worker, its watch fires on the worker\'s own loop, and a memfd the main thread made maps there too', async () => {
  const { Worker } = await import('node:worker_threads');
  const n = native();
  const efd = n.eventfd();
  const memfd = n.memfdCreate('shared', 4096);
  const main = new Uint8Array(n.mmap(memfd, 0, 4096));
  const addon = new URL('../src/native/index.js', import.meta.url).href;
  // The worker watches the eventfd on its own loop; when it fires it maps the memfd itself
  // (mappings are per thread's ArrayBuffer) and answers with what it read there.
  const worker = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads');
     import(workerData.addon).then(({ native }) => {
       const n = native();
       const w = n.watch(workerData.efd, true, false, () => {
         const count = n.eventfdRead(workerData.efd);
         const view = new Uint8Array(n.mmap(workerData.memfd, 0, 4096));
         const byte = view[100];
         n.munmap(view.buffer);
         w.close();
         parentPort.postMessage({ count, byte });
       });
       parentPort.postMessage('watching');
     });`,
    { eval: true, workerData: { addon, efd, memfd } },
  );
  try {
    const messages: unknown[] = [];
    const next = () => new Promise<unknown>((res, rej) => {
      worker.once('message', res);
      worker.once('error', rej);
    });
    messages.push(await next());
    assert.equal(messages[0], 'watching');
    main[100] = 0xab;
    n.eventfdWrite(efd, 7);
    const reply = (await next()) as { count: number; byte: number };
    assert.deepEqual(reply, { count: 7, byte: 0xab }, 'the worker saw the kick and the main thread\'s write to the shared memory');
    // Its watch closed, nothing of the worker's keeps it alive: it ends by itself.
    const code = await new Promise<number>((res) => worker.once('exit', res));
    assert.equal(code, 0);
  } finally {
    await worker.terminate();
    n.munmap(main.buffer as ArrayBuffer);
    n.close(efd);
    n.close(memfd);
  }
});

test('fault guard: a page of a mapping past its shrunk file reads and writes a zero page instead of killing the process, and is counted', () => {
  const n = native();
  const fd = n.memfdCreate('guard', 1 << 20);
  const map = n.mmap(fd, 0, 1 << 20, true);
  try {
    const bytes = new Uint8Array(map);
    bytes[100] = 7;
    const before = n.faultCount();
    assert.equal(n.faulted(map), false);
    ftruncateSync(fd, 4096); // the front-end takes the memory back: pages past 4096 are gone
    bytes[500_000] = 9; // would be SIGBUS
    assert.equal(bytes[500_000], 9, 'the access completed on a private page');
    assert.equal(bytes[700_000], 0, 'another cut-off page reads as zeros');
    assert.equal(bytes[100], 7, 'the page still in the file is untouched');
    assert.equal(n.faultCount(), before + 2, 'two pages faulted');
    assert.equal(n.faulted(map), true);
  } finally {
    n.munmap(map);
    n.close(fd);
  }
});
