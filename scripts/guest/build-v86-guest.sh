#!/usr/bin/env bash
# Builds the guest test/v86 boots inside v86 (a JS x86 emulator, 32-bit only): Debian's current
# i386 kernel (linux-image-686, a bzImage), an uncompressed initramfs with Debian's i386
# busybox-static and the kernel's virtio modules (virtio_pci, virtio_mmio, virtio_blk,
# virtio-rng), /init from scripts/guest/v86-init, and Debian's SeaBIOS images.
# Needs: the i386 architecture in dpkg with its package lists (`dpkg --add-architecture i386 &&
# apt-get update`: .ci/run does it), the seabios package, kmod, cpio, xz-utils.
# Output, in OUT_DIR/v86 (default .guest/v86): bzImage, initramfs.cpio, bios.bin, vgabios.bin,
# kernel-version. Reused when present, with its /init replaced when scripts/guest/v86-init
# differs (no new download for that).
# Usage: scripts/guest/build-v86-guest.sh [OUT_DIR]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(realpath -m "${1:-.guest}")/v86
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

pack() { # pack DIR: the newc archive, replaced by rename from a file of this process alone
  (cd "$1" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) > "$OUT/initramfs.cpio.$$.tmp"
  mv "$OUT/initramfs.cpio.$$.tmp" "$OUT/initramfs.cpio"
}

for f in bios.bin vgabios-stdvga.bin; do
  [ -s "/usr/share/seabios/$f" ] || { echo "/usr/share/seabios/$f not found: apt-get install seabios" >&2; exit 1; }
done
# v86's VGA is the Bochs/QEMU standard VGA: SeaBIOS's stdvga option ROM drives it.
cmp -s /usr/share/seabios/bios.bin "$OUT/bios.bin" || cp /usr/share/seabios/bios.bin "$OUT/bios.bin"
cmp -s /usr/share/seabios/vgabios-stdvga.bin "$OUT/vgabios.bin" || cp /usr/share/seabios/vgabios-stdvga.bin "$OUT/vgabios.bin"

if [ -s "$OUT/bzImage" ] && [ -s "$OUT/initramfs.cpio" ]; then
  cpio -i --quiet --to-stdout init < "$OUT/initramfs.cpio" > init.old 2>/dev/null || true
  cmp -s init.old "$HERE/v86-init" && exit 0
  mkdir initrd
  (cd initrd && cpio -idm --quiet) < "$OUT/initramfs.cpio"
  cp "$HERE/v86-init" initrd/init
  chmod +x initrd/init
  pack initrd
  echo "v86 guest: initramfs re-packed with this checkout's scripts/guest/v86-init"
  exit 0
fi

dpkg --print-foreign-architectures | grep -qx i386 || {
  echo "dpkg has no i386 architecture: run 'dpkg --add-architecture i386 && apt-get update' (as root; .ci/run does)" >&2
  exit 1
}
# Debian's current 686 kernel (not a pinned ABI): resolve the metapackage's dependency.
KPKG=$(apt-cache depends linux-image-686:i386 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$KPKG" ] || { echo "cannot resolve linux-image-686:i386 (run apt-get update after adding the i386 architecture)" >&2; exit 1; }
case "$KPKG" in *:i386) ;; *) KPKG="$KPKG:i386" ;; esac
apt-get download -q "$KPKG" busybox-static:i386 >/dev/null 2>&1 || {
  echo "apt-get download $KPKG busybox-static:i386 failed:" >&2
  apt-get download "$KPKG" busybox-static:i386 >&2 || true
  exit 1
}
for d in ./*.deb; do dpkg -x "$d" root; done
KVER=$(ls root/lib/modules)
[ -s "root/boot/vmlinuz-$KVER" ] || { echo "no root/boot/vmlinuz-$KVER in $KPKG" >&2; exit 1; }

# initramfs: busybox, the virtio modules in insmod order (the kernel has them as modules), /init.
depmod -b root "$KVER"
mkdir -p initrd/bin initrd/dev initrd/proc initrd/sys initrd/tmp initrd/lib/modules
cp root/bin/busybox initrd/bin/busybox
for m in virtio_pci virtio_mmio virtio_rng virtio_blk; do
  modprobe -d root -S "$KVER" --show-depends "$m" | awk '/^insmod/ {print $2}'
done | awk '!seen[$0]++' > order
: > initrd/modules
while read -r ko; do
  base=$(basename "$ko")
  case "$base" in
    *.xz) xz -dc "$ko" > "initrd/lib/modules/${base%.xz}"; base=${base%.xz} ;;
    *.zst) echo "$ko: zstd-compressed modules are not handled here" >&2; exit 1 ;;
    *) cp "$ko" initrd/lib/modules/ ;;
  esac
  echo "$base" >> initrd/modules
done < order
cp "$HERE/v86-init" initrd/init
chmod +x initrd/init
pack initrd
cp "root/boot/vmlinuz-$KVER" "$OUT/bzImage.$$.tmp"
mv "$OUT/bzImage.$$.tmp" "$OUT/bzImage"
echo "$KVER" > "$OUT/kernel-version"
echo "v86 guest: kernel $KVER (i386), $(wc -l < initrd/modules) modules, initramfs $(du -h "$OUT/initramfs.cpio" | cut -f1)"
