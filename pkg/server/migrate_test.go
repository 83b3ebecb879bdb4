package server

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/bramble-pi/bramble/pkg/datastore"
	"github.com/bramble-pi/bramble/pkg/etcd/etcdtest"
	"github.com/bramble-pi/bramble/pkg/logging"
)

// copyKeys moves every object of a real kine-on-SQLite datastore into a
// real etcd member: values equal, a leased key leased again, nothing
// outside /registry/.
func TestCopyKeysFromSQLite(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	kine := datastore.New(datastore.Config{DBDir: filepath.Join(dir, "db"), Socket: filepath.Join(dir, "kine.sock")}, logging.Discard())
	if err := kine.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := kine.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer kine.Stop(context.Background())
	if err := kine.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	src, err := clientv3.New(clientv3.Config{Endpoints: kine.Endpoints(), DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	want := map[string]string{}
	for i := range 250 {
		k := fmt.Sprintf("/registry/configmaps/ns/cm-%d", i)
		want[k] = fmt.Sprintf("value %d", i)
		if _, err := src.Put(ctx, k, want[k]); err != nil {
			t.Fatal(err)
		}
	}
	lease, err := src.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Put(ctx, "/registry/events/ns/e1", "event", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	want["/registry/events/ns/e1"] = "event"
	// kine's own health key is an object like the others.
	if h, err := src.Get(ctx, "/registry/health"); err == nil && len(h.Kvs) == 1 {
		want["/registry/health"] = string(h.Kvs[0].Value)
	}

	dst := etcdtest.Start(t, filepath.Join(dir, "etcd"), "default", etcdtest.FreeURL(t))
	n, err := copyKeys(ctx, src, dst)
	if err != nil {
		t.Fatal(err)
	}
	if n != len(want) {
		t.Errorf("copied %d keys, want %d", n, len(want))
	}
	resp, err := dst.Get(ctx, registryPrefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != len(want) {
		t.Errorf("etcd holds %d keys, want %d", len(resp.Kvs), len(want))
	}
	for _, kv := range resp.Kvs {
		if want[string(kv.Key)] != string(kv.Value) {
			t.Errorf("%s = %q, want %q", kv.Key, kv.Value, want[string(kv.Key)])
		}
		if leased := kv.Lease != 0; leased != (string(kv.Key) == "/registry/events/ns/e1") {
			t.Errorf("%s: lease %x", kv.Key, kv.Lease)
		}
	}
	// The marker stays until the caller renamed state.db.
	if m, err := dst.Get(ctx, migrationMarker); err != nil || len(m.Kvs) != 1 {
		t.Errorf("marker: %v %v", m, err)
	}
}
