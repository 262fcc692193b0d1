/**
 * One vhost-user ring as the front-end sees it (vhost-user.rst "Ring states"), and its restart
 * state: the size, addresses and base the front-end set, its kick, call and error eventfds,
 * whether it is started, enabled or paused, and the inflight region that records its buffers.
 * The device queue it drives is the device's own (device.queues[index], which a new memory
 * table replaces); the ring talks to it only through DeviceQueue's general hooks (activate with
 * a start position, pause/resume, an observer, buffers to serve first).
 *
 * A ring starts on its first kick, from where SET_VRING_BASE says it stands, and stops at
 * GET_VRING_BASE (or SET_STATUS 0), keeping its position for the next start: a ring stopped and
 * started again (QEMU's stop/cont, a re-negotiation, a back-end restart) goes on after the last
 * request served and never serves one twice.
 */
import type { GuestMemory } from '../../memory/guest-memory.js';
import type { NativeAddon } from '../../native/index.js';
import type { VirtioDevice } from '../../device/device.js';
import type { DeviceQueue, PriorBuffer, RingFormat, RingPosition } from '../../virtqueue/queue.js';
import { usedIdxAddress, usedRingSize } from '../../spec/split-layout.js';
import { EVENT_SIZE, packedFlagsAddress } from '../../spec/packed-layout.js';
import { messageOf, VhostUserError } from './errors.js';
import { recoverRing, PackedInflightRegion, type InflightRegion } from './inflight.js';
import { decodePackedRingBase, encodeRingBase } from './protocol.js';
import type { LoggedRing } from './dirty-log.js';

/** Split rings: a power of two up to 32768 (split.virtqueues.driver.1); packed rings: up to 32768 (packed.ring.driver.2). */
export const MAX_RING = 32768;

export interface RingLog {
  info(message: string): void;
  warn(message: string): void;
}

/** What a ring start needs of its session. */
export interface RingStartContext {
  device: VirtioDevice;
  format: RingFormat;
  memory: GuestMemory | null;
  /** The ring's region of the inflight buffer, if the front-end gave one. */
  region: InflightRegion | undefined;
  /** Makes the device live (DRIVER_OK), if it is not yet. */
  makeLive(): void;
  log: RingLog;
}

export class VhostUserRing implements LoggedRing {
  /** SET_VRING_NUM. */
  size = 0;
  /** SET_VRING_ADDR, translated to guest addresses. */
  desc = 0;
  avail = 0;
  used = 0;
  /** VHOST_VRING_F_LOG: the used ring's writes are logged at logAddr (+ their offset in it). */
  logUsed = false;
  logAddr = 0;
  /** SET_VRING_BASE as the front-end sent it (decoded when the ring starts); the stopped position after a stop. */
  base = 0;
  /** The ring format the session negotiated (VIRTIO_F_RING_PACKED). */
  format: RingFormat = 'split';
  /** Started by a kick, until stopped or reset. */
  started = false;
  /** SET_VRING_ENABLE (or enabled at SET_FEATURES without VHOST_USER_F_PROTOCOL_FEATURES). */
  enabled = false;
  /** Set up for a start: a kick fd (or none, polled) came since the ring last stopped or was reset. */
  armed = false;
  /** Paused by the back-end (a stop or a region removal waiting for requests in progress). */
  paused = false;
  /** The inflight region recording this ring's buffers while it runs, or null. */
  inflight: InflightRegion | null = null;
  private kickFd = -1;
  private callFd = -1;
  private errFd = -1;
  private kickWatch: { close(): void } | null = null;

  constructor(
    readonly index: number,
    private readonly n: NativeAddon,
  ) {}

  /** Bytes of the area the device writes (split: used ring; packed: device event suppression). */
  get deviceAreaLength(): number {
    return this.format === 'packed' ? EVENT_SIZE : usedRingSize(this.size);
  }

  /** vhost-user.rst "Ring states": size and base are set while the ring is stopped. */
  checkStopped(): void {
    if (this.started) throw new VhostUserError('ring-state', `ring ${this.index} is running (stop it with GET_VRING_BASE first)`, { refused: true });
  }

  /**
   * SET_VRING_KICK: `fd` (an eventfd, checked) or -1; `onKick` runs on each kick, inside
   * `guard` (an exception must not escape a native watch callback: it would end the process).
   * The addon reads the kick eventfd itself before the callback (watchEventfd): one call into
   * JavaScript per kick. A kick read before the ring is served is never lost: the device
   * re-enables notifications and looks at the ring again before it waits (2.7.10).
   */
  setKick(fd: number, onKick: () => void, guard: (fn: (count: number) => void) => (count: number) => void): void {
    this.stopWatching();
    if (this.kickFd >= 0) this.n.close(this.kickFd);
    this.kickFd = fd;
    if (fd < 0) return;
    this.kickWatch = this.n.watchEventfd(
      fd,
      guard((count) => {
        if (count < 0) throw new VhostUserError('bad-fd', `ring ${this.index}: the kick eventfd cannot be read (${count === -1 ? 'poll error' : `errno ${-count}`})`);
        onKick();
      }),
    );
  }

  /** SET_VRING_CALL: `fd` (an eventfd, checked) or -1. */
  setCall(fd: number): void {
    if (this.callFd >= 0) this.n.close(this.callFd);
    this.callFd = fd;
  }

  /** SET_VRING_ERR: `fd` (an eventfd, checked) or -1; signalled when the device fails. */
  setErr(fd: number): void {
    if (this.errFd >= 0) this.n.close(this.errFd);
    this.errFd = fd;
  }

  /** A used-buffer notification: the call eventfd. */
  signal(): void {
    if (this.callFd >= 0) this.n.eventfdWrite(this.callFd, 1);
  }

  /** The device failed: the error eventfd, for a started ring (QEMU logs the ring). */
  signalError(): void {
    if (this.started && this.errFd >= 0) this.n.eventfdWrite(this.errFd, 1);
  }

  /** No more kicks are taken (a stop; the kick fd stays until replaced or closed). */
  stopWatching(): void {
    this.kickWatch?.close();
    this.kickWatch = null;
  }

  /**
   * Where the ring starts, from its base. Split rings: the next available index from the base,
   * the used index as the guest's used ring holds it (what QEMU and libvhost-user do). Packed
   * rings: both slots and wrap counters from the base. A 'ring-base' error when the base cannot
   * be right for this ring.
   */
  startPosition(memory: GuestMemory | null): RingPosition {
    if (this.format === 'packed') {
      const start = decodePackedRingBase(this.base);
      if (start.avail >= this.size || start.used >= this.size) throw new VhostUserError('ring-base', `packed ring base 0x${this.base.toString(16)} points outside a ring of ${this.size}`);
      return start;
    }
    if (this.base > 0xffff) throw new VhostUserError('ring-base', `split ring base ${this.base} is not a 16-bit index`);
    const at = usedIdxAddress(this.used);
    const usedIdx = memory !== null && memory.isBacked(at, 2) ? memory.readU16(at) : 0;
    if (((this.base - usedIdx) & 0xffff) > this.size) throw new VhostUserError('ring-base', `base ${this.base} is more than the ring size ${this.size} ahead of the used index ${usedIdx}`);
    return { avail: this.base, availWrap: true, used: usedIdx, usedWrap: true };
  }

  /**
   * Starts the ring (its first kick): from its base, after the buffers its inflight region says
   * a previous back-end took and never returned. The device queue is configured and activated
   * at that position; a layout the queue refuses is its verdict (the device fails, the session
   * ends). Throws a VhostUserError when the base or the inflight region cannot be right.
   */
  start(cx: RingStartContext): void {
    const dev = cx.device;
    const q = dev.queues[this.index];
    // The device makes its queues when it gets guest memory: a kick before any is out of turn.
    if (q === undefined) throw new VhostUserError('ring-state', 'no such queue (no memory table yet)');
    let start = this.startPosition(cx.memory);
    const tracked = this.trackedRegion(cx);
    let resubmit: PriorBuffer[] = [];
    if (tracked !== null) {
      const memory = cx.memory;
      let recovered;
      try {
        recovered = recoverRing(tracked, start, (slot) => {
          if (memory === null) throw new Error('no memory table yet');
          return memory.readU16(packedFlagsAddress(this.desc, slot));
        });
      } catch (err) {
        throw new VhostUserError('inflight', `inflight region: ${messageOf(err)}`, { cause: err });
      }
      start = recovered.start;
      resubmit = recovered.resubmit;
      if (resubmit.length > 0) cx.log.info(`vhost-user: ring ${this.index} serves again ${resubmit.length} request(s) a previous back-end took and never finished`);
    }
    this.started = true;
    this.paused = false;
    this.inflight = tracked;
    q.setObserver(tracked);
    q.serveFirst(resubmit);
    const packed = this.format === 'packed';
    cx.log.info(`vhost-user: ring ${this.index} started at available ${start.avail}${packed ? `/${+start.availWrap}` : ''}, used ${start.used}${packed ? `/${+start.usedWrap}` : ''}`);
    const addrs = { desc: this.desc, avail: this.avail, used: this.used };
    if (q.active) {
      // Stopped by GET_VRING_BASE but not reset: the front-end restarts the ring itself (the
      // guest's driver did not touch the queue, so the device's setup rules do not apply).
      q.setSize(this.size);
      q.setAddresses(addrs);
      if (q.activate(dev.queueFeatures(), start) && this.enabled) dev.notify(this.index);
      return;
    }
    dev.setQueueSize(this.index, this.size);
    dev.setQueueAddresses(this.index, addrs.desc, addrs.avail, addrs.used);
    cx.makeLive();
    // The queue starts from the ring's position, not from its beginning: activated here (after
    // DRIVER_OK, so that a layout it refuses is a device error the front-end is told of with a
    // configuration change), then enabled in the device core, which leaves an active queue as is.
    if (!q.activate(dev.queueFeatures(), start)) return; // the verdict ends the session
    // Not announced to the device type: over vhost-user the enable is SET_VRING_ENABLE's.
    dev.enableQueue(this.index, false);
    if (this.enabled) dev.notify(this.index);
  }

  /** The ring's inflight region if it can record this ring (same format and size), else null (logged). */
  private trackedRegion(cx: RingStartContext): InflightRegion | null {
    const region = cx.region;
    if (region === undefined) return null;
    if (region instanceof PackedInflightRegion !== (this.format === 'packed')) {
      cx.log.warn(`vhost-user: ring ${this.index} is ${this.format}, its inflight region is not: not tracked`);
      return null;
    }
    if (region.queueSize !== this.size) {
      cx.log.warn(`vhost-user: ring ${this.index} has ${this.size} entries, its inflight region ${region.queueSize}: not tracked`);
      return null;
    }
    return region;
  }

  /**
   * Stops taking new requests (the queue takes none; those in progress finish). A ring stop
   * (GET_VRING_BASE) and a region removal pause rings until requests in progress are done.
   */
  pause(queue: DeviceQueue | undefined): void {
    if (!this.started || queue === undefined) return;
    this.paused = true;
    queue.pause();
  }

  /** Takes requests again after pause(); true when the ring should look for kicks it missed. */
  resume(queue: DeviceQueue | undefined): boolean {
    if (!this.paused) return false;
    this.paused = false;
    if (queue === undefined) return false;
    queue.resume();
    return this.started && this.enabled;
  }

  /**
   * A stopped ring's position goes into its base (what GET_VRING_BASE answers and the next
   * start uses). A ring that never started, or whose device was reset meanwhile, stays where
   * it was left. Returns the position kept, or null.
   */
  keepPosition(queue: DeviceQueue | undefined): RingPosition | null {
    this.armed = false;
    if (!this.started) return null;
    this.started = false;
    this.paused = false;
    if (queue === undefined || !queue.active) return null;
    const p = queue.position();
    this.base = encodeRingBase(this.format, p);
    return p;
  }

  /** RESET_DEVICE: stopped and back to base 0 (requests in progress are dropped). */
  reset(): void {
    this.stopWatching();
    this.armed = false;
    this.started = false;
    this.paused = false;
    this.base = 0;
  }

  /** Every fd closed (the connection ended). */
  close(): void {
    this.stopWatching();
    for (const fd of [this.kickFd, this.callFd, this.errFd]) if (fd >= 0) this.n.close(fd);
    this.kickFd = this.callFd = this.errFd = -1;
    this.inflight = null;
  }
}
