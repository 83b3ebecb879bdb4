package cli

import (
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/bramble-pi/bramble/pkg/server"
)

func tokenCommand() *cli.Command {
	dataDir := str("data-dir", "/var/lib/bramble", "data directory of the server", "d")
	return &cli.Command{
		Name:  "token",
		Usage: "show the server's join token",
		Subcommands: []*cli.Command{{
			Name:  "show",
			Usage: "print the server token (to stdout only; it is never logged)",
			Flags: []cli.Flag{dataDir},
			Action: func(c *cli.Context) error {
				path := server.NewPaths(c.String("data-dir")).Token()
				data, err := os.ReadFile(path)
				if err != nil {
					return fmt.Errorf("read server token (has `bramble server` run with this --data-dir?): %w", err)
				}
				_, err = fmt.Fprintln(c.App.Writer, strings.TrimSpace(string(data)))
				return err
			},
		}},
	}
}
