# mk/cluster.mk - a bramble of N "Pis" on this machine (tests/cluster), one
# network and mount namespace per node behind a switch namespace. Included by
# the top-level Makefile. Needs root.
#
#   make cluster-up N=3      build, then make the cluster; every node Ready
#   make cluster-down        remove everything it made (also after a crash)
#   make cluster-status      nodes and PIDs
#   bin/bramble-cluster kubectl get pods -A    kubectl from the switch namespace
#
# CLUSTER_NAME prefixes namespaces and cgroups; CLUSTER_STATE holds data dirs,
# logs and the admin kubeconfig (use it from the switch namespace:
# ip netns exec $(CLUSTER_NAME)-sw bin/kubectl --kubeconfig $(CLUSTER_STATE)/kubeconfig.yaml ...).

N ?= 3
CLUSTER_NAME ?= bramble
CLUSTER_STATE ?= /var/lib/bramble-cluster
CLUSTER_CLI := bin/bramble-cluster
CLUSTER_FLAGS = -name $(CLUSTER_NAME) -state-dir $(CLUSTER_STATE)

.PHONY: cluster-up cluster-down cluster-status
$(CLUSTER_CLI): $(shell find tests/cluster -name '*.go' -not -name '*_test.go') go.mod go.sum
	@mkdir -p bin
	go build -o $@ ./tests/cluster/cmd/bramble-cluster

cluster-up: build $(CLUSTER_CLI)
	@[ -f dist/bramble-airgap-images-$(ARCH).tar.zst ] || $(MAKE) airgap
	@[ -f dist/images/$(ARCH)/busybox.tar ] || $(MAKE) test-images
	$(CLUSTER_CLI) $(CLUSTER_FLAGS) up -n $(N)

cluster-down: $(CLUSTER_CLI)
	$(CLUSTER_CLI) $(CLUSTER_FLAGS) down

cluster-status: $(CLUSTER_CLI)
	$(CLUSTER_CLI) $(CLUSTER_FLAGS) status
