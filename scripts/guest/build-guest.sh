#!/usr/bin/env bash
# Builds the tiny Linux guest the end-to-end tests boot: Debian's current kernel (the ELF
# vmlinux, booted through PVH) and an uncompressed busybox initramfs with the virtio modules.
# Needs: apt-get (Debian's packages), busybox-static, kmod, cpio, python3, gcc and libc6-dev
# (the static vsock-tool, the guest side of the vsock tests: scripts/guest/vsock-tool.c).
# Usage: scripts/guest/build-guest.sh [OUT_DIR]   (default .guest; reused when present, with its
# /init replaced when this checkout's scripts/guest/init differs: a guest must never boot a
# stale init, and the kernel and its modules need no new download for that; the same for
# bin/vsock-tool, rebuilt when its source changes: the source's sha256 is in vsock-tool.stamp)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(realpath -m "${1:-.guest}")
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
# vsock-tool: compiled static (busybox has no vsock client) when its source changed.
TOOL_SRC="$HERE/vsock-tool.c"
TOOL_SUM=$(sha256sum "$TOOL_SRC" | cut -d' ' -f1)
if ! [ -x "$OUT/vsock-tool" ] || [ "$(cat "$OUT/vsock-tool.stamp" 2>/dev/null)" != "$TOOL_SUM" ]; then
  gcc -static -O2 -Wall -Werror -o "$OUT/vsock-tool.$$.tmp" "$TOOL_SRC"
  mv "$OUT/vsock-tool.$$.tmp" "$OUT/vsock-tool"
  echo "$TOOL_SUM" > "$OUT/vsock-tool.stamp"
  echo "guest: vsock-tool built"
fi
# The modules the guest loads (with their dependencies): every virtio device the project serves
# or drives, the vsock transport, virtio-fs, and 9p over virtio (the file-system anchor). A
# guest built with another list is rebuilt: the list is kept beside it in modules.list.
MODULES="virtio_pci virtio_mmio virtio_rng virtio_blk virtio_console virtio_net vmw_vsock_virtio_transport virtiofs 9pnet_virtio 9p"
if [ -s "$OUT/vmlinux" ] && [ -s "$OUT/initramfs.cpio" ] && [ "$(cat "$OUT/modules.list" 2>/dev/null)" = "$MODULES" ]; then
  cpio -i --quiet --to-stdout init < "$OUT/initramfs.cpio" > init.old 2>/dev/null || true
  cpio -i --quiet --to-stdout bin/vsock-tool < "$OUT/initramfs.cpio" > tool.old 2>/dev/null || true
  cmp -s init.old "$HERE/init" && cmp -s tool.old "$OUT/vsock-tool" && exit 0
  mkdir initrd
  (cd initrd && cpio -idm --quiet) < "$OUT/initramfs.cpio"
  cp "$HERE/init" initrd/init
  chmod +x initrd/init
  cp "$OUT/vsock-tool" initrd/bin/vsock-tool
  # Replaced by rename (a guest booting meanwhile keeps reading the old file) from a file of
  # this process alone (worktrees may share one .guest).
  (cd initrd && find . | cpio -o -H newc --quiet) > "$OUT/initramfs.cpio.$$.tmp"
  mv "$OUT/initramfs.cpio.$$.tmp" "$OUT/initramfs.cpio"
  echo "guest: initramfs re-packed with this checkout's scripts/guest/init and vsock-tool"
  exit 0
fi

# Debian's current kernel package (not a pinned ABI): resolve the metapackage's dependency.
KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$KPKG" ] || { echo "cannot resolve linux-image-amd64 (run apt-get update)" >&2; exit 1; }
apt-get download -q "$KPKG" >/dev/null 2>&1
dpkg -x ./*.deb root
KVER=$(ls root/lib/modules)

# The ELF vmlinux is the xz payload inside vmlinuz.
python3 - "root/boot/vmlinuz-$KVER" "$OUT/vmlinux" <<'PY'
import lzma, sys
data = open(sys.argv[1], 'rb').read()
magic = b'\xfd7zXZ\x00'
i = data.find(magic)
while i >= 0:
    try:
        out = lzma.LZMADecompressor().decompress(data[i:])
        if out[:4] == b'\x7fELF':
            open(sys.argv[2], 'wb').write(out)
            sys.exit(0)
    except lzma.LZMAError:
        pass
    i = data.find(magic, i + 1)
sys.exit('no xz-compressed ELF payload in ' + sys.argv[1])
PY

# initramfs: busybox, the virtio modules in insmod order, and /init.
depmod -b root "$KVER"
mkdir -p initrd/bin initrd/dev initrd/proc initrd/sys initrd/mnt initrd/lib/modules
cp /bin/busybox initrd/bin/busybox
cp "$OUT/vsock-tool" initrd/bin/vsock-tool
for m in $MODULES; do
  modprobe -d root -S "$KVER" --show-depends "$m" | awk '/^insmod/ {print $2}'
done | awk '!seen[$0]++' > order
: > initrd/modules
while read -r ko; do
  base=$(basename "$ko")
  case "$base" in *.xz) xz -dc "$ko" > "initrd/lib/modules/${base%.xz}"; base=${base%.xz} ;; *) cp "$ko" initrd/lib/modules/ ;; esac
  echo "$base" >> initrd/modules
done < order
cp "$HERE/init" initrd/init
chmod +x initrd/init
(cd initrd && find . | cpio -o -H newc --quiet) > "$OUT/initramfs.cpio.$$.tmp"
mv "$OUT/initramfs.cpio.$$.tmp" "$OUT/initramfs.cpio"
echo "$MODULES" > "$OUT/modules.list"
echo "guest: kernel $KVER, $(wc -l < initrd/modules) modules, initramfs $(du -h "$OUT/initramfs.cpio" | cut -f1)"
