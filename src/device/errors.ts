import { VirtioTsError } from '../errors.js';

/** What a {@link DeviceError} is about; stable, for callers and tests to branch on. */
export type DeviceErrorKind =
  /** Guest memory asked for before the device was attached to a transport, or an endpoint used before its device attached it. */
  | 'not-attached'
  /** The offer cannot change any more: FEATURES_OK was accepted (struct.feature-offer.device.1). */
  | 'features-locked'
  /** A device type object that keeps per-device state was given to a second VirtioDevice. */
  | 'type-in-use'
  /** Console: a port with this id is already present. */
  | 'port-exists'
  /** Console: no port with this id. */
  | 'no-such-port'
  /** Console: ports other than 0 (adding or removing any) need VIRTIO_CONSOLE_F_MULTIPORT offered. */
  | 'no-multiport'
  /** Block storage: a write to storage opened read-only. */
  | 'read-only'
  /** Block storage: the underlying I/O failed or made no progress. */
  | 'storage-io'
  /** Block storage: the file or device is smaller than one 512-byte sector. */
  | 'storage-too-small'
  /** A device option out of its range (a net device's mtu, queue pairs or MAC address). */
  | 'bad-option';

/**
 * The one error class of the device layers (src/device and src/devices/<type>). A peer never
 * causes one: what a driver does wrong is a verdict of the monitor, never an exception. These
 * are what the host side (the VMM, a test, a storage adapter) meets when it asks a device for
 * something it cannot do now.
 */
export class DeviceError extends VirtioTsError<DeviceErrorKind> {}
