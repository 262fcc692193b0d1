/**
 * The virtio-mmio register map (spec 4.2.2, and 4.2.4 for the legacy version 1 registers):
 * byte offsets from the device's base address. All control registers are 32 bits wide; the
 * device-specific configuration space starts at {@link MmioReg.Config}.
 *
 * @packageDocumentation
 */

/** "virt" in little-endian ASCII: the value of MagicValue (mmio.device-register-layout.device.1). */
export const MMIO_MAGIC = 0x74726976;

/** Register offsets. R: read-only, W: write-only, RW: both (4.2.2's direction column). */
export const MmioReg = {
  /** R: {@link MMIO_MAGIC}. */
  MagicValue: 0x000,
  /** R: 2 (modern) or 1 (legacy). */
  Version: 0x004,
  /** R: the virtio device id (0: no device here). */
  DeviceID: 0x008,
  /** R: the subsystem vendor id. */
  VendorID: 0x00c,
  /** R: 32 feature bits, from bit DeviceFeaturesSel * 32. */
  DeviceFeatures: 0x010,
  /** W: which 32 bits DeviceFeatures shows. */
  DeviceFeaturesSel: 0x014,
  /** W: 32 feature bits the driver accepts, at bit DriverFeaturesSel * 32. */
  DriverFeatures: 0x020,
  /** W: which 32 bits DriverFeatures writes. */
  DriverFeaturesSel: 0x024,
  /** W, legacy only: the guest's page size, the unit of QueuePFN. */
  GuestPageSize: 0x028,
  /** W: the queue the Queue* registers address. */
  QueueSel: 0x030,
  /** R: the largest size the selected queue takes (0: no such queue). */
  QueueSizeMax: 0x034,
  /** W: the selected queue's size. */
  QueueSize: 0x038,
  /** W, legacy only: the used ring's alignment. */
  QueueAlign: 0x03c,
  /** RW, legacy only: the selected queue's guest page number (0: not in use). */
  QueuePFN: 0x040,
  /** RW: the selected queue is ready (1) or not (0). */
  QueueReady: 0x044,
  /** W: available-buffer notification (the queue index, or the 2.9 value with NOTIFICATION_DATA). */
  QueueNotify: 0x050,
  /** R: bit 0 used buffer, bit 1 configuration change. */
  InterruptStatus: 0x060,
  /** W: the InterruptStatus bits the driver handled. */
  InterruptACK: 0x064,
  /** RW: the device status field (0 resets). */
  Status: 0x070,
  /** W: the selected queue's descriptor area, low 32 bits. */
  QueueDescLow: 0x080,
  /** W: the descriptor area, high 32 bits. */
  QueueDescHigh: 0x084,
  /** W: the driver area (available ring), low 32 bits. */
  QueueDriverLow: 0x090,
  /** W: the driver area, high 32 bits. */
  QueueDriverHigh: 0x094,
  /** W: the device area (used ring), low 32 bits. */
  QueueDeviceLow: 0x0a0,
  /** W: the device area, high 32 bits. */
  QueueDeviceHigh: 0x0a4,
  /** W: the shared memory region the SHM* registers address. */
  SHMSel: 0x0ac,
  /** R: the selected region's length, low 32 bits (all ones: no such region). */
  SHMLenLow: 0x0b0,
  /** R: the region's length, high 32 bits. */
  SHMLenHigh: 0x0b4,
  /** R: the region's base address, low 32 bits. */
  SHMBaseLow: 0x0b8,
  /** R: the region's base address, high 32 bits. */
  SHMBaseHigh: 0x0bc,
  /** RW: VIRTIO_F_RING_RESET: 1 resets the selected queue; reads 1 while the reset runs. */
  QueueReset: 0x0c0,
  /** R: config_generation (2.5). */
  ConfigGeneration: 0x0fc,
  /** RW: the device-specific configuration space starts here. */
  Config: 0x100,
} as const;

/** InterruptStatus bit 0: the device used a buffer on at least one queue. */
export const MMIO_INT_VRING = 1;
/** InterruptStatus bit 1: the device configuration changed. */
export const MMIO_INT_CONFIG = 2;

/** Who may read and write a register, by version ('rw', 'r', 'w'); absent: not a register of that version. */
export function mmioRegisterAccess(offset: number, version: 1 | 2): 'r' | 'w' | 'rw' | undefined {
  const R = MmioReg;
  switch (offset) {
    case R.MagicValue:
    case R.Version:
    case R.DeviceID:
    case R.VendorID:
    case R.DeviceFeatures:
    case R.QueueSizeMax:
    case R.InterruptStatus:
      return 'r';
    case R.DeviceFeaturesSel:
    case R.DriverFeatures:
    case R.DriverFeaturesSel:
    case R.QueueSel:
    case R.QueueSize:
    case R.QueueNotify:
    case R.InterruptACK:
      return 'w';
    case R.Status:
      return 'rw';
    case R.GuestPageSize:
    case R.QueueAlign:
      return version === 1 ? 'w' : undefined;
    case R.QueuePFN:
      return version === 1 ? 'rw' : undefined;
    case R.QueueReady:
    case R.QueueReset:
      return version === 2 ? 'rw' : undefined;
    case R.QueueDescLow:
    case R.QueueDescHigh:
    case R.QueueDriverLow:
    case R.QueueDriverHigh:
    case R.QueueDeviceLow:
    case R.QueueDeviceHigh:
    case R.SHMSel:
      return version === 2 ? 'w' : undefined;
    case R.SHMLenLow:
    case R.SHMLenHigh:
    case R.SHMBaseLow:
    case R.SHMBaseHigh:
    case R.ConfigGeneration:
      return version === 2 ? 'r' : undefined;
    default:
      return undefined;
  }
}
