// End to end live resize: a real Linux guest on `virtio-ts serve blk` (vhost-user) sees its
// disk grow. The guest (init case `resize`) prints /sys/block/vda/size and says it is ready;
// the host then grows the image file and sends SIGHUP to serve, which changes the capacity and
// sends CONFIG_CHANGE_MSG; QEMU re-reads the config (GET_CONFIG) and interrupts the guest,
// whose virtio_blk reads the new capacity.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MICROVM, boot, guestTest, noViolations } from './harness.js';

const BEFORE = 64 << 20;
const AFTER = 96 << 20;

const CASES: [string, string, string[]][] = [
  ['pc, vhost-user-blk-pci', 'vhost-user-blk-pci,chardev=c0,num-queues=1', []],
  ['microvm, virtio-mmio', 'vhost-user-blk,chardev=c0,num-queues=1', MICROVM],
];

for (const [label, device, machine] of CASES) {
  guestTest(`Linux sees virtio-ts serve blk grow live after SIGHUP: 64 MiB -> 96 MiB (${label})`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-resize-'));
    try {
      const image = join(dir, 'disk.img');
      writeFileSync(image, new Uint8Array(0));
      truncateSync(image, BEFORE);
      let signalled = false;
      const run = await boot({
        kind: 'blk',
        test: 'resize',
        device,
        machine,
        serveArgs: ['--image', image],
        timeoutMs: 60_000,
        onLine: (line, serve) => {
          if (line.trim() !== 'VT-RESULT resize-ready' || signalled) return;
          signalled = true;
          truncateSync(image, AFTER);
          serve.kill('SIGHUP');
        },
      });
      assert.ok(signalled, `the guest never said it was ready:\n${run.console.slice(-2000)}`);
      assert.equal(run.results.get('size-before'), String(BEFORE / 512));
      assert.equal(run.results.get('size-after'), String(AFTER / 512), `the guest did not see the new size:\n${run.console.slice(-2000)}\n${run.serveLog}`);
      assert.match(run.results.get('kernel-says') ?? '', new RegExp(`capacity change from ${BEFORE / 512} to ${AFTER / 512}`));
      const resized = run.serveLog.split('\n').filter((l) => l.includes('"signal":"SIGHUP"')).map((l) => JSON.parse(l) as Record<string, unknown>);
      assert.deepEqual(resized.map((l) => [l.before, l.capacity, l.notified]), [[BEFORE / 512, AFTER / 512, true]], 'serve logged one live resize');
      noViolations(run);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
