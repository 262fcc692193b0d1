// End to end: a real QEMU boots a real Debian kernel whose virtio drivers use virtio-ts
// devices through `virtio-ts serve` (vhost-user). In CI a missing prerequisite is a failure;
// elsewhere the test says what is missing and skips (harness.ts).
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MICROVM, STOPCONT_BYTES, assertWritten, boot, guestTest, noViolations, withImage, type Running } from './harness.js';


guestTest('Linux reads /dev/hwrng from virtio-ts serve rng (vhost-user-rng-pci)', async () => {
  const run = await boot({ kind: 'rng', device: 'vhost-user-rng-pci,chardev=c0', serveArgs: [] });
  assert.equal(run.results.get('rng-current'), 'virtio_rng.0');
  assert.match(run.results.get('rng-bytes') ?? '', /^[0-9a-f]{128}$/);
  assert.notEqual(run.results.get('rng-bytes'), '0'.repeat(128));
  noViolations(run);
});

guestTest('Linux reads /dev/hwrng from virtio-ts serve rng on microvm (virtio-mmio)', async () => {
  const run = await boot({ kind: 'rng', device: 'vhost-user-rng,chardev=c0', serveArgs: [], machine: MICROVM });
  assert.match(run.results.get('rng-bytes') ?? '', /^[0-9a-f]{128}$/);
  noViolations(run);
});

const BLK_MATRIX: [string, string, string[], string[]][] = [
  ['pc, split ring', 'vhost-user-blk-pci,chardev=c0,num-queues=1', [], []],
  ['pc, packed=on', 'vhost-user-blk-pci,chardev=c0,num-queues=1,packed=on', [], []],
  ['pc, event_idx=off, indirect_desc=off', 'vhost-user-blk-pci,chardev=c0,num-queues=1,event_idx=off,indirect_desc=off', [], []],
  ['pc, num-queues=2', 'vhost-user-blk-pci,chardev=c0,num-queues=2', ['--num-queues', '2'], []],
  ['microvm, virtio-mmio', 'vhost-user-blk,chardev=c0,num-queues=1', [], MICROVM],
  ['microvm, virtio-mmio, packed=on', 'vhost-user-blk,chardev=c0,num-queues=1,packed=on', [], MICROVM],
];

/** Once the guest's stopcont case is writing: `step` again and again until it is done (at most `max` times). */
async function whileGuestWrites(g: Running, max: number, step: () => Promise<void>): Promise<number> {
  await g.waitFor(/VT-RESULT stopcont-ready/);
  let finished = false;
  g.waitFor(/VT-RESULT pattern-md5/).then(
    () => (finished = true),
    () => (finished = true),
  );
  let n = 0;
  for (; !finished && n < max; n++) await step();
  return n;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const SPLIT_AND_PACKED = [
  ['split ring', 'vhost-user-blk-pci,chardev=c0,num-queues=1'],
  ['packed=on', 'vhost-user-blk-pci,chardev=c0,num-queues=1,packed=on'],
] as const;

for (const [label, device, extra, machine] of BLK_MATRIX) {
  guestTest(`Linux writes a random pattern with O_DIRECT to virtio-ts serve blk and reads it back (${label})`, () =>
    withImage(async (image) => {
      const run = await boot({ kind: 'blk', device, serveArgs: ['--image', image, ...extra], machine });
      assertWritten(run, image, 64 * 4096);
      noViolations(run);
    }),
  );
}

// QEMU's stop stops the vhost-user rings (SET_STATUS 0, GET_VRING_BASE) and cont starts them
// again from SET_VRING_BASE. Done many times while Linux writes: a ring that restarted from 0,
// or lost a request in progress, shows up as a hung or failed write or a wrong readback.
for (const [label, device] of SPLIT_AND_PACKED) {
  guestTest(`Linux keeps writing to virtio-ts serve blk through QEMU stop/cont, every request served once (${label})`, () =>
    withImage(async (image) => {
      let cycles = 0;
      const run = await boot({
        kind: 'blk',
        test: 'stopcont',
        device,
        serveArgs: ['--image', image],
        during: async (g) => {
          cycles = await whileGuestWrites(g, 20, async () => {
            await sleep(40);
            await g.qmp('stop');
            await sleep(40);
            await g.qmp('cont');
          });
        },
      });
      assert.ok(cycles >= 2, `stop/cont happened while the guest wrote (${cycles} cycles)`);
      console.log(`${label}: ${cycles} stop/cont cycles while the guest wrote`);
      assertWritten(run, image, STOPCONT_BYTES);
      const pattern = readFileSync(image).subarray(0, 16 * 4096);
      const expected = createHash('md5');
      for (let i = 0; i < 48; i++) expected.update(pattern);
      assert.equal(createHash('md5').update(readFileSync(image).subarray(0, STOPCONT_BYTES)).digest('hex'), expected.digest('hex'), 'the image holds the pattern 48 times');
      const restarts = [...run.serveLog.matchAll(/ring 0 started at available (\d+)/g)].map((m) => Number(m[1]));
      assert.ok(restarts.length >= cycles, `the ring was restarted at each cont (${restarts.length} starts, ${cycles} cycles)`);
      assert.ok(restarts.some((a) => a > 0), 'and resumed past 0');
      noViolations(run);
    }),
  );
}

// vhost-user inflight tracking, for real: virtio-ts serve is killed (SIGKILL: no clean-up) three
// times while Linux writes, and started again on the same socket; QEMU reconnects, hands the
// new back-end its inflight buffer (SET_INFLIGHT_FD) and the guest's writes go on. Nothing may
// be lost or written twice (the readback and the image say), no write may fail.
for (const [label, device] of SPLIT_AND_PACKED) {
  guestTest(`Linux keeps writing to virtio-ts serve blk while the back-end is killed and restarted 3 times (QEMU reconnects; inflight buffer; ${label})`, () =>
    withImage(async (image) => {
      let restarts = 0;
      const run = await boot({
        kind: 'blk',
        test: 'stopcont',
        device,
        serveArgs: ['--image', image],
        reconnect: true,
        during: async (g) => {
          restarts = await whileGuestWrites(g, 3, async () => {
            await sleep(150);
            await g.restartServe();
          });
        },
      });
      const resubmitted = [...run.serveLog.matchAll(/serves again (\d+) request/g)].map((m) => m[1]);
      console.log(`${label}: ${restarts} back-end restarts while the guest wrote; ${resubmitted.join(', ') || 'no'} request(s) served again from the inflight buffer`);
      assert.ok(restarts >= 2, `the back-end was restarted while the guest wrote (${restarts} times)`);
      assertWritten(run, image, STOPCONT_BYTES);
      assert.ok((run.serveLog.match(/was left by a server that is gone/g) ?? []).length >= restarts, 'each restart replaced the stale socket');
      const messages = run.serveLog.split('\n').filter((l) => /inflight|started|connected|gone/.test(l)).map((l) => (JSON.parse(l) as { msg: string }).msg);
      assert.ok((run.serveLog.match(/inflight buffer set/g) ?? []).length >= restarts + 1, `QEMU handed each back-end the inflight buffer: ${messages.join(' | ')}`);
      noViolations(run);
    }),
  );
}
