package server

import (
	"context"
	"fmt"
	"net"
	"time"

	"k8s.io/client-go/informers"
	"k8s.io/kubernetes/pkg/controller/nodeipam"
	"k8s.io/kubernetes/pkg/controller/nodeipam/ipam"

	"github.com/bramble-pi/bramble/pkg/kubeconfig"
	"github.com/bramble-pi/bramble/pkg/supervisor"
)

// nodeCIDRMaskSize is the size of each node's pod range (a /24 per node:
// 254 pods, 256 nodes in the default /16).
const nodeCIDRMaskSize = 24

// nodeIPAM runs Kubernetes' node IPAM controller (the range allocator that
// kube-controller-manager would run) on its own, as soon as the apiserver
// serves: a new node gets its pod CIDR, and so its network, without
// waiting for the controller-manager to build its ~40 other controllers
// (seconds on a Pi). kube-controller-manager runs with
// --allocate-node-cidrs=false, so only this one allocates.
func (cp *ControlPlane) nodeIPAM() supervisor.Component {
	return &supervisor.InProcess{ComponentName: "node-ipam", StopWait: time.Second, Setup: func(ctx context.Context) (func(context.Context) error, error) {
		cs, err := kubeconfig.Clientset(cp.creds.AdminKubeconfig, 0)
		if err != nil {
			return nil, err
		}
		// Only Nodes, never resynced: the smallest informer that serves.
		factory := informers.NewSharedInformerFactory(cs, 0)
		ctrl, err := nodeipam.NewNodeIpamController(ctx, factory.Core().V1().Nodes(), nil, cs,
			[]*net.IPNet{cp.cfg.ClusterCIDR}, cp.cfg.ServiceCIDR, nil, []int{nodeCIDRMaskSize}, ipam.RangeAllocatorType)
		if err != nil {
			return nil, fmt.Errorf("node IPAM controller: %w", err)
		}
		return func(ctx context.Context) error {
			factory.Start(ctx.Done())
			ctrl.Run(ctx)
			factory.Shutdown()
			return nil
		}, nil
	}}
}
