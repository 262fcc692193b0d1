// The README's front-end example, line for line from the import on (test/readme.test.ts checks
// that they match); frontend.test.ts and frontend-qsd.test.ts run it against `virtio-ts serve`
// and qemu-storage-daemon.
import { BlkDriver, DeviceId, RngDriver, VhostUserFrontEnd } from '../../src/node.js';

/** Writes 4 KiB at the start of the disk served on `socketPath`, reads them back, returns them. */
export async function roundTrip(socketPath: string): Promise<Uint8Array> {
  const fe = await VhostUserFrontEnd.connect({ socketPath, deviceId: DeviceId.BLOCK });
  try {
    const disk = new BlkDriver(fe, { numQueues: 1 });
    await disk.start(); // SET_FEATURES, memory, rings (vhost-user messages), DRIVER_OK
    await disk.write(0, new Uint8Array(4096).fill(0x42));
    const back = new Uint8Array(4096);
    await disk.read(0, back);
    await disk.shutdown(); // reset: GET_VRING_BASE stops each ring
    return back;
  } finally {
    await fe.close();
  }
}

/** 32 bytes of entropy from the rng device served on `socketPath`. */
export async function entropy(socketPath: string): Promise<Uint8Array> {
  const fe = await VhostUserFrontEnd.connect({ socketPath, deviceId: DeviceId.ENTROPY });
  try {
    const rng = new RngDriver(fe);
    await rng.start();
    return await rng.read(32);
  } finally {
    await fe.close();
  }
}
