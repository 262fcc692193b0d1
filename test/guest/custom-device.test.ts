// A user-written device served with the library API (serveVhostUser from virtio-ts/node, in this
// process: no CLI) to a real QEMU and Linux guest: a block device whose disk is a JS Map of
// sectors (map-disk.ts, the README's example). The guest writes a random pattern to /dev/vda
// with O_DIRECT and reads it back; the test reads the pattern out of the Map.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { boot, guestTest } from './harness.js';
import { serveMapDisk, type MapDisk } from './map-disk.js';
import type { VhostUserDaemon } from '../../src/node.js';

/** What the guest's `blk` case writes: 64 pages of 4 KiB from sector 0. */
const PATTERN_BYTES = 64 * 4096;

guestTest('Linux writes to and reads from a disk held in a JS Map, served in-process by serveVhostUser (vhost-user-blk-pci)', async () => {
  let disk: MapDisk | undefined;
  let daemon: VhostUserDaemon | undefined;
  const events: string[] = [];
  const violations: string[] = [];
  const run = await boot({
    kind: 'blk',
    device: 'vhost-user-blk-pci,chardev=c0,num-queues=1',
    serveArgs: [],
    server: (socketPath) => {
      ({ disk, daemon } = serveMapDisk(socketPath));
      daemon.on('connect', () => events.push('connect'));
      daemon.on('disconnect', (e) => events.push(`disconnect ${e.error?.kind ?? 'none'}`));
      daemon.on('verdict', (v) => {
        if (v.severity === 'violation') violations.push(`${v.clause}: ${v.message}`);
      });
      return daemon;
    },
  });
  assert.ok(disk !== undefined && daemon !== undefined);
  const written = run.results.get('pattern-md5');
  assert.match(written ?? '', /^[0-9a-f]{32}$/, `the guest wrote its pattern: ${run.console.slice(-1500)}`);
  assert.equal(run.results.get('readback-md5'), written, 'the guest read back what it wrote, through the Map');
  // The Map holds the pattern, sector by sector.
  const bytes = new Uint8Array(PATTERN_BYTES);
  for (let n = 0; n < PATTERN_BYTES / 512; n++) {
    const sector = disk.sectors.get(n);
    assert.ok(sector !== undefined, `sector ${n} was written`);
    bytes.set(sector, n * 512);
  }
  assert.equal(createHash('md5').update(bytes).digest('hex'), written, 'the Map holds what the guest wrote');
  assert.deepEqual(violations, [], 'Linux kept every rule the monitor checks');
  assert.equal(events[0], 'connect', 'QEMU connected to the daemon');
  assert.ok(events.slice(1).every((e) => e === 'disconnect none'), `no connection ended with an error: ${events.join(', ')}`);
  assert.equal((await daemon.closed).socketFile, 'removed', 'closed by the harness, its socket removed');
});
