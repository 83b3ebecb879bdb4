# shellcheck shell=bash disable=SC2034 # sets variables that scripts/images/build.sh reads
# plumber-api: the example R Plumber API. Debian bookworm minbase plus the
# packages in ./packages (scripts/images/plumber-rootfs.sh: debootstrap,
# trimmed), a user `plumber` (1000:1000), and /app with plumber.R and
# entrypoint.R. tini is PID 1 (R as PID 1 ignores SIGTERM). Listens on
# $PORT (8000); HOST and WORKERS are read by entrypoint.R.
# Sourced by scripts/images/build.sh.

IMAGE_TAG=$PLUMBER_TAG
IMAGE_SOURCE=images/plumber-api

# The /app layer: only the R files, so editing them never rebuilds the rootfs.
plumber_app_layer() {
	local dir="$IMAGES_DIR/plumber-api" key out st
	key=$(cache_key "plumber-app $IB_KEY $SOURCE_DATE_EPOCH" "$dir/recipe.sh" "$dir/plumber.R" "$dir/entrypoint.R")
	out="$CACHE_DIR/layers/plumber-app-$key.tar"
	if [ ! -f "$out" ]; then
		st=$(stage_dir plumber-app)
		mkdir -p "$st/app"
		install -m 0644 "$dir/plumber.R" "$dir/entrypoint.R" "$st/app/"
		layer_from "$st" "$out"
	fi
	printf '%s\n' "$out"
}

recipe() {
	local rootfs app pkgs
	rootfs=$("$SCRIPTS_DIR/plumber-rootfs.sh" "$ARCH")
	app=$(plumber_app_layer)
	pkgs=$(grep -v '^#' "$IMAGES_DIR/plumber-api/packages" | paste -sd' ' -)
	args=(
		-layer "$rootfs::Debian $DEBIAN_SUITE minbase + $pkgs"
		-layer "$app::/app: plumber.R, entrypoint.R"
		-entrypoint '["/usr/bin/tini","--"]'
		-cmd '["Rscript","entrypoint.R"]'
		-user 1000:1000
		-workdir /app
		-expose 8000/tcp
		-env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
		-env LANG=C.UTF-8 -env TZ=UTC -env HOME=/app -env PORT=8000
	)
}
