package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/bramble-pi/bramble/pkg/datastore"
	"github.com/bramble-pi/bramble/pkg/etcd"
	"github.com/bramble-pi/bramble/pkg/logging"
	"github.com/bramble-pi/bramble/pkg/supervisor"
)

// migrationMarker is in etcd while a conversion from SQLite runs: a
// conversion that stopped half-way is run again at the next start (every
// put overwrites), one that finished is not (state.db is renamed).
const migrationMarker = "/bramble/migration/sqlite"

// registryPrefix holds every Kubernetes object.
const registryPrefix = "/registry/"

// eventTTL is the lease given to migrated keys that had one (Events: the
// apiserver's --event-ttl, one hour).
const eventTTL = time.Hour

// needsMigration says whether this server converts its SQLite datastore
// into embedded etcd at this start: a cluster on SQLite (state.db with
// data) started with --cluster-init.
func needsMigration(cfg Config, p Paths) bool {
	if !cfg.EmbeddedEtcd() || cfg.JoinServer != "" {
		return false
	}
	st, err := os.Stat(sqlitePath(p))
	return err == nil && st.Size() > 0
}

func sqlitePath(p Paths) string {
	return datastore.New(datastore.Config{DBDir: p.DBDir()}, nil).SQLitePath()
}

// migration copies every object from the SQLite datastore into the etcd
// member before the apiserver starts (kine reads the file: the objects'
// latest values; history is not kept), then renames state.db (and its
// WAL) to state.db.migrated-<unix time>, kept as a backup. nil when there
// is nothing to convert.
func (cp *ControlPlane) migration() supervisor.Component {
	if cp.etcd == nil || !needsMigration(cp.cfg, cp.paths) {
		return nil
	}
	return &supervisor.InProcess{ComponentName: "sqlite-to-etcd", SelfBounded: true, Setup: func(ctx context.Context) (func(context.Context) error, error) {
		if err := cp.migrate(ctx, cp.etcd.Client()); err != nil {
			return nil, fmt.Errorf("moving the SQLite datastore into etcd (state.db is kept; start again to retry): %w", err)
		}
		return func(ctx context.Context) error { <-ctx.Done(); return nil }, nil
	}}
}

func (cp *ControlPlane) migrate(ctx context.Context, dst *clientv3.Client) error {
	db := sqlitePath(cp.paths)
	log := cp.log.With("component", "sqlite-to-etcd")
	if etcd.HasData(cp.paths.EtcdDir()) {
		resp, err := dst.Get(ctx, migrationMarker, clientv3.WithCountOnly())
		if err != nil {
			return err
		}
		if resp.Count == 0 {
			objects, err := dst.Get(ctx, registryPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil {
				return err
			}
			if objects.Count > 0 {
				return fmt.Errorf("%s and an etcd datastore with %d objects are both in the data dir: bramble will not mix them; move one away", db, objects.Count)
			}
		}
	}
	begin := time.Now()
	log.Info("moving this cluster's datastore from SQLite into etcd", "file", db)
	sock := filepath.Join(cp.paths.Root(), "kine-migrate.sock")
	src := datastore.New(datastore.Config{DBDir: cp.paths.DBDir(), Socket: sock}, logging.Discard())
	if err := src.Init(ctx); err != nil {
		return err
	}
	if err := src.Start(ctx); err != nil {
		return err
	}
	defer func() {
		stop, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = src.Stop(stop)
		_ = os.Remove(sock)
	}()
	if err := src.Ready(ctx); err != nil {
		return err
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: src.Endpoints(), DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return fmt.Errorf("kine client: %w", err)
	}
	defer cli.Close()
	n, err := copyKeys(ctx, cli, dst)
	if err != nil {
		return err
	}
	if err := src.Stop(ctx); err != nil {
		return err
	}
	suffix := ".migrated-" + strconv.FormatInt(time.Now().Unix(), 10)
	for _, f := range []string{db, db + "-wal", db + "-shm"} {
		if err := os.Rename(f, f+suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if _, err := dst.Delete(ctx, migrationMarker); err != nil {
		return err
	}
	log.Info("datastore moved into etcd", "objects", n, "took", time.Since(begin).Round(time.Millisecond), "sqlite_backup", db+suffix)
	return nil
}

// copyKeys puts every key under registryPrefix of src into dst (in
// transactions of etcd's default maximum of operations), keys that had a
// lease under one new lease of eventTTL. It returns how many it copied.
func copyKeys(ctx context.Context, src, dst *clientv3.Client) (int, error) {
	if _, err := dst.Put(ctx, migrationMarker, "started"); err != nil {
		return 0, err
	}
	resp, err := src.Get(ctx, registryPrefix, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("read the SQLite datastore: %w", err)
	}
	var lease clientv3.LeaseID
	const batch = 100
	var ops []clientv3.Op
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		if _, err := dst.Txn(ctx).Then(ops...).Commit(); err != nil {
			return fmt.Errorf("write to etcd: %w", err)
		}
		ops = ops[:0]
		return nil
	}
	for _, kv := range resp.Kvs {
		var opts []clientv3.OpOption
		if kv.Lease != 0 {
			if lease == 0 {
				l, err := dst.Grant(ctx, int64(eventTTL/time.Second))
				if err != nil {
					return 0, fmt.Errorf("etcd lease: %w", err)
				}
				lease = l.ID
			}
			opts = append(opts, clientv3.WithLease(lease))
		}
		ops = append(ops, clientv3.OpPut(string(kv.Key), string(kv.Value), opts...))
		if len(ops) == batch {
			if err := flush(); err != nil {
				return 0, err
			}
		}
	}
	if err := flush(); err != nil {
		return 0, err
	}
	return len(resp.Kvs), nil
}
