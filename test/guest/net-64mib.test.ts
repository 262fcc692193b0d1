// Issue 15, real guests: see test/guest/net-guests.ts for the topology and the checks.
import { guestTest } from './harness.js';
import { twoGuests } from './net-guests.js';

guestTest('two Linux guests on virtio-ts serve net through virtio-ts switch: ping, 64 MiB over TCP (split ring, MRG_RXBUF, offloads on)', () => twoGuests({ packed: false, mrg: true, offloads: true, mb: 64 }));
