# mk/arm.mk - bramble on emulated arm machines (the nightly arm job, see
# docs/ci.md). Included by the top-level Makefile; not part of make test.
#
#   make test-arm ARCH=arm64   arm64 release artifacts on two emulated arm64
#   make test-arm ARCH=armhf   (armhf: ARMv7) Debian bookworm machines
#                              (qemu-system, TCG): install.sh's cgroup fix and
#                              reboot, server Ready, CoreDNS, Traefik to the
#                              Plumber API, an agent joining (scripts/arm/test-arm.sh)
#   make arm-deps              qemu-system-arm (qemu-system-aarch64 too),
#                              qemu-utils, dosfstools, mtools (only when missing)
#
# The release binary and the air-gap tarball are packed with zstd -3 (fast;
# what is tested is the code, not the compression). The guest image is built
# once and cached in $(CACHE_DIR)/arm (scripts/arm/guest-image.sh).

ARM_ZSTD_LEVEL ?= 3

.PHONY: test-arm arm-deps

arm-deps:
	@scripts/deps.sh qemu-system-arm qemu-utils dosfstools mtools e2fsprogs

test-arm: arm-deps
	@case "$(ARCH)" in arm64|armhf) ;; \
	*) echo "make test-arm: set ARCH=arm64 or ARCH=armhf (not $(ARCH))" >&2; exit 2 ;; esac
	@$(MAKE) --no-print-directory RELEASE_ZSTD_LEVEL=$(ARM_ZSTD_LEVEL) release-bin-$(ARCH)
	@$(MAKE) --no-print-directory ARCH=$(call release_goarch,$(ARCH)) AIRGAP_ZSTD_LEVEL=$(ARM_ZSTD_LEVEL) airgap
	CACHE_DIR=$(CACHE_DIR) scripts/arm/test-arm.sh $(ARCH)
