package cli

import (
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/bramble-pi/bramble/pkg/flannel"
	"github.com/bramble-pi/bramble/pkg/layout"
	"github.com/bramble-pi/bramble/pkg/pki"
)

// env is the BRAMBLE_* variable for a flag name, plus any extra names.
func env(name string, extra ...string) []string {
	return append([]string{"BRAMBLE_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))}, extra...)
}

func str(name, value, usage string, aliases ...string) *cli.StringFlag {
	return &cli.StringFlag{Name: name, Aliases: aliases, Value: value, Usage: usage, EnvVars: env(name)}
}

func boolean(name, usage string) *cli.BoolFlag {
	return &cli.BoolFlag{Name: name, Usage: usage, EnvVars: env(name)}
}

func list(name, usage string) *cli.StringSliceFlag {
	return &cli.StringSliceFlag{Name: name, Usage: usage, EnvVars: env(name)}
}

// argList holds the values of a pass-through flag (--kubelet-arg,
// --kube-apiserver-arg, ...): each use on the command line and each item of
// the config file's list is one value, its commas kept
// (feature-gates=A=true,B=false).
type argList []string

func (l *argList) Set(v string) error { *l = append(*l, v); return nil }
func (l *argList) String() string     { return strings.Join(*l, " ") }

// passThrough is a repeatable name=value flag handed to a component. Its
// BRAMBLE_* variable is read by argsFromEnv, not by the flag parser (which
// cannot tell the variable's values from the command line's).
func passThrough(name, usage string) *cli.GenericFlag {
	return &cli.GenericFlag{Name: name, Value: &argList{}, Usage: fmt.Sprintf("%s, name=value (repeatable; $%s)", usage, env(name)[0])}
}

// passedArgs are a pass-through flag's values.
func passedArgs(c *cli.Context, name string) []string {
	if l, ok := c.Generic(name).(*argList); ok {
		return *l
	}
	return nil
}

// argStart is where a new value begins in a BRAMBLE_*_ARG variable.
var argStart = regexp.MustCompile(`^(-+[A-Za-z]|[a-z][a-z0-9-]*=)`)

// argsFromEnv sets every pass-through flag the command line left unset from
// its BRAMBLE_* variable: values separated by newlines or commas, where a
// comma not followed by name= (or a dash) continues the value, so
// BRAMBLE_KUBELET_ARG=feature-gates=A=true,B=false,max-pods=50 is two.
func argsFromEnv(c *cli.Context) error {
	for _, f := range c.Command.Flags {
		g, ok := f.(*cli.GenericFlag)
		if !ok || c.IsSet(g.Name) {
			continue
		}
		v, ok := os.LookupEnv(env(g.Name)[0])
		if !ok {
			continue
		}
		for _, value := range splitArgs(v) {
			if err := c.Set(g.Name, value); err != nil {
				return fmt.Errorf("$%s: %w", env(g.Name)[0], err)
			}
		}
	}
	return nil
}

// splitArgs splits a BRAMBLE_*_ARG variable into values (see argsFromEnv).
func splitArgs(v string) []string {
	var out []string
	for _, line := range strings.Split(v, "\n") {
		first := len(out)
		for _, part := range strings.Split(line, ",") {
			part = strings.TrimSpace(part)
			switch {
			case part == "":
			case len(out) > first && !argStart.MatchString(part):
				out[len(out)-1] += "," + part
			default:
				out = append(out, part)
			}
		}
	}
	return out
}

// configFlag names the config file (read by applyConfigFile).
func configFlag() cli.Flag {
	return &cli.StringFlag{Name: "config", Aliases: []string{"c"}, Value: layout.DefaultConfigFile, Usage: "YAML file whose keys are flag names", EnvVars: []string{"BRAMBLE_CONFIG_FILE"}}
}

// serverToolFlags are the flags of the commands that work on a server's data
// dir (token, images), plus extra; they read the config file too.
func serverToolFlags(extra ...cli.Flag) []cli.Flag {
	return append([]cli.Flag{configFlag(), str("data-dir", layout.DefaultDataDir, "data directory of the server", "d")}, extra...)
}

// commonFlags are shared by every command that runs a node.
func commonFlags() []cli.Flag {
	return []cli.Flag{
		configFlag(),
		boolean("debug", "log everything, including the Kubernetes components' info lines"),
		str("debug-pprof", "", "serve Go profiles on this loopback host:port (e.g. 127.0.0.1:6060; containerd's on its debug.sock)"),
		str("data-dir", layout.DefaultDataDir, "directory for state, certificates and the datastore", "d"),
		str("node-name", "", "node name (default: the hostname)"),
		str("token", "", "shared secret used to join nodes", "t"),
	}
}

// serverURLFlag is --server: the server an agent, or a further server,
// joins.
func serverURLFlag(usage string) cli.Flag {
	return &cli.StringFlag{Name: "server", Aliases: []string{"s"}, Usage: usage, EnvVars: env("server", "BRAMBLE_URL")}
}

func serverFlags() []cli.Flag {
	return append(append(commonFlags(),
		serverURLFlag("join the cluster of this server as a further server, https://<host>:6443 (with the server token; as an etcd member, or with the same --datastore-endpoint)"),
		boolean("cluster-init", "start a new cluster on embedded etcd (other servers can join it with --server and the server token) instead of SQLite"),
		str("bind-address", "0.0.0.0", "address the apiserver listens on"),
		&cli.IntFlag{Name: "https-listen-port", Value: 6443, Usage: "apiserver and supervisor HTTPS port", EnvVars: env("https-listen-port")},
		str("advertise-address", "", "address the apiserver advertises to the cluster (default: the node IP)"),
		list("tls-san", "extra host name or IP for the serving certificate (repeatable)"),
		boolean("allow-empty-datastore", "start although the SQLite datastore of this existing cluster is missing or empty (its objects are lost; restore state.db from a backup instead if you can)"),
		&cli.DurationFlag{Name: "node-cert-validity", Value: pki.LeafLifetime, EnvVars: env("node-cert-validity"),
			Usage: "validity of the certificates the server signs for nodes; each node renews its own with a third left, without a token"},
		str("cluster-cidr", "10.42.0.0/16", "pod network"),
		str("service-cidr", "10.43.0.0/16", "service network"),
		str("cluster-dns", "", "cluster DNS service IP (default: the 10th address of --service-cidr)"),
		str("cluster-domain", "cluster.local", "cluster domain"),
		str("datastore-endpoint", "", "kine endpoint: sqlite://, postgres://, mysql:// or an etcd URL (default: SQLite in the data dir)"),
		str("db-snapshot-schedule-cron", "0 */12 * * *", "when the server snapshots its SQLite datastore or embedded etcd (cron: minute hour day month weekday; \"\" disables)"),
		&cli.IntFlag{Name: "db-snapshot-retention", Value: 5, Usage: "how many scheduled snapshots to keep", EnvVars: env("db-snapshot-retention")},
		snapshotDirFlag(),
		&cli.StringFlag{Name: "write-kubeconfig", Aliases: []string{"o"}, Value: layout.DefaultKubeconfig, Usage: "where to write the admin kubeconfig", EnvVars: env("write-kubeconfig", "BRAMBLE_KUBECONFIG_OUTPUT")},
		&cli.StringFlag{Name: "write-kubeconfig-mode", Value: "0600", Usage: "file mode of the admin kubeconfig", EnvVars: env("write-kubeconfig-mode", "BRAMBLE_KUBECONFIG_MODE")},
		boolean("disable-agent", "run the control plane only, no node"),
		str("agent-token", "", "secret that joins agents only (default: agents use the server token)"),
		str("flannel-backend", flannel.VXLAN, "pod network between nodes: "+flannel.VXLAN+", or "+flannel.WireGuardNative+" (encrypted; needs WireGuard in every node's kernel)"),
		boolean("disable-network-policy", "do not enforce NetworkPolicies (every node's in-process controller; on by default)"),
		list("disable", "bundled add-on to leave out (and remove): coredns, traefik, plumber-api, local-storage, metrics-server, servicelb (repeatable or comma-separated)"),
		passThrough("kube-apiserver-arg", "extra kube-apiserver flag, e.g. service-node-port-range=20000-32767"),
		passThrough("kube-scheduler-arg", "extra kube-scheduler flag"),
		passThrough("kube-controller-manager-arg", "extra kube-controller-manager flag, e.g. terminated-pod-gc-threshold=100"),
		str("audit-log", "", "write the apiserver's audit log to this file (bramble's policy: metadata only, no reads of events, leases or health checks; 10 MB x 3 files, 7 days; change with --kube-apiserver-arg audit-*)"),
		&cli.BoolFlag{Name: "secrets-encryption", Value: true, EnvVars: env("secrets-encryption"),
			Usage: "encrypt Secrets in the datastore (a key in <data-dir>/server/cred/encryption-config.yaml; see `bramble secrets-encrypt`)"},
	), nodeFlags()...)
}
