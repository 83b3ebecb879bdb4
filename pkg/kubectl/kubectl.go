// Package kubectl runs kubectl in-process, defaulting to bramble's admin
// kubeconfig.
package kubectl

import (
	"os"
	"strings"

	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"

	"github.com/bramble-pi/bramble/pkg/layout"
)

// Main runs kubectl with args (without the program name) and returns its exit status.
func Main(args []string) int {
	// The admin kubeconfig the server writes (its --write-kubeconfig, from
	// the environment or the config file too) unless told otherwise.
	if os.Getenv("KUBECONFIG") == "" && !hasKubeconfigFlag(args) {
		if admin := layout.Current().Kubeconfig(); fileExists(admin) {
			os.Setenv("KUBECONFIG", admin)
		}
	}
	command := cmd.NewDefaultKubectlCommand()
	command.SetArgs(args)
	if err := cli.RunNoErrOutput(command); err != nil {
		util.CheckErr(err) // prints kubectl's own error text and exits
		return 1
	}
	return 0
}

func hasKubeconfigFlag(args []string) bool {
	for _, a := range args {
		if a == "--kubeconfig" || strings.HasPrefix(a, "--kubeconfig=") {
			return true
		}
	}
	return false
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
