package cli

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"k8s.io/client-go/kubernetes"

	"github.com/bramble-pi/bramble/pkg/kubeconfig"
	"github.com/bramble-pi/bramble/pkg/layout"
	"github.com/bramble-pi/bramble/pkg/token"
)

func tokenCommand() *cli.Command {
	return &cli.Command{
		Name:  "token",
		Usage: "show the server's join token; create, list and delete bootstrap tokens",
		Subcommands: []*cli.Command{{
			Name:   "show",
			Usage:  "print the server token (to stdout only; it is never logged)",
			Flags:  serverToolFlags(),
			Before: applyConfigFile,
			Action: func(c *cli.Context) error {
				path := layout.New(c.String("data-dir")).Token()
				data, err := os.ReadFile(path)
				if err != nil {
					return fmt.Errorf("read server token (has `bramble server` run with this --data-dir?): %w", err)
				}
				_, err = fmt.Fprintln(c.App.Writer, strings.TrimSpace(string(data)))
				return err
			},
		}, {
			Name:  "create",
			Usage: "create a bootstrap token that joins agents until it expires",
			Flags: serverToolFlags(
				&cli.DurationFlag{Name: "ttl", Value: 24 * time.Hour, Usage: "lifetime (0: never expires)"},
				&cli.StringFlag{Name: "description", Usage: "what the token is for"},
			),
			Before: applyConfigFile,
			Action: func(c *cli.Context) error {
				cs, ca, err := adminClient(c.String("data-dir"))
				if err != nil {
					return err
				}
				if c.Duration("ttl") < 0 {
					return fmt.Errorf("--ttl: %s is negative", c.Duration("ttl"))
				}
				t, err := token.CreateBootstrap(c.Context, cs, ca, c.Duration("ttl"), c.String("description"), time.Now())
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(c.App.Writer, t.String())
				return err
			},
		}, {
			Name:   "list",
			Usage:  "list bootstrap tokens (IDs, expiry, description; never secrets)",
			Flags:  serverToolFlags(),
			Before: applyConfigFile,
			Action: func(c *cli.Context) error {
				cs, _, err := adminClient(c.String("data-dir"))
				if err != nil {
					return err
				}
				list, err := token.ListBootstrap(c.Context, cs)
				if err != nil {
					return err
				}
				w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "ID\tEXPIRES\tDESCRIPTION")
				now := time.Now()
				for _, t := range list {
					exp := "never"
					if !t.Expires.IsZero() {
						exp = t.Expires.Format(time.RFC3339)
						if !now.Before(t.Expires) {
							exp += " (expired)"
						}
					}
					fmt.Fprintf(w, "%s\t%s\t%s\n", t.ID, exp, t.Description)
				}
				return w.Flush()
			},
		}, {
			Name:      "delete",
			Usage:     "delete bootstrap tokens",
			ArgsUsage: "<id or token>...",
			Flags:     serverToolFlags(),
			Before:    applyConfigFile,
			Action: func(c *cli.Context) error {
				if c.NArg() == 0 {
					return fmt.Errorf("name the bootstrap token(s) to delete by ID (see `bramble token list`)")
				}
				cs, _, err := adminClient(c.String("data-dir"))
				if err != nil {
					return err
				}
				for _, id := range c.Args().Slice() {
					if err := token.DeleteBootstrap(c.Context, cs, id); err != nil {
						return err
					}
				}
				return nil
			},
		}},
	}
}

// adminClient talks to the local server as admin and returns its CA bundle.
func adminClient(dataDir string) (*kubernetes.Clientset, []byte, error) {
	d := layout.New(dataDir)
	ca, err := os.ReadFile(d.ServerTLS("server-ca.crt"))
	if err != nil {
		return nil, nil, fmt.Errorf("read the server CA (run this on the server, with its --data-dir): %w", err)
	}
	cs, err := kubeconfig.Clientset(d.ServerCred("admin.kubeconfig"), 15*time.Second)
	if err != nil {
		return nil, nil, fmt.Errorf("admin kubeconfig (run this on the server, with its --data-dir): %w", err)
	}
	return cs, ca, nil
}
