package cli

import (
	"io"

	"github.com/urfave/cli/v2"

	"github.com/bramble-pi/bramble/scripts"
)

// killallScriptCommand prints bramble-killall.sh, the one copy embedded from
// scripts/: install.sh writes it from the binary it installs.
func killallScriptCommand() *cli.Command {
	return &cli.Command{
		Name:   "killall-script",
		Usage:  "print bramble-killall.sh (install.sh installs it)",
		Hidden: true,
		Action: func(c *cli.Context) error {
			_, err := io.WriteString(c.App.Writer, scripts.Killall)
			return err
		},
	}
}
