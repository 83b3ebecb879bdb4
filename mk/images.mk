# mk/images.mk - the bundled container images (see images/README.md).
# Included by the top-level Makefile; paths resolve from this file, so it also
# works with `make -f mk/images.mk ...`.
#
#   make images ARCH=arm64    dist/images/<arch>/{coredns,traefik,plumber-api,pause}.tar
#   make test-images          dist/images/<arch>/busybox.tar (test image)
#   make airgap ARCH=arm64    dist/bramble-airgap-images-<arch>.tar.zst
#   make images-deps          Debian packages (+ binfmt_misc/qemu for a foreign ARCH)
#   make images-lint          shellcheck the scripts, vet the Go helpers
#   make images-clean         remove dist/images and the air-gap bundles
#
# ARCH is a Go arch: amd64, arm64 or arm (armhf, ARMv7). Builds are cached in
# CACHE_DIR, outside the repository.

ARCH ?= $(shell go env GOARCH)
CACHE_DIR ?= /var/cache/bramble-build
# zstd level of the air-gap bundle: 19 for the smallest release artifact
# (slow), 12 for quick local builds.
AIRGAP_ZSTD_LEVEL ?= 16

IMAGES_MK_ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))/..)
IMAGES_SCRIPTS := $(IMAGES_MK_ROOT)/scripts/images
IMAGES_ENV_VARS := CACHE_DIR=$(CACHE_DIR) DIST_DIR=$(IMAGES_MK_ROOT)/dist
BUNDLED_IMAGES := coredns traefik plumber-api pause
TEST_IMAGES := busybox

.PHONY: images test-images airgap images-deps images-lint images-clean

images: images-deps
	$(IMAGES_ENV_VARS) $(IMAGES_SCRIPTS)/build.sh $(ARCH) $(BUNDLED_IMAGES)

test-images: images-deps
	$(IMAGES_ENV_VARS) $(IMAGES_SCRIPTS)/build.sh $(ARCH) $(TEST_IMAGES)

airgap: images
	$(IMAGES_ENV_VARS) ZSTD_LEVEL=$(AIRGAP_ZSTD_LEVEL) $(IMAGES_SCRIPTS)/airgap.sh $(ARCH)

images-deps:
	$(IMAGES_ENV_VARS) $(IMAGES_SCRIPTS)/deps.sh $(ARCH)

images-lint: images-deps
	shellcheck -x $(IMAGES_SCRIPTS)/*.sh $(IMAGES_MK_ROOT)/images/*/recipe.sh
	cd $(IMAGES_MK_ROOT)/tools/imagebuild && GOWORK=off go vet ./...
	cd $(IMAGES_MK_ROOT)/images/pause && GOWORK=off go vet ./...

images-clean:
	rm -rf $(IMAGES_MK_ROOT)/dist/images $(IMAGES_MK_ROOT)/dist/bramble-airgap-images-*.tar.zst
