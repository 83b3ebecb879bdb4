#!/usr/bin/env bash
# build-helpers.sh: build bramble's containerd (cmd/containerd, from this
# repository's module: the plugin set bramble uses), the helper executables
# containerd must exec (runc, containerd-shim-runc-v2 and the CNI plugins),
# plus crictl, from their Go modules and pack them into one deterministic,
# zstd-compressed tar that pkg/bundle embeds.
#
# Usage: scripts/build-helpers.sh [-a ARCH] [-o OUT]
#
# Environment (all optional):
#   ARCH                 amd64 | arm64 | arm (armhf, GOARM=7); default: go env GOARCH
#   CACHE_DIR            build cache, default /var/cache/bramble-build (uses helpers/)
#   OUT                  archive path, default pkg/bundle/assets/helpers-$ARCH.tar.zst
#                        (a sidecar "$OUT.sha256" holds the archive's sha256)
#   SECCOMP              auto (default) | yes | no: build runc with libseccomp
#   ZSTD_LEVEL           zstd level, default 19 (20..22 imply --ultra)
#   RUNC_VERSION, CNI_PLUGINS_VERSION, CONTAINERD_VERSION, CNI_PLUGINS,
#   CRICTL_VERSION
#
# Everything is built in throwaway modules under $CACHE_DIR/helpers, never in
# the repo.
# Outputs are cached by (versions, arch, toolchain, this script's hash): a warm
# run with nothing changed only computes the key and compares one file.
set -euo pipefail

RUNC_VERSION="${RUNC_VERSION:-v1.5.2}"
CNI_PLUGINS_VERSION="${CNI_PLUGINS_VERSION:-v1.9.1}"
# Only some cri-tools tags are on the Go module proxy (others answer 403):
# check with `go mod download -json sigs.k8s.io/cri-tools@VERSION`.
CRICTL_VERSION="${CRICTL_VERSION:-v1.36.0}"
# The shim must match the containerd bramble links in: read it from go.mod.
CONTAINERD_DEFAULT_VERSION="v2.4.2"
CNI_PLUGINS="${CNI_PLUGINS:-bridge host-local loopback portmap bandwidth firewall}"
REQUIRED_BINS="containerd runc containerd-shim-runc-v2 bridge host-local loopback portmap crictl"
ZSTD_LEVEL="${ZSTD_LEVEL:-19}"
SECCOMP="${SECCOMP:-auto}"
CACHE_DIR="${CACHE_DIR:-/var/cache/bramble-build}"
# Other build steps share CACHE_DIR: keep to a subdirectory.
HCACHE="$CACHE_DIR/helpers"

SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
ROOT="$(cd "$(dirname "$SELF")/.." && pwd)"

log() { printf 'helpers: %s\n' "$*" >&2; }
die() { printf 'helpers: error: %s\n' "$*" >&2; exit 1; }

while getopts 'a:o:h' opt; do
	case "$opt" in
	a) ARCH="$OPTARG" ;;
	o) OUT="$OPTARG" ;;
	h) sed -n '2,22p' "$SELF"; exit 0 ;;
	*) exit 2 ;;
	esac
done

command -v go >/dev/null 2>&1 || die "go not found in PATH"
ARCH="${ARCH:-$(go env GOARCH)}"

GOARM=""
case "$ARCH" in
amd64) DEB_ARCH=amd64; TRIPLET=x86_64-linux-gnu ;;
arm64) DEB_ARCH=arm64; TRIPLET=aarch64-linux-gnu ;;
arm | armhf) ARCH=arm; DEB_ARCH=armhf; TRIPLET=arm-linux-gnueabihf; GOARM=7 ;;
*) die "unsupported ARCH '$ARCH' (want amd64, arm64 or arm)" ;;
esac
OUT="${OUT:-$ROOT/pkg/bundle/assets/helpers-$ARCH.tar.zst}"

if [ -z "${CONTAINERD_VERSION:-}" ]; then
	CONTAINERD_VERSION="$(awk '$1 == "github.com/containerd/containerd/v2" && $2 ~ /^v/ { print $2; exit }' "$ROOT/go.mod" 2>/dev/null || true)"
	if [ -z "$CONTAINERD_VERSION" ]; then
		CONTAINERD_VERSION="$CONTAINERD_DEFAULT_VERSION"
		log "warning: containerd not found in go.mod, using $CONTAINERD_VERSION"
	fi
fi

# ---------------------------------------------------------------- packages

HOST_DEB_ARCH="$(dpkg --print-architecture 2>/dev/null || echo unknown)"
if [ "$DEB_ARCH" = "$HOST_DEB_ARCH" ]; then
	CC_BIN=gcc
	CC_PKGS=(gcc libc6-dev)
else
	CC_BIN="$TRIPLET-gcc"
	# libc6-dev-*-cross is only a Recommends of the cross compiler.
	CC_PKGS=("gcc-${TRIPLET//_/-}" "libc6-dev-$DEB_ARCH-cross")
fi

as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		die "need root to run: $*"
	fi
}

# missing_pkgs PKG...: print the packages that are not installed.
missing_pkgs() {
	local p st
	for p in "$@"; do
		st="$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)"
		case "$st" in ii*) ;; *) printf '%s\n' "$p" ;; esac
	done
}

APT_UPDATED=""
# ensure_pkgs PKG...: apt-get install whatever is missing; no-op otherwise.
ensure_pkgs() {
	local missing p a
	missing="$(missing_pkgs "$@")"
	[ -n "$missing" ] || return 0
	command -v apt-get >/dev/null 2>&1 || die "missing packages ($(echo "$missing" | tr '\n' ' ')) and no apt-get"
	for p in $missing; do
		case "$p" in
		*:*)
			a="${p##*:}"
			if [ "$a" != "$HOST_DEB_ARCH" ] && ! dpkg --print-foreign-architectures | grep -qx "$a"; then
				log "adding dpkg architecture $a"
				as_root dpkg --add-architecture "$a"
				APT_UPDATED=""
			fi
			;;
		esac
	done
	if [ -z "$APT_UPDATED" ]; then
		# A mirror mid-sync fails one index; what we need may still be there.
		as_root apt-get update -qq >&2 ||
			{ sleep 5; as_root apt-get update -qq >&2; } ||
			log "warning: apt-get update reported errors, trying to install anyway"
		APT_UPDATED=1
	fi
	# shellcheck disable=SC2086 # word splitting intended
	log "installing:" $missing
	# shellcheck disable=SC2086
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		-o DPkg::Lock::Timeout=600 --no-install-recommends $missing >&2
}

ensure_pkgs zstd tar binutils pkg-config "${CC_PKGS[@]}" || die "cannot install build packages"
command -v "$CC_BIN" >/dev/null 2>&1 || die "$CC_BIN not found"

USE_SECCOMP=no
case "$SECCOMP" in
no) ;;
yes | auto)
	if ensure_pkgs "libseccomp-dev:$DEB_ARCH" && [ -e "/usr/lib/$TRIPLET/libseccomp.a" ]; then
		USE_SECCOMP=yes
	elif [ "$SECCOMP" = yes ]; then
		die "libseccomp-dev:$DEB_ARCH (static libseccomp.a) is not available"
	else
		log "warning: libseccomp-dev:$DEB_ARCH unavailable: building runc WITHOUT seccomp"
	fi
	;;
*) die "SECCOMP must be auto, yes or no" ;;
esac

# ---------------------------------------------------------------- cache keys

sha() { sha256sum | cut -c1-64; }

GO_VERSION="$(go env GOVERSION)"
SCRIPT_SHA="$(sha <"$SELF")"
CC_VERSION="$("$CC_BIN" --version | head -n1)"
SECCOMP_VERSION=none
if [ "$USE_SECCOMP" = yes ]; then
	SECCOMP_VERSION="$(dpkg-query -W -f='${Version}' "libseccomp-dev:$DEB_ARCH")"
fi

RUNC_TAGS="netgo osusergo urfave_cli_no_docs"
[ "$USE_SECCOMP" = yes ] && RUNC_TAGS="seccomp $RUNC_TAGS"
SHIM_TAGS="urfave_cli_no_docs no_grpc osusergo netgo static_build"
CONTAINERD_TAGS="urfave_cli_no_docs osusergo netgo static_build"
# containerd is built from this repository: its key is the source of every
# package of this repository it imports (go list -deps) and module versions.
containerd_src_files() {
	(cd "$ROOT" && GOOS=linux GOARCH="$ARCH" go list -deps -tags "$(echo "$CONTAINERD_TAGS" | tr ' ' ,)" \
		-f '{{if not .Standard}}{{range .GoFiles}}{{$.Dir}}/{{.}}{{"\n"}}{{end}}{{end}}' ./cmd/containerd) |
		grep "^$ROOT/" | sort
}
CONTAINERD_FILES="$(containerd_src_files)" || die "listing containerd's packages failed"
# shellcheck disable=SC2086 # one path per line, none with spaces
CONTAINERD_SRC_SHA="$(cat $CONTAINERD_FILES "$ROOT/go.mod" "$ROOT/go.sum" | sha)"
# Not urfave_cli_no_docs: crictl's completion command needs the fish generator.
CRICTL_LDFLAGS="-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION"

# component_key NAME VERSION EXTRA...: the cache key of one component.
component_key() {
	printf '%s\n' "$SCRIPT_SHA" "$ARCH" "$GOARM" "$GO_VERSION" "$@" | sha
}
RUNC_KEY="$(component_key runc "$RUNC_VERSION" "$RUNC_TAGS" "$CC_VERSION" "$SECCOMP_VERSION")"
SHIM_KEY="$(component_key shim "$CONTAINERD_VERSION" "$SHIM_TAGS")"
CONTAINERD_KEY="$(component_key containerd "$CONTAINERD_VERSION" "$CONTAINERD_TAGS" "$CONTAINERD_SRC_SHA")"
CNI_KEY="$(component_key cni "$CNI_PLUGINS_VERSION" "$CNI_PLUGINS")"
CRICTL_KEY="$(component_key crictl "$CRICTL_VERSION" "$CRICTL_LDFLAGS")"
ARCHIVE_KEY="$(printf '%s\n' "$CONTAINERD_KEY" "$RUNC_KEY" "$SHIM_KEY" "$CNI_KEY" "$CRICTL_KEY" "$ZSTD_LEVEL" | sha)"

mkdir -p "$HCACHE/archives" "$HCACHE/bin/$ARCH" "$HCACHE/mod" "$HCACHE/tmp"
# Serialise concurrent runs (different ARCHes share the module dirs).
if command -v flock >/dev/null 2>&1; then
	exec 9>"$HCACHE/.lock"
	flock 9
fi

CACHED="$HCACHE/archives/helpers-$ARCH-${ARCHIVE_KEY:0:16}.tar.zst"

# install_archive: copy the cached archive to $OUT unless already identical
# (an unchanged file keeps its mtime, so nothing downstream rebuilds).
install_archive() {
	mkdir -p "$(dirname "$OUT")"
	if ! cmp -s "$CACHED" "$OUT"; then
		cp "$CACHED" "$OUT.tmp.$$" && mv -f "$OUT.tmp.$$" "$OUT"
	fi
	if ! cmp -s "$CACHED.sha256" "$OUT.sha256"; then
		cp "$CACHED.sha256" "$OUT.sha256.tmp.$$" && mv -f "$OUT.sha256.tmp.$$" "$OUT.sha256"
	fi
}

if [ -s "$CACHED" ] && [ -s "$CACHED.sha256" ]; then
	install_archive
	log "up to date: ${OUT#"$ROOT"/} ($(stat -c %s "$OUT") bytes, seccomp=$USE_SECCOMP)"
	exit 0
fi

# prune DIR GLOB...: keep the $KEEP newest entries matching each GLOB.
KEEP=3
prune() {
	local dir="$1" g
	shift
	for g in "$@"; do
		find "$dir" -mindepth 1 -maxdepth 1 -name "$g" -printf '%T@ %p\n' |
			sort -rn | tail -n +$((KEEP + 1)) | cut -d' ' -f2- |
			while IFS= read -r old; do rm -rf "$old" "$old.sha256"; done
	done
}

# ---------------------------------------------------------------- building

START="$(date +%s)"
# A fixed Go environment: the caller's GOFLAGS (the top-level Makefile
# exports its own -tags), CGO_* flags or GOAMD64 must not leak into the builds.
export GOTOOLCHAIN=local GOWORK=off GOOS=linux GOARCH="$ARCH" GOARM \
	GOFLAGS=-buildvcs=false GOAMD64=v1 GOARM64=v8.0
unset GOEXPERIMENT CGO_CFLAGS CGO_CPPFLAGS CGO_CXXFLAGS CGO_LDFLAGS
[ -n "$GOARM" ] || unset GOARM

# wrapper_module NAME MODULE VERSION [EXTRA]: a throwaway main module that
# requires exactly MODULE@VERSION (so MVS selects that module's own dependency
# versions), with EXTRA (go.mod directives) appended.
wrapper_module() {
	local dir="$HCACHE/mod/$1" want
	mkdir -p "$dir"
	want="$(printf 'module bramble.invalid/helpers/%s\n\ngo %s\n\nrequire %s %s\n' \
		"$1" "${GO_VERSION#go}" "$2" "$3")"
	[ -z "${4:-}" ] || want="$want"$'\n\n'"$4"
	if [ "$(cat "$dir/go.mod" 2>/dev/null || true)" != "$want" ]; then
		printf '%s\n' "$want" >"$dir/go.mod"
		rm -f "$dir/go.sum"
	fi
	printf '%s\n' "$dir"
}

# upstream_replaces MODULE VERSION: MODULE@VERSION's own replace directives
# (only a main module's apply, so a wrapper must repeat them) as one replace
# block, with relative directory targets made absolute in the module cache.
# Prints nothing when there are none.
upstream_replaces() {
	local json gomod moddir
	# Outside any module, so nothing is recorded anywhere.
	json="$(cd "$HCACHE/tmp" && go mod download -json "$1@$2")" ||
		die "cannot download $1@$2${json:+: $json}"
	gomod="$(printf '%s\n' "$json" | sed -n 's/^\t"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
	moddir="$(printf '%s\n' "$json" | sed -n 's/^\t"Dir": "\(.*\)",\{0,1\}$/\1/p')"
	if [ ! -f "$gomod" ] || [ ! -d "$moddir" ]; then
		die "go mod download $1@$2: no go.mod or source dir"
	fi
	go mod edit -print "$gomod" | awk -v dir="$moddir" '
		{ sub(/[ \t]*\/\/.*/, "") }
		/^replace[ \t]*\($/ { blk = 1; next }
		blk && /^\)/ { blk = 0; next }
		!blk && !/^replace[ \t]/ { next }
		{
			sub(/^replace[ \t]+/, ""); sub(/^[ \t]+/, "")
			n = split($0, f, /[ \t]+/)
			if (n < 3) next
			arrow = (f[2] == "=>") ? 2 : 3
			# A directory target (no version) relative to the module root.
			if (n == arrow + 1 && f[n] ~ /^\.\.?\//) {
				sub(/^\.\//, "", f[n])
				f[n] = dir "/" f[n]
			}
			line = f[1]
			for (i = 2; i <= n; i++) line = line " " f[i]
			out = out "\t" line "\n"
		}
		END { if (out != "") printf "replace (\n%s)\n", out }
	'
}

# check_static FILE: fail when FILE asks for a dynamic loader.
check_static() {
	if readelf -lW "$1" | grep -q 'Requesting program interpreter'; then
		die "$1 is dynamically linked"
	fi
}

# build_component NAME KEY FUNC: run FUNC OUTDIR unless the cache has it.
build_component() {
	local name="$1" key="$2" fn="$3" dir tmp t0
	dir="$HCACHE/bin/$ARCH/$name-${key:0:16}"
	if [ -e "$dir/.ok" ]; then
		printf '%s\n' "$dir"
		return 0
	fi
	t0="$(date +%s)"
	log "building $name for $ARCH ..."
	tmp="$(mktemp -d "$HCACHE/tmp/$name.XXXXXX")"
	"$fn" "$tmp" >&2 || { rm -rf "$tmp"; die "building $name failed"; }
	for f in "$tmp"/*; do check_static "$f"; done
	touch "$tmp/.ok"
	rm -rf "$dir"
	mv "$tmp" "$dir"
	log "built $name in $(($(date +%s) - t0))s"
	printf '%s\n' "$dir"
}

build_runc() {
	local dir ldflags=(-s -w -linkmode external) mode=()
	dir="$(wrapper_module runc github.com/opencontainers/runc "$RUNC_VERSION")"
	# Static PIE (as upstream does) where the libc ships rcrt1.o.
	case "$ARCH" in
	amd64 | arm64) mode=(-buildmode=pie); ldflags+=(-extldflags -static-pie) ;;
	*) ldflags+=(-extldflags -static) ;;
	esac
	local cross=()
	if [ "$DEB_ARCH" != "$HOST_DEB_ARCH" ]; then
		cross=(PKG_CONFIG_LIBDIR="/usr/lib/$TRIPLET/pkgconfig:/usr/share/pkgconfig")
	fi
	(cd "$dir" && env "${cross[@]}" CGO_ENABLED=1 CC="$CC_BIN" \
		go build -mod=mod -trimpath "${mode[@]}" -tags "$RUNC_TAGS" \
		-ldflags "${ldflags[*]}" -o "$1/runc" github.com/opencontainers/runc)
}

build_shim() {
	local dir pkg=github.com/containerd/containerd/v2
	dir="$(wrapper_module containerd "$pkg" "$CONTAINERD_VERSION")"
	(cd "$dir" && CGO_ENABLED=0 go build -mod=mod -trimpath -tags "$SHIM_TAGS" \
		-ldflags "-s -w -X $pkg/version.Version=$CONTAINERD_VERSION -X $pkg/version.Package=$pkg" \
		-o "$1/containerd-shim-runc-v2" "$pkg/cmd/containerd-shim-runc-v2")
}

# bramble's containerd: cmd/containerd in this repository's module, so the
# versions are go.sum's (the ones bramble's client code links) and the Go
# build cache is shared with bin/bramble's.
build_containerd() {
	local pkg=github.com/containerd/containerd/v2
	(cd "$ROOT" && CGO_ENABLED=0 go build -mod=readonly -trimpath -tags "$CONTAINERD_TAGS" \
		-ldflags "-s -w -X $pkg/version.Version=$CONTAINERD_VERSION -X $pkg/version.Package=$pkg" \
		-o "$1/containerd" ./cmd/containerd)
}

cni_pkg() {
	case "$1" in
	host-local | static | dhcp) echo "plugins/ipam/$1" ;;
	portmap | bandwidth | firewall | tuning | sbr | vrf) echo "plugins/meta/$1" ;;
	*) echo "plugins/main/$1" ;;
	esac
}

build_cni() {
	local dir mod=github.com/containernetworking/plugins pkgs=() p
	dir="$(wrapper_module cni-plugins "$mod" "$CNI_PLUGINS_VERSION")"
	for p in $CNI_PLUGINS; do pkgs+=("$mod/$(cni_pkg "$p")"); done
	(cd "$dir" && CGO_ENABLED=0 go build -mod=mod -trimpath \
		-ldflags "-s -w -X $mod/pkg/utils/buildversion.BuildVersion=$CNI_PLUGINS_VERSION" \
		-o "$1/" "${pkgs[@]}")
}

build_crictl() {
	local dir mod=sigs.k8s.io/cri-tools replaces
	# (set -e is off here: build_component calls this under ||.)
	replaces="$(upstream_replaces "$mod" "$CRICTL_VERSION")" || return 1
	[ -z "$replaces" ] || log "crictl: using $mod@$CRICTL_VERSION's replace directives"
	dir="$(wrapper_module cri-tools "$mod" "$CRICTL_VERSION" "$replaces")" || return 1
	(cd "$dir" && CGO_ENABLED=0 go build -mod=mod -trimpath -ldflags "$CRICTL_LDFLAGS" \
		-o "$1/crictl" "$mod/cmd/crictl")
}

CONTAINERD_DIR="$(build_component "containerd-$CONTAINERD_VERSION" "$CONTAINERD_KEY" build_containerd)"
RUNC_DIR="$(build_component "runc-$RUNC_VERSION" "$RUNC_KEY" build_runc)"
SHIM_DIR="$(build_component "shim-$CONTAINERD_VERSION" "$SHIM_KEY" build_shim)"
CNI_DIR="$(build_component "cni-$CNI_PLUGINS_VERSION" "$CNI_KEY" build_cni)"
CRICTL_DIR="$(build_component "crictl-$CRICTL_VERSION" "$CRICTL_KEY" build_crictl)"

STAGE="$(mktemp -d "$HCACHE/tmp/stage.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
mkdir "$STAGE/bin"
cp "$CONTAINERD_DIR/containerd" "$RUNC_DIR/runc" "$SHIM_DIR/containerd-shim-runc-v2" "$CRICTL_DIR/crictl" "$STAGE/bin/"
for p in $CNI_PLUGINS; do cp "$CNI_DIR/$p" "$STAGE/bin/"; done
for b in $REQUIRED_BINS; do [ -f "$STAGE/bin/$b" ] || die "bin/$b missing"; done
chmod 0755 "$STAGE/bin" "$STAGE"/bin/*

# Smoke-test what this machine can run.
if [ "$DEB_ARCH" = "$HOST_DEB_ARCH" ]; then
	"$STAGE/bin/containerd" --version >/dev/null || die "containerd does not run"
	"$STAGE/bin/runc" --version >/dev/null || die "runc does not run"
	"$STAGE/bin/containerd-shim-runc-v2" -v >/dev/null || die "shim does not run"
	CNI_COMMAND=VERSION "$STAGE/bin/bridge" </dev/null >/dev/null || die "bridge does not run"
	v="$("$STAGE/bin/crictl" --version </dev/null)" || die "crictl does not run"
	[ "$v" = "crictl version $CRICTL_VERSION" ] || die "crictl --version says '$v'"
	if [ "$USE_SECCOMP" = yes ]; then
		"$STAGE/bin/runc" features | grep -q '"enabled": *true' || die "runc lacks seccomp"
	fi
fi

# Deterministic tar: sorted names, fixed mtime, owner 0, fixed modes.
ULTRA=()
[ "$ZSTD_LEVEL" -gt 19 ] && ULTRA=(--ultra)
LC_ALL=C tar --sort=name --format=ustar --owner=0 --group=0 --numeric-owner \
	--mtime=@0 --mode=u=rwx,go=rx -C "$STAGE" -cf - bin |
	zstd -q -T0 "${ULTRA[@]}" "-$ZSTD_LEVEL" -o "$STAGE/archive.tar.zst"
sha <"$STAGE/archive.tar.zst" >"$STAGE/archive.tar.zst.sha256"
mv -f "$STAGE/archive.tar.zst.sha256" "$CACHED.sha256"
mv -f "$STAGE/archive.tar.zst" "$CACHED"
install_archive
prune "$HCACHE/archives" "helpers-$ARCH-*.tar.zst"
prune "$HCACHE/bin/$ARCH" "runc-*" "shim-*" "cni-*" "crictl-*"

for f in "$STAGE"/bin/*; do
	log "  $(printf '%-26s %9s bytes' "bin/${f##*/}" "$(stat -c %s "$f")")"
done
log "built ${OUT#"$ROOT"/}: $(stat -c %s "$OUT") bytes (zstd -$ZSTD_LEVEL, seccomp=$USE_SECCOMP) in $(($(date +%s) - START))s"
