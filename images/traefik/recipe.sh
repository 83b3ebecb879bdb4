# shellcheck shell=bash disable=SC2034 # sets variables that scripts/images/build.sh reads
# traefik: the ingress controller. A static Go binary built from
# github.com/traefik/traefik/v3 at the version pinned in images/images.env
# (scripts/images/go-binary.sh builds it in a throwaway module that copies
# traefik's replace directives), on the minimal base layer. The web dashboard's
# assets are not in the Go module, so the dashboard page is empty; the API,
# metrics and ping work. The entrypoint is the binary: pass flags as args.
# Sourced by scripts/images/build.sh.

IMAGE_TAG=$TRAEFIK_TAG
IMAGE_SOURCE=$TRAEFIK_MODULE@$TRAEFIK_VERSION

recipe() {
	local base bin
	base=$(base_layer)
	bin=$(binary_layer traefik /usr/local/bin/traefik)
	args=(
		-layer "$base::base: passwd, group, CA certificates (Debian ca-certificates)"
		-layer "$bin::traefik $TRAEFIK_VERSION (go build, static)"
		-entrypoint '["/usr/local/bin/traefik"]'
		-user 65532:65532
		-expose 80/tcp -expose 443/tcp -expose 8080/tcp
	)
}
