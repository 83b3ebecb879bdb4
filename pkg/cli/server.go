package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/bramble-pi/bramble/pkg/bootstrap"
	"github.com/bramble-pi/bramble/pkg/containerd"
	"github.com/bramble-pi/bramble/pkg/datastore"
	"github.com/bramble-pi/bramble/pkg/flannel"
	"github.com/bramble-pi/bramble/pkg/hostcheck"
	"github.com/bramble-pi/bramble/pkg/join"
	"github.com/bramble-pi/bramble/pkg/logging"
	"github.com/bramble-pi/bramble/pkg/pause"
	"github.com/bramble-pi/bramble/pkg/pki"
	"github.com/bramble-pi/bramble/pkg/process"
	"github.com/bramble-pi/bramble/pkg/server"
	"github.com/bramble-pi/bramble/pkg/supervisor"
)

func serverCommand() *cli.Command {
	return &cli.Command{
		Name:   "server",
		Usage:  "run a control plane (and, unless --disable-agent, a node)",
		Flags:  serverFlags(),
		Before: applyConfigFile,
		Action: runServer,
	}
}

func runServer(c *cli.Context) error {
	cfg, err := serverConfig(c)
	if err != nil {
		return err
	}
	runNode := !c.Bool("disable-agent")
	var facts hostcheck.Facts
	if runNode {
		// Before anything else: this may re-execute bramble in a mount namespace.
		if facts, err = checkHost(); err != nil {
			return err
		}
	}
	// A bad --kube-*-arg stops bramble before anything is written or runs
	// (the lock creates the data dir).
	if err := server.CheckArgs(cfg); err != nil {
		return err
	}
	log := logging.Setup(c.App.ErrWriter, c.Bool("debug"))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// A further server gets the cluster's shared state before anything is
	// written: a refused join leaves the data dir as it was.
	joined, err := fetchBootstrap(ctx, cfg, log)
	if err != nil {
		return err
	}
	if err := checkNewCluster(ctx, cfg, log); err != nil {
		return err
	}
	release, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return err
	}
	defer release()
	if err := portFree(cfg.BindAddress, cfg.HTTPSPort); err != nil {
		return err
	}
	if joined != nil {
		if err := bootstrap.Install(server.NewPaths(cfg.DataDir).Root(), joined); err != nil {
			return err
		}
		log.Info("joined the cluster as a further server: its certificate authorities, keys and tokens are in the data dir", "server", cfg.JoinServer)
	}
	if err := process.Setup(process.Settings{NodeName: nodeNameIf(runNode, cfg.NodeName), KubeletArgs: passedArgs(c, "kubelet-arg"), WireGuardKeyFile: wireGuardKeyFile}, log); err != nil {
		return err
	}
	if err := serveProfiles(ctx, c, log); err != nil {
		return err
	}

	tuneCertReload(cfg.NodeCertLifetime)
	start := time.Now()
	cp, err := server.Prepare(cfg, log)
	if err != nil {
		return err
	}
	components := cp.Components()
	if runNode {
		node, err := serverNode(c, log, facts, cfg, cp)
		if err != nil {
			return err
		}
		// containerd and the image import need no apiserver: they start
		// alongside the control plane, and the kubelet waits for both.
		runtime := supervisor.NewBackground("container runtime", node.Runtime(pause.Archive())...)
		components = append(append([]supervisor.Component{runtime}, components...), runtime.Wait())
		components = append(components, node.Kube()...)
		components = append(components, cp.AddonImageCheck(containerd.DefaultSocket,
			func() (string, error) { return nodeSnapshotter(cfg.DataDir) }, missingImagesFix(cfg.DataDir), log))
	}
	sup := supervisor.New(log, components, supervisor.OnReady(func() {
		log.Info("bramble server ready", "took", time.Since(start).Round(time.Millisecond), "node", runNode, "kubeconfig", cfg.KubeconfigPath)
		if runNode {
			go announceNodeReady(ctx, log, cfg.DataDir, cfg.NodeName, start)
		} else {
			notifyReady(log)
		}
		releaseStartupMemoryLater(ctx, log)
	}))
	log.Info("starting bramble server", "data-dir", cfg.DataDir, "port", cfg.HTTPSPort)
	context.AfterFunc(ctx, notifyStopping)
	if err := sup.Run(ctx); err != nil {
		return loggedError{err}
	}
	log.Info("bramble server stopped")
	return nil
}

// fetchBootstrap gets the cluster's shared state (CAs, keys, tokens) from
// --server at a further server's first start; nil when the data dir has it
// already or the server starts a cluster of its own.
func fetchBootstrap(ctx context.Context, cfg server.Config, log *slog.Logger) (bootstrap.State, error) {
	if cfg.JoinServer == "" || bootstrap.Installed(server.NewPaths(cfg.DataDir).Root()) {
		return nil, nil
	}
	log.Info("joining the cluster as a further server", "server", cfg.JoinServer)
	kind := join.DatastoreExternal
	if cfg.EmbeddedEtcd() {
		kind = join.DatastoreEtcd
	}
	st, err := join.FetchBootstrap(ctx, cfg.JoinServer, cfg.Token, kind, log)
	if err != nil {
		return nil, fmt.Errorf("server join: %w", err)
	}
	return st, nil
}

// checkNewCluster refuses to start a new cluster (no CA in the data dir,
// no --server) on a shared datastore that holds one already: the server
// would sign with certificate authorities of its own over the other
// servers' objects. It must join them.
func checkNewCluster(ctx context.Context, cfg server.Config, log *slog.Logger) error {
	if cfg.DatastoreEndpoint == "" || !cfg.Shared() || cfg.JoinServer != "" || bootstrap.Installed(server.NewPaths(cfg.DataDir).Root()) {
		return nil
	}
	held, err := datastore.HoldsCluster(ctx, cfg.DatastoreEndpoint)
	switch {
	case err != nil:
		// Not reachable yet, say: kine waits for it, as before.
		log.Warn("could not check whether the datastore holds a cluster already", "err", err)
	case held:
		return fmt.Errorf("--datastore-endpoint %s holds a cluster already, and %s has none of its certificates: join it as a further server with --server https://<a running server>:6443 and its server token, or give this server an empty database", datastore.Redacted(cfg.DatastoreEndpoint), cfg.DataDir)
	}
	return nil
}

// serverConfig turns flags into the control plane's typed configuration,
// naming the flag in every error.
func serverConfig(c *cli.Context) (server.Config, error) {
	cfg := server.Config{
		DataDir:             c.String("data-dir"),
		HTTPSPort:           c.Int("https-listen-port"),
		TLSSANs:             c.StringSlice("tls-san"),
		ClusterDomain:       c.String("cluster-domain"),
		NodeName:            c.String("node-name"),
		Token:               c.String("token"),
		AgentToken:          c.String("agent-token"),
		FlannelBackend:      c.String("flannel-backend"),
		NetworkPolicy:       !c.Bool("disable-network-policy"),
		DatastoreEndpoint:   c.String("datastore-endpoint"),
		ClusterInit:         c.Bool("cluster-init"),
		KubeconfigPath:      c.String("write-kubeconfig"),
		Disable:             splitList(c.StringSlice("disable")),
		APIServerArgs:       passedArgs(c, "kube-apiserver-arg"),
		SchedulerArgs:       passedArgs(c, "kube-scheduler-arg"),
		ControllerArgs:      passedArgs(c, "kube-controller-manager-arg"),
		AuditLog:            c.String("audit-log"),
		SecretsEncryption:   c.Bool("secrets-encryption"),
		NodeCertLifetime:    c.Duration("node-cert-validity"),
		AllowEmptyDatastore: c.Bool("allow-empty-datastore"),
		Snapshots: server.SnapshotSchedule{
			Cron: c.String("db-snapshot-schedule-cron"), Retention: c.Int("db-snapshot-retention"), Dir: snapshotDir(c),
		},
	}
	var err error
	if cfg.DataDir == "" {
		return cfg, errors.New("--data-dir must not be empty")
	}
	if cfg.NodeCertLifetime < 2*time.Minute || cfg.NodeCertLifetime > 10*pki.LeafLifetime {
		return cfg, fmt.Errorf("--node-cert-validity: %s is not between 2m and 87600h (10 years)", cfg.NodeCertLifetime)
	}
	if err := datastore.CheckEndpoint(cfg.DatastoreEndpoint); err != nil {
		return cfg, err
	}
	if cfg.ClusterInit && cfg.DatastoreEndpoint != "" {
		return cfg, errors.New("--cluster-init starts embedded etcd: it does not go with --datastore-endpoint")
	}
	if s := c.String("server"); s != "" {
		if cfg.ClusterInit {
			return cfg, errors.New("--cluster-init starts a new cluster: it does not go with --server (which joins one)")
		}
		if cfg.JoinServer, err = join.ValidateServerURL(s); err != nil {
			return cfg, err
		}
		if strings.HasPrefix(cfg.DatastoreEndpoint, "sqlite://") {
			return cfg, errors.New("--server: a further server shares the cluster's datastore: an SQLite file cannot be shared; join without --datastore-endpoint (embedded etcd) or with the postgres:// or mysql:// endpoint the other servers use")
		}
	}
	if err := cfg.Snapshots.Check(); err != nil {
		return cfg, err
	}
	if err := flannel.CheckName(cfg.FlannelBackend); err != nil {
		return cfg, err
	}
	if cfg.HTTPSPort <= 0 || cfg.HTTPSPort > 65535 {
		return cfg, fmt.Errorf("--https-listen-port: %d is not a port", cfg.HTTPSPort)
	}
	if cfg.BindAddress, err = ipFlag(c, "bind-address"); err != nil {
		return cfg, err
	}
	if cfg.ClusterCIDR, err = cidrFlag(c, "cluster-cidr"); err != nil {
		return cfg, err
	}
	if cfg.ServiceCIDR, err = cidrFlag(c, "service-cidr"); err != nil {
		return cfg, err
	}
	if c.String("cluster-dns") == "" {
		if cfg.ClusterDNS, err = server.NthIP(cfg.ServiceCIDR, 10); err != nil {
			return cfg, fmt.Errorf("--cluster-dns not set and --service-cidr is too small for the default: %w", err)
		}
	} else if cfg.ClusterDNS, err = ipFlag(c, "cluster-dns"); err != nil {
		return cfg, err
	}
	if !cfg.ServiceCIDR.Contains(cfg.ClusterDNS) {
		return cfg, fmt.Errorf("--cluster-dns: %s is not inside --service-cidr %s", cfg.ClusterDNS, cfg.ServiceCIDR)
	}
	switch {
	case c.String("advertise-address") == "" && c.String("node-ip") != "":
		if cfg.AdvertiseAddress, err = ipFlag(c, "node-ip"); err != nil {
			return cfg, err
		}
	case c.String("advertise-address") == "":
		if cfg.AdvertiseAddress, err = defaultNodeIP(); err != nil {
			return cfg, err
		}
	default:
		if cfg.AdvertiseAddress, err = ipFlag(c, "advertise-address"); err != nil {
			return cfg, err
		}
	}
	mode, err := strconv.ParseUint(c.String("write-kubeconfig-mode"), 8, 32)
	if err != nil || mode > 0o777 {
		return cfg, fmt.Errorf("--write-kubeconfig-mode: %q is not an octal file mode like 0600", c.String("write-kubeconfig-mode"))
	}
	cfg.KubeconfigMode = os.FileMode(mode)
	if cfg.NodeName, err = nodeNameFlag(c); err != nil {
		return cfg, err
	}
	return cfg, nil
}

func ipFlag(c *cli.Context, name string) (net.IP, error) {
	ip := net.ParseIP(c.String(name))
	if ip == nil {
		return nil, fmt.Errorf("--%s: %q is not an IP address", name, c.String(name))
	}
	return ip, nil
}

func cidrFlag(c *cli.Context, name string) (*net.IPNet, error) {
	_, n, err := net.ParseCIDR(c.String(name))
	if err != nil {
		return nil, fmt.Errorf("--%s: %q is not a CIDR like 10.42.0.0/16", name, c.String(name))
	}
	return n, nil
}

// defaultNodeIP is the source address of the default route, else the first
// global unicast address of an interface that is up.
func defaultNodeIP() (net.IP, error) {
	if ip := routeSource("udp4", "192.0.2.1:9"); ip != nil {
		return ip, nil
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	for _, iface := range ifaces {
		if iface.Flags&net.FlagUp == 0 || iface.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := iface.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
				return n.IP, nil
			}
		}
	}
	return nil, errors.New("no default route and no non-loopback address: set --advertise-address (or --node-ip)")
}

// routeSource is the local address of the route to target (host:port), or
// nil when there is none. A UDP dial sends nothing.
func routeSource(network, target string) net.IP {
	conn, err := net.Dial(network, target)
	if err != nil {
		return nil
	}
	defer conn.Close()
	return conn.LocalAddr().(*net.UDPAddr).IP
}

// portFree refuses a port another process listens on before anything is
// written to the data dir (the apiserver would only fail once the
// datastore and the certificates are up).
func portFree(bind net.IP, port int) error {
	addr := net.JoinHostPort(bind.String(), strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--https-listen-port %d: cannot listen on %s (another bramble, k3s or apiserver?): %w", port, addr, err)
	}
	return l.Close()
}

// nodeNameIf is name when the process runs a node, else "".
func nodeNameIf(runNode bool, name string) string {
	if runNode {
		return name
	}
	return ""
}

// splitList flattens repeated and comma-separated values.
func splitList(values []string) []string {
	var out []string
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
	}
	return out
}
