package cli

import (
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/bramble-pi/bramble/pkg/server"
)

func certificateCommand() *cli.Command {
	return &cli.Command{
		Name:  "certificate",
		Usage: "manage the server's certificates",
		Subcommands: []*cli.Command{{
			Name: "rotate",
			Usage: "with the server stopped, move its leaf certificates (or those of --service) to a backup directory: " +
				"the next start issues new ones from the same CAs (nodes and tokens keep working)",
			Flags: serverToolFlags(
				&cli.StringSliceFlag{Name: "service", Aliases: []string{"s"}, Usage: "only these (repeatable): " + fmt.Sprint(server.RotatableServices())},
				portFlag(),
			),
			Before: applyConfigFile,
			Action: func(c *cli.Context) error {
				if err := refuseWhileServing(c, "rotate and start it again"); err != nil {
					return err
				}
				backup, moved, err := server.RotateCertificates(c.String("data-dir"), splitList(c.StringSlice("service")), time.Now())
				for _, f := range moved {
					fmt.Fprintf(c.App.Writer, "moved %s\n", f)
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(c.App.Writer, "%d files backed up in %s; start the server to issue new certificates (the admin kubeconfig is written again)\n", len(moved), backup)
				return nil
			},
		}},
	}
}
