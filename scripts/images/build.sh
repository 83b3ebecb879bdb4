#!/bin/bash
# shellcheck source-path=SCRIPTDIR
# build.sh ARCH NAME...: builds the images NAME (coredns, traefik, pause,
# plumber-api, busybox) for ARCH (amd64, arm64, arm) into
# dist/images/ARCH/NAME.tar, following images/NAME/recipe.sh.
#
# Each archive is an OCI image layout plus a docker-archive manifest.json in
# one tar (see tools/imagebuild), named $IMAGE_REPO/NAME:TAG, importable with
# `ctr images import` or containerd's CRI import. Layers are cached under
# $CACHE_DIR keyed by their recipe, so a rebuild with unchanged recipes only
# re-assembles the archives.

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

ARCH=${1:?usage: build.sh ARCH NAME...}
shift
[ $# -gt 0 ] || die "usage: build.sh ARCH NAME..."
arch_setup "$ARCH"
with_lock

IB=$(imagebuild_bin)
IB_KEY=$(imagebuild_key)
OUT_DIR="$DIST_DIR/images/$ARCH"
mkdir -p "$OUT_DIR" "$CACHE_DIR/layers"

# stage_dir NAME: a fresh, empty staging directory for a layer.
stage_dir() {
	local d="$CACHE_DIR/stage/$1"
	rm -rf "$d"
	mkdir -p "$d"
	printf '%s\n' "$d"
}

# layer_from STAGE OUT: writes the layer tar of a staging dir atomically and
# drops the superseded layers of the same kind (OUT is KIND-KEY.tar).
layer_from() {
	"$IB" layer -src "$1" -out "$2"
	rm -rf "$1"
	prune "$2" "${2%-*}-*.tar"
}

# base_layer: /etc/passwd, /etc/group, nsswitch.conf, the CA bundle from
# Debian's ca-certificates and /tmp. Identical for every arch (no binaries).
base_layer() {
	local key out deb st tmp crt
	key=$(cache_key "base $IB_KEY $DEBIAN_SUITE $SOURCE_DATE_EPOCH" "$SCRIPTS_DIR/build.sh")
	out="$CACHE_DIR/layers/base-$key.tar"
	if [ -f "$out" ]; then
		printf '%s\n' "$out"
		return
	fi
	log "base layer: passwd, group, CA certificates from Debian"
	deb=$("$SCRIPTS_DIR/debs.sh" "$(dpkg --print-architecture)" ca-certificates | tail -n1)
	st=$(stage_dir base)
	tmp=$(mktemp -d)
	dpkg-deb -x "$deb" "$tmp"
	mkdir -p "$st/etc/ssl/certs" "$st/tmp" "$st/home/nonroot"
	# What update-ca-certificates writes with the default configuration: every
	# Mozilla CA, in name order, each ending in a newline.
	find "$tmp/usr/share/ca-certificates/mozilla" -name '*.crt' | LC_ALL=C sort |
		while read -r crt; do
			cat "$crt"
			[ -z "$(tail -c1 "$crt")" ] || echo
		done >"$st/etc/ssl/certs/ca-certificates.crt"
	rm -rf "$tmp"
	[ -s "$st/etc/ssl/certs/ca-certificates.crt" ] || die "empty CA bundle from $deb"
	cat >"$st/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
	cat >"$st/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
EOF
	printf 'hosts: files dns\n' >"$st/etc/nsswitch.conf"
	chmod 0644 "$st/etc/passwd" "$st/etc/group" "$st/etc/nsswitch.conf" "$st/etc/ssl/certs/ca-certificates.crt"
	chmod 1777 "$st/tmp"
	chown 65532:65532 "$st/home/nonroot"
	chmod 0700 "$st/home/nonroot"
	layer_from "$st" "$out"
	printf '%s\n' "$out"
}

# binary_layer NAME DEST: a layer holding the Go binary of NAME at DEST.
binary_layer() {
	local name=$1 dest=$2 bin key out st
	bin=$("$SCRIPTS_DIR/go-binary.sh" "$name" "$ARCH")
	key=$(cache_key "$name $dest $bin $IB_KEY $SOURCE_DATE_EPOCH" "$SCRIPTS_DIR/build.sh")
	out="$CACHE_DIR/layers/$name-bin-$ARCH-$key.tar"
	if [ ! -f "$out" ]; then
		st=$(stage_dir "$name-$ARCH")
		install -D -m 0755 "$bin" "$st$dest"
		layer_from "$st" "$out"
	fi
	printf '%s\n' "$out"
}

labels() {
	printf -- '-label\norg.opencontainers.image.title=%s\n' "$1"
	printf -- '-label\norg.opencontainers.image.version=%s\n' "$2"
	printf -- '-label\norg.opencontainers.image.source=%s\n' "$3"
	printf -- '-label\norg.opencontainers.image.vendor=bramble\n'
}

# build_one NAME: sources images/NAME/recipe.sh (in a subshell) and writes the
# archive. A recipe sets IMAGE_TAG and IMAGE_SOURCE and defines recipe(), which
# fills the array `args` with imagebuild flags (layers and config).
build_one() {
	local name=$1 file="$IMAGES_DIR/$1/recipe.sh"
	[ -f "$file" ] || die "unknown image '$name': no $file"
	(
		start=$(date +%s)
		IMAGE_TAG='' IMAGE_SOURCE=''
		args=()
		# shellcheck source=/dev/null
		. "$file"
		recipe
		[ -n "$IMAGE_TAG" ] || die "$file sets no IMAGE_TAG"
		ref="$IMAGE_REPO/$name:$IMAGE_TAG"
		mapfile -t extra < <(labels "$name" "$IMAGE_TAG" "$IMAGE_SOURCE")
		"$IB" image -out "$OUT_DIR/$name.tar" -name "$ref" -arch "$ARCH" "${args[@]}" "${extra[@]}"
		log "$name ($ARCH): $ref -> ${OUT_DIR#"$REPO_ROOT"/}/$name.tar ($(file_size "$OUT_DIR/$name.tar"), $(($(date +%s) - start)) s)"
	)
}

for name in "$@"; do
	build_one "$name"
done
