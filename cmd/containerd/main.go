// Command containerd is bramble's containerd: containerd v2 with only the
// plugins a bramble node uses (builtins.go). scripts/build-helpers.sh builds
// it into the helper bundle next to runc and the shim, and pkg/containerd
// starts it as a child of bramble with a generated configuration. A separate
// small executable, so the child neither maps bramble's Kubernetes code nor
// runs its package initialisers.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/containerd/containerd/v2/cmd/containerd/command"

	"github.com/bramble-pi/bramble/pkg/memtrim"
)

func main() {
	// Like bramble: once containerd has started (and bramble's first pods
	// with it), the pages only start-up used go back.
	memtrim.After(context.Background(), memtrim.Delay, slog.Default())
	if err := command.App().Run(context.Background(), os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "containerd:", err)
		os.Exit(1)
	}
}
