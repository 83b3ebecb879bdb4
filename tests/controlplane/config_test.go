package controlplane

import (
	"context"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bramble-pi/bramble/tests/testutil"
)

func exec(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := osexec.CommandContext(ctx, testutil.Binary(t), args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// A typo in config.yaml stops the server at once with the key named, and a
// bad value names its key too.
func TestConfigFileErrors(t *testing.T) {
	dir := t.TempDir()
	for name, tc := range map[string]struct{ yaml, want string }{
		"typo":      {"https-listen-prot: 7443\n", `unknown key "https-listen-prot" (did you mean "https-listen-port"?)`},
		"bad value": {"https-listen-port: many\n", `key "https-listen-port": invalid value "many"`},
		"bad cidr":  {"cluster-cidr: 10.42.0.0/33\n", `--cluster-cidr: "10.42.0.0/33" is not a CIDR`},
		"bad yaml":  {"tls-san: [a\n", "not valid YAML"},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".yaml")
		if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec(t, "server", "--config", path, "--data-dir", filepath.Join(dir, "data"), "--disable-agent")
		if err == nil {
			t.Errorf("%s: server started", name)
			continue
		}
		if !strings.Contains(out, tc.want) {
			t.Errorf("%s: output %q does not contain %q", name, out, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); err == nil {
		t.Error("a rejected config still created the data dir")
	}
}

// flag > env > file > default, seen in the port the server really listens on.
func TestConfigPrecedence(t *testing.T) {
	testutil.RequireRoot(t)
	filePort, envPort, flagPort := testutil.FreePort(t), testutil.FreePort(t), testutil.FreePort(t)
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	write := func(s string) {
		if err := os.WriteFile(cfgFile, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("https-listen-port: " + itoa(filePort) + "\ntls-san:\n  - pi1.example\n  - 10.250.0.9\n")

	check := func(name string, want int, env []string, flags ...string) {
		t.Helper()
		s := testutil.NewServer(t, "--disable-agent")
		// NewServer passes its own port and an empty config: replace them.
		s.Args = dropFlag(dropFlag(s.Args, "--https-listen-port"), "--config")
		s.Args = append(append(s.Args, "--config", cfgFile), flags...)
		s.Env = env
		s.Port = want
		s.Start()
		s.WaitReady(readyTimeout)
		s.Stop(10 * time.Second)
		t.Logf("%s: listened on %d", name, want)
	}
	check("file", filePort, nil)
	check("env over file", envPort, []string{"BRAMBLE_HTTPS_LISTEN_PORT=" + itoa(envPort)})
	check("flag over env", flagPort, []string{"BRAMBLE_HTTPS_LISTEN_PORT=" + itoa(envPort)}, "--https-listen-port", itoa(flagPort))
}

func dropFlag(args []string, flag string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		if args[i] == flag {
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}

func itoa(i int) string { return strconv.Itoa(i) }
