/**
 * Test support (not a test file): telling an x86 Linux guest where its virtio-mmio windows are.
 *
 * Debian's i386 kernel has no CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES, so `virtio_mmio.device=` on
 * the command line is ignored there (see build-v86-guest.sh's notes). What it does have is
 * virtio_mmio's ACPI match (_HID "LNRO0005") and CONFIG_ACPI_TABLE_UPGRADE: an SSDT found at
 * kernel/firmware/acpi/ in an uncompressed cpio at the start of the initrd is installed beside
 * the firmware's tables. So the harness writes one SSDT with a Device per window (a
 * Memory32Fixed range and one level-triggered, active-high interrupt) and prepends it to the
 * initramfs. AML is written by hand (ACPI 6.4, 20.2): the table is small and fixed in shape.
 */

/** One virtio-mmio window as the guest sees it. */
export interface MmioWindow {
  /** Guest-physical base address. */
  base: number;
  /** Length in bytes (0x200 covers the registers and 256 bytes of configuration). */
  size: number;
  /** ISA interrupt line (GSI) the device raises. */
  irq: number;
}

const ascii = (s: string) => [...s].map((c) => c.charCodeAt(0));
const u32 = (v: number) => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];

/** PkgLength (20.2.4) of a package whose contents are `body` bytes long. */
function pkg(body: number[]): number[] {
  for (let n = 1; n <= 4; n++) {
    const total = body.length + n;
    if (n === 1 && total < 0x40) return [total, ...body];
    if (n > 1 && total < 1 << (4 + 8 * (n - 1))) {
      const out = [((n - 1) << 6) | (total & 0x0f)];
      for (let i = 1; i < n; i++) out.push((total >>> (4 + 8 * (i - 1))) & 0xff);
      return [...out, ...body];
    }
  }
  throw new RangeError('AML package too large');
}

/** Device (VRnn) { _HID "LNRO0005", _UID n, _CRS { Memory32Fixed, Interrupt } }. */
function device(n: number, w: MmioWindow): number[] {
  const name = `VR${n.toString(16).toUpperCase().padStart(2, '0')}`;
  const resources = [
    // Memory32Fixed (ReadWrite, base, size): large item 0x86, length 9.
    0x86, 0x09, 0x00, 0x01, ...u32(w.base), ...u32(w.size),
    // Extended Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive) { irq }: 0x89, length 6.
    0x89, 0x06, 0x00, 0x01, 0x01, ...u32(w.irq),
    // End tag, checksum 0 (ignored).
    0x79, 0x00,
  ];
  const body = [
    ...ascii(name),
    0x08, ...ascii('_HID'), 0x0d, ...ascii('LNRO0005'), 0x00,
    0x08, ...ascii('_UID'), 0x0a, n & 0xff,
    0x08, ...ascii('_CRS'), 0x11, ...pkg([0x0a, resources.length, ...resources]),
  ];
  return [0x5b, 0x82, ...pkg(body)];
}

/** An SSDT declaring `windows` under \_SB as virtio-mmio devices (LNRO0005). */
export function virtioMmioSsdt(windows: readonly MmioWindow[]): Uint8Array {
  const scope = [0x10, ...pkg([0x5c, ...ascii('_SB_'), ...windows.flatMap((w, i) => device(i, w))])];
  const length = 36 + scope.length;
  const table = new Uint8Array([
    ...ascii('SSDT'), ...u32(length), 2, 0,
    ...ascii('VIRTTS'), ...ascii('VIRTMMIO'), ...u32(1), ...ascii('VTTS'), ...u32(1),
    ...scope,
  ]);
  table[9] = (256 - (table.reduce((a, b) => a + b, 0) & 0xff)) & 0xff;
  return table;
}

/** A newc cpio archive holding `files` (regular files, mode 0644; directories are implied). */
export function newcCpio(files: ReadonlyArray<{ name: string; data: Uint8Array }>): Uint8Array {
  const parts: Uint8Array[] = [];
  let size = 0;
  const push = (b: Uint8Array) => {
    parts.push(b);
    size += b.length;
    const pad = (4 - (size % 4)) % 4;
    if (pad) {
      parts.push(new Uint8Array(pad));
      size += pad;
    }
  };
  const entry = (name: string, mode: number, data: Uint8Array, ino: number) => {
    const hex = (v: number) => v.toString(16).padStart(8, '0');
    const header = `070701${hex(ino)}${hex(mode)}${hex(0)}${hex(0)}${hex(1)}${hex(0)}${hex(data.length)}${hex(0)}${hex(0)}${hex(0)}${hex(0)}${hex(name.length + 1)}${hex(0)}`;
    push(new Uint8Array([...ascii(header), ...ascii(name), 0]));
    if (data.length) push(data);
  };
  const dirs = new Set<string>();
  let ino = 1;
  for (const f of files) {
    const segs = f.name.split('/');
    for (let i = 1; i < segs.length; i++) {
      const d = segs.slice(0, i).join('/');
      if (!dirs.has(d)) {
        dirs.add(d);
        entry(d, 0o040755, new Uint8Array(0), ino++);
      }
    }
    entry(f.name, 0o100644, f.data, ino++);
  }
  entry('TRAILER!!!', 0, new Uint8Array(0), 0);
  const out = new Uint8Array(size);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
