package launcher

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bramble-pi/bramble/pkg/unpack"
	"github.com/bramble-pi/bramble/pkg/unpack/unpacktest"
)

func TestDataDirs(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte("token: x\ndata-dir: /from/config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	none := filepath.Join(t.TempDir(), "none.yaml")
	home := []string{"HOME=/home/pi", "BRAMBLE_CONFIG_FILE=" + none}
	for _, c := range []struct {
		name string
		argv []string
		env  []string
		euid int
		want []string
	}{
		{"default root", []string{"bramble", "server"}, home, 0, []string{"/var/lib/bramble"}},
		{"default user", []string{"bramble", "kubectl", "get", "pods"}, home, 1000,
			[]string{"/var/lib/bramble", "/home/pi/.cache/bramble"}},
		{"xdg", []string{"bramble"}, append(home, "XDG_CACHE_HOME=/xdg"), 1000, []string{"/var/lib/bramble", "/xdg/bramble"}},
		{"flag", []string{"bramble", "server", "--data-dir", "/d1"}, home, 0, []string{"/d1"}},
		{"flag=", []string{"bramble", "server", "--data-dir=/d2"}, home, 0, []string{"/d2"}},
		{"short", []string{"bramble", "agent", "-d", "/d3"}, home, 0, []string{"/d3"}},
		{"last wins", []string{"bramble", "server", "-d=/a", "--data-dir", "/b"}, home, 0, []string{"/b"}},
		{"flag over env", []string{"bramble", "server", "-d", "/f"}, append(home, "BRAMBLE_DATA_DIR=/e"), 0, []string{"/f"}},
		{"env", []string{"bramble", "server"}, append(home, "BRAMBLE_DATA_DIR=/e"), 0, []string{"/e"}},
		{"config", []string{"bramble", "server", "--config", cfg}, home, 0, []string{"/from/config"}},
		{"config env", []string{"bramble", "server"}, []string{"BRAMBLE_CONFIG_FILE=" + cfg}, 0, []string{"/from/config"}},
		{"env over config", []string{"bramble", "server", "-c", cfg}, append(home, "BRAMBLE_DATA_DIR=/e"), 0, []string{"/e"}},
		{"kubectl's -d is not ours", []string{"bramble", "kubectl", "-d", "/x"}, home, 0, []string{"/var/lib/bramble"}},
		{"as kubectl", []string{"/usr/local/bin/kubectl", "--data-dir", "/x"}, home, 0, []string{"/var/lib/bramble"}},
		{"after --", []string{"bramble", "--", "-d", "/x"}, home, 0, []string{"/var/lib/bramble"}},
		{"dangling flag", []string{"bramble", "server", "-d"}, home, 0, []string{"/var/lib/bramble"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := DataDirs(c.argv, c.env, c.euid); !slices.Equal(got, c.want) {
				t.Errorf("DataDirs(%q) = %q, want %q", c.argv, got, c.want)
			}
		})
	}
}

func TestUnpack(t *testing.T) {
	data, sum := unpacktest.Archive(t, unpacktest.File("bin/bramble", "#!/bin/sh\necho hi\n"))
	payload := unpack.Archive{Data: data, SHA256: sum}
	dir := t.TempDir()
	var stderr bytes.Buffer
	bin, err := Unpack(payload, []string{dir}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "data", sum[:unpack.HashLen], "bin", "bramble"); bin != want {
		t.Errorf("Unpack = %s, want %s", bin, want)
	}
	if stderr.Len() != 0 {
		t.Errorf("a quick unpack said %q", stderr.String())
	}

	// A data dir that cannot be written falls through to the next one.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	second := t.TempDir()
	if bin, err := Unpack(payload, []string{file, second}, &stderr); err != nil || !strings.HasPrefix(bin, second) {
		t.Errorf("fallback: %s, %v", bin, err)
	}
	if _, err := Unpack(payload, []string{file}, &stderr); err == nil {
		t.Error("no usable data dir, no error")
	}
	if _, err := Unpack(unpack.Archive{}, []string{dir}, &stderr); err == nil ||
		!strings.Contains(err.Error(), "without its payload") {
		t.Errorf("empty payload: %v", err)
	}
}

func TestSlowNotice(t *testing.T) {
	defer func(d time.Duration) { SlowAfter = d }(SlowAfter)
	SlowAfter = 10 * time.Millisecond
	var buf bytes.Buffer
	done := slowNotice(&buf, unpack.Archive{Data: make([]byte, 3<<20), SHA256: strings.Repeat("a", 64)}, "/d/data")
	time.Sleep(50 * time.Millisecond)
	done()
	if out := buf.String(); !strings.Contains(out, "unpacking 3 MB into /d/data/aaaaaaaaaaaaaaaa") ||
		!strings.Contains(out, "unpacked in") {
		t.Errorf("slow unpack said %q", out)
	}
}
