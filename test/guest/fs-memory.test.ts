// Issue 16: a Linux guest on `virtio-ts serve fs --memory` (see test/guest/fs-guest.ts).
import { guestTest } from './harness.js';
import { fsGuest } from './fs-guest.js';

guestTest('a Linux guest mounts serve fs --memory: 2000 small files, 32 MiB sequential, concurrent writers, links, escape, unmount and mount again, unmount', async () => {
  await fsGuest({ serveArgs: ['--memory'], files: 2000, mb: 32 });
});
