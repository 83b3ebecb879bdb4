package cli

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/urfave/cli/v2"

	"github.com/bramble-pi/bramble/pkg/profiling"
)

// serveProfiles serves Go profiles when --debug-pprof is set.
func serveProfiles(ctx context.Context, c *cli.Context, log *slog.Logger) error {
	addr := c.String("debug-pprof")
	if addr == "" {
		return nil
	}
	if err := profiling.Serve(ctx, addr, log); err != nil {
		return fmt.Errorf("--debug-pprof: %w", err)
	}
	return nil
}
