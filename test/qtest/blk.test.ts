// The project's BlkDriver drives QEMU's own virtio-blk model over an image file the test
// creates, in every cell of the matrix. What the driver writes must be in the file on the host
// (md5 of the file's bytes against md5 of what was written), what it reads must be the file's
// (a region the test wrote on the host before QEMU started), and the monitor's verdicts are
// the findings of docs/findings.md ("QEMU device models via qtest").
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BlkDriver } from '../../src/drivers/blk.js';
import { DeviceId } from '../../src/spec/constants.js';
import { isVirtioTsError } from '../../src/errors.js';
import { Monitor } from '../../src/monitor/monitor.js';
import type { TestContext } from 'node:test';
import { pattern } from '../console-helpers.js';
import { bounded, clauses, deviceArg, needQemu, recordingMonitor, VARIANTS, variantMachine, variantTransport, type Variant } from './harness.js';

const IMAGE_SIZE = 4 << 20;

const md5 = (b: Uint8Array) => createHash('md5').update(b).digest('hex');

/** An image in a directory of the test's own (removed after), with `host` at `hostOffset`. */
function image(t: TestContext, host: Uint8Array, hostOffset: number): string {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-qtest-blk-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'disk.img');
  const content = new Uint8Array(IMAGE_SIZE);
  content.set(host, hostOffset);
  writeFileSync(file, content);
  return file;
}

function blkArgs(v: Variant, file: string): string[] {
  return ['-drive', `if=none,id=d0,file=${file},format=raw`, '-device', deviceArg(v, 'blk', ['drive=d0'])];
}

/** Findings every virtio-blk of QEMU 7.2 shows, through any interface (F1: unused1 reads 0xff, beyond its config space). */
const BLK_FINDINGS = ['blk.device-init.device.4'];

for (const v of VARIANTS) {
  test(`virtio-blk: ${v.name}`, async (t) => {
    if (!needQemu(t)) return;
    const host = pattern(7, 8192);
    const file = image(t, host, 1 << 20);
    const m = await variantMachine(t, v, blkArgs(v, file));
    const monitor = recordingMonitor();
    const d = new BlkDriver(await variantTransport(m, v, DeviceId.BLOCK, monitor), { monitor });
    await bounded(d.start(), 'the driver to start');
    assert.equal(d.capacity * 512, IMAGE_SIZE);
    // Reads come from the file.
    const fromHost = new Uint8Array(host.length);
    await bounded(d.read(1 << 20, fromHost), 'a read');
    assert.equal(md5(fromHost), md5(host));
    // Writes land in the file: a large one (indirect descriptors / several segments) and a small one.
    const big = pattern(11, 256 << 10);
    const small = pattern(13, 4096);
    await bounded(Promise.all([d.write(64 << 10, big), d.write(3 << 20, small)]), 'two writes');
    await bounded(d.flush(), 'a flush');
    const back = new Uint8Array(big.length);
    await bounded(d.read(64 << 10, back), 'reading back');
    assert.equal(md5(back), md5(big));
    const onDisk = readFileSync(file);
    assert.equal(md5(onDisk.subarray(64 << 10, (64 << 10) + big.length)), md5(big));
    assert.equal(md5(onDisk.subarray(3 << 20, (3 << 20) + small.length)), md5(small));
    assert.equal(md5(onDisk.subarray(1 << 20, (1 << 20) + host.length)), md5(host), 'the host region is untouched');
    assert.deepEqual(clauses(monitor), [...BLK_FINDINGS].sort());
  });
}

test('virtio-blk: a strict driver refuses QEMU 7.2 virtio-blk (finding F1: unused1 is not zero)', async (t) => {
  if (!needQemu(t)) return;
  const v = VARIANTS[0];
  const m = await variantMachine(t, v, blkArgs(v, image(t, new Uint8Array(0), 0)));
  const monitor = new Monitor();
  const d = new BlkDriver(await variantTransport(m, v, DeviceId.BLOCK, monitor), { monitor });
  await assert.rejects(bounded(d.start(), 'the driver to give up'), (err: unknown) => isVirtioTsError(err, 'device-violation'));
  assert.equal((d.failure as { verdict?: { clause: string } }).verdict?.clause, 'blk.device-init.device.4');
  // The bytes behind it: unused0 at 33 is 0, unused1 at 57..59 reads 0xff (QEMU's config space ends at 57).
  const t2 = await m.transport(DeviceId.BLOCK, { monitor: recordingMonitor() });
  assert.deepEqual([await t2.readConfig(33, 1), await t2.readConfig(57, 1), await t2.readConfig(58, 1), await t2.readConfig(59, 1)], [0, 0xff, 0xff, 0xff]);
});
