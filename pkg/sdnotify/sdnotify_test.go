package sdnotify

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// listen opens a real unixgram socket and returns a function reading one
// datagram from it.
func listen(t *testing.T, addr string) func() string {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return func() string {
		t.Helper()
		buf := make([]byte, 4096)
		if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		n, _, err := conn.ReadFromUnix(buf)
		if err != nil {
			t.Fatalf("read datagram: %v", err)
		}
		return string(buf[:n])
	}
}

func TestReadyPathSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	read := listen(t, sock)
	t.Setenv(SocketEnv, sock)

	for _, c := range []struct {
		send func() (bool, error)
		want string
	}{
		{Ready, "READY=1"},
		{func() (bool, error) { return Status("node\nready") }, "STATUS=node ready"},
		{Stopping, "STOPPING=1"},
	} {
		sent, err := c.send()
		if err != nil || !sent {
			t.Fatalf("sent=%v err=%v, want a datagram", sent, err)
		}
		if got := read(); got != c.want {
			t.Errorf("got %q, want %q", got, c.want)
		}
	}
}

func TestAbstractSocket(t *testing.T) {
	name := fmt.Sprintf("@bramble-sdnotify-test-%d", os.Getpid())
	read := listen(t, name)
	t.Setenv(SocketEnv, name)
	if sent, err := Ready(); err != nil || !sent {
		t.Fatalf("sent=%v err=%v", sent, err)
	}
	if got := read(); got != "READY=1" {
		t.Errorf("got %q", got)
	}
}

func TestNoSocket(t *testing.T) {
	t.Setenv(SocketEnv, "")
	if sent, err := Ready(); sent || err != nil {
		t.Errorf("without %s: sent=%v err=%v, want false, nil", SocketEnv, sent, err)
	}
}

func TestErrors(t *testing.T) {
	if _, err := NotifySocket("relative/path", "READY=1"); err == nil {
		t.Error("relative socket path accepted")
	}
	if _, err := NotifySocket(filepath.Join(t.TempDir(), "absent"), "READY=1"); err == nil {
		t.Error("no error for a socket nobody listens on")
	}
	if _, err := NotifySocket("/x", ""); err == nil {
		t.Error("empty state accepted")
	}
}
