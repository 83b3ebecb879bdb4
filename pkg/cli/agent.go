package cli

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/bramble-pi/bramble/pkg/join"
	"github.com/bramble-pi/bramble/pkg/kubeconfig"
	"github.com/bramble-pi/bramble/pkg/layout"
	"github.com/bramble-pi/bramble/pkg/logging"
	"github.com/bramble-pi/bramble/pkg/pause"
	"github.com/bramble-pi/bramble/pkg/process"
	"github.com/bramble-pi/bramble/pkg/serverlb"
	"github.com/bramble-pi/bramble/pkg/supervisor"
)

func agentFlags() []cli.Flag {
	flags := append(commonFlags(),
		serverURLFlag("URL of a bramble server, https://<host>:6443"),
	)
	return append(flags, nodeFlags()...)
}

func agentCommand() *cli.Command {
	return &cli.Command{
		Name:   "agent",
		Usage:  "join a server as a node (runs containerd, kubelet, kube-proxy and flannel)",
		Flags:  agentFlags(),
		Before: applyConfigFile,
		Action: runAgent,
	}
}

func runAgent(c *cli.Context) error {
	if c.String("server") == "" {
		return fmt.Errorf("--server (BRAMBLE_URL) is required: the URL of a bramble server, like https://<host>:6443")
	}
	serverURL, err := join.ValidateServerURL(c.String("server"))
	if err != nil {
		return err
	}
	u, err := url.Parse(serverURL)
	if err != nil {
		return err
	}
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), "443")
	}
	dataDir := c.String("data-dir")
	if dataDir == "" {
		return fmt.Errorf("--data-dir must not be empty")
	}
	nodeName, err := nodeNameFlag(c)
	if err != nil {
		return err
	}
	var nodeIP net.IP
	if c.String("node-ip") != "" {
		if nodeIP, err = ipFlag(c, "node-ip"); err != nil {
			return err
		}
	} else if nodeIP, err = sourceIPFor(serverURL); err != nil {
		return err
	}
	// Before anything else: this may re-execute bramble in a mount namespace.
	facts, err := checkHost()
	if err != nil {
		return err
	}
	release, err := lockDataDir(dataDir)
	if err != nil {
		return err
	}
	defer release()
	log := logging.Setup(c.App.ErrWriter, c.Bool("debug"))
	if err := process.Setup(process.Settings{NodeName: nodeName, KubeletArgs: passedArgs(c, "kubelet-arg"), WireGuardKeyFile: wireGuardKeyFile}, log); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serveProfiles(ctx, c, log); err != nil {
		return err
	}

	start := time.Now()
	log.Info("starting bramble agent", "server", serverURL, "node", nodeName, "ip", nodeIP, "data-dir", dataDir)
	joinReq := join.Request{
		Server: serverURL, Token: c.String("token"), NodeName: nodeName, NodeIP: nodeIP,
		Dir: layout.New(dataDir).Agent(),
	}
	cc, creds, err := join.Ensure(ctx, joinReq, log)
	if err != nil {
		return err
	}
	tuneCertReload(creds.ShortestLifetime())
	cl, err := clusterOf(cc)
	if err != nil {
		return fmt.Errorf("cluster settings from %s: %w", serverURL, err)
	}
	// The node's components reach the apiservers through a local load
	// balancer: the server it joined, and every other the cluster lists.
	lb, err := serverlb.Listen(serverlb.DefaultPort, u.Host, log.With("component", "server-lb"))
	if err != nil {
		return err
	}
	if err := creds.WriteKubeconfigs(lb.URL()); err != nil {
		return err
	}
	cfg := nodeConfig(c, facts, nodeName, nodeIP, dataDir, cl)
	cfg.Creds = creds
	cfg.ImageServer = serverURL
	node, err := newNode(log, facts, cfg)
	if err != nil {
		return err
	}
	components := append([]supervisor.Component{serverLB(lb, creds.KubeProxyKubeconfig)}, node.Components(pause.Archive())...)
	components = append(components, &supervisor.InProcess{ComponentName: "node-certificates",
		Setup: func(context.Context) (func(context.Context) error, error) {
			return func(ctx context.Context) error {
				return join.KeepCurrent(ctx, joinReq, log.With("component", "node-certificates"))
			}, nil
		}})
	sup := supervisor.New(log, components, supervisor.OnReady(func() {
		log.Info("bramble agent ready", "took", time.Since(start).Round(time.Millisecond), "node", nodeName)
		go announceNodeReady(ctx, log, dataDir, nodeName, start)
		releaseStartupMemoryLater(ctx, log)
	}))
	context.AfterFunc(ctx, notifyStopping)
	if err := sup.Run(ctx); err != nil {
		return loggedError{err}
	}
	log.Info("bramble agent stopped")
	return nil
}

// serverLB runs the load balancer, following the cluster's list of
// apiservers with kube-proxy's identity.
func serverLB(lb *serverlb.LB, kubeconfigPath string) supervisor.Component {
	return &supervisor.InProcess{ComponentName: "server-lb", StopWait: time.Second, Setup: func(context.Context) (func(context.Context) error, error) {
		cs, err := kubeconfig.Clientset(kubeconfigPath, 0)
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context) error {
			go func() { _ = lb.Follow(ctx, cs) }()
			return lb.Run(ctx)
		}, nil
	}}
}

// clusterOf parses the settings a server sent.
func clusterOf(cc join.ClusterConfig) (cluster, error) {
	cl := cluster{domain: cc.ClusterDomain, flannelBackend: cc.FlannelBackend, networkPolicy: !cc.DisableNetworkPolicy}
	var err error
	if _, cl.clusterCIDR, err = net.ParseCIDR(cc.ClusterCIDR); err != nil {
		return cl, fmt.Errorf("cluster CIDR: %w", err)
	}
	if _, cl.serviceCIDR, err = net.ParseCIDR(cc.ServiceCIDR); err != nil {
		return cl, fmt.Errorf("service CIDR: %w", err)
	}
	if cl.dns = net.ParseIP(cc.ClusterDNS); cl.dns == nil {
		return cl, fmt.Errorf("cluster DNS %q is not an IP", cc.ClusterDNS)
	}
	return cl, nil
}

// nodeNameFlag is --node-name, or the lower-cased hostname.
func nodeNameFlag(c *cli.Context) (string, error) {
	if name := c.String("node-name"); name != "" {
		return name, nil
	}
	host, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("--node-name not set and the hostname is unknown: %w", err)
	}
	return strings.ToLower(host), nil
}

// sourceIPFor is the local address used to reach the server: the address the
// node advertises unless --node-ip says otherwise.
func sourceIPFor(serverURL string) (net.IP, error) {
	u, err := url.Parse(serverURL)
	if err != nil {
		return nil, err
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	if ip := routeSource("udp", net.JoinHostPort(u.Hostname(), port)); ip != nil {
		return ip, nil
	}
	ip, err := defaultNodeIP()
	if err != nil {
		return nil, fmt.Errorf("find the address that reaches %s (set --node-ip): %w", u.Host, err)
	}
	return ip, nil
}
