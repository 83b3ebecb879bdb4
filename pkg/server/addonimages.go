package server

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/bramble-pi/bramble/pkg/deploy"
	"github.com/bramble-pi/bramble/pkg/images"
	"github.com/bramble-pi/bramble/pkg/supervisor"
)

// addonImageRecheck is how often the check runs again while an image is
// missing or an Addon has not been recorded yet (a user may import the
// tarball meanwhile with `bramble images import`).
const addonImageRecheck = 30 * time.Second

// AddonImageCheck is a component, started after the server's node imported
// its images, that checks the bundled add-ons' images are present in the
// node's containerd (nothing can pull them: they are on no registry). What
// is missing is logged once, at warning level, with fix (where the tarball
// that provides them goes), and recorded in each Addon's status; it checks
// again until everything is there. snapshotter says what the node's
// containerd unpacks images for (read once containerd has started).
func (cp *ControlPlane) AddonImageCheck(containerdSocket string, snapshotter func() (string, error), fix string, log *slog.Logger) supervisor.Component {
	log = log.With("component", "addon-images")
	return &supervisor.InProcess{ComponentName: "addon-images", StopWait: time.Second, Setup: func(context.Context) (func(context.Context) error, error) {
		want, err := deploy.BundledImages(cp.deployConfig())
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context) error {
			if len(want) == 0 {
				<-ctx.Done()
				return nil
			}
			c := &addonImages{want: want, socket: containerdSocket, snapshotter: snapshotter, fix: fix, log: log, kubeconfig: cp.creds.AdminKubeconfig}
			c.run(ctx)
			return nil
		}, nil
	}}
}

type addonImages struct {
	want        map[string][]string
	socket      string
	snapshotter func() (string, error)
	fix         string
	kubeconfig  string
	log         *slog.Logger
	warned      bool
}

// run checks until everything is present and recorded, then waits for ctx.
func (c *addonImages) run(ctx context.Context) {
	t := time.NewTicker(addonImageRecheck)
	defer t.Stop()
	var dyn dynamic.Interface
	for {
		if dyn == nil {
			if rc, err := clientcmd.BuildConfigFromFlags("", c.kubeconfig); err == nil {
				dyn, _ = dynamic.NewForConfig(rc)
			}
		}
		if c.check(ctx, dyn) {
			<-ctx.Done()
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// check returns true once every image is present and every Addon recorded.
func (c *addonImages) check(ctx context.Context, dyn dynamic.Interface) bool {
	cli, err := images.Connect(c.socket)
	if err != nil {
		c.log.Debug("cannot check add-on images", "err", err)
		return false
	}
	defer cli.Close()
	snapshotter, err := c.snapshotter()
	if err != nil {
		c.log.Debug("cannot check add-on images", "err", err)
		return false
	}
	im := images.New(cli, "", c.log)
	im.Snapshotter = snapshotter
	missingBy := map[string][]string{}
	var all []string
	for addon, refs := range c.want {
		missing, err := im.Missing(ctx, refs)
		if err != nil {
			c.log.Debug("cannot check add-on images", "addon", addon, "err", err)
			return false
		}
		missingBy[addon] = missing
		all = append(all, missing...)
	}
	slices.Sort(all)
	all = slices.Compact(all)
	switch {
	case len(all) > 0 && !c.warned:
		c.warned = true
		addons := make([]string, 0, len(missingBy))
		for a, m := range missingBy {
			if len(m) > 0 {
				addons = append(addons, a)
			}
		}
		slices.Sort(addons)
		c.log.Warn("bundled add-on images are missing on this node and no registry has them: "+c.fix,
			"images", strings.Join(all, ","), "addons", strings.Join(addons, ","))
	case len(all) == 0 && c.warned:
		c.warned = false
		c.log.Info("bundled add-on images are now present")
	}
	recorded := true
	for addon, missing := range missingBy {
		if dyn == nil {
			recorded = false
			break
		}
		err := deploy.RecordMissingImages(ctx, dyn, addon, missing, c.fix)
		if err != nil {
			recorded = false
			if !apierrors.IsNotFound(err) && !errors.Is(err, context.Canceled) {
				c.log.Debug("record add-on images", "addon", addon, "err", err)
			}
		}
	}
	return recorded && len(all) == 0
}
