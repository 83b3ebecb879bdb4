# bramble build. `make` builds bin/bramble and this machine's air-gap image
# tarball (dist/bramble-airgap-images-<arch>.tar.zst, which bin/bramble finds
# by itself); `make test` runs the tests that fit CI's time; `make
# test-release` the cross-built release binaries' tests (nightly, see
# docs/ci.md); `make bench` prints the benchmark figures. Caches live
# outside the repo.
SHELL      := /bin/bash
ARCH       ?= $(shell go env GOARCH)
CACHE_DIR  ?= /var/cache/bramble-build
K8S_VERSION := v1.37.1
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo v0.0.0-dev)
COMMIT     := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
BUILD_DATE := $(shell date -u -d @$$(git log -1 --format=%ct 2>/dev/null || echo 0) +%Y-%m-%dT%H:%M:%SZ)
# bramble_assets embeds what make generates (pkg/bundle, pkg/pause); a build
# without it (`go build ./...` on a fresh clone) says so at start.
# kustomize_disable_go_plugin_support: kubectl's kustomize would import Go's
# plugin package, and a cgo binary that imports it is linked for plugins:
# every symbol exported (44 MB of dynamic symbol tables) and no dead-code
# elimination of unused methods and map initialisers. Without it bin/bramble
# is 213 MB instead of 267 MB, and starts less code.
GO_TAGS    ?= netgo,osusergo,kustomize_disable_go_plugin_support,bramble_assets
# One flag set for build, vet and test, so the Kubernetes packages are compiled
# once into the Go build cache and reused by every command.
export GOFLAGS := -buildvcs=false -trimpath -tags=$(GO_TAGS)
export CGO_ENABLED := 1
TEST_TIMEOUT ?= 50m

K8S_LDFLAGS = $(foreach p,k8s.io/component-base/version k8s.io/client-go/pkg/version,\
	-X $(p).gitVersion=$(K8S_VERSION) -X $(p).gitMajor=1 -X $(p).gitMinor=37 \
	-X $(p).gitCommit=$(COMMIT) -X $(p).gitTreeState=clean -X $(p).buildDate=$(BUILD_DATE))
LDFLAGS = -s -w $(K8S_LDFLAGS) \
	-X github.com/bramble-pi/bramble/pkg/version.Version=$(VERSION) \
	-X github.com/bramble-pi/bramble/pkg/version.GitCommit=$(COMMIT) \
	-X github.com/bramble-pi/bramble/pkg/version.Kubernetes=$(K8S_VERSION)

# Everything compiled or embedded into bin/bramble (the bundled manifests too).
GO_SOURCES := $(shell find cmd pkg scripts -name '*.go' -not -name '*_test.go') scripts/bramble-killall.sh $(wildcard manifests/*.yaml) go.mod go.sum
EMBEDDED   :=
# The included mk/*.mk files define targets: keep `make` = `make all`.
.DEFAULT_GOAL := all

-include mk/helpers.mk
-include mk/images.mk
-include mk/release.mk
-include mk/cluster.mk
-include mk/arm.mk

# The pause image, embedded in bramble (pkg/pause).
PAUSE_ARCHIVE := pkg/pause/assets/pause-$(ARCH).tar
EMBEDDED += $(PAUSE_ARCHIVE)
$(PAUSE_ARCHIVE): $(wildcard images/pause/*) images/images.env | images-deps
	$(IMAGES_ENV_VARS) $(IMAGES_SCRIPTS)/build.sh $(ARCH) pause
	@mkdir -p $(dir $@)
	cp dist/images/$(ARCH)/pause.tar $@

.PHONY: all build test test-soak test-release unit-test integration-test bench deps clean
# bin/bramble and the images its bundled add-ons run (cached: seconds when
# nothing changed), and the Debian packages a node runs (iptables, ipset:
# apt-get only when one is missing), so `sudo ./bin/bramble server` needs
# nothing else.
all: deps build airgap
build: bin/bramble

bin/bramble: $(GO_SOURCES) $(EMBEDDED) Makefile
	@mkdir -p bin
	go build -ldflags "$(LDFLAGS)" -o $@.tmp ./cmd/bramble
	@mv $@.tmp $@
	@for l in kubectl crictl ctr; do ln -sf bramble bin/$$l; done
	@rm -f bin/containerd # bramble no longer answers as containerd (its own binary is in the helper bundle)

deps:
	@scripts/deps.sh

# Images the tests run: the bundled ones, the air-gap archive, and busybox;
# the Debian root filesystem tests/install installs into.
TEST_PREREQS := images test-images airgap testroot
# tests/release needs the arm64 and armhf cross builds (~25 min cold on two
# cores): it runs in `make test-release`, not in CI's `make test`; tests/soak
# (10 stop/start cycles of a node with pods) in `make test-soak`.
TEST_PKGS = $(shell go list ./tests/... | grep -v -e /tests/release -e /tests/soak)

# Debian bookworm minbase tarball for tests/install, cached in CACHE_DIR
# (debootstrap once, about a minute; then instant).
.PHONY: testroot
testroot: deps
	@CACHE_DIR=$(CACHE_DIR) scripts/testroot.sh >/dev/null

# go test through tools/testsum: the usual output, then how many tests
# passed, failed and were skipped, and why each was skipped.
GO_TEST := go run ./tools/testsum go test

test: deps build $(TEST_PREREQS)
	$(GO_TEST) -count=1 ./pkg/...
	$(GO_TEST) -count=1 -p 1 -timeout $(TEST_TIMEOUT) $(TEST_PKGS)

# 10 SIGTERM/start cycles of a server with pods, each restart's ERROR lines
# (there must be none), and an agent cut off from its server for 5 min (tests/soak).
test-soak: deps build images test-images
	$(GO_TEST) -count=1 -v -timeout $(TEST_TIMEOUT) ./tests/soak/

# Two servers on one PostgreSQL and an agent (tests/cluster TestHAPostgres):
# not in make test until the joining server's occasional stop is explained.
# Also runs TestHAEtcd (three servers on embedded etcd), which make test runs.
.PHONY: test-ha
test-ha: deps build test-images
	@scripts/deps.sh postgresql
	BRAMBLE_TEST_HA=1 $(GO_TEST) -count=1 -v -timeout $(TEST_TIMEOUT) -run '^TestHA(Postgres|Etcd)$$' ./tests/cluster/

test-release: deps build release-test-binaries
	$(GO_TEST) -count=1 -p 1 -timeout $(TEST_TIMEOUT) ./tests/release/

# The unit tests as on a fresh clone: no root, no apt, none of the generated
# assets (the tag bramble_assets left out; the other flags as above, so the
# Go build cache is shared).
comma := ,
NOASSETS_GOFLAGS = $(subst $(comma)bramble_assets,,$(GOFLAGS))
unit-test:
	GOFLAGS='$(NOASSETS_GOFLAGS)' $(GO_TEST) -count=1 ./pkg/...

# go vet, staticcheck (installed once into CACHE_DIR/tools) and shellcheck
# on every shell script (tests/shellcheck finds them: tracked or new files
# named *.sh or starting with a sh/bash shebang).
STATICCHECK_VERSION ?= v0.8.2
STATICCHECK := $(CACHE_DIR)/tools/staticcheck-$(STATICCHECK_VERSION)/staticcheck
.PHONY: lint
lint: $(STATICCHECK)
	GOFLAGS='$(NOASSETS_GOFLAGS)' go vet ./...
	GOFLAGS='$(NOASSETS_GOFLAGS)' $(STATICCHECK) ./...
	go test -count=1 ./tests/shellcheck
$(STATICCHECK):
	GOBIN='$(dir $@)' go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

# All scenarios but churn (SQLite after 1440 rollouts: hours), run apart.
bench: build
	go run ./bench
	@echo 'bench: churn (the SQLite file after a day of rollouts, time compressed) takes hours: go run ./bench -only churn'

clean:
	rm -rf bin dist
