// run-counter.ts
import { GuestMemory, LoopbackTransport, Monitor, RngDriver, VirtioDevice } from '../../src/index.js';
import { CounterEntropy } from './counter-entropy.js';

export async function runCounter() {
  // The core (status, features, queues, the monitor) with our type inside it.
  const device = new VirtioDevice(new CounterEntropy(), { monitor: new Monitor() });
  // 1 MiB of guest memory and an in-process transport; the project's entropy driver on it.
  const transport = new LoopbackTransport(device, GuestMemory.create(1 << 20), { mode: 'async' });
  const driver = new RngDriver(transport, { monitor: new Monitor() });

  await driver.start(); // reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, queue, DRIVER_OK
  const bytes = await driver.read(8); // [0, 1, 2, 3, 4, 5, 6, 7]
  const counted = device.type.next; // 8: device.type is our CounterEntropy, typed
  await driver.shutdown(); // the driver resets the device: the count starts again
  return { bytes, counted, after: device.type.next, verdicts: [...device.monitor.verdicts, ...driver.monitor.verdicts] };
}
