// The pci device clauses PciTransport judges (the driver observes the device): one broken
// device per case, breaking exactly that clause, and the verdict naming it on the driver's
// monitor. The unmodified device, driven the same ways, gives no verdict.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Feature, Status } from '../../src/spec/constants.js';
import { bit, TRANSPORT_FEATURES_SPLIT } from '../../src/spec/features.js';
import { BlkDriver } from '../../src/drivers/blk.js';
import type { PciDeviceOptions } from '../../src/transports/pci/device.js';
import type { PciTransport } from '../../src/transports/pci/driver.js';
import { CapField, CommonCfg as C, PciCfg, PciStatus, VIRTIO_MSI_NO_VECTOR, VirtioPciCap } from '../../src/transports/pci/layout.js';
import { ACCEPT, bringUp, openPatched, rings, type Kind, type Patcher } from './pci-device-harness.js';

const NO = VIRTIO_MSI_NO_VECTOR;
const ND = bit(Feature.NOTIFICATION_DATA);

interface Case {
  /** The clause the device breaks. */
  clause: string;
  /** What the device does wrong (the test title). */
  how: string;
  kind?: Kind;
  pci?: PciDeviceOptions;
  numQueues?: number;
  withhold?: bigint;
  patch: (p: Patcher) => void;
  /** What the driver does on it (default: nothing after open). */
  act?: (t: PciTransport, x: Awaited<ReturnType<typeof openPatched>>) => Promise<void>;
  /** The error kind open() or act() refuses the device with. */
  refuses?: string;
  /** Other clauses the same observation also breaks (the same rule stated twice). */
  also?: string[];
}

/** A common configuration field read as `value(v)` (for the queue selected, when given). */
const commonRead = (p: Patcher, field: number, value: (v: number) => number | undefined) =>
  p.onRead((bar, offset, _size, v) => (p.isCommon(bar, offset, field) ? value(v) : undefined));

/** Whether the driver wrote queue_enable yet: a patch's switch. */
function enableWritten(p: Patcher): () => boolean {
  let written = false;
  p.onWrite((bar, offset) => {
    if (p.isCommon(bar, offset, C.QueueEnable)) written = true;
    return undefined;
  });
  return () => written;
}

/** The initialization, then close() (which unmaps the vectors). */
const upAndClose = async (t: PciTransport) => {
  await bringUp(t);
  await t.close();
};

const CASES: Case[] = [
  // ---- identification (4.1.2)
  { clause: 'pci.device-discovery.device.1', how: 'the virtio structures behind a vendor id other than 0x1af4', patch: (p) => p.setConfig(PciCfg.VendorId, 2, 0x8086), refuses: 'not-virtio' },
  { clause: 'pci.device-discovery.device.2', how: 'the virtio structures behind device id 0x1100', patch: (p) => p.setConfig(PciCfg.DeviceId, 2, 0x1100), refuses: 'not-virtio' },
  { clause: 'pci.device-discovery.device.2', how: 'a transitional-range device id no type has (0x1006)', kind: 'transitional-modern', patch: (p) => p.setConfig(PciCfg.DeviceId, 2, 0x1006) },
  { clause: 'pci.device-discovery.device.4', how: 'a transitional id on a function whose BAR0 is no I/O BAR (no legacy interface)', kind: 'transitional-modern', patch: (p) => p.onConfigRead((o, s, v) => (o === PciCfg.Bar0 && s === 4 ? v & ~1 : undefined)) },
  { clause: 'pci.device-discovery.device.5', how: 'a modern-only device with revision 0', patch: (p) => p.setConfig(PciCfg.Revision, 1, 0) },
  { clause: 'pci.device-discovery.device.6', how: 'a modern-only device with subsystem device id 0x10', patch: (p) => p.setConfig(PciCfg.SubsystemId, 2, 0x10) },
  { clause: 'pci.legacy-device-discovery.device.1', how: 'a transitional device with revision 1', kind: 'transitional-legacy', patch: (p) => p.setConfig(PciCfg.Revision, 1, 1) },
  { clause: 'pci.legacy-device-discovery.device.2', how: 'transitional id 0x1001 (block) with subsystem device id 4', kind: 'transitional-legacy', patch: (p) => p.setConfig(PciCfg.SubsystemId, 2, 4) },
  {
    clause: 'pci.legacy-device-discovery.device.3',
    how: 'a legacy interface (I/O BAR0, no capabilities) behind modern id 0x1042',
    patch: (p) => {
      p.setConfig(PciCfg.Status, 2, p.model.configRead(PciCfg.Status, 2) & ~PciStatus.CapList);
      p.setConfig(PciCfg.Bar0, 4, 0xc001);
    },
    refuses: 'no-interface',
  },
  // ---- capabilities (4.1.4)
  { clause: 'pci.virtio-struct-pci-capabilities.device.1', how: 'a common configuration capability with cap_len 8', patch: (p) => p.setConfig(p.cap(VirtioPciCap.Common).at + CapField.Len, 1, 8) },
  { clause: 'pci.common-config-struct-layout.device.1', how: 'the common configuration at an offset 2 bytes past a 4-byte boundary', patch: (p) => p.shift(VirtioPciCap.Common, 2) },
  { clause: 'pci.common-config-struct-layout.device.2', how: 'no common configuration capability', patch: (p) => p.setConfig(p.cap(VirtioPciCap.Common).at + CapField.CfgType, 1, 7), refuses: 'no-interface' },
  { clause: 'pci.notif-cap.device.1', how: 'no notification capability', patch: (p) => p.setConfig(p.cap(VirtioPciCap.Notify).at + CapField.CfgType, 1, 7), refuses: 'no-interface' },
  { clause: 'pci.isr-status-cap.device.1', how: 'no ISR status capability', patch: (p) => p.setConfig(p.cap(VirtioPciCap.Isr).at + CapField.CfgType, 1, 7), refuses: 'no-interface' },
  { clause: 'pci.device-specific-config.device.1', how: 'the device configuration at an offset 2 bytes past a 4-byte boundary', patch: (p) => p.shift(VirtioPciCap.Device, 2) },
  { clause: 'pci.config-access-cap.device.1', how: 'no PCI configuration access capability', patch: (p) => p.setConfig(p.cap(VirtioPciCap.PciCfg).at + CapField.CfgType, 1, 7) },
  {
    clause: 'pci.config-access-cap.device.2',
    how: 'pci_cfg_data writes that go nowhere',
    patch: (p) => p.onConfigWrite((o) => (o === p.cap(VirtioPciCap.PciCfg).at + CapField.PciCfgData ? true : undefined)),
  },
  {
    clause: 'pci.config-access-cap.device.3',
    how: 'pci_cfg_data reads that do not reach the BAR',
    patch: (p) => p.onConfigRead((o) => (o === p.cap(VirtioPciCap.PciCfg).at + CapField.PciCfgData ? 0xdead : undefined)),
  },
  // ---- notification capability (4.1.4.4)
  { clause: 'pci.notif-cap.device.2', how: 'the notification structure at an odd offset (no NOTIFICATION_DATA)', withhold: ND, patch: (p) => p.shift(VirtioPciCap.Notify, 1), act: async (t) => void (await t.getDeviceFeatures()) },
  { clause: 'pci.notif-cap.device.3', how: 'notify_off_multiplier 3 (no NOTIFICATION_DATA)', withhold: ND, patch: (p) => p.setConfig(p.cap(VirtioPciCap.Notify).at + CapField.NotifyMultiplier, 4, 3), act: async (t) => void (await t.getDeviceFeatures()) },
  { clause: 'pci.notif-cap.device.4', how: 'a notification capability length of 1 (no NOTIFICATION_DATA)', withhold: ND, patch: (p) => p.setConfig(p.cap(VirtioPciCap.Notify).at + CapField.Length, 4, 1), act: async (t) => void (await t.getDeviceFeatures()) },
  {
    clause: 'pci.notif-cap.device.5',
    how: 'a queue_notify_off past the notification capability (no NOTIFICATION_DATA)',
    withhold: ND,
    patch: (p) => commonRead(p, C.QueueNotifyOff, () => 100),
    act: (t) => bringUp(t),
  },
  { clause: 'pci.notif-cap.device.6', how: 'notify_off_multiplier 2 with NOTIFICATION_DATA', patch: (p) => p.setConfig(p.cap(VirtioPciCap.Notify).at + CapField.NotifyMultiplier, 4, 2), act: async (t) => void (await t.getDeviceFeatures()) },
  { clause: 'pci.notif-cap.device.7', how: 'the notification structure 2 bytes past a 4-byte boundary with NOTIFICATION_DATA', patch: (p) => p.shift(VirtioPciCap.Notify, 2), act: async (t) => void (await t.getDeviceFeatures()) },
  { clause: 'pci.notif-cap.device.8', how: 'a notification capability length of 3 with NOTIFICATION_DATA', patch: (p) => p.setConfig(p.cap(VirtioPciCap.Notify).at + CapField.Length, 4, 3), act: async (t) => void (await t.getDeviceFeatures()) },
  { clause: 'pci.notif-cap.device.9', how: 'a queue_notify_off past the notification capability with NOTIFICATION_DATA', patch: (p) => commonRead(p, C.QueueNotifyOff, () => 100), act: (t) => bringUp(t) },
  // ---- common configuration (4.1.4.3)
  {
    clause: 'pci.common-config-struct-layout.device.3',
    how: 'device_feature shows the window selected before the last select',
    patch: (p) => {
      let current = 0;
      let previous = 0;
      p.onWrite((bar, offset, _s, value) => {
        if (p.isCommon(bar, offset, C.DeviceFeatureSelect)) [previous, current] = [current, value];
        return undefined;
      });
      p.onRead((bar, offset, size) => {
        if (!p.isCommon(bar, offset, C.DeviceFeature)) return undefined;
        const sel = p.common(C.DeviceFeatureSelect);
        const m = p.model;
        // The model's own registers, behind the hooks: select the stale window, read, restore.
        modelBarWrite(m, sel.bar, sel.offset, previous);
        const v = modelBarRead(m, bar, offset, size);
        modelBarWrite(m, sel.bar, sel.offset, current);
        return v;
      });
    },
    act: async (t) => void (await t.getDeviceFeatures()),
  },
  {
    clause: 'pci.common-config-struct-layout.device.4',
    how: 'driver_feature always reads 0',
    patch: (p) => commonRead(p, C.DriverFeature, () => 0),
    act: async (t) => t.setDriverFeatures((await t.getDeviceFeatures()) & ACCEPT),
  },
  {
    clause: 'pci.common-config-struct-layout.device.6',
    how: 'device configuration that changes with config_generation unchanged',
    patch: (p) => {
      const dev = p.cap(VirtioPciCap.Device);
      let reads = 0;
      p.onRead((bar, offset, _s, v) => (bar === dev.bar && offset === dev.offset ? v + reads++ : undefined));
    },
    act: async (t) => {
      for (let i = 0; i < 2; i++) {
        await t.configGeneration();
        await t.readConfig(0, 4);
        await t.configGeneration();
      }
    },
  },
  {
    clause: 'pci.common-config-struct-layout.device.7',
    how: 'device_status ignores a write of 0',
    patch: (p) => p.onWrite((bar, offset, _s, value) => (p.isCommon(bar, offset, C.DeviceStatus) && value === 0 ? true : undefined)),
    act: async (t) => {
      await t.setStatus(Status.ACKNOWLEDGE);
      await t.setStatus(0);
    },
  },
  {
    clause: 'pci.common-config-struct-layout.device.8',
    how: 'queue_enable reads 1 after a reset',
    patch: (p) => commonRead(p, C.QueueEnable, () => 1),
    act: (t) => bringUp(t),
  },
  {
    clause: 'pci.common-config-struct-layout.device.9',
    how: 'queue_reset reads 1 after a reset (RING_RESET)',
    patch: (p) => {
      const enabled = enableWritten(p);
      commonRead(p, C.QueueReset, () => (enabled() ? undefined : 1));
    },
    act: (t) => bringUp(t),
  },
  {
    clause: 'pci.common-config-struct-layout.device.10',
    how: 'queue_reset reads 1 once the queue is enabled (RING_RESET)',
    patch: (p) => {
      const enabled = enableWritten(p);
      commonRead(p, C.QueueReset, () => (enabled() ? 1 : undefined));
    },
    act: (t) => bringUp(t),
  },
  {
    clause: 'pci.common-config-struct-layout.device.11',
    how: 'a write of 1 to queue_reset does nothing',
    patch: (p) => p.onWrite((bar, offset) => (p.isCommon(bar, offset, C.QueueReset) ? true : undefined)),
    act: async (t) => {
      await bringUp(t);
      await t.resetQueue(0);
      assert.equal(await t.queueResetPending(0), false);
    },
  },
  {
    clause: 'pci.common-config-struct-layout.device.12',
    how: 'queue_reset reads 1, 0, then 1 again while the reset goes on',
    patch: (p) => {
      const script: number[] = [];
      p.onWrite((bar, offset, _s, value) => {
        if (p.isCommon(bar, offset, C.QueueReset) && value === 1) script.push(1, 0, 1);
        return undefined;
      });
      commonRead(p, C.QueueReset, () => script.shift());
    },
    act: async (t) => {
      await bringUp(t);
      await t.resetQueue(0);
      assert.equal(await t.queueResetPending(0), true, 'a 1 after the 0: still resetting');
      assert.equal(await t.queueResetPending(0), false);
    },
  },
  {
    clause: 'pci.common-config-struct-layout.device.13',
    how: 'queue_enable still reads 1 when queue_reset says the reset is done',
    patch: (p) => {
      let resetting = false;
      const script: number[] = [];
      p.onWrite((bar, offset, _s, value) => {
        if (p.isCommon(bar, offset, C.QueueReset) && value === 1) {
          resetting = true;
          script.push(1, 1);
        }
        return undefined;
      });
      commonRead(p, C.QueueReset, () => script.shift());
      commonRead(p, C.QueueEnable, () => (resetting ? 1 : undefined));
    },
    act: async (t) => {
      await bringUp(t);
      await t.resetQueue(0);
      assert.equal(await t.queueResetPending(0), true);
      assert.equal(await t.queueResetPending(0), false);
    },
  },
  {
    clause: 'pci.common-config-struct-layout.device.14',
    how: 'queue_size 8 for the queue past num_queues',
    patch: (p) => commonRead(p, C.QueueSize, (v) => (p.selected() >= 1 ? 8 : v)),
    act: async (t) => {
      await t.getDeviceFeatures();
      await t.numQueues();
    },
  },
  {
    clause: 'pci.common-config-struct-layout.device.15',
    how: 'queue_size 100 without RING_PACKED',
    patch: (p) => commonRead(p, C.QueueSize, (v) => (p.selected() === 0 ? 100 : v)),
    act: async (t) => {
      await t.setDriverFeatures((await t.getDeviceFeatures()) & ACCEPT);
      await t.queueMaxSize(0);
    },
  },
  {
    clause: 'pci.device-layout.device.1',
    how: 'a write of the high half of queue_desc clears the low half',
    patch: (p) =>
      p.onWrite((bar, offset) => {
        if (!p.isCommon(bar, offset, C.QueueDesc + 4)) return undefined;
        const low = p.common(C.QueueDesc);
        modelBarWrite(p.model, low.bar, low.offset, 0);
        return undefined;
      }),
    act: (t) => bringUp(t),
    refuses: 'no-interface',
  },
  // ---- ISR (4.1.4.5), INTx
  {
    clause: 'pci.isr-status-cap.device.4',
    how: 'the PCI status Interrupt bit stuck at 1 (seen after a reset)',
    kind: 'modern-intx',
    patch: (p) => p.onConfigRead((o, s, v) => (o === PciCfg.Status && s === 2 ? v | PciStatus.Interrupt : undefined)),
    act: (t) => t.setStatus(0),
  },
  {
    clause: 'pci.isr-status-cap.device.4',
    how: 'an INTx with the PCI status Interrupt bit set and an ISR of 0',
    kind: 'modern-intx',
    patch: (p) => p.onConfigRead((o, s, v) => (o === PciCfg.Status && s === 2 ? v | PciStatus.Interrupt : undefined)),
    act: async (t, x) => {
      x.raise({ kind: 'intx', level: true });
      await settle();
    },
  },
  {
    clause: 'pci.isr-status-cap.device.5',
    how: 'an ISR that a read does not clear',
    kind: 'modern-intx',
    patch: (p) => {
      const isr = p.cap(VirtioPciCap.Isr);
      p.onRead((bar, offset) => (bar === isr.bar && offset === isr.offset ? 1 : undefined));
    },
    act: (t) => t.setStatus(0),
  },
  // ---- MSI-X (4.1.5.1.2)
  { clause: 'pci.msi-x-vector-config.device.1', how: 'an MSI-X table of one vector', pci: { msixVectors: 1, notifyOffMultiplier: 0 }, patch: () => undefined },
  {
    clause: 'pci.msi-x-vector-config.device.2',
    how: 'Table Size 2048 in a 4096-byte BAR',
    patch: (p) => p.onConfigRead((o, s, v) => (o === 0x40 + 2 && s === 2 ? v | 0x7ff : undefined)),
  },
  {
    clause: 'pci.msi-x-vector-config.device.4',
    how: 'vector 1 refused for queue 1 after it was accepted for queue 0',
    pci: { msixVectors: 2 },
    numQueues: 2,
    patch: (p) => p.onWrite((bar, offset, _s, value) => (p.isCommon(bar, offset, C.QueueMsixVector) && p.selected() === 1 && value !== NO ? true : undefined)),
    act: (t) => bringUp(t, 2),
    refuses: 'msix',
  },
  {
    clause: 'pci.msi-x-vector-config.device.5',
    how: 'writes of NO_VECTOR to queue_msix_vector ignored',
    patch: (p) => p.onWrite((bar, offset, _s, value) => (p.isCommon(bar, offset, C.QueueMsixVector) && value === NO ? true : undefined)),
    act: upAndClose,
  },
  {
    clause: 'pci.msi-x-vector-config.device.5',
    how: 'writes of NO_VECTOR to config_msix_vector ignored',
    patch: (p) => p.onWrite((bar, offset, _s, value) => (p.isCommon(bar, offset, C.ConfigMsixVector) && value === NO ? true : undefined)),
    act: upAndClose,
  },
  {
    clause: 'pci.used-buffer-notif.device.1',
    how: 'queue_msix_vector reads NO_VECTOR after the driver unmapped it, but the queue still interrupts on its old vector',
    patch: (p) => {
      const unmapped = new Set<number>();
      p.onWrite((bar, offset, _s, value) => {
        if (!p.isCommon(bar, offset, C.QueueMsixVector)) return undefined;
        if (value !== NO) return undefined;
        unmapped.add(p.selected());
        return true;
      });
      commonRead(p, C.QueueMsixVector, () => (unmapped.has(p.selected()) ? NO : undefined));
    },
    act: async (t, x) => {
      await bringUp(t);
      await t.close();
      x.model.interrupt(0);
      await settle();
    },
  },
  {
    clause: 'pci.notif-of-device-config-changes.device.1',
    how: 'config_msix_vector reads NO_VECTOR after the driver unmapped it, but configuration changes still interrupt on the old vector',
    patch: (p) => {
      let unmapped = false;
      p.onWrite((bar, offset, _s, value) => {
        if (!p.isCommon(bar, offset, C.ConfigMsixVector)) return undefined;
        unmapped = value === NO;
        return unmapped ? true : undefined;
      });
      commonRead(p, C.ConfigMsixVector, () => (unmapped ? NO : undefined));
    },
    act: async (t, x) => {
      await bringUp(t);
      await t.close();
      x.model.configChanged();
      await settle();
    },
  },
  {
    clause: 'pci.msi-x-vector-config.device.6',
    how: 'queue_msix_vector reads back right once, then NO_VECTOR',
    numQueues: 2,
    patch: (p) => {
      const reads = new Map<number, number>();
      p.onWrite((bar, offset) => {
        if (p.isCommon(bar, offset, C.QueueMsixVector)) reads.set(p.selected(), 0);
        return undefined;
      });
      commonRead(p, C.QueueMsixVector, () => {
        const n = reads.get(p.selected());
        if (n === undefined) return undefined;
        reads.set(p.selected(), n + 1);
        return n === 0 ? undefined : NO;
      });
    },
    act: (t) => bringUp(t, 2),
  },
  {
    clause: 'pci.msi-x-vector-config.device.7',
    how: 'config_msix_vector kept across a reset',
    patch: (p) => {
      let last = NO;
      p.onWrite((bar, offset, _s, value) => {
        if (p.isCommon(bar, offset, C.ConfigMsixVector)) last = value;
        return undefined;
      });
      commonRead(p, C.ConfigMsixVector, () => last);
    },
    act: async (t) => {
      await bringUp(t);
      await t.setStatus(0);
    },
  },
  {
    clause: 'pci.msi-x-vector-config.device.7',
    how: 'queue_msix_vector kept across a reset',
    patch: (p) => {
      const last = new Map<number, number>();
      p.onWrite((bar, offset, _s, value) => {
        if (p.isCommon(bar, offset, C.QueueMsixVector)) last.set(p.selected(), value);
        return undefined;
      });
      commonRead(p, C.QueueMsixVector, (v) => last.get(p.selected()) ?? v);
    },
    act: async (t) => {
      await bringUp(t);
      await bringUp(t);
    },
  },
  {
    clause: 'pci.msi-x-vector-config.device.7',
    how: 'legacy interface: the queue vector kept across a reset',
    kind: 'transitional-legacy',
    patch: (p) => {
      const last = new Map<number, number>();
      let sel = 0;
      p.onWrite((bar, offset, _s, value) => {
        if (bar === 0 && offset === 0x0e) sel = value;
        if (bar === 0 && offset === 0x16) last.set(sel, value);
        return undefined;
      });
      p.onRead((bar, offset, _s, v) => (bar === 0 && offset === 0x16 ? (last.get(sel) ?? v) : undefined));
    },
    act: async (t) => {
      await bringUp(t);
      await bringUp(t);
    },
  },
  {
    clause: 'pci.msi-x-vector-config.device.8',
    how: 'the configuration vector refused',
    patch: (p) => p.onWrite((bar, offset, _s, value) => (p.isCommon(bar, offset, C.ConfigMsixVector) && value !== NO ? true : undefined)),
    act: (t) => bringUp(t),
    refuses: 'msix',
  },
  {
    clause: 'pci.msi-x-vector-config.device.9',
    how: 'a failed configuration vector mapping that reads back 5, not NO_VECTOR',
    patch: (p) => {
      let written = false;
      p.onWrite((bar, offset, _s, value) => {
        if (p.isCommon(bar, offset, C.ConfigMsixVector)) written = value !== NO;
        return undefined;
      });
      commonRead(p, C.ConfigMsixVector, () => (written ? 5 : undefined));
    },
    act: (t) => bringUp(t),
    refuses: 'msix',
  },
  // ---- the legacy interface (4.1.4.8, 4.1.5.1.1)
  {
    clause: 'pci.legacy-device-layout.device.1',
    also: ['pci.legacy-device-layout-detection.device.1'],
    how: 'a transitional device whose BAR0 is a memory BAR',
    kind: 'transitional-legacy',
    patch: (p) => p.onConfigRead((o, s, v) => (o === PciCfg.Bar0 && s === 4 ? v & ~1 : undefined)),
    refuses: 'no-interface',
  },
  {
    clause: 'pci.legacy-device-layout.device.2',
    how: 'legacy device configuration that reads otherwise byte by byte',
    kind: 'transitional-legacy',
    patch: (p) => p.onRead((bar, offset, size, v) => (bar === 0 && offset === 0x18 + 1 && size === 1 ? v ^ 0xff : undefined)),
    act: async (t) => void (await t.readConfig(0, 4)),
  },
  {
    clause: 'pci.legacy-device-layout.device.3',
    how: 'legacy device configuration that is not the device configuration',
    kind: 'transitional-legacy',
    patch: (p) => {
      const dev = p.cap(VirtioPciCap.Device);
      p.onRead((bar, offset, _s, v) => (bar === dev.bar && offset === dev.offset ? v ^ 1 : undefined));
    },
    act: async (t) => void (await t.readConfig(0, 4)),
  },
];

/** Lets queued interrupts and their asynchronous passes run (a bounded number of turns, no time). */
async function settle(): Promise<void> {
  for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
}

/** The model's own BAR access, under the test's hooks (the hooks installed by patcher() wrap the prototype's). */
function modelBarWrite(m: Patcher['model'], bar: number, offset: number, value: number): void {
  Object.getPrototypeOf(m).barWrite.call(m, bar, offset, 4, value);
}
function modelBarRead(m: Patcher['model'], bar: number, offset: number, size: number): number {
  return Object.getPrototypeOf(m).barRead.call(m, bar, offset, size);
}

for (const c of CASES) {
  test(`pci device: ${c.clause} (${c.how})`, async () => {
    const x = await openPatched(c.kind ?? 'modern', c.patch, { pci: c.pci, numQueues: c.numQueues, withhold: c.withhold });
    let refused: string | undefined;
    try {
      const t = await x.open();
      await c.act?.(t, x);
    } catch (err) {
      refused = (err as { kind?: string }).kind ?? String(err);
    }
    assert.equal(refused, c.refuses, 'how the driver ends with this device');
    const got = [...new Set(x.drvMon.verdicts.map((v) => v.clause))].sort();
    assert.deepEqual(got, [c.clause, ...(c.also ?? [])].sort());
  });
}

// The same ways of driving, on devices that break nothing: no verdict.
for (const kind of ['modern', 'modern-intx', 'transitional-modern', 'transitional-legacy', 'legacy-intx'] as const) {
  test(`pci device: an unmodified ${kind} function gives the driver no verdict`, async () => {
    const x = await openPatched(kind, undefined, { numQueues: 2, withhold: bit(Feature.RING_PACKED) });
    const t = await x.open();
    await bringUp(t, 2);
    for (let i = 0; i < 2; i++) {
      await t.configGeneration();
      await t.readConfig(0, 4);
      await t.readConfig(0, 8);
      await t.configGeneration();
    }
    if (t.mode === 'modern') {
      await t.resetQueue(0);
      while (await t.queueResetPending(0));
      await t.setupQueue(0, 16, rings(0));
      await t.enableQueue(0);
    }
    x.model.interrupt(1);
    x.model.configChanged();
    await settle();
    await t.close();
    // Unmapped: the device stays quiet (or uses INTx's ISR, which nobody reads now).
    x.model.interrupt(0);
    x.model.configChanged();
    await settle();
    await bringUp(t, 1);
    await t.setStatus(0);
    assert.deepEqual(x.drvMon.verdicts, []);
    assert.deepEqual(x.device.monitor.verdicts, []);
  });

  test(`pci device: the blk driver on an unmodified ${kind} function: data flows, no verdict on either side`, async () => {
    const x = await openPatched(kind, undefined, { withhold: bit(Feature.RING_PACKED) });
    const t = await x.open();
    const driver = new BlkDriver(t, { monitor: x.drvMon, transportFeatures: TRANSPORT_FEATURES_SPLIT | bit(Feature.RING_RESET) });
    await driver.start();
    await driver.write(0, new Uint8Array(512).fill(9));
    const back = new Uint8Array(512);
    await driver.read(0, back);
    assert.ok(back.every((b) => b === 9));
    await driver.shutdown();
    await t.close();
    assert.deepEqual(x.drvMon.verdicts, []);
    assert.deepEqual(x.device.monitor.verdicts, []);
  });
}

test('pci device: every case breaks a pci device clause, named once per site', () => {
  for (const c of CASES) assert.match(c.clause, /^pci\.[a-z0-9-]+\.device\.\d+$/);
  assert.ok(CASES.length >= 50);
});
