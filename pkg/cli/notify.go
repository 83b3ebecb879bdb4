package cli

import (
	"context"
	"log/slog"

	"github.com/bramble-pi/bramble/pkg/logging"
	"github.com/bramble-pi/bramble/pkg/memtrim"
	"github.com/bramble-pi/bramble/pkg/process"
	"github.com/bramble-pi/bramble/pkg/sdnotify"
)

// notifyReady tells the service manager (systemd Type=notify) that bramble
// is ready; without NOTIFY_SOCKET it does nothing.
func notifyReady(log *slog.Logger) {
	if _, err := sdnotify.Ready(); err != nil {
		log.Warn("tell systemd bramble is ready", "err", err)
	}
}

// notifyStopping tells the service manager bramble is shutting down, and the
// logs that the components' errors from now on are the stop's.
func notifyStopping() {
	logging.Stopping()
	_, _ = sdnotify.Stopping()
}

// releaseStartupMemoryLater, called once bramble is ready, sets the
// collector for a running node and gives back start-up's memory once
// start-up is well behind (pkg/memtrim), unless bramble stops first.
func releaseStartupMemoryLater(ctx context.Context, log *slog.Logger) {
	process.SettleRuntime()
	memtrim.After(ctx, memtrim.Delay, log)
}
