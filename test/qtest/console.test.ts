// The project's ConsoleDriver drives QEMU's own virtio-serial model with a virtconsole port
// whose chardev is a unix socket the test listens on, in every cell of the matrix: bytes the
// host writes into the socket come out of the driver's port, and bytes the driver writes come
// out of the socket. The monitor's verdicts are the findings of docs/findings.md.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { ConsoleDriver } from '../../src/drivers/console.js';
import { DeviceId } from '../../src/spec/constants.js';
import { PDESC_F_WRITE, PDESC_FLAGS, PDESC_LEN } from '../../src/spec/packed-layout.js';
import { bounded, clauses, deviceArg, needQemu, recordingMonitor, VARIANTS, variantMachine, variantTransport, type Variant } from './harness.js';
import { until } from '../wait.js';

/** A unix socket the test listens on for QEMU's chardev: the connection, and everything received. */
async function hostEnd(t: TestContext): Promise<{ path: string; received: () => string; peer: () => Socket | null }> {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-qtest-con-'));
  const path = join(dir, 'console.sock');
  let got = '';
  let peer: Socket | null = null;
  const server = createServer((s) => {
    peer = s;
    s.setEncoding('latin1');
    s.on('data', (c: string) => (got += c));
    s.on('error', () => undefined); // QEMU killed at the end of the test
  });
  await new Promise<void>((res) => server.listen(path, res));
  t.after(() => {
    peer?.destroy();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { path, received: () => got, peer: () => peer };
}

function consoleArgs(v: Variant, path: string): string[] {
  return ['-chardev', `socket,id=c0,path=${path}`, '-device', deviceArg(v, 'serial'), '-device', 'virtconsole,chardev=c0,name=org.virtio-ts.qtest'];
}

for (const v of VARIANTS) {
  test(`virtio-console: ${v.name}`, async (t) => {
    if (!needQemu(t)) return;
    const host = await hostEnd(t);
    const m = await variantMachine(t, v, consoleArgs(v, host.path));
    await until(() => host.peer() !== null, 'QEMU to connect the chardev');
    const monitor = recordingMonitor();
    const d = new ConsoleDriver(await variantTransport(m, v, DeviceId.CONSOLE, monitor), { monitor });
    await bounded(d.start(), 'the driver to start');
    assert.ok(d.multiport, 'QEMU offers VIRTIO_CONSOLE_F_MULTIPORT');
    if (v.packed) {
      // QEMU's PORT_ADD control message comes back in a used descriptor without
      // VIRTQ_DESC_F_WRITE (finding F2): its length is reserved, the driver sees an empty buffer
      // and no port is ever added.
      const ctrl = d.queues[2];
      await until(() => m.memory.readU32(ctrl.addrs.desc + PDESC_LEN) !== 1024, 'QEMU to use a control receive buffer');
      assert.ok(m.memory.readU32(ctrl.addrs.desc + PDESC_LEN) >= 8, 'QEMU wrote a control message');
      assert.equal(m.memory.readU16(ctrl.addrs.desc + PDESC_FLAGS) & PDESC_F_WRITE, 0, 'without VIRTQ_DESC_F_WRITE');
      assert.equal(d.ports.size, 0);
      assert.deepEqual(clauses(monitor), [], 'the driver drops the empty control buffer without a verdict');
      return;
    }
    const port = await bounded(d.waitForPort(0), 'port 0 (the virtconsole)');
    await bounded(port.open(), 'opening the port');
    host.peer()!.write('from the host side\n');
    let got = '';
    while (!got.includes('\n')) {
      const chunk = await bounded(port.read(), 'bytes from the host');
      assert.ok(chunk !== null, 'the port ended');
      got += Buffer.from(chunk).toString('latin1');
    }
    assert.equal(got, 'from the host side\n');
    await bounded(port.write('from the virtio-ts driver\n'), 'a write');
    await until(() => host.received().includes('\n'), 'the bytes to reach the socket');
    assert.equal(host.received(), 'from the virtio-ts driver\n');
    assert.deepEqual(clauses(monitor), []);
  });
}
