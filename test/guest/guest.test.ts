// End to end: a real QEMU boots a real Debian kernel whose virtio drivers use virtio-ts
// devices through `virtio-ts serve` (vhost-user). In CI a missing prerequisite is a failure;
// elsewhere the test says what is missing and skips.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(fileURLToPath(import.meta.url), '../../../..');
const bin = join(root, 'dist/src/cli/main.js');
const guest = join(root, '.guest');
const qemu = spawnSync('sh', ['-c', 'command -v qemu-system-x86_64'], { encoding: 'utf8' }).stdout.trim();
const missing = [!qemu && 'qemu-system-x86_64', !existsSync(join(guest, 'vmlinux')) && '.guest/vmlinux (scripts/guest/build-guest.sh)', !existsSync(join(guest, 'initramfs.cpio')) && '.guest/initramfs.cpio'].filter(Boolean);
const khz = (() => {
  const m = /cpu MHz\s*:\s*([\d.]+)/.exec(readFileSync('/proc/cpuinfo', 'utf8'));
  return m ? Math.round(Number(m[1]) * 1000) : 0;
})();

interface Run {
  results: Map<string, string>;
  serveLog: string;
  console: string;
}

async function boot(kind: 'rng' | 'blk', device: string, serveArgs: string[], machine: string[] = []): Promise<Run> {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-guest-'));
  const sock = join(dir, `${kind}.sock`);
  const serve = spawn(process.execPath, [bin, 'serve', kind, '--socket-path', sock, ...serveArgs], { stdio: ['ignore', 'ignore', 'pipe'] });
  let serveLog = '';
  serve.stderr.on('data', (d) => (serveLog += d));
  try {
    for (let i = 0; i < 200 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(existsSync(sock), `virtio-ts serve did not listen: ${serveLog}`);
    const args = [
      ...machine,
      '-accel', 'tcg', '-cpu', 'max', '-m', '256M',
      '-object', 'memory-backend-memfd,id=mem,size=256M,share=on', '-numa', 'node,memdev=mem',
      '-nodefaults', '-no-user-config', '-display', 'none', '-serial', 'stdio', '-monitor', 'none', '-no-reboot',
      '-kernel', join(guest, 'vmlinux'), '-initrd', join(guest, 'initramfs.cpio'),
      '-append', `console=ttyS0 panic=-1 quiet vt.test=${kind} tsc_early_khz=${khz}`,
      '-chardev', `socket,id=c0,path=${sock}`, '-device', device,
    ];
    const q = spawnSync(qemu, args, { encoding: 'utf8', timeout: 90_000 });
    const out = (q.stdout ?? '') + (q.stderr ?? '');
    assert.equal(q.status, 0, `qemu exited ${q.status}: ${out.slice(-2000)}`);
    const results = new Map<string, string>();
    for (const m of out.matchAll(/^VT-RESULT (\S+) ?(.*)$/gm)) results.set(m[1], m[2].trim());
    assert.match(out, /VT-END/, `the guest test did not finish: ${out.slice(-2000)}`);
    return { results, serveLog, console: out };
  } finally {
    serve.kill('SIGTERM');
    await new Promise((r) => serve.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
}

function noViolations(run: Run): void {
  assert.doesNotMatch(run.serveLog, /"severity":"violation"/, `the monitor saw Linux break a rule:\n${run.serveLog}`);
}

function guestTest(name: string, fn: () => Promise<void>): void {
  test(name, async (t) => {
    if (missing.length > 0) {
      if (process.env.CI === 'true') assert.fail(`real-guest prerequisites missing in CI: ${missing.join(', ')}`);
      t.skip(`prerequisites missing: ${missing.join(', ')} (.ci/run installs them)`);
      return;
    }
    await fn();
  });
}

guestTest('Linux reads /dev/hwrng from virtio-ts serve rng (vhost-user-rng-pci)', async () => {
  const run = await boot('rng', 'vhost-user-rng-pci,chardev=c0', []);
  assert.equal(run.results.get('rng-current'), 'virtio_rng.0');
  assert.match(run.results.get('rng-bytes') ?? '', /^[0-9a-f]{128}$/);
  assert.notEqual(run.results.get('rng-bytes'), '0'.repeat(128));
  noViolations(run);
});

const MICROVM = ['-M', 'microvm', '-global', 'virtio-mmio.force-legacy=false'];
guestTest('Linux reads /dev/hwrng from virtio-ts serve rng on microvm (virtio-mmio)', async () => {
  const run = await boot('rng', 'vhost-user-rng,chardev=c0', [], ['-M', 'microvm', '-global', 'virtio-mmio.force-legacy=false']);
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

for (const [label, device, extra, machine] of BLK_MATRIX) {
  guestTest(`Linux writes a random pattern with O_DIRECT to virtio-ts serve blk and reads it back (${label})`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-disk-'));
    try {
      const image = join(dir, 'disk.img');
      writeFileSync(image, new Uint8Array(64 << 20));
      const run = await boot('blk', device, ['--image', image, ...extra], machine);
      const written = run.results.get('pattern-md5');
      assert.match(written ?? '', /^[0-9a-f]{32}$/);
      assert.equal(run.results.get('readback-md5'), written, 'the guest read back what it wrote');
      const onHost = createHash('md5').update(readFileSync(image).subarray(0, 64 * 4096)).digest('hex');
      assert.equal(onHost, written, 'the image file holds what the guest wrote (after its sync)');
      noViolations(run);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
