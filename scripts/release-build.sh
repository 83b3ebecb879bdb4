#!/usr/bin/env bash
# release-build.sh: build one user-facing release binary, dist/bramble-<arch>:
# the real bramble binary (static, cgo, cross-compiled with Debian's gcc
# cross compilers) packed as a zstd-compressed tar into the small launcher
# (cmd/launcher, pkg/launcher) that unpacks it once and execs it.
#
# Usage: scripts/release-build.sh -a ARCH -o OUT
#   ARCH   amd64 | arm64 | armhf (Go: GOARCH=arm GOARM=7)
#
# Environment:
#   RELEASE_LDFLAGS  the Makefile's -ldflags (version stamps), required
#   GO_TAGS          build tags, default netgo,osusergo,kustomize_disable_go_plugin_support,bramble_assets (the Makefile's)
#   ZSTD_LEVEL       payload compression, default 19 (20..22 imply --ultra)
#   ZSTD_LONG        zstd long-distance window log, default 27 (128 MiB;
#                    the launcher accepts up to 27), 0 to turn it off
#   CACHE_DIR        default /var/cache/bramble-build (uses release/)
#   RELEASE_CGO      1: cgo, static glibc, mattn/go-sqlite3 (default for amd64
#                    and arm64); 0: pure Go, kine's modernc.org/sqlite (default
#                    for armhf: a static glibc bramble for armhf crashes at
#                    start, in glibc's IRELATIVE/ifunc set-up, before Go runs)
#
# Needs the embedded assets of ARCH in the tree (make helpers ARCH=...,
# pkg/pause/assets/pause-<goarch>.tar): mk/release.mk makes them first.
# Both steps are cached by a content hash of their inputs (the module's files
# both programs are built from, as go list reports them, with the embedded
# assets; go.mod, go.sum, flags, toolchains, this script): the raw binary
# under $CACHE_DIR/release/raw, the packed one under $CACHE_DIR/release/bin.
# A warm run with nothing changed hashes the inputs and copies one file.
set -euo pipefail

ZSTD_LEVEL="${ZSTD_LEVEL:-19}"
ZSTD_LONG="${ZSTD_LONG:-27}"
GO_TAGS="${GO_TAGS:-netgo,osusergo,kustomize_disable_go_plugin_support,bramble_assets}"
CACHE_DIR="${CACHE_DIR:-/var/cache/bramble-build}"
RCACHE="$CACHE_DIR/release"

SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
ROOT="$(cd "$(dirname "$SELF")/.." && pwd)"

log() { printf 'release: %s\n' "$*" >&2; }
die() { printf 'release: error: %s\n' "$*" >&2; exit 1; }

ARCH="" OUT=""
while getopts 'a:o:h' opt; do
	case "$opt" in
	a) ARCH="$OPTARG" ;;
	o) OUT="$OPTARG" ;;
	h) sed -n '2,24p' "$SELF"; exit 0 ;;
	*) exit 2 ;;
	esac
done
{ [ -n "$ARCH" ] && [ -n "$OUT" ]; } || die "usage: $0 -a amd64|arm64|armhf -o OUT"
[ -n "${RELEASE_LDFLAGS:-}" ] || die "RELEASE_LDFLAGS is not set (run through make release)"

GOARM="" CGO=1
case "$ARCH" in
amd64) GOARCH=amd64; DEB_ARCH=amd64; TRIPLET=x86_64-linux-gnu ;;
arm64) GOARCH=arm64; DEB_ARCH=arm64; TRIPLET=aarch64-linux-gnu ;;
armhf) GOARCH=arm; GOARM=7; DEB_ARCH=armhf; TRIPLET=arm-linux-gnueabihf; CGO=0 ;;
*) die "unsupported ARCH '$ARCH' (want amd64, arm64 or armhf)" ;;
esac
CGO="${RELEASE_CGO:-$CGO}"
if [ "$CGO" = 0 ]; then
	CC_BIN=none
elif [ "$DEB_ARCH" = "$(dpkg --print-architecture 2>/dev/null || true)" ]; then
	CC_BIN=gcc
else
	CC_BIN="$TRIPLET-gcc"
fi
if [ "$CGO" != 0 ] && ! command -v "$CC_BIN" >/dev/null 2>&1; then
	die "$CC_BIN not found: run make release-deps (gcc-${TRIPLET//_/-}, libc6-dev-$DEB_ARCH-cross)"
fi
command -v zstd >/dev/null 2>&1 || die "zstd not found: run make release-deps"

ASSETS=("pkg/bundle/assets/helpers-$GOARCH.tar.zst" "pkg/bundle/assets/helpers-$GOARCH.tar.zst.sha256"
	"pkg/pause/assets/pause-$GOARCH.tar")
for a in "${ASSETS[@]}"; do
	[ -s "$ROOT/$a" ] || die "$a is missing (make helpers ARCH=$GOARCH and the pause image first)"
done

# ---------------------------------------------------------------- cache keys

sha() { sha256sum | cut -c1-64; }

export GOOS=linux GOARCH GOTOOLCHAIN=local GOWORK=off
if [ -n "$GOARM" ]; then export GOARM; else unset GOARM; fi
unset GOEXPERIMENT CGO_CFLAGS CGO_CPPFLAGS CGO_CXXFLAGS CGO_LDFLAGS

# The files of this module that bramble and the launcher are built from, for
# this arch (build constraints applied): Go, C and embedded files.
# shellcheck disable=SC2016 # a Go template, not shell
LIST_FMT='{{if .Module}}{{if .Module.Main}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}}
{{end}}{{range .CgoFiles}}{{$d}}/{{.}}
{{end}}{{range .CFiles}}{{$d}}/{{.}}
{{end}}{{range .HFiles}}{{$d}}/{{.}}
{{end}}{{range .SFiles}}{{$d}}/{{.}}
{{end}}{{range .EmbedFiles}}{{$d}}/{{.}}
{{end}}{{end}}{{end}}'
source_list() {
	(cd "$ROOT" &&
		GOFLAGS=-buildvcs=false CGO_ENABLED=$CGO go list -deps -tags "$GO_TAGS" -f "$LIST_FMT" ./cmd/bramble &&
		GOFLAGS=-buildvcs=false CGO_ENABLED=0 go list -deps -f "$LIST_FMT" ./cmd/launcher) | LC_ALL=C sort -u
}
FILES="$(source_list)" || die "go list failed"
SOURCES_SHA="$( (cd "$ROOT" && printf '%s\n' "$FILES" | tr '\n' '\0' | xargs -0 sha256sum &&
	sha256sum go.mod go.sum) | sed "s#  $ROOT/#  #" | sha)"
GO_VERSION="$(go env GOVERSION)"
CC_VERSION=none
[ "$CGO" = 0 ] || CC_VERSION="$("$CC_BIN" --version | head -n1)"
SCRIPT_SHA="$(sha <"$SELF")"
BUILD_KEY="$(printf '%s\n' "$SCRIPT_SHA" "$ARCH" "$CGO" "$GO_VERSION" "$CC_VERSION" "$GO_TAGS" \
	"$RELEASE_LDFLAGS" "$SOURCES_SHA" | sha)"
PACK_KEY="$(printf '%s\n' "$BUILD_KEY" "$ZSTD_LEVEL" "$ZSTD_LONG" "$(zstd --version)" | sha)"

RAW="$RCACHE/raw/bramble-$ARCH-${BUILD_KEY:0:16}"
PACKED="$RCACHE/bin/bramble-$ARCH-${PACK_KEY:0:16}"
mkdir -p "$RCACHE/raw" "$RCACHE/bin" "$RCACHE/tmp"

# One build per arch at a time (the payload file in cmd/launcher is shared).
exec 9>"$RCACHE/.lock-$ARCH"
flock 9

install_out() {
	mkdir -p "$(dirname "$OUT")"
	if ! cmp -s "$PACKED" "$OUT"; then
		cp "$PACKED" "$OUT.tmp.$$" && mv -f "$OUT.tmp.$$" "$OUT"
	fi
	log "$ARCH: ${OUT#"$ROOT"/} $(stat -c %s "$OUT") bytes ($(cat "$PACKED.info"))"
}

if [ -s "$PACKED" ] && [ -s "$PACKED.info" ]; then
	install_out
	exit 0
fi

# keep DIR PREFIX: keep the 2 newest files DIR/PREFIX* (and their .info).
keep() {
	find "$1" -maxdepth 1 -name "$2*" ! -name '*.info' -printf '%T@ %p\n' | sort -rn | tail -n +3 |
		cut -d' ' -f2- | while IFS= read -r old; do rm -f "$old" "$old.info"; done
}

TMP="$(mktemp -d "$RCACHE/tmp/$ARCH.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

# ---------------------------------------------------------------- raw binary

if [ -s "$RAW" ]; then
	log "$ARCH: cached raw binary ($(stat -c %s "$RAW") bytes)"
else
	log "$ARCH: building bramble (GOARCH=$GOARCH${GOARM:+ GOARM=$GOARM}, CGO_ENABLED=$CGO, CC=$CC_BIN, static) ..."
	t0="$(date +%s)"
	if [ "$CGO" = 0 ]; then
		(cd "$ROOT" && CGO_ENABLED=0 GOFLAGS="-buildvcs=false -trimpath -tags=$GO_TAGS" \
			go build -ldflags "$RELEASE_LDFLAGS" -o "$TMP/bramble" ./cmd/bramble)
	else
		# Static: one file that runs on any glibc or musl distribution. netgo
		# and osusergo keep glibc's NSS out; the linker's warnings about dlopen
		# (SQLite extensions, pkcs11, plugin: none used) are filtered out.
		(cd "$ROOT" && CGO_ENABLED=1 CC="$CC_BIN" \
			GOFLAGS="-buildvcs=false -trimpath -tags=$GO_TAGS" \
			go build -ldflags "$RELEASE_LDFLAGS -linkmode external -extldflags -static" \
			-o "$TMP/bramble" ./cmd/bramble) 2> >(grep -v -e 'statically linked applications requires at runtime' \
			-e 'in function' -e '^# github.com/bramble-pi/bramble/cmd/bramble$' >&2)
	fi
	if readelf -lW "$TMP/bramble" | grep -q 'Requesting program interpreter'; then
		die "$ARCH: bramble is dynamically linked"
	fi
	mv "$TMP/bramble" "$RAW.tmp" && mv -f "$RAW.tmp" "$RAW"
	keep "$RCACHE/raw" "bramble-$ARCH-"
	log "$ARCH: built bramble in $(($(date +%s) - t0))s: $(stat -c %s "$RAW") bytes"
fi

# ---------------------------------------------------------------- packing

t0="$(date +%s)"
mkdir -p "$TMP/stage/bin"
cp "$RAW" "$TMP/stage/bin/bramble"
chmod 0755 "$TMP/stage/bin" "$TMP/stage/bin/bramble"
ZOPTS=(-q -T0 "-$ZSTD_LEVEL")
[ "$ZSTD_LEVEL" -gt 19 ] && ZOPTS+=(--ultra)
[ "$ZSTD_LONG" -gt 0 ] && ZOPTS+=("--long=$ZSTD_LONG")
LC_ALL=C tar --sort=name --format=ustar --owner=0 --group=0 --numeric-owner \
	--mtime=@0 -C "$TMP/stage" -cf - bin | zstd "${ZOPTS[@]}" -o "$TMP/payload.tar.zst"
sha <"$TMP/payload.tar.zst" >"$TMP/payload.tar.zst.sha256"
t1="$(date +%s)"

PAYLOAD_DIR="$ROOT/cmd/launcher/payload"
mkdir -p "$PAYLOAD_DIR"
cp "$TMP/payload.tar.zst" "$PAYLOAD_DIR/bramble-$GOARCH.tar.zst"
cp "$TMP/payload.tar.zst.sha256" "$PAYLOAD_DIR/bramble-$GOARCH.tar.zst.sha256"
rc=0
(cd "$ROOT" && CGO_ENABLED=0 GOFLAGS="-buildvcs=false -trimpath -tags=bramble_payload" \
	go build -ldflags "-s -w" -o "$TMP/launcher" ./cmd/launcher) || rc=$?
rm -f "$PAYLOAD_DIR/bramble-$GOARCH.tar.zst" "$PAYLOAD_DIR/bramble-$GOARCH.tar.zst.sha256"
rmdir "$PAYLOAD_DIR" 2>/dev/null || true
[ "$rc" = 0 ] || die "$ARCH: building the launcher failed"

printf 'raw %s bytes, payload %s bytes, zstd %s, packed in %ss' "$(stat -c %s "$RAW")" \
	"$(stat -c %s "$TMP/payload.tar.zst")" "${ZOPTS[*]:2}" "$((t1 - t0))" >"$TMP/launcher.info"
mv "$TMP/launcher.info" "$PACKED.info"
mv "$TMP/launcher" "$PACKED"
keep "$RCACHE/bin" "bramble-$ARCH-"
install_out
