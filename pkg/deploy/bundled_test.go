package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

func TestWriteBundled(t *testing.T) {
	bundled := fstest.MapFS{
		"coredns.yaml":     {Data: []byte("clusterIP: {{ .ClusterDNS }}\ndomain: {{ .ClusterDomain }}\n")},
		"traefik.yaml":     {Data: []byte("kind: DaemonSet\n")},
		"plumber-api.yaml": {Data: []byte("kind: Deployment\n")},
	}
	dir := t.TempDir()
	cfg := Config{Dir: dir, Bundled: bundled, Values: Values{ClusterDNS: "10.43.0.10", ClusterDomain: "cluster.local"}}
	if err := WriteBundled(cfg); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "coredns.yaml"))
	if string(got) != "clusterIP: 10.43.0.10\ndomain: cluster.local\n" {
		t.Fatalf("rendered coredns.yaml: %q", got)
	}

	// <name>.yaml.skip keeps a bundled add-on out and removes an earlier copy.
	if err := os.WriteFile(filepath.Join(dir, "traefik.yaml.skip"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// --disable does the same.
	cfg.Disabled = []string{"plumber-api"}
	if err := WriteBundled(cfg); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"traefik.yaml", "plumber-api.yaml"} {
		if _, err := os.Stat(filepath.Join(dir, name)); !os.IsNotExist(err) {
			t.Errorf("%s still present: %v", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "coredns.yaml")); err != nil {
		t.Errorf("coredns.yaml removed: %v", err)
	}

	cfg.Disabled = []string{"treafik"}
	if err := WriteBundled(cfg); err == nil || !strings.Contains(err.Error(), "--disable treafik: no bundled add-on") {
		t.Errorf("unknown --disable name: %v", err)
	}
}

func TestDecode(t *testing.T) {
	objs, err := decode([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: b\n"))
	if err != nil || len(objs) != 2 || objs[1].GetName() != "b" {
		t.Fatalf("decode: %v %d", err, len(objs))
	}
	for in, want := range map[string]string{
		"kind: ConfigMap\nmetadata:\n  name: a\n":                "apiVersion and kind are required",
		"apiVersion: v1\nkind: ConfigMap\n":                      "metadata.name is required",
		"apiVersion: v1\nkind: ConfigMap\nmetadata: [unclosed\n": "document 1",
	} {
		if _, err := decode([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("decode(%q) = %v, want %q", in, err, want)
		}
	}
}
