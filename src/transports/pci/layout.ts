/**
 * Numbers of virtio over PCI (spec 4.1): configuration space header offsets, the virtio
 * capability types and their fields, the common configuration structure and the legacy I/O
 * layout of transitional devices.
 *
 * @packageDocumentation
 */

/** PCI Vendor ID of every virtio device (pci.device-discovery.device.1). */
export const VIRTIO_PCI_VENDOR = 0x1af4;
/** Modern PCI Device IDs are 0x1040 + the virtio device id (pci.device-discovery.device.2). */
export const VIRTIO_PCI_MODERN_BASE = 0x1040;
/** The queue_msix_vector / config_msix_vector value meaning "no vector" (4.1.5.1.2). */
export const VIRTIO_MSI_NO_VECTOR = 0xffff;

/** Transitional PCI Device IDs (4.1.2), by virtio device id. */
export const TRANSITIONAL_DEVICE_IDS: Readonly<Record<number, number>> = { 1: 0x1000, 2: 0x1001, 5: 0x1002, 3: 0x1003, 8: 0x1004, 4: 0x1005, 9: 0x1009 };

/** The virtio device id a transitional PCI Device ID stands for (4.1.2), or undefined for an id the table does not list. */
export function transitionalType(pciDeviceId: number): number | undefined {
  for (const [type, id] of Object.entries(TRANSITIONAL_DEVICE_IDS)) if (id === pciDeviceId) return Number(type);
  return undefined;
}

/** Offsets in the PCI configuration space header (type 0). */
export const PciCfg = {
  VendorId: 0x00,
  DeviceId: 0x02,
  Command: 0x04,
  Status: 0x06,
  Revision: 0x08,
  ClassProg: 0x09,
  HeaderType: 0x0e,
  Bar0: 0x10,
  SubsystemVendorId: 0x2c,
  SubsystemId: 0x2e,
  CapabilitiesPointer: 0x34,
  InterruptLine: 0x3c,
  InterruptPin: 0x3d,
} as const;

/** Command register bits the model implements. */
export const PciCommand = { Io: 1, Memory: 2, BusMaster: 4, IntxDisable: 0x400 } as const;
/** Status register bits: bit 3 the INTx status, bit 4 "has a capability list". */
export const PciStatus = { Interrupt: 0x08, CapList: 0x10 } as const;

/** PCI capability ids used here. */
export const PciCapId = { Vendor: 0x09, MsiX: 0x11 } as const;

/** cfg_type of a virtio structure capability (4.1.4). */
export const VirtioPciCap = { Common: 1, Notify: 2, Isr: 3, Device: 4, PciCfg: 5, SharedMemory: 8, Vendor: 9 } as const;

/** Offsets inside struct virtio_pci_cap. */
export const CapField = { Vndr: 0, Next: 1, Len: 2, CfgType: 3, Bar: 4, Id: 5, Offset: 8, Length: 12, NotifyMultiplier: 16, PciCfgData: 16 } as const;

/** Offsets inside struct virtio_pci_common_cfg (4.1.4.3), and their widths. */
export const CommonCfg = {
  DeviceFeatureSelect: 0x00,
  DeviceFeature: 0x04,
  DriverFeatureSelect: 0x08,
  DriverFeature: 0x0c,
  ConfigMsixVector: 0x10,
  NumQueues: 0x12,
  DeviceStatus: 0x14,
  ConfigGeneration: 0x15,
  QueueSelect: 0x16,
  QueueSize: 0x18,
  QueueMsixVector: 0x1a,
  QueueEnable: 0x1c,
  QueueNotifyOff: 0x1e,
  QueueDesc: 0x20,
  QueueDriver: 0x28,
  QueueDevice: 0x30,
  QueueNotifConfigData: 0x38,
  QueueReset: 0x3a,
  AdminQueueIndex: 0x3c,
  AdminQueueNum: 0x3e,
} as const;

/** The size of the common configuration structure. */
export const COMMON_CFG_SIZE = 0x40;

/** Each common configuration field: offset, natural width, whether the driver may write it. */
export const COMMON_FIELDS: readonly { offset: number; size: 1 | 2 | 4 | 8; name: string; writable: boolean }[] = [
  { offset: 0x00, size: 4, name: 'device_feature_select', writable: true },
  { offset: 0x04, size: 4, name: 'device_feature', writable: false },
  { offset: 0x08, size: 4, name: 'driver_feature_select', writable: true },
  { offset: 0x0c, size: 4, name: 'driver_feature', writable: true },
  { offset: 0x10, size: 2, name: 'config_msix_vector', writable: true },
  { offset: 0x12, size: 2, name: 'num_queues', writable: false },
  { offset: 0x14, size: 1, name: 'device_status', writable: true },
  { offset: 0x15, size: 1, name: 'config_generation', writable: false },
  { offset: 0x16, size: 2, name: 'queue_select', writable: true },
  { offset: 0x18, size: 2, name: 'queue_size', writable: true },
  { offset: 0x1a, size: 2, name: 'queue_msix_vector', writable: true },
  { offset: 0x1c, size: 2, name: 'queue_enable', writable: true },
  { offset: 0x1e, size: 2, name: 'queue_notify_off', writable: false },
  { offset: 0x20, size: 8, name: 'queue_desc', writable: true },
  { offset: 0x28, size: 8, name: 'queue_driver', writable: true },
  { offset: 0x30, size: 8, name: 'queue_device', writable: true },
  { offset: 0x38, size: 2, name: 'queue_notif_config_data', writable: false },
  { offset: 0x3a, size: 2, name: 'queue_reset', writable: true },
  { offset: 0x3c, size: 2, name: 'admin_queue_index', writable: false },
  { offset: 0x3e, size: 2, name: 'admin_queue_num', writable: false },
];

/** The legacy I/O layout in BAR0 of a transitional device (4.1.4.8). */
export const LegacyReg = {
  HostFeatures: 0x00,
  GuestFeatures: 0x04,
  QueueAddress: 0x08,
  QueueSize: 0x0c,
  QueueSelect: 0x0e,
  QueueNotify: 0x10,
  DeviceStatus: 0x12,
  Isr: 0x13,
  /** Only while MSI-X is enabled. */
  ConfigMsixVector: 0x14,
  /** Only while MSI-X is enabled. */
  QueueMsixVector: 0x16,
} as const;

/** Device-specific configuration starts here in the legacy layout: without MSI-X, and with it enabled. */
export const LEGACY_CONFIG = { plain: 0x14, msix: 0x18 } as const;
/** Legacy queue addresses are 4096-byte page numbers; the used ring is aligned to 4096 (4.1.4.8, 2.7.2). */
export const LEGACY_PAGE = 4096;

/** ISR status bits (4.1.4.5). */
export const ISR_QUEUE = 1;
/** ISR bit 1: the device configuration changed. */
export const ISR_CONFIG = 2;
