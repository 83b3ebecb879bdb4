package containerd

import (
	"context"
	"fmt"
	"os"

	ctrapp "github.com/containerd/containerd/v2/cmd/ctr/app"

	"github.com/bramble-pi/bramble/pkg/layout"
)

// DefaultSocket is the node's containerd socket (see Config.Socket).
const DefaultSocket = layout.ContainerdSocket

// CtrMain runs ctr, talking to bramble's containerd unless told otherwise.
func CtrMain(argv []string) int {
	if os.Getenv("CONTAINERD_ADDRESS") == "" {
		os.Setenv("CONTAINERD_ADDRESS", DefaultSocket)
	}
	if os.Getenv("CONTAINERD_NAMESPACE") == "" {
		os.Setenv("CONTAINERD_NAMESPACE", "k8s.io")
	}
	if err := ctrapp.New().Run(context.Background(), argv); err != nil {
		fmt.Fprintln(os.Stderr, "ctr:", err)
		return 1
	}
	return 0
}
