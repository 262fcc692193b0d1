#!/usr/bin/env bash
# Builds the benchmark guest's initramfs (OUT_DIR/bench-initramfs.cpio) for `npm run bench:guest`:
# the test guest's initramfs (busybox and the virtio modules of the same kernel, taken from
# OUT_DIR/initramfs.cpio, which scripts/guest/build-guest.sh builds when absent) with fio, the
# shared libraries ldd lists for it, the dynamic loader, and scripts/guest/bench-init as /init.
# Needs what build-guest.sh needs, plus fio on the host (apt-get install fio). Rebuilt only when
# the initramfs, bench-init, this script or the host's fio is newer than it.
# Usage: scripts/guest/build-bench-guest.sh [OUT_DIR]   (default .guest)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(realpath -m "${1:-.guest}")
FIO=$(command -v fio || true)
[ -n "$FIO" ] || { echo "build-bench-guest: fio is not installed on the host (apt-get install fio); the guest runs the host's fio" >&2; exit 1; }
bash "$HERE/build-guest.sh" "$OUT"
DEST="$OUT/bench-initramfs.cpio"
if [ -s "$DEST" ] && [ "$DEST" -nt "$OUT/initramfs.cpio" ] && [ "$DEST" -nt "$HERE/bench-init" ] \
  && [ "$DEST" -nt "$HERE/build-bench-guest.sh" ] && [ "$DEST" -nt "$FIO" ]; then exit 0; fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/initrd"
(cd "$WORK/initrd" && cpio -idm --quiet) < "$OUT/initramfs.cpio"

# fio and every library it loads, all in one directory (the loader is pointed at it with
# LD_LIBRARY_PATH, which it searches before RUNPATHs such as librados's ceph directory).
R="$WORK/initrd"
mkdir -p "$R/usr/bin" "$R/lib/x86_64-linux-gnu" "$R/tmp"
cp -L "$FIO" "$R/usr/bin/fio"
LOADER=
while read -r line; do
  case "$line" in
    *'=>'*'('*) lib=$(echo "$line" | awk '{print $3}'); cp -L "$lib" "$R/lib/x86_64-linux-gnu/" ;;
    /*'('*) LOADER=$(echo "$line" | awk '{print $1}') ;;
  esac
done < <(ldd "$FIO")
[ -n "$LOADER" ] || { echo "build-bench-guest: ldd names no dynamic loader for $FIO" >&2; exit 1; }
mkdir -p "$(dirname "$R$LOADER")"
cp -L "$LOADER" "$R$LOADER"
cp "$HERE/bench-init" "$R/init"
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet) > "$DEST.tmp"
mv "$DEST.tmp" "$DEST"
echo "bench guest: $(fio --version), $(ls "$R/lib/x86_64-linux-gnu" | wc -l) libraries, initramfs $(du -h "$DEST" | cut -f1)"
