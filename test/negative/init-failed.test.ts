// A driver that breaks init.sequence.driver.6 (goes on after setting FAILED) or
// init.sequence.driver.1 (sets a queue up before FEATURES_OK) through the device operations the
// misbehaviour scenarios do not use: configuration writes, queue setup, feature writes and
// status bits added after FAILED. Each device check site gets its own peer (the mutation audit,
// scripts/mutation-audit.mjs, disables each site and expects these tests to fail).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Monitor } from '../../src/monitor/monitor.js';
import { RngDevice } from '../../src/devices/rng/device.js';
import { Feature, Status } from '../../src/spec/constants.js';
import { bit } from '../../src/spec/features.js';

const ACK_DRIVER = Status.ACKNOWLEDGE | Status.DRIVER;

/** A fresh strict entropy device on its own memory, driven by hand as a misbehaving driver. */
function device() {
  const monitor = new Monitor();
  const dev = new RngDevice({ monitor });
  dev.attach(GuestMemory.create(1 << 16), { interrupt() {}, configChanged() {} });
  return { dev, monitor, clauses: () => monitor.verdicts.map((v) => v.clause) };
}

/** ACKNOWLEDGE, DRIVER, then FAILED: the driver gave up. */
function failed() {
  const d = device();
  d.dev.setStatus(Status.ACKNOWLEDGE);
  d.dev.setStatus(ACK_DRIVER);
  d.dev.setStatus(ACK_DRIVER | Status.FAILED);
  assert.deepEqual(d.clauses(), [], 'setting FAILED is allowed');
  return d;
}

function expectOnly(d: ReturnType<typeof device>, clause: string) {
  assert.deepEqual(d.clauses(), [clause]);
  assert.equal(d.monitor.verdicts[0].side, 'driver');
  assert.ok(d.dev.readStatus() & Status.DEVICE_NEEDS_RESET, 'strict: the device enters DEVICE_NEEDS_RESET');
}

test('init.sequence.driver.6: the driver writes configuration space after setting FAILED', () => {
  const d = failed();
  d.dev.writeConfig(0, 1, 0);
  expectOnly(d, 'init.sequence.driver.6');
});

test('init.sequence.driver.6: the driver sets a queue up after setting FAILED', () => {
  const d = failed();
  d.dev.setQueueSize(0, 8);
  expectOnly(d, 'init.sequence.driver.6');
});

test('init.sequence.driver.6: the driver enables a queue after setting FAILED', () => {
  const d = failed();
  d.dev.enableQueue(0);
  expectOnly(d, 'init.sequence.driver.6');
});

test('init.sequence.driver.6: the driver writes its features after setting FAILED', () => {
  const d = failed();
  d.dev.setDriverFeatures(bit(Feature.VERSION_1));
  expectOnly(d, 'init.sequence.driver.6');
});

test('init.sequence.driver.6: the driver adds FEATURES_OK to a status that holds FAILED', () => {
  const d = failed();
  d.dev.setStatus(ACK_DRIVER | Status.FAILED | Status.FEATURES_OK);
  expectOnly(d, 'init.sequence.driver.6');
});

test('init.sequence.driver.1: the driver sets a queue up before FEATURES_OK', () => {
  const d = device();
  d.dev.setStatus(Status.ACKNOWLEDGE);
  d.dev.setStatus(ACK_DRIVER);
  d.dev.setQueueSize(0, 8);
  expectOnly(d, 'init.sequence.driver.1');
});

test('init.sequence.driver.1: the driver sets DRIVER before ACKNOWLEDGE', () => {
  const d = device();
  d.dev.setStatus(Status.DRIVER);
  expectOnly(d, 'init.sequence.driver.1');
});
