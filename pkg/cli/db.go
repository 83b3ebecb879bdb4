package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/bramble-pi/bramble/pkg/dbsnapshot"
	"github.com/bramble-pi/bramble/pkg/layout"
)

// snapshotDirFlag is --db-snapshot-dir, shared by the server and `bramble db
// snapshot`.
func snapshotDirFlag() cli.Flag {
	return str("db-snapshot-dir", "", "directory of the datastore's snapshots (SQLite or embedded etcd) (default: <data-dir>/server/db/snapshots; e.g. a USB stick)")
}

// snapshotDir is --db-snapshot-dir or its default under the data dir.
func snapshotDir(c *cli.Context) string {
	if d := c.String("db-snapshot-dir"); d != "" {
		return d
	}
	return layout.New(c.String("data-dir")).DBSnapshots()
}

func portFlag() cli.Flag {
	return &cli.IntFlag{Name: "https-listen-port", Value: 6443, Usage: "the server's port (to check it is stopped)", EnvVars: env("https-listen-port")}
}

// refuseWhileServing fails when a server answers on the local port or a
// bramble holds the data dir: what follows needs bramble stopped.
func refuseWhileServing(c *cli.Context, what string) error {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Int("https-listen-port")))
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		return fmt.Errorf("a server answers on %s: stop bramble first, then %s", addr, what)
	}
	release, err := lockDataDir(c.String("data-dir"))
	if err != nil {
		return fmt.Errorf("%w; then %s", err, what)
	}
	release()
	return nil
}

// flagsAfterNames refuses flags after the snapshot names: the parser
// would take them for names.
func flagsAfterNames(c *cli.Context) error {
	for _, a := range c.Args().Slice() {
		if strings.HasPrefix(a, "-") {
			return fmt.Errorf("%s: put flags before the snapshot names", a)
		}
	}
	return nil
}

func dbCommand() *cli.Command {
	return &cli.Command{
		Name:  "db",
		Usage: "manage the server's SQLite datastore",
		Subcommands: []*cli.Command{{
			Name:  "snapshot",
			Usage: "save, list, delete and restore snapshots of the SQLite datastore (with the server's certificates and keys)",
			Subcommands: append([]*cli.Command{
				saveSnapshotCommand("save a consistent snapshot (the server may run): <name>-<node>-<unix time>.db and its .cred.tar",
					func(c *cli.Context, node string, began time.Time) (dbsnapshot.Snapshot, error) {
						db := filepath.Join(layout.New(c.String("data-dir")).DB(), "state.db")
						return dbsnapshot.Save(context.Background(), c.String("data-dir"), db, snapshotDir(c), c.String("name"), node, began)
					}),
				{
					Name: "restore",
					Usage: "with the server stopped, put a snapshot in place of state.db (the current one is moved aside); " +
						"on a fresh machine the certificates, keys and token come from the snapshot's .cred.tar",
					ArgsUsage: "NAME",
					Flags:     serverToolFlags(snapshotDirFlag(), portFlag()),
					Before:    applyConfigFile,
					Action: func(c *cli.Context) error {
						if err := flagsAfterNames(c); err != nil {
							return err
						}
						if c.NArg() != 1 {
							return errors.New("name one snapshot to restore (see `bramble db snapshot ls`)")
						}
						if err := refuseWhileServing(c, "restore and start it again"); err != nil {
							return err
						}
						path, err := dbsnapshot.Find(snapshotDir(c), c.Args().First())
						if err != nil {
							return err
						}
						r, err := dbsnapshot.Restore(context.Background(), c.String("data-dir"), path, time.Now())
						reportRestored(c, r, "database")
						if err != nil {
							return err
						}
						if r.CredKept {
							fmt.Fprintf(c.App.Writer, "kept this data dir's certificates, keys and encryption config (the snapshot's are in %s%s)\n", path, dbsnapshot.CredSuffix)
						}
						fmt.Fprintf(c.App.Writer, "restored %s into %s: start the server (`bramble server` with the same flags); agents reconnect by themselves\n",
							path, filepath.Join(layout.New(c.String("data-dir")).DB(), "state.db"))
						return nil
					},
				},
			}, listDeleteSnapshots(false, "bramble db snapshot ls")...),
		}},
	}
}

// reportRestored says which files a restore wrote and moved aside.
func reportRestored(c *cli.Context, r dbsnapshot.Restored, what string) {
	for _, f := range r.CredRestored {
		fmt.Fprintf(c.App.Writer, "restored %s\n", f)
	}
	for _, f := range r.MovedAside {
		fmt.Fprintf(c.App.Writer, "moved the former %s to %s\n", what, f)
	}
}

// saveSnapshotCommand is the save command of one kind of snapshot.
func saveSnapshotCommand(usage string, save func(c *cli.Context, node string, began time.Time) (dbsnapshot.Snapshot, error)) *cli.Command {
	return &cli.Command{
		Name:   "save",
		Usage:  usage,
		Flags:  serverToolFlags(snapshotDirFlag(), str("name", "on-demand", "the snapshot's name prefix"), str("node-name", "", "node name in the file name (default: the hostname)")),
		Before: applyConfigFile,
		Action: func(c *cli.Context) error {
			node, err := nodeNameFlag(c)
			if err != nil {
				return err
			}
			began := time.Now()
			s, err := save(c, node, began)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(c.App.Writer, "saved %s (%d bytes, %s) and %s\n", s.Path, s.Size, time.Since(began).Round(time.Millisecond), s.Cred)
			return err
		},
	}
}

// listDeleteSnapshots are the ls and delete commands of one kind of
// snapshot (etcd or SQLite); ls names the ls command for messages.
func listDeleteSnapshots(etcd bool, ls string) []*cli.Command {
	kind := "SQLite"
	if etcd {
		kind = "etcd"
	}
	return []*cli.Command{
		{
			Name:    "ls",
			Aliases: []string{"list"},
			Usage:   "list the " + kind + " snapshots: name, size, time",
			Flags:   serverToolFlags(snapshotDirFlag()),
			Before:  applyConfigFile,
			Action:  listSnapshots(etcd),
		},
		{
			Name:      "delete",
			Aliases:   []string{"rm"},
			Usage:     "delete snapshots (and their credentials archives)",
			ArgsUsage: "NAME...",
			Flags:     serverToolFlags(snapshotDirFlag()),
			Before:    applyConfigFile,
			Action:    deleteSnapshots(ls),
		},
	}
}

// listSnapshots lists the snapshots of one kind (etcd or SQLite) in the
// snapshot dir: name, size, time.
func listSnapshots(etcd bool) cli.ActionFunc {
	return func(c *cli.Context) error {
		list, err := dbsnapshot.List(snapshotDir(c))
		if err != nil {
			return err
		}
		w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "NAME\tSIZE\tCREATED")
		for _, s := range list {
			if s.Etcd == etcd {
				fmt.Fprintf(w, "%s\t%d\t%s\n", s.File, s.Size, s.Time.UTC().Format(time.RFC3339))
			}
		}
		return w.Flush()
	}
}

// deleteSnapshots deletes the named snapshots (and their credentials
// archives); ls is the command that lists them.
func deleteSnapshots(ls string) cli.ActionFunc {
	return func(c *cli.Context) error {
		if c.NArg() == 0 {
			return fmt.Errorf("name the snapshots to delete (see `%s`)", ls)
		}
		if err := flagsAfterNames(c); err != nil {
			return err
		}
		var errs []error
		for _, name := range c.Args().Slice() {
			path, err := dbsnapshot.Find(snapshotDir(c), name)
			if err == nil {
				err = dbsnapshot.Delete(path)
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			fmt.Fprintf(c.App.Writer, "deleted %s\n", path)
		}
		return errors.Join(errs...)
	}
}
