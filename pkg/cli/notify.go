package cli

import (
	"log/slog"

	"github.com/bramble-pi/bramble/pkg/sdnotify"
)

// notifyReady tells the service manager (systemd Type=notify) that bramble
// is ready; without NOTIFY_SOCKET it does nothing.
func notifyReady(log *slog.Logger) {
	if _, err := sdnotify.Ready(); err != nil {
		log.Warn("tell systemd bramble is ready", "err", err)
	}
}

// notifyStopping tells the service manager bramble is shutting down.
func notifyStopping() { _, _ = sdnotify.Stopping() }
