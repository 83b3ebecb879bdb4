package cli

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/bramble-pi/bramble/pkg/dbsnapshot"
	"github.com/bramble-pi/bramble/pkg/etcd"
	"github.com/bramble-pi/bramble/pkg/layout"
)

func etcdCommand() *cli.Command {
	return &cli.Command{
		Name:  "etcd",
		Usage: "the embedded etcd of a server started with --cluster-init or joined to one (run on a server)",
		Subcommands: []*cli.Command{
			{
				Name:   "members",
				Usage:  "list the cluster's etcd members: NAME ID ROLE STATE PEER-URLS",
				Flags:  serverToolFlags(),
				Before: applyConfigFile,
				Action: func(c *cli.Context) error {
					return withEtcd(c, func(ctx context.Context, ec *clientv3.Client) error {
						list, err := ec.MemberList(ctx)
						if err != nil {
							return fmt.Errorf("etcd member list: %w", err)
						}
						w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
						fmt.Fprintln(w, "NAME\tID\tROLE\tSTATE\tPEER-URLS")
						for _, m := range list.Members {
							fmt.Fprintln(w, etcd.MemberLine(m))
						}
						return w.Flush()
					})
				},
			},
			{
				Name:      "remove-member",
				Usage:     "remove a server's etcd member (a server that is gone for good; kubectl delete node of a server does it too)",
				ArgsUsage: "NAME",
				Flags:     serverToolFlags(),
				Before:    applyConfigFile,
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return errors.New("give the member's name (bramble etcd members lists them)")
					}
					name := c.Args().First()
					return withEtcd(c, func(ctx context.Context, ec *clientv3.Client) error {
						removed, err := etcd.RemoveMember(ctx, ec, name)
						if err != nil {
							return err
						}
						if !removed {
							return fmt.Errorf("no etcd member called %q (bramble etcd members lists them)", name)
						}
						_, err = fmt.Fprintf(c.App.Writer, "etcd member %s removed\n", name)
						return err
					})
				},
			},
		},
	}
}

// etcdSnapshotCommand is k3s's `etcd-snapshot`: snapshots of embedded etcd
// in the same directory and layout as the SQLite ones (bramble db snapshot).
func etcdSnapshotCommand() *cli.Command {
	return &cli.Command{
		Name:  "etcd-snapshot",
		Usage: "save, list, delete and restore snapshots of embedded etcd (with the server's certificates and keys); run on a server",
		Subcommands: append([]*cli.Command{
			saveSnapshotCommand("save a snapshot of the running member: <name>-<node>-<unix time>.etcd and its .cred.tar",
				func(c *cli.Context, node string, began time.Time) (s dbsnapshot.Snapshot, err error) {
					err = withEtcd(c, func(ctx context.Context, ec *clientv3.Client) error {
						ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Minute)
						defer cancel()
						s, err = dbsnapshot.SaveEtcd(ctx, c.String("data-dir"), ec, snapshotDir(c), c.String("name"), node, began)
						return err
					})
					return s, err
				}),
			{
				Name: "restore",
				Usage: "with the server stopped, make its etcd a cluster of one holding the snapshot (the current etcd data is moved aside); " +
					"on a fresh machine the certificates, keys and token come from the snapshot's .cred.tar. The other servers then join it again",
				ArgsUsage: "NAME",
				Flags: serverToolFlags(snapshotDirFlag(), portFlag(), str("node-name", "", "this server's node name (default: the hostname)"),
					str("node-ip", "", "this server's address, where the other members reach it (default: that of the default route)")),
				Before: applyConfigFile,
				Action: restoreEtcdSnapshot,
			},
		}, listDeleteSnapshots(true, "bramble etcd-snapshot ls")...),
	}
}

func restoreEtcdSnapshot(c *cli.Context) error {
	if err := flagsAfterNames(c); err != nil {
		return err
	}
	if c.NArg() != 1 {
		return errors.New("name one snapshot to restore (see `bramble etcd-snapshot ls`)")
	}
	node, err := nodeNameFlag(c)
	if err != nil {
		return err
	}
	ip, err := defaultNodeIP()
	if c.String("node-ip") != "" {
		ip, err = ipFlag(c, "node-ip")
	}
	if err != nil {
		return err
	}
	if err := refuseWhileServing(c, "restore and start it again"); err != nil {
		return err
	}
	path, err := dbsnapshot.Find(snapshotDir(c), c.Args().First())
	if err != nil {
		return err
	}
	r, err := dbsnapshot.RestoreEtcd(c.String("data-dir"), path, node, etcd.PeerURL(ip, etcd.PeerPort), time.Now())
	reportRestored(c, r, "etcd data")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.App.Writer, "restored %s as a cluster of one member (%s): start the server (`bramble server` with the same flags); "+
		"on each other server move %s away and start it with --server https://<this server>:6443 and the server token\n",
		path, node, layout.New("<data-dir>").Etcd())
	return err
}

// withEtcd runs f with a client of the local member (the server's client
// certificate from its data dir).
func withEtcd(c *cli.Context, f func(context.Context, *clientv3.Client) error) error {
	d := layout.New(c.String("data-dir"))
	ec, err := etcd.NewClient(etcd.Config{}.ClientURL(), etcd.TLS{
		CertFile: d.ServerTLS("etcd/client.crt"), KeyFile: d.ServerTLS("etcd/client.key"), CAFile: d.ServerTLS("etcd/server-ca.crt"),
	})
	if err != nil {
		return fmt.Errorf("%w (is %s a server on embedded etcd?)", err, c.String("data-dir"))
	}
	defer ec.Close()
	ctx, cancel := context.WithTimeout(c.Context, 15*time.Second)
	defer cancel()
	return f(ctx, ec)
}
