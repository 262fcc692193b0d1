// QEMU 7.2's TCG and a single-CPU guest's memory barriers (docs/findings.md, "QEMU 7.2's TCG
// drops a single-CPU guest's memory barriers"): scripts/guest/sb-litmus.c, the store-buffering
// litmus test, between the guest (X = i; Linux's smp_mb(); r1 = Y) and a host process on the
// same page of guest memory (Y = i; mfence; r2 = X) — the handshake of split-ring notification
// suppression between a driver and a vhost-user back-end. r1 < i && r2 < i is forbidden when
// both barriers work. With maxcpus=2 (BootOptions.maxCpus, the default of every test
// guest) it must never happen. With QEMU's default (maxcpus = smp = 1) TCG leaves the
// guest's barrier out and it does happen (in about 1.5 % of rounds here): printed, not asserted
// (how often depends on how the two threads meet), and VT_LITMUS_SMP=1 runs the strict check
// on that configuration to see it fail.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { guestDir, khz, missing, qemu, root } from './harness.js';
import { missingPrerequisite } from '../prerequisites.js';

const ROUNDS = 100_000;
const gcc = spawnSync('sh', ['-c', 'command -v gcc'], { encoding: 'utf8' }).stdout.trim();
const cpio = spawnSync('sh', ['-c', 'command -v cpio'], { encoding: 'utf8' }).stdout.trim();

/** Builds sb-litmus (static: the same binary runs in the guest and on the host) and an initramfs whose /init runs it. */
function build(dir: string): { binary: string; initrd: string } {
  const tree = join(dir, 'tree');
  mkdirSync(tree);
  const binary = join(tree, 'sb-litmus');
  const cc = spawnSync(gcc, ['-O2', '-Wall', '-static', '-o', binary, join(root, 'scripts/guest/sb-litmus.c')], { encoding: 'utf8' });
  assert.equal(cc.status, 0, `gcc: ${cc.stderr}`);
  writeFileSync(join(tree, 'init'), '#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\n/sb-litmus guest\n/bin/busybox poweroff -f\n', { mode: 0o755 });
  // A second archive after the guest's own: its /init replaces the test init, busybox stays.
  const extra = spawnSync('sh', ['-c', 'find . | cpio -o -H newc --quiet'], { cwd: tree, maxBuffer: 64 << 20 });
  assert.equal(extra.status, 0, String(extra.stderr));
  const initrd = join(dir, 'initramfs.cpio');
  copyFileSync(join(guestDir, 'initramfs.cpio'), initrd);
  writeFileSync(initrd, extra.stdout, { flag: 'a' });
  return { binary, initrd };
}

/** One guest with `-smp SMP`, its RAM a file the host maps; the host side's verdict line. */
async function litmus(dir: string, smp: string): Promise<{ rounds: number; forbidden: number }> {
  const { binary, initrd } = build(mkdtempSync(join(dir, 'b-')));
  const shm = existsSync('/dev/shm') ? mkdtempSync('/dev/shm/virtio-ts-sb-') : mkdtempSync(join(dir, 'ram-'));
  const ram = join(shm, 'ram');
  try {
    const q = spawn(qemu, [
      '-accel', 'tcg', '-cpu', 'max', '-m', '256M', '-smp', smp,
      '-object', `memory-backend-file,id=mem,size=256M,mem-path=${ram},share=on`, '-numa', 'node,memdev=mem',
      '-nodefaults', '-no-user-config', '-display', 'none', '-serial', 'stdio', '-monitor', 'none', '-no-reboot',
      '-kernel', join(guestDir, 'vmlinux'), '-initrd', initrd,
      '-append', `console=ttyS0 panic=-1 quiet no_timer_check tsc_early_khz=${khz}`,
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    const guard = setTimeout(() => q.kill('SIGKILL'), 120_000); // a hang guard, not a measurement
    let out = '';
    let verdict = '';
    const hostDone: Promise<void>[] = [];
    for await (const raw of createInterface({ input: q.stdout! })) {
      const line = raw.replace(/\r$/, '');
      out += line + '\n';
      const m = /^SB-PFN (\d+)$/.exec(line);
      if (m) {
        // The page's frame number is its offset in the RAM file (pc: RAM below 4 GiB from 0).
        const h = spawn(binary, ['host', ram, m[1], String(ROUNDS), '90'], { stdio: ['ignore', 'pipe', 'inherit'] });
        let hostOut = '';
        h.stdout!.on('data', (d) => (hostOut += d));
        hostDone.push(new Promise((res) => h.on('close', () => ((verdict = hostOut.trim()), res()))));
      }
    }
    await Promise.all(hostDone);
    clearTimeout(guard);
    const v = /^SB-HOST rounds (\d+) forbidden (\d+)$/.exec(verdict);
    assert.ok(v, `the litmus test ran: host said "${verdict}"; guest:\n${out.slice(-2000)}`);
    return { rounds: Number(v[1]), forbidden: Number(v[2]) };
  } finally {
    rmSync(shm, { recursive: true, force: true });
  }
}

function prerequisites(t: TestContext): boolean {
  const why = [...missing, !gcc && 'gcc', !cpio && 'cpio'].filter(Boolean);
  if (why.length > 0) missingPrerequisite(t, `TCG barrier litmus: ${why.join(', ')}`);
  return why.length === 0;
}

test('with maxcpus=2, a TCG guest\'s smp_mb() orders its store before its load against a host process (no store-buffering outcome)', async (t) => {
  if (!prerequisites(t)) return;
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-sb-'));
  try {
    const smp = process.env.VT_LITMUS_SMP ?? '1,maxcpus=2';
    const r = await litmus(dir, smp);
    assert.equal(r.rounds, ROUNDS, 'every round ran');
    assert.equal(r.forbidden, 0, `-smp ${smp}: in ${r.forbidden} of ${r.rounds} rounds both sides read the other's old value`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('with QEMU 7.2\'s default maxcpus=1, the same guest barrier is left out (printed: the finding, not a property of ours)', async (t) => {
  if (!prerequisites(t)) return;
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-sb-'));
  try {
    const r = await litmus(dir, '1');
    assert.equal(r.rounds, ROUNDS, 'every round ran');
    const version = spawnSync(qemu, ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0];
    t.diagnostic(`${version}, -smp 1: ${r.forbidden} of ${r.rounds} rounds had both sides read the other's old value (0 would mean TCG emits the barrier: then BootOptions.maxCpus can go)`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
