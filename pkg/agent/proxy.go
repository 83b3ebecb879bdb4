package agent

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/pflag"
	proxyapp "k8s.io/kubernetes/cmd/kube-proxy/app"

	"github.com/bramble-pi/bramble/pkg/extraargs"
)

// proxyExtra are the user's --kube-proxy-arg values.
func (c Config) proxyExtra() extraargs.Args {
	return extraargs.Args{Flag: "kube-proxy-arg", Component: "kube-proxy", Values: c.ProxyArgs}
}

// proxyArgs are kube-proxy's command-line flags: bramble's settings with the
// user's --kube-proxy-arg over them. Flags, not a --config file: kube-proxy
// ignores most flags next to a config file (and exits when the file changes).
func (c Config) proxyArgs() []string {
	return c.proxyExtra().Merge([]string{
		"--kubeconfig=" + c.Creds.KubeProxyKubeconfig,
		"--cluster-cidr=" + c.ClusterCIDR.String(),
		"--hostname-override=" + c.NodeName,
		"--proxy-mode=" + c.ProxyMode,
		"--bind-address=0.0.0.0",
		"--healthz-bind-address=127.0.0.1:10256",
		"--metrics-bind-address=127.0.0.1:10249",
		// Leave the host's conntrack settings alone (they may be read-only).
		"--conntrack-max-per-core=0",
		"--conntrack-min=0",
		"--conntrack-tcp-timeout-established=0s",
		"--conntrack-tcp-timeout-close-wait=0s",
		"--iptables-sync-period=30s",
		"--iptables-min-sync-period=1s",
	})
}

// proxyFlags parses kube-proxy's flags into its options, as its command
// does, with errors naming kube-proxy and --kube-proxy-arg. It changes
// nothing process-wide (Complete does).
func (c Config) proxyFlags() (*proxyapp.Options, *pflag.FlagSet, error) {
	opts := proxyapp.NewOptions()
	fs := pflag.NewFlagSet("kube-proxy", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	opts.AddFlags(fs)
	if err := c.proxyExtra().Check(fs, nil); err != nil {
		return nil, nil, err
	}
	if err := fs.Parse(c.proxyArgs()); err != nil {
		return nil, nil, fmt.Errorf("kube-proxy arguments (--kube-proxy-arg): %w", err)
	}
	return opts, fs, nil
}

func (a *Agent) setupProxy(context.Context) (func(context.Context) error, error) {
	opts, fs, err := a.cfg.proxyFlags()
	if err != nil {
		return nil, err
	}
	if err := opts.Complete(fs); err != nil {
		return nil, fmt.Errorf("kube-proxy: %w", err)
	}
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("kube-proxy: %w", err)
	}
	return opts.Run, nil
}
