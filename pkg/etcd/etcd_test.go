package etcd

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/bramble-pi/bramble/pkg/logging"
	"github.com/bramble-pi/bramble/pkg/pki"
)

func TestPeerLeafNames(t *testing.T) {
	l := PeerLeaf("pi2", "raspberrypi", net.ParseIP("10.0.0.2"))
	if !slices.Equal(l.DNSNames, []string{"localhost", "pi2", "raspberrypi"}) {
		t.Errorf("DNS names %v", l.DNSNames)
	}
	var ips []string
	for _, ip := range l.IPs {
		ips = append(ips, ip.String())
	}
	if !slices.Equal(ips, []string{"127.0.0.1", "10.0.0.2"}) {
		t.Errorf("IPs %v", ips)
	}
	if !l.Server || !l.Client {
		t.Error("a peer certificate serves and dials")
	}
	// The same name twice (node name = host name) once.
	if l := PeerLeaf("pi1", "pi1", net.ParseIP("127.0.0.1")); len(l.DNSNames) != 2 || len(l.IPs) != 1 {
		t.Errorf("names %v, IPs %v", l.DNSNames, l.IPs)
	}
	if s := ServerLeaf("pi1"); !slices.Equal(s.DNSNames, []string{"localhost"}) || len(s.IPs) != 2 {
		t.Errorf("the client URL's certificate names %v %v: loopback only", s.DNSNames, s.IPs)
	}
}

func TestURLs(t *testing.T) {
	c := Config{NodeIP: net.ParseIP("10.250.0.1")}
	if c.ClientURL() != "https://127.0.0.1:2379" || c.PeerURL() != "https://10.250.0.1:2380" {
		t.Errorf("%s %s", c.ClientURL(), c.PeerURL())
	}
	if u := PeerURL(net.ParseIP("fd00::1"), 2380); u != "https://[fd00::1]:2380" {
		t.Error(u)
	}
}

func TestInitialCluster(t *testing.T) {
	members := []*etcdserverpb.Member{
		{ID: 0x10, Name: "pi1", PeerURLs: []string{"https://10.0.0.1:2380"}},
		{ID: 0x20, PeerURLs: []string{"https://10.0.0.3:2380"}},
		{ID: 0x30, PeerURLs: []string{"https://10.0.0.2:2380"}, IsLearner: true},
	}
	got := InitialCluster(members, 0x30, "pi2")
	want := "pi1=https://10.0.0.1:2380,pi2=https://10.0.0.2:2380,unstarted-20=https://10.0.0.3:2380"
	if got != want {
		t.Errorf("got %s\nwant %s", got, want)
	}
}

// certs makes the etcd CAs and one member's certificates in dir.
func certs(t *testing.T, dir, name string) (client, peer TLS, clientCert TLS) {
	t.Helper()
	now := time.Now()
	sca, err := pki.LoadOrCreateCA(filepath.Join(dir, "server-ca.crt"), filepath.Join(dir, "server-ca.key"), ServerCAName, now)
	if err != nil {
		t.Fatal(err)
	}
	pca, err := pki.LoadOrCreateCA(filepath.Join(dir, "peer-ca.crt"), filepath.Join(dir, "peer-ca.key"), PeerCAName, now)
	if err != nil {
		t.Fatal(err)
	}
	f := func(n string) string { return filepath.Join(dir, n) }
	if _, err := sca.EnsureLeaf(f(name+"-server.crt"), f(name+"-server.key"), ServerLeaf(name), now); err != nil {
		t.Fatal(err)
	}
	if _, err := sca.EnsureLeaf(f("client.crt"), f("client.key"), ClientLeaf(), now); err != nil {
		t.Fatal(err)
	}
	if _, err := pca.EnsureLeaf(f(name+"-peer.crt"), f(name+"-peer.key"), PeerLeaf(name, "", net.ParseIP("127.0.0.1")), now); err != nil {
		t.Fatal(err)
	}
	return TLS{f(name + "-server.crt"), f(name + "-server.key"), f("server-ca.crt")},
		TLS{f(name + "-peer.crt"), f(name + "-peer.key"), f("peer-ca.crt")},
		TLS{f("client.crt"), f("client.key"), f("server-ca.crt")}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func start(t *testing.T, ctx context.Context, m *Member) {
	t.Helper()
	if err := m.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Stop(context.Background()); err != nil {
			t.Error(err)
		}
	})
}

// TestJoinAsLearnerThenPromoted: a cluster of one on loopback ports, a
// second member joins through Join (AddLearner on the first), stays a
// learner (its Ready waits) until PromoteLearners on the first promotes it;
// both then serve the same data over TLS with the client certificate.
func TestJoinAsLearnerThenPromoted(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two etcd members")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	log := logging.Discard()
	c1, p1, cc := certs(t, dir, "m1")
	c2, p2, _ := certs(t, dir, "m2")
	lo := net.ParseIP("127.0.0.1")
	m1 := New(Config{Dir: filepath.Join(dir, "m1", "etcd"), Name: "m1", NodeIP: lo, ClientPort: freePort(t), PeerPort: freePort(t), Client: c1, Peer: p1}, log)
	start(t, ctx, m1)
	if err := m1.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(m1.cfg.Dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("data dir mode: %v %v", st, err)
	}
	if !HasData(m1.cfg.Dir) {
		t.Fatal("HasData false after a start")
	}
	if _, err := m1.Client().Put(ctx, "/registry/before", "1"); err != nil {
		t.Fatal(err)
	}

	joined := make(chan string, 1)
	m2 := New(Config{Dir: filepath.Join(dir, "m2", "etcd"), Name: "m2", NodeIP: lo, ClientPort: freePort(t), PeerPort: freePort(t), Client: c2, Peer: p2,
		Join: func(ctx context.Context, name, peerURL string) (string, error) {
			cluster, err := AddLearner(ctx, m1.Client(), name, peerURL)
			joined <- cluster
			return cluster, err
		}}, log)
	start(t, ctx, m2)
	cluster := <-joined
	if !strings.Contains(cluster, "m1=https://127.0.0.1:") || !strings.Contains(cluster, "m2="+m2.cfg.PeerURL()) {
		t.Fatalf("initial cluster %s", cluster)
	}
	list, err := m1.Client().MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Members) != 2 {
		t.Fatalf("%d members", len(list.Members))
	}
	ready := make(chan error, 1)
	go func() { ready <- m2.Ready(ctx) }()
	select {
	case err := <-ready:
		t.Fatalf("the learner was ready before its promotion (%v)", err)
	case <-time.After(time.Second):
	}
	// The leader's loop: retry until the learner caught up.
	var promoted []string
	for len(promoted) == 0 {
		if promoted, err = PromoteLearners(ctx, m1.Client(), log); err != nil {
			t.Fatal(err)
		}
		if ctx.Err() != nil {
			t.Fatal("never promoted")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !slices.Equal(promoted, []string{"m2"}) {
		t.Errorf("promoted %v", promoted)
	}
	if err := <-ready; err != nil {
		t.Fatal(err)
	}
	list, err = m1.Client().MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range list.Members {
		if m.IsLearner || m.Name == "" {
			t.Errorf("member %+v not a started voter", m)
		}
	}
	// The client URL over TLS with the client certificate, as the
	// apiserver connects: the write made before the join is there.
	tlsCfg, err := transport.TLSInfo{CertFile: cc.CertFile, KeyFile: cc.KeyFile, TrustedCAFile: cc.CAFile}.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{m2.cfg.ClientURL()}, TLS: tlsCfg, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(ctx, "/registry/before")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("read through the joined member: %v %v", resp, err)
	}
	// Without a client certificate the client URL refuses.
	noCert, _ := transport.TLSInfo{TrustedCAFile: cc.CAFile}.ClientConfig()
	anon, err := clientv3.New(clientv3.Config{Endpoints: []string{m1.cfg.ClientURL()}, TLS: noCert, DialTimeout: 2 * time.Second})
	if err == nil {
		sctx, scancel := context.WithTimeout(ctx, 3*time.Second)
		if _, err := anon.Get(sctx, "/registry/before"); err == nil {
			t.Error("a client without certificate read from etcd")
		}
		scancel()
		anon.Close()
	}

	// Removing m2 stops its server: its component reports it.
	// etcd refuses a reconfiguration until every voter was connected
	// for a few seconds: the controller retries, so does the test.
	for {
		ok, err := RemoveMember(ctx, m1.Client(), "m2")
		if err == nil && ok {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("remove: %v %v", ok, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	select {
	case err := <-m2.Exited():
		if err == nil {
			t.Error("nil exit error")
		}
	case <-time.After(30 * time.Second):
		t.Error("the removed member did not stop")
	}
}
