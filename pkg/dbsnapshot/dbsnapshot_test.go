package dbsnapshot

import (
	"archive/tar"
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bramble-pi/bramble/pkg/datastore"
	"github.com/bramble-pi/bramble/pkg/layout"
)

// newDataDir makes a data dir with a WAL-mode state.db holding a kine
// table, and credential files.
func newDataDir(t *testing.T) (string, *sql.DB) {
	t.Helper()
	dir := t.TempDir()
	d := layout.New(dir)
	for _, f := range []string{d.ServerTLS("server-ca.crt"), d.ServerTLS("server-ca.key"), d.EncryptionConfig(), d.Token()} {
		if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte("content of "+filepath.Base(f)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(d.DB(), 0o700); err != nil {
		t.Fatal(err)
	}
	db, err := datastore.OpenSQLite(filepath.Join(d.DB(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for _, stmt := range []string{"PRAGMA journal_mode = WAL", "CREATE TABLE kine (id INTEGER PRIMARY KEY, name TEXT, value BLOB)"} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatal(err)
		}
	}
	return dir, db
}

func count(t *testing.T, path string) int {
	t.Helper()
	db, err := datastore.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT count(*) FROM kine").Scan(&n); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return n
}

func TestSaveWhileWritingListDeleteRestore(t *testing.T) {
	dataDir, db := newDataDir(t)
	d := layout.New(dataDir)
	state := filepath.Join(d.DB(), "state.db")
	for i := range 200 {
		if _, err := db.Exec("INSERT INTO kine (name, value) VALUES (?, randomblob(2000))", i); err != nil {
			t.Fatal(err)
		}
	}
	// Another connection writes, one row per transaction, during the save.
	var wg sync.WaitGroup
	var written atomic.Int64
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := db.Exec("INSERT INTO kine (name, value) VALUES ('w', randomblob(500))"); err != nil {
				t.Error(err)
				return
			}
			written.Add(1)
		}
	}()
	snapDir := d.DBSnapshots()
	ctx := context.Background()
	now := time.Unix(1764748800, 0)
	s, err := Save(ctx, dataDir, state, snapDir, "on-demand", "pi1", now)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if s.File != "on-demand-pi1-1764748800.db" {
		t.Errorf("file %s", s.File)
	}
	n := count(t, s.Path)
	if n < 200 || n > 200+int(written.Load()) {
		t.Errorf("snapshot has %d rows; want between 200 and %d", n, 200+written.Load())
	}
	for path, mode := range map[string]os.FileMode{snapDir: 0o700 | os.ModeDir, s.Path: 0o600, s.Cred: 0o600} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", path, st.Mode(), mode)
		}
	}
	if names := tarNames(t, s.Cred); strings.Join(names, " ") != "server/cred/encryption-config.yaml server/tls/server-ca.crt server/tls/server-ca.key server/token" {
		t.Errorf("credentials archive holds %v", names)
	}
	if _, err := Save(ctx, dataDir, state+".missing", snapDir, "x", "pi1", now); err == nil || !strings.Contains(err.Error(), "no SQLite datastore at") {
		t.Errorf("missing datastore: %v", err)
	}
	if _, err := Save(ctx, dataDir, state, snapDir, "bad/name", "pi1", now); err == nil {
		t.Error("a name with '/' was accepted")
	}
	s2, err := Save(ctx, dataDir, state, snapDir, "second", "pi1", now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	list, err := List(snapDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].File != s.File || list[1].File != s2.File || list[0].Size == 0 || !list[1].Time.Equal(now.Add(time.Minute)) {
		t.Fatalf("list %+v", list)
	}
	found, err := Find(snapDir, "second-pi1-1764748860")
	if err != nil || found != s2.Path {
		t.Fatalf("find: %s %v", found, err)
	}
	if _, err := Find(snapDir, "nothing"); err == nil {
		t.Error("found a missing snapshot")
	}
	if err := Delete(s2.Path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s2.Cred); !os.IsNotExist(err) {
		t.Errorf("credentials archive left: %v", err)
	}

	// Restore into the same data dir: the current file is moved aside.
	if _, err := db.Exec("DELETE FROM kine"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	r, err := Restore(ctx, dataDir, s.Path, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !r.CredKept || len(r.CredRestored) != 0 {
		t.Errorf("restore in place touched the credentials: %+v", r)
	}
	if len(r.MovedAside) == 0 || r.MovedAside[0] != state+".before-restore-1764752400" {
		t.Fatalf("moved aside: %v", r.MovedAside)
	}
	if got := count(t, r.MovedAside[0]); got != 0 {
		t.Errorf("the file moved aside has %d rows, want 0", got)
	}
	if got := count(t, state); got != n {
		t.Errorf("restored state.db has %d rows, want %d", got, n)
	}
	if st, _ := os.Stat(state); st.Mode() != 0o600 {
		t.Errorf("state.db mode %v", st.Mode())
	}

	// Restore on a fresh machine: the credentials come from the archive.
	fresh := t.TempDir()
	r, err = Restore(ctx, fresh, s.Path, now)
	if err != nil {
		t.Fatal(err)
	}
	if r.CredKept || len(r.CredRestored) != 4 {
		t.Errorf("fresh restore: %+v", r)
	}
	data, err := os.ReadFile(layout.New(fresh).EncryptionConfig())
	if err != nil || string(data) != "content of encryption-config.yaml" {
		t.Errorf("encryption config: %q %v", data, err)
	}
	if got := count(t, filepath.Join(layout.New(fresh).DB(), "state.db")); got != n {
		t.Errorf("fresh state.db has %d rows, want %d", got, n)
	}
}

func tarNames(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, h.Name)
	}
	return names
}

func TestRestoreRefusesNonDatabase(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "x.db")
	if err := os.WriteFile(bad, []byte(strings.Repeat("garbage ", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Restore(context.Background(), dir, bad, time.Now()); err == nil {
		t.Fatal("restored garbage")
	}
	if _, err := os.Stat(filepath.Join(layout.New(dir).DB(), "state.db")); !os.IsNotExist(err) {
		t.Errorf("state.db written: %v", err)
	}
}

func TestPruneKeepsNewestScheduledOnly(t *testing.T) {
	dataDir, db := newDataDir(t)
	state := filepath.Join(layout.New(dataDir).DB(), "state.db")
	if _, err := db.Exec("INSERT INTO kine (name) VALUES ('a')"); err != nil {
		t.Fatal(err)
	}
	snapDir := filepath.Join(t.TempDir(), "snaps")
	base := time.Unix(1764748800, 0)
	for i := range 5 {
		if _, err := Save(context.Background(), dataDir, state, snapDir, ScheduledName, "pi1", base.Add(time.Duration(i)*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Save(context.Background(), dataDir, state, snapDir, "manual", "pi1", base.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	deleted, err := Prune(snapDir, ScheduledName, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(deleted) != 3 || deleted[0] != "scheduled-pi1-1764748800.db" {
		t.Errorf("deleted %v", deleted)
	}
	list, _ := List(snapDir)
	var names []string
	for _, s := range list {
		names = append(names, s.File)
	}
	if strings.Join(names, " ") != "manual-pi1-1764745200.db scheduled-pi1-1764759600.db scheduled-pi1-1764763200.db" {
		t.Errorf("left %v", names)
	}
	entries, _ := os.ReadDir(snapDir)
	if len(entries) != 6 { // three snapshots and their archives
		t.Errorf("%d files left in the snapshot dir", len(entries))
	}
}
