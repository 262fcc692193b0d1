// The qtest client against a real QEMU: guest RAM shared both ways (what QEMU writes shows in
// the project's GuestMemory, and the other way), the protocol's replies, and every way a QEMU
// can fail a client: refusing its arguments, refusing a request, not answering, dying, and
// outliving the process that started it (it must not).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { QtestClient, QtestError } from '../../src/node/qtest/client.js';
import { QTEST_RAM_BASE } from '../../src/node/qtest/ram.js';
import { isVirtioTsError } from '../../src/errors.js';
import { machine, needQemu } from './harness.js';
import { until } from '../wait.js';

function isQtestError(err: unknown, kind: string): boolean {
  return err instanceof QtestError && isVirtioTsError(err, kind);
}

/** Whether a process is gone (or a zombie nobody reaped yet: it runs no more). */
function gone(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].startsWith('Z');
  } catch {
    return true;
  }
}

test('guest RAM is shared: QEMU writes show in GuestMemory and the other way round', async (t) => {
  if (!needQemu(t)) return;
  const m = await machine(t, { machine: 'q35', args: [] });
  const addr = QTEST_RAM_BASE + 0x1234;
  await m.qtest.writel(addr, 0xdeadbeef);
  assert.equal(m.memory.readU32(addr), 0xdeadbeef);
  m.memory.writeU32(addr + 8, 0x01234567);
  assert.equal(await m.qtest.readl(addr + 8), 0x01234567);
  assert.equal(await m.qtest.readq(addr), 0xdeadbeefn);
  const data = new Uint8Array(300).map((_, i) => (i * 7 + 3) & 0xff);
  await m.qtest.write(addr + 0x100, data);
  assert.deepEqual(m.memory.bytes(addr + 0x100, data.length), data);
  assert.deepEqual(await m.qtest.read(addr + 0x100, data.length), data);
});

test('QEMU refusing its arguments is an `exited` QtestError with its message', async (t) => {
  if (!needQemu(t)) return;
  await assert.rejects(
    QtestClient.launch({ args: ['-machine', 'no-such-machine', '-display', 'none', '-nodefaults'] }),
    (err: unknown) => isQtestError(err, 'exited') && /unsupported machine type/.test((err as Error).message),
  );
});

test('a QEMU binary that does not exist is `spawn-failed`', async () => {
  await assert.rejects(QtestClient.launch({ qemu: '/nonexistent/qemu-system-x86_64', args: [] }), (err: unknown) => isQtestError(err, 'spawn-failed'));
});

test('a request QEMU fails is `refused`, and the client goes on', async (t) => {
  if (!needQemu(t)) return;
  const m = await machine(t, { machine: 'pc', args: [] });
  await assert.rejects(m.qtest.irqInterceptIn('no-such-device'), (err: unknown) => isQtestError(err, 'refused'));
  assert.equal(await m.qtest.readl(0xfec00000 + 0x10), await m.qtest.readl(0xfec00000 + 0x10)); // still answering
});

test('a QEMU that stops answering is a `timeout`, and is stopped', async (t) => {
  if (!needQemu(t)) return;
  // The machine starts with the default bound (its setup commands may be slow on a loaded
  // host); only the commands to a stopped QEMU get the short one.
  const q = (await machine(t, { machine: 'microvm', args: [] })).qtest;
  q.timeoutMs = 500;
  process.kill(q.pid, 'SIGSTOP'); // a stopped process can never answer: the bound is what ends the wait
  await assert.rejects(q.readl(0), (err: unknown) => isQtestError(err, 'timeout'));
  await q.exited;
  assert.ok(gone(q.pid));
  await assert.rejects(q.readl(0), (err: unknown) => isQtestError(err, 'timeout'));
});

test('QEMU dying fails the pending request and every later one with `exited`', async (t) => {
  if (!needQemu(t)) return;
  const q = (await machine(t, { machine: 'microvm', args: [] })).qtest;
  process.kill(q.pid, 'SIGSTOP');
  const pending = q.readl(0);
  process.kill(q.pid, 'SIGKILL');
  await assert.rejects(pending, (err: unknown) => isQtestError(err, 'exited') && /SIGKILL/.test((err as Error).message));
  await assert.rejects(q.readl(0), (err: unknown) => isQtestError(err, 'exited'));
});

test('QEMU does not outlive the process that started it, even one killed by SIGKILL', async (t) => {
  if (!needQemu(t)) return;
  const module = fileURLToPath(new URL('../../src/node/qtest/machine.js', import.meta.url));
  const script = `import { QtestMachine } from ${JSON.stringify(module)};
const m = await QtestMachine.launch({ machine: 'microvm', args: [] });
console.log(m.qtest.pid);
setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => child.kill('SIGKILL'));
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  await until(() => out.includes('\n') || child.exitCode !== null, 'the child to start QEMU');
  const pid = Number(out.trim());
  assert.ok(Number.isInteger(pid) && pid > 0, `child printed ${JSON.stringify(out)}`);
  assert.equal(gone(pid), false);
  child.kill('SIGKILL');
  await until(() => gone(pid), `QEMU ${pid} to die with its parent`);
});

test('a machine without the device asked for says so (RangeError), naming what it has', async (t) => {
  if (!needQemu(t)) return;
  const m = await machine(t, { machine: 'q35', args: ['-device', 'virtio-rng-pci'] });
  assert.deepEqual(await m.deviceIds(), [4]);
  await assert.rejects(m.transport(2), (err: unknown) => err instanceof RangeError && /type 2 \(it has 4\)/.test(err.message));
});

/** A stand-in for QEMU: a shell script in a directory of the test's own. */
function fakeQemu(t: TestContext, body: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-fake-qemu-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'qemu');
  writeFileSync(file, `#!/bin/sh\n${body}\n`);
  chmodSync(file, 0o755);
  return file;
}

test('a reply that is not the protocol is `protocol`', async (t) => {
  const qemu = fakeQemu(t, 'read line; echo "HELLO"; exec sleep 30');
  await assert.rejects(QtestClient.launch({ qemu, args: [] }), (err: unknown) => isQtestError(err, 'protocol') && /HELLO/.test((err as Error).message));
});

test('a QEMU that floods without a line end is `protocol`, and is stopped', async (t) => {
  const qemu = fakeQemu(t, "read line; head -c 70000000 /dev/zero | tr '\\000' a; exec sleep 30");
  await assert.rejects(QtestClient.launch({ qemu, args: [] }), (err: unknown) => isQtestError(err, 'protocol') && /without a line end/.test((err as Error).message));
});

test('asynchronous IRQ lines between replies reach the listeners and do not shift the replies', async (t) => {
  const qemu = fakeQemu(t, 'read line; echo "IRQ raise 3"; echo "OK 0x00"; read line; echo "IRQ lower 3"; echo "IRQ raise 17"; echo "OK 0x0000000012345678"; exec sleep 30');
  const q = await QtestClient.launch({ qemu, args: [] });
  t.after(() => q.close());
  const seen: string[] = [];
  q.onIrq((line, raised) => seen.push(`${line}:${raised}`));
  assert.equal(await q.readl(0x1000), 0x12345678);
  assert.deepEqual(seen, ['3:false', '17:true']);
});
