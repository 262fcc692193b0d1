/**
 * What `serve blk` checks about --image before it serves it (all before the socket is made,
 * so a refusal leaves nothing behind):
 * - it exists, is readable (and writable unless --read-only), and is a regular file or a
 *   block device node (a directory, FIFO, socket or character device is refused);
 * - it holds at least one 512-byte sector (virtio-blk capacity is counted in 512-byte sectors,
 *   5.2.4); a size that is not a multiple of 512 is served with a warning: the tail is not
 *   visible to the guest;
 * - it is not a recognisable non-raw image format. A qcow2 (or vmdk, vdi, vhdx, ...) served as
 *   raw bytes shows the guest the container's metadata, and a guest write corrupts it; unless
 *   the user says the file is raw (`--format raw`), that is refused. The magic numbers are the
 *   ones QEMU's format probes (block/<format>.c *_probe) look for.
 * Every refusal is a CliError with EXIT_RUNTIME and a message naming the file.
 */
import { open, stat } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { CliError, EXIT_RUNTIME, describeError, describeFileType, errnoOf } from './exit-codes.js';

export const SECTOR = 512;

export interface ImageFacts {
  /** Bytes in the file; null for a block device (FileBlockBackend measures it). */
  bytes: number | null;
  /** Bytes past the last whole sector, not visible to the guest (0 for a block device: its size is whole sectors). */
  tail: number;
  blockDevice: boolean;
}

interface FormatProbe {
  name: string;
  /** Whether the first bytes of the file (at least 512 of them when the file has that many) are this format. */
  test(head: Uint8Array): boolean;
}

const ascii = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));
const startsWith = (head: Uint8Array, magic: Uint8Array, at = 0) => head.length >= at + magic.length && magic.every((b, i) => head[at + i] === b);

/** Non-raw image formats, by the magic QEMU's probes check. */
export const FORMATS: readonly FormatProbe[] = [
  // block/qcow2.c and block/qcow.c: "QFI\xfb" big-endian magic (version 1 is qcow, 2 and 3 qcow2).
  { name: 'qcow2', test: (h) => startsWith(h, Uint8Array.of(0x51, 0x46, 0x49, 0xfb)) },
  // block/qed.c: QED_MAGIC 'Q' | 'E' << 8 | 'D' << 16, little-endian.
  { name: 'qed', test: (h) => startsWith(h, Uint8Array.of(0x51, 0x45, 0x44, 0x00)) },
  // block/vmdk.c: sparse extents "KDMV" (VMDK4) and "COWD" (VMDK3), or a text descriptor.
  { name: 'vmdk', test: (h) => startsWith(h, ascii('KDMV')) || startsWith(h, ascii('COWD')) || startsWith(h, ascii('# Disk DescriptorFile')) },
  // block/vdi.c: signature 0xbeda107f (little-endian) after the 64-byte text field.
  { name: 'vdi', test: (h) => startsWith(h, Uint8Array.of(0x7f, 0x10, 0xda, 0xbe), 0x40) },
  // block/vhdx.c: the file type identifier "vhdxfile".
  { name: 'vhdx', test: (h) => startsWith(h, ascii('vhdxfile')) },
  // block/vpc.c: a dynamic VHD starts with a copy of its footer, cookie "conectix".
  { name: 'vpc (vhd)', test: (h) => startsWith(h, ascii('conectix')) },
  // block/parallels.c: the two header magics.
  { name: 'parallels', test: (h) => startsWith(h, ascii('WithoutFreeSpace')) || startsWith(h, ascii('WithouFreSpacExt')) },
  // block/bochs.c.
  { name: 'bochs', test: (h) => startsWith(h, ascii('Bochs Virtual HD Image')) },
];

/** The non-raw format whose magic starts `head`, or null. */
export function detectFormat(head: Uint8Array): string | null {
  return FORMATS.find((f) => f.test(head))?.name ?? null;
}

/** True if `path` opens for reading (an O_RDONLY open, closed at once). */
async function readable(path: string): Promise<boolean> {
  try {
    await (await open(path, 'r')).close();
    return true;
  } catch {
    return false;
  }
}

/**
 * Checks `path` as `serve blk --image` would serve it. `raw`: the user said the file is raw
 * (`--format raw`), so no format probe. Throws CliError(EXIT_RUNTIME) with a clear message.
 */
export async function checkImage(path: string, options: { readOnly: boolean; raw: boolean }): Promise<ImageFacts> {
  let st: Stats;
  try {
    st = await stat(path);
  } catch (err) {
    throw new CliError(EXIT_RUNTIME, `cannot use --image ${path}: ${describeError(err)}`);
  }
  if (!st.isFile() && !st.isBlockDevice()) throw new CliError(EXIT_RUNTIME, `--image ${path} is ${describeFileType(st)}, not a disk image (a regular file or a block device)`);
  let fh;
  try {
    fh = await open(path, options.readOnly ? 'r' : 'r+');
  } catch (err) {
    const code = errnoOf(err);
    let hint = '';
    if (!options.readOnly && (code === 'EACCES' || code === 'EPERM' || code === 'EROFS')) {
      // --read-only helps only if the file can be read: try the open it would make, so a file
      // the user may neither read nor write is not sent round to a second refusal.
      hint = (await readable(path)) ? '; give --read-only to serve it read-only' : ' (it cannot be read either, so --read-only would not help)';
    }
    throw new CliError(EXIT_RUNTIME, `cannot open --image ${path} ${options.readOnly ? 'for reading' : 'for reading and writing'}: ${describeError(err)}${hint}`);
  }
  try {
    const head = new Uint8Array(SECTOR);
    let got: number;
    try {
      got = (await fh.read(head, 0, SECTOR, 0)).bytesRead;
    } catch (err) {
      throw new CliError(EXIT_RUNTIME, `cannot read --image ${path}: ${describeError(err)}`);
    }
    // A block device's size is measured by FileBlockBackend (stat gives 0 for it).
    const bytes = st.isBlockDevice() ? null : st.size;
    if (bytes !== null && bytes < SECTOR) {
      throw new CliError(EXIT_RUNTIME, `--image ${path} holds ${bytes} bytes, less than one 512-byte sector: a virtio-blk disk is counted in whole sectors, so the guest would see nothing`);
    }
    if (!options.raw) {
      const format = detectFormat(head.subarray(0, got));
      if (format !== null) {
        throw new CliError(
          EXIT_RUNTIME,
          `--image ${path} looks like a ${format} image, not a raw disk: serving it as raw bytes would show the guest the ${format} metadata (and a write would corrupt it). ` +
            `Convert it (qemu-img convert -O raw ${path} disk.raw), or, if it is a raw disk whose first bytes only look like ${format}, give --format raw`,
        );
      }
    }
    return { bytes, tail: bytes === null ? 0 : bytes % SECTOR, blockDevice: st.isBlockDevice() };
  } finally {
    await fh.close();
  }
}
