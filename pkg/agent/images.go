package agent

import (
	"context"

	"github.com/bramble-pi/bramble/pkg/supervisor"
)

// ImageImporter imports the embedded sandbox image and the archives in
// <data-dir>/agent/images into containerd before the kubelet starts.
func (a *Agent) ImageImporter(sandbox []byte) supervisor.Component {
	return &supervisor.InProcess{ComponentName: "images", Setup: func(ctx context.Context) (func(context.Context) error, error) {
		if err := a.importImages(ctx, sandbox); err != nil {
			return nil, err
		}
		return func(ctx context.Context) error { <-ctx.Done(); return nil }, nil
	}}
}
