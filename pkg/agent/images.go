package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/bramble-pi/bramble/pkg/containerd"
	"github.com/bramble-pi/bramble/pkg/images"
	"github.com/bramble-pi/bramble/pkg/supervisor"
)

// imageImporter imports the embedded sandbox image and the archives in
// <data-dir>/agent/images into containerd before the kubelet starts, so no
// pod ever needs a registry for them. A bad archive is logged with its name
// and does not stop the node.
func (a *Agent) imageImporter(ctrd *containerd.Containerd, sandbox []byte) supervisor.Component {
	return &supervisor.InProcess{ComponentName: "images", Setup: func(ctx context.Context) (func(context.Context) error, error) {
		cli, err := images.Connect(a.containerd.Socket())
		if err != nil {
			return nil, err
		}
		defer cli.Close()
		imp := images.New(cli, ImagesStateFile(a.cfg.DataDir), a.log.With("component", "images"))
		imp.Snapshotter = ctrd.Snapshotter()
		if len(sandbox) > 0 {
			if err := imp.ImportReader(ctx, "embedded sandbox image", bytes.NewReader(sandbox)); err != nil {
				return nil, fmt.Errorf("sandbox image: %w", err)
			}
		}
		if err := imp.ImportDir(ctx, ImagesDir(a.cfg.DataDir)); err != nil && !errors.Is(err, context.Canceled) {
			a.log.Error("some image archives were not imported", "err", err)
		}
		return func(ctx context.Context) error { <-ctx.Done(); return nil }, nil
	}}
}
