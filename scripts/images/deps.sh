#!/bin/bash
# shellcheck source-path=SCRIPTDIR
# deps.sh [ARCH]: installs the Debian packages the image builds need (apt-get
# runs only when one is missing) and, when ARCH is foreign to this machine,
# makes its binaries runnable through qemu-user-static (binfmt_misc).

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

ARCH=${1:-}

# debootstrap: plumber-api rootfs; qemu-user-static + binfmt-support: foreign
# arches; zstd: the air-gap bundle; ca-certificates + debian-archive-keyring:
# verified downloads; shellcheck: `make images-lint`. Go comes from /usr/local/go.
PKGS=(debootstrap qemu-user-static binfmt-support zstd ca-certificates
	debian-archive-keyring util-linux shellcheck)

missing=()
for p in "${PKGS[@]}"; do
	if ! dpkg-query -W -f '${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
if [ ${#missing[@]} -gt 0 ]; then
	[ "$(id -u)" = 0 ] || die "need root to install: ${missing[*]}"
	log "installing ${missing[*]}"
	apt-get update -q >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v go >/dev/null || die "Go is missing (expected in /usr/local/go/bin)"

if [ -n "$ARCH" ]; then
	arch_setup "$ARCH"
	ensure_binfmt "$ARCH"
fi
