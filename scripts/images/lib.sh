#!/bin/bash
# shellcheck source-path=SCRIPTDIR
# Shared helpers for scripts/images/*.sh. Source it, do not run it.
# shellcheck disable=SC2034 # variables set here are used by the sourcing scripts

set -euo pipefail
# Keep -e inside $(...) too: a failing step in a function whose output is
# captured must stop the build, not hand back an empty path.
shopt -s inherit_errexit

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SCRIPTS_DIR="$REPO_ROOT/scripts/images"
IMAGES_DIR="$REPO_ROOT/images"

# shellcheck source=../../images/images.env
. "$IMAGES_DIR/images.env"
export SOURCE_DATE_EPOCH

CACHE_DIR=${CACHE_DIR:-/var/cache/bramble-build}
DIST_DIR=${DIST_DIR:-$REPO_ROOT/dist}
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"

log() { printf '[images] %s\n' "$*" >&2; }
die() { printf '[images] error: %s\n' "$*" >&2; exit 1; }

# arch_setup ARCH: ARCH is a Go arch name (amd64, arm64, arm = armv7 hard float).
# Sets GO_ARCH, GO_ARM, DEB_ARCH, QEMU_ARCH.
arch_setup() {
	GO_ARCH=$1
	GO_ARM=
	case "$GO_ARCH" in
	amd64) DEB_ARCH=amd64 QEMU_ARCH=x86_64 ;;
	arm64) DEB_ARCH=arm64 QEMU_ARCH=aarch64 ;;
	arm) DEB_ARCH=armhf QEMU_ARCH=arm GO_ARM=7 ;;
	*) die "unsupported ARCH '$GO_ARCH' (want amd64, arm64 or arm)" ;;
	esac
}

host_arch() { go env GOHOSTARCH; }

# is_foreign ARCH: true when binaries of ARCH need qemu on this machine.
is_foreign() {
	local host
	host=$(host_arch)
	[ "$1" != "$host" ] || return 1
	return 0
}

# cache_key STRING FILE...: short hash over a string and the contents of files,
# used to name cache entries. Any change to a recipe gives a new key.
cache_key() {
	local s=$1
	shift
	{
		printf '%s\n' "$s"
		local f
		for f in "$@"; do
			printf '== %s\n' "${f#"$REPO_ROOT"/}"
			cat "$f"
		done
	} | sha256sum | cut -c1-16
}

# imagebuild_bin: builds tools/imagebuild (its own module, stdlib only) for the
# host once per source change and prints the binary's path.
imagebuild_bin() {
	local key bin
	key=$(cache_key "$(go version)" "$REPO_ROOT"/tools/imagebuild/go.mod "$REPO_ROOT"/tools/imagebuild/*.go)
	bin="$CACHE_DIR/tools/imagebuild-$key"
	if [ ! -x "$bin" ]; then
		log "building imagebuild tool"
		mkdir -p "$CACHE_DIR/tools"
		(cd "$REPO_ROOT/tools/imagebuild" && GOFLAGS=-mod=mod GOWORK=off CGO_ENABLED=0 \
			go build -trimpath -o "$bin.tmp" .)
		mv "$bin.tmp" "$bin"
	fi
	printf '%s\n' "$bin"
}

# imagebuild_key: hash of the image tool's sources; part of every layer key.
imagebuild_key() {
	cache_key imagebuild "$REPO_ROOT"/tools/imagebuild/go.mod "$REPO_ROOT"/tools/imagebuild/*.go
}

# ensure_binfmt ARCH: make foreign binaries runnable through qemu-user-static.
ensure_binfmt() {
	is_foreign "$1" || return 0
	arch_setup "$1"
	local dir=/proc/sys/fs/binfmt_misc
	if [ ! -e "$dir/register" ]; then
		log "mounting binfmt_misc"
		mount -t binfmt_misc binfmt_misc "$dir"
	fi
	if [ ! -e "$dir/qemu-$QEMU_ARCH" ]; then
		local conf="/usr/lib/binfmt.d/qemu-$QEMU_ARCH.conf"
		[ -f "$conf" ] || die "$conf missing: run 'make images-deps ARCH=$1'"
		log "registering $conf"
		cat "$conf" >"$dir/register"
	fi
	if [ "$(head -n1 "$dir/qemu-$QEMU_ARCH")" != enabled ]; then
		echo 1 >"$dir/qemu-$QEMU_ARCH"
	fi
}

# umount_below DIR: unmount everything mounted at or under DIR, deepest first.
umount_below() {
	local dir m
	dir=$(realpath -m "$1")
	awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/self/mounts |
		sort -r | while read -r m; do
		umount -l "$m" 2>/dev/null || true
	done
}

# with_lock: serialize builds that share the cache.
with_lock() {
	mkdir -p "$CACHE_DIR"
	exec 9>"$CACHE_DIR/.lock"
	if ! flock -n 9; then
		log "waiting for another image build to finish ($CACHE_DIR/.lock)"
		flock 9
	fi
}

# file_size FILE: human readable size for logs.
file_size() { du -h --apparent-size "$1" | cut -f1; }

# prune KEEP GLOB: removes the cache entries matching GLOB (superseded builds
# of the same thing: same name and arch, older recipe) except KEEP and files
# named KEEP.*.
prune() {
	local keep=$1 glob=$2 p
	for p in $glob; do
		[ -e "$p" ] || continue
		case "$p" in
		"$keep" | "$keep".*) ;;
		*) rm -rf "$p" ;;
		esac
	done
}
