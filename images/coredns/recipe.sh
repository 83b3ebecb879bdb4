# shellcheck shell=bash disable=SC2034 # sets variables that scripts/images/build.sh reads
# coredns: the cluster DNS server. A static Go binary built from
# github.com/coredns/coredns at the version pinned in images/images.env
# (scripts/images/go-binary.sh), on the minimal base layer (passwd with a
# non-root user, Debian's CA bundle). Same entrypoint as upstream's image
# (/coredns), so upstream Deployments work unchanged: pass `-conf <Corefile>`.
# Sourced by scripts/images/build.sh, which provides base_layer and
# binary_layer and reads IMAGE_TAG, IMAGE_SOURCE and the args array.

IMAGE_TAG=$COREDNS_TAG
IMAGE_SOURCE=$COREDNS_MODULE@$COREDNS_VERSION

recipe() {
	local base bin
	base=$(base_layer)
	bin=$(binary_layer coredns /coredns)
	args=(
		-layer "$base::base: passwd, group, CA certificates (Debian ca-certificates)"
		-layer "$bin::coredns $COREDNS_VERSION (go build, static)"
		-entrypoint '["/coredns"]'
		-user 65532:65532
		-expose 53/udp -expose 53/tcp -expose 9153/tcp
	)
}
