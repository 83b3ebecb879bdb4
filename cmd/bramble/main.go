// Command bramble is a single-binary Kubernetes distribution for Raspberry Pi clusters.
package main

import (
	"os"

	"github.com/bramble-pi/bramble/pkg/cli"
)

func main() {
	os.Exit(cli.Main(os.Args))
}
