// Real-guest workloads on pc, split ring, QEMU queue-size=1024, one and two queues (see workload-matrix.ts).
import { workloadMatrix } from './workload-matrix.js';

workloadMatrix('pc', 'split', 1024);
