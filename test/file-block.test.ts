// FileBlockStorage on a real file in each I/O mode: vectored reads and writes land where they
// should, a transfer split over several buffers (and cut short by the end of the file) is
// completed, and 'auto' serves page-cached reads on the event loop (preadv2 RWF_NOWAIT).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileBlockStorage } from '../src/node/file-block.js';
import { native } from '../src/native/index.js';

function pattern(seed: number, len: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (i * 31 + seed * 7 + (i >> 9)) & 0xff;
  return b;
}

for (const io of ['auto', 'async', 'sync'] as const) {
  test(`FileBlockStorage io=${io}: vectored writes and reads over several buffers land byte for byte`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-file-'));
    try {
      const path = join(dir, 'disk.img');
      writeFileSync(path, new Uint8Array(1 << 20));
      const disk = await FileBlockStorage.open(path, { io });
      assert.equal(disk.io, io);
      const data = pattern(3, 3 * 4096 + 512);
      // Three uneven buffers written at one offset: one pwritev.
      await disk.write(8192, [data.subarray(0, 512), data.subarray(512, 9000), data.subarray(9000)]);
      await disk.flush();
      assert.deepEqual(readFileSync(path).subarray(8192, 8192 + data.length), Buffer.from(data));
      const back = [new Uint8Array(100), new Uint8Array(4000), new Uint8Array(data.length - 4100)];
      await disk.read(8192, back);
      assert.deepEqual(Buffer.concat(back), Buffer.from(data));
      // A read running past the end of the file: what is there, then zeroes.
      const tail = [new Uint8Array(512).fill(0xee), new Uint8Array(1024).fill(0xee)];
      writeFileSync(path, pattern(9, (1 << 20) - 1024)); // the file shrank under the backend
      await disk.read((1 << 20) - 1536, tail);
      assert.deepEqual(tail[0], pattern(9, (1 << 20) - 1024).subarray((1 << 20) - 1536));
      assert.ok(tail[1].every((b) => b === 0), 'past the end reads as zeroes');
      if (io === 'auto') assert.ok(disk.stats.cachedReads >= 1, `page-cached reads served on the event loop (${JSON.stringify(disk.stats)})`);
      else assert.deepEqual(disk.stats, { cachedReads: 0, poolReads: 0 });
      await disk.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('native preadvNowait: reads page-cached data into several buffers; bad arguments are errors with a code', () => {
  const n = native();
  const fd = n.memfdCreate('nowait', 8192);
  try {
    const map = new Uint8Array(n.mmap(fd, 0, 8192));
    map.set(pattern(5, 8192));
    const a = new Uint8Array(1000);
    const b = new Uint8Array(3000);
    const got = n.preadvNowait(fd, [a, b], 100);
    // tmpfs (memfd) may not support RWF_NOWAIT on every kernel: then -2, said as such.
    if (got !== -2) {
      assert.equal(got, 4000);
      assert.deepEqual(Buffer.concat([a, b]), Buffer.from(pattern(5, 8192).subarray(100, 4100)));
    }
    assert.throws(() => n.preadvNowait(fd, [], 0), (e: Error & { code?: string }) => e.code === 'EINVAL');
    assert.throws(() => n.preadvNowait(fd, [a], -1), (e: Error & { code?: string }) => e.code === 'EINVAL');
    assert.throws(() => n.preadvNowait(-5, [a], 0), (e: Error & { code?: string }) => e.code === 'EBADF');
    n.munmap(map.buffer as ArrayBuffer);
  } finally {
    n.close(fd);
  }
});

// tmpfs refuses RWF_NOWAIT (EOPNOTSUPP), so 'auto' could not tell a cached read there and sent
// every read to the thread pool, for good (found by fswake for the fs device's READ). A file in
// memory is read on the event loop: both the device's synchronous path and read() say so.
test("FileBlockStorage io=auto on tmpfs: reads on the event loop, none on the thread pool", async (t) => {
  const shm = openSync('/dev/shm', 'r');
  const inMemory = native().fsMemoryFs(shm);
  closeSync(shm);
  if (!inMemory) return t.skip('/dev/shm is not tmpfs here');
  const dir = mkdtempSync(join('/dev/shm', 'virtio-ts-file-'));
  try {
    const path = join(dir, 'disk.img');
    const data = pattern(4, 1 << 20);
    writeFileSync(path, data);
    const disk = await FileBlockStorage.open(path, { io: 'auto' });
    const into = new Uint8Array(8192);
    for (let i = 0; i < 4; i++) assert.equal(disk.readSync(i * 4096, into, 0, 4096), true, `synchronous read ${i} served`);
    assert.deepEqual(into.subarray(0, 4096), data.subarray(3 * 4096, 4 * 4096));
    const back = [new Uint8Array(512), new Uint8Array(7680)];
    await disk.read(65536, back);
    assert.deepEqual(Buffer.concat(back), Buffer.from(data.subarray(65536, 65536 + 8192)));
    assert.deepEqual(disk.stats, { cachedReads: 5, poolReads: 0 });
    await disk.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
