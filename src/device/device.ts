/**
 * Device core: the device side of status, feature negotiation, configuration space and
 * virtqueues (spec 2.1 - 2.6, 3.1), shared by every device type and every transport.
 *
 * A transport (loopback, MMIO/PCI register model, vhost-user back-end) calls the public
 * methods below as the driver acts; the device calls its {@link DeviceHost} to notify the
 * driver. Every driver action is checked against the init sequence (3.1.1) and status rules
 * (2.1); a broken rule becomes a verdict, and in strict mode the device enters
 * DEVICE_NEEDS_RESET. Nothing the driver does makes these methods throw.
 *
 * What one device type does (its queues, features, configuration layout and requests) is a
 * {@link DeviceType} the core holds by composition and calls through its hooks.
 */
import type { GuestMemory } from '../memory/guest-memory.js';
import { Monitor, type Verdict } from '../monitor/monitor.js';
import { Feature, Status, statusNames } from '../spec/constants.js';
import { bit, featureBits as featureBitsOf, featureNames, hasFeature, type FeatureNames } from '../spec/features.js';
import type { DeviceQueue, RingFormat } from '../virtqueue/queue.js';
import { createDeviceQueue } from '../virtqueue/create.js';
import type { QueueFeatures } from '../virtqueue/queue.js';
import { DEVICE_TYPES, isDescribedFeature, unmetDependency } from '../spec/device-types.js';
import { DeviceError } from './errors.js';
import type { ConditionalConfigField, DeviceContext, DeviceType } from './type.js';

export type { ConditionalConfigField, DeviceContext, DeviceType } from './type.js';

/** How the device reaches the driver: the transport implements it. */
export interface DeviceHost {
  /** Used-buffer notification for queue `index`. */
  interrupt(index: number): void;
  /** Configuration change notification (also sent after DEVICE_NEEDS_RESET: basic.status.device.3). */
  configChanged(): void;
  /**
   * The device entered DEVICE_NEEDS_RESET (after the configuration change notification, when
   * one was due): a transport that must do more to let the driver know (vhost-user ends the
   * connection, as libvhost-user's vu_panic does) does it here. Called at most once per reset
   * cycle, from inside the device's work: the transport must defer anything that resets the
   * device.
   */
  deviceError?(reason: string): void;
  /**
   * True when the device handles each driver action completely before the next one arrives
   * (synchronous loopback): then the device can also judge what the driver did NOT do, such
   * as a missing notification.
   */
  readonly synchronous?: boolean;
  /** Whether the transport carries VIRTIO_F_NOTIFICATION_DATA values; the bit is offered only then. */
  readonly notificationData?: boolean;
  /**
   * True while the driver uses the legacy interface of a transitional device (virtio-mmio
   * version 1, the PCI legacy I/O BAR): the legacy sequence of 3.1.2 has no FEATURES_OK, the
   * driver sees feature bits 0-31 only (pci.legacy-device-layout.device.4) and its features take
   * effect when written; rings are split. Read at each driver action, so a transitional host
   * can answer by which interface the driver used since the last reset.
   */
  readonly legacy?: boolean;
  /**
   * True when the transport judges, under its own clause, whether the driver read the status
   * back as 0 after writing 0 (PCI's modern interface: pci.common-config-struct-layout.driver.5,
   * the same act as basic.reset.driver.1 made a MUST). The core then leaves
   * basic.reset.driver.1 to it, so one act draws one verdict.
   */
  readonly checksResetReadBack?: boolean;
}

/** How one device is set up beyond its type. */
export interface VirtioDeviceOptions {
  /** The monitor that judges the driver (default: a new strict one). */
  monitor?: Monitor;
  /** For messages and logs (default: the type's name). */
  name?: string;
  /** Device-independent feature bits offered (default {@link DEFAULT_DEVICE_TRANSPORT_FEATURES}). */
  transportFeatures?: bigint;
  /** Offer these device-specific bits instead of the type's `features` (tests offer bits no type has). */
  deviceFeatures?: bigint;
  /**
   * Also offer these bits although the spec does not describe them for this device type (bits
   * the spec describes are dropped from the mask). A probe for basic.features.driver.3/.4: a
   * conforming driver disregards them, one that accepts them draws those verdicts. Off (0n) by
   * default, because such an offer breaks basic.features.device.4 on purpose (a driver that
   * checks the offer, as virtio-ts's does, reports that).
   */
  offerUndescribedBits?: bigint;
}

/** What a device offers of the device-independent bits unless told otherwise. */
export const DEFAULT_DEVICE_TRANSPORT_FEATURES =
  bit(Feature.VERSION_1) |
  bit(Feature.INDIRECT_DESC) |
  bit(Feature.EVENT_IDX) |
  bit(Feature.RING_PACKED) |
  bit(Feature.IN_ORDER) |
  bit(Feature.NOTIFICATION_DATA) |
  bit(Feature.RING_RESET) |
  bit(Feature.SUSPEND);

/** Where the device is in its life (what the status register says, simplified). */
export type DevicePhase = 'reset' | 'initializing' | 'live' | 'failed' | 'needs-reset';

/**
 * A virtio device as a transport sees it: the registers of spec 2 and 4 (status, features,
 * configuration space, queue setup, notifications), with every driver action checked against
 * the spec. What the device *is* comes from its {@link DeviceType}:
 *
 * ```ts
 * const device = new VirtioDevice(myType, { monitor: new Monitor() });
 * new LoopbackTransport(device, GuestMemory.create(1 << 20));   // or a vhost-user daemon
 * ```
 *
 * Writing a device means writing a DeviceType, never subclassing this class. The built-in
 * devices are types too (BlkDeviceType, ConsoleDeviceType, RngDeviceType); BlkDevice,
 * ConsoleDevice and RngDevice are this class with their type built from options, plus the
 * type's host API on the device for convenience. `device.type` is the type, typed: a custom
 * type's own API (a counter, a resize) is reached there. Subclassing is left for test peers
 * that break the core's own rules on purpose (virtio-ts/testing), which is what the protected
 * members are for.
 */
export class VirtioDevice<T extends DeviceType = DeviceType> {
  /** What this device is and does. */
  readonly type: T;
  readonly deviceId: number;
  readonly name: string;
  readonly monitor: Monitor;
  readonly featureNames: FeatureNames;
  readonly queues: DeviceQueue[];
  /** Features the device offers (NOTIFICATION_DATA only over a transport that carries it). */
  get offered(): bigint {
    return this.host?.notificationData === true ? this.offeredBits : this.offeredBits & ~bit(Feature.NOTIFICATION_DATA);
  }
  private offeredBits: bigint;

  /**
   * Stops offering `bits` (a VMM's `packed=off`, say). Only while the driver has not
   * negotiated yet: the offer must not change under it (struct.feature-offer.device.1);
   * afterwards a DeviceError 'features-locked'.
   */
  withholdFeatures(bits: bigint): void {
    if (this.featuresFixed) throw new DeviceError('features-locked', `${this.name}: features cannot be withheld after FEATURES_OK`);
    this.offeredBits &= ~bits;
  }
  /** Features the driver wrote (meaningful once FEATURES_OK is accepted). */
  driverFeatures = 0n;
  /** Device configuration space (device-specific layout, little-endian). */
  readonly config: Uint8Array;
  private readonly configView: DataView;
  /** Bumped on every configuration change (config_generation). */
  configGeneration = 0;

  /** The status register. Protected for test peers that break status rules on purpose. */
  protected statusValue = 0;
  /** The transport. Protected for test peers that notify when they must not. */
  protected host: DeviceHost | null = null;
  /** What the type is given; protected for test peers that call the type's hooks out of turn. */
  protected readonly context: DeviceContext;
  private mem: GuestMemory | null = null;
  /** FEATURES_OK was refused: the driver should now set FAILED (init.sequence.driver.5). */
  private featuresRefused = false;
  /** Whether FEATURES_OK has ever been accepted (basic.features.device.5). */
  private negotiatedOnce: bigint | null = null;

  /**
   * A device of `type` in reset state, not yet attached to memory or a transport (see
   * {@link attach}). It offers `options.transportFeatures` plus the type's `features` (or
   * `options.deviceFeatures`); the type's `init` hook runs here, once.
   */
  constructor(type: T, options: VirtioDeviceOptions = {}) {
    this.type = type;
    this.deviceId = type.deviceId;
    this.name = options.name ?? type.name ?? `device ${type.deviceId}`;
    this.monitor = options.monitor ?? new Monitor();
    this.featureNames = type.featureNames ?? DEVICE_TYPES[type.deviceId]?.features ?? {};
    const transport = options.transportFeatures ?? DEFAULT_DEVICE_TRANSPORT_FEATURES;
    const probe = featureBitsOf(options.offerUndescribedBits ?? 0n).filter((b) => !isDescribedFeature(type.deviceId, b));
    this.offeredBits = transport | (options.deviceFeatures ?? type.features ?? 0n) | probe.reduce((m, b) => m | bit(b), 0n);
    this.config = new Uint8Array(type.configSize ?? 0);
    this.conditionalFields = type.conditionalFields ?? [];
    this.configView = new DataView(this.config.buffer);
    this.queues = [];
    this.queueMaxSize = type.queueMaxSize ?? 256;
    this.numQueues = type.numQueues;
    this.context = this.makeContext();
    type.init?.(this.context);
  }

  readonly queueMaxSize: number;
  readonly numQueues: number;
  readonly conditionalFields: readonly ConditionalConfigField[];

  /** The type's view of this device (one object for the device's life). */
  private makeContext(): DeviceContext {
    const d = this;
    return new DeviceContextOf(d, d.configView, {
      status: () => d.statusValue,
      legacy: () => d.legacy,
      synchronous: () => d.host?.synchronous === true,
      complete: (q) => d.complete(q),
      resume: (q) => {
        if (q.active && d.accepting) d.process(q);
      },
      updateConfig: (change) => d.updateConfig(change),
      violation: (clause, message, context, fatal) => d.violation(clause, message, context, fatal),
    });
  }

  /** Connects the device to guest memory and its transport. */
  attach(mem: GuestMemory, host: DeviceHost): void {
    this.mem = mem;
    this.host = host;
    // Re-attaching (a new guest memory table) keeps the ring format already negotiated.
    this.makeQueues(this.featuresFixed && hasFeature(this.driverFeatures, Feature.RING_PACKED) ? 'packed' : 'split');
  }

  /** The ring format in use: split until FEATURES_OK is accepted with VIRTIO_F_RING_PACKED. */
  get ringFormat(): RingFormat {
    return this.queues[0]?.format ?? 'split';
  }

  private makeQueues(format: RingFormat): void {
    if (this.mem === null) return; // not attached yet: attach() makes them
    const mem = this.mem;
    this.queues.length = 0;
    for (let i = 0; i < this.numQueues; i++) {
      this.queues.push(createDeviceQueue(format, mem, i, this.queueMaxSize, this.monitor, (v, fatal) => this.onViolation(v, fatal)));
    }
  }

  /** Guest memory; a DeviceError 'not-attached' before attach(). */
  get memory(): GuestMemory {
    if (this.mem === null) throw new DeviceError('not-attached', `${this.name} is not attached to a transport`);
    return this.mem;
  }

  /**
   * The status register as the device holds it, read without side effects: for hosts, logs and
   * tests. A transport forwarding the driver's read of the register calls {@link readStatus}.
   */
  get status(): number {
    return this.statusValue;
  }

  /** The status register summarised for hosts and logs: reset, initializing, live, failed or needs-reset. */
  get phase(): DevicePhase {
    const s = this.statusValue;
    if (s & Status.DEVICE_NEEDS_RESET) return 'needs-reset';
    if (s & Status.FAILED) return 'failed';
    if (s === 0) return 'reset';
    if (s & Status.DRIVER_OK) return 'live';
    return 'initializing';
  }

  /** DRIVER_OK is set and neither FAILED nor DEVICE_NEEDS_RESET: the driver may use the queues (3.1.1 step 8). */
  get live(): boolean {
    return (this.statusValue & (Status.DRIVER_OK | Status.DEVICE_NEEDS_RESET | Status.FAILED)) === Status.DRIVER_OK;
  }

  /** Live and not asked to suspend: the device may take new buffers. */
  get accepting(): boolean {
    return this.live && this.suspendState === 'running';
  }

  /** SUSPEND (2.1, 3.3): running, suspending (waiting for buffers in progress), or suspended. */
  suspendState: 'running' | 'suspending' | 'suspended' = 'running';
  private availAtSuspend: number[] = [];
  private deferredConfig: ((view: DataView) => void)[] = [];

  /** Whether a negotiated feature is on. */
  negotiated(featureBit: number): boolean {
    if (!this.featuresFixed) return false;
    if (featureBit >= 64) return hasFeature(this.driverFeatures, featureBit);
    // The first 64 bits as two numbers, remade when driverFeatures changes: the serve loop asks
    // on every notification, and a BigInt test allocates.
    if (this.featureWordsOf !== this.driverFeatures) {
      this.featureWordsOf = this.driverFeatures;
      this.featureLo = Number(BigInt.asUintN(32, this.driverFeatures));
      this.featureHi = Number(BigInt.asUintN(32, this.driverFeatures >> 32n));
    }
    return featureBit < 32 ? ((this.featureLo >>> featureBit) & 1) === 1 : ((this.featureHi >>> (featureBit - 32)) & 1) === 1;
  }

  /** Features are in effect: FEATURES_OK accepted, or (legacy interface) the driver's features accepted when written. */
  private get featuresFixed(): boolean {
    return (this.statusValue & Status.FEATURES_OK) !== 0 || this.legacyAccepted;
  }

  /** Legacy interface (3.1.2): the features the driver wrote were accepted (there is no FEATURES_OK). */
  private legacyAccepted = false;

  /** Whether the driver uses the legacy interface now (see DeviceHost.legacy). */
  private get legacy(): boolean {
    return this.host?.legacy === true;
  }

  /** Legacy interface: accepts the driver's features as written (they take effect at once). */
  private legacyAccept(): void {
    this.legacyAccepted = false;
    this.legacyAccepted = this.acceptFeatures(true);
  }
  private featureWordsOf = 0n;
  private featureLo = 0;
  private featureHi = 0;

  // ---------------------------------------------------------------- verdicts

  /** Reports a broken rule; in strict mode (or when fatal) the device needs a reset. */
  private violation(clause: string, message: string, context?: Record<string, unknown>, fatal = false): Verdict {
    const v = this.monitor.report(clause, message, context);
    this.onViolation(v, fatal);
    return v;
  }

  private onViolation(v: Verdict, fatal: boolean): void {
    if (fatal || this.monitor.shouldAct(v)) this.needsReset(`${v.clause}: ${v.message}`);
  }

  /** The reason the device last entered DEVICE_NEEDS_RESET. */
  needsResetReason = '';

  /**
   * Enters DEVICE_NEEDS_RESET (basic.status.device.2) and, when the driver is live, tells it
   * with a configuration change notification (basic.status.device.3).
   */
  needsReset(reason: string): void {
    if (this.statusValue & Status.DEVICE_NEEDS_RESET) return;
    this.needsResetReason = reason;
    this.statusValue |= Status.DEVICE_NEEDS_RESET;
    if (this.statusValue & Status.DRIVER_OK) this.host?.configChanged();
    // A device error: the rings stop moving, so a transport whose driver would otherwise wait
    // forever (a vhost-user front-end) must be told too (2.1.2).
    this.host?.deviceError?.(reason);
  }

  // ---------------------------------------------------------------- status

  /**
   * The driver reads the status register (a transport forwards that read here). Not a plain
   * getter: on a synchronous transport each driver action is also where the device judges what
   * the driver did not do (a missing notification), so a read from anyone but the driver
   * belongs to {@link status}.
   */
  readStatus(): number {
    this.auditDriver();
    const st = this.statusValue;
    // basic.reset.driver.1: the driver has now looked. The core presents 0 from the reset on;
    // a device that shows anything else broke basic.reset.device.1 and cannot judge what the
    // driver does next.
    this.resetUnread = false;
    // init.suspend.driver.2 / .6: the driver has now seen the suspend (or the resume) done.
    if (this.suspendUnverified && st & Status.SUSPEND && !(st & Status.DRIVER_OK)) this.suspendUnverified = false;
    if (this.resumeUnverified && !(st & Status.SUSPEND) && st & Status.DRIVER_OK) this.resumeUnverified = false;
    return st;
  }

  /**
   * The driver set SUSPEND and has not read the status since the device presented SUSPEND = 1,
   * DRIVER_OK = 0 (init.suspend.driver.2: it must verify the suspend by re-reading it).
   */
  private suspendUnverified = false;
  /**
   * The driver resumed (DRIVER_OK) and has not read the status since the device presented
   * SUSPEND = 0, DRIVER_OK = 1 (init.suspend.driver.6: it must wait for that before normal
   * operation).
   */
  private resumeUnverified = false;

  /** The driver wrote 0 to the status and has not read the status since (basic.reset.driver.1). */
  private resetUnread = false;

  /**
   * basic.reset.driver.1 (2.4.2): the driver should consider its reset complete only when it
   * reads the status as 0; any other action first (a status, feature, configuration or queue
   * write) goes on without that. A SHOULD: a warning, once per reset.
   */
  private beforeResetRead(what: string): void {
    if (!this.resetUnread) return;
    this.resetUnread = false;
    this.violation('basic.reset.driver.1', `driver ${what} after writing 0 to the status without reading the status back as 0 first`, {});
  }

  /** @deprecated The driver's read of the status register: use {@link readStatus}; a host's look at it is {@link status}. */
  getStatus(): number {
    return this.readStatus();
  }

  /** The driver writes the status register. */
  setStatus(value: number): void {
    this.auditDriver();
    value &= 0xff;
    if (value === 0) {
      this.spuriousSent = false;
      this.reset();
      // basic.reset.driver.1: watched where the core sees the driver's status reads (loopback,
      // mmio, pci's legacy interface). Not over vhost-user: the front-end owns the status and
      // resets the back-end by SET_STATUS 0 / GET_VRING_BASE, which call reset(), not this.
      this.resetUnread = this.host?.checksResetReadBack !== true;
      return;
    }
    this.beforeResetRead('wrote the status');
    const old = this.statusValue;
    if (this.spuriousSent) {
      this.spuriousSent = false;
      if (value & Status.FAILED && !(old & Status.FAILED)) {
        // split.used-buffer-notif-suppr.driver.5: giving up is the driver's answer to a
        // notification that brought nothing new. FAILED is taken as always.
        this.violation('split.used-buffer-notif-suppr.driver.5', 'driver set FAILED as its next step after a used-buffer notification with no new used buffers (it must tolerate one)', { value });
      }
    }
    const driverBits = Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK | Status.FAILED;
    if (old & Status.FAILED) {
      if (!(value & Status.FAILED)) {
        this.violation('basic.status.driver.3', `driver cleared FAILED to re-initialize without a reset (status ${statusNames(old)} -> ${statusNames(value)})`, { old, value });
        return;
      }
      if (value & ~old & driverBits) {
        this.violation('init.sequence.driver.6', `driver went on initializing after setting FAILED (status ${statusNames(old)} -> ${statusNames(value)})`, { old, value });
        return;
      }
    }
    if (!(value & Status.FAILED)) this.afterRefusal('wrote the status without FAILED');
    if (value & Status.SUSPEND && !(old & Status.SUSPEND)) {
      if (!(old & Status.DRIVER_OK) || !this.negotiated(Feature.SUSPEND)) {
        this.violation('init.suspend.driver.1', `driver set SUSPEND ${old & Status.DRIVER_OK ? 'without negotiating VIRTIO_F_SUSPEND' : 'before DRIVER_OK'}`, { old, value });
        value &= ~Status.SUSPEND; // init.suspend.device.1: ignored until the device is initialized
        if (value === (old & 0xff & ~Status.DEVICE_NEEDS_RESET)) return;
      } else {
        if (old & ~value & driverBits) {
          this.violation('basic.status.driver.2', `driver cleared status bits ${statusNames(old & ~value & driverBits)} while setting SUSPEND`, { old, value });
          if (this.monitor.strict) return;
        }
        this.suspendUnverified = true;
        this.beginSuspend();
        return;
      }
    }
    if (old & Status.SUSPEND) {
      if (!(value & Status.SUSPEND)) {
        this.violation('basic.status.driver.2', `driver cleared SUSPEND instead of setting DRIVER_OK to resume (status ${statusNames(old)} -> ${statusNames(value)})`, { old, value });
        return;
      }
      if (value & Status.DRIVER_OK && this.suspendUnverified) {
        // init.suspend.driver.2: resuming a suspend the driver never saw completed.
        this.violation('init.suspend.driver.2', `driver set DRIVER_OK to resume without having read the status since it set SUSPEND (it must verify SUSPEND = 1, DRIVER_OK = 0)`, { old, value });
        this.suspendUnverified = false;
        if (this.monitor.strict) return;
      }
      if (this.suspendState === 'suspended' && value & Status.DRIVER_OK) this.resume();
      return; // nothing else changes while suspending or suspended
    }
    const cleared = old & ~value & driverBits;
    if (cleared) {
      this.violation('basic.status.driver.2', `driver cleared status bits ${statusNames(cleared)} (status ${statusNames(old)} -> ${statusNames(value)})`, { old, value });
      if (this.monitor.strict) return;
    }
    const added = value & ~old & driverBits;
    if (this.outOfOrder(old, value, added) && this.monitor.strict) return;
    let next = value & driverBits;
    if (added & Status.FEATURES_OK) {
      if (!this.acceptFeatures()) {
        next &= ~Status.FEATURES_OK; // basic.features.device.3
        this.featuresRefused = true;
      }
    }
    if (added & Status.FAILED) this.onFailed();
    // Legacy (3.1.2): a driver that accepted no features never wrote them; DRIVER_OK fixes them.
    if (added & Status.DRIVER_OK && this.legacy && !this.legacyAccepted) this.legacyAccept();
    // DEVICE_NEEDS_RESET is the device's own bit: it survives driver writes (and may have just been set).
    this.statusValue = next | (this.statusValue & Status.DEVICE_NEEDS_RESET);
    if (added & Status.DRIVER_OK && (next & Status.FEATURES_OK || this.legacyAccepted) && !(next & Status.FAILED)) this.goLive();
  }

  /**
   * init.sequence.driver.1: each status bit after the ones before it, one step per write.
   * Reports the first step out of order; true when there was one.
   */
  private outOfOrder(old: number, value: number, added: number): boolean {
    const steps: [number, number, string][] = [
      [Status.DRIVER, Status.ACKNOWLEDGE, 'DRIVER before ACKNOWLEDGE'],
      [Status.FEATURES_OK, Status.DRIVER, 'FEATURES_OK before DRIVER'],
    ];
    let what: string | undefined;
    for (const [bitSet, needs, step] of steps) {
      if (added & bitSet && !(value & needs)) {
        what = step;
        break;
      }
    }
    if (what === undefined && added & Status.DRIVER_OK && !(old & Status.FEATURES_OK) && !this.legacy) what = 'DRIVER_OK without FEATURES_OK having been accepted first';
    if (what === undefined) return false;
    this.violation('init.sequence.driver.1', `driver set ${what} (status ${statusNames(old)} -> ${statusNames(value)})`, { old, value });
    return true;
  }

  /**
   * Checks the driver's features when it sets FEATURES_OK (`legacy`: when a legacy driver writes
   * them; VERSION_1 and the high bits are then out of its sight). False: FEATURES_OK is refused.
   */
  private acceptFeatures(legacy = false): boolean {
    const f = this.driverFeatures;
    const unoffered = f & ~this.offered;
    if (unoffered !== 0n) {
      this.violation('basic.features.driver.1', `driver accepted features the device did not offer: ${featureNames(unoffered, this.featureNames).join(', ')}`, {
        unoffered: unoffered.toString(16),
      });
      return false;
    }
    const undescribed = featureBitsOf(f).filter((b) => !isDescribedFeature(this.deviceId, b, legacy));
    if (undescribed.length > 0) {
      // One sentence of 2.2.1, two duties: "MUST ignore" (.3) and "MUST NOT accept" (.4). On the
      // bus ignoring an offered bit shows only as not accepting it (and not failing over it:
      // .7), so an accepted undescribed bit, which the device offered (unoffered ones are .1's,
      // above), breaks both: the driver acted on a bit it had to disregard.
      this.violation('basic.features.driver.3', `driver did not disregard feature bits the device offered that the spec does not describe for this device type: ${undescribed.join(', ')}`, { bits: undescribed });
      this.violation('basic.features.driver.4', `driver accepted feature bits the spec does not describe for this device type: ${undescribed.join(', ')}`, { bits: undescribed });
      return false;
    }
    if (!legacy && !hasFeature(f, Feature.VERSION_1)) {
      // reserved.bits.driver.1: a driver must accept VERSION_1 when offered; this device is modern-only.
      this.violation('reserved.bits.driver.1', 'driver did not accept VIRTIO_F_VERSION_1, which the device offers', {});
      return false;
    }
    // A vhost-user front-end may serve a feature itself and forward only the ones that need it
    // (DeviceType.frontEndFeatures: QEMU's vhost-user-net keeps CTRL_VQ and forwards MQ).
    const unmet = unmetDependency(this.deviceId, f | (this.type.frontEndFeatures ?? 0n));
    if (unmet !== null) {
      this.violation('basic.features.driver.1', `driver accepted a feature without the feature it requires: ${unmet.description}`, {});
      if (unmet.missing.every((b) => !hasFeature(this.offered, b))) {
        // basic.features.driver.2: the requirement was not even offered; a driver that
        // validated the offer would have dropped the feature (the offer broke
        // basic.features.device.1, which the driver's own check names).
        this.violation('basic.features.driver.2', `driver accepted a feature whose requirement the device did not offer (it did not validate the offer): ${unmet.description}`, {});
      }
      return false;
    }
    if (this.type.validateFeatures !== undefined && !this.type.validateFeatures(f, this.context)) return false;
    if (!legacy && hasFeature(this.offered, Feature.RING_PACKED) && !hasFeature(f, Feature.RING_PACKED)) {
      this.violation('reserved.bits.driver.6', 'driver declined VIRTIO_F_RING_PACKED, which the device offers', {});
    }
    this.negotiatedOnce = f;
    // The ring format is fixed from here on (queues are configured after FEATURES_OK).
    const format = hasFeature(f, Feature.RING_PACKED) ? 'packed' : 'split';
    // Legacy: queues may already be configured (features written again); keep them when the format stays.
    if (!legacy || this.ringFormat !== format) this.makeQueues(format);
    this.type.featuresOk?.(f, this.context);
    return true;
  }

  /**
   * init.sequence.driver.5: after the device refused FEATURES_OK the driver's init cannot
   * succeed; it should set FAILED (or reset), not carry on.
   */
  private afterRefusal(what: string): void {
    if (!this.featuresRefused) return;
    this.featuresRefused = false;
    this.violation('init.sequence.driver.5', `the device refused FEATURES_OK and the driver ${what} instead of setting FAILED or resetting`, {});
  }

  /** What the rings need to know of the negotiated features. */
  queueFeatures(): QueueFeatures {
    return {
      eventIdx: this.negotiated(Feature.EVENT_IDX),
      indirect: this.negotiated(Feature.INDIRECT_DESC),
      inOrder: this.negotiated(Feature.IN_ORDER),
    };
  }

  private goLive(): void {
    const features = this.queueFeatures();
    for (const q of this.queues) {
      if (q.enabled && !q.active && !q.activate(features)) return;
    }
    this.type.driverOk?.(this.context);
    // The driver may have populated queues before DRIVER_OK (3.1.1 step 7): look now.
    for (const q of this.queues) if (q.active && this.accepting) this.process(q);
  }

  private onFailed(): void {
    this.type.stop?.('failed', this.context);
  }

  // ---------------------------------------------------------------- suspend (2.1, 3.3)

  private beginSuspend(): void {
    this.suspendState = 'suspending';
    this.statusValue |= Status.SUSPEND;
    this.availAtSuspend = this.queues.map((q) => q.availMark());
    this.finishSuspend();
  }

  /**
   * init.suspend.device.8: buffers in progress are used (and notified) first; only then the
   * device presents SUSPEND = 1, DRIVER_OK = 0.
   */
  private finishSuspend(): void {
    if (this.suspendState !== 'suspending' || this.work() > 0) return;
    this.suspendState = 'suspended';
    this.statusValue &= ~Status.DRIVER_OK;
  }

  /**
   * For a transport that stops rings under a running device (vhost-user GET_VRING_BASE and
   * SET_STATUS 0; pause the rings first with `queue.pause()`): true once no buffer the device
   * took is still being worked on. Every used buffer is then published (and notified), so the
   * rings show each buffer taken as used and a restart from their position loses nothing.
   */
  settled(): boolean {
    if (this.work() > 0) return false;
    for (const q of this.queues) if (q.active) this.complete(q);
    return true;
  }

  /** Buffers taken and still being worked on (the type may know better: DeviceType.inProgress). */
  private work(): number {
    if (this.type.inProgress !== undefined) return this.type.inProgress(this.context);
    let n = 0;
    for (const q of this.queues) n += q.inFlightCount;
    return n;
  }

  private resume(): void {
    for (const q of this.queues) {
      if (q.active && q.availMark() !== this.availAtSuspend[q.index]) {
        this.violation('init.suspend.driver.3', `driver made buffers available on queue ${q.index} while the device was suspended`, { queue: q.index });
        if (this.monitor.strict) return;
      }
    }
    this.suspendState = 'running';
    this.statusValue = (this.statusValue & ~Status.SUSPEND) | Status.DRIVER_OK;
    this.resumeUnverified = true;
    // init.suspend.device.5: configuration changes held back while suspended are made and told now.
    const deferred = this.deferredConfig;
    this.deferredConfig = [];
    if (deferred.length > 0) this.updateConfig((view) => deferred.forEach((change) => change(view)));
    for (const q of this.queues) if (q.active && this.accepting) this.process(q);
  }

  /** Device reset (2.4): status 0, queues to their initial state, features forgotten. */
  reset(): void {
    this.type.stop?.('reset', this.context);
    this.featuresRefused = false;
    this.legacyAccepted = false;
    this.queueNeedsSetup.length = 0;
    this.suspendState = 'running';
    this.suspendUnverified = this.resumeUnverified = false;
    this.deferredConfig = [];
    this.statusValue = 0; // basic.reset.device.1
    this.resetUnread = false;
    this.driverFeatures = 0n;
    this.needsResetReason = '';
    for (const q of this.queues) q.reset();
    this.type.reset?.(this.context);
  }

  // ---------------------------------------------------------------- features

  /** Device feature bits (readable at any time). */
  getDeviceFeatures(): bigint {
    return this.offered;
  }

  /** The driver writes the features it accepts (all words at once; transports merge words). */
  setDriverFeatures(features: bigint): void {
    this.beforeResetRead('wrote its features');
    const s = this.statusValue;
    if (s & Status.FAILED) {
      this.violation('init.sequence.driver.6', 'driver wrote features after setting FAILED', {});
      return;
    }
    this.afterRefusal('wrote its features again');
    if (this.legacy) {
      if (s & Status.DRIVER_OK) return; // legacy: the features in use stay while live
      if (!(s & Status.DRIVER)) this.violation('basic.status.driver.1', `driver wrote features without having set ACKNOWLEDGE and DRIVER (status ${statusNames(s)})`, { status: s });
      this.driverFeatures = features & 0xffffffffn; // pci.legacy-device-layout.device.4
      this.legacyAccept();
      return;
    }
    if (s & Status.FEATURES_OK) {
      if (features !== this.driverFeatures) {
        this.violation('init.sequence.driver.4', `driver changed its features after FEATURES_OK (${featureNames(features ^ this.driverFeatures, this.featureNames).join(', ')})`, {});
      }
      return; // the negotiated set stays
    }
    if (!(s & Status.DRIVER)) {
      // basic.status.driver.1: the status must show the steps done (ACKNOWLEDGE, DRIVER) before features.
      this.violation('basic.status.driver.1', `driver wrote features without having set ACKNOWLEDGE and DRIVER (status ${statusNames(s)})`, { status: s });
      if (this.monitor.strict) return;
    }
    this.driverFeatures = features;
  }

  // ---------------------------------------------------------------- configuration space

  /**
   * The driver reads `size` bytes (1, 2, 4 or 8) at `offset`. Allowed at any time, before
   * FEATURES_OK included (basic.config.device.1). Bytes beyond the space read as zero.
   */
  readConfig(offset: number, size: number): number | bigint {
    this.auditDriver();
    this.checkConditionalField(offset, size, 'read');
    this.type.configRead?.(offset, size, this.context);
    const cfg = this.config;
    if (offset < 0 || offset + size > cfg.length) {
      return size === 8 ? 0n : 0;
    }
    const v = this.configView;
    switch (size) {
      case 1:
        return v.getUint8(offset);
      case 2:
        return v.getUint16(offset, true);
      case 4:
        return v.getUint32(offset, true);
      case 8:
        return v.getBigUint64(offset, true);
      default:
        return 0;
    }
  }

  /** basic.config.driver.3: optional fields only when their feature is offered. */
  private checkConditionalField(offset: number, size: number, verb: string): void {
    for (const f of this.conditionalFields) {
      if (offset < f.offset + f.size && f.offset < offset + size && !hasFeature(this.offered, f.feature)) {
        this.violation('basic.config.driver.3', `driver ${verb} config field ${f.name}, which exists only with ${this.describeFeatures(bit(f.feature))[0]}, not offered`, {
          offset,
          size,
          field: f.name,
        });
        return;
      }
    }
  }

  /** On synchronous transports, every driver action is a point to audit missed notifications. */
  private auditDriver(): void {
    if (this.host?.synchronous === true && this.live) for (const q of this.queues) q.kickAudit(false);
  }

  /** The driver writes device configuration space. */
  writeConfig(offset: number, size: number, value: number | bigint): void {
    this.beforeResetRead('wrote configuration space');
    if (this.type.writeRegister?.(offset, size, value, this.context) === true) return;
    this.auditDriver();
    this.checkConditionalField(offset, size, 'wrote');
    const s = this.statusValue;
    if (s & Status.FAILED) {
      this.violation('init.sequence.driver.6', 'driver wrote configuration space after setting FAILED', { offset });
      return;
    }
    if (this.suspendState !== 'running') {
      // init.suspend.device.2: ignored.
      this.violation('init.suspend.driver.5', `driver wrote configuration space (offset ${offset}) while the device is suspended`, { offset, size });
      return;
    }
    if (!(s & Status.FEATURES_OK) && !this.legacyAccepted) {
      this.violation('init.sequence.driver.3', `driver wrote configuration space (offset ${offset}, ${size} bytes) before FEATURES_OK`, { offset, size, status: s });
      if (this.monitor.strict) return;
    }
    if (offset < 0 || offset + size > this.config.length || ![1, 2, 4, 8].includes(size)) return;
    this.type.configWrite?.(offset, size, value, this.context);
  }

  /** The device changes its configuration: bump the generation and tell a live driver. */
  private updateConfig(change: (view: DataView) => void): void {
    if (this.suspendState !== 'running') {
      // init.suspend.device.3 / .4: no change and no notification while suspended.
      this.deferredConfig.push(change);
      return;
    }
    change(this.configView);
    this.configGeneration = (this.configGeneration + 1) >>> 0;
    if (this.statusValue & Status.DRIVER_OK) this.notifyConfigChange();
  }

  /** Sends a configuration change notification (protected for test peers that stay silent). */
  protected notifyConfigChange(): void {
    this.host?.configChanged();
  }

  // ---------------------------------------------------------------- queues

  /** Checks that the driver may configure queues now (3.1.1 step 7; init.cleanup.driver.2). */
  private queueSetupAllowed(index: number, what: string): DeviceQueue | null {
    this.beforeResetRead(`${what} for queue ${index}`);
    const q = this.queues[index];
    if (q === undefined) return null;
    this.afterRefusal(`${what} for queue ${index}`);
    const s = this.statusValue;
    if (s & Status.FAILED) {
      this.violation('init.sequence.driver.6', `driver ${what} for queue ${index} after setting FAILED`, { queue: index });
      return null;
    }
    if (!(s & Status.FEATURES_OK) && !this.legacy) {
      this.violation('init.sequence.driver.1', `driver ${what} for queue ${index} before FEATURES_OK (status ${statusNames(s)})`, { queue: index, status: s });
      if (this.monitor.strict) return null;
    }
    if (q.enabled && s & Status.DRIVER_OK) {
      this.violation('init.cleanup.driver.2', `driver ${what} for live queue ${index} without resetting the device first`, { queue: index });
      return null;
    }
    return q;
  }

  /**
   * The driver writes queue_size for queue `index` (3.1.1 step 7). A write out of turn (before
   * FEATURES_OK, after FAILED, to a live queue) is a verdict, not an exception. The size itself
   * is checked when the queue starts at DRIVER_OK (struct.queue-config.driver.1).
   */
  setQueueSize(index: number, size: number): void {
    const q = this.queueSetupAllowed(index, 'changed the size');
    if (q !== null) q.setSize(size);
  }

  /**
   * The driver writes the guest-physical addresses of queue `index`'s descriptor area, driver
   * area and device area (queue_desc, queue_driver, queue_device; 2.6, 3.1.1 step 7). Same
   * turn rules as {@link setQueueSize}.
   */
  setQueueAddresses(index: number, desc: number, avail: number, used: number): void {
    const q = this.queueSetupAllowed(index, 'changed the ring addresses');
    if (q === null) return;
    this.queueNeedsSetup[index] = false;
    q.setAddresses({ desc, avail, used });
  }

  /**
   * The driver enables a queue (queue_enable = 1). The type hears of it (`queueEnabled`) unless
   * `announce` is false: a vhost-user ring start goes through here, but its enable is the
   * front-end's SET_VRING_ENABLE ({@link setQueueEnabled}).
   */
  enableQueue(index: number, announce = true): void {
    const q = this.queueSetupAllowed(index, 'enabled');
    if (q === null) return;
    if (this.queueNeedsSetup[index] === true) {
      this.violation('basic.vq-reenable.driver.1', `driver re-enabled queue ${index} after resetting it without configuring its rings again`, { queue: index });
      if (this.monitor.strict) return;
    }
    q.setEnabled(true);
    if (announce) this.type.queueEnabled?.(index, true, this.context);
    if (this.accepting && !q.active) {
      if (q.activate(this.queueFeatures())) this.process(q);
    }
  }

  /**
   * A transport that gates queues apart from their setup (vhost-user's SET_VRING_ENABLE)
   * enabled or disabled one: the type hears of it (`queueEnabled`). Whether the queue is
   * processed meanwhile is the transport's business.
   */
  setQueueEnabled(index: number, enabled: boolean): void {
    if (index < 0 || index >= this.queues.length) return;
    this.type.queueEnabled?.(index, enabled, this.context);
  }

  /**
   * VIRTIO_F_RING_RESET (2.6.1): the driver resets one queue. The device stops it, forgets
   * its buffers and returns its configuration to the defaults (basic.vq-reset.device.1/.2).
   */
  resetQueue(index: number): void {
    const q = this.queues[index];
    if (q === undefined || !this.negotiated(Feature.RING_RESET)) return;
    q.reset();
    this.queueNeedsSetup[index] = true;
    this.type.queueReset?.(index, this.context);
  }

  /** Queues reset on their own and not configured again yet (basic.vq-reenable.driver.1). */
  private readonly queueNeedsSetup: boolean[] = [];

  /** The driver sends an available-buffer notification for queue `index` (with NOTIFICATION_DATA: `data`). */
  notify(index: number, data?: number): void {
    this.spuriousSent = false;
    const s = this.statusValue;
    if (this.suspendState !== 'running') {
      this.violation('init.suspend.driver.4', `driver notified queue ${index} after setting SUSPEND`, { queue: index });
      return;
    }
    if (!(s & Status.DRIVER_OK)) {
      this.violation('init.sequence.driver.7', `driver notified queue ${index} before DRIVER_OK (status ${statusNames(s)})`, { queue: index, status: s });
      return;
    }
    if (this.resumeUnverified) {
      // init.suspend.driver.6: normal operation before the driver saw the device resumed.
      this.resumeUnverified = false;
      this.violation('init.suspend.driver.6', `driver notified queue ${index} after resuming without having read the status (it must wait for SUSPEND = 0, DRIVER_OK = 1)`, { queue: index });
      if (this.monitor.strict) return;
    }
    const q = this.queues[index];
    // split.avail-buffer-notif-suppr.device.5: a spurious notification is harmless.
    if (q === undefined || !q.active || !this.accepting) return;
    if (this.negotiated(Feature.NOTIFICATION_DATA)) this.checkNotificationData(q, data);
    if (this.host?.synchronous === true) {
      for (const other of this.queues) if (other !== q) other.kickAudit(false);
      q.kickAudit(true);
    }
    this.process(q);
  }

  /** VIRTIO_F_NOTIFICATION_DATA (2.9): the value names the queue and the driver's next position. */
  private checkNotificationData(q: DeviceQueue, data: number | undefined): void {
    const packed = q.format === 'packed';
    const clause = packed ? 'packed.desc-table.driver.3' : 'struct.notification-data.driver.1';
    if (data === undefined) {
      this.violation(clause, `driver notified queue ${q.index} without the data VIRTIO_F_NOTIFICATION_DATA requires`, { queue: q.index });
      return;
    }
    if ((data & 0xffff) !== q.index) {
      this.violation('struct.notification-data.driver.1', `notification data names queue ${data & 0xffff}, not ${q.index}`, { queue: q.index, data });
      return;
    }
    const problem = q.checkNotificationData(data);
    if (problem !== null) this.violation(clause, `queue ${q.index}: ${problem}`, { queue: q.index, data });
  }

  /** Runs the device type's queue handler; an internal error becomes DEVICE_NEEDS_RESET. */
  private process(q: DeviceQueue): void {
    try {
      this.type.process(q, this.context);
    } catch (err) {
      this.needsReset(`internal error on queue ${q.index}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  /**
   * Sends the driver a used-buffer notification for queue `index` with nothing new on its used
   * ring, which a device may do: a probe of the driver, which must tolerate it
   * (split.used-buffer-notif-suppr.driver.5). A driver whose next status write after it sets
   * FAILED, with nothing else done in between, did not: a verdict. Live split queues only.
   */
  notifyWithNothingNew(index: number): void {
    const q = this.queues[index];
    if (!this.live || this.host === null || q === undefined || !q.active || this.ringFormat !== 'split') return;
    this.spuriousSent = true;
    this.host.interrupt(index);
  }

  /** A notification with nothing new went out and the driver has not acted since (see notifyWithNothingNew). */
  private spuriousSent = false;

  /** Publishes used buffers and notifies the driver if it asked (2.7.10). */
  private complete(q: DeviceQueue): void {
    if (q.publish()) {
      this.spuriousSent = false;
      this.host?.interrupt(q.index);
    }
    if (this.suspendState === 'suspending') this.finishSuspend();
  }

  /** Negotiated feature names (for demos and logs). */
  describeFeatures(set: bigint): string[] {
    return featureNames(set, this.featureNames);
  }

  /** Whether the features were accepted before with FEATURES_OK. */
  get previouslyNegotiated(): bigint | null {
    return this.negotiatedOnce;
  }
}

/** What a {@link DeviceContextOf} reaches of its device beyond the device's public members. */
interface DeviceInternals {
  status(): number;
  legacy(): boolean;
  synchronous(): boolean;
  complete(q: DeviceQueue): void;
  resume(q: DeviceQueue): void;
  updateConfig(change: (config: DataView) => void): void;
  violation(clause: string, message: string, context?: Record<string, unknown>, fatal?: boolean): Verdict;
}

/**
 * The DeviceContext a VirtioDevice gives its type: a class, not an object literal, because V8
 * keeps an object literal with getters in dictionary mode, which made every `ctx.live`,
 * `ctx.accepting` and `ctx.memory` on a queue handler's hot path a hash lookup and a generic
 * getter call. Here the getters are on the prototype and the rest are fast own fields; the
 * functions stay own arrow functions, callable without `this` as before.
 */
class DeviceContextOf implements DeviceContext {
  readonly name: string;
  readonly monitor: Monitor;
  readonly queues: readonly DeviceQueue[];
  readonly config: DataView;
  readonly negotiated: (featureBit: number) => boolean;
  readonly complete: (q: DeviceQueue) => void;
  readonly resume: (q: DeviceQueue) => void;
  readonly updateConfig: (change: (config: DataView) => void) => void;
  readonly violation: (clause: string, message: string, context?: Record<string, unknown>, fatal?: boolean) => Verdict;
  readonly needsReset: (reason: string) => void;

  constructor(
    private readonly d: VirtioDevice,
    config: DataView,
    private readonly i: DeviceInternals,
  ) {
    this.name = d.name;
    this.monitor = d.monitor;
    this.queues = d.queues;
    this.config = config;
    this.negotiated = (featureBit) => d.negotiated(featureBit);
    this.complete = i.complete;
    this.resume = i.resume;
    this.updateConfig = i.updateConfig;
    this.violation = i.violation;
    this.needsReset = (reason) => d.needsReset(reason);
  }

  get memory(): GuestMemory {
    return this.d.memory;
  }
  get status(): number {
    return this.i.status();
  }
  get live(): boolean {
    return this.d.live;
  }
  get accepting(): boolean {
    return this.d.accepting;
  }
  get offered(): bigint {
    return this.d.offered;
  }
  get driverFeatures(): bigint {
    return this.d.driverFeatures;
  }
  get legacy(): boolean {
    return this.i.legacy();
  }
  get synchronous(): boolean {
    return this.i.synchronous();
  }
}
