// Command launcher is what `make release` ships as bramble-<arch>: a small
// program that embeds the real bramble binary, zstd-compressed, unpacks it
// once into <data-dir>/data/<hash>/bin/bramble and execs it (pkg/launcher).
// Built with the tag bramble_payload, which embeds
// payload/bramble-<GOARCH>.tar.zst and its .sha256 (written by mk/release.mk).
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/bramble-pi/bramble/pkg/launcher"
	"github.com/bramble-pi/bramble/pkg/unpack"
)

func main() {
	var sum string
	if f := strings.Fields(payloadSHA256); len(f) > 0 {
		sum = f[0]
	}
	err := launcher.Exec(unpack.Archive{Data: payload, SHA256: sum}, os.Args, os.Environ(), os.Stderr)
	fmt.Fprintf(os.Stderr, "bramble: %v\n", err)
	os.Exit(1)
}
