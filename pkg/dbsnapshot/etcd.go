package dbsnapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"

	"github.com/bramble-pi/bramble/pkg/layout"
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

// RestoreEtcd makes dataDir's etcd data dir from the snapshot at path (the
// server must be stopped): a cluster of one member, name at peerURL,
// holding the snapshot's data (etcd's own restore: the snapshot's
// integrity hash is checked). The current etcd data dir is moved aside to
// etcd.before-restore-<unix time>. When the data dir holds no cluster CA
// (a fresh machine) the credentials come from the snapshot's archive. The
// cluster's other servers join it again as new members.
func RestoreEtcd(dataDir, path, name, peerURL string, now time.Time) (Restored, error) {
	if st, err := os.Stat(path); err != nil || st.Size() == 0 {
		return Restored{}, fmt.Errorf("snapshot %s: missing or empty (%v)", path, err)
	}
	r, err := restoreCred(dataDir, path)
	if err != nil {
		return r, err
	}
	dir := layout.New(dataDir).Etcd()
	tmp := dir + ".restoring"
	if err := os.RemoveAll(tmp); err != nil {
		return r, fmt.Errorf("restore: %w", err)
	}
	err = snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath: path, Name: name, OutputDataDir: tmp,
		PeerURLs: []string{peerURL}, InitialCluster: name + "=" + peerURL, InitialClusterToken: "bramble",
	})
	if err != nil {
		os.RemoveAll(tmp)
		return r, fmt.Errorf("restore %s: %w", path, err)
	}
	if err := os.Chmod(tmp, 0o700); err != nil {
		return r, fmt.Errorf("restore: %w", err)
	}
	if _, err := os.Lstat(dir); err == nil {
		aside := fmt.Sprintf("%s.before-restore-%d", dir, now.Unix())
		if err := os.Rename(dir, aside); err != nil {
			return r, fmt.Errorf("restore: move %s aside: %w", dir, err)
		}
		r.MovedAside = append(r.MovedAside, aside)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return r, fmt.Errorf("restore: %w", err)
	}
	syncDir(filepath.Dir(dir))
	return r, nil
}
