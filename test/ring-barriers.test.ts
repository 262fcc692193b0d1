// Cross-process ordering (2.7.10, 2.8.21; Linux's virtio_mb()): before a side that re-enables
// notifications re-reads the other side's index, its own event field (avail_event / used_event,
// or the packed event flags after off_wrap) must be stored with a full barrier. JavaScript has
// one: a seq-cst Atomics.store. A plain DataView store may sit in the CPU's store buffer while
// the load runs; the peer (QEMU, a vhost-user back-end in another process) then reads the old
// event and both wait for each other. Which store the code makes cannot be seen from the data,
// so this records the Atomics.store calls the ring code makes and asserts the event field's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeQueuePair } from './ring-harness.js';
import type { RingFormat } from '../src/virtqueue/queue.js';
import { GuestMemory } from '../src/memory/guest-memory.js';

/** The guest addresses `fn` stored to with Atomics.store on a Uint16Array over guest memory. */
function atomicStores(fn: () => void): number[] {
  const original = Atomics.store;
  const seen: number[] = [];
  (Atomics as { store: unknown }).store = (array: Uint16Array, index: number, value: number) => {
    seen.push(array.byteOffset + index * 2);
    return original(array as never, index, value);
  };
  try {
    fn();
  } finally {
    (Atomics as { store: unknown }).store = original;
  }
  return seen;
}

for (const format of ['split', 'packed'] as RingFormat[]) {
  test(`${format}, EVENT_IDX: re-enabling notifications stores with a full barrier before re-reading the peer's index (device and driver side)`, () => {
    const size = 16;
    // Shared memory, as under vhost-user: the ring code uses Atomics only on concurrent regions.
    const p = makeQueuePair(format, { size, eventIdx: true, indirect: false }, GuestMemory.create(0x30000, { shared: true }));
    // The device: avail_event (split: used ring + 4 + 8 * size) / the device event flags (packed).
    p.dev.disableNotifications();
    const devStores = atomicStores(() => p.dev.enableNotifications());
    const devEvent = format === 'split' ? p.drv.addrs.used + 4 + 8 * size : p.drv.addrs.used + 2;
    assert.ok(devStores.includes(devEvent), `device: an Atomics.store at 0x${devEvent.toString(16)} (stored at ${devStores.map((a) => '0x' + a.toString(16)).join(', ') || 'nothing'})`);
    // The driver: used_event (split: avail ring + 4 + 2 * size) / the driver event flags (packed).
    p.drv.disableInterrupts();
    const drvStores = atomicStores(() => p.drv.enableInterrupts());
    const drvEvent = format === 'split' ? p.drv.addrs.avail + 4 + 2 * size : p.drv.addrs.avail + 2;
    assert.ok(drvStores.includes(drvEvent), `driver: an Atomics.store at 0x${drvEvent.toString(16)} (stored at ${drvStores.map((a) => '0x' + a.toString(16)).join(', ') || 'nothing'})`);
  });
}
