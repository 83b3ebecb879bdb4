package dbsnapshot

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bramble-pi/bramble/pkg/etcd/etcdtest"
)

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
	cli := etcdtest.Start(t, filepath.Join(t.TempDir(), "etcd"), "pi1", etcdtest.FreeURL(t))
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
	peer := etcdtest.FreeURL(t)
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
	restored := etcdtest.Start(t, etcdDir, "pi9", peer)
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

func loopback(t *testing.T) string {
	u := etcdtest.FreeURL(t)
	return u.String()
}
