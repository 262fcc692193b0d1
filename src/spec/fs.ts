/**
 * virtio-fs on the wire (spec 5.11): the feature bit, the configuration layout and the queue
 * numbering. The FUSE messages the queues carry are in src/fs/fuse/wire.ts.
 */
import type { FeatureNames } from './features.js';

/** VIRTIO_FS_F_* feature bit numbers (5.11.3). */
export const FS_FEATURES = { NOTIFICATION: 0 } as const;

/** Names of the fs feature bits, for messages and logs. */
export const FS_FEATURE_NAMES: FeatureNames = { 0: 'VIRTIO_FS_F_NOTIFICATION' };

/** struct virtio_fs_config (5.11.4): char tag[36]; le32 num_request_queues; le32 notify_buf_size. */
export const FsConfig = { tag: 0, tagSize: 36, numRequestQueues: 36, notifyBufSize: 40, size: 44 } as const;

/** Queue 0 is hiprio; request queues follow (queue 1 is the notification queue only with VIRTIO_FS_F_NOTIFICATION, 5.11.2). */
export const FS_HIPRIO_QUEUE = 0;
