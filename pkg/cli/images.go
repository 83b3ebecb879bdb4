package cli

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bramble-pi/bramble/pkg/containerd"
	"github.com/bramble-pi/bramble/pkg/images"
	"github.com/bramble-pi/bramble/pkg/layout"
	"github.com/bramble-pi/bramble/pkg/logging"
)

func imagesCommand() *cli.Command {
	return &cli.Command{
		Name:  "images",
		Usage: "make image archives available to every node; list images and the nodes that have them",
		Subcommands: []*cli.Command{{
			Name:      "import",
			Usage:     "import image archives into the server's containerd (every node pulls them from the server) and keep them for the next start",
			ArgsUsage: "FILE...",
			Flags:     serverToolFlags(boolean("debug", "log more")),
			Before:    applyConfigFile,
			Action:    importImages,
		}, {
			Name:   "ls",
			Usage:  "list the server's images and the nodes that have each",
			Flags:  serverToolFlags(),
			Before: applyConfigFile,
			Action: listImages,
		}},
	}
}

func importImages(c *cli.Context) error {
	if c.NArg() == 0 {
		return errors.New("name the image archive(s) to import: bramble images import FILE... (docker save or OCI layout, .tar, .tar.gz or .tar.zst)")
	}
	dataDir := c.String("data-dir")
	client, err := images.ConnectServing(c.Context, containerd.DefaultSocket)
	if err != nil {
		return err
	}
	defer client.Close()
	snapshotter, err := nodeSnapshotter(dataDir)
	if err != nil {
		return fmt.Errorf("%w (has bramble run with this --data-dir?)", err)
	}
	imp := images.New(client, layout.New(dataDir).ImagesState(), logging.Setup(c.App.ErrWriter, c.Bool("debug")))
	imp.Snapshotter = snapshotter
	imp.ProgressInterval = 2 * time.Second
	var errs []error
	for _, file := range c.Args().Slice() {
		names, err := imp.Add(c.Context, file, layout.New(dataDir).Images())
		for _, n := range names {
			fmt.Fprintln(c.App.Writer, n)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func listImages(c *cli.Context) error {
	cs, _, err := adminClient(c.String("data-dir"))
	if err != nil {
		return err
	}
	client, err := images.ConnectServing(c.Context, containerd.DefaultSocket)
	if err != nil {
		return err
	}
	defer client.Close()
	list, err := images.List(c.Context, client)
	if err != nil {
		return err
	}
	nodes, err := cs.CoreV1().Nodes().List(c.Context, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	// Each node reports the images its kubelet sees, by tag and digest.
	have := map[string][]string{}
	for _, n := range nodes.Items {
		for _, img := range n.Status.Images {
			for _, name := range img.Names {
				if !slices.Contains(have[name], n.Name) {
					have[name] = append(have[name], n.Name)
				}
			}
		}
	}
	w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "IMAGE\tSIZE\tNODES")
	for _, img := range list {
		size := "?"
		if img.Size >= 0 {
			size = fmt.Sprintf("%.1f MiB", float64(img.Size)/(1<<20))
		}
		on := slices.Sorted(slices.Values(have[img.Name]))
		nodes := strings.Join(on, ",")
		if nodes == "" {
			nodes = "-"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\n", img.Name, size, nodes)
	}
	return w.Flush()
}
