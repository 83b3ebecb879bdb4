package cli

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/bramble-pi/bramble/pkg/server"
)

// invocation is one command line, with its environment and config file.
type invocation struct {
	args   []string
	env    map[string]string
	config string // YAML; "" for none (an empty file)
}

// run runs cmd as `bramble <cmd.Name> --config <file> args...` and returns
// the error the command (its Before or Action) returned.
func (in invocation) run(t *testing.T, cmd *cli.Command) error {
	t.Helper()
	for k, v := range in.env {
		t.Setenv(k, v)
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(in.config+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	app := &cli.App{
		Name: "bramble", Writer: io.Discard, ErrWriter: io.Discard,
		ExitErrHandler: func(*cli.Context, error) {},
		Commands:       []*cli.Command{cmd},
	}
	return app.Run(append([]string{"bramble", cmd.Name, "--config", path}, in.args...))
}

// serverConfigOf builds the server's configuration the way `bramble server`
// does, without running anything.
func serverConfigOf(t *testing.T, in invocation) (server.Config, error) {
	t.Helper()
	var cfg server.Config
	cmd := serverCommand()
	cmd.Action = func(c *cli.Context) error {
		var err error
		cfg, err = serverConfig(c)
		return err
	}
	// The tests do not depend on this machine's addresses or hostname.
	in.args = append([]string{"--node-name", "pi1"}, in.args...)
	if !slices.Contains(in.args, "--advertise-address") && !slices.Contains(in.args, "--node-ip") {
		in.args = append(in.args, "--advertise-address", "192.168.1.10")
	}
	return cfg, in.run(t, cmd)
}

func TestServerConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		in   invocation
		want string
	}{
		{"port out of range", invocation{args: []string{"--https-listen-port", "70000"}}, "--https-listen-port: 70000 is not a port"},
		{"unknown flannel backend", invocation{args: []string{"--flannel-backend=foo"}}, `--flannel-backend: "foo" is not a backend; use one of vxlan, wireguard-native`},
		{"unknown flannel backend in the config file", invocation{config: "flannel-backend: wireguard"}, `--flannel-backend: "wireguard" is not a backend`},
		{"port not a number", invocation{args: []string{"--https-listen-port", "abc"}}, `invalid value "abc" for flag -https-listen-port`},
		{"bind address", invocation{args: []string{"--bind-address", "nope"}}, `--bind-address: "nope" is not an IP address`},
		{"advertise address", invocation{args: []string{"--advertise-address", "pi1"}}, `--advertise-address: "pi1" is not an IP address`},
		{"node IP", invocation{args: []string{"--node-ip", "10.0.0"}}, `--node-ip: "10.0.0" is not an IP address`},
		{"cluster CIDR", invocation{args: []string{"--cluster-cidr", "10.42.0.0"}}, `--cluster-cidr: "10.42.0.0" is not a CIDR like 10.42.0.0/16`},
		{"service CIDR", invocation{args: []string{"--service-cidr", "big"}}, `--service-cidr: "big" is not a CIDR`},
		{"service CIDR too small for the DNS default", invocation{args: []string{"--service-cidr", "10.43.0.0/29"}}, "--cluster-dns not set and --service-cidr is too small for the default"},
		{"DNS outside the service CIDR", invocation{args: []string{"--cluster-dns", "10.44.0.10"}}, "--cluster-dns: 10.44.0.10 is not inside --service-cidr 10.43.0.0/16"},
		{"kubeconfig mode not octal", invocation{args: []string{"--write-kubeconfig-mode", "0999"}}, `--write-kubeconfig-mode: "0999" is not an octal file mode like 0600`},
		{"kubeconfig mode too big", invocation{args: []string{"--write-kubeconfig-mode", "17777"}}, `--write-kubeconfig-mode: "17777"`},
		{"empty data dir", invocation{args: []string{"--data-dir", ""}}, "--data-dir must not be empty"},
		{"bad value from the environment", invocation{env: map[string]string{"BRAMBLE_CLUSTER_CIDR": "10.42/16"}}, `--cluster-cidr: "10.42/16" is not a CIDR`},
		{"snapshot schedule not cron", invocation{args: []string{"--db-snapshot-schedule-cron", "every hour"}}, `--db-snapshot-schedule-cron: "every hour"`},
		{"snapshot retention zero", invocation{args: []string{"--db-snapshot-retention", "0"}}, "--db-snapshot-retention: 0: keep at least 1"},

		{"config file: unknown key", invocation{config: "https-listen-prot: 7443"}, `unknown key "https-listen-prot" (did you mean "https-listen-port"?)`},
		{"config file: unknown key, nothing close", invocation{config: "zzzzzzzzzzzz: 1"}, `unknown key "zzzzzzzzzzzz"`},
		{"config file: --server with an SQLite file", invocation{config: "server: https://pi1:6443\ndatastore-endpoint: sqlite:///tmp/x.db"}, `--server: a further server shares the cluster's datastore: an SQLite file cannot be shared`},
		{"--cluster-init with --server", invocation{args: []string{"--cluster-init", "--server", "https://pi1:6443"}}, "--cluster-init starts a new cluster: it does not go with --server"},
		{"--cluster-init with a datastore endpoint", invocation{args: []string{"--cluster-init", "--datastore-endpoint", "postgres://db/kine"}}, "--cluster-init starts embedded etcd: it does not go with --datastore-endpoint"},
		{"--server not a URL", invocation{args: []string{"--server", "pi1:6443", "--datastore-endpoint", "postgres://db/kine"}}, `--server: "pi1:6443" is not a URL`},
		{"datastore endpoint of no kind kine knows, password hidden", invocation{args: []string{"--datastore-endpoint", "postgress://u:s3cret@db/kine"}}, `--datastore-endpoint postgress://u:xxxxx@db/kine: want postgres://`},
		{"config file: the config key", invocation{config: "config: /etc/other.yaml"}, `unknown key "config"`},
		{"config file: bad number", invocation{config: "https-listen-port: abc"}, `key "https-listen-port": invalid value "abc"`},
		{"config file: fraction for a number", invocation{config: "https-listen-port: 7443.5"}, `key "https-listen-port": invalid value "7443.5"`},
		{"config file: bad number under a flag", invocation{args: []string{"--https-listen-port", "7443"}, config: "https-listen-port: abc"}, `key "https-listen-port": invalid value "abc"`},
		{"config file: bad list item under the environment", invocation{env: map[string]string{"BRAMBLE_DISABLE": "traefik"}, config: "disable: [coredns, {a: b}]"}, `key "disable": want a value or a list of values`},
		{"config file: bad duration under a flag", invocation{args: []string{"--db-snapshot-retention", "3"}, config: "db-snapshot-retention: many"}, `key "db-snapshot-retention": invalid value "many"`},
		{"config file: list for one value", invocation{config: "cluster-domain: [a, b]"}, `key "cluster-domain": want one value, got a list of 2`},
		{"config file: map value", invocation{config: "tls-san: {a: b}"}, `key "tls-san": want a value or a list of values`},
		{"config file: null value", invocation{config: "node-ip:"}, `key "node-ip": want a value or a list of values`},
		{"config file: not YAML", invocation{config: "tls-san: [a"}, "not valid YAML"},
		{"config file: bad value checked like a flag", invocation{config: "cluster-dns: 10.99.0.10"}, "--cluster-dns: 10.99.0.10 is not inside --service-cidr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := serverConfigOf(t, tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one with %q", err, tt.want)
			}
		})
	}
}

func TestServerConfigFileMissing(t *testing.T) {
	cmd := serverCommand()
	cmd.Action = func(*cli.Context) error { return nil }
	app := &cli.App{Name: "bramble", Writer: io.Discard, ErrWriter: io.Discard, ExitErrHandler: func(*cli.Context, error) {}, Commands: []*cli.Command{cmd}}
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	err := app.Run([]string{"bramble", "server", "--config", missing})
	if err == nil || !strings.Contains(err.Error(), "config file") || !strings.Contains(err.Error(), missing) {
		t.Fatalf("an explicit --config that does not exist: err = %v", err)
	}
}

func TestServerConfig(t *testing.T) {
	tests := []struct {
		name  string
		in    invocation
		check func(t *testing.T, c server.Config)
	}{
		{"defaults", invocation{}, func(t *testing.T, c server.Config) {
			if c.HTTPSPort != 6443 || c.ClusterDNS.String() != "10.43.0.10" || c.ClusterCIDR.String() != "10.42.0.0/16" ||
				c.KubeconfigMode != 0o600 || c.DataDir != "/var/lib/bramble" || c.ClusterDomain != "cluster.local" {
				t.Errorf("%+v", c)
			}
		}},
		{"snapshots: defaults and config file", invocation{config: "db-snapshot-retention: 2\ndb-snapshot-dir: /mnt/usb/snaps"}, func(t *testing.T, c server.Config) {
			if c.Snapshots.Cron != "0 */12 * * *" || c.Snapshots.Retention != 2 || c.Snapshots.Dir != "/mnt/usb/snaps" {
				t.Errorf("%+v", c.Snapshots)
			}
		}},
		{"snapshots: default dir, disabled schedule", invocation{args: []string{"--db-snapshot-schedule-cron", "", "--data-dir", "/srv/b"}}, func(t *testing.T, c server.Config) {
			if c.Snapshots.Cron != "" || c.Snapshots.Dir != "/srv/b/server/db/snapshots" {
				t.Errorf("%+v", c.Snapshots)
			}
		}},
		{"DNS default follows the service CIDR", invocation{args: []string{"--service-cidr", "172.20.0.0/16"}}, func(t *testing.T, c server.Config) {
			if c.ClusterDNS.String() != "172.20.0.10" {
				t.Errorf("cluster DNS %s", c.ClusterDNS)
			}
		}},
		{"node IP advertised when no advertise address", invocation{args: []string{"--node-ip", "10.250.0.2"}}, func(t *testing.T, c server.Config) {
			if c.AdvertiseAddress.String() != "10.250.0.2" {
				t.Errorf("advertise address %s", c.AdvertiseAddress)
			}
		}},
		{"lists: repeated and comma-separated", invocation{args: []string{"--disable", "traefik, plumber-api", "--disable", "coredns"}}, func(t *testing.T, c server.Config) {
			if want := []string{"traefik", "plumber-api", "coredns"}; !slices.Equal(c.Disable, want) {
				t.Errorf("disable %q, want %q", c.Disable, want)
			}
		}},
		{"config file values", invocation{config: "https-listen-port: 7443\ntls-san:\n  - pi1.local\n  - 192.168.1.10\nwrite-kubeconfig-mode: \"0640\"\ndisable-agent: true"}, func(t *testing.T, c server.Config) {
			if c.HTTPSPort != 7443 || !slices.Equal(c.TLSSANs, []string{"pi1.local", "192.168.1.10"}) || c.KubeconfigMode != 0o640 {
				t.Errorf("port %d SANs %q mode %o", c.HTTPSPort, c.TLSSANs, c.KubeconfigMode)
			}
		}},
		{"environment beats the config file", invocation{config: "https-listen-port: 7443", env: map[string]string{"BRAMBLE_HTTPS_LISTEN_PORT": "8443"}}, func(t *testing.T, c server.Config) {
			if c.HTTPSPort != 8443 {
				t.Errorf("port %d, want the environment's 8443", c.HTTPSPort)
			}
		}},
		{"flag beats environment and config file", invocation{args: []string{"--https-listen-port", "9443"}, config: "https-listen-port: 7443", env: map[string]string{"BRAMBLE_HTTPS_LISTEN_PORT": "8443"}}, func(t *testing.T, c server.Config) {
			if c.HTTPSPort != 9443 {
				t.Errorf("port %d, want the flag's 9443", c.HTTPSPort)
			}
		}},
		{"network policy on by default", invocation{}, func(t *testing.T, c server.Config) {
			if !c.NetworkPolicy || c.FlannelBackend != "vxlan" {
				t.Errorf("network policy %v, flannel backend %q", c.NetworkPolicy, c.FlannelBackend)
			}
		}},
		{"network policy off, WireGuard from the environment and the config file", invocation{config: "disable-network-policy: true", env: map[string]string{"BRAMBLE_FLANNEL_BACKEND": "wireguard-native"}}, func(t *testing.T, c server.Config) {
			if c.NetworkPolicy || c.FlannelBackend != "wireguard-native" {
				t.Errorf("network policy %v, flannel backend %q", c.NetworkPolicy, c.FlannelBackend)
			}
		}},
		{"aliases in the environment", invocation{env: map[string]string{"BRAMBLE_KUBECONFIG_MODE": "0644", "BRAMBLE_KUBECONFIG_OUTPUT": "/tmp/k.yaml"}}, func(t *testing.T, c server.Config) {
			if c.KubeconfigMode != 0o644 || c.KubeconfigPath != "/tmp/k.yaml" {
				t.Errorf("mode %o path %q", c.KubeconfigMode, c.KubeconfigPath)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := serverConfigOf(t, tt.in)
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

// TestAgentFlagErrors: `bramble agent` refuses bad flags before it looks
// at the host or the network. Every case also has a bad --node-ip, the
// last check before the host's, so none can go further.
func TestAgentFlagErrors(t *testing.T) {
	tests := []struct {
		name string
		in   invocation
		want string
	}{
		{"no server", invocation{}, "--server (BRAMBLE_URL) is required"},
		{"server not https", invocation{args: []string{"--server", "http://pi1:6443"}}, `--server: "http://pi1:6443" is not a URL like https://<host>:6443`},
		{"server without host", invocation{args: []string{"--server", "https://"}}, `--server: "https://" is not a URL`},
		{"server from BRAMBLE_URL", invocation{env: map[string]string{"BRAMBLE_URL": "pi1:6443"}}, `--server: "pi1:6443" is not a URL`},
		{"server from the config file", invocation{config: "server: ftp://pi1"}, `--server: "ftp://pi1" is not a URL`},
		{"empty data dir", invocation{args: []string{"--server", "https://pi1:6443", "--data-dir", ""}}, "--data-dir must not be empty"},
		{"node IP", invocation{args: []string{"--server", "https://pi1:6443"}}, `--node-ip: "bad" is not an IP address`},
		{"config file: a server-only key", invocation{config: "cluster-cidr: 10.42.0.0/16"}, `unknown key "cluster-cidr"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.in.args = append(tt.in.args, "--node-ip", "bad", "--node-name", "pi2")
			err := tt.in.run(t, agentCommand())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one with %q", err, tt.want)
			}
		})
	}
}

// The pass-through flags (--kube-apiserver-arg, ...): one value per use or
// config-file item, commas kept; flag > env > file; in the environment,
// values split at commas that start a new name=.
func TestPassThroughFlags(t *testing.T) {
	tests := []struct {
		name string
		in   invocation
		want map[string][]string // server.Config field -> values
	}{
		{"flags keep their commas", invocation{args: []string{
			"--kube-apiserver-arg=enable-admission-plugins=NodeRestriction,PodSecurity", "--kube-apiserver-arg", "event-ttl=30m",
			"--kube-scheduler-arg=v=2", "--kube-controller-manager-arg=--terminated-pod-gc-threshold=10"}},
			map[string][]string{"api": {"enable-admission-plugins=NodeRestriction,PodSecurity", "event-ttl=30m"}, "sched": {"v=2"}, "kcm": {"--terminated-pod-gc-threshold=10"}}},
		{"config file list", invocation{config: "kube-apiserver-arg:\n  - feature-gates=A=true,B=false\n  - event-ttl=1h\nkube-scheduler-arg: v=3"},
			map[string][]string{"api": {"feature-gates=A=true,B=false", "event-ttl=1h"}, "sched": {"v=3"}}},
		{"environment", invocation{env: map[string]string{"BRAMBLE_KUBE_APISERVER_ARG": "feature-gates=A=true,B=false,event-ttl=1h,--profiling\nv=4"}},
			map[string][]string{"api": {"feature-gates=A=true,B=false", "event-ttl=1h", "--profiling", "v=4"}}},
		{"environment beats the file", invocation{env: map[string]string{"BRAMBLE_KUBE_APISERVER_ARG": "event-ttl=2h"}, config: "kube-apiserver-arg: [event-ttl=1h]"},
			map[string][]string{"api": {"event-ttl=2h"}}},
		{"flag beats the environment", invocation{args: []string{"--kube-apiserver-arg=event-ttl=3h"}, env: map[string]string{"BRAMBLE_KUBE_APISERVER_ARG": "event-ttl=2h"}},
			map[string][]string{"api": {"event-ttl=3h"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := serverConfigOf(t, tt.in)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string][]string{"api": c.APIServerArgs, "sched": c.SchedulerArgs, "kcm": c.ControllerArgs}
			for k, want := range tt.want {
				if !slices.Equal(got[k], want) {
					t.Errorf("%s: %q, want %q", k, got[k], want)
				}
			}
		})
	}
}

// TestFileUnderFlagUnused: a config-file value checked under a flag or the
// environment is not used too.
func TestFileUnderFlagUnused(t *testing.T) {
	for _, in := range []invocation{
		{env: map[string]string{"BRAMBLE_DISABLE": "traefik"}, config: "disable: [coredns]"},
		{args: []string{"--disable", "traefik"}, config: "disable: [coredns]"},
	} {
		c, err := serverConfigOf(t, in)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(c.Disable, []string{"traefik"}) {
			t.Errorf("%+v: disable %q, want [traefik]", in, c.Disable)
		}
	}
}

func TestSecretsEncryptionFlag(t *testing.T) {
	c, err := serverConfigOf(t, invocation{})
	if err != nil || !c.SecretsEncryption || c.AuditLog != "" {
		t.Fatalf("default: encryption %v, audit %q, err %v", c.SecretsEncryption, c.AuditLog, err)
	}
	c, err = serverConfigOf(t, invocation{config: "secrets-encryption: false\naudit-log: /var/log/bramble-audit.log"})
	if err != nil || c.SecretsEncryption || c.AuditLog != "/var/log/bramble-audit.log" {
		t.Fatalf("config file: encryption %v, audit %q, err %v", c.SecretsEncryption, c.AuditLog, err)
	}
}
