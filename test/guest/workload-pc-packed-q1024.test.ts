// Real-guest workloads on pc, packed ring, QEMU queue-size=1024, one and two queues (see workload-matrix.ts).
import { workloadMatrix } from './workload-matrix.js';

workloadMatrix('pc', 'packed', 1024);
