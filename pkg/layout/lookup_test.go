package layout

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLookup(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte("data-dir: /from/config\nwrite-kubeconfig: /from/config.yaml\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	none := "BRAMBLE_CONFIG_FILE=" + filepath.Join(t.TempDir(), "none.yaml")
	for _, c := range []struct {
		name           string
		args, env      []string
		data, kubeconf string
	}{
		{"defaults", []string{"bramble", "token", "show"}, []string{none}, DefaultDataDir, DefaultKubeconfig},
		{"flags", []string{"bramble", "server", "-d", "/d", "--write-kubeconfig=/k"}, []string{none}, "/d", "/k"},
		{"env", []string{"bramble", "kubectl", "get", "nodes"}, []string{none, "BRAMBLE_DATA_DIR=/e", "BRAMBLE_KUBECONFIG_OUTPUT=/ek"}, "/e", "/ek"},
		{"config file", []string{"kubectl", "get", "nodes"}, []string{"BRAMBLE_CONFIG_FILE=" + cfg}, "/from/config", "/from/config.yaml"},
		{"flag over config", []string{"bramble", "-c", cfg, "server", "-o", "/k"}, nil, "/from/config", "/k"},
	} {
		l := Lookup{Args: c.args, Env: c.env}
		if got := l.DataDir(); got != c.data {
			t.Errorf("%s: DataDir = %q, want %q", c.name, got, c.data)
		}
		if got := l.Kubeconfig(); got != c.kubeconf {
			t.Errorf("%s: Kubeconfig = %q, want %q", c.name, got, c.kubeconf)
		}
	}
	if _, err := ReadConfigFile(filepath.Join(t.TempDir(), "missing")); !IsNotExist(err) {
		t.Errorf("missing config file: %v", err)
	}
}
