// Real-guest workloads on microvm, split ring, QEMU queue-size=128, one and two queues (see workload-matrix.ts).
import { workloadMatrix } from './workload-matrix.js';

workloadMatrix('microvm', 'split', 128);
