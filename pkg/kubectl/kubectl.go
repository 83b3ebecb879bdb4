// Package kubectl runs kubectl in-process, defaulting to bramble's admin
// kubeconfig.
package kubectl

import (
	"os"
	"strings"

	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

// AdminKubeconfig is the kubeconfig used when none is given.
const AdminKubeconfig = "/etc/bramble/bramble.yaml"

// Main runs kubectl with args (without the program name) and returns its exit status.
func Main(args []string) int {
	if os.Getenv("KUBECONFIG") == "" && !hasKubeconfigFlag(args) {
		if _, err := os.Stat(AdminKubeconfig); err == nil {
			os.Setenv("KUBECONFIG", AdminKubeconfig)
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
