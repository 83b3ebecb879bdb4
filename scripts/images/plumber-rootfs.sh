#!/bin/bash
# shellcheck source-path=SCRIPTDIR
# plumber-rootfs.sh ARCH: builds the Debian bookworm minbase root filesystem of
# the plumber-api image (R, plumber, future, promises, fastmap, tini and a
# non-root user `plumber`), trims it and prints the path of its layer tar.
#
# Cached in $CACHE_DIR/layers keyed by this script, the package list, the Debian
# suite and mirror, the arch and the image tool: unchanged recipes cost nothing.
# Foreign arches use debootstrap --foreign and run the second stage under
# qemu-user-static (binfmt_misc).

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

ARCH=${1:?usage: plumber-rootfs.sh ARCH}
arch_setup "$ARCH"

PKG_FILE="$IMAGES_DIR/plumber-api/packages"
key=$(cache_key "rootfs $ARCH $DEBIAN_SUITE $DEBIAN_MIRROR $SOURCE_DATE_EPOCH $(imagebuild_key)" \
	"$SCRIPTS_DIR/plumber-rootfs.sh" "$PKG_FILE")
layer="$CACHE_DIR/layers/plumber-rootfs-$ARCH-$key.tar"
if [ -f "$layer" ]; then
	log "plumber-api rootfs ($ARCH): cached $(basename "$layer")"
	printf '%s\n' "$layer"
	exit 0
fi

IB=$(imagebuild_bin)
ensure_binfmt "$ARCH"

rootfs="$CACHE_DIR/rootfs/plumber-api-$ARCH-$key"
cleanup() { umount_below "$rootfs"; }
trap cleanup EXIT
cleanup
rm -rf "$rootfs"
mkdir -p "$rootfs"

include=$(grep -v '^#' "$PKG_FILE" | grep -v '^$' | paste -sd, -)
start=$(date +%s)
log "plumber-api rootfs ($ARCH): debootstrap $DEBIAN_SUITE minbase + $include"
# --foreign everywhere keeps one code path: the first stage only downloads and
# unpacks (on the host), the second stage configures inside the chroot (under
# qemu for a foreign arch).
debootstrap --foreign --variant=minbase --arch="$DEB_ARCH" --include="$include" \
	"$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR" >"$rootfs.log" 2>&1 ||
	{ tail -n 30 "$rootfs.log" >&2; die "debootstrap (first stage) failed, log: $rootfs.log"; }

# Keep documentation out of anything dpkg installs from now on (also useful to
# anyone extending the image).
mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d"
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/90bramble-nodoc" <<'EOF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/lintian/*
EOF

log "plumber-api rootfs ($ARCH): second stage$(is_foreign "$ARCH" && echo ' under qemu')"
chroot "$rootfs" /debootstrap/debootstrap --second-stage >>"$rootfs.log" 2>&1 ||
	{ tail -n 30 "$rootfs.log" >&2; die "debootstrap (second stage) failed, log: $rootfs.log"; }
umount_below "$rootfs"

# The non-root user the API runs as. Numeric in the image config (1000:1000)
# so kubelet can verify runAsNonRoot.
chroot "$rootfs" groupadd --gid 1000 plumber
chroot "$rootfs" useradd --uid 1000 --gid 1000 --home-dir /app --no-create-home \
	--shell /usr/sbin/nologin plumber

log "plumber-api rootfs ($ARCH): trimming"
# shellcheck disable=SC2016 # dpkg-query format, not shell
dpkg_list=$(chroot "$rootfs" dpkg-query -W -f '${Package} ${Version}\n')
(
	cd "$rootfs"
	# Documentation, manuals, translations (R's messages stay English).
	find usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete
	find usr/share/doc -mindepth 1 -type d -empty -delete
	rm -rf usr/share/man/* usr/share/info/* usr/share/lintian usr/share/linda usr/share/bug
	find usr/share/locale -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
	# R's own manuals and per-package help, HTML help, tests and demos.
	rm -rf usr/share/R/doc/manual usr/share/R/doc/html/*.html
	for d in usr/lib/R/library/* usr/lib/R/site-library/*; do
		[ -d "$d" ] || continue
		rm -rf "$d/doc" "$d/help" "$d/html" "$d/tests" "$d/demo" "$d/include"
	done
	# Message catalogs of R itself (R answers in English).
	find usr/lib/R/library/translations -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
	# Package manager state that a container never needs.
	rm -rf var/lib/apt/lists/* var/cache/apt/* var/cache/debconf/*-old \
		var/lib/dpkg/*-old var/cache/ldconfig/aux-cache
	find var/log -type f -delete
)
# Smoke test the trimmed R before spending time on the layer.
chroot "$rootfs" /usr/bin/env -i PATH=/usr/bin:/bin TZ=UTC LANG=C.UTF-8 \
	Rscript -e 'suppressPackageStartupMessages({library(plumber); library(future); library(promises); library(fastmap)}); cat("R", as.character(getRversion()), "plumber", as.character(packageVersion("plumber")), "\n")' >&2 ||
	die "R in the plumber-api rootfs does not load its packages"
chroot "$rootfs" /usr/bin/tini --version >&2

(
	cd "$rootfs"
	# Runtime directories are provided by the container runtime.
	rm -rf debootstrap dev/* proc/* sys/* run/* tmp/* var/tmp/*
	rm -f etc/hostname etc/resolv.conf etc/machine-id var/lib/dbus/machine-id
	chmod 1777 tmp var/tmp
	mkdir -p app
	# Backup copies the user tools leave behind.
	rm -f etc/.pwd.lock etc/passwd- etc/group- etc/shadow- etc/gshadow- etc/subuid- etc/subgid-
)
mkdir -p "$CACHE_DIR/layers"
printf '%s\n' "$dpkg_list" >"$CACHE_DIR/layers/plumber-rootfs-$ARCH-$key.packages"

log "plumber-api rootfs ($ARCH): writing layer ($(du -sh "$rootfs" | cut -f1) on disk)"
"$IB" layer -src "$rootfs" -out "$layer.tmp"
mv "$layer.tmp" "$layer"
prune "${layer%.tar}" "$CACHE_DIR/layers/plumber-rootfs-$ARCH-*"
[ -n "${KEEP_ROOTFS:-}" ] || rm -rf "$rootfs"
rm -f "$rootfs.log"
log "plumber-api rootfs ($ARCH): done in $(($(date +%s) - start)) s, layer $(file_size "$layer")"
printf '%s\n' "$layer"
