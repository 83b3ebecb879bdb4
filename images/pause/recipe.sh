# shellcheck shell=bash disable=SC2034 # sets variables that scripts/images/build.sh reads
# pause: the pod sandbox process (containerd's sandbox image). Our own static
# Go program in this directory: sleeps, reaps zombies, exits 0 on SIGINT or
# SIGTERM. Just the binary, run as 65535:65535 like upstream's pause.
# Sourced by scripts/images/build.sh.

IMAGE_TAG=$PAUSE_TAG
IMAGE_SOURCE=images/pause

recipe() {
	local bin
	bin=$(binary_layer pause /pause)
	args=(
		-layer "$bin::pause $PAUSE_TAG (go build, static)"
		-entrypoint '["/pause"]'
		-user 65535:65535
	)
}
