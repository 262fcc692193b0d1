/**
 * virtio-blk on the wire (spec 5.2): feature bits, request types and status values, and the
 * config-space layout. Shared by the device (devices/blk) and the driver (drivers/blk).
 */

/** VIRTIO_BLK_F_* feature bit numbers (5.2.3). */
export const BLK_FEATURES = {
  BARRIER: 0, SIZE_MAX: 1, SEG_MAX: 2, GEOMETRY: 4, RO: 5, BLK_SIZE: 6, SCSI: 7, FLUSH: 9, TOPOLOGY: 10, CONFIG_WCE: 11,
  MQ: 12, DISCARD: 13, WRITE_ZEROES: 14, LIFETIME: 15, SECURE_ERASE: 16, ZONED: 17,
} as const;

/** virtio_blk_req.type values (5.2.6). */
export const BlkType = { IN: 0, OUT: 1, FLUSH: 4, GET_ID: 8, GET_LIFETIME: 10, DISCARD: 11, WRITE_ZEROES: 13, SECURE_ERASE: 14 } as const;
/** virtio_blk_req.status values (5.2.6). */
export const BlkStatus = { OK: 0, IOERR: 1, UNSUPP: 2 } as const;

/** Byte offsets in struct virtio_blk_config (5.2.4). */
export const BlkConfig = {
  capacity: 0,
  sizeMax: 8,
  segMax: 12,
  geometry: 16,
  blkSize: 20,
  topology: 24,
  writeback: 32,
  numQueues: 34,
  maxDiscardSectors: 36,
  maxDiscardSeg: 40,
  discardSectorAlignment: 44,
  maxWriteZeroesSectors: 48,
  maxWriteZeroesSeg: 52,
  writeZeroesMayUnmap: 56,
  maxSecureEraseSectors: 60,
  maxSecureEraseSeg: 64,
  secureEraseSectorAlignment: 68,
  size: 96,
} as const;

