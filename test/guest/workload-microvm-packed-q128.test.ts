// Real-guest workloads on microvm, packed ring, QEMU queue-size=128, one and two queues (see workload-matrix.ts).
import { workloadMatrix } from './workload-matrix.js';

workloadMatrix('microvm', 'packed', 128);
