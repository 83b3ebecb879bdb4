package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/bramble-pi/bramble/pkg/datastore"
	"github.com/bramble-pi/bramble/pkg/kubeconfig"
	"github.com/bramble-pi/bramble/pkg/supervisor"
)

// Shared says whether other servers may share this server's datastore (an
// external one: postgres://, mysql://, an etcd URL; or embedded etcd): the
// cluster may then have several servers, and the controllers that must act
// once per cluster run under leader election. One server on SQLite elects
// nothing (no lease renewed every 2 s: fewer writes on an SD card).
func (c Config) Shared() bool { return datastore.Shared(c.DatastoreEndpoint) || c.EmbeddedEtcd() }

// EmbeddedEtcd says whether this server keeps its datastore in an etcd
// member of its own: started with --cluster-init, joining a server without
// --datastore-endpoint, or started so before (its etcd data dir exists).
func (c Config) EmbeddedEtcd() bool {
	if c.DatastoreEndpoint != "" {
		return false
	}
	if c.ClusterInit || c.JoinServer != "" {
		return true
	}
	_, err := os.Stat(NewPaths(c.DataDir).EtcdDir())
	return err == nil
}

// ControllersLease is the Lease (kube-system) bramble's own controllers are
// elected with; kube-scheduler and kube-controller-manager have their own.
const ControllersLease = "bramble-controllers"

// Leader election timings: kube-scheduler's and kube-controller-manager's
// defaults. A killed leader's lease is taken over within about 17 s.
const (
	leaseDuration = 15 * time.Second
	renewDeadline = 10 * time.Second
	retryPeriod   = 2 * time.Second
)

// leader is the election of bramble's own controllers on a shared
// datastore: leading is closed while this server holds the lease.
type leader struct {
	leading chan struct{}
}

// leaderElection runs the election; a server that loses the lease after
// holding it stops (the elected controllers would otherwise keep acting
// next to the new leader's), as kube-scheduler and kube-controller-manager
// do: its service manager starts it again as a follower.
func (cp *ControlPlane) leaderElection() supervisor.Component {
	if cp.leader == nil {
		return nil
	}
	return &supervisor.InProcess{ComponentName: "leader-election", StopWait: 3 * time.Second, Setup: func(context.Context) (func(context.Context) error, error) {
		cs, err := kubeconfig.Clientset(cp.creds.AdminKubeconfig, 0)
		if err != nil {
			return nil, err
		}
		suffix := make([]byte, 4)
		_, _ = rand.Read(suffix)
		id := cp.cfg.NodeName + "_" + hex.EncodeToString(suffix)
		lock := &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: metav1.NamespaceSystem, Name: ControllersLease},
			Client:     cs.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: id},
		}
		log := cp.log.With("component", "leader-election")
		lost := make(chan struct{})
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock: lock, Name: ControllersLease, ReleaseOnCancel: true,
			LeaseDuration: leaseDuration, RenewDeadline: renewDeadline, RetryPeriod: retryPeriod,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(context.Context) {
					log.Info("this server runs bramble's controllers", "lease", ControllersLease, "identity", id)
					close(cp.leader.leading)
				},
				OnStoppedLeading: func() { close(lost) },
				OnNewLeader: func(who string) {
					if who != id {
						log.Info("another server runs bramble's controllers", "leader", who)
					}
				},
			},
		})
		if err != nil {
			return nil, fmt.Errorf("leader election: %w", err)
		}
		return func(ctx context.Context) error {
			le.Run(ctx)
			select {
			case <-lost:
				if ctx.Err() == nil {
					return errors.New("lost the " + ControllersLease + " lease: stopping so that only the new leader's controllers act")
				}
			default:
			}
			return nil
		}, nil
	}}
}

// elected makes a controller wait, once the rest is set up, until this
// server leads (nothing to wait for with one server). Its own setup runs
// then too: it may write to the cluster (metrics-server registers itself).
func (cp *ControlPlane) elected(c supervisor.Component) supervisor.Component {
	ip, ok := c.(*supervisor.InProcess)
	if cp.leader == nil || !ok || ip == nil {
		return c
	}
	setup := ip.Setup
	ip.Setup = func(context.Context) (func(context.Context) error, error) {
		return func(ctx context.Context) error {
			select {
			case <-cp.leader.leading:
			case <-ctx.Done():
				return nil
			}
			run, err := setup(ctx)
			if err != nil {
				return fmt.Errorf("set up: %w", err)
			}
			return run(ctx)
		}, nil
	}
	return ip
}
