// A device that fails while going live (DEVICE_NEEDS_RESET inside the DRIVER_OK write, which a
// synchronous transport delivers before start() returns) must not leave the driver "live" with
// its first request waiting forever: the driver looks at the status and breaks down with the
// needs-reset kind (basic.status.driver.4).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DeviceId, GuestMemory, LoopbackTransport, Monitor, RngDriver, Status, VirtioDevice, isVirtioTsError } from '../src/index.js';

for (const mode of ['sync', 'async'] as const) {
  test(`${mode} loopback: a device that fails in its first process() makes read() reject with needs-reset`, async () => {
    const device = new VirtioDevice(
      {
        deviceId: DeviceId.ENTROPY,
        numQueues: 1,
        process() {
          throw new Error('the device broke');
        },
      },
      { monitor: new Monitor() },
    );
    const driver = new RngDriver(new LoopbackTransport(device, GuestMemory.create(1 << 20), { mode }), { monitor: new Monitor({ mode: 'tolerant' }) });
    await driver.start();
    // The async transport only fails the device when the first request arrives; the sync one
    // may already have. Either way the request must end, with the kind that says why.
    await assert.rejects(driver.read(16), (err: unknown) => isVirtioTsError(err, 'needs-reset'));
    assert.ok(device.status & Status.DEVICE_NEEDS_RESET, 'the device says it needs a reset');
    assert.equal(driver.state, 'broken');
  });
}
