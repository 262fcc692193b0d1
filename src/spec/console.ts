/**
 * virtio-console on the wire (spec 5.3): feature bits, config-space layout, control messages
 * and the queue numbering of multiport devices. Shared by the device and the driver.
 */

/** VIRTIO_CONSOLE_F_* feature bit numbers (5.3.3). */
export const CONSOLE_FEATURES = { SIZE: 0, MULTIPORT: 1, EMERG_WRITE: 2 } as const;

/** Byte offsets in struct virtio_console_config (5.3.4). */
export const ConsoleConfig = { cols: 0, rows: 2, maxNrPorts: 4, emergWr: 8, size: 12 } as const;

/** virtio_console_control.event values (5.3.6.2). */
export const ConsoleEvent = {
  DEVICE_READY: 0,
  DEVICE_ADD: 1,
  DEVICE_REMOVE: 2,
  PORT_READY: 3,
  CONSOLE_PORT: 4,
  RESIZE: 5,
  PORT_OPEN: 6,
  PORT_NAME: 7,
} as const;

const EVENT_NAMES: Readonly<Record<number, string>> = Object.fromEntries(Object.entries(ConsoleEvent).map(([n, v]) => [v, n]));

/** Name of a control event, for messages. */
export function consoleEventName(event: number): string {
  return EVENT_NAMES[event] ?? `event ${event}`;
}

/** struct virtio_console_control: le32 id, le16 event, le16 value. */
export const CONTROL_HEADER_SIZE = 8;
export const CONTROL_RECEIVEQ = 2;
export const CONTROL_TRANSMITQ = 3;

/** Queue index of port `port`'s receiveq (multiport numbering; port 0 is queue 0 either way). */
export function receiveQueueOf(port: number): number {
  return port === 0 ? 0 : 2 * port + 2;
}

/** Queue index of port `port`'s transmitq. */
export function transmitQueueOf(port: number): number {
  return receiveQueueOf(port) + 1;
}

export type ConsoleQueueRole = { kind: 'receive' | 'transmit'; port: number } | { kind: 'control-receive' | 'control-transmit' };

/** What queue `index` is for, with MULTIPORT negotiated or not; null for a queue that does not exist. */
export function consoleQueueRole(index: number, multiport: boolean): ConsoleQueueRole | null {
  if (index === 0) return { kind: 'receive', port: 0 };
  if (index === 1) return { kind: 'transmit', port: 0 };
  if (!multiport) return null;
  if (index === CONTROL_RECEIVEQ) return { kind: 'control-receive' };
  if (index === CONTROL_TRANSMITQ) return { kind: 'control-transmit' };
  return { kind: index % 2 === 0 ? 'receive' : 'transmit', port: (index - 2) >> 1 };
}

/** Encodes a control message: header, then `payload` (PORT_NAME's name, RESIZE's size). */
export function encodeControl(id: number, event: number, value: number, payload?: Uint8Array): Uint8Array {
  const out = new Uint8Array(CONTROL_HEADER_SIZE + (payload?.length ?? 0));
  const v = new DataView(out.buffer);
  v.setUint32(0, id >>> 0, true);
  v.setUint16(4, event, true);
  v.setUint16(6, value, true);
  if (payload !== undefined) out.set(payload, CONTROL_HEADER_SIZE);
  return out;
}

/** struct virtio_console_resize: le16 cols, le16 rows. */
export function encodeResize(cols: number, rows: number): Uint8Array {
  const out = new Uint8Array(4);
  const v = new DataView(out.buffer);
  v.setUint16(0, cols, true);
  v.setUint16(2, rows, true);
  return out;
}

/** A console's size in characters: config space cols/rows (VIRTIO_CONSOLE_F_SIZE, 5.3.4) or a RESIZE control message (5.3.6.2). */
export interface ConsoleSize {
  cols: number;
  rows: number;
}
