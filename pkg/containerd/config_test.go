package containerd

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	srvconfig "github.com/containerd/containerd/v2/cmd/containerd/server/config"
	"github.com/containerd/containerd/v2/version"
)

// The parts of the CRI plugins' configuration the test reads back.
type criImages struct {
	Snapshotter  string            `toml:"snapshotter"`
	PinnedImages map[string]string `toml:"pinned_images"`
}

type criRuntime struct {
	EnableSelinux       bool `toml:"enable_selinux"`
	DisableApparmor     bool `toml:"disable_apparmor"`
	RestrictOOMScoreAdj bool `toml:"restrict_oom_score_adj"`
	CNI                 struct {
		BinDirs []string `toml:"bin_dirs"`
		ConfDir string   `toml:"conf_dir"`
	} `toml:"cni"`
	Containerd struct {
		DefaultRuntimeName string `toml:"default_runtime_name"`
		Runtimes           map[string]struct {
			Type    string `toml:"runtime_type"`
			Options struct {
				BinaryName    string `toml:"BinaryName"`
				SystemdCgroup bool   `toml:"SystemdCgroup"`
			} `toml:"options"`
		} `toml:"runtimes"`
	} `toml:"containerd"`
}

func testConfig(t *testing.T) Config {
	dir := t.TempDir()
	return Config{
		Root:         filepath.Join(dir, "root"),
		State:        filepath.Join(dir, "run"),
		ConfigDir:    filepath.Join(dir, "etc"),
		BinDir:       filepath.Join(dir, "bin"),
		CNIConfDir:   filepath.Join(dir, "net.d"),
		Snapshotter:  "overlayfs",
		SandboxImage: "docker.io/bramble/pause:test",
	}
}

// load reads config.toml the way containerd does at start (migrating it to
// containerd's current config version).
func load(t *testing.T, c Config) *srvconfig.Config {
	t.Helper()
	out := &srvconfig.Config{Version: version.ConfigVersion}
	if err := srvconfig.LoadConfig(context.Background(), c.ConfigFile(), out); err != nil {
		t.Fatalf("containerd cannot load the generated config: %v", err)
	}
	return out
}

func TestWriteConfig(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
	}{
		{"defaults", func(*Config) {}},
		{"no CAP_SYS_RESOURCE", func(c *Config) { c.RestrictOOMScoreAdj = true }},
		{"systemd cgroups", func(c *Config) { c.SystemdCgroup = true }},
		{"native snapshotter", func(c *Config) { c.Snapshotter = "native" }},
		{"debug", func(c *Config) { c.Debug = true }},
		{"AppArmor on the host", func(c *Config) { c.AppArmor = true }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig(t)
			tt.change(&c)
			if _, err := WriteConfig(c); err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile(c.ConfigFile())
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(raw), `address = "`+c.Socket()+`"`) {
				t.Errorf("no grpc address %s in:\n%s", c.Socket(), raw)
			}
			got := load(t, c)
			if got.Root != c.Root || got.State != c.State {
				t.Errorf("root %q state %q, want %q %q", got.Root, got.State, c.Root, c.State)
			}
			if want := map[bool]string{true: "debug", false: "warn"}[c.Debug]; got.Debug.Level != want {
				t.Errorf("debug level %q, want %q", got.Debug.Level, want)
			}

			var images criImages
			if _, err := got.Decode(context.Background(), "io.containerd.cri.v1.images", &images); err != nil {
				t.Fatal(err)
			}
			if images.Snapshotter != c.Snapshotter || images.PinnedImages["sandbox"] != c.SandboxImage {
				t.Errorf("images plugin %+v, want snapshotter %s, sandbox %s", images, c.Snapshotter, c.SandboxImage)
			}

			var rt criRuntime
			if _, err := got.Decode(context.Background(), "io.containerd.cri.v1.runtime", &rt); err != nil {
				t.Fatal(err)
			}
			if rt.RestrictOOMScoreAdj != c.RestrictOOMScoreAdj {
				t.Errorf("restrict_oom_score_adj = %v, want %v", rt.RestrictOOMScoreAdj, c.RestrictOOMScoreAdj)
			}
			if rt.DisableApparmor == c.AppArmor || rt.EnableSelinux {
				t.Errorf("disable_apparmor %v with AppArmor %v, selinux %v", rt.DisableApparmor, c.AppArmor, rt.EnableSelinux)
			}
			if len(rt.CNI.BinDirs) != 1 || rt.CNI.BinDirs[0] != c.BinDir || rt.CNI.ConfDir != c.CNIConfDir {
				t.Errorf("cni %+v, want bin %s conf %s", rt.CNI, c.BinDir, c.CNIConfDir)
			}
			runc, ok := rt.Containerd.Runtimes["runc"]
			if rt.Containerd.DefaultRuntimeName != "runc" || !ok || runc.Type != "io.containerd.runc.v2" {
				t.Fatalf("runtimes %+v", rt.Containerd)
			}
			if runc.Options.BinaryName != filepath.Join(c.BinDir, "runc") || runc.Options.SystemdCgroup != c.SystemdCgroup {
				t.Errorf("runc options %+v, want the bundled runc, SystemdCgroup %v", runc.Options, c.SystemdCgroup)
			}
		})
	}
}

func TestWriteConfigTemplate(t *testing.T) {
	tests := []struct {
		name, tmpl string
		want       string // in config.toml; "" when an error is wanted
		wantErr    string
	}{
		{"user template", "version = 3\nroot = \"{{.Root}}\"\n# mine\n", "# mine", ""},
		{"unknown field", "root = \"{{.NoSuchField}}\"\n", "", "NoSuchField"},
		{"bad syntax", "root = \"{{.Root\"\n", "", "containerd config.toml template"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig(t)
			if err := os.MkdirAll(c.ConfigDir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(c.TemplateFile(), []byte(tt.tmpl), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := WriteConfig(c)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("WriteConfig = %v, want an error with %q", err, tt.wantErr)
				}
				if _, err := os.Stat(c.ConfigFile()); err == nil {
					t.Error("config.toml written from a broken template")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := os.ReadFile(c.ConfigFile())
			if !strings.Contains(string(raw), tt.want) || !strings.Contains(string(raw), c.Root) {
				t.Errorf("config.toml:\n%s\nwant %q and the root", raw, tt.want)
			}
		})
	}
}
