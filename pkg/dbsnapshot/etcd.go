package dbsnapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// SaveEtcd writes a snapshot of embedded etcd (its backend database,
// through the member's Snapshot API: consistent while it serves) and of
// dataDir's credentials into dir: <name>-<node>-<unix time>.etcd and its
// .cred.tar.
func SaveEtcd(ctx context.Context, dataDir string, cli *clientv3.Client, dir, name, node string, now time.Time) (Snapshot, error) {
	return save(dataDir, dir, name, node, EtcdSuffix, now, func(tmp string) error {
		rc, err := cli.Snapshot(ctx)
		if err != nil {
			return fmt.Errorf("etcd snapshot: %w", err)
		}
		defer rc.Close()
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("etcd snapshot: %w", err)
		}
		n, err := io.Copy(f, rc)
		if err = errors.Join(err, f.Close()); err != nil {
			return fmt.Errorf("etcd snapshot: %w", err)
		}
		if n == 0 {
			return errors.New("etcd snapshot: etcd sent nothing")
		}
		return nil
	})
}
