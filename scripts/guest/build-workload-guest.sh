#!/usr/bin/env bash
# Builds the workload guest's initramfs (OUT_DIR/workload-initramfs.cpio) for the real-guest
# workload tests (test/guest/workload-*.test.ts): the test guest's initramfs (busybox, the virtio
# modules and scripts/guest/init, from OUT_DIR/initramfs.cpio, which build-guest.sh builds when
# absent) plus the host's fio, mkfs.ext4 and e2fsck with the shared libraries ldd lists for
# them, the dynamic loader, and ext4 with its modules from the same Debian kernel package.
# Kept apart from the test guest so the other guest tests boot a small initramfs.
# Needs what build-guest.sh needs, plus fio and e2fsprogs on the host (apt-get install fio
# e2fsprogs). Rebuilt only when an input is newer than it.
# Usage: scripts/guest/build-workload-guest.sh [OUT_DIR]   (default .guest)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(realpath -m "${1:-.guest}")
TOOLS=()
for t in fio mkfs.ext4 e2fsck; do
  p=$(PATH="$PATH:/sbin:/usr/sbin" command -v "$t" || true)
  [ -n "$p" ] || { echo "build-workload-guest: $t is not installed on the host (apt-get install fio e2fsprogs); the guest runs the host's $t" >&2; exit 1; }
  TOOLS+=("$p")
done
bash "$HERE/build-guest.sh" "$OUT"
DEST="$OUT/workload-initramfs.cpio"
fresh=1
for input in "$OUT/initramfs.cpio" "$HERE/init" "$HERE/build-workload-guest.sh" "${TOOLS[@]}"; do
  [ -s "$DEST" ] && [ "$DEST" -nt "$input" ] || fresh=0
done
[ "$fresh" = 1 ] && exit 0
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
R="$WORK/initrd"
mkdir -p "$R"
(cd "$R" && cpio -idm --quiet) < "$OUT/initramfs.cpio"
# The scripts/guest/init of this checkout (the base initramfs may be older than it).
cp "$HERE/init" "$R/init"
chmod +x "$R/init"

# The tools and every library they load, all in one directory (the loader is pointed at it
# with LD_LIBRARY_PATH, which it searches before RUNPATHs such as librados's ceph directory).
mkdir -p "$R/usr/bin" "$R/lib/x86_64-linux-gnu" "$R/tmp" "$R/etc"
LOADER=
for tool in "${TOOLS[@]}"; do
  cp -L "$tool" "$R/usr/bin/$(basename "$tool")"
  while read -r line; do
    case "$line" in
      *'=>'*'('*) lib=$(echo "$line" | awk '{print $3}'); cp -L "$lib" "$R/lib/x86_64-linux-gnu/" ;;
      /*'('*) LOADER=$(echo "$line" | awk '{print $1}') ;;
    esac
  done < <(ldd "$tool")
done
[ -n "$LOADER" ] || { echo "build-workload-guest: ldd names no dynamic loader" >&2; exit 1; }
mkdir -p "$(dirname "$R$LOADER")"
cp -L "$LOADER" "$R$LOADER"
[ -f /etc/mke2fs.conf ] && cp /etc/mke2fs.conf "$R/etc/"

# ext4 and what it needs, from the package of the kernel the base initramfs was built for.
KVER=$(modinfo -F vermagic "$R/lib/modules/virtio_blk.ko" | awk '{print $1}')
[ -n "$KVER" ] || { echo "build-workload-guest: cannot tell the guest kernel's version" >&2; exit 1; }
(cd "$WORK" && apt-get download -q "linux-image-$KVER" >/dev/null 2>&1) || {
  echo "build-workload-guest: cannot download linux-image-$KVER (run apt-get update)" >&2; exit 1; }
dpkg -x "$WORK"/linux-image-*.deb "$WORK/kernel"
depmod -b "$WORK/kernel" "$KVER"
for m in crc32c_intel ext4; do
  modprobe -d "$WORK/kernel" -S "$KVER" --show-depends "$m" | awk '/^insmod/ {print $2}'
done | awk '!seen[$0]++' > "$WORK/order"
while read -r ko; do
  base=$(basename "$ko")
  case "$base" in *.xz) xz -dc "$ko" > "$R/lib/modules/${base%.xz}"; base=${base%.xz} ;; *) cp "$ko" "$R/lib/modules/" ;; esac
  grep -qx "$base" "$R/modules" || echo "$base" >> "$R/modules"
done < "$WORK/order"

(cd "$R" && find . | cpio -o -H newc --quiet) > "$DEST.tmp"
mv "$DEST.tmp" "$DEST"
echo "workload guest: $(fio --version), e2fsprogs $(mkfs.ext4 -V 2>&1 | awk 'NR==1 {print $2}'), $(ls "$R/lib/x86_64-linux-gnu" | wc -l) libraries, initramfs $(du -h "$DEST" | cut -f1)"
