// Console: each side checks the other (misbehaving peers naming console.* clauses).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Monitor } from '../../src/monitor/monitor.js';
import { LoopbackTransport } from '../../src/transports/loopback/loopback.js';
import { ConsoleDevice, ConsoleDeviceType, ConsoleEvent, MemoryConsoleEndpoint } from '../../src/devices/console/device.js';
import { VirtioDevice } from '../../src/device/device.js';
import { ConsoleDriver, type ConsolePort } from '../../src/drivers/console.js';
import { Status } from '../../src/spec/constants.js';
import { DriverError } from '../../src/driver/driver.js';
import { concat, pattern, sink, total, until } from '../console-helpers.js';

// ------------------------------------------------------------------ each side checks the other

/** A driver that skips DEVICE_READY and may answer CONSOLE_PORT with PORT_OPEN 0. */
class RogueDriver extends ConsoleDriver {
  skipReady = false;
  answerConsoleWithZero = false;
  protected override sendDeviceReady(): void {
    if (!this.skipReady) super.sendDeviceReady();
  }
  protected override sendControl(id: number, event: number, value: number): Promise<void> {
    if (this.answerConsoleWithZero && event === ConsoleEvent.PORT_OPEN) {
      this.answerConsoleWithZero = false;
      value = 0;
    }
    return super.sendControl(id, event, value);
  }
  raw(id: number, event: number, value: number): Promise<void> {
    return super.sendControl(id, event, value);
  }
}

/** A console that announces ports it should not. */
class RogueConsole extends ConsoleDeviceType {
  raw(id: number, event: number): void {
    this.sendControl(id, event, 0);
  }
}

function roguePair<D extends VirtioDevice>(device: D, devMon: Monitor, drvMon: Monitor) {
  const transport = new LoopbackTransport(device, GuestMemory.create(4 << 20), { mode: 'sync' });
  const driver = new RogueDriver(transport, { monitor: drvMon, receiveBufferSize: 64, receiveBuffers: 1 });
  return { device, driver, devMon, drvMon };
}

test('console device checks: device-readable receive buffers and device-writable transmit buffers (console.device-operation.driver.1 / .2)', async () => {
  const devMon = new Monitor({ mode: 'tolerant' });
  const backend = new MemoryConsoleEndpoint();
  const { driver } = roguePair(new ConsoleDevice({ backend, monitor: devMon, queueMaxSize: 16 }), devMon, new Monitor());
  await driver.start();
  const mem = driver.transport.memory;
  // A device-writable buffer on transmitq 0.
  const tx = driver.queues[1];
  const a = driver.allocator.alloc(16);
  mem.write(a, new TextEncoder().encode('0123456789abcdef'));
  tx.begin().addReadable(a, 8).addWritable(a + 8, 8).commit({ kind: 'transmit', item: { outstanding: 2, off: 0, data: new Uint8Array(1), resolve: () => undefined, reject: () => undefined }, addr: a });
  driver.kick(tx);
  assert.deepEqual(devMon.verdicts.map((v) => v.clause), ['console.device-operation.driver.2']);
  assert.equal(backend.text, '01234567', 'the readable part still reaches the host');
  // A device-readable buffer on receiveq 0, after the driver's one good buffer: it is taken once host bytes need it.
  const rx = driver.queues[0];
  const r = driver.allocator.alloc(64);
  rx.begin().addReadable(r, 64).commit({ kind: 'receive', queue: 0, addr: r, size: 64 });
  driver.kick(rx);
  const port = await driver.waitForPort(0);
  const got = sink(port);
  backend.send(pattern(9, 100));
  await until(() => total(got) === 100, 'the rest in the good buffer, posted again');
  assert.deepEqual(devMon.verdicts.map((v) => v.clause), ['console.device-operation.driver.2', 'console.device-operation.driver.1']);
  // The bad buffer carried nothing; the good one, posted again, carried the rest.
  assert.deepEqual(concat(got), pattern(9, 100));
  assert.deepEqual(got.map((c) => c.length), [64, 36]);
});

test('console device checks: control messages before DEVICE_READY, no DEVICE_READY at all, CONSOLE_PORT answered with 0 (console.multiport-device-operation.driver.1 / .3)', async () => {
  const devMon = new Monitor({ mode: 'tolerant' });
  const mk = () => new ConsoleDevice({ ports: [{ backend: new MemoryConsoleEndpoint() }, { backend: new MemoryConsoleEndpoint() }], monitor: devMon });
  {
    const { driver } = roguePair(mk(), devMon, new Monitor());
    driver.skipReady = true;
    await driver.start();
    await driver.raw(1, ConsoleEvent.PORT_OPEN, 1);
    assert.deepEqual(devMon.verdicts.map((v) => v.clause), ['console.multiport-device-operation.driver.1']);
    // Reset without ever sending DEVICE_READY (judged on a synchronous transport).
    await driver.shutdown();
    assert.deepEqual(devMon.verdicts.map((v) => v.clause), ['console.multiport-device-operation.driver.1', 'console.multiport-device-operation.driver.1']);
  }
  devMon.verdicts.length = 0;
  {
    const { driver } = roguePair(mk(), devMon, new Monitor());
    driver.answerConsoleWithZero = true;
    await driver.start();
    await driver.waitForPort(1);
    await until(() => devMon.verdicts.length > 0, 'the answer to CONSOLE_PORT');
    assert.deepEqual(devMon.verdicts.map((v) => v.clause), ['console.multiport-device-operation.driver.3']);
  }
});

test('console driver checks: DEVICE_ADD of an existing or out-of-range port, DEVICE_REMOVE of an unknown one (console.multiport-device-operation.device.1 / .2)', async () => {
  const drvMon = new Monitor({ mode: 'tolerant' });
  const device = new VirtioDevice(new RogueConsole({ ports: [{ backend: new MemoryConsoleEndpoint() }, { backend: new MemoryConsoleEndpoint() }], maxPorts: 3 }));
  const { driver } = roguePair(device, device.monitor, drvMon);
  await driver.start();
  await driver.waitForPort(1);
  assert.equal(drvMon.verdicts.length, 0);
  device.type.raw(1, ConsoleEvent.DEVICE_ADD);
  device.type.raw(3, ConsoleEvent.DEVICE_ADD);
  device.type.raw(2, ConsoleEvent.DEVICE_REMOVE);
  await until(() => drvMon.verdicts.length === 3, 'the driver reading the messages');
  assert.deepEqual(drvMon.verdicts.map((v) => v.clause), [
    'console.multiport-device-operation.device.1',
    'console.multiport-device-operation.device.1',
    'console.multiport-device-operation.device.2',
  ]);
  assert.deepEqual(device.monitor.verdicts, []);
});

test('console driver checks: a device that takes an emerg_wr write for an error (console.device-init.device.1)', async () => {
  // A device that forgot emerg_wr is special: the core judges the early write and needs a reset.
  class Forgetful extends ConsoleDeviceType {
    override writeRegister(): boolean {
      return false;
    }
  }
  const devMon = new Monitor();
  const drvMon = new Monitor({ mode: 'tolerant' });
  const device = new VirtioDevice(new Forgetful({ backend: new MemoryConsoleEndpoint() }), { monitor: devMon });
  const driver = new ConsoleDriver(new LoopbackTransport(device, GuestMemory.create(1 << 20)), { monitor: drvMon });
  await assert.rejects(driver.emergWrite('!'), (e: unknown) => e instanceof DriverError && e.kind === 'needs-reset');
  assert.ok(device.status & Status.DEVICE_NEEDS_RESET);
  assert.deepEqual(drvMon.verdicts.map((v) => v.clause), ['console.device-init.device.1']);
  // The honest device takes the same write before any status write without a word.
  const honest = new ConsoleDevice({ backend: new MemoryConsoleEndpoint(), monitor: new Monitor() });
  await new ConsoleDriver(new LoopbackTransport(honest, GuestMemory.create(1 << 20))).emergWrite('!');
  assert.equal(honest.status, 0);
  assert.deepEqual(honest.monitor.verdicts, []);
  assert.equal(honest.stats.emergency, 1);
});

test('console device checks: a device-writable buffer in the control transmitq (console.device-operation.driver.2)', async () => {
  const devMon = new Monitor({ mode: 'tolerant' });
  const mk = () => new ConsoleDevice({ ports: [{ backend: new MemoryConsoleEndpoint() }, { backend: new MemoryConsoleEndpoint() }], monitor: devMon });
  const { driver } = roguePair(mk(), devMon, new Monitor());
  await driver.start();
  await driver.waitForPort(1);
  assert.equal(devMon.verdicts.length, 0);
  const mem = driver.transport.memory;
  const ctrlTx = driver.queues[3]; // receiveq0, transmitq0, control receiveq, control transmitq
  const a = driver.allocator.alloc(16);
  mem.writeU32(a, 1); // port 1
  mem.writeU16(a + 4, ConsoleEvent.PORT_OPEN);
  mem.writeU16(a + 6, 1);
  ctrlTx.begin().addReadable(a, 8).addWritable(a + 8, 8).commit({ kind: 'transmit', item: { outstanding: 1, off: 0, data: new Uint8Array(1), resolve: () => undefined, reject: () => undefined }, addr: a });
  driver.kick(ctrlTx);
  await until(() => devMon.verdicts.length > 0, 'a verdict');
  assert.deepEqual(devMon.verdicts.map((v) => v.clause), ['console.device-operation.driver.2']);
});
