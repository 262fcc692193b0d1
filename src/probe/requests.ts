/**
 * Requests a raw session places by hand on a split ring: a correct blk read or entropy request
 * (the reference every probe case is measured against), and the constants hand-written
 * descriptors use. Shared by `virtio-ts probe` and the project's hostile tests.
 */
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../spec/constants.js';
import { BlkType } from '../spec/blk.js';
import type { RawSession, RawSplitRing } from './raw-session.js';

/** VIRTQ_DESC_F_NEXT, for hand-written descriptors. */
export const NEXT = VIRTQ_DESC_F_NEXT;
/** VIRTQ_DESC_F_WRITE, for hand-written descriptors. */
export const WRITE = VIRTQ_DESC_F_WRITE;
/** VIRTQ_DESC_F_INDIRECT, for hand-written descriptors. */
export const INDIRECT = VIRTQ_DESC_F_INDIRECT;

/** The device types a probe can place requests for (the others are probed at the protocol level). */
export type RequestType = 'blk' | 'rng';

/** A guest range [from, to) the device may write. */
export type Range = [number, number];

/** Where a placed request lives: what the device may write, and (blk) its status byte. */
export interface PlacedRequest {
  /** Device-writable ranges. */
  granted: Range[];
  /** What the driver itself wrote outside the ring (the blk header, an indirect table). */
  driver: Range[];
  /** blk: the status byte's guest address. */
  status?: number;
  /** Bytes of data the device should report in the used length (blk: data + status; rng: at most this). */
  writable: number;
}

/**
 * Places a correct request as chain 0 and makes it available (and kicks): blk, a read of
 * `sector` into `segments` 512-byte pieces (header at `at`, data from `at + 0x1000`, status
 * after the data); rng, `segments` writable pieces of 64 bytes in all. With `indirect`, the
 * descriptors go in an indirect table at `at + 0x8000`. `beforeOffer` runs just before the
 * request is made available.
 */
export function placeRequest(type: RequestType, fe: RawSession, ring: RawSplitRing, at: number, segments = 1, indirect = false, beforeOffer?: () => void, sector = 1): PlacedRequest {
  const descs: [number, number, number][] = []; // addr, len, flags
  const granted: Range[] = [];
  let status: number | undefined;
  if (type === 'rng') {
    for (let i = 0; i < segments; i++) descs.push([at + i * 0x100, 64 / segments, WRITE]);
  } else {
    fe.view.setUint32(at, BlkType.IN, true);
    fe.view.setUint32(at + 4, 0, true);
    fe.view.setBigUint64(at + 8, BigInt(sector), true);
    descs.push([at, 16, 0]);
    for (let i = 0; i < segments; i++) descs.push([at + 0x1000 + i * 0x200, 512, WRITE]);
    status = at + 0x1000 + segments * 0x200;
    descs.push([status, 1, WRITE]);
  }
  for (const [a, len, flags] of descs) if (flags & WRITE) granted.push([a, a + len]);
  const table = at + 0x8000;
  descs.forEach(([a, len, flags], i) => {
    const last = i === descs.length - 1;
    ring.desc(i, a, len, flags | (last ? 0 : NEXT), last ? 0 : i + 1, indirect ? table : undefined);
  });
  if (indirect) ring.desc(0, table, descs.length * 16, INDIRECT);
  beforeOffer?.();
  ring.offer(0);
  const writable = type === 'rng' ? 64 : segments * 512 + 1;
  const driver: Range[] = type === 'blk' ? [[at, at + 16]] : [];
  if (indirect) driver.push([table, table + descs.length * 16]);
  return status === undefined ? { granted, driver, writable } : { granted, driver, status, writable };
}
