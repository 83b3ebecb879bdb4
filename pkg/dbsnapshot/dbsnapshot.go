// Package dbsnapshot saves, lists, deletes and restores snapshots of the
// server's SQLite datastore (<data-dir>/server/db/state.db).
//
// A snapshot is two files in the snapshot directory: <name>-<node>-<unix
// time>.db, a consistent copy of the database written by SQLite's VACUUM
// INTO while the server runs, and <that>.cred.tar, the server's certificates,
// keys, token and encryption config (Secrets in the database are encrypted
// with that config's key), so that a restore on a fresh machine brings the
// cluster back under the same CAs. Both are 0600 in a 0700 directory.
package dbsnapshot

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/bramble-pi/bramble/pkg/datastore"
	"github.com/bramble-pi/bramble/pkg/layout"
)

// CredSuffix ends the name of a snapshot's credentials archive.
const CredSuffix = ".cred.tar"

// ScheduledName is the name the server's schedule gives its snapshots; only
// those are pruned by the retention.
const ScheduledName = "scheduled"

// Snapshot is one snapshot file.
type Snapshot struct {
	// File is the file's base name, e.g. on-demand-pi1-1764748800.db.
	File string
	Path string
	Size int64
	// Time is when it was taken (from its name; else the file's mtime).
	Time time.Time
	// Cred is the credentials archive's path, "" if there is none.
	Cred string
	// Etcd: a snapshot of embedded etcd (<...>.etcd), else of SQLite.
	Etcd bool
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// CheckName refuses a --name that would make odd or misleading file names.
func CheckName(name string) error {
	if !nameRE.MatchString(name) || len(name) > 64 {
		return fmt.Errorf("snapshot name %q: use letters, digits, '.', '_' and '-', at most 64", name)
	}
	return nil
}

// Save writes a consistent snapshot of the SQLite file db (which may be in
// use by a running server) and of dataDir's credentials into dir.
func Save(ctx context.Context, dataDir, db, dir, name, node string, now time.Time) (Snapshot, error) {
	st, err := os.Stat(db)
	if errors.Is(err, os.ErrNotExist) {
		return Snapshot{}, fmt.Errorf("no SQLite datastore at %s: snapshots cover the default datastore (with --datastore-endpoint, back up that database; with embedded etcd, use bramble etcd-snapshot)", db)
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("datastore: %w", err)
	}
	if st.Size() == 0 {
		return Snapshot{}, fmt.Errorf("datastore %s is empty: nothing to snapshot", db)
	}
	return save(dataDir, dir, name, node, SQLiteSuffix, now, func(tmp string) error {
		// VACUUM INTO needs a missing or empty file: an empty one created
		// 0600 keeps the copy private from its first byte.
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
		f.Close()
		return vacuumInto(ctx, db, tmp)
	})
}

// Suffixes of the two kinds of snapshot.
const (
	SQLiteSuffix = ".db"
	EtcdSuffix   = ".etcd"
)

// save writes <name>-<node>-<unix time><suffix> into dir through write
// (given a temporary file name in dir), then the credentials archive, and
// renames both into place.
func save(dataDir, dir, name, node, suffix string, now time.Time, write func(tmp string) error) (Snapshot, error) {
	if err := CheckName(name); err != nil {
		return Snapshot{}, err
	}
	if node == "" {
		node = "node"
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Snapshot{}, fmt.Errorf("snapshot dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return Snapshot{}, fmt.Errorf("snapshot dir: %w", err)
	}
	file := fmt.Sprintf("%s-%s-%d%s", name, strings.ReplaceAll(node, "/", "_"), now.Unix(), suffix)
	path := filepath.Join(dir, file)
	if _, err := os.Lstat(path); err == nil {
		return Snapshot{}, fmt.Errorf("snapshot %s exists already", path)
	}
	tmp := filepath.Join(dir, "."+file+".tmp")
	_ = os.Remove(tmp)
	if err := write(tmp); err != nil {
		os.Remove(tmp)
		return Snapshot{}, err
	}
	if err := syncFile(tmp); err != nil {
		os.Remove(tmp)
		return Snapshot{}, err
	}
	credTmp := tmp + CredSuffix
	if err := writeCred(dataDir, credTmp); err != nil {
		os.Remove(tmp)
		os.Remove(credTmp)
		return Snapshot{}, err
	}
	if err := os.Rename(credTmp, path+CredSuffix); err != nil {
		os.Remove(tmp)
		os.Remove(credTmp)
		return Snapshot{}, fmt.Errorf("snapshot: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		os.Remove(path + CredSuffix)
		return Snapshot{}, fmt.Errorf("snapshot: %w", err)
	}
	syncDir(dir)
	st, err := os.Stat(path)
	if err != nil {
		return Snapshot{}, fmt.Errorf("snapshot: %w", err)
	}
	return Snapshot{File: file, Path: path, Size: st.Size(), Time: time.Unix(now.Unix(), 0), Cred: path + CredSuffix, Etcd: suffix == EtcdSuffix}, nil
}

// vacuumInto copies db into out in one read transaction: consistent while
// kine writes (WAL readers do not block the writer).
func vacuumInto(ctx context.Context, db, out string) error {
	conn, err := datastore.OpenSQLite(db)
	if err != nil {
		return fmt.Errorf("snapshot of %s: %w", db, err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "VACUUM INTO ?", out); err != nil {
		return fmt.Errorf("snapshot of %s: VACUUM INTO %s: %w", db, out, err)
	}
	return nil
}

// credFiles are the data dir's files (relative paths) a restore on a fresh
// machine needs: the CAs and keys, the component credentials and the
// encryption config, the tokens.
func credFiles(dataDir string) ([]string, error) {
	d := layout.New(dataDir)
	var out []string
	for _, sub := range []string{filepath.Join(d.Server(), "tls"), filepath.Join(d.Server(), "cred")} {
		err := filepath.WalkDir(sub, func(p string, e os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if e.Type().IsRegular() {
				rel, err := filepath.Rel(dataDir, p)
				if err != nil {
					return err
				}
				out = append(out, rel)
			}
			return nil
		})
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("credentials: %w", err)
		}
	}
	for _, f := range []string{d.Token(), d.AgentToken()} {
		if _, err := os.Stat(f); err == nil {
			rel, _ := filepath.Rel(dataDir, f)
			out = append(out, rel)
		}
	}
	sort.Strings(out)
	return out, nil
}

func writeCred(dataDir, out string) error {
	files, err := credFiles(dataDir)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("credentials archive: %w", err)
	}
	tw := tar.NewWriter(f)
	for _, rel := range files {
		data, err := os.ReadFile(filepath.Join(dataDir, rel))
		if err != nil {
			f.Close()
			return fmt.Errorf("credentials archive: %w", err)
		}
		hdr := &tar.Header{Name: filepath.ToSlash(rel), Mode: 0o600, Size: int64(len(data)), Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			f.Close()
			return fmt.Errorf("credentials archive: %w", err)
		}
		if _, err := tw.Write(data); err != nil {
			f.Close()
			return fmt.Errorf("credentials archive: %w", err)
		}
	}
	if err := errors.Join(tw.Close(), f.Sync(), f.Close()); err != nil {
		return fmt.Errorf("credentials archive: %w", err)
	}
	return nil
}

// List returns the snapshots in dir, oldest first (none if dir is missing).
func List(dir string) ([]Snapshot, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot dir: %w", err)
	}
	var out []Snapshot
	for _, e := range entries {
		etcd := strings.HasSuffix(e.Name(), EtcdSuffix)
		if !e.Type().IsRegular() || !(etcd || strings.HasSuffix(e.Name(), SQLiteSuffix)) || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		s := Snapshot{File: e.Name(), Path: filepath.Join(dir, e.Name()), Size: info.Size(), Time: fileTime(e.Name(), info.ModTime()), Etcd: etcd}
		if _, err := os.Stat(s.Path + CredSuffix); err == nil {
			s.Cred = s.Path + CredSuffix
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Time.Equal(out[j].Time) {
			return out[i].Time.Before(out[j].Time)
		}
		return out[i].File < out[j].File
	})
	return out, nil
}

// fileTime is the unix time at the end of a snapshot's name.
func fileTime(file string, fallback time.Time) time.Time {
	base := strings.TrimSuffix(strings.TrimSuffix(file, SQLiteSuffix), EtcdSuffix)
	if i := strings.LastIndexByte(base, '-'); i >= 0 {
		if n, err := strconv.ParseInt(base[i+1:], 10, 64); err == nil && n > 0 {
			return time.Unix(n, 0)
		}
	}
	return fallback
}

// Find resolves a snapshot named on the command line: a path, or a file in
// dir (with or without .db).
func Find(dir, name string) (string, error) {
	if name == "" {
		return "", errors.New("no snapshot named")
	}
	candidates := []string{name}
	if !strings.ContainsRune(name, '/') {
		candidates = []string{filepath.Join(dir, name), filepath.Join(dir, name+SQLiteSuffix), filepath.Join(dir, name+EtcdSuffix)}
	}
	for _, c := range candidates {
		if st, err := os.Stat(c); err == nil && st.Mode().IsRegular() {
			return c, nil
		}
	}
	return "", fmt.Errorf("snapshot %q not found in %s (see `bramble db snapshot ls`)", name, dir)
}

// Delete removes a snapshot and its credentials archive.
func Delete(path string) error {
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("delete snapshot: %w", err)
	}
	if err := os.Remove(path + CredSuffix); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete snapshot: %w", err)
	}
	return nil
}

// Prune deletes the oldest snapshots named prefix-* in dir beyond the newest
// keep, and returns the files it deleted.
func Prune(dir, prefix string, keep int) ([]string, error) {
	all, err := List(dir)
	if err != nil {
		return nil, err
	}
	var own []Snapshot
	for _, s := range all {
		if strings.HasPrefix(s.File, prefix+"-") {
			own = append(own, s)
		}
	}
	var deleted []string
	for i := 0; i < len(own)-max(keep, 1); i++ {
		if err := Delete(own[i].Path); err != nil {
			return deleted, err
		}
		deleted = append(deleted, own[i].File)
	}
	return deleted, nil
}

// Restored is what Restore did.
type Restored struct {
	// MovedAside are the former database files, renamed.
	MovedAside []string
	// CredRestored are the credential files written from the archive (a
	// fresh data dir); empty when the data dir had its own.
	CredRestored []string
	// CredKept is true when the data dir already had credentials (kept).
	CredKept bool
}

// Restore puts the snapshot at path in place of dataDir's state.db (the
// server must be stopped): the current state.db, -wal and -shm are renamed
// to *.before-restore-<unix time>. When the data dir holds no cluster CA (a
// fresh machine) the credentials come from the snapshot's archive.
func Restore(ctx context.Context, dataDir, path string, now time.Time) (Restored, error) {
	if err := checkSnapshot(ctx, path); err != nil {
		return Restored{}, err
	}
	d := layout.New(dataDir)
	r, err := restoreCred(dataDir, path)
	if err != nil {
		return r, err
	}
	db := filepath.Join(d.DB(), "state.db")
	tmp := db + ".restoring"
	if err := copyFile(path, tmp); err != nil {
		return r, err
	}
	suffix := fmt.Sprintf(".before-restore-%d", now.Unix())
	for _, f := range []string{db, db + "-wal", db + "-shm"} {
		if _, err := os.Lstat(f); err != nil {
			continue
		}
		if err := os.Rename(f, f+suffix); err != nil {
			os.Remove(tmp)
			return r, fmt.Errorf("restore: move %s aside: %w", f, err)
		}
		r.MovedAside = append(r.MovedAside, f+suffix)
	}
	if err := os.Rename(tmp, db); err != nil {
		return r, fmt.Errorf("restore: %w", err)
	}
	syncDir(d.DB())
	return r, nil
}

// restoreCred takes the credentials from the snapshot's archive when the
// data dir has no cluster CA (a fresh machine), and makes the db dir.
func restoreCred(dataDir, path string) (Restored, error) {
	var r Restored
	d := layout.New(dataDir)
	if err := os.MkdirAll(d.DB(), 0o700); err != nil {
		return r, fmt.Errorf("restore: %w", err)
	}
	_, caErr := os.Stat(d.ServerTLS("server-ca.crt"))
	cred := path + CredSuffix
	if caErr == nil {
		r.CredKept = true
	} else if _, err := os.Stat(cred); err == nil {
		files, err := extractCred(cred, dataDir)
		r.CredRestored = files
		if err != nil {
			return r, err
		}
	}
	return r, nil
}

// checkSnapshot refuses a file that is not a sound SQLite database.
func checkSnapshot(ctx context.Context, path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if st.Size() == 0 {
		return fmt.Errorf("snapshot %s is empty", path)
	}
	conn, err := datastore.OpenSQLite("file:" + path + "?mode=ro")
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", path, err)
	}
	defer conn.Close()
	var res string
	if err := conn.QueryRowContext(ctx, "PRAGMA quick_check(1)").Scan(&res); err != nil {
		return fmt.Errorf("snapshot %s is not a sound SQLite database: %w", path, err)
	}
	if res != "ok" {
		return fmt.Errorf("snapshot %s is damaged: %s", path, res)
	}
	var tables int
	if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='kine'").Scan(&tables); err != nil || tables == 0 {
		return fmt.Errorf("snapshot %s holds no kine table: not a bramble datastore", path)
	}
	return nil
}

// extractCred writes the archive's files under dataDir (0600, directories
// 0700), refusing names that leave it.
func extractCred(archive, dataDir string) ([]string, error) {
	f, err := os.Open(archive)
	if err != nil {
		return nil, fmt.Errorf("credentials archive: %w", err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var written []string
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return written, nil
		}
		if err != nil {
			return written, fmt.Errorf("credentials archive %s: %w", archive, err)
		}
		name := filepath.Clean(filepath.FromSlash(hdr.Name))
		if hdr.Typeflag != tar.TypeReg || filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, ".."+string(filepath.Separator)) ||
			!strings.HasPrefix(name, "server"+string(filepath.Separator)) {
			return written, fmt.Errorf("credentials archive %s: unexpected entry %q", archive, hdr.Name)
		}
		out := filepath.Join(dataDir, name)
		if err := os.MkdirAll(filepath.Dir(out), 0o700); err != nil {
			return written, fmt.Errorf("credentials: %w", err)
		}
		w, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return written, fmt.Errorf("credentials: %w", err)
		}
		_, err = io.Copy(w, io.LimitReader(tr, 16<<20))
		if err = errors.Join(err, w.Sync(), w.Close()); err != nil {
			return written, fmt.Errorf("credentials: %s: %w", out, err)
		}
		written = append(written, out)
	}
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	_, err = io.Copy(out, in)
	if err = errors.Join(err, out.Sync(), out.Close()); err != nil {
		os.Remove(to)
		return fmt.Errorf("restore: copy %s to %s: %w", from, to, err)
	}
	return nil
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if err := errors.Join(f.Sync(), f.Close()); err != nil {
		return fmt.Errorf("snapshot: sync %s: %w", path, err)
	}
	return nil
}

func syncDir(dir string) {
	if f, err := os.Open(dir); err == nil {
		_ = f.Sync()
		f.Close()
	}
}
