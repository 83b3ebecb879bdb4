#!/bin/bash
# shellcheck source-path=SCRIPTDIR
# guest-image.sh ARCH: builds (once) the Debian bookworm guest of
# make test-arm for ARCH (arm64 or armhf) and prints the directory holding
#   root.img     raw ext4 disk image of the root filesystem (the guests boot
#                copy-on-write overlays of it, so it is never written)
#   vmlinuz      the kernel of Debian's linux-image-arm64 (arm64) or
#                linux-image-armmp-lpae (armhf), installed in the root
#   initrd.img   its initramfs (initramfs-tools, built in the root under
#                qemu-user)
# Cached in $CACHE_DIR/arm/guest-<arch>-<key>, keyed by this recipe, the
# guest's init and the Debian suite and mirror. The root is debootstrap
# minbase plus the kernel and what a Pi OS Lite node has for bramble
# (iptables, ipset, ca-certificates, curl, kmod, iproute2), tini as the
# process reaper under scripts/arm/guest-init.sh, and busybox (nslookup for
# the DNS check). Network (the Debian mirror) is used only here; the tests
# boot the cached image with no network beyond the guests' own.
set -euo pipefail

ARCH=${1:?usage: guest-image.sh arm64|armhf}
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../images/lib.sh
. "$HERE/../images/lib.sh"

log() { printf '[arm] %s\n' "$*" >&2; }
die() { printf '[arm] error: %s\n' "$*" >&2; exit 1; }

case "$ARCH" in
arm64) GOARCH=arm64 KERNEL_PKG=linux-image-arm64 ;;
armhf) GOARCH=arm KERNEL_PKG=linux-image-armmp-lpae ;;
*) die "unsupported ARCH '$ARCH' (want arm64 or armhf)" ;;
esac
PACKAGES="$KERNEL_PKG,initramfs-tools,kmod,iproute2,iptables,ipset,ca-certificates,curl,tini,busybox,procps"
# Root image size (sparse): room for the air-gap images unpacked by
# containerd, bramble's data and the logs.
ROOT_SIZE=8G

# Bump RECIPE when the steps below change what the image holds.
RECIPE=1
key=$(cache_key "$RECIPE $ARCH $DEBIAN_SUITE $DEBIAN_MIRROR $PACKAGES $ROOT_SIZE" \
	"$HERE/guest-image.sh" "$HERE/guest-init.sh")
out="$CACHE_DIR/arm/guest-$ARCH-$key"
if [ -f "$out/root.img" ] && [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.img" ]; then
	printf '%s\n' "$out"
	exit 0
fi

[ "$(id -u)" = 0 ] || die "debootstrap needs root"
for c in debootstrap mkfs.ext4 chroot; do
	command -v "$c" >/dev/null 2>&1 || die "$c is missing (make arm-deps installs it)"
done
ensure_binfmt "$GOARCH"

mkdir -p "$CACHE_DIR/arm"
# One build of this guest at a time.
exec 8>"$CACHE_DIR/arm/.lock-$ARCH"
flock 8
if [ -f "$out/root.img" ]; then
	printf '%s\n' "$out"
	exit 0
fi

rootfs="$CACHE_DIR/arm/build-$ARCH-$key"
cleanup() { umount_below "$rootfs"; }
trap cleanup EXIT
cleanup
rm -rf "$rootfs" "$out"
mkdir -p "$rootfs"
start=$(date +%s)
log "guest $ARCH: debootstrap $DEBIAN_SUITE minbase + $PACKAGES from $DEBIAN_MIRROR"
debootstrap --foreign --variant=minbase --arch="$ARCH" --include="$PACKAGES" \
	"$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR" >"$rootfs.log" 2>&1 ||
	{ tail -n 30 "$rootfs.log" >&2; die "debootstrap (first stage) failed, log: $rootfs.log"; }
# The initramfs holds only the drivers that find the root on virtio-blk
# (PCI on qemu's virt machine), loaded at boot: the guest has no udev to load
# them, and MODULES=most under qemu-user takes many minutes. Written before
# the second stage installs the kernel, so its one initramfs is this one.
mkdir -p "$rootfs/etc/initramfs-tools/conf.d" "$rootfs/usr/share/initramfs-tools/modules.d"
echo MODULES=list >"$rootfs/etc/initramfs-tools/conf.d/bramble-arm"
printf '%s\n' virtio_pci virtio_mmio virtio_blk virtio_net ext4 >"$rootfs/usr/share/initramfs-tools/modules.d/bramble-arm"
log "guest $ARCH: second stage under qemu-user (kernel and initramfs: minutes)"
chroot "$rootfs" /debootstrap/debootstrap --second-stage >>"$rootfs.log" 2>&1 ||
	{ tail -n 30 "$rootfs.log" >&2; die "debootstrap (second stage) failed, log: $rootfs.log"; }
umount_below "$rootfs"

kver=$(basename "$(find "$rootfs/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -n1)")
[ -n "$kver" ] || die "no kernel modules in the guest root"
[ -f "$rootfs/boot/initrd.img-$kver" ] || die "no initramfs for $kver in the guest root"

install -m 0755 "$HERE/guest-init.sh" "$rootfs/sbin/bramble-guest-init"
printf '127.0.0.1\tlocalhost\n' >"$rootfs/etc/hosts"
: >"$rootfs/etc/fstab"
mkdir -p "$rootfs/boot/firmware" "$rootfs/mnt/job" "$rootfs/mnt/out"
rm -rf "$rootfs/debootstrap" "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"*

rm -rf "$out.tmp"
mkdir -p "$out.tmp"
cp "$rootfs/boot/vmlinuz-$kver" "$out.tmp/vmlinuz"
cp "$rootfs/boot/initrd.img-$kver" "$out.tmp/initrd.img"
log "guest $ARCH: root image ($ROOT_SIZE sparse)"
mkfs.ext4 -q -L root -d "$rootfs" "$out.tmp/root.img" "$ROOT_SIZE" >>"$rootfs.log" 2>&1 ||
	{ tail -n 30 "$rootfs.log" >&2; die "mkfs.ext4 -d failed, log: $rootfs.log"; }
rm -rf "$out"
mv "$out.tmp" "$out"
rm -rf "$rootfs" "$rootfs.log"
log "guest $ARCH: built in $(($(date +%s) - start)) s (kernel $kver)"
printf '%s\n' "$out"
