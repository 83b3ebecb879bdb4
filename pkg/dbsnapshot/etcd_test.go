package dbsnapshot

import (
	"context"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.uber.org/zap"
)

func loopbackURL(t *testing.T) url.URL {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(port)}
}

// A snapshot of a real etcd member: a bbolt file with the data, listed as
// an etcd snapshot next to its credentials archive, found and deleted.
func TestSaveEtcd(t *testing.T) {
	dataDir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dataDir, "server", "tls"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataDir, "server", "tls", "server-ca.crt"), []byte("ca"), 0o600); err != nil {
		t.Fatal(err)
	}
	cli := startEtcd(t, filepath.Join(t.TempDir(), "etcd"), "pi1", loopbackURL(t))
	ctx := context.Background()
	if _, err := cli.Put(ctx, "/registry/x", "y"); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "snapshots")
	s, err := SaveEtcd(ctx, dataDir, cli, dir, "on-demand", "pi1", time.Unix(1764748800, 0))
	if err != nil {
		t.Fatal(err)
	}
	if s.File != "on-demand-pi1-1764748800.etcd" || !s.Etcd || s.Size == 0 {
		t.Fatalf("snapshot %+v", s)
	}
	if st, err := os.Stat(s.Path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("snapshot file: %v %v", st, err)
	}
	list, err := List(dir)
	if err != nil || len(list) != 1 || !list[0].Etcd || list[0].Cred == "" || !list[0].Time.Equal(time.Unix(1764748800, 0)) {
		t.Fatalf("List = %+v, %v", list, err)
	}
	path, err := Find(dir, "on-demand-pi1-1764748800")
	if err != nil || path != s.Path {
		t.Fatalf("Find = %s, %v", path, err)
	}

	// Restored on a fresh machine: the credentials from the archive, a
	// cluster of one with the data.
	fresh := t.TempDir()
	peer := loopbackURL(t)
	r, err := RestoreEtcd(fresh, path, "pi9", peer.String(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(r.CredRestored) != 1 || r.CredKept {
		t.Errorf("restored %+v", r)
	}
	etcdDir := filepath.Join(fresh, "server", "db", "etcd")
	if st, err := os.Stat(etcdDir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("restored etcd dir: %v %v", st, err)
	}
	restored := startEtcd(t, etcdDir, "pi9", peer)
	if resp, err := restored.Get(ctx, "/registry/x"); err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "y" {
		t.Fatalf("restored data: %v %v", resp, err)
	}
	// Over an existing server's etcd: moved aside, its credentials kept.
	if r, err := RestoreEtcd(dataDir, path, "pi1", loopback(t), time.Unix(1764748900, 0)); err != nil || len(r.MovedAside) != 0 || !r.CredKept {
		t.Fatalf("restore on the server: %+v %v", r, err)
	}
	r, err = RestoreEtcd(dataDir, path, "pi1", loopback(t), time.Unix(1764749000, 0))
	if err != nil || len(r.MovedAside) != 1 || r.MovedAside[0] != filepath.Join(dataDir, "server", "db", "etcd.before-restore-1764749000") {
		t.Fatalf("second restore: %+v %v", r, err)
	}

	if err := Delete(path); err != nil {
		t.Fatal(err)
	}
	if list, _ := List(dir); len(list) != 0 {
		t.Fatalf("left after delete: %+v", list)
	}
}

// startEtcd starts a member of a cluster of one on dir (plain HTTP on
// loopback) and returns an in-process client; both stop with the test.
func startEtcd(t *testing.T, dir, name string, peer url.URL) *clientv3.Client {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Dir, cfg.Name = dir, name
	c := loopbackURL(t)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{c}, []url.URL{c}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.InitialClusterToken = "bramble"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("etcd not ready")
	}
	cli := v3client.New(e.Server)
	t.Cleanup(func() { cli.Close() })
	return cli
}

func loopback(t *testing.T) string {
	u := loopbackURL(t)
	return u.String()
}
