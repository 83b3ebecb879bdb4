package cli

import (
	"fmt"
	"log/slog"
	"net"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/bramble-pi/bramble/pkg/agent"
	"github.com/bramble-pi/bramble/pkg/bundle"
	"github.com/bramble-pi/bramble/pkg/hostcheck"
	"github.com/bramble-pi/bramble/pkg/mountns"
	"github.com/bramble-pi/bramble/pkg/pause"
	"github.com/bramble-pi/bramble/pkg/server"
	"github.com/bramble-pi/bramble/pkg/supervisor"
)

// RunDir holds sockets and state that must not outlive a reboot.
const RunDir = "/run/bramble"

// nodeFlags are shared by `server` and `agent`.
func nodeFlags() []cli.Flag {
	return []cli.Flag{
		str("node-ip", "", "IP address the node advertises (default: the address of the default route)"),
		list("node-label", "label to register the node with, key=value (repeatable)"),
		list("node-taint", "taint to register the node with, key=value:Effect (repeatable)"),
		str("flannel-backend", "vxlan", "flannel backend"),
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

// nodeConfig builds the node's configuration from flags and host facts.
func nodeConfig(c *cli.Context, facts hostcheck.Facts, nodeName string, nodeIP net.IP, sc server.Config) agent.Config {
	return agent.Config{
		NodeName:            nodeName,
		NodeIP:              nodeIP,
		DataDir:             sc.DataDir,
		RunDir:              RunDir,
		ClusterCIDR:         sc.ClusterCIDR,
		ServiceCIDR:         sc.ServiceCIDR,
		ClusterDNS:          sc.ClusterDNS,
		ClusterDomain:       sc.ClusterDomain,
		NodeLabels:          c.StringSlice("node-label"),
		NodeTaints:          c.StringSlice("node-taint"),
		CgroupDriver:        facts.CgroupDriver(),
		CgroupRoot:          "/",
		RestrictOOMScoreAdj: facts.RestrictOOMScoreAdj(),
		SandboxImage:        pause.Image,
		Snapshotter:         facts.Snapshotter(),
		KubeletRootDir:      "/var/lib/kubelet",
		ResolvConf:          agent.ResolvConf(),
		ProxyMode:           "iptables",
		FlannelBackend:      c.String("flannel-backend"),
		Debug:               c.Bool("debug"),
	}
}

// nodeComponents prepares the server's own node.
func nodeComponents(c *cli.Context, log *slog.Logger, facts hostcheck.Facts, sc server.Config, cp *server.ControlPlane) ([]supervisor.Component, error) {
	for _, w := range facts.Warnings() {
		log.Warn(w)
	}
	if sc.BindAddress.IsLoopback() {
		log.Warn("--bind-address is a loopback address: pods cannot reach the apiserver through the kubernetes Service", "bind-address", sc.BindAddress)
	}
	nodeIP := sc.AdvertiseAddress
	if c.String("node-ip") != "" {
		var err error
		if nodeIP, err = ipFlag(c, "node-ip"); err != nil {
			return nil, err
		}
	}
	binDir, err := bundle.Extract(sc.DataDir, log)
	if err != nil {
		return nil, fmt.Errorf("helper binaries: %w", err)
	}
	cfg := nodeConfig(c, facts, sc.NodeName, nodeIP, sc)
	cfg.BinDir = binDir
	cfg.Creds, err = cp.EnsureNodeCredentials(sc.NodeName, nodeIP, filepath.Join(sc.DataDir, "agent"))
	if err != nil {
		return nil, fmt.Errorf("node credentials: %w", err)
	}
	a := agent.New(cfg, log)
	return a.Components(pause.Archive()), nil
}
