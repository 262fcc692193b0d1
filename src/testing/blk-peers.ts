/**
 * Misbehaving block devices for the block driver's checks (issue 17): a device that serves
 * what the spec says it must refuse, reports lifetime metrics it does not have, or shrinks
 * its disk without a configuration change notification. Each one breaks the one clause its
 * negative test names (test/negative/blk-device.test.ts) and is otherwise an ordinary,
 * in-memory block device.
 *
 * Browser-safe: no Node import.
 */
import { DeviceId } from '../spec/constants.js';
import { BLK_FEATURES, BlkConfig, BlkStatus, BlkType } from '../spec/blk.js';
import { bit } from '../spec/features.js';
import { VirtioDevice } from '../device/device.js';
import type { DeviceContext, DeviceType } from '../device/type.js';
import { DescriptorChain } from '../virtqueue/chain.js';
import type { DeviceQueue } from '../virtqueue/queue.js';
import type { Monitor } from '../monitor/monitor.js';

/** How a {@link SloppyBlkType} goes wrong (every field off: a well-behaved device of its kind). */
export interface SloppyBlkOptions {
  /** Answer OK to every request type, zone requests and unknown segment flags included (a real device answers UNSUPP). */
  servesEverything?: boolean;
  /** Complete write zeroes with OK and leave the data where it was. */
  keepsDataOnWriteZeroes?: boolean;
  /** GET_LIFETIME answers (pre_eol_info, est_a, est_b); VIRTIO_BLK_F_LIFETIME is offered when set. */
  lifetime?: readonly [number, number, number];
}

const SECTOR = 512;
const SEGMENT_BYTES = 16;

/**
 * A block device type over a zero-filled in-memory disk of `capacity` sectors that answers requests by its {@link SloppyBlkOptions}. Its one host API,
 * {@link shrinkSilently}, changes the capacity without the notification
 * blk.device-operation.device.2 asks for.
 */
export class SloppyBlkType implements DeviceType {
  readonly deviceId = DeviceId.BLOCK;
  readonly name = 'sloppy-blk';
  readonly numQueues = 1;
  readonly queueMaxSize = 64;
  readonly configSize = BlkConfig.size;
  readonly features: bigint;
  private readonly chain = DescriptorChain.forQueue(64);
  private ctx: DeviceContext | null = null;
  private capacity: number;
  private readonly disk: Uint8Array;

  constructor(
    private readonly o: SloppyBlkOptions = {},
    capacity = 2048,
  ) {
    this.capacity = capacity;
    this.disk = new Uint8Array(capacity * SECTOR);
    const f = BLK_FEATURES;
    this.features = bit(f.FLUSH) | bit(f.DISCARD) | bit(f.WRITE_ZEROES) | bit(f.SECURE_ERASE) | (o.lifetime !== undefined ? bit(f.LIFETIME) : 0n);
  }

  init(ctx: DeviceContext): void {
    this.ctx = ctx;
    ctx.config.setBigUint64(BlkConfig.capacity, BigInt(this.capacity), true);
    ctx.config.setUint32(BlkConfig.maxDiscardSectors, 1 << 16, true);
    ctx.config.setUint32(BlkConfig.maxDiscardSeg, 1, true);
    ctx.config.setUint32(BlkConfig.maxWriteZeroesSectors, 1 << 16, true);
    ctx.config.setUint32(BlkConfig.maxWriteZeroesSeg, 1, true);
    ctx.config.setUint32(BlkConfig.maxSecureEraseSectors, 1 << 16, true);
    ctx.config.setUint32(BlkConfig.maxSecureEraseSeg, 1, true);
  }

  /** The disk shrinks to `sectors`; the config space says so, and no notification is sent. */
  shrinkSilently(sectors: number): void {
    this.capacity = sectors;
    this.ctx!.config.setBigUint64(BlkConfig.capacity, BigInt(sectors), true);
  }

  /** The disk shrinks to `sectors`, as it should: new generation, configuration change notification. */
  shrink(sectors: number): void {
    this.capacity = sectors;
    this.ctx!.updateConfig((v) => v.setBigUint64(BlkConfig.capacity, BigInt(sectors), true));
  }

  process(q: DeviceQueue, ctx: DeviceContext): void {
    const c = this.chain;
    const mem = ctx.memory;
    do {
      while (q.pop(c)) {
        const last = c.count - 1;
        const statusAddr = c.addrs[last] + c.lens[last] - 1;
        const type = mem.readU32(c.addrs[0]);
        const sector = Number(mem.readU64(c.addrs[0] + 8));
        let dataBytes = 0;
        for (let i = 1; i < c.count; i++) dataBytes += c.lens[i];
        dataBytes -= 1;
        let status: number = BlkStatus.OK;
        let written = 0;
        if (type === BlkType.IN || type === BlkType.OUT) {
          if (sector + dataBytes / SECTOR > this.capacity) status = BlkStatus.IOERR;
          else {
            // Data descriptors 1..last (the last one's final byte is the status).
            for (let i = 1, at = sector * SECTOR; i < c.count; i++) {
              const n = i === last ? c.lens[i] - 1 : c.lens[i];
              if (type === BlkType.IN) mem.writeFrom(c.addrs[i], this.disk, at, n);
              else mem.readInto(c.addrs[i], this.disk, at, n);
              at += n;
            }
            if (type === BlkType.IN) written = dataBytes;
          }
        } else if (type === BlkType.GET_LIFETIME && this.o.lifetime !== undefined) {
          const [pre, a, b] = this.o.lifetime;
          mem.writeU16(c.addrs[1], pre);
          mem.writeU16(c.addrs[1] + 2, a);
          mem.writeU16(c.addrs[1] + 4, b);
          written = 6;
        } else if (type === BlkType.DISCARD || type === BlkType.WRITE_ZEROES || type === BlkType.SECURE_ERASE) {
          // A well-behaved device refuses unknown flags (and unmap on a discard) with UNSUPP.
          for (let off = 0; !this.o.servesEverything && off + SEGMENT_BYTES <= dataBytes; off += SEGMENT_BYTES) {
            const flags = mem.readU32(c.addrs[1] + off + 12);
            if ((flags & ~1) !== 0 || (type === BlkType.DISCARD && (flags & 1) !== 0)) status = BlkStatus.UNSUPP;
          }
          if (status === BlkStatus.OK && type === BlkType.WRITE_ZEROES && !this.o.keepsDataOnWriteZeroes) {
            for (let off = 0; off + SEGMENT_BYTES <= dataBytes; off += SEGMENT_BYTES) {
              const start = Number(mem.readU64(c.addrs[1] + off)) * SECTOR;
              this.disk.fill(0, start, start + mem.readU32(c.addrs[1] + off + 8) * SECTOR);
            }
          }
        } else if (type !== BlkType.FLUSH && type !== BlkType.GET_ID && !this.o.servesEverything) status = BlkStatus.UNSUPP;
        mem.writeU8(statusAddr, status);
        q.addUsed(c.head, written + 1);
      }
      ctx.complete(q);
    } while (q.enableNotifications());
  }
}

/** A {@link VirtioDevice} of a new {@link SloppyBlkType}. */
export function sloppyBlkDevice(monitor: Monitor, options: SloppyBlkOptions = {}, capacity?: number): VirtioDevice<SloppyBlkType> {
  return new VirtioDevice(new SloppyBlkType(options, capacity), { monitor });
}
