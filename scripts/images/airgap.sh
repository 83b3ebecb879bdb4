#!/bin/bash
# shellcheck source-path=SCRIPTDIR
# airgap.sh ARCH: merges the bundled images of ARCH (dist/images/ARCH/*.tar,
# built by build.sh) into one archive that containerd imports in one go, and
# compresses it: dist/bramble-airgap-images-ARCH.tar.zst.
#
# ZSTD_LEVEL (default 16) trades time for size; measured on amd64 (446 MiB
# tar, 2 busy cores, with --long=27): -12 132 MB in 45 s, -16 127 MB in 94 s,
# -19 118 MB in several minutes. No --long: the default window (4-8 MiB) keeps decompression
# cheap on a 1 GB Pi and works with any zstd decoder; --long=27 would save
# only 3 % and need a 128 MiB window to decompress. The result is cached under
# $CACHE_DIR keyed by the digests of the image archives and the flags: a
# rebuild with unchanged images takes a few seconds.

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

ARCH=${1:?usage: airgap.sh ARCH}
arch_setup "$ARCH"
with_lock

# The images every bramble server deploys (not the busybox test image).
BUNDLED=(coredns traefik plumber-api pause)
ZSTD_LEVEL=${ZSTD_LEVEL:-16}
ZSTD_FLAGS=(-T0 "-$ZSTD_LEVEL")

IB=$(imagebuild_bin)
inputs=()
for name in "${BUNDLED[@]}"; do
	f="$DIST_DIR/images/$ARCH/$name.tar"
	[ -f "$f" ] || die "$f missing: run 'make images ARCH=$ARCH' first"
	inputs+=("$f")
done

key=$(cache_key "airgap $ARCH ${ZSTD_FLAGS[*]} $(imagebuild_key) $(sha256sum "${inputs[@]}" | cut -d' ' -f1 | paste -sd' ' -)")
cached="$CACHE_DIR/airgap/bramble-airgap-images-$ARCH-$key.tar.zst"
out="$DIST_DIR/bramble-airgap-images-$ARCH.tar.zst"
if [ ! -f "$cached" ]; then
	start=$(date +%s)
	mkdir -p "$CACHE_DIR/airgap"
	tar="$CACHE_DIR/airgap/bramble-airgap-images-$ARCH.tar"
	"$IB" merge -out "$tar" "${inputs[@]}"
	log "airgap ($ARCH): $(file_size "$tar") uncompressed, compressing (zstd ${ZSTD_FLAGS[*]})"
	zstd -q -f "${ZSTD_FLAGS[@]}" "$tar" -o "$cached.tmp"
	mv "$cached.tmp" "$cached"
	rm -f "$tar"
	# Keep only the newest bundle per arch in the cache.
	find "$CACHE_DIR/airgap" -name "bramble-airgap-images-$ARCH-*.tar.zst" ! -path "$cached" -delete
	log "airgap ($ARCH): compressed in $(($(date +%s) - start)) s"
fi
cp "$cached" "$out.tmp"
chmod 0644 "$out.tmp"
mv "$out.tmp" "$out"
for f in "${inputs[@]}"; do "$IB" list "$f" | cut -f1,2 | sed 's/^/[images]   /' >&2; done
log "airgap ($ARCH): ${out#"$REPO_ROOT"/} ($(file_size "$out"))"
