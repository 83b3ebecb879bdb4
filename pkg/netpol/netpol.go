// Package netpol enforces NetworkPolicies on the node: kube-router's
// network-policy controller runs in-process (iptables filter chains
// KUBE-ROUTER-*, KUBE-POD-FW-*, KUBE-NWPLCY-* and ipsets KUBE-SRC-*,
// KUBE-DST-*, kube-router-local-pods), fed by pod, namespace and
// NetworkPolicy informers. kube-router drives the iptables-save,
// iptables-restore and ipset commands, so the host needs them.
package netpol

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os/exec"
	"sync"
	"time"

	krnetpol "github.com/cloudnativelabs/kube-router/v2/pkg/controllers/netpol"
	"github.com/cloudnativelabs/kube-router/v2/pkg/healthcheck"
	"github.com/cloudnativelabs/kube-router/v2/pkg/options"
	"github.com/cloudnativelabs/kube-router/v2/pkg/svcip"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/bramble-pi/bramble/pkg/kubeconfig"
	"github.com/bramble-pi/bramble/pkg/supervisor"
)

// Config is what the controller needs.
type Config struct {
	NodeName string
	// Kubeconfig is the node's identity for the controller: it lists and
	// watches pods, namespaces and NetworkPolicies and reads its Node.
	Kubeconfig  string
	ServiceCIDR *net.IPNet
	// NodePortRange is the apiserver's NodePort range, "30000-32767".
	NodePortRange string
	// SyncPeriod is how often the rules are rebuilt in full besides on
	// changes (0: kube-router's 5 min).
	SyncPeriod time.Duration
}

// Commands are the executables kube-router runs.
var Commands = []string{"ipset", "iptables-save", "iptables-restore"}

// CheckHost tells what the host lacks to enforce NetworkPolicies.
func CheckHost() error {
	var missing []string
	for _, c := range Commands {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("network policy: %v not found in PATH: install Debian's ipset and iptables packages (apt-get install ipset iptables), or start with --disable-network-policy (NetworkPolicies are then not enforced)", missing)
	}
	return nil
}

// New returns the network-policy component.
func New(cfg Config, log *slog.Logger) supervisor.Component {
	return &supervisor.InProcess{ComponentName: "network-policy", StopWait: 2 * time.Second,
		Setup: func(ctx context.Context) (func(context.Context) error, error) { return setup(ctx, cfg, log) }}
}

func setup(ctx context.Context, cfg Config, log *slog.Logger) (func(context.Context) error, error) {
	if err := CheckHost(); err != nil {
		return nil, err
	}
	cs, err := kubeconfig.Clientset(cfg.Kubeconfig, 0)
	if err != nil {
		return nil, fmt.Errorf("network policy: %w", err)
	}
	kr := options.NewKubeRouterConfig()
	kr.HostnameOverride = cfg.NodeName
	kr.ClusterIPCIDRs = []string{cfg.ServiceCIDR.String()}
	kr.EnableIPv4, kr.EnableIPv6 = true, false
	kr.NodePortRange = cfg.NodePortRange
	kr.RunFirewall, kr.RunRouter, kr.RunServiceProxy = true, false, false
	kr.MetricsEnabled = false
	if cfg.SyncPeriod > 0 {
		kr.IPTablesSyncPeriod = cfg.SyncPeriod
	}
	ranges, err := svcip.NewValidator(svcip.Config{ClusterIPCIDRs: kr.ClusterIPCIDRs, EnableIPv4: true})
	if err != nil {
		return nil, fmt.Errorf("network policy: service CIDR %s: %w", cfg.ServiceCIDR, err)
	}
	iptables, ipsets, err := krnetpol.NewIPTablesHandlers(kr)
	if err != nil {
		return nil, fmt.Errorf("network policy: %w", err)
	}
	factory := informers.NewSharedInformerFactory(cs, 0)
	pods := factory.Core().V1().Pods().Informer()
	namespaces := factory.Core().V1().Namespaces().Informer()
	policies := factory.Networking().V1().NetworkPolicies().Informer()
	stop := make(chan struct{})
	factory.Start(stop)
	synced := factory.WaitForCacheSync(ctx.Done())
	for typ, ok := range synced {
		if !ok {
			close(stop)
			return nil, fmt.Errorf("network policy: %v informer did not sync: %w", typ, ctx.Err())
		}
	}
	npc, err := krnetpol.NewNetworkPolicyController(cs, kr, pods, policies, namespaces, &sync.Mutex{}, nil, iptables, ipsets, ranges)
	if err != nil {
		close(stop)
		return nil, fmt.Errorf("network policy controller: %w", err)
	}
	for _, h := range []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{{pods, npc.PodEventHandler}, {namespaces, npc.NamespaceEventHandler}, {policies, npc.NetworkPolicyEventHandler}} {
		if _, err := h.inf.AddEventHandler(h.h); err != nil {
			close(stop)
			return nil, fmt.Errorf("network policy: %w", err)
		}
	}
	return func(ctx context.Context) error {
		defer close(stop)
		// The controller reports each sync on this channel; bramble has no
		// kube-router health endpoint, so the reports are only drained.
		health := make(chan *healthcheck.ControllerHeartbeat, 1)
		go func() {
			for {
				select {
				case <-health:
				case <-stop:
					return
				}
			}
		}()
		var wg sync.WaitGroup
		wg.Add(1)
		go npc.Run(health, ctx.Done(), &wg)
		log.Debug("network policy controller running", "node", cfg.NodeName)
		<-ctx.Done()
		// The rules stay in place when bramble stops (policies keep
		// holding across a restart); bramble-killall.sh removes them.
		wg.Wait()
		return nil
	}, nil
}

// Cleanup removes the chains and ipsets the controller made, for a node
// started with network policies off after a run with them on. Without the
// ipset command there is nothing of kube-router's to remove.
func Cleanup() {
	if CheckHost() != nil {
		return
	}
	(&krnetpol.NetworkPolicyController{}).Cleanup()
}
