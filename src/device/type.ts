/**
 * The contract between the device core ({@link VirtioDevice}) and one device type (block,
 * console, entropy, or your own). The core owns everything the spec says of every device:
 * status, feature negotiation, configuration space and generation, queue setup, suspend,
 * reset, and checking the driver against all of it. A device type says only what is its own:
 * its id, its feature bits and configuration layout, its queues, and what it does with the
 * buffers the driver makes available.
 *
 * Writing a device is writing a `DeviceType` (a small object or class) and handing it to the
 * core: `new VirtioDevice(myType, { monitor })`. The core calls the type's hooks as the driver
 * acts and hands it a {@link DeviceContext}: the narrow view of the core a type needs (guest
 * memory, queues, the negotiated features, config changes, verdicts). See
 * docs/write-your-own-device.md.
 */
import type { GuestMemory } from '../memory/guest-memory.js';
import type { Monitor, Verdict } from '../monitor/monitor.js';
import type { FeatureNames } from '../spec/features.js';
import type { DeviceQueue } from '../virtqueue/queue.js';

/** A device configuration field that exists only when a feature is offered (basic.config.driver.3). */
export interface ConditionalConfigField {
  name: string;
  offset: number;
  size: number;
  feature: number;
}

/**
 * One device type: what the core needs to know of it, and the hooks it calls. Only `deviceId`,
 * `numQueues` and `process` are required.
 *
 * Every hook gets the device's {@link DeviceContext} as its last argument; it is the same object
 * for the life of the device, so a type that works asynchronously (storage, a remote entropy
 * source) or has a host-side API (a disk resize, a console port added) keeps the one `init`
 * receives. A type that keeps per-device state belongs to one device; a stateless object may
 * serve many.
 *
 * Hooks run inside driver actions: they must not throw for anything a driver does (report a
 * verdict with `ctx.violation` instead). An exception from `process` is taken as an internal
 * error of the device: DEVICE_NEEDS_RESET (basic.status.device.2).
 */
export interface DeviceType {
  /** Device ID (spec 5: 1 network, 2 block, 3 console, 4 entropy, ...). */
  readonly deviceId: number;
  /** For messages and logs (default `device <id>`). */
  readonly name?: string;
  /**
   * Device-specific feature bits offered (the device-independent ones, VERSION_1, rings and
   * so on, are the core's: VirtioDeviceOptions.transportFeatures).
   */
  readonly features?: bigint;
  /** Names of the device-specific bits (default: the spec's, by deviceId). */
  readonly featureNames?: FeatureNames;
  /** Virtqueues the device has (the driver may use fewer). */
  readonly numQueues: number;
  /** Largest size the driver may give a queue (default 256). */
  readonly queueMaxSize?: number;
  /** Bytes of device configuration space (default 0); `init` writes its initial contents. */
  readonly configSize?: number;
  /** Configuration fields that exist only when their feature is offered (basic.config.driver.3). */
  readonly conditionalFields?: readonly ConditionalConfigField[];
  /**
   * Feature bits a vhost-user front-end serves itself and never forwards, though features it
   * does forward depend on them: QEMU's vhost-user-net serves the control queue (CTRL_VQ) and
   * forwards MQ, which requires CTRL_VQ (5.1.3.1). The core counts these bits as negotiated
   * when it checks the driver's feature dependencies (basic.features.driver.1); nothing else.
   * Default none.
   */
  readonly frontEndFeatures?: bigint;

  /**
   * Called once, by the VirtioDevice constructor: write the initial configuration space
   * (`ctx.config`) and keep `ctx` if the type needs it outside its hooks.
   */
  init?(ctx: DeviceContext): void;

  /**
   * The driver made buffers available on a live queue (a notification, DRIVER_OK, a queue
   * enabled, a resume): take them with `queue.pop(chain)`, read and write them with
   * ChainReader/ChainWriter over `ctx.memory`, return them with `queue.addUsed(head, len)` and
   * publish with `ctx.complete(queue)` (one used-index write and at most one notification per
   * batch). The usual loop is `queue.disableNotifications(); do { ...pop all... } while
   * (queue.enableNotifications())`. A buffer may be kept and used later (asynchronous work);
   * `ctx.resume(queue)` runs this hook again when the type can take more.
   */
  process(queue: DeviceQueue, ctx: DeviceContext): void;

  /**
   * The driver set FEATURES_OK with these features, and the core found them valid: return
   * false to refuse them anyway (FEATURES_OK stays clear). basic.features.device.2 says a
   * device SHOULD accept any valid subset it offered: refuse only what cannot be served.
   */
  validateFeatures?(features: bigint, ctx: DeviceContext): boolean;
  /** FEATURES_OK was accepted with these features (config fields that depend on them are set here). */
  featuresOk?(features: bigint, ctx: DeviceContext): void;
  /** DRIVER_OK was accepted: the device is live (queues already set up are about to be processed). */
  driverOk?(ctx: DeviceContext): void;
  /**
   * Work in progress must end: the device is being reset (`'reset'`; called before the core
   * forgets the session, so `ctx.status` and `ctx.negotiated` still show it) or the driver set
   * FAILED (`'failed'`). Answers that arrive later must be dropped, not written to guest memory
   * the driver got back (basic.reset.device.2).
   */
  stop?(reason: 'reset' | 'failed', ctx: DeviceContext): void;
  /** After a reset (status 0, queues reset, features forgotten): restore the type's initial state. */
  reset?(ctx: DeviceContext): void;
  /**
   * A transport enabled or disabled queue `index` as a whole: the driver's queue_enable on
   * PCI, MMIO and loopback (enabled only: a queue is disabled by a device or queue reset, which
   * `reset`/`queueReset` tell), or a vhost-user front-end's SET_VRING_ENABLE (either way, any
   * number of times). QEMU's vhost-user-net serves the control queue itself and enables the
   * first N queue pairs the guest set with MQ_VQ_PAIRS_SET (and disables the others): this
   * hook is how a device learns that. Called after the change; a vhost-user ring start is not
   * an enable.
   */
  queueEnabled?(index: number, enabled: boolean, ctx: DeviceContext): void;
  /** VIRTIO_F_RING_RESET: the driver reset one queue; drop what the type holds of it. */
  queueReset?(index: number, ctx: DeviceContext): void;
  /**
   * The driver reads `size` bytes of config at `offset` (before the core answers from
   * `ctx.config`): fields computed on read are updated here; reads that break a type's rule
   * are judged here.
   */
  configRead?(offset: number, size: number, ctx: DeviceContext): void;
  /**
   * The driver writes config, after the core's checks (FEATURES_OK set, not FAILED, not
   * suspended, inside the space, size 1, 2, 4 or 8): accept writes to writable fields.
   */
  configWrite?(offset: number, size: number, value: number | bigint, ctx: DeviceContext): void;
  /**
   * A config write taken before the core judges it: a register the driver may write at any
   * time, even before negotiation or after FAILED (console's emerg_wr,
   * console.device-init.device.1). Return true when taken; the core then does nothing more.
   */
  writeRegister?(offset: number, size: number, value: number | bigint, ctx: DeviceContext): boolean;
  /**
   * Buffers taken and still being worked on: a suspend (init.suspend.device.8) and a
   * vhost-user ring stop wait until this is 0. Default: every buffer the queues hold
   * (`inFlightCount`); a type that holds buffers waiting for host input (a console's receive
   * buffers) subtracts those: they are not work.
   */
  inProgress?(ctx: DeviceContext): number;
}

/**
 * What the core gives a device type: the parts of the device a type may use. Everything a
 * transport or the driver does goes through the core; this is the type's side of it.
 */
export interface DeviceContext {
  /** The device's name (for messages). */
  readonly name: string;
  /** The device's monitor: `violation` reports through it. */
  readonly monitor: Monitor;
  /** Guest memory (a DeviceError 'not-attached' before the device is attached to a transport). */
  readonly memory: GuestMemory;
  /** The device's queues, by index (the same array for the life of the device; its queues are replaced when the ring format is fixed). */
  readonly queues: readonly DeviceQueue[];
  /**
   * The device configuration space, little-endian. Write it directly in `init` and in hooks
   * that answer a driver action (featuresOk, configWrite, reset); a change the device makes on
   * its own goes through `updateConfig`, which bumps the generation and tells the driver.
   */
  readonly config: DataView;
  /** The status register as the device holds it (no audit: see VirtioDevice.status). */
  readonly status: number;
  /** DRIVER_OK, and neither FAILED nor DEVICE_NEEDS_RESET. */
  readonly live: boolean;
  /** Live and not suspending: the device may take new buffers. */
  readonly accepting: boolean;
  /** Features offered (device-specific and device-independent). */
  readonly offered: bigint;
  /** Features the driver wrote (the negotiated set once FEATURES_OK is accepted). */
  readonly driverFeatures: bigint;
  /** Whether a feature was negotiated (FEATURES_OK accepted with it). */
  negotiated(featureBit: number): boolean;
  /**
   * The driver uses the legacy interface (3.1.2: features take effect as written, there is no
   * FEATURES_OK step): clauses about FEATURES_OK do not apply to it.
   */
  readonly legacy: boolean;
  /**
   * True on a transport that delivers each driver action completely before the next (sync
   * loopback): only then may a type judge what the driver did NOT do.
   */
  readonly synchronous: boolean;

  /** Publishes the used buffers of a queue and notifies the driver if it asked (2.7.10, 2.8.21). */
  complete(queue: DeviceQueue): void;
  /** Runs the type's `process` for a queue again, when it is active and the device accepting (after work that held it back finished). */
  resume(queue: DeviceQueue): void;
  /** The device changes its configuration: `change` runs now (or at resume when suspended), the generation is bumped and a live driver notified. */
  updateConfig(change: (config: DataView) => void): void;
  /**
   * Reports a rule the driver broke, by its clause id in the catalogue (such as
   * blk.device-operation.driver.2). In strict mode, or when `fatal` (the request cannot be
   * served at all), the device enters DEVICE_NEEDS_RESET.
   */
  violation(clause: string, message: string, context?: Record<string, unknown>, fatal?: boolean): Verdict;
  /** A device error: DEVICE_NEEDS_RESET and a configuration change notification (basic.status.device.2/.3). */
  needsReset(reason: string): void;
}
