# mk/release.mk - release artifacts for amd64, arm64 and armhf. Included by
# the top-level Makefile (after LDFLAGS, GO_TAGS and CACHE_DIR are set).
#
#   make release                dist/bramble-<arch>, dist/bramble-airgap-images-<arch>.tar.zst
#                               and dist/sha256sum-<arch>.txt for amd64 arm64 armhf
#   make release-binaries       only the three binaries (+ their checksum files)
#   make release-test-binaries  what tests/release needs (in TEST_PREREQS): the
#                               three binaries packed fast (zstd -3), qemu binfmt
#                               for arm64/armhf; no arm air-gap tarballs
#   make release-bin-<arch>     one binary, e.g. release-bin-arm64
#   make release-deps           Debian cross compilers + zstd (only when missing)
#   make release-clean          remove the release files from dist/
#
# dist/bramble-<arch> is the launcher (cmd/launcher): it embeds the real,
# static bramble binary as a zstd-compressed tar, unpacks it once into
# <data-dir>/data/<hash>/bin/bramble and execs it. scripts/release-build.sh
# builds it, cached in $(CACHE_DIR)/release by a content hash of its inputs.
# `make` (bin/bramble) stays the uncompressed native binary.
#
# Architecture names: release (and Debian) armhf is Go's arm (GOARM=7), the
# ARCH of make helpers / make airgap.

RELEASE_ARCHES := amd64 arm64 armhf
RELEASE_DIR := dist
# Payload compression: release artifacts as small as zstd makes them; the
# test binaries fast to pack (tests/release checks behaviour, not size).
RELEASE_ZSTD_LEVEL ?= 19
RELEASE_TEST_ZSTD_LEVEL ?= 3
RELEASE_CROSS_PKGS := zstd gcc-aarch64-linux-gnu libc6-dev-arm64-cross \
	gcc-arm-linux-gnueabihf libc6-dev-armhf-cross

release_goarch = $(if $(filter armhf,$(1)),arm,$(1))

# release_binary ARCH ZSTD_LEVEL: the arch's embedded assets, then the binary.
define release_binary
@$(MAKE) --no-print-directory ARCH=$(call release_goarch,$(1)) \
	pkg/bundle/assets/helpers-$(call release_goarch,$(1)).tar.zst \
	pkg/pause/assets/pause-$(call release_goarch,$(1)).tar
@RELEASE_LDFLAGS='$(LDFLAGS)' GO_TAGS='$(GO_TAGS)' CACHE_DIR='$(CACHE_DIR)' ZSTD_LEVEL=$(2) \
	scripts/release-build.sh -a $(1) -o $(RELEASE_DIR)/bramble-$(1)

endef

# dist/sha256sum-<arch>.txt: "<sha256>  <file>" for the binary and, when
# built, the air-gap tarball (`cd dist && sha256sum -c sha256sum-<arch>.txt`).
define release_sums
cd $(RELEASE_DIR) && for a in $(RELEASE_ARCHES); do \
	files=; for f in bramble-$$a bramble-airgap-images-$$a.tar.zst; do \
		if [ -f $$f ]; then files="$$files $$f"; fi; done; \
	if [ -n "$$files" ]; then sha256sum $$files >sha256sum-$$a.txt.tmp && \
		mv sha256sum-$$a.txt.tmp sha256sum-$$a.txt; fi; done
endef

.PHONY: release release-binaries release-test-binaries release-airgap release-deps release-clean

release: release-binaries release-airgap
	@$(release_sums)
	@cd $(RELEASE_DIR) && ls -l $(foreach a,$(RELEASE_ARCHES),bramble-$(a) \
		bramble-airgap-images-$(a).tar.zst sha256sum-$(a).txt)

release-binaries: release-deps
	$(foreach a,$(RELEASE_ARCHES),$(call release_binary,$(a),$(RELEASE_ZSTD_LEVEL)))
	@$(release_sums)

# The air-gap tarballs under their release names (make airgap uses Go's arm).
release-airgap:
	@$(foreach a,$(RELEASE_ARCHES),$(MAKE) --no-print-directory ARCH=$(call release_goarch,$(a)) airgap && \
		$(if $(filter armhf,$(a)),ln -f $(RELEASE_DIR)/bramble-airgap-images-arm.tar.zst \
			$(RELEASE_DIR)/bramble-airgap-images-armhf.tar.zst &&) true;)

release-test-binaries: release-deps
	@$(MAKE) --no-print-directory ARCH=arm64 images-deps
	@$(MAKE) --no-print-directory ARCH=arm images-deps
	$(foreach a,$(RELEASE_ARCHES),$(call release_binary,$(a),$(RELEASE_TEST_ZSTD_LEVEL)))
	@$(release_sums)

# One arch, e.g. make release-bin-arm64 (RELEASE_ZSTD_LEVEL=3: quick to pack).
release-bin-%: release-deps
	$(call release_binary,$*,$(RELEASE_ZSTD_LEVEL))
	@$(release_sums)

release-deps:
	@scripts/deps.sh $(RELEASE_CROSS_PKGS)

release-clean:
	rm -f $(foreach a,$(RELEASE_ARCHES),$(RELEASE_DIR)/bramble-$(a) $(RELEASE_DIR)/sha256sum-$(a).txt) \
		$(RELEASE_DIR)/bramble-airgap-images-armhf.tar.zst
