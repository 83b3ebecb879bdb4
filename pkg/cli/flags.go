package cli

import (
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/bramble-pi/bramble/pkg/layout"
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

func serverFlags() []cli.Flag {
	return append(append(commonFlags(),
		str("bind-address", "0.0.0.0", "address the apiserver listens on"),
		&cli.IntFlag{Name: "https-listen-port", Value: 6443, Usage: "apiserver and supervisor HTTPS port", EnvVars: env("https-listen-port")},
		str("advertise-address", "", "address the apiserver advertises to the cluster (default: the node IP)"),
		list("tls-san", "extra host name or IP for the serving certificate (repeatable)"),
		str("cluster-cidr", "10.42.0.0/16", "pod network"),
		str("service-cidr", "10.43.0.0/16", "service network"),
		str("cluster-dns", "", "cluster DNS service IP (default: the 10th address of --service-cidr)"),
		str("cluster-domain", "cluster.local", "cluster domain"),
		str("datastore-endpoint", "", "kine endpoint: sqlite://, postgres://, mysql:// or an etcd URL (default: SQLite in the data dir)"),
		&cli.StringFlag{Name: "write-kubeconfig", Aliases: []string{"o"}, Value: layout.DefaultKubeconfig, Usage: "where to write the admin kubeconfig", EnvVars: env("write-kubeconfig", "BRAMBLE_KUBECONFIG_OUTPUT")},
		&cli.StringFlag{Name: "write-kubeconfig-mode", Value: "0600", Usage: "file mode of the admin kubeconfig", EnvVars: env("write-kubeconfig-mode", "BRAMBLE_KUBECONFIG_MODE")},
		boolean("disable-agent", "run the control plane only, no node"),
		str("agent-token", "", "secret that joins agents only (default: agents use the server token)"),
		str("flannel-backend", "vxlan", "flannel backend"),
		list("disable", "bundled add-on to leave out (and remove): coredns, traefik, plumber-api (repeatable or comma-separated)"),
	), nodeFlags()...)
}
