#!/bin/sh
# shellcheck source-path=SCRIPTDIR
# testroot.sh [ARCH]: builds (once) a fresh Debian root filesystem for the
# install.sh tests (tests/install): debootstrap minbase of $DEBIAN_SUITE plus
# curl and wget, packed as a zstd tarball and cached in
# $CACHE_DIR/testroot/, keyed by the recipe version, the suite, the mirror,
# the packages and the arch. Prints the tarball's path. Idempotent: a cached tarball costs nothing.
#
# Network (the Debian mirror) is used only here, at build time; the tests
# unpack the tarball and never download anything.
set -eu

ARCH="${1:-$(dpkg --print-architecture)}"
REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE_DIR="${CACHE_DIR:-/var/cache/bramble-build}"
# DEBIAN_SUITE and DEBIAN_MIRROR, shared with the image builds.
# shellcheck source=../images/images.env
. "$REPO_ROOT/images/images.env"
PACKAGES=curl,wget

log() { printf '[testroot] %s\n' "$*" >&2; }
die() {
	printf '[testroot] error: %s\n' "$*" >&2
	exit 1
}

# Bump RECIPE when the steps below change what the tarball holds.
RECIPE=1
key="$(printf '%s %s %s %s %s\n' "$RECIPE" "$ARCH" "$DEBIAN_SUITE" "$DEBIAN_MIRROR" "$PACKAGES" |
	sha256sum | cut -c1-16)"
out="$CACHE_DIR/testroot/$DEBIAN_SUITE-minbase-$ARCH-$key.tar.zst"
if [ -f "$out" ]; then
	printf '%s\n' "$out"
	exit 0
fi

[ "$(id -u)" = 0 ] || die "debootstrap needs root"
for c in debootstrap zstd; do
	command -v "$c" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin"
	command -v "$c" >/dev/null 2>&1 || die "$c is missing (make deps installs it)"
done

mkdir -p "$CACHE_DIR/testroot"
dir="$CACHE_DIR/testroot/build-$ARCH-$key"
rm -rf "$dir"
start="$(date +%s)"
log "debootstrap $DEBIAN_SUITE minbase ($ARCH) + $PACKAGES from $DEBIAN_MIRROR"
if ! debootstrap --variant=minbase --arch="$ARCH" --include="$PACKAGES" \
	"$DEBIAN_SUITE" "$dir" "$DEBIAN_MIRROR" >"$dir.log" 2>&1; then
	tail -n 30 "$dir.log" >&2
	die "debootstrap failed, log: $dir.log"
fi
# Nothing the tests need: downloaded packages and package lists.
rm -rf "$dir/var/cache/apt/archives/"*.deb "$dir/var/lib/apt/lists/"* "$dir/debootstrap"
tar -C "$dir" --numeric-owner -cf - . | zstd -q -T0 -6 -o "$out.tmp"
mv "$out.tmp" "$out"
rm -rf "$dir" "$dir.log"
log "built $(basename "$out") in $(($(date +%s) - start)) s ($(du -h "$out" | cut -f1))"
printf '%s\n' "$out"
