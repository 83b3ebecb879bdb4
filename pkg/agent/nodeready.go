package agent

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bramble-pi/bramble/pkg/kubeconfig"
)

// WaitNodeReady blocks until the node's Ready condition is True (read with
// the kubelet's own credentials), or ctx ends.
func WaitNodeReady(ctx context.Context, kubeletKubeconfig, nodeName string) error {
	cs, err := kubeconfig.Clientset(kubeletKubeconfig, 5*time.Second)
	if err != nil {
		return err
	}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		if node, err := cs.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{}); err == nil {
			for _, c := range node.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
