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
	cfg := embed.NewConfig()
	cfg.Dir = filepath.Join(t.TempDir(), "etcd")
	c, p := loopbackURL(t), loopbackURL(t)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{c}, []url.URL{c}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{p}, []url.URL{p}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("etcd not ready")
	}
	cli := v3client.New(e.Server)
	defer cli.Close()
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
	if err := Delete(path); err != nil {
		t.Fatal(err)
	}
	if list, _ := List(dir); len(list) != 0 {
		t.Fatalf("left after delete: %+v", list)
	}
}
