/**
 * Driver core: the initialization sequence exactly as spec 3.1.1 orders it, feature
 * negotiation (2.2), configuration reads that retry until config_generation is stable (2.5),
 * queue setup, reset and re-initialization, and the checks a driver can make on its device.
 *
 * An unrecoverable step sets FAILED (init.sequence.driver.5) and stops (init.sequence.driver.6);
 * another init() starts over with a reset (basic.status.driver.3).
 */
import { Monitor, type Verdict } from '../monitor/monitor.js';
import { GuestAllocator } from '../memory/allocator.js';
import { Feature, Status, statusNames } from '../spec/constants.js';
import { bit, featureBits, featureNames, hasFeature, TRANSPORT_FEATURES_SPLIT, type FeatureNames } from '../spec/features.js';

/** Transport bits the driver core accepts by default (NOTIFICATION_DATA only where the transport carries it). */
const DEFAULT_DRIVER_TRANSPORT =
  TRANSPORT_FEATURES_SPLIT | bit(Feature.RING_PACKED) | bit(Feature.IN_ORDER) | bit(Feature.NOTIFICATION_DATA) | bit(Feature.RING_RESET) | bit(Feature.SUSPEND);
import { DEVICE_TYPES, isDescribedFeature, unmetDependency } from '../spec/device-types.js';
import type { DriverTransport } from './transport.js';
import type { DriverQueue } from '../virtqueue/queue.js';
import { createDriverQueue, driverQueueFootprint } from '../virtqueue/create.js';
import { VirtioTsError } from '../errors.js';

/**
 * Why a driver operation failed, or why the driver gave up:
 * - `not-offered`: the device does not offer a feature the driver cannot do without
 *   (VIRTIO_F_VERSION_1: basic.features.driver.6; a device-type feature an operation needs);
 * - `features-refused`: the device did not keep FEATURES_OK for the subset the driver accepted;
 * - `not-negotiated`: the operation needs a feature that was not negotiated (SUSPEND,
 *   RING_RESET, a device type's optional request);
 * - `device-violation`: the device broke a clause the driver acts on (strict mode, or a fatal
 *   verdict such as a used id that names no buffer); `verdict` says which;
 * - `needs-reset`: the device set DEVICE_NEEDS_RESET (basic.status.driver.4: nothing in flight
 *   is relied on any more);
 * - `timeout`: the device did not finish a reset, a queue reset, a suspend or a resume;
 * - `config-unstable`: config_generation kept changing over every retry (basic.config.driver.2);
 * - `no-queue`: the device has no such queue, or the queue is not set up (or not reset);
 * - `unsupported`: the transport cannot do it (a single-queue reset);
 * - `wrong-state`: the driver is not in a state that allows the operation (suspend when not live);
 * - `not-started`: a request on a driver that is not live (never started, shut down);
 * - `cancelled`: a request that will not be answered: its queue or the device was reset, the
 *   driver started again or shut down;
 * - `handler-failed`: a device-type handler or init hook threw (`cause` holds what it threw).
 */
export type DriverErrorKind =
  | 'not-offered'
  | 'features-refused'
  | 'not-negotiated'
  | 'device-violation'
  | 'needs-reset'
  | 'timeout'
  | 'config-unstable'
  | 'no-queue'
  | 'unsupported'
  | 'wrong-state'
  | 'not-started'
  | 'cancelled'
  | 'handler-failed';

/** The driver layer's error (device-type drivers add their own for their requests' outcomes: BlkError). */
export class DriverError extends VirtioTsError<DriverErrorKind> {
  /** For `device-violation`: the verdict the driver acted on. */
  readonly verdict?: Verdict;

  /** A DriverError of `kind`; `verdict` for a device-violation, `cause` for what a handler threw. */
  constructor(kind: DriverErrorKind, message: string, options: { verdict?: Verdict; cause?: unknown } = {}) {
    super(kind, message, options.cause === undefined ? undefined : { cause: options.cause });
    if (options.verdict !== undefined) this.verdict = options.verdict;
  }
}

/** What a device-type driver tells the driver core: its device type and the features it understands, and how to lay out its queues. */
export interface VirtioDriverOptions {
  /** Device type this driver drives. */
  deviceId: number;
  /** Device-specific feature bits the driver understands (transport bits are added). */
  deviceFeatures?: bigint;
  /** Transport bits to accept when offered; default VERSION_1 | INDIRECT_DESC | EVENT_IDX. */
  transportFeatures?: bigint;
  featureNames?: FeatureNames;
  monitor?: Monitor;
  /** Guest allocator for rings and buffers (default: all of guest memory's first region). */
  allocator?: GuestAllocator;
  /** Queue size wanted (capped at the device's maximum). Default 256. */
  queueSize?: number;
  /** Entries per indirect table when INDIRECT_DESC is negotiated (0 = never indirect). */
  indirectMax?: number;
  /** Times a config read retries while the generation changes. */
  configRetries?: number;
  /** Hash device-readable buffers to catch a device writing into them (see DriverRingOptions.auditReadable). */
  auditReadable?: boolean;
}

/**
 * Where a driver stands: `idle` (never started, or shut down), `initializing` (init() runs),
 * `live` (DRIVER_OK), `suspended` (VIRTIO_F_SUSPEND), `failed` (init() stopped and set FAILED:
 * init.sequence.driver.5), `broken` (the driver gave up on a device that broke a rule or needs
 * a reset; `failure` says why). Another init() starts over from `failed` or `broken`.
 */
export type DriverState = 'idle' | 'initializing' | 'live' | 'suspended' | 'failed' | 'broken';

/**
 * `T` is the type of the tokens the device-type driver attaches to its buffers (one type for all
 * its queues: a union when they differ); its queues hand them back typed.
 */
export class VirtioDriver<T extends {} | null = {} | null> {
  readonly transport: DriverTransport;
  readonly monitor: Monitor;
  readonly allocator: GuestAllocator;
  readonly queues: DriverQueue<T>[] = [];
  readonly featureNames: FeatureNames;
  state: DriverState = 'idle';
  /** Features offered by the device, as read in step 4. */
  offered = 0n;
  /** Features negotiated (accepted and confirmed by FEATURES_OK). */
  features = 0n;
  /** Why the driver gave up, when state is failed or broken. */
  failure: Error | null = null;
  /**
   * Handlers a device-type driver installs (assigns or overrides). onUsed is a method so that a
   * driver with its own token type is still a VirtioDriver (method parameters are bivariant).
   */
  onUsed(_queue: DriverQueue<T>): void {}
  /** Called on a configuration change notification while live (a device-type driver re-reads what it shows). */
  onConfigChange: () => void = () => undefined;

  private readonly wanted: bigint;
  private readonly queueSize: number;
  private readonly indirectMax: number;
  private readonly configRetries: number;
  /** Guest memory of each queue's rings, by queue index. */
  private readonly ringAllocations = new Map<number, number>();
  /** Config-change notifications seen since DRIVER_OK. */
  configNotifications = 0;
  private driverOkSet = false;
  private resetDone = false;

  /** A driver over `transport`, idle until init(); it listens to the transport's notifications from now on. */
  constructor(
    transport: DriverTransport,
    readonly options: VirtioDriverOptions,
  ) {
    this.transport = transport;
    this.monitor = options.monitor ?? new Monitor();
    const first = transport.memory.regions[0];
    this.allocator = options.allocator ?? new GuestAllocator(first.guestAddr, first.size);
    this.featureNames = options.featureNames ?? DEVICE_TYPES[options.deviceId]?.features ?? {};
    let wanted = (options.transportFeatures ?? DEFAULT_DRIVER_TRANSPORT) | (options.deviceFeatures ?? 0n);
    if (transport.notificationData !== true) wanted &= ~bit(Feature.NOTIFICATION_DATA);
    this.wanted = wanted;
    this.queueSize = options.queueSize ?? 256;
    this.indirectMax = options.indirectMax ?? 16;
    this.configRetries = options.configRetries ?? 64;
    transport.listen({
      used: (q) => this.handleUsedNotification(q),
      config: () => this.handleConfigNotification(),
    });
  }

  /** Whether feature bit `featureBit` was negotiated (accepted and confirmed by FEATURES_OK). */
  negotiated(featureBit: number): boolean {
    return hasFeature(this.features, featureBit);
  }

  // ---------------------------------------------------------------- the device checks

  /** A verdict about the device; in strict mode a violation makes the driver give up. */
  protected deviceViolation(clause: string, message: string, context?: Record<string, unknown>, fatal = false, act = true): Verdict {
    const v = this.monitor.report(clause, message, context);
    if (act) this.onDeviceVerdict(v, fatal);
    return v;
  }

  private onDeviceVerdict(v: Verdict, fatal: boolean): void {
    if (fatal || this.monitor.shouldAct(v)) this.breakDown(new DriverError('device-violation', `device broke ${v.clause}: ${v.message}`, { verdict: v }));
  }

  /** Gives up on a device that broke a rule: pending work fails, FAILED is set (best effort). */
  protected breakDown(err: DriverError): void {
    if (this.state === 'broken') return;
    const initializing = this.state === 'initializing';
    this.state = 'broken';
    this.failure = err;
    this.onBroken(err);
    // During init(), init itself sets FAILED at its next step (one status writer at a time).
    if (initializing) return;
    // Later, not inside whatever ring operation made the verdict (a kick may be half done).
    queueMicrotask(() => {
      this.transport
        .getStatus()
        .then((s) => this.transport.setStatus(s | Status.FAILED))
        .catch(() => undefined);
    });
  }

  /** Device-type drivers reject their pending requests here. */
  protected onBroken(_err: DriverError): void {}

  private handleUsedNotification(index: number): void {
    const q = this.queues[index];
    if (!this.driverOkSet) {
      // basic.status.device.1: no used-buffer notification before DRIVER_OK.
      this.deviceViolation('basic.status.device.1', `device sent a used-buffer notification for queue ${index} before DRIVER_OK`, { queue: index });
      return;
    }
    if (q === undefined) {
      if (this.queuesReset.has(index)) {
        this.deviceViolation('basic.vq-reset.device.1', `device sent a used-buffer notification for queue ${index}, which the driver reset`, { queue: index });
      }
      return;
    }
    q.usedNotifications++;
    if (this.suspendConfirmed) {
      this.deviceViolation('init.suspend.device.3', `device sent a used-buffer notification for queue ${index} while suspended`, { queue: index });
      return;
    }
    if (this.transport.synchronous === true) q.auditUsedNotification();
    // While suspending, buffers in progress still complete (init.suspend.device.8).
    if (this.state !== 'live' && this.state !== 'suspended') return;
    try {
      this.onUsed(q);
    } catch (err) {
      this.breakDown(new DriverError('handler-failed', `used-buffer handler failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err }));
    }
  }

  private handleConfigNotification(): void {
    if (!this.driverOkSet && this.resetDone) {
      // basic.reset.device.2: nothing from the device between reset and re-initialization.
      this.deviceViolation('basic.reset.device.2', 'device sent a configuration change notification after reset, before the driver re-initialized it', {});
      return;
    }
    if (this.suspendConfirmed) {
      this.deviceViolation('init.suspend.device.4', 'device sent a configuration change notification while suspended', {});
      return;
    }
    this.configNotifications++;
    if (this.state === 'live') {
      // The notification may mean DEVICE_NEEDS_RESET (basic.status.device.3): look.
      void this.checkStatus().catch(() => undefined);
      this.onConfigChange();
    }
  }

  private beyondFeaturesOk = false;

  /**
   * Reads the status and checks DEVICE_NEEDS_RESET; a live device that set it must have sent a
   * configuration change notification (basic.status.device.3).
   */
  async checkStatus(): Promise<number> {
    const s = await this.transport.getStatus();
    if (s & Status.DEVICE_NEEDS_RESET && this.driverOkSet) {
      if (this.configNotifications === 0) {
        this.deviceViolation('basic.status.device.3', 'device set DEVICE_NEEDS_RESET while live without a configuration change notification', { status: s });
      }
      // basic.status.driver.4: nothing in flight is relied upon any more.
      this.breakDown(new DriverError('needs-reset', `device needs reset (status ${statusNames(s)})`));
    }
    return s;
  }

  // ---------------------------------------------------------------- initialization (3.1.1)

  /**
   * Runs the initialization sequence. `setup` is step 7 (device-specific: queues, config
   * writes, populating queues); `check` runs in step 4 and may read config to decide whether
   * to accept the device (init.sequence.driver.2). Throws DriverError after setting FAILED.
   */
  async init(hooks: { check?: (offered: bigint) => Promise<void> | void; setup?: () => Promise<void> | void } = {}): Promise<void> {
    this.state = 'initializing';
    this.failure = null;
    this.driverOkSet = false;
    this.beyondFeaturesOk = false;
    this.configNotifications = 0;
    this.releaseQueues();
    const t = this.transport;
    try {
      // (1) Reset, and wait until the device reads 0 (basic.reset.driver.1).
      await this.reset();
      // (2) ACKNOWLEDGE, (3) DRIVER.
      await t.setStatus(Status.ACKNOWLEDGE);
      await t.setStatus(Status.ACKNOWLEDGE | Status.DRIVER);
      this.checkpoint();
      // (4) Features: read, validate, accept the understood subset.
      this.offered = await t.getDeviceFeatures();
      this.validateOffer(this.offered);
      this.checkpoint();
      if (hooks.check) await hooks.check(this.offered);
      this.checkpoint();
      // basic.features.driver.3/.4/.7: unknown bits are ignored, never accepted, never a reason to fail.
      let accept = this.offered & this.wanted;
      if (unmetDependency(this.options.deviceId, accept) !== null) accept = this.dropUnmetDependencies(accept);
      if (t.legacy !== undefined) {
        // 3.1.2 (legacy sequence): features take effect as written; no FEATURES_OK step.
        accept &= 0xffffffffn;
        await t.setDriverFeatures(accept);
        this.beyondFeaturesOk = true;
        this.features = accept;
        this.notificationData = false;
        if (hooks.setup) await hooks.setup();
        this.checkpoint();
        if (this.queues.some((q) => q.peekUsed())) this.deviceViolation('basic.status.device.1', 'device consumed buffers before DRIVER_OK', {});
        this.driverOkSet = true;
        const before = this.configNotifications;
        await t.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.DRIVER_OK);
        this.checkpoint();
        this.state = 'live';
        if (this.configNotifications !== before) await this.checkStatus();
        return;
      }
      if (!hasFeature(accept, Feature.VERSION_1)) {
        throw new DriverError('not-offered', 'device does not offer VIRTIO_F_VERSION_1: legacy devices are not supported (basic.features.driver.6)');
      }
      await t.setDriverFeatures(accept);
      // (5) FEATURES_OK; no new features after this (init.sequence.driver.4).
      await t.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
      this.beyondFeaturesOk = true;
      // (6) Re-read: the device may have refused our subset.
      const s = await t.getStatus();
      if (s & Status.SUSPEND) {
        // init.suspend.device.1: before initialization completes the device ignores SUSPEND;
        // one that shows it set acted on it. Not a device to go on with.
        this.deviceViolation('init.suspend.device.1', `device shows SUSPEND during initialization (status ${s}): it must ignore SUSPEND until the device is initialized`, { status: s });
        this.checkpoint();
      }
      if (!(s & Status.FEATURES_OK)) {
        if (this.lastNegotiated === accept) {
          this.deviceViolation('basic.features.device.5', 'device refused, after a reset, the feature set it accepted before', { features: accept.toString(16) });
        } else {
          this.deviceViolation('basic.features.device.2', `device refused a valid feature subset: ${featureNames(accept, this.featureNames).join(', ')}`, { features: accept.toString(16) });
        }
        throw new DriverError('features-refused', `device refused the features ${featureNames(accept, this.featureNames).join(', ')} (FEATURES_OK not set)`);
      }
      this.features = accept;
      this.notificationData = hasFeature(accept, Feature.NOTIFICATION_DATA);
      this.lastNegotiated = accept;
      // (7) Device-specific setup, queues included.
      if (hooks.setup) await hooks.setup();
      this.checkpoint();
      // (8) DRIVER_OK: live. basic.status.device.1: nothing consumed before it.
      if (this.queues.some((q) => q.peekUsed())) this.deviceViolation('basic.status.device.1', 'device consumed buffers before DRIVER_OK', {});
      this.checkpoint();
      // From the moment DRIVER_OK is written the device may act (sync transports act inside the write).
      this.driverOkSet = true;
      const notificationsBefore = this.configNotifications;
      await t.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
      this.checkpoint();
      this.state = 'live';
      // A device that failed while going live (DEVICE_NEEDS_RESET inside the DRIVER_OK write, as
      // a synchronous transport delivers it) notified before the driver was live: look now, or
      // the first request would wait forever for a device that stopped (basic.status.driver.4).
      if (this.configNotifications !== notificationsBefore) await this.checkStatus();
    } catch (err) {
      this.driverOkSet = false;
      await this.fail(err);
      throw this.failure;
    }
  }

  /** Stops init() when a device verdict made the driver give up (init.sequence.driver.6). */
  private checkpoint(): void {
    if ((this.state as DriverState) === 'broken') throw this.failure;
  }

  /** VIRTIO_F_NOTIFICATION_DATA negotiated: kicks carry the queue's next position. */
  private notificationData = false;

  /** Feature set accepted with FEATURES_OK last time (basic.features.device.5). */
  private lastNegotiated: bigint | null = null;

  /** basic.features.driver.2: the driver validates what the device offers. */
  private validateOffer(offered: bigint): void {
    const id = this.options.deviceId;
    const legacy = this.transport.legacy !== undefined;
    const unknown = featureBits(offered).filter((b) => !isDescribedFeature(id, b, legacy));
    if (unknown.length > 0) {
      // Recorded, never acted on: basic.features.driver.7 forbids failing over unknown offered bits.
      this.deviceViolation('basic.features.device.4', `device offers feature bits the spec does not describe for this device type: ${unknown.join(', ')}`, { bits: unknown }, false, false);
    }
    if (!hasFeature(offered, Feature.VERSION_1) && this.transport.legacy === undefined) {
      this.deviceViolation('reserved.bits.device.1', 'device does not offer VIRTIO_F_VERSION_1 (a modern device must)', {});
    }
    const broken = unmetDependency(id, offered);
    if (broken !== null) this.deviceViolation('basic.features.device.1', `device offers a feature without the feature it requires: ${broken.description}`, {});
  }

  /** Drops accepted features whose requirements are not accepted (basic.features.driver.1). */
  private dropUnmetDependencies(set: bigint): bigint {
    const info = DEVICE_TYPES[this.options.deviceId];
    let changed = true;
    while (changed && info !== undefined) {
      changed = false;
      for (const d of info.dependencies) {
        const has = (b: number) => hasFeature(set, b);
        if (has(d.feature) && (!(d.allOf ?? []).every(has) || (d.anyOf !== undefined && !d.anyOf.some(has)))) {
          set &= ~bit(d.feature);
          changed = true;
        }
      }
    }
    return set;
  }

  /** init.sequence.driver.5 / .6: set FAILED and stop initializing. */
  private async fail(err: unknown): Promise<void> {
    this.failure = err instanceof Error ? err : new DriverError('handler-failed', String(err), { cause: err });
    if (this.state !== 'broken') this.state = 'failed';
    try {
      const s = await this.transport.getStatus();
      await this.transport.setStatus(s | Status.FAILED);
    } catch {
      // The transport is gone: nothing more to tell the device.
    }
  }

  /** Resets the device and waits until status reads 0 (basic.reset.driver.1). */
  async reset(): Promise<void> {
    const t = this.transport;
    this.suspendConfirmed = false;
    this.resetDone = true; // from the moment status reads 0, the device must stay quiet (basic.reset.device.2)
    this.driverOkSet = false;
    await t.setStatus(0);
    for (let i = 0; ; i++) {
      const s = await t.getStatus();
      if (s === 0) break;
      if (i >= 100) {
        this.deviceViolation('basic.reset.device.1', `device status reads ${statusNames(s)} after reset, not 0`, { status: s }, true);
        throw new DriverError('timeout', 'device did not complete reset');
      }
    }
    // init.cleanup.driver.2: buffers come back only now that the device is reset.
    for (const q of this.queues) q.drainAfterReset();
  }

  /** Resets the device and frees the rings (the driver is idle afterwards). */
  async shutdown(): Promise<void> {
    await this.reset();
    this.releaseQueues();
    this.state = 'idle';
  }

  private releaseQueues(): void {
    for (const a of this.ringAllocations.values()) this.allocator.release(a);
    this.ringAllocations.clear();
    this.queues.length = 0;
    this.queuesReset.clear();
    this.kickAfterResume.length = 0;
  }

  // ---------------------------------------------------------------- suspend (2.1, 3.3)

  private running: Promise<void> = Promise.resolve();
  private releaseRunning: () => void = () => undefined;
  private generationAtSuspend = 0;
  /** The device showed SUSPEND = 1, DRIVER_OK = 0: from now on it must stay quiet. */
  private suspendConfirmed = false;

  /** Resolves when the driver may use its queues (immediately unless suspended). */
  whenRunning(): Promise<void> {
    return this.running;
  }

  /**
   * Suspends the device (VIRTIO_F_SUSPEND): no buffers or notifications from here on
   * (init.suspend.driver.3 / .4), then waits for SUSPEND = 1 and DRIVER_OK = 0
   * (init.suspend.driver.2). A device that neither suspends nor sets DEVICE_NEEDS_RESET
   * within `timeoutMs` breaks init.suspend.device.6.
   */
  async suspend(options: { timeoutMs?: number } = {}): Promise<void> {
    if (this.state !== 'live') throw new DriverError('wrong-state', `cannot suspend a driver that is ${this.state}`);
    if (!this.negotiated(Feature.SUSPEND)) throw new DriverError('not-negotiated', 'VIRTIO_F_SUSPEND was not negotiated');
    this.state = 'suspended';
    this.running = new Promise((res) => (this.releaseRunning = res));
    await this.statusTransition(Status.SUSPEND, Status.SUSPEND, 'init.suspend.device.6', 'suspend', options.timeoutMs);
    if (this.transport.synchronous === true) {
      // init.suspend.device.8: the device finishes what it took and notifies before it shows
      // SUSPEND = 1; on a synchronous transport that notification has arrived and the driver
      // collected what it announced. Used buffers left over were not announced.
      for (const q of this.queues) {
        if (q !== undefined && q.unannouncedUsed()) {
          this.deviceViolation('init.suspend.device.8', `device presented SUSPEND with used buffers on queue ${q.index} it did not notify`, { queue: q.index });
        }
      }
    }
    this.generationAtSuspend = await this.transport.configGeneration();
    this.suspendConfirmed = true;
  }

  /** Resumes a suspended device and waits for SUSPEND = 0, DRIVER_OK = 1 (init.suspend.driver.6). */
  async resume(options: { timeoutMs?: number } = {}): Promise<void> {
    if (this.state !== 'suspended') throw new DriverError('wrong-state', `cannot resume a driver that is ${this.state}`);
    const t = this.transport;
    if ((await t.configGeneration()) !== this.generationAtSuspend) {
      this.deviceViolation('init.suspend.device.3', 'device changed its configuration space while suspended', {});
    }
    const notificationsBefore = this.configNotifications;
    this.suspendConfirmed = false;
    // Still 'suspended' until the device shows SUSPEND = 0, DRIVER_OK = 1 (init.suspend.driver.6):
    // used buffers the device returns meanwhile are collected, but what the handlers make
    // available waits (kick) and goes out once the resume is seen.
    await this.statusTransition(Status.DRIVER_OK, Status.DRIVER_OK, 'init.suspend.device.7', 'resume', options.timeoutMs);
    this.state = 'live';
    for (let i = 0; i < this.kickAfterResume.length; i++) {
      const q = this.queues[i];
      if (!this.kickAfterResume[i] || q === undefined) continue;
      this.kickAfterResume[i] = false;
      this.kick(q);
    }
    if ((await t.configGeneration()) !== this.generationAtSuspend && this.configNotifications === notificationsBefore && t.synchronous === true) {
      this.deviceViolation('init.suspend.device.5', 'device changed its configuration while suspended and sent no notification on resuming', {});
    }
    this.releaseRunning();
  }

  /**
   * Sets status bit `set`, then waits until SUSPEND and DRIVER_OK read as `want` (the device
   * finished) or DEVICE_NEEDS_RESET (it failed, which it may). A device that does neither
   * within the timeout breaks `clause` (init.suspend.device.6 / .7).
   */
  private async statusTransition(set: number, want: number, clause: string, what: string, timeoutMs = 1000): Promise<void> {
    const t = this.transport;
    await t.setStatus((await t.getStatus()) | set);
    const done = await this.waitStatus((st) => (st & (Status.SUSPEND | Status.DRIVER_OK)) === want, timeoutMs);
    if (done === null) {
      this.deviceViolation(clause, `device did not ${what} (SUSPEND/DRIVER_OK) and did not set DEVICE_NEEDS_RESET either`, {}, true);
      throw this.failure ?? new DriverError('timeout', `device did not ${what}`);
    }
    if (done & Status.DEVICE_NEEDS_RESET) {
      this.breakDown(new DriverError('needs-reset', `device failed to ${what} (DEVICE_NEEDS_RESET)`));
      throw this.failure;
    }
  }

  /** Polls the status until `ok` or DEVICE_NEEDS_RESET; null after `timeoutMs`. */
  private async waitStatus(ok: (status: number) => boolean, timeoutMs: number): Promise<number | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const st = await this.transport.getStatus();
      if (ok(st) || st & Status.DEVICE_NEEDS_RESET) return st;
      if (Date.now() >= deadline) return null;
      await new Promise((res) => setTimeout(res, 1));
    }
  }

  // ---------------------------------------------------------------- configuration space

  /**
   * Reads config fields consistently: repeats `read` until config_generation is the same
   * before and after (basic.config.driver.2). A device that refuses the reads before
   * FEATURES_OK breaks basic.config.device.1 (the driver MAY read then: init.sequence.driver.2).
   */
  async readConfig<T>(read: (r: (offset: number, size: 1 | 2 | 4 | 8) => Promise<number | bigint>) => Promise<T>): Promise<T> {
    const t = this.transport;
    for (let i = 0; i <= this.configRetries; i++) {
      const before = await t.configGeneration();
      let value: T;
      try {
        value = await read((o, s) => t.readConfig(o, s));
      } catch (err) {
        if (!this.beyondFeaturesOk) {
          this.deviceViolation('basic.config.device.1', `device refused a configuration read before FEATURES_OK: ${err instanceof Error ? err.message : String(err)}`, {
            permits: 'init.sequence.driver.2',
          });
        }
        throw err;
      }
      const after = await t.configGeneration();
      if (before === after) return value;
    }
    throw new DriverError('config-unstable', `config_generation kept changing over ${this.configRetries} reads`);
  }

  // ---------------------------------------------------------------- queues

  /** Sets up queue `index` (step 7): allocates rings, tells the transport, enables it. */
  async setupQueue(index: number, options: { size?: number } = {}): Promise<DriverQueue<T>> {
    const t = this.transport;
    const max = await t.queueMaxSize(index);
    if (max === 0) throw new DriverError('no-queue', `queue ${index} is not available on this device`);
    const format = this.negotiated(Feature.RING_PACKED) ? 'packed' : 'split';
    const legacy = t.legacy;
    let size = legacy?.fixedQueueSize === true ? max : Math.min(options.size ?? this.queueSize, max);
    if (format === 'split') size = 1 << Math.floor(Math.log2(size)); // split sizes are powers of two (2.7)
    const indirect = this.negotiated(Feature.INDIRECT_DESC) ? Math.min(this.indirectMax, size) : 0;
    // Legacy (2.7.2): one block from a page boundary, the used ring at the next queueAlign boundary.
    const usedAlign = legacy?.queueAlign;
    const bytes = driverQueueFootprint(format, size, indirect) + (usedAlign ?? 0);
    let base = this.allocator.alloc(bytes, Math.max(4096, usedAlign ?? 0));
    if (legacy !== undefined && base === 0) {
      // A legacy queue address is a page number where 0 means "no queue": never page 0.
      const first = base;
      base = this.allocator.alloc(bytes, Math.max(4096, usedAlign ?? 0));
      this.allocator.release(first);
    }
    const old = this.ringAllocations.get(index);
    if (old !== undefined) this.allocator.release(old);
    this.ringAllocations.set(index, base);
    const q = createDriverQueue<T>(
      format,
      t.memory,
      index,
      size,
      base,
      {
        eventIdx: this.negotiated(Feature.EVENT_IDX),
        indirect: indirect > 0,
        indirectMax: indirect,
        auditReadable: this.options.auditReadable ?? false,
        inOrder: this.negotiated(Feature.IN_ORDER),
        ...(usedAlign === undefined ? {} : { usedAlign }),
      },
      this.monitor,
      (v, fatal) => this.onDeviceVerdict(v, fatal),
    );
    await t.setupQueue(index, size, q.addrs);
    await t.enableQueue(index);
    this.queues[index] = q;
    return q;
  }

  // ---------------------------------------------------------------- queue reset (2.6.1)

  /** Queues reset with resetQueue() and not re-enabled yet. */
  private readonly queuesReset = new Set<number>();

  /**
   * VIRTIO_F_RING_RESET: resets queue `index` while the device runs, waits until the device
   * says it is done (basic.vq-reset.driver.1) and checks the queue is back to its defaults.
   * Returns the tokens of the buffers the device had not used (they are the driver's again).
   */
  async resetQueue(index: number, options: { timeoutMs?: number } = {}): Promise<T[]> {
    const t = this.transport;
    const q = this.queues[index];
    if (!this.negotiated(Feature.RING_RESET)) throw new DriverError('not-negotiated', 'VIRTIO_F_RING_RESET was not negotiated');
    if (q === undefined) throw new DriverError('no-queue', `queue ${index} is not set up`);
    if (t.resetQueue === undefined || t.queueResetPending === undefined || t.queueEnabled === undefined) {
      throw new DriverError('unsupported', 'this transport cannot reset a single queue');
    }
    await t.resetQueue(index);
    const deadline = Date.now() + (options.timeoutMs ?? 1000);
    while (await t.queueResetPending(index)) {
      if (Date.now() >= deadline) throw new DriverError('timeout', `queue ${index} reset did not complete`);
      await new Promise((res) => setTimeout(res, 1));
    }
    if (await t.queueEnabled(index)) {
      this.deviceViolation('basic.vq-reset.device.2', `queue ${index} still reads enabled after its reset completed (not its default state)`, { queue: index });
    }
    delete this.queues[index];
    this.queuesReset.add(index);
    const tokens = q.drainAfterReset();
    // basic.vq-reset.driver.2: the rings may go now.
    const rings = this.ringAllocations.get(index);
    if (rings !== undefined) this.allocator.release(rings);
    this.ringAllocations.delete(index);
    return tokens;
  }

  /** Re-enables a reset queue: configured again as in initial discovery (basic.vq-reenable.driver.1). */
  async reenableQueue(index: number, options: { size?: number } = {}): Promise<DriverQueue<T>> {
    if (!this.queuesReset.has(index)) throw new DriverError('no-queue', `queue ${index} was not reset`);
    const q = await this.setupQueue(index, options);
    this.queuesReset.delete(index);
    return q;
  }

  /**
   * Sends queue `q` an available-buffer notification with nothing new on it, which a driver
   * may do (2.7.10, packed.desc-table.driver.4): a probe of the device, which must tolerate
   * it (split.avail-buffer-notif-suppr.device.5). On a synchronous transport the device has
   * answered when notify returns: one that entered DEVICE_NEEDS_RESET over it draws the
   * verdict, and the driver gives up on it as on any device that needs a reset. Chains
   * committed but not yet published stay unpublished.
   */
  async renotify(q: DriverQueue): Promise<void> {
    if (this.state !== 'live') throw new DriverError('wrong-state', `cannot notify through a driver that is ${this.state}`);
    const t = this.transport;
    const before = await t.getStatus();
    t.notify(q.index, this.notificationData ? q.notificationData() : undefined);
    if (t.synchronous !== true || before & Status.DEVICE_NEEDS_RESET || q.format !== 'split') return;
    const after = await t.getStatus();
    if (after & Status.DEVICE_NEEDS_RESET) {
      this.deviceViolation('split.avail-buffer-notif-suppr.device.5', `device entered DEVICE_NEEDS_RESET over a notification of queue ${q.index} with no new buffers (it must tolerate one)`, { queue: q.index });
      await this.checkStatus();
    }
  }

  /** Queues kicked while suspended (by index): published and notified once the resume is seen. */
  private readonly kickAfterResume: boolean[] = [];

  /**
   * Publishes a queue's new chains and notifies the device if it wants it. While suspended
   * (until a resume is seen done) nothing is published: init.suspend.driver.3 / .4 / .6.
   */
  kick(q: DriverQueue): void {
    if (this.state === 'suspended') {
      this.kickAfterResume[q.index] = true;
      return;
    }
    // Decided before publishing: a verdict made while publishing must not skip the notification
    // of an index the device can already see.
    const audit = this.transport.synchronous === true && this.state === 'live';
    if (!q.publish()) return;
    const data = this.notificationData ? q.notificationData() : undefined;
    if (!audit) {
      this.transport.notify(q.index, data);
      return;
    }
    // On a synchronous transport the device has done its work when notify returns: the queue
    // judges whether it owed a notification it did not send.
    const mark = q.usedMark();
    const notifications = q.usedNotifications;
    this.transport.notify(q.index, data);
    if (q.usedNotifications === notifications && !q.broken) q.auditMissedNotification(mark);
  }

  /** Feature names for logs and demos. */
  describe(set: bigint): string[] {
    return featureNames(set, this.featureNames);
  }
}

export { bit };
