/** MAC addresses as text and at random (one home for the net device, NetDriver and the CLI). */

/** "52:54:00:12:34:56" (or with dashes) as 6 bytes, or null when it is not one. */
export function parseMac(s: string): Uint8Array | null {
  const m = /^([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})$/i.exec(s);
  return m === null ? null : Uint8Array.from(m.slice(1), (h) => parseInt(h, 16));
}

/** The first 6 bytes as "52:54:00:12:34:56". */
export function formatMac(mac: Uint8Array | readonly number[]): string {
  return Array.from(mac.slice(0, 6), (b) => b.toString(16).padStart(2, '0')).join(':');
}

/**
 * A random locally administered unicast address: bit 1 of the first byte set, bit 0 clear
 * (what a driver without VIRTIO_NET_F_MAC should pick, net.device-config-layout.driver.4).
 */
export function randomMac(): Uint8Array {
  const mac = new Uint8Array(6);
  globalThis.crypto.getRandomValues(mac);
  mac[0] = (mac[0] & 0xfc) | 0x02;
  return mac;
}
