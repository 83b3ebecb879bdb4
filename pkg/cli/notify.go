package cli

import "log/slog"

// notifyReady tells the service manager (systemd Type=notify) that bramble
// is ready.
func notifyReady(log *slog.Logger) {
	_ = log
}
