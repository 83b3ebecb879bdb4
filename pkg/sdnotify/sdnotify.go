// Package sdnotify tells the service manager about the process's state
// through the sd_notify protocol: one datagram ("READY=1", "STATUS=...") sent
// to the unix socket named by $NOTIFY_SOCKET. systemd sets it for a unit with
// Type=notify and starts the unit's dependents (and returns from
// `systemctl start`) only once READY=1 arrives.
//
// Without $NOTIFY_SOCKET (no systemd, OpenRC, a shell) every call is a no-op
// that reports false. No dependency beyond the standard library.
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
)

// SocketEnv is the environment variable holding the notification socket: a
// file system path, or an abstract socket name starting with "@".
const SocketEnv = "NOTIFY_SOCKET"

// Notify sends state (newline-separated KEY=VALUE assignments, see
// sd_notify(3)) to $NOTIFY_SOCKET. It reports whether a datagram was sent:
// false with a nil error when the variable is unset.
func Notify(state string) (bool, error) {
	return NotifySocket(os.Getenv(SocketEnv), state)
}

// NotifySocket is Notify with an explicit socket address ("" does nothing).
func NotifySocket(socket, state string) (bool, error) {
	if socket == "" {
		return false, nil
	}
	if !strings.HasPrefix(socket, "/") && !strings.HasPrefix(socket, "@") {
		return false, fmt.Errorf("sd_notify: %s=%q is neither an absolute path nor an abstract socket (@name)", SocketEnv, socket)
	}
	if state == "" {
		return false, errors.New("sd_notify: empty state")
	}
	// Go maps a leading "@" to the abstract namespace (a leading NUL byte).
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: socket, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("sd_notify: connect to %s: %w", socket, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("sd_notify: send to %s: %w", socket, err)
	}
	return true, nil
}

// Ready tells the service manager that start-up is complete (READY=1): for
// bramble, that the node is Ready. Call it once.
func Ready() (bool, error) { return Notify("READY=1") }

// Stopping tells the service manager that the process is shutting down.
func Stopping() (bool, error) { return Notify("STOPPING=1") }

// Status sets the one-line status `systemctl status` shows.
func Status(msg string) (bool, error) {
	return Notify("STATUS=" + strings.ReplaceAll(msg, "\n", " "))
}
