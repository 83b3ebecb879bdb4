package agent

import (
	"bytes"
	"context"
	"fmt"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// importImages is a stopgap until pkg/images lands: the sandbox image only.
func (a *Agent) importImages(ctx context.Context, sandbox []byte) error {
	cli, err := client.New(a.containerd.Socket())
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx = namespaces.WithNamespace(ctx, "k8s.io")
	imgs, err := cli.Import(ctx, bytes.NewReader(sandbox), client.WithAllPlatforms(false))
	if err != nil {
		return fmt.Errorf("import sandbox image: %w", err)
	}
	for _, img := range imgs {
		i := client.NewImage(cli, img)
		if err := i.Unpack(ctx, ""); err != nil {
			return fmt.Errorf("unpack %s: %w", img.Name, err)
		}
	}
	return nil
}
