# bramble's containerd (cmd/containerd), the helper executables it execs
# (runc, containerd-shim-runc-v2, CNI plugins) and crictl, built from their
# Go modules by scripts/build-helpers.sh and packed into
# pkg/bundle/assets/helpers-$(ARCH).tar.zst (+ .sha256), which pkg/bundle
# embeds. Included from the top-level Makefile: the archive is added
# to EMBEDDED, so bin/bramble depends on it. Versions come from the script and
# can be overridden from the environment (CRICTL_VERSION=v1.34.0 make helpers;
# see the script's header).
#
#   make helpers                 # host arch (always asks the script: < 1 s when warm)
#   make helpers ARCH=arm64      # cross (Debian gcc-aarch64-linux-gnu, libseccomp-dev:arm64)
#   make helpers-all             # amd64 arm64 arm
#   make helpers-clean           # drop the archives from the tree (cache kept)
#   make helpers-distclean       # also drop $(CACHE_DIR)/helpers
#
# The script leaves an identical archive untouched, so an unchanged rebuild
# never makes bin/bramble relink.

# Paths are relative to the repository root, where make runs.
HELPERS_MK := mk/helpers.mk

ARCH ?= $(shell go env GOARCH)
CACHE_DIR ?= /var/cache/bramble-build
HELPERS_ARCHES ?= amd64 arm64 arm

HELPERS_SCRIPT := scripts/build-helpers.sh
HELPERS_ASSETS := pkg/bundle/assets
HELPERS_ARCHIVE := $(HELPERS_ASSETS)/helpers-$(ARCH).tar.zst
HELPERS_RUN = ARCH='$(1)' CACHE_DIR='$(CACHE_DIR)' './$(HELPERS_SCRIPT)' -a '$(1)' \
	-o '$(HELPERS_ASSETS)/helpers-$(1).tar.zst'

EMBEDDED += $(HELPERS_ARCHIVE) $(HELPERS_ARCHIVE).sha256

.PHONY: helpers helpers-all helpers-clean helpers-distclean

# Rebuilt when missing or when the script, this file, go.mod/go.sum (the
# containerd version the shim follows) or cmd/containerd changed.
$(HELPERS_ARCHIVE) $(HELPERS_ARCHIVE).sha256 &: $(HELPERS_SCRIPT) $(HELPERS_MK) go.mod go.sum $(wildcard cmd/containerd/*.go)
	@$(call HELPERS_RUN,$(ARCH))

helpers:
	@$(call HELPERS_RUN,$(ARCH))

helpers-all:
	@$(foreach a,$(HELPERS_ARCHES),$(call HELPERS_RUN,$(a)) &&) true

helpers-clean:
	rm -f '$(HELPERS_ASSETS)'/helpers-*.tar.zst '$(HELPERS_ASSETS)'/helpers-*.tar.zst.sha256

helpers-distclean: helpers-clean
	rm -rf '$(CACHE_DIR)/helpers'
