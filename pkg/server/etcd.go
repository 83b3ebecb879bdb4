package server

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/bramble-pi/bramble/pkg/etcd"
	"github.com/bramble-pi/bramble/pkg/join"
	"github.com/bramble-pi/bramble/pkg/kubeconfig"
	"github.com/bramble-pi/bramble/pkg/supervisor"
)

// newEtcd is this server's etcd member: a cluster of its own
// (--cluster-init), the member it was before (its data dir), or a learner
// added through --server (join.AddEtcdMember, the server token).
func (cp *ControlPlane) newEtcd() *etcd.Member {
	cfg := etcd.Config{
		Dir: cp.paths.EtcdDir(), Name: cp.cfg.NodeName, NodeIP: cp.cfg.AdvertiseAddress,
		Client: cp.creds.EtcdServer, Peer: cp.creds.EtcdPeer,
	}
	if cp.cfg.JoinServer != "" {
		log := cp.log.With("component", "etcd")
		cfg.Join = func(ctx context.Context, name, peerURL string) (string, error) {
			return join.AddEtcdMember(ctx, cp.cfg.JoinServer, cp.cfg.Token, name, peerURL, log)
		}
	}
	return etcd.New(cfg, cp.log.With("component", "etcd"))
}

// etcdMembersInterval is how often the leader looks for learners to promote
// and members to remove.
const etcdMembersInterval = 3 * time.Second

// etcdMembers runs on the server holding the bramble-controllers lease: it
// promotes the learners that caught up (a joining server waits for that
// before its apiserver starts) and removes the etcd member of a server
// whose Node was deleted (kubectl delete node). nil without embedded etcd.
func (cp *ControlPlane) etcdMembers() supervisor.Component {
	if cp.etcd == nil {
		return nil
	}
	return &supervisor.InProcess{ComponentName: "etcd-members", StopWait: time.Second, Setup: func(context.Context) (func(context.Context) error, error) {
		cs, err := kubeconfig.Clientset(cp.creds.AdminKubeconfig, 0)
		if err != nil {
			return nil, err
		}
		log := cp.log.With("component", "etcd-members")
		var mu sync.Mutex
		deleted := map[string]bool{}
		factory := informers.NewSharedInformerFactory(cs, 0)
		_, err = factory.Core().V1().Nodes().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
			DeleteFunc: func(obj any) {
				if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
					obj = t.Obj
				}
				if n, ok := obj.(*corev1.Node); ok {
					mu.Lock()
					deleted[n.Name] = true
					mu.Unlock()
				}
			},
			AddFunc: func(obj any) {
				if n, ok := obj.(*corev1.Node); ok {
					mu.Lock()
					delete(deleted, n.Name) // back before its member went
					mu.Unlock()
				}
			},
		})
		if err != nil {
			return nil, fmt.Errorf("etcd members: %w", err)
		}
		return func(ctx context.Context) error {
			factory.Start(ctx.Done())
			defer factory.Shutdown()
			cli := cp.etcd.Client()
			t := time.NewTicker(etcdMembersInterval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-t.C:
				}
				if _, err := etcd.PromoteLearners(ctx, cli, log); err != nil && ctx.Err() == nil {
					log.Warn("promoting etcd learners", "err", err)
				}
				mu.Lock()
				names := make([]string, 0, len(deleted))
				for n := range deleted {
					names = append(names, n)
				}
				mu.Unlock()
				for _, name := range names {
					removed, err := etcd.RemoveMember(ctx, cli, name)
					if err != nil {
						// etcd refuses while it would lose quorum or a
						// member is not connected: tried again.
						log.Warn("removing the etcd member of a deleted server node", "node", name, "err", err)
						continue
					}
					if removed {
						log.Info("etcd member of a deleted server node removed", "node", name)
					}
					mu.Lock()
					delete(deleted, name)
					mu.Unlock()
				}
			}
		}, nil
	}}
}
