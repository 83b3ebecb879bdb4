package reliability

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bramble-pi/bramble/tests/testutil"
)

// badStart is a `bramble server` invocation on an existing cluster's data
// dir that must be refused with want in its output, before it changes
// anything in the data dir.
type badStart struct {
	name   string
	args   []string
	config string // config.yaml contents ("" = the empty config)
	want   string
}

// TestBadInput: a cluster with objects, then ~30 bad inputs (flags,
// config.yaml, tokens, manifests, ports): each is refused with an error that
// names the bad thing, and the cluster is as it was afterwards.
func TestBadInput(t *testing.T) {
	testutil.RequireRoot(t)
	s := testutil.NewServer(t, "--disable-agent")
	s.Start()
	s.WaitReady(readyTimeout)
	cs := clientset(t, s)
	ensureNamespace(t, cs, "keep")
	acked := startStream(cs, "keep", "cm", 2)
	time.Sleep(time.Second)
	kept := acked.stop(time.Time{})
	s.Stop(15 * time.Second)

	dir := filepath.Dir(s.DataDir)
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close()
	busyPort := listener.Addr().(*net.TCPAddr).Port
	notADir := filepath.Join(dir, "a-file")
	if err := os.WriteFile(notADir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []badStart{
		{"port out of range", []string{"--https-listen-port", "70000"}, "", "--https-listen-port: 70000 is not a port"},
		{"port not a number", []string{"--https-listen-port", "abc"}, "", `invalid value "abc" for flag -https-listen-port`},
		{"port in use", []string{"--https-listen-port", strconv.Itoa(busyPort)}, "", fmt.Sprintf("--https-listen-port %d: cannot listen on 0.0.0.0:%d", busyPort, busyPort)},
		{"bind address", []string{"--bind-address", "nope"}, "", `--bind-address: "nope" is not an IP address`},
		{"advertise address", []string{"--advertise-address", "pi1"}, "", `--advertise-address: "pi1" is not an IP address`},
		{"node IP", []string{"--node-ip", "10.0.0"}, "", `--node-ip: "10.0.0" is not an IP address`},
		{"cluster CIDR", []string{"--cluster-cidr", "10.42.0.0"}, "", `--cluster-cidr: "10.42.0.0" is not a CIDR`},
		{"cluster CIDR prefix", []string{"--cluster-cidr", "10.42.0.0/33"}, "", `--cluster-cidr: "10.42.0.0/33" is not a CIDR`},
		{"service CIDR", []string{"--service-cidr", "big"}, "", `--service-cidr: "big" is not a CIDR`},
		{"cluster DNS outside the service CIDR", []string{"--cluster-dns", "10.44.0.10"}, "", "--cluster-dns: 10.44.0.10 is not inside --service-cidr"},
		{"kubeconfig mode", []string{"--write-kubeconfig-mode", "0999"}, "", `--write-kubeconfig-mode: "0999" is not an octal file mode`},
		{"snapshot cron", []string{"--db-snapshot-schedule-cron", "every hour"}, "", `--db-snapshot-schedule-cron: "every hour"`},
		{"snapshot retention", []string{"--db-snapshot-retention", "0"}, "", "--db-snapshot-retention: 0"},
		{"node certificate validity", []string{"--node-cert-validity", "1s"}, "", "--node-cert-validity: 1s is not between"},
		{"unknown flag", []string{"--no-such-flag"}, "", "flag provided but not defined: -no-such-flag"},
		{"pass-through argument without =", []string{"--kube-apiserver-arg", "v"}, "", "--kube-apiserver-arg"},
		{"unknown add-on", []string{"--disable", "traefk"}, "", "--disable traefk: no bundled add-on of that name (there are: coredns, local-storage, metrics-server, plumber-api, servicelb, traefik)"},
		{"another token", []string{"--token", "not-the-cluster-token"}, "", "--token differs from the token this server was set up with"},
		{"data dir is a file", []string{"--data-dir", notADir}, "", notADir},
		{"datastore endpoint scheme", []string{"--datastore-endpoint", "foo://bar"}, "", "--datastore-endpoint foo://bar: want postgres://"},
		{"config file missing", []string{"--config", filepath.Join(dir, "nope.yaml")}, "", filepath.Join(dir, "nope.yaml")},
		{"config: typo", nil, "https-listen-prot: 7443\n", `unknown key "https-listen-prot" (did you mean "https-listen-port"?)`},
		{"config: k3s key", nil, "etcd-snapshot-retention: 3\n", `unknown key "etcd-snapshot-retention"`},
		{"config: number not a number", nil, "db-snapshot-retention: abc\n", `key "db-snapshot-retention": invalid value "abc"`},
		{"config: fraction", nil, "db-snapshot-retention: 2.5\n", `key "db-snapshot-retention": invalid value "2.5"`},
		{"config: list for one value", nil, "node-name: [a, b]\n", `key "node-name": want one value, got a list of 2`},
		{"config: map value", nil, "tls-san: {a: b}\n", `key "tls-san": want a value or a list of values`},
		{"config: not YAML", nil, "tls-san: [a\n", "not valid YAML"},
		{"config: bad CIDR", nil, "service-cidr: 10.43.0.0/99\n", `--service-cidr: "10.43.0.0/99" is not a CIDR`},
	}
	for i, tc := range cases {
		before := fingerprint(t, s.DataDir)
		args := append([]string{}, s.Args...)
		if tc.config != "" {
			path := filepath.Join(dir, fmt.Sprintf("bad-%d.yaml", i))
			if err := os.WriteFile(path, []byte(tc.config), 0o600); err != nil {
				t.Fatal(err)
			}
			args = append(args, "--config", path)
		}
		args = append(args, tc.args...)
		out, code := runBramble(t, args...)
		line := lastLine(out)
		switch {
		case code == 0:
			t.Errorf("%s: bramble server exited 0:\n%s", tc.name, out)
		case !strings.Contains(out, tc.want):
			t.Errorf("%s: exit %d; the output does not say %q:\n%s", tc.name, code, tc.want, out)
		default:
			t.Logf("%-40s refused: %s", tc.name, line)
		}
		if after := fingerprint(t, s.DataDir); after != before {
			t.Errorf("%s: the data dir changed", tc.name)
		}
	}

	// On a running server: a bad manifest, a wrong token, a token for
	// another cluster.
	s.Start()
	s.WaitReady(readyTimeout)
	bad := filepath.Join(s.DataDir, "server", "manifests", "broken.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: [not, a, map]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Minute, "the bad manifest reported", func() bool {
		return strings.Contains(s.Log.String(), `msg="manifest not applied" component=deploy file=`+bad)
	})
	t.Logf("%-40s refused: %s", "malformed manifest", grepLine(s.Log.String(), "manifest not applied"))

	token, err := os.ReadFile(filepath.Join(s.DataDir, "server", "token"))
	if err != nil {
		t.Fatal(err)
	}
	full := strings.TrimSpace(string(token))
	wrongSecret := full[:strings.LastIndex(full, ":")+1] + "wrong"
	otherCA := "K10" + strings.Repeat("0", 64) + full[strings.Index(full, "::"):]
	for _, tc := range []struct{ name, token, want string }{
		{"agent: wrong token", wrongSecret, "token was rejected: wrong secret"},
		{"agent: token of another cluster's CA", otherCA, "CA hash mismatch"},
		{"agent: malformed token", "K10abc::x:y", "token is malformed"},
	} {
		agentDir := filepath.Join(t.TempDir(), "agent")
		out, code := runBramble(t, "agent", "--server", s.URL(), "--token", tc.token, "--data-dir", agentDir,
			"--node-name", "bad-agent", "--node-ip", "127.0.0.1", "--config", filepath.Join(dir, "no-config.yaml"))
		if code == 0 || !strings.Contains(out, tc.want) {
			t.Errorf("%s: exit %d; the output does not say %q:\n%s", tc.name, code, tc.want, out)
		} else {
			t.Logf("%-40s refused: %s", tc.name, lastLine(out))
		}
		testutil.Killall(t, agentDir)
	}
	if lost := missing(t, cs, "keep", kept); len(lost) > 0 {
		t.Fatalf("%d of %d ConfigMaps lost after the bad inputs, e.g. %v", len(lost), len(kept), first(lost, 5))
	}
	if _, err := cs.CoreV1().Nodes().Get(context.Background(), "bad-agent", metav1.GetOptions{}); err == nil {
		t.Error("a refused agent left a Node behind")
	}
	t.Logf("%d ConfigMaps made before the bad inputs, all there", len(kept))
	s.Stop(15 * time.Second)
}

// runBramble runs bin/bramble with a time limit and returns its output and
// exit status (-1 when it had to be killed).
func runBramble(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testutil.Binary(t), args...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return string(out) + "\n(killed after 90 s)", -1
	}
	if err != nil && cmd.ProcessState == nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out)), cmd.ProcessState.ExitCode()
}

// fingerprint hashes every regular file of a data dir (path, mode, content)
// but the lock file.
func fingerprint(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() || d.Name() == "bramble.lock" {
			return err
		}
		st, err := d.Info()
		if err != nil {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %v %x\n", path, st.Mode(), sha256.Sum256(b))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func grepLine(log, s string) string {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}
