package agent

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"github.com/spf13/pflag"
	proxyapp "k8s.io/kubernetes/cmd/kube-proxy/app"
	"sigs.k8s.io/yaml"

	"github.com/bramble-pi/bramble/pkg/pki"
)

func (a *Agent) proxyConfig() map[string]any {
	c := a.cfg
	return map[string]any{
		"apiVersion":         "kubeproxy.config.k8s.io/v1alpha1",
		"kind":               "KubeProxyConfiguration",
		"clientConnection":   map[string]any{"kubeconfig": c.Creds.KubeProxyKubeconfig},
		"clusterCIDR":        c.ClusterCIDR.String(),
		"hostnameOverride":   c.NodeName,
		"mode":               c.ProxyMode,
		"bindAddress":        "0.0.0.0",
		"healthzBindAddress": "127.0.0.1:10256",
		"metricsBindAddress": "127.0.0.1:10249",
		// Leave the host's conntrack settings alone (they may be read-only).
		"conntrack": map[string]any{"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
		"iptables":  map[string]any{"syncPeriod": "30s", "minSyncPeriod": "1s"},
		"logging":   map[string]any{"format": "text"},
	}
}

func (a *Agent) setupProxy(ctx context.Context) (func(context.Context) error, error) {
	configFile := filepath.Join(a.cfg.dirs().AgentEtc(), "kube-proxy.yaml")
	data, err := yaml.Marshal(a.proxyConfig())
	if err != nil {
		return nil, err
	}
	if err := pki.WriteFile(configFile, data, 0o600); err != nil {
		return nil, err
	}
	opts := proxyapp.NewOptions()
	fs := pflag.NewFlagSet("kube-proxy", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	opts.AddFlags(fs)
	if err := fs.Parse([]string{"--config=" + configFile}); err != nil {
		return nil, fmt.Errorf("kube-proxy arguments: %w", err)
	}
	if err := opts.Complete(fs); err != nil {
		return nil, fmt.Errorf("kube-proxy: %w", err)
	}
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("kube-proxy: %w", err)
	}
	return opts.Run, nil
}
