#!/bin/bash
# shellcheck source-path=SCRIPTDIR
# debs.sh DEB_ARCH PACKAGE...: downloads Debian packages of any architecture
# into $CACHE_DIR/debs/DEB_ARCH and prints their paths, one a line.
#
# Uses a private apt configuration under $CACHE_DIR/apt/DEB_ARCH, so the host's
# apt setup (its architectures, its sources) is neither needed nor changed.

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

DEB_ARCH=${1:?usage: debs.sh DEB_ARCH PACKAGE...}
shift
[ $# -gt 0 ] || die "usage: debs.sh DEB_ARCH PACKAGE..."

security_mirror=${DEBIAN_MIRROR%/debian}/debian-security
apt_dir="$CACHE_DIR/apt/$DEB_ARCH"
deb_dir="$CACHE_DIR/debs/$DEB_ARCH"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/etc/preferences.d" "$deb_dir"
touch "$apt_dir/status"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
cat >"$apt_dir/sources.list" <<EOF
deb [arch=$DEB_ARCH signed-by=$keyring] $DEBIAN_MIRROR $DEBIAN_SUITE main
deb [arch=$DEB_ARCH signed-by=$keyring] $DEBIAN_MIRROR $DEBIAN_SUITE-updates main
deb [arch=$DEB_ARCH signed-by=$keyring] $security_mirror $DEBIAN_SUITE-security main
EOF

apt_opts=(
	-o "APT::Architecture=$DEB_ARCH"
	-o "APT::Architectures=$DEB_ARCH"
	-o "Dir::State=$apt_dir"
	-o "Dir::State::Lists=$apt_dir/lists"
	-o "Dir::State::status=$apt_dir/status"
	-o "Dir::Cache=$apt_dir/cache"
	-o "Dir::Etc::SourceList=$apt_dir/sources.list"
	-o "Dir::Etc::SourceParts=/nonexistent"
	-o "Dir::Etc::Preferences=$apt_dir/etc/preferences"
	-o "Dir::Etc::PreferencesParts=$apt_dir/etc/preferences.d"
	-o "Debug::NoLocking=1"
	-q
)

update() {
	local try
	for try in 1 2 3; do
		log "apt ($DEB_ARCH): updating package lists"
		if apt-get "${apt_opts[@]}" update >"$apt_dir/update.log" 2>&1; then
			touch "$apt_dir/updated"
			return
		fi
		# A mirror in mid-sync fails one index now and then: try again.
		[ "$try" = 3 ] || sleep $((try * 5))
	done
	# Still failing: go on if the main suite's index is there (updates and
	# security only add newer versions).
	if compgen -G "$apt_dir/lists/*_dists_${DEBIAN_SUITE}_main_binary-${DEB_ARCH}_Packages*" >/dev/null; then
		log "apt ($DEB_ARCH): warning: some package lists failed to update, using what was fetched:"
		grep -E '^(E|W|Err):' "$apt_dir/update.log" | sed 's/^/[images]   /' >&2 || true
		touch "$apt_dir/updated"
		return
	fi
	cat "$apt_dir/update.log" >&2
	die "apt-get update for $DEB_ARCH failed"
}

# Lists older than a day may name versions the mirror no longer has.
if [ -z "$(find "$apt_dir/updated" -mmin -1440 2>/dev/null)" ]; then
	update
fi

for pkg in "$@"; do
	(cd "$deb_dir" && apt-get "${apt_opts[@]}" download "$pkg" >/dev/null 2>&1) || {
		update
		(cd "$deb_dir" && apt-get "${apt_opts[@]}" download "$pkg" >&2) ||
			die "cannot download $pkg ($DEB_ARCH)"
	}
	ver=$(apt-cache "${apt_opts[@]}" show --no-all-versions "$pkg" | sed -n 's/^Version: //p' | head -n1)
	# apt-get download names files PKG_VERSION_ARCH.deb with ':' as %3a.
	file=$(find "$deb_dir" -maxdepth 1 -name "${pkg}_${ver//:/%3a}_*.deb" -print -quit)
	[ -n "$file" ] || die "downloaded $pkg $ver but cannot find its .deb in $deb_dir"
	printf '%s\n' "$file"
done
