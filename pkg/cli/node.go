package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/urfave/cli/v2"
	"k8s.io/client-go/transport"

	"github.com/bramble-pi/bramble/pkg/agent"
	"github.com/bramble-pi/bramble/pkg/bundle"
	"github.com/bramble-pi/bramble/pkg/containerd"
	"github.com/bramble-pi/bramble/pkg/hostcheck"
	"github.com/bramble-pi/bramble/pkg/images"
	"github.com/bramble-pi/bramble/pkg/launcher"
	"github.com/bramble-pi/bramble/pkg/layout"
	"github.com/bramble-pi/bramble/pkg/mountns"
	"github.com/bramble-pi/bramble/pkg/nodecreds"
	"github.com/bramble-pi/bramble/pkg/pause"
	"github.com/bramble-pi/bramble/pkg/server"
)

// RunDir holds sockets and state that must not outlive a reboot.
const RunDir = layout.RunDir

// wireGuardKeyFile is the node's WireGuard private key (--flannel-backend=
// wireguard-native): made at each boot, published in the node's annotations.
const wireGuardKeyFile = RunDir + "/flannel/wgkey"

// nodeFlags are shared by `server` and `agent`.
func nodeFlags() []cli.Flag {
	return []cli.Flag{
		str("node-ip", "", "IP address the node advertises (default: the address of the default route)"),
		list("node-label", "label to register the node with, key=value (repeatable)"),
		list("node-taint", "taint to register the node with, key=value:Effect (repeatable)"),
		passThrough("kubelet-arg", "extra kubelet flag, e.g. cgroup-root=/pi2"),
		passThrough("kube-proxy-arg", "extra kube-proxy flag, e.g. nodeport-addresses=primary"),
		passThrough("containerd-arg", "extra containerd flag: log-level=debug (its other flags are bramble's; the rest of its settings go in config.toml.tmpl)"),
		str("default-local-storage-path", "", "directory of this node's local-path volumes (default: <data-dir>/storage)"),
		&cli.BoolFlag{Name: "shipped-images", Value: true, EnvVars: env("shipped-images"),
			Usage: "import the air-gap image tarball (bramble-airgap-images-<arch>.tar.zst) found beside the bramble binary or in ../dist of it (a build from the repo); --shipped-images=false leaves it to <data-dir>/agent/images"},
	}
}

// checkHost detects the host and refuses to run a node on one that cannot;
// when / is not a shared mount it moves bramble into a mount namespace of its
// own (re-executing itself; this call returns in the new process).
func checkHost() (hostcheck.Facts, error) {
	facts, err := hostcheck.Detect()
	if err != nil {
		return facts, fmt.Errorf("inspect host: %w", err)
	}
	if err := facts.RequireNode(); err != nil {
		return facts, err
	}
	if facts.NeedsOwnMountNamespace() {
		if err := mountns.Enter(filepath.Join(RunDir, "mnt-ns")); err != nil {
			return facts, err
		}
	}
	return facts, nil
}

// cluster is what every node of a cluster shares.
type cluster struct {
	clusterCIDR, serviceCIDR *net.IPNet
	dns                      net.IP
	domain, flannelBackend   string
	networkPolicy            bool
}

// nodeConfig builds the node's configuration from flags and host facts.
func nodeConfig(c *cli.Context, facts hostcheck.Facts, nodeName string, nodeIP net.IP, dataDir string, cl cluster) agent.Config {
	var shipped []string
	if c.Bool("shipped-images") {
		shipped = images.BesideBinary(binaryPath(), runtime.GOARCH)
	}
	apparmor, _ := facts.AppArmor()
	return agent.Config{
		ShippedImages:       shipped,
		NodeName:            nodeName,
		NodeIP:              nodeIP,
		DataDir:             dataDir,
		RunDir:              RunDir,
		ClusterCIDR:         cl.clusterCIDR,
		ServiceCIDR:         cl.serviceCIDR,
		ClusterDNS:          cl.dns,
		ClusterDomain:       cl.domain,
		NodeLabels:          c.StringSlice("node-label"),
		NodeTaints:          c.StringSlice("node-taint"),
		KubeletArgs:         passedArgs(c, "kubelet-arg"),
		ProxyArgs:           passedArgs(c, "kube-proxy-arg"),
		ContainerdArgs:      passedArgs(c, "containerd-arg"),
		CgroupDriver:        facts.CgroupDriver(),
		CgroupRoot:          "/",
		RestrictOOMScoreAdj: facts.RestrictOOMScoreAdj(),
		AppArmor:            apparmor,
		SandboxImage:        pause.Image,
		Snapshotter:         facts.Snapshotter(),
		KubeletRootDir:      "/var/lib/kubelet",
		ResolvConf:          agent.ResolvConf(),
		ProxyMode:           "iptables",
		FlannelBackend:      cl.flannelBackend,
		NetworkPolicy:       cl.networkPolicy,
		Debug:               c.Bool("debug"),
		Profiling:           c.String("debug-pprof") != "",
		LocalStoragePath:    localStoragePath(c, dataDir),
	}
}

// localStoragePath is --default-local-storage-path, absolute, or
// <data-dir>/storage.
func localStoragePath(c *cli.Context, dataDir string) string {
	p := c.String("default-local-storage-path")
	if p == "" {
		return layout.New(dataDir).Storage()
	}
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return filepath.Clean(p)
}

// newNode unpacks the helper binaries and returns the node.
func newNode(log *slog.Logger, facts hostcheck.Facts, cfg agent.Config) (*agent.Agent, error) {
	if err := cfg.CheckArgs(); err != nil {
		return nil, err
	}
	for _, w := range facts.Warnings() {
		log.Warn(w)
	}
	if ok, why := facts.AppArmor(); !ok {
		log.Info("AppArmor off for containers", "why", why)
	}
	binDir, err := bundle.BinDir(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("helper binaries: %w", err)
	}
	cfg.BinDir = binDir
	// Unpacked by the node's first component, alongside the control plane
	// (0.75 s on a fresh data dir here).
	cfg.UnpackHelpers = func() error {
		dir, err := bundle.Extract(cfg.DataDir, log)
		switch {
		case err != nil:
			return fmt.Errorf("helper binaries: %w", err)
		case dir != binDir:
			return fmt.Errorf("helper binaries unpacked into %s instead of %s", dir, binDir)
		}
		return nil
	}
	return agent.New(cfg, log), nil
}

// serverNode prepares the server's own node.
func serverNode(c *cli.Context, log *slog.Logger, facts hostcheck.Facts, sc server.Config, cp *server.ControlPlane) (*agent.Agent, error) {
	if sc.BindAddress.IsLoopback() {
		log.Warn("--bind-address is a loopback address: pods cannot reach the apiserver through the kubernetes Service", "bind-address", sc.BindAddress)
	}
	cl := cluster{clusterCIDR: sc.ClusterCIDR, serviceCIDR: sc.ServiceCIDR, dns: sc.ClusterDNS, domain: sc.ClusterDomain, flannelBackend: sc.FlannelBackend, networkPolicy: sc.NetworkPolicy}
	nodeIP := sc.AdvertiseAddress
	if c.String("node-ip") != "" {
		var err error
		if nodeIP, err = ipFlag(c, "node-ip"); err != nil {
			return nil, err
		}
	}
	cfg := nodeConfig(c, facts, sc.NodeName, nodeIP, sc.DataDir, cl)
	if !sc.Enabled("local-storage") {
		cfg.LocalStoragePath = "" // no volumes to keep (agents cannot tell: theirs idles)
	}
	var err error
	cfg.Creds, err = cp.EnsureNodeCredentials(sc.NodeName, nodeIP, layout.New(sc.DataDir).Agent())
	if err != nil {
		return nil, fmt.Errorf("node credentials: %w", err)
	}
	node, err := newNode(log, facts, cfg)
	if err != nil {
		return nil, err
	}
	// The agents pull images through the server from this node's containerd.
	if err := cp.ServeImages(node.ContainerdSocket()); err != nil {
		return nil, err
	}
	return node, nil
}

// tuneCertReload makes client-go look at client certificate files often
// enough for certificates of lifetime (every 5 min by default: a tenth of
// the lifetime, for the short ones tests use). Set before any client starts.
func tuneCertReload(lifetime time.Duration) {
	transport.CertCallbackRefreshDuration = min(max(lifetime/10, 5*time.Second), 5*time.Minute)
}

// announceNodeReady logs (and tells the service manager) once the node's
// Ready condition is True: the moment scripts and systemd can rely on it.
func announceNodeReady(ctx context.Context, log *slog.Logger, dataDir, nodeName string, start time.Time) {
	kubeconfig := nodecreds.In(layout.New(dataDir).Agent()).KubeletKubeconfig
	if err := agent.WaitNodeReady(ctx, kubeconfig, nodeName); err != nil {
		return
	}
	log.Info("node is Ready", "node", nodeName, "took", time.Since(start).Round(time.Millisecond))
	notifyReady(log)
}

// nodeSnapshotter is the snapshotter the node's containerd unpacks images
// for, read from the config.toml it runs with (generated or the user's).
func nodeSnapshotter(dataDir string) (string, error) {
	return containerd.ConfiguredSnapshotter(containerd.Config{ConfigDir: layout.New(dataDir).ContainerdConfig()}.ConfigFile())
}

// binaryPath is the bramble file the user runs: the release launcher when
// started through one (it says so in its environment), else this executable.
func binaryPath() string {
	if p := os.Getenv(launcher.ExecutableEnv); p != "" {
		return p
	}
	p, err := os.Executable()
	if err != nil {
		return ""
	}
	return p
}

// missingImagesFix says where the air-gap tarball goes, for the warning
// about missing bundled images.
func missingImagesFix(dataDir string) string {
	name := images.AirgapName(runtime.GOARCH)
	where := layout.New(dataDir).Images() + "/"
	if bin := binaryPath(); bin != "" {
		where += " or next to " + bin
	}
	return fmt.Sprintf("they are in %s (built by `make` into dist/, or downloaded with the release): put it in %s and restart bramble, or run `bramble images import %s`",
		name, where, name)
}
