package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/bramble-pi/bramble/pkg/bundle"
	"github.com/bramble-pi/bramble/pkg/layout"
	"github.com/bramble-pi/bramble/pkg/logging"
)

// crictlMain runs the bundled crictl (unpacked with the other helper
// binaries) against bramble's containerd unless told otherwise. argv[0] is
// the program name.
func crictlMain(argv []string) int {
	dataDir := layout.Current().DataDir()
	binDir, err := bundle.Extract(dataDir, logging.Discard())
	if err != nil {
		fmt.Fprintf(os.Stderr, "crictl: unpack helper binaries: %v\n", err)
		return 1
	}
	env := os.Environ()
	for _, v := range []string{"CONTAINER_RUNTIME_ENDPOINT", "IMAGE_SERVICE_ENDPOINT"} {
		if os.Getenv(v) == "" {
			env = append(env, v+"=unix://"+layout.ContainerdSocket)
		}
	}
	bin := filepath.Join(binDir, "crictl")
	if err := syscall.Exec(bin, append([]string{"crictl"}, argv[1:]...), env); err != nil {
		fmt.Fprintf(os.Stderr, "crictl: %v\n", err)
	}
	return 1
}
