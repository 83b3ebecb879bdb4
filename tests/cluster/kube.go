package cluster

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// WaitKubeconfig waits for the server's admin kubeconfig and writes the
// cluster's copy, which points at the server's node IP instead of loopback.
func (c *Cluster) WaitKubeconfig(ctx context.Context) error {
	s, err := c.Server()
	if err != nil {
		return err
	}
	src := filepath.Join(s.DataDir(), "kubeconfig.yaml")
	for {
		if _, err := os.Stat(src); err == nil {
			break
		}
		if !s.Process.Alive() {
			return fmt.Errorf("server exited before writing its kubeconfig:\n%s", s.LogTail(3000))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no kubeconfig at %s: %w", src, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	cfg, err := clientcmd.LoadFromFile(src)
	if err != nil {
		return fmt.Errorf("server kubeconfig: %w", err)
	}
	for _, cl := range cfg.Clusters {
		cl.Server = fmt.Sprintf("https://%s:%d", s.IP(), APIPort)
	}
	return clientcmd.WriteToFile(*cfg, c.KubeconfigPath())
}

// RESTConfig is the admin client configuration; its connections start in
// the switch namespace.
func (c *Cluster) RESTConfig() (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.KubeconfigPath())
	if err != nil {
		return nil, fmt.Errorf("cluster kubeconfig: %w", err)
	}
	cfg.Dial = DialContext(c.SwitchNetNS())
	cfg.QPS, cfg.Burst = 50, 100
	cfg.Timeout = 15 * time.Second
	return cfg, nil
}

// Client is a clientset for the cluster.
func (c *Cluster) Client() (*kubernetes.Clientset, error) {
	cfg, err := c.RESTConfig()
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// WaitAPI waits until the apiserver answers /readyz through the switch.
func (c *Cluster) WaitAPI(ctx context.Context) error {
	if err := c.WaitKubeconfig(ctx); err != nil {
		return err
	}
	cs, err := c.Client()
	if err != nil {
		return err
	}
	s, _ := c.Server()
	var last error
	for {
		body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil && strings.TrimSpace(string(body)) == "ok" {
			return nil
		}
		last = err
		if !s.Process.Alive() {
			return fmt.Errorf("server exited:\n%s", s.LogTail(3000))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("apiserver not ready through the switch: %v", last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// NodeReady says whether the node reports Ready=True (false when missing).
func NodeReady(node *corev1.Node) bool {
	for _, cond := range node.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// WaitReady waits until every named node is Ready (or, with ready false,
// not Ready). It fails early when a node's bramble exits.
func (c *Cluster) WaitReady(ctx context.Context, ready bool, nodes ...*Node) error {
	return c.waitNodes(ctx, ready, time.Time{}, nodes)
}

// WaitReadySince waits until every named node is Ready with a status its
// kubelet posted at or after since (a restarted node's old Ready status, not
// yet stale, does not count).
func (c *Cluster) WaitReadySince(ctx context.Context, since time.Time, nodes ...*Node) error {
	return c.waitNodes(ctx, true, since.Truncate(time.Second), nodes)
}

func (c *Cluster) waitNodes(ctx context.Context, ready bool, since time.Time, nodes []*Node) error {
	cs, err := c.Client()
	if err != nil {
		return err
	}
	for {
		pending := []string{}
		for _, n := range nodes {
			if ready && !n.Process.Alive() {
				return fmt.Errorf("bramble on %s is not running:\n%s", n.Host, n.LogTail(4000))
			}
			kn, err := cs.CoreV1().Nodes().Get(ctx, n.NodeName, metav1.GetOptions{})
			if err != nil || NodeReady(kn) != ready || ready && heartbeat(kn).Before(since) {
				pending = append(pending, n.NodeName)
			}
		}
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nodes %v not Ready=%v: %w", pending, ready, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// heartbeat is when the node's kubelet last posted its Ready condition.
func heartbeat(node *corev1.Node) time.Time {
	for _, cond := range node.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.LastHeartbeatTime.Time
		}
	}
	return time.Time{}
}

// Kubectl runs `bramble kubectl` with the cluster kubeconfig from the
// switch namespace.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := c.KubectlCmd(ctx, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return strings.TrimSpace(string(out)), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// KubectlCmd is the kubectl command (from the switch namespace) unstarted.
func (c *Cluster) KubectlCmd(ctx context.Context, args ...string) *exec.Cmd {
	argv := append([]string{"--net=" + c.SwitchNetNS(), "--", c.cfg.Binary, "kubectl", "--kubeconfig", c.KubeconfigPath()}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", argv...)
	cmd.Env = nodeEnv()
	return cmd
}

// Get fetches http://<ip><path> from the switch namespace and returns the
// status code and body (code 0 and the error text when it failed).
func (c *Cluster) Get(url string) (int, string) {
	resp, err := c.HTTPClient(10 * time.Second).Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b)
}
