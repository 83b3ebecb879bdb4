// Package cli holds bramble's commands and flags, and turns flags, environment
// and the config file into typed configuration for the other packages.
package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/bramble-pi/bramble/pkg/containerd"
	"github.com/bramble-pi/bramble/pkg/kubectl"
	"github.com/bramble-pi/bramble/pkg/version"
)

// Main runs bramble with argv and returns the exit status.
func Main(argv []string) int {
	// Multi-call: invoked as kubectl (a symlink), behave as kubectl.
	switch filepath.Base(argv[0]) {
	case "kubectl":
		return kubectl.Main(argv[1:])
	case "ctr":
		return containerd.CtrMain(argv)
	case "crictl":
		return crictlMain(argv)
	}
	app := newApp(os.Stdout, os.Stderr)
	if err := app.Run(argv); err != nil {
		var logged loggedError
		isLogged := errors.As(err, &logged)
		if !isLogged && err.Error() != "" {
			fmt.Fprintf(os.Stderr, "bramble: %v\n", err)
		}
		if errors.Is(err, syscall.ENOSPC) || (isLogged && errors.Is(logged.error, syscall.ENOSPC)) {
			fmt.Fprintln(os.Stderr, "bramble: "+diskFull)
		}
		var exit cli.ExitCoder
		if errors.As(err, &exit) {
			return exit.ExitCode()
		}
		return 1
	}
	return 0
}

func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:                   "bramble",
		Usage:                  "a small Kubernetes for Raspberry Pi clusters",
		Version:                version.String(),
		Writer:                 stdout,
		ErrWriter:              stderr,
		HideHelpCommand:        true,
		UseShortOptionHandling: true,
		ExitErrHandler:         func(*cli.Context, error) {}, // Main prints errors once
		Commands: []*cli.Command{
			serverCommand(),
			agentCommand(),
			{
				Name:            "kubectl",
				Usage:           "run kubectl against this cluster (admin kubeconfig by default)",
				SkipFlagParsing: true,
				Action: func(c *cli.Context) error {
					if code := kubectl.Main(c.Args().Slice()); code != 0 {
						return cli.Exit("", code)
					}
					return nil
				},
			},
			{
				Name:            "ctr",
				Usage:           "run ctr against this node's containerd",
				SkipFlagParsing: true,
				Action: func(c *cli.Context) error {
					if code := containerd.CtrMain(append([]string{"ctr"}, c.Args().Slice()...)); code != 0 {
						return cli.Exit("", code)
					}
					return nil
				},
			},
			{
				Name:            "crictl",
				Usage:           "run crictl against this node's containerd",
				SkipFlagParsing: true,
				Action: func(c *cli.Context) error {
					return cli.Exit("", crictlMain(append([]string{"crictl"}, c.Args().Slice()...)))
				},
			},
			tokenCommand(),
			secretsEncryptCommand(),
			certificateCommand(),
			dbCommand(),
			etcdCommand(),
			etcdSnapshotCommand(),
			imagesCommand(),
			checkConfigCommand(),
			killallScriptCommand(),
			{
				Name:  "version",
				Usage: "print the version",
				Action: func(c *cli.Context) error {
					_, err := fmt.Fprintf(c.App.Writer, "bramble version %s\n", version.String())
					return err
				},
			},
		},
	}
}

// diskFull is what to do when a write failed with ENOSPC.
const diskFull = "the disk is full: free space on the filesystem of the file named above " +
	"(unused images: `bramble crictl rmi --prune`; old snapshots: `bramble db snapshot ls` and `delete`; " +
	"other files: `du -xh <mount point> | sort -h | tail`), then start bramble again"

// loggedError is an error already written to the log; Main does not print it again.
type loggedError struct{ error }
