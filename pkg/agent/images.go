package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bramble-pi/bramble/pkg/containerd"
	"github.com/bramble-pi/bramble/pkg/images"
	"github.com/bramble-pi/bramble/pkg/supervisor"
)

// imageImporter imports the embedded sandbox image, the archives in
// <data-dir>/agent/images and those shipped beside the binary into containerd before the kubelet starts, so no
// pod ever needs a registry for them. A bad archive is logged with its name
// and does not stop the node.
func (a *Agent) imageImporter(ctrd *containerd.Containerd, sandbox []byte) supervisor.Component {
	// SelfBounded: the import reports its progress; on a slow board (or an
	// emulated one) it outlasts the ready timeout.
	return &supervisor.InProcess{ComponentName: "images", SelfBounded: true, Setup: func(ctx context.Context) (func(context.Context) error, error) {
		cli, err := images.Connect(a.containerd.Socket())
		if err != nil {
			return nil, err
		}
		defer cli.Close()
		imp := images.New(cli, a.cfg.dirs().ImagesState(), a.log.With("component", "images"))
		imp.Snapshotter = ctrd.Snapshotter()
		if len(sandbox) > 0 {
			if err := imp.ImportReader(ctx, "embedded sandbox image", bytes.NewReader(sandbox)); err != nil {
				return nil, fmt.Errorf("sandbox image: %w", err)
			}
		}
		dir := a.cfg.dirs().Images()
		err = errors.Join(imp.ImportDir(ctx, dir), imp.ImportFiles(ctx, shipped(dir, a.cfg.ShippedImages)))
		if err != nil && !errors.Is(err, context.Canceled) {
			a.log.Error("some image archives were not imported", "err", err)
		}
		return func(ctx context.Context) error { <-ctx.Done(); return nil }, nil
	}}
}

// shipped drops the archives beside the binary that dir holds a file of the
// same name of (install.sh copies the tarball there): one import is enough.
func shipped(dir string, files []string) []string {
	var out []string
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(dir, filepath.Base(f))); err != nil {
			out = append(out, f)
		}
	}
	return out
}
