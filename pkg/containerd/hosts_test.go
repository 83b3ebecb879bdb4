package containerd

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"

	"github.com/bramble-pi/bramble/pkg/pki"
)

// mirrorFiles writes a CA and a client certificate signed by it.
func mirrorFiles(t *testing.T, dir string) *Mirror {
	t.Helper()
	ca, err := pki.LoadOrCreateCA(filepath.Join(dir, "server-ca.crt"), filepath.Join(dir, "server-ca.key"), "test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	m := &Mirror{URL: "https://10.250.0.1:6443", CAFile: ca.CertPath,
		CertFile: filepath.Join(dir, "client-kubelet.crt"), KeyFile: filepath.Join(dir, "client-kubelet.key")}
	leaf := pki.Leaf{CommonName: "system:node:pi2", Organization: []string{"system:nodes"}, Client: true}
	if _, err := ca.EnsureLeaf(m.CertFile, m.KeyFile, leaf, time.Now()); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestMirrorHosts: with a mirror, config.toml names the certs.d directory
// and containerd's own host resolution puts the mirror (pull and resolve,
// with the CA and client certificate) before the registry, for any
// registry; without, bramble's hosts.toml goes and a user's stays.
func TestMirrorHosts(t *testing.T) {
	dir := t.TempDir()
	c := Config{Root: filepath.Join(dir, "root"), State: filepath.Join(dir, "state"), ConfigDir: filepath.Join(dir, "etc"),
		BinDir: "/bin", CNIConfDir: filepath.Join(dir, "cni"), Snapshotter: "native", SandboxImage: "docker.io/bramble/pause:x",
		Mirror: mirrorFiles(t, dir)}
	if custom, err := WriteConfig(c); err != nil || custom {
		t.Fatalf("WriteConfig = %v, %v", custom, err)
	}
	cfg, err := os.ReadFile(c.ConfigFile())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), `config_path = "`+c.RegistryConfigPath()+`"`) {
		t.Errorf("config.toml lacks config_path:\n%s", cfg)
	}
	if s, err := ConfiguredSnapshotter(c.ConfigFile()); err != nil || s != "native" {
		t.Errorf("ConfiguredSnapshotter = %q, %v", s, err)
	}

	hosts := config.ConfigureHosts(context.Background(), config.HostOptions{HostDir: config.HostDirFromRoot(c.RegistryConfigPath())})
	for _, registry := range []string{"docker.io", "ghcr.io", "registry.example:5000"} {
		got, err := hosts(registry)
		if err != nil {
			t.Fatalf("%s: %v", registry, err)
		}
		if len(got) != 2 {
			t.Fatalf("%s: %d hosts, want the mirror and the registry", registry, len(got))
		}
		m := got[0]
		if m.Scheme != "https" || m.Host != "10.250.0.1:6443" || m.Path != "/v2" || m.Capabilities != docker.HostCapabilityPull|docker.HostCapabilityResolve {
			t.Errorf("%s: first host %+v", registry, m)
		}
		tr, ok := m.Client.Transport.(*http.Transport)
		if !ok || tr.TLSClientConfig == nil || tr.TLSClientConfig.RootCAs == nil || len(tr.TLSClientConfig.Certificates) != 1 {
			t.Errorf("%s: the mirror's client lacks the CA or the client certificate", registry)
		}
		if want := map[string]string{"docker.io": "registry-1.docker.io"}[registry]; want != "" && got[1].Host != want {
			t.Errorf("%s: second host %s, want %s", registry, got[1].Host, want)
		}
	}

	// No mirror (the server's node): bramble's file goes.
	c.Mirror = nil
	if _, err := WriteConfig(c); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.DefaultHostsFile()); !os.IsNotExist(err) {
		t.Errorf("hosts.toml left without a mirror: %v", err)
	}
	// A user's own _default/hosts.toml stays.
	own := []byte("[host.\"https://mirror.example\"]\n")
	if err := os.WriteFile(c.DefaultHostsFile(), own, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteConfig(c); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(c.DefaultHostsFile()); string(got) != string(own) {
		t.Errorf("user's hosts.toml changed: %q", got)
	}
}

// TestUserTemplate: a config.toml.tmpl of the user's is rendered instead
// (old templates without config_path still render).
func TestUserTemplate(t *testing.T) {
	dir := t.TempDir()
	c := Config{ConfigDir: filepath.Join(dir, "etc"), Snapshotter: "overlayfs", Mirror: mirrorFiles(t, dir)}
	if err := os.MkdirAll(c.ConfigDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.TemplateFile(), []byte("version = 3\nroot = \"{{.Root}}\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	custom, err := WriteConfig(c)
	if err != nil || !custom {
		t.Fatalf("WriteConfig = %v, %v", custom, err)
	}
	if configHasRegistryPath(c.ConfigFile()) {
		t.Error("a template without config_path reported as having one")
	}
	if s, err := ConfiguredSnapshotter(c.ConfigFile()); err != nil || s != "overlayfs" {
		t.Errorf("ConfiguredSnapshotter = %q, %v", s, err)
	}
}
