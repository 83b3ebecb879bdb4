package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestClosest(t *testing.T) {
	known := flagNames(serverFlags())
	for in, want := range map[string]string{
		"https-listen-prot": "https-listen-port",
		"data_dir":          "data-dir",
		"tls-sans":          "tls-san",
		"zzzzzzzzzzzz":      "",
	} {
		if got := closest(in, known); got != want {
			t.Errorf("closest(%q) = %q, want %q", in, got, want)
		}
	}
}

// `bramble token show` finds the data dir the way `bramble server` does:
// from the config file too, whose server keys it skips; a typo is an error.
func TestTokenShowReadsConfigFile(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(filepath.Join(data, "server"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "server", "token"), []byte("K10abc::server:s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "config.yaml")
	write := func(s string) {
		if err := os.WriteFile(cfg, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	run := func() (string, error) {
		var out, errOut bytes.Buffer
		err := newApp(&out, &errOut).Run([]string{"bramble", "token", "show", "--config", cfg})
		return out.String(), err
	}
	write("data-dir: " + data + "\nnode-name: pi1\ntls-san: [pi1.local]\n")
	if out, err := run(); err != nil || out != "K10abc::server:s3cret\n" {
		t.Fatalf("token show = %q, %v", out, err)
	}
	write("data-dir: " + data + "\nnode-nmae: pi1\n")
	if _, err := run(); err == nil || !strings.Contains(err.Error(), `unknown key "node-nmae"`) {
		t.Fatalf("typo in config file: %v", err)
	}
}
