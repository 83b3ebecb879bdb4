# shellcheck shell=bash disable=SC2034 # sets variables that scripts/images/build.sh reads
# busybox: a test image for the cluster tests (e.g. a pod running
# `busybox httpd -f -p 8080 -h /www`). Debian's busybox-static with a symlink
# for every applet, /etc/passwd and /etc/group, and /www/index.html. Runs as
# root; not part of the air-gap bundle.
# Sourced by scripts/images/build.sh.

IMAGE_TAG=$BUSYBOX_TAG
IMAGE_SOURCE="Debian busybox-static"

busybox_layer() {
	local key out deb st tmp applet
	key=$(cache_key "busybox $ARCH $IB_KEY $DEBIAN_SUITE $SOURCE_DATE_EPOCH" "$IMAGES_DIR/busybox/recipe.sh")
	out="$CACHE_DIR/layers/busybox-$ARCH-$key.tar"
	if [ -f "$out" ]; then
		printf '%s\n' "$out"
		return
	fi
	deb=$("$SCRIPTS_DIR/debs.sh" "$DEB_ARCH" busybox-static | tail -n1)
	log "busybox ($ARCH): from $(basename "$deb")"
	tmp=$(mktemp -d)
	dpkg-deb -x "$deb" "$tmp"
	st=$(stage_dir "busybox-$ARCH")
	mkdir -p "$st/bin" "$st/sbin" "$st/usr/bin" "$st/usr/sbin" "$st/etc" "$st/tmp" "$st/www" "$st/root"
	install -m 0755 "$tmp/bin/busybox" "$st/bin/busybox"
	rm -rf "$tmp"
	ensure_binfmt "$ARCH"
	# busybox --list-full prints paths like bin/ls and usr/bin/wget.
	"$st/bin/busybox" --list-full | while read -r applet; do
		[ "$applet" = bin/busybox ] || [ -e "$st/$applet" ] || ln -s /bin/busybox "$st/$applet"
	done
	[ -L "$st/bin/sh" ] || die "busybox ($ARCH): no applet list"
	cat >"$st/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
	cat >"$st/etc/group" <<'GROUP'
root:x:0:
nobody:x:65534:
GROUP
	printf 'hello from bramble busybox\n' >"$st/www/index.html"
	chmod 1777 "$st/tmp"
	chmod 0700 "$st/root"
	layer_from "$st" "$out"
	printf '%s\n' "$out"
}

recipe() {
	local layer
	layer=$(busybox_layer)
	args=(
		-layer "$layer::Debian busybox-static"
		-cmd '["sh"]'
		-env PATH=/usr/sbin:/usr/bin:/sbin:/bin
	)
}
