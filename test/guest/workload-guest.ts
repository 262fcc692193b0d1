// The workload guest (scripts/guest/build-workload-guest.sh): the test guest's initramfs plus
// fio, mkfs.ext4, e2fsck and ext4, with this checkout's scripts/guest/init. Built on first use
// from the test itself (the script is a no-op when its output is newer than every input), so
// `npm test` never boots a stale init. The prerequisite rule of harness.ts holds: in CI a
// missing prerequisite (or a failed build) is a failure; elsewhere the test skips and says why.
import { test } from 'node:test';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { guestDir, missing, root } from './harness.js';
import { missingPrerequisite } from '../prerequisites.js';

export const workloadInitrd = join(guestDir, 'workload-initramfs.cpio');

const onPath = (cmd: string) => spawnSync('sh', ['-c', `PATH="$PATH:/sbin:/usr/sbin" command -v ${cmd}`], { encoding: 'utf8' }).stdout.trim();
/** e2fsck and debugfs on the host check what the guest left in the image. */
export const e2fsck = onPath('e2fsck');
export const debugfs = onPath('debugfs');

let built: string | null | undefined;

/** Why the workload guest cannot run here (null: it can), building it once if needed. */
function workloadMissing(): string | null {
  if (missing.length > 0) return missing.join(', ');
  if (built !== undefined) return built;
  const absent = [!onPath('fio') && 'fio', !e2fsck && 'e2fsck (e2fsprogs)', !debugfs && 'debugfs (e2fsprogs)', !onPath('mkfs.ext4') && 'mkfs.ext4 (e2fsprogs)'].filter(Boolean);
  if (absent.length > 0) return (built = `on the host: ${absent.join(', ')}`);
  const r = spawnSync('bash', [join(root, 'scripts/guest/build-workload-guest.sh'), guestDir], { encoding: 'utf8', timeout: 600_000 });
  built = r.status === 0 ? null : `scripts/guest/build-workload-guest.sh failed (${r.status ?? r.signal}): ${(r.stderr || r.stdout).slice(-1000)}`;
  return built;
}

/** A real-guest test on the workload guest: skips with the reason when it cannot run, fails instead in CI. */
export function workloadTest(name: string, fn: () => Promise<void>): void {
  test(name, async (t) => {
    const why = workloadMissing();
    if (why !== null) return missingPrerequisite(t, `workload guest: ${why}`);
    await fn();
  });
}

/** Runs `fn` with a fresh sparse image of `mib` MiB, removed afterwards. */
export async function withSparseImage(mib: number, fn: (image: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-disk-'));
  try {
    const image = join(dir, 'disk.img');
    writeFileSync(image, new Uint8Array(0));
    truncateSync(image, mib << 20);
    await fn(image);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
