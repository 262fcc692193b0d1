// A VMM side for a virtio-fs back-end in its own process (serve fs, virtiofsd): a vhost-user
// front-end with an FsDriver and a FuseClient over it, no VM. Shared by bench/fs-lat.ts and the
// fs tests, with the errno of a FuseClient call that failed.
import assert from 'node:assert/strict';
import { VhostUserFrontEnd } from '../../src/transports/vhost-user/frontend/front-end.js';
import { FsDriver } from '../../src/drivers/fs.js';
import { FuseClient } from '../../src/fs/fuse/client.js';
import { DeviceId } from '../../src/spec/constants.js';
import { FsConfig } from '../../src/spec/fs.js';
import { TRANSPORT_FEATURES_SPLIT } from '../../src/spec/features.js';
import { FsError } from '../../src/fs/vfs.js';

/** The errno of the error reply `p` (a FuseClient call) ends with; a reply that is not an error fails the test. */
export async function errno(p: Promise<unknown>): Promise<number> {
  try {
    await p;
  } catch (e) {
    if (e instanceof FsError) return e.errno;
    throw e;
  }
  assert.fail('expected an error reply');
}

/** The front-end, the driver and a client that has sent INIT. */
export interface FsFrontEnd {
  fe: VhostUserFrontEnd;
  driver: FsDriver;
  client: FuseClient;
}

/** Connects to the back-end listening on `sock` (tag `tag`), starts the driver and sends INIT. */
export async function connectFs(sock: string, tag = 'vtfs'): Promise<FsFrontEnd> {
  const fe = await VhostUserFrontEnd.connect({ socketPath: sock, deviceId: DeviceId.FS, memorySize: 32 << 20, queueSize: 128 });
  try {
    // A vhost-user-fs back-end has no configuration space (QEMU keeps it: tag and
    // num_request_queues): answered here as QEMU would.
    const config = new Uint8Array(FsConfig.size);
    new TextEncoder().encodeInto(tag, config);
    new DataView(config.buffer).setUint32(FsConfig.numRequestQueues, 1, true);
    fe.readConfig = async (offset, size) => {
      const v = new DataView(config.buffer, offset, size);
      return size === 1 ? v.getUint8(0) : size === 2 ? v.getUint16(0, true) : size === 4 ? v.getUint32(0, true) : v.getBigUint64(0, true);
    };
    // Split rings with EVENT_IDX and indirect descriptors: what Linux negotiates through QEMU 7.2's vhost-user-fs-pci (packed=off).
    const driver = new FsDriver(fe, { transportFeatures: TRANSPORT_FEATURES_SPLIT });
    await driver.start();
    const client = new FuseClient(driver.fuseSend);
    await client.init();
    return { fe, driver, client };
  } catch (err) {
    await fe.close();
    throw err;
  }
}
