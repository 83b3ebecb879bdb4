// Package etcd runs an etcd member in-process (etcd's own embed package):
// the datastore of a server started with --cluster-init and of the servers
// that join it. The client URL is on loopback with TLS (client certificates
// from the etcd server CA: only the local apiserver connects); the peer URL
// is on the node's address with TLS both ways (etcd peer CA). A member that
// joins a running cluster is added as a learner (by a running server, see
// Config.Join) and promoted by the cluster's leader once caught up (Members).
package etcd

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
)

// backendBatchInterval is how long the backend batches applied writes
// before committing them (etcd's default: 100 ms).
const backendBatchInterval = 5 * time.Second

// Default ports, as etcd's own.
const (
	ClientPort = 2379
	PeerPort   = 2380
)

// TLS is a certificate, its key and the CA that verifies the other side.
type TLS struct {
	CertFile, KeyFile, CAFile string
}

// Config is one member.
type Config struct {
	// Dir is the member's data dir (<data-dir>/server/db/etcd), 0700.
	Dir string
	// Name is the member's name: the server's node name.
	Name string
	// NodeIP is where the peer URL listens (and what other members dial).
	NodeIP net.IP
	// ClientPort and PeerPort default to ClientPort and PeerPort; the
	// client URL is always on 127.0.0.1.
	ClientPort, PeerPort int
	// Client is the serving certificate of the client URL and the CA of
	// its clients' certificates; Peer the same for the peer URL (also the
	// certificate this member presents to the others).
	Client, Peer TLS
	// Join adds this member to a running cluster as a learner and returns
	// the initial cluster (name=peerURL,...) that includes it. It is
	// called only when Dir holds no member data yet; nil starts a new
	// cluster of one (--cluster-init).
	Join func(ctx context.Context, name, peerURL string) (string, error)
}

func (c Config) clientPort() int {
	if c.ClientPort == 0 {
		return ClientPort
	}
	return c.ClientPort
}

func (c Config) peerPort() int {
	if c.PeerPort == 0 {
		return PeerPort
	}
	return c.PeerPort
}

// ClientURL is where the apiserver reaches this member.
func (c Config) ClientURL() string {
	return "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(c.clientPort()))
}

// PeerURL is where the other members reach this one.
func (c Config) PeerURL() string { return PeerURL(c.NodeIP, c.peerPort()) }

// PeerURL is a member's peer URL on ip:port.
func PeerURL(ip net.IP, port int) string {
	return "https://" + net.JoinHostPort(ip.String(), strconv.Itoa(port))
}

// HasData says whether dir holds a member's data (a cluster was started or
// joined with it before).
func HasData(dir string) bool {
	entries, err := os.ReadDir(filepath.Join(dir, "member", "wal"))
	return err == nil && len(entries) > 0
}

// Member is the etcd component.
type Member struct {
	cfg    Config
	log    *slog.Logger
	e      *embed.Etcd
	client *clientv3.Client
	exited chan error
	// stopping: Stop was called, etcd's stop is not a failure.
	stopping atomic.Bool
}

// New returns the component.
func New(cfg Config, log *slog.Logger) *Member {
	return &Member{cfg: cfg, log: log, exited: make(chan error, 1)}
}

// Name implements supervisor.Component.
func (m *Member) Name() string { return "etcd" }

// Init creates the data dir.
func (m *Member) Init(context.Context) error {
	if err := os.MkdirAll(m.cfg.Dir, 0o700); err != nil {
		return fmt.Errorf("etcd data dir: %w", err)
	}
	// etcd refuses a data dir others may read.
	if err := os.Chmod(m.cfg.Dir, 0o700); err != nil {
		return fmt.Errorf("etcd data dir: %w", err)
	}
	return nil
}

// embedConfig is etcd's configuration for this member; initialCluster and
// state as for a new cluster unless the member joins.
func (m *Member) embedConfig(initialCluster, state string) (*embed.Config, error) {
	c := m.cfg
	ec := embed.NewConfig()
	ec.Name = c.Name
	ec.Dir = c.Dir
	client, err := url.Parse(c.ClientURL())
	if err != nil {
		return nil, err
	}
	peer, err := url.Parse(c.PeerURL())
	if err != nil {
		return nil, err
	}
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	ec.ClientTLSInfo.CertFile, ec.ClientTLSInfo.KeyFile = c.Client.CertFile, c.Client.KeyFile
	ec.ClientTLSInfo.TrustedCAFile, ec.ClientTLSInfo.ClientCertAuth = c.Client.CAFile, true
	ec.PeerTLSInfo.CertFile, ec.PeerTLSInfo.KeyFile = c.Peer.CertFile, c.Peer.KeyFile
	ec.PeerTLSInfo.TrustedCAFile, ec.PeerTLSInfo.ClientCertAuth = c.Peer.CAFile, true
	ec.InitialCluster = initialCluster
	ec.ClusterState = state
	ec.InitialClusterToken = "bramble"
	// No HTTP/JSON gateway and no metrics listener: only the apiserver
	// (gRPC) connects.
	ec.EnableGRPCGateway = false
	ec.Metrics = "basic"
	// etcd warns of reads and writes over 100 ms: routine on an SD card
	// and on a busy Pi.
	ec.WarningApplyDuration = time.Second
	ec.WarningUnaryRequestDuration = time.Second
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(newZapLogger(m.log, &m.stopping))
	// The apiserver compacts every 5 minutes; etcd keeps the default
	// fsync of every commit (no durability traded for fewer writes).
	// Fewer writes to the backend file: every raft entry is in the
	// fsynced WAL before it is acknowledged (a crash replays it), so the
	// backend (bbolt) commits its batch every few seconds, not every
	// 100 ms: at idle (leases renewed every 2 s) each commit rewrote a
	// handful of 4 KiB pages, most of etcd's writes to an SD card.
	ec.BackendBatchInterval = backendBatchInterval
	ec.AutoCompactionMode = embed.CompactorModePeriodic
	ec.AutoCompactionRetention = "0"
	return ec, nil
}

// Start starts the member: a new cluster of one, the member it was
// before (its data dir), or a learner of a running cluster (Join).
func (m *Member) Start(ctx context.Context) error {
	initial := m.cfg.Name + "=" + m.cfg.PeerURL()
	state := embed.ClusterStateFlagNew
	if m.cfg.Join != nil && !HasData(m.cfg.Dir) {
		cluster, err := m.cfg.Join(ctx, m.cfg.Name, m.cfg.PeerURL())
		if err != nil {
			return fmt.Errorf("etcd: add this server as a member: %w", err)
		}
		initial, state = cluster, embed.ClusterStateFlagExisting
		m.log.Info("added to the etcd cluster as a learner", "name", m.cfg.Name, "peer", m.cfg.PeerURL())
	}
	ec, err := m.embedConfig(initial, state)
	if err != nil {
		return err
	}
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	m.e = e
	go func() {
		var err error
		select {
		case err = <-e.Err():
		case <-e.Server.StopNotify():
		}
		if m.stopping.Load() {
			return
		}
		if err == nil {
			err = m.stoppedError()
		}
		m.exited <- fmt.Errorf("etcd: %w", err)
	}()
	return nil
}

// stoppedError explains an etcd server that stopped on its own: what
// usually stops one is its member's removal from the cluster.
func (m *Member) stoppedError() error {
	return fmt.Errorf("the etcd server stopped; if this server's etcd member was removed from the cluster (its Node deleted, or bramble etcd remove-member), move %s away and start this server again with --server https://<another server>:6443 and the server token to join as a new member", m.cfg.Dir)
}

// promotionLog is how often Ready says it still waits for promotion.
const promotionLog = 30 * time.Second

// Ready waits until the member serves: it published itself to the cluster,
// and it is a voting member (a learner serves no reads or writes to the
// apiserver: it waits to be promoted).
func (m *Member) Ready(ctx context.Context) error {
	select {
	case <-m.e.Server.ReadyNotify():
	case <-m.e.Server.StopNotify():
		return fmt.Errorf("before it was ready: %w", m.stoppedError())
	case <-ctx.Done():
		return fmt.Errorf("etcd not ready: %w", ctx.Err())
	}
	logged := time.Now()
	for m.e.Server.IsLearner() {
		if time.Since(logged) > promotionLog {
			m.log.Info("waiting for the cluster's leader to promote this etcd learner (it promotes a learner once caught up)")
			logged = time.Now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("etcd: still a learner: %w", ctx.Err())
		case <-m.e.Server.StopNotify():
			return fmt.Errorf("while a learner: %w", m.stoppedError())
		case <-time.After(200 * time.Millisecond):
		}
	}
	m.client = v3client.New(m.e.Server)
	return nil
}

// ClientURL is where the apiserver reaches this member.
func (m *Member) ClientURL() string { return m.cfg.ClientURL() }

// Client is an in-process client of this member (after Ready).
func (m *Member) Client() *clientv3.Client { return m.client }

// Exited reports etcd stopping on its own.
func (m *Member) Exited() <-chan error { return m.exited }

// Stop stops the member.
func (m *Member) Stop(ctx context.Context) error {
	if m.e == nil {
		return nil
	}
	m.stopping.Store(true)
	done := make(chan struct{})
	go func() {
		if m.client != nil {
			m.client.Close()
		}
		m.e.Close()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("etcd did not stop: %w", ctx.Err())
	}
}
