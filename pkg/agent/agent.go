// Package agent runs a node: containerd (child process), kubelet and
// kube-proxy (in-process) and flannel (in-process), in that order.
package agent

import (
	"context"
	"github.com/bramble-pi/bramble/pkg/nodecreds"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/bramble-pi/bramble/pkg/containerd"
	"github.com/bramble-pi/bramble/pkg/flannel"
	"github.com/bramble-pi/bramble/pkg/kubeconfig"
	"github.com/bramble-pi/bramble/pkg/layout"
	"github.com/bramble-pi/bramble/pkg/localstorage"
	"github.com/bramble-pi/bramble/pkg/netpol"
	"github.com/bramble-pi/bramble/pkg/supervisor"
)

// Config is a node's configuration.
type Config struct {
	NodeName string
	NodeIP   net.IP
	DataDir  string // <data-dir>
	RunDir   string // /run/bramble
	BinDir   string // unpacked helper binaries
	// UnpackHelpers unpacks the helper binaries into BinDir; the node's
	// first component runs it. Nil when they are in place already.
	UnpackHelpers       func() error
	ClusterCIDR         *net.IPNet
	ServiceCIDR         *net.IPNet
	ClusterDNS          net.IP
	ClusterDomain       string
	NodeLabels          []string
	NodeTaints          []string
	CgroupDriver        string // cgroupfs or systemd
	CgroupRoot          string // "/" unless several nodes share a host
	RestrictOOMScoreAdj bool
	AppArmor            bool // containers get AppArmor profiles (the host runs AppArmor)
	SandboxImage        string
	Snapshotter         string // overlayfs or native; containerd falls back to native if overlay fails
	KubeletRootDir      string
	ResolvConf          string
	ProxyMode           string // iptables or nftables
	FlannelBackend      string
	// NetworkPolicy enforces NetworkPolicies on the node (pkg/netpol);
	// false removes what an earlier run with it left.
	NetworkPolicy  bool
	KubeletArgs    []string // extra kubelet flags, name=value (--kubelet-arg)
	ProxyArgs      []string // extra kube-proxy flags (--kube-proxy-arg)
	ContainerdArgs []string // extra containerd flags (--containerd-arg)
	// ShippedImages are image archives that came with the binary (the
	// air-gap tarball beside it), imported like <data-dir>/agent/images.
	ShippedImages []string
	Debug         bool
	Profiling     bool // containerd serves its Go profiles (--debug-pprof)
	Creds         nodecreds.Files
	// LocalStoragePath holds the directories of the node's local-path
	// volumes (pkg/localstorage); "" runs no local-storage component.
	LocalStoragePath string
	// ImageServer is the bramble server the node pulls images through
	// (https://<server>:6443, its registry on /v2/) before any registry;
	// empty on the server's own node.
	ImageServer string
}

func (c Config) dirs() layout.Dirs { return layout.New(c.DataDir) }
func (c Config) agentDir() string  { return c.dirs().Agent() }

// Agent is a prepared node.
type Agent struct {
	cfg        Config
	log        *slog.Logger
	containerd containerd.Config
	// protectKernelDefaults: the kernel parameters hold what the kubelet
	// expects (set by the kubelet component before it starts).
	protectKernelDefaults bool
	// proxyMetrics is kube-proxy's metrics address (its Setup sets it).
	proxyMetrics string
}

// New prepares a node.
func New(cfg Config, log *slog.Logger) *Agent {
	ctrd := containerd.Config{
		Root:                cfg.dirs().ContainerdRoot(),
		State:               filepath.Join(cfg.RunDir, "containerd"),
		ConfigDir:           cfg.dirs().ContainerdConfig(),
		BinDir:              cfg.BinDir,
		CNIConfDir:          filepath.Join(cfg.dirs().AgentEtc(), "cni", "net.d"),
		SandboxImage:        cfg.SandboxImage,
		Snapshotter:         cfg.Snapshotter,
		RestrictOOMScoreAdj: cfg.RestrictOOMScoreAdj,
		AppArmor:            cfg.AppArmor,
		SystemdCgroup:       cfg.CgroupDriver == "systemd",
		Debug:               cfg.Debug,
		Profiling:           cfg.Profiling,
		Args:                cfg.ContainerdArgs,
	}
	if cfg.ImageServer != "" {
		ctrd.Mirror = &containerd.Mirror{URL: cfg.ImageServer, CAFile: cfg.Creds.ServerCA,
			CertFile: cfg.Creds.Cert(nodecreds.KubeletClient), KeyFile: cfg.Creds.Key(nodecreds.KubeletClient)}
	}
	return &Agent{cfg: cfg, log: log, containerd: ctrd}
}

// CheckArgs refuses the user's pass-through flags (--kube-proxy-arg,
// --containerd-arg) that the components would refuse, and settings this
// host cannot run (a flannel backend its kernel lacks, network policies
// without the ipset command), so bramble stops at start with the reason
// named, not minutes later.
func (c Config) CheckArgs() error {
	if err := containerd.CheckArgs(c.ContainerdArgs); err != nil {
		return err
	}
	if err := flannel.CheckBackend(c.FlannelBackend); err != nil {
		return err
	}
	if c.NetworkPolicy {
		if err := netpol.CheckHost(); err != nil {
			return err
		}
	}
	_, _, err := c.proxyFlags()
	return err
}

// ContainerdSocket is where the node's containerd listens.
func (a *Agent) ContainerdSocket() string { return a.containerd.Socket() }

// Components are the node's parts in start order: Runtime, then Kube.
func (a *Agent) Components(sandbox []byte) []supervisor.Component {
	return append(a.Runtime(sandbox), a.Kube()...)
}

// Runtime are the parts that need no apiserver: unpacking the helper
// binaries, containerd and the image import (sandbox is the embedded pause
// image archive). A server starts them alongside its control plane.
func (a *Agent) Runtime(sandbox []byte) []supervisor.Component {
	ctrd := containerd.New(a.containerd, a.log.With("component", "containerd"))
	comps := []supervisor.Component{ctrd, a.imageImporter(ctrd, sandbox)}
	if unpack := a.cfg.UnpackHelpers; unpack != nil {
		helpers := &supervisor.InProcess{ComponentName: "helper binaries", Setup: func(context.Context) (func(context.Context) error, error) {
			if err := unpack(); err != nil {
				return nil, err
			}
			return func(ctx context.Context) error { <-ctx.Done(); return nil }, nil
		}}
		comps = append([]supervisor.Component{helpers}, comps...)
	}
	return comps
}

// Kube are the parts that talk to the apiserver: kubelet, flannel,
// kube-proxy.
func (a *Agent) Kube() []supervisor.Component {
	// The kubelet and kube-proxy do not return when cancelled; their
	// goroutines end with the process. The pods keep running either way.
	kubelet := &supervisor.InProcess{ComponentName: "kubelet", Setup: a.setupKubelet, StopWait: time.Second}
	fl := flannel.New(flannel.Config{
		NodeName:    a.cfg.NodeName,
		NodeIP:      a.cfg.NodeIP,
		Kubeconfig:  a.cfg.Creds.FlannelKubeconfig,
		ClusterCIDR: a.cfg.ClusterCIDR,
		Backend:     a.cfg.FlannelBackend,
		ConfDir:     filepath.Join(a.cfg.dirs().AgentEtc(), "flannel"),
		RunDir:      filepath.Join(a.cfg.RunDir, "flannel"),
		CNIConfDir:  a.containerd.CNIConfDir,
		PodIPDir:    a.cfg.dirs().PodIPs(),
	}, a.log.With("component", "flannel"))
	proxy := &supervisor.InProcess{ComponentName: "kube-proxy", Setup: a.setupProxy, Check: a.proxySynced, StopWait: time.Second}
	comps := []supervisor.Component{kubelet, fl, proxy, a.networkPolicy()}
	if a.cfg.LocalStoragePath != "" {
		comps = append(comps, a.localStorage())
	}
	return comps
}

// networkPolicy enforces NetworkPolicies with the node's flannel identity
// (its ClusterRole reads pods, namespaces and NetworkPolicies); off, it
// removes the rules an earlier run left and idles.
func (a *Agent) networkPolicy() supervisor.Component {
	if a.cfg.NetworkPolicy {
		return netpol.New(netpol.Config{NodeName: a.cfg.NodeName, Kubeconfig: a.cfg.Creds.FlannelKubeconfig,
			ServiceCIDR: a.cfg.ServiceCIDR, NodePortRange: "30000-32767"}, a.log.With("component", "network-policy"))
	}
	return &supervisor.InProcess{ComponentName: "network-policy (off)", Setup: func(context.Context) (func(context.Context) error, error) {
		netpol.Cleanup()
		return func(ctx context.Context) error { <-ctx.Done(); return nil }, nil
	}}
}

// localStorage creates and removes the directories of the node's
// local-path volumes, with the kubelet's credentials (pkg/localstorage).
func (a *Agent) localStorage() supervisor.Component {
	return &supervisor.InProcess{ComponentName: "local-storage", StopWait: time.Second, Setup: func(context.Context) (func(context.Context) error, error) {
		cs, err := kubeconfig.Clientset(a.cfg.Creds.KubeletKubeconfig, 0)
		if err != nil {
			return nil, err
		}
		n, err := localstorage.NewNode(cs, a.cfg.NodeName, a.cfg.LocalStoragePath, a.log.With("component", "local-storage"))
		if err != nil {
			return nil, err
		}
		return n.Run, nil
	}}
}
