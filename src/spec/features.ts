/**
 * Feature sets of any width (spec 2.2: feature bits beyond 64 are allowed), as bigint.
 * Negotiation is not a hot path, so bigint's cost does not matter here.
 */
import { Feature } from './constants.js';

/** Names of feature bits by bit number (`{ 0: 'VIRTIO_BLK_F_...' }`), for messages and listings. */
export type FeatureNames = Readonly<Record<number, string>>;

/** Names of the device-independent bits (spec 6). */
export const COMMON_FEATURE_NAMES: FeatureNames = Object.fromEntries(
  Object.entries(Feature).map(([name, bit]) => [bit, `VIRTIO_F_${name}`]),
);

/** The feature set holding only bit `n`; OR several to build an offer (`bit(a) | bit(b)`). */
export function bit(n: number): bigint {
  return 1n << BigInt(n);
}

/** Whether bit `n` is set in the feature set `set`. */
export function hasFeature(set: bigint, n: number): boolean {
  return ((set >> BigInt(n)) & 1n) === 1n;
}

/** The numbers of the bits set in `set`, lowest first. */
export function featureBits(set: bigint): number[] {
  const bits: number[] = [];
  for (let i = 0; set >> BigInt(i) !== 0n; i++) if (hasFeature(set, i)) bits.push(i);
  return bits;
}

/** Feature set as names (`VIRTIO_F_VERSION_1`), unknown bits as `bit 57`. */
export function featureNames(set: bigint, deviceNames: FeatureNames = {}): string[] {
  return featureBits(set).map((b) => deviceNames[b] ?? COMMON_FEATURE_NAMES[b] ?? `bit ${b}`);
}

/** The 32-bit word `sel` of a feature set (transport registers select words). */
export function featureWord(set: bigint, sel: number): number {
  return Number((set >> BigInt(32 * sel)) & 0xffffffffn);
}

/** `set` with word `sel` replaced by `value`. */
export function withFeatureWord(set: bigint, sel: number, value: number): bigint {
  const shift = BigInt(32 * sel);
  return (set & ~(0xffffffffn << shift)) | (BigInt(value >>> 0) << shift);
}

/** Device-independent bits this implementation understands on the split ring. */
export const TRANSPORT_FEATURES_SPLIT = bit(Feature.INDIRECT_DESC) | bit(Feature.EVENT_IDX) | bit(Feature.VERSION_1);

/** Bits 24..41 (and 43) are device-independent (spec 6); device types use 0..23 and 50..127. */
export function isDeviceIndependentBit(n: number): boolean {
  return (n >= 24 && n <= 49);
}
