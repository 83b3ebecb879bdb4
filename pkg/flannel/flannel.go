// Package flannel runs flannel in-process (vxlan or WireGuard backend, kube
// subnet manager) and, once it holds its lease, writes the node's CNI
// configuration: a cni0 bridge with host-local addresses from the node's pod
// CIDR and flannel's MTU.
package flannel

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/flannel-io/flannel/pkg/backend"
	_ "github.com/flannel-io/flannel/pkg/backend/vxlan"     // registers the vxlan backend
	_ "github.com/flannel-io/flannel/pkg/backend/wireguard" // registers the wireguard backend
	"github.com/flannel-io/flannel/pkg/ip"
	"github.com/flannel-io/flannel/pkg/ipmatch"
	"github.com/flannel-io/flannel/pkg/subnet"
	"github.com/flannel-io/flannel/pkg/subnet/kube"
	"github.com/flannel-io/flannel/pkg/trafficmngr/iptables"

	"github.com/bramble-pi/bramble/pkg/kubeconfig"
	"github.com/bramble-pi/bramble/pkg/pki"
	"github.com/bramble-pi/bramble/pkg/supervisor"
)

// Config is what flannel needs.
type Config struct {
	NodeName    string
	NodeIP      net.IP
	Kubeconfig  string
	ClusterCIDR *net.IPNet
	Backend     string // one of Backends
	ConfDir     string // net-conf.json
	RunDir      string // subnet.env
	CNIConfDir  string // where 10-bramble.conflist goes
	PodIPDir    string // host-local's record of handed-out pod IPs
}

// Flannel is the flannel component.
type Flannel struct {
	cfg    Config
	log    *slog.Logger
	runner supervisor.Runner
	leased chan struct{}
}

// New returns the flannel component.
func New(cfg Config, log *slog.Logger) *Flannel {
	return &Flannel{cfg: cfg, log: log, leased: make(chan struct{})}
}

// Name implements supervisor.Component.
func (f *Flannel) Name() string { return "flannel" }

// Init writes flannel's network configuration.
func (f *Flannel) Init(context.Context) error {
	conf := map[string]any{
		"Network":    f.cfg.ClusterCIDR.String(),
		"EnableIPv4": true,
		"Backend":    map[string]string{"Type": flannelType[f.cfg.Backend]},
	}
	data, _ := json.Marshal(conf)
	return pki.WriteFile(f.netConf(), data, 0o600)
}

func (f *Flannel) netConf() string     { return filepath.Join(f.cfg.ConfDir, "net-conf.json") }
func (f *Flannel) subnetEnv() string   { return filepath.Join(f.cfg.RunDir, "subnet.env") }
func (f *Flannel) cniConfFile() string { return filepath.Join(f.cfg.CNIConfDir, "10-bramble.conflist") }

// Start runs flannel until the supervisor stops it.
func (f *Flannel) Start(ctx context.Context) error {
	f.runner.Go(context.WithoutCancel(ctx), f.run)
	return nil
}

func (f *Flannel) run(ctx context.Context) error {
	// The kube subnet manager learns its node from NODE_NAME, which
	// pkg/process sets at start-up. Making it takes a second at least
	// (its node informer's sync is polled once a second, the first poll
	// comes too early): that second overlaps the node's registration and
	// pod CIDR instead of following them.
	podCIDR := make(chan error, 1)
	go func() { podCIDR <- f.waitForPodCIDR(ctx) }()
	sm, err := kube.NewSubnetManager(ctx, "", f.cfg.Kubeconfig, "flannel.alpha.coreos.com", f.netConf(), false)
	if err != nil {
		return fmt.Errorf("flannel subnet manager: %w", err)
	}
	if err := <-podCIDR; err != nil {
		return err
	}
	config, err := sm.GetNetworkConfig(ctx)
	if err != nil {
		return fmt.Errorf("flannel network config: %w", err)
	}
	stack, err := ipmatch.GetIPFamily(config.EnableIPv4, config.EnableIPv6)
	if err != nil {
		return err
	}
	ext, err := ipmatch.LookupExtIface(f.cfg.NodeIP.String(), "", "", stack, ipmatch.PublicIPOpts{})
	if err != nil {
		return fmt.Errorf("flannel: no interface with node IP %s: %w", f.cfg.NodeIP, err)
	}
	// The WireGuard backend writes the node's key here (pkg/process).
	if err := os.MkdirAll(f.cfg.RunDir, 0o700); err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	be, err := backend.NewManager(ctx, sm, ext).GetBackend(config.BackendType)
	if err != nil {
		return fmt.Errorf("flannel backend %s: %w", config.BackendType, err)
	}
	bn, err := registerNetwork(ctx, be, &wg, config)
	if err != nil {
		return fmt.Errorf("flannel: register network: %w", err)
	}
	tm := &iptables.IPTablesManager{}
	if err := tm.Init(ctx); err != nil {
		return fmt.Errorf("flannel iptables: %w", err)
	}
	const resync = 60
	if err := tm.SetupAndEnsureMasqRules(ctx, config.Network, ip.IP4Net{}, ip.IP4Net{}, ip.IP6Net{}, ip.IP6Net{}, ip.IP6Net{}, bn.Lease(), resync, false); err != nil {
		return fmt.Errorf("flannel masquerade rules: %w", err)
	}
	tm.SetupAndEnsureForwardRules(ctx, config.Network, config.IPv6Network, resync)
	if err := sm.HandleSubnetFile(f.subnetEnv(), config, true, bn.Lease().Subnet, bn.Lease().IPv6Subnet, bn.MTU()); err != nil {
		return fmt.Errorf("flannel subnet file: %w", err)
	}
	if err := WriteCNIConfig(f.cniConfFile(), f.cfg.PodIPDir, bn.Lease().Subnet.ToIPNet(), config.Network.ToIPNet(), bn.MTU()); err != nil {
		return err
	}
	f.log.Info("pod network ready", "subnet", bn.Lease().Subnet.String(), "mtu", bn.MTU(), "backend", config.BackendType)
	close(f.leased)

	wg.Add(1)
	go func() { defer wg.Done(); bn.Run(ctx) }()
	if err := sm.CompleteLease(ctx, bn.Lease(), &wg); err != nil && ctx.Err() == nil {
		return fmt.Errorf("flannel lease: %w", err)
	}
	<-ctx.Done()
	return nil
}

// registerNetwork registers the node's network (its lease is the pod CIDR).
// The subnet manager reads the node from its informer, which can lag a
// moment behind the GET that saw the pod CIDR: a few quick retries cover
// that (registering again reuses the VXLAN device).
func registerNetwork(ctx context.Context, be backend.Backend, wg *sync.WaitGroup, config *subnet.Config) (backend.Network, error) {
	var err error
	for range 5 {
		var bn backend.Network
		if bn, err = be.RegisterNetwork(ctx, wg, config); err == nil {
			return bn, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil, err
}

// waitForPodCIDR waits until the controller-manager gave the node a pod CIDR
// (the node must have registered first); flannel's lease is that CIDR.
func (f *Flannel) waitForPodCIDR(ctx context.Context) error {
	cs, err := kubeconfig.Clientset(f.cfg.Kubeconfig, 0)
	if err != nil {
		return fmt.Errorf("flannel: %w", err)
	}
	return wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		node, err := cs.CoreV1().Nodes().Get(ctx, f.cfg.NodeName, metav1.GetOptions{})
		if err != nil {
			return false, nil // not registered yet
		}
		return node.Spec.PodCIDR != "", nil
	})
}

// Ready waits for the lease and the CNI configuration.
func (f *Flannel) Ready(ctx context.Context) error {
	select {
	case <-f.leased:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("flannel has no lease yet (does the node have a pod CIDR?): %w", ctx.Err())
	}
}

// Exited implements supervisor.Component.
func (f *Flannel) Exited() <-chan error { return f.runner.Exited() }

// Stop implements supervisor.Component.
func (f *Flannel) Stop(ctx context.Context) error { return f.runner.Stop(ctx) }

// WriteCNIConfig writes the bridge + host-local + portmap chain for a node;
// host-local keeps its address records in ipDir.
func WriteCNIConfig(path, ipDir string, podCIDR, clusterCIDR *net.IPNet, mtu int) error {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "cbr0",
		"plugins": []any{
			map[string]any{
				"type":             "bridge",
				"bridge":           "cni0",
				"isDefaultGateway": true,
				"ipMasq":           false, // flannel masquerades traffic leaving the cluster
				"hairpinMode":      true,
				"forceAddress":     true,
				"mtu":              mtu,
				"ipam": map[string]any{
					"type":    "host-local",
					"dataDir": ipDir,
					"ranges":  [][]map[string]string{{{"subnet": podCIDR.String()}}},
					"routes":  []map[string]string{{"dst": clusterCIDR.String()}},
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	data, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return err
	}
	return pki.WriteFile(path, data, 0o644)
}
