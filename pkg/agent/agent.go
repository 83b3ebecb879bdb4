// Package agent runs a node: containerd (child process), kubelet and
// kube-proxy (in-process) and flannel (in-process), in that order.
package agent

import (
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/bramble-pi/bramble/pkg/containerd"
	"github.com/bramble-pi/bramble/pkg/flannel"
	"github.com/bramble-pi/bramble/pkg/supervisor"
)

// Config is a node's configuration.
type Config struct {
	NodeName            string
	NodeIP              net.IP
	DataDir             string // <data-dir>
	RunDir              string // /run/bramble
	BinDir              string // unpacked helper binaries
	ClusterCIDR         *net.IPNet
	ServiceCIDR         *net.IPNet
	ClusterDNS          net.IP
	ClusterDomain       string
	NodeLabels          []string
	NodeTaints          []string
	CgroupDriver        string // cgroupfs or systemd
	CgroupRoot          string // "/" unless several nodes share a host
	RestrictOOMScoreAdj bool
	SandboxImage        string
	Snapshotter         string // overlayfs or native; containerd falls back to native if overlay fails
	KubeletRootDir      string
	ResolvConf          string
	ProxyMode           string // iptables or nftables
	FlannelBackend      string
	KubeletArgs         []string // extra kubelet flags, name=value (--kubelet-arg)
	Debug               bool
	Creds               Credentials
	// ImageServer is the bramble server the node pulls images through
	// (https://<server>:6443, its registry on /v2/) before any registry;
	// empty on the server's own node.
	ImageServer string
}

func (c Config) agentDir() string { return filepath.Join(c.DataDir, "agent") }

// ImagesDir is where image archives imported at every start are kept
// (<data-dir>/agent/images).
func ImagesDir(dataDir string) string { return filepath.Join(dataDir, "agent", "images") }

// ImagesStateFile is what the image import remembers between starts.
func ImagesStateFile(dataDir string) string {
	return filepath.Join(dataDir, "agent", "images.state.json")
}

// ContainerdConfigDir holds containerd's generated config.toml (and the
// user's config.toml.tmpl).
func ContainerdConfigDir(dataDir string) string {
	return filepath.Join(dataDir, "agent", "etc", "containerd")
}

// Agent is a prepared node.
type Agent struct {
	cfg        Config
	log        *slog.Logger
	containerd containerd.Config
}

// New prepares a node.
func New(cfg Config, log *slog.Logger) *Agent {
	ctrd := containerd.Config{
		Root:                filepath.Join(cfg.agentDir(), "containerd"),
		State:               filepath.Join(cfg.RunDir, "containerd"),
		ConfigDir:           ContainerdConfigDir(cfg.DataDir),
		BinDir:              cfg.BinDir,
		CNIConfDir:          filepath.Join(cfg.agentDir(), "etc", "cni", "net.d"),
		SandboxImage:        cfg.SandboxImage,
		Snapshotter:         cfg.Snapshotter,
		RestrictOOMScoreAdj: cfg.RestrictOOMScoreAdj,
		SystemdCgroup:       cfg.CgroupDriver == "systemd",
		Debug:               cfg.Debug,
	}
	if cfg.ImageServer != "" {
		ctrd.Mirror = &containerd.Mirror{URL: cfg.ImageServer, CAFile: cfg.Creds.ServerCA,
			CertFile: cfg.Creds.Cert(KubeletClient), KeyFile: cfg.Creds.Key(KubeletClient)}
	}
	return &Agent{cfg: cfg, log: log, containerd: ctrd}
}

// ContainerdSocket is where the node's containerd listens.
func (a *Agent) ContainerdSocket() string { return a.containerd.Socket() }

// Components are the node's parts in start order: containerd, the image
// import (sandbox is the embedded pause image archive), kubelet, flannel,
// kube-proxy.
func (a *Agent) Components(sandbox []byte) []supervisor.Component {
	ctrd := containerd.New(a.containerd, a.log.With("component", "containerd"))
	// The kubelet and kube-proxy do not return when cancelled; their
	// goroutines end with the process. The pods keep running either way.
	kubelet := &supervisor.InProcess{ComponentName: "kubelet", Setup: a.setupKubelet, StopWait: time.Second}
	fl := flannel.New(flannel.Config{
		NodeName:    a.cfg.NodeName,
		NodeIP:      a.cfg.NodeIP,
		Kubeconfig:  a.cfg.Creds.FlannelKubeconfig,
		ClusterCIDR: a.cfg.ClusterCIDR,
		Backend:     a.cfg.FlannelBackend,
		ConfDir:     filepath.Join(a.cfg.agentDir(), "etc", "flannel"),
		RunDir:      filepath.Join(a.cfg.RunDir, "flannel"),
		CNIConfDir:  a.containerd.CNIConfDir,
	}, a.log.With("component", "flannel"))
	proxy := &supervisor.InProcess{ComponentName: "kube-proxy", Setup: a.setupProxy, StopWait: time.Second}
	return []supervisor.Component{ctrd, a.imageImporter(ctrd, sandbox), kubelet, fl, proxy}
}

// String describes the node for logs.
func (a *Agent) String() string {
	return fmt.Sprintf("node %s (%s)", a.cfg.NodeName, a.cfg.NodeIP)
}
