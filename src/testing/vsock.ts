/**
 * Misbehaving vsock peers (spec 5.10), each breaking one vsock clause on purpose, for the
 * negative tests (test/negative/vsock.test.ts) and for anyone testing their own vsock device
 * or driver: a device with a reserved guest_cid, and connection-level lies a peer can tell
 * (credit it was not given, a fwd_cnt past what it received, a source CID not its own).
 *
 * Browser-safe: no Node import.
 */
import type { DeviceContext } from '../device/type.js';
import { VsockConfig } from '../spec/vsock.js';
import { VsockDeviceType, type VsockDeviceOptions } from '../devices/vsock/device.js';
import { VirtioDevice } from '../device/device.js';
import type { VsockConnection, VsockEngine } from '../vsock/engine.js';

/** A vsock device whose guest_cid holds a reserved CID (breaks vsock.receive-and-transmit.device.1). */
export class ReservedCidVsockDeviceType extends VsockDeviceType {
  /** A device type that puts `cid` (default 2, the host's) in guest_cid. */
  constructor(
    options: VsockDeviceOptions = {},
    private readonly reserved: bigint = 2n,
  ) {
    super(options);
  }

  override init(ctx: DeviceContext): void {
    super.init(ctx);
    ctx.config.setBigUint64(VsockConfig.guestCid, this.reserved, true);
  }
}

/** A device of {@link ReservedCidVsockDeviceType}. */
export function reservedCidVsockDevice(options: VsockDeviceOptions = {}, cid = 2n): VirtioDevice<ReservedCidVsockDeviceType> {
  return new VirtioDevice(new ReservedCidVsockDeviceType(options, cid), { monitor: options.monitor, ...options.core });
}

/**
 * The sender acts as if the peer had advertised `bytes` of free space: its next writes go past
 * the peer's real buf_alloc (breaks vsock.buffer-space-management.*.1 of its side).
 */
export function overrunCredit(conn: VsockConnection, bytes = 1 << 30): void {
  conn.credit(bytes, conn.txCnt);
}

/**
 * The receiver claims to have consumed `extra` bytes more than the peer sent it, and says so
 * in a CREDIT_UPDATE (breaks vsock.buffer-space-management.*.2 of its side).
 */
export function inflateFwdCnt(conn: VsockConnection, extra = 1 << 20): void {
  conn.fwdCnt = (conn.fwdCnt + extra) >>> 0;
  conn.sendCreditUpdate();
}

/** The engine sends with another source CID than its own (a driver: breaks vsock.receive-and-transmit.driver.1). */
export function spoofSourceCid(engine: VsockEngine, cid: bigint): void {
  engine.localCid = cid;
}
