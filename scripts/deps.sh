#!/bin/sh
# Installs the Debian packages the build and the tests need, only when missing.
# Usage: scripts/deps.sh [EXTRA-PACKAGE...] (e.g. the release cross compilers)
set -eu
need=""
# For tests/shellcheck and tests/install (scripts/testroot.sh): shellcheck,
# debootstrap, zstd. ipset: every node's network-policy controller runs it.
# Extra packages as arguments (make test-ha: postgresql).
for pkg in gcc libc6-dev iproute2 iptables ipset shellcheck debootstrap zstd "$@"; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need="$need $pkg"
done
if [ -n "$need" ]; then
	echo "installing:$need"
	apt-get update -qq
	# shellcheck disable=SC2086
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need
fi
