package agent

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// kube-proxy takes bramble's flags, and a --kube-proxy-arg replaces one.
func TestProxyFlags(t *testing.T) {
	cfg := testConfig(t)
	cfg.ProxyArgs = []string{"iptables-sync-period=10s", "--nodeport-addresses=primary,127.0.0.1/32"}
	opts, fs, err := cfg.proxyFlags()
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"iptables-sync-period":     "10s",
		"iptables-min-sync-period": "1s",
		"nodeport-addresses":       "[primary,127.0.0.1/32]",
		"hostname-override":        "pi1",
		"proxy-mode":               "iptables",
		"cluster-cidr":             "10.42.0.0/16",
		"kubeconfig":               cfg.Creds.KubeProxyKubeconfig,
		"conntrack-max-per-core":   "0",
		"healthz-bind-address":     "127.0.0.1:10256",
	} {
		if got := fs.Lookup(name).Value.String(); got != want {
			t.Errorf("--%s = %q, want %q", name, got, want)
		}
	}
	if n := strings.Count(strings.Join(cfg.proxyArgs(), " "), "--iptables-sync-period="); n != 1 {
		t.Errorf("--iptables-sync-period given %d times", n)
	}
	if err := opts.Complete(fs); err != nil {
		t.Fatal(err)
	}
	if err := opts.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestCheckArgs(t *testing.T) {
	tests := []struct {
		change func(*Config)
		want   string
	}{
		{func(c *Config) {}, ""},
		{func(c *Config) { c.ContainerdArgs = []string{"log-level=debug"} }, ""},
		{func(c *Config) { c.ProxyArgs = []string{"no-such-flag=1"} }, `--kube-proxy-arg "no-such-flag=1": kube-proxy has no flag --no-such-flag`},
		{func(c *Config) { c.ProxyArgs = []string{"iptables-sync-period=often"} }, `kube-proxy arguments (--kube-proxy-arg): invalid argument "often"`},
		{func(c *Config) { c.ContainerdArgs = []string{"log-level=loud"} }, `--containerd-arg "log-level=loud": the log level is one of trace, debug`},
		{func(c *Config) { c.ContainerdArgs = []string{"address=/tmp/c.sock"} }, `containerd does not take --address from the user`},
		{func(c *Config) { c.ContainerdArgs = []string{"verbose"} }, `containerd has no flag --verbose`},
	}
	for _, tt := range tests {
		cfg := testConfig(t)
		tt.change(&cfg)
		err := cfg.CheckArgs()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%v", err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("err = %v, want one with %q", err, tt.want)
		}
	}
}

// kube-proxy has synced once its metrics show a last-sync timestamp.
func TestProxyHasSynced(t *testing.T) {
	for _, tc := range []struct {
		body string
		want bool
	}{
		{"# HELP x\nkubeproxy_sync_proxy_rules_last_timestamp_seconds 0\n", false},
		{"kubeproxy_sync_proxy_rules_last_timestamp_seconds 1.796e+09\n", true},
		{"kubeproxy_sync_proxy_rules_duration_seconds_count 3\n", false},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, tc.body) }))
		if got := proxyHasSynced(context.Background(), srv.Client(), srv.URL+"/metrics"); got != tc.want {
			t.Errorf("%q: %v, want %v", tc.body, got, tc.want)
		}
		srv.Close()
	}
}
