// Issue 15, real guests: see test/guest/net-guests.ts for the topology and the checks.
import { guestTest } from './harness.js';
import { twoGuests } from './net-guests.js';

guestTest('two Linux guests through the switch: packed ring, 8 MiB', () => twoGuests({ packed: true, mrg: true, offloads: true, mb: 8 }));
