package agent

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/wait"
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
	if f := fs.Lookup("metrics-bind-address"); f != nil {
		a.proxyMetrics = f.Value.String()
	}
	if err := opts.Complete(fs); err != nil {
		return nil, fmt.Errorf("kube-proxy: %w", err)
	}
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("kube-proxy: %w", err)
	}
	return opts.Run, nil
}

// proxySynced waits (at most proxySyncWait) until kube-proxy has written its
// rules once, as its metrics say. The network-policy controller starts
// after it: kube-router rewrites the whole filter table with
// iptables-save/iptables-restore, and run at the same moment as
// kube-proxy's first sync it can drop chains kube-proxy has just made (a
// node's pods then could not reach Services for minutes, until kube-proxy's
// next full sync). Best effort: without metrics it returns at once.
func (a *Agent) proxySynced(ctx context.Context) error {
	addr := a.proxyMetrics
	if addr == "" || addr == "0" {
		return nil
	}
	client := &http.Client{Timeout: time.Second}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, proxySyncWait, true, func(ctx context.Context) (bool, error) {
		return proxyHasSynced(ctx, client, "http://"+addr+"/metrics"), nil
	})
	if err != nil && ctx.Err() == nil {
		a.log.Debug("kube-proxy has not synced its rules yet; starting the next components anyway", "waited", proxySyncWait)
	}
	return nil
}

const proxySyncWait = 30 * time.Second

// proxyHasSynced reports whether kube-proxy's metrics show a sync of its
// rules (a non-zero kubeproxy_sync_proxy_rules_last_timestamp_seconds).
func proxyHasSynced(ctx context.Context, client *http.Client, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "kubeproxy_sync_proxy_rules_last_timestamp_seconds") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		return err == nil && v > 0
	}
	return false
}
