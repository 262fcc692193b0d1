/**
 * What the spec says about each device type this project knows: id, name, feature bit
 * names, and which feature requires which (e.g. 5.1.3.1 "Feature bit requirements").
 * Device and driver cores use it to check basic.features.* on the other side.
 */
import { DeviceId, Feature, LEGACY_UNUSED_FEATURE_BIT } from './constants.js';
import type { FeatureNames } from './features.js';
import { BLK_FEATURES as BLK } from './blk.js';
import { CONSOLE_FEATURES as CONSOLE } from './console.js';
import { NET_FEATURES as NET } from './net.js';

/**
 * One "feature X requires feature Y" rule of a device type (e.g. 5.1.3.1): a set holding
 * `feature` must also hold every bit of `allOf` and at least one bit of `anyOf`.
 */
export interface FeatureDependency {
  /** The feature bit that has the requirement. */
  feature: number;
  /** Every one of these is needed. */
  allOf?: number[];
  /** At least one of these is needed. */
  anyOf?: number[];
}

/** What the spec says about one device type: its id (chapter 5), feature bit names and feature dependencies. */
export interface DeviceTypeInfo {
  /** Device id, as in {@link DeviceId}. */
  id: number;
  /** The spec's name for the type ('network', 'block', ...), for messages. */
  name: string;
  /** Names of the type's own feature bits (device-independent ones are in {@link COMMON_FEATURE_NAMES}). */
  features: FeatureNames;
  /** The requirements between the type's feature bits, checked by {@link unmetDependency}. */
  dependencies: FeatureDependency[];
}



const VSOCK = { STREAM: 0, SEQPACKET: 1, NO_IMPLIED_STREAM: 2 } as const;
const FS = { NOTIFICATION: 0 } as const;

function names(prefix: string, bits: Record<string, number>): FeatureNames {
  return Object.fromEntries(Object.entries(bits).map(([n, b]) => [b, `${prefix}${n}`]));
}

const n = NET;
/**
 * The device types this project knows, by device id: feature names for messages and the
 * feature dependencies a driver's accepted set and a device's offer must meet.
 */
export const DEVICE_TYPES: Readonly<Record<number, DeviceTypeInfo>> = {
  [DeviceId.NET]: {
    id: DeviceId.NET,
    name: 'network',
    features: names('VIRTIO_NET_F_', NET),
    // Spec 5.1.3.1.
    dependencies: [
      { feature: n.GUEST_TSO4, allOf: [n.GUEST_CSUM] },
      { feature: n.GUEST_TSO6, allOf: [n.GUEST_CSUM] },
      { feature: n.GUEST_ECN, anyOf: [n.GUEST_TSO4, n.GUEST_TSO6] },
      { feature: n.GUEST_UFO, allOf: [n.GUEST_CSUM] },
      { feature: n.GUEST_USO4, allOf: [n.GUEST_CSUM] },
      { feature: n.GUEST_USO6, allOf: [n.GUEST_CSUM] },
      { feature: n.GUEST_UDP_TUNNEL_GSO, allOf: [n.GUEST_TSO4, n.GUEST_TSO6, n.GUEST_USO4, n.GUEST_USO6] },
      { feature: n.GUEST_UDP_TUNNEL_GSO_CSUM, allOf: [n.GUEST_UDP_TUNNEL_GSO] },
      { feature: n.HOST_TSO4, allOf: [n.CSUM] },
      { feature: n.HOST_TSO6, allOf: [n.CSUM] },
      { feature: n.HOST_ECN, anyOf: [n.HOST_TSO4, n.HOST_TSO6] },
      { feature: n.HOST_UFO, allOf: [n.CSUM] },
      { feature: n.HOST_USO, allOf: [n.CSUM] },
      { feature: n.HOST_UDP_TUNNEL_GSO, allOf: [n.HOST_TSO4, n.HOST_TSO6, n.HOST_USO] },
      { feature: n.HOST_UDP_TUNNEL_GSO_CSUM, allOf: [n.HOST_UDP_TUNNEL_GSO] },
      { feature: n.CTRL_RX, allOf: [n.CTRL_VQ] },
      { feature: n.CTRL_VLAN, allOf: [n.CTRL_VQ] },
      { feature: n.GUEST_ANNOUNCE, allOf: [n.CTRL_VQ] },
      { feature: n.MQ, allOf: [n.CTRL_VQ] },
      { feature: n.CTRL_MAC_ADDR, allOf: [n.CTRL_VQ] },
      { feature: n.NOTF_COAL, allOf: [n.CTRL_VQ] },
      { feature: n.RSC_EXT, anyOf: [n.HOST_TSO4, n.HOST_TSO6] },
      { feature: n.RSS, allOf: [n.CTRL_VQ] },
      { feature: n.VQ_NOTF_COAL, allOf: [n.CTRL_VQ] },
      { feature: n.HASH_TUNNEL, allOf: [n.CTRL_VQ], anyOf: [n.RSS, n.HASH_REPORT] },
      { feature: n.RSS_CONTEXT, allOf: [n.CTRL_VQ, n.RSS] },
    ],
  },
  [DeviceId.BLOCK]: { id: DeviceId.BLOCK, name: 'block', features: names('VIRTIO_BLK_F_', BLK), dependencies: [] },
  [DeviceId.CONSOLE]: { id: DeviceId.CONSOLE, name: 'console', features: names('VIRTIO_CONSOLE_F_', CONSOLE), dependencies: [] },
  [DeviceId.ENTROPY]: { id: DeviceId.ENTROPY, name: 'entropy', features: {}, dependencies: [] },
  [DeviceId.SOCKET]: { id: DeviceId.SOCKET, name: 'socket', features: names('VIRTIO_VSOCK_F_', VSOCK), dependencies: [] },
  [DeviceId.FS]: { id: DeviceId.FS, name: 'file system', features: names('VIRTIO_FS_F_', FS), dependencies: [] },
};

export { NET_FEATURES } from './net.js';
export { BLK_FEATURES } from './blk.js';
export { CONSOLE_FEATURES } from './console.js';

/** Device-independent bits this spec version describes (chapter 6), legacy ones included. */
export const TRANSPORT_BITS: readonly number[] = Object.values(Feature);

/**
 * Whether `bitNo` is described by the spec for this device type (basic.features.*.4); through
 * the legacy interface (`legacy`) bit 30 is described too ("UNUSED (30)", Legacy Interface:
 * Reserved Feature Bits).
 */
export function isDescribedFeature(deviceId: number, bitNo: number, legacy = false): boolean {
  if (TRANSPORT_BITS.includes(bitNo)) return true;
  if (legacy && bitNo === LEGACY_UNUSED_FEATURE_BIT) return true;
  const info = DEVICE_TYPES[deviceId];
  return info !== undefined && info.features[bitNo] !== undefined;
}

/** A feature in a set without a feature it requires (spec e.g. 5.1.3.1). */
export interface UnmetDependency {
  /** The feature that has a requirement. */
  feature: number;
  /** The required bits not in the set. */
  missing: number[];
  /** True when any one of `missing` would do; false when every one is needed. */
  oneOf: boolean;
  /** For messages: "VIRTIO_NET_F_GUEST_TSO4 requires VIRTIO_NET_F_GUEST_CSUM". */
  description: string;
}

/** The first dependency `set` does not meet, or null when it meets them all (basic.features.*.1). */
export function unmetDependency(deviceId: number, set: bigint): UnmetDependency | null {
  const info = DEVICE_TYPES[deviceId];
  if (info === undefined) return null;
  const has = (b: number) => ((set >> BigInt(b)) & 1n) === 1n;
  const name = (b: number) => info.features[b] ?? `bit ${b}`;
  for (const d of info.dependencies) {
    if (!has(d.feature)) continue;
    const missingAll = (d.allOf ?? []).filter((b) => !has(b));
    if (missingAll.length > 0) return { feature: d.feature, missing: missingAll, oneOf: false, description: `${name(d.feature)} requires ${missingAll.map(name).join(' and ')}` };
    if (d.anyOf !== undefined && !d.anyOf.some(has)) return { feature: d.feature, missing: [...d.anyOf], oneOf: true, description: `${name(d.feature)} requires one of ${d.anyOf.map(name).join(', ')}` };
  }
  return null;
}
