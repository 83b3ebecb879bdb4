package datastore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func layoutOf(t *testing.T, path string) (pageSize, vacuum int64) {
	t.Helper()
	db, err := openSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if pageSize, err = pragmaInt(ctx, db, "page_size"); err != nil {
		t.Fatal(err)
	}
	if vacuum, err = pragmaInt(ctx, db, "auto_vacuum"); err != nil {
		t.Fatal(err)
	}
	return pageSize, vacuum
}

func TestPrepareSQLiteNewFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	if err := prepareSQLite(context.Background(), path, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	if ps, v := layoutOf(t, path); ps != sqlitePageSize || v != autoVacuumIncremental {
		t.Fatalf("page_size %d auto_vacuum %d, want %d and %d", ps, v, sqlitePageSize, autoVacuumIncremental)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
}

// An existing database in SQLite's default layout (no auto-vacuum) is
// rewritten once, its rows kept; then freed pages go back to the filesystem.
func TestPrepareSQLiteConvertsAndVacuums(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := openSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	value := strings.Repeat("x", 3000)
	for _, stmt := range []string{"PRAGMA journal_mode = WAL", "CREATE TABLE kine (id INTEGER PRIMARY KEY, value BLOB)"} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 2000; i++ {
		if _, err := db.Exec("INSERT INTO kine (value) VALUES (?)", fmt.Sprint(i, value)); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	if _, v := layoutOf(t, path); v == autoVacuumIncremental {
		t.Fatal("test database already has incremental vacuum")
	}

	var logged strings.Builder
	if err := prepareSQLite(ctx, path, slog.New(slog.NewTextHandler(&logged, nil))); err != nil {
		t.Fatal(err)
	}
	if ps, v := layoutOf(t, path); ps != sqlitePageSize || v != autoVacuumIncremental {
		t.Fatalf("after conversion: page_size %d auto_vacuum %d", ps, v)
	}
	if !strings.Contains(logged.String(), "database rewritten") {
		t.Errorf("conversion not logged: %s", logged.String())
	}
	db, err = openSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var mode string
	if err := db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode %q, %v; want wal", mode, err)
	}
	var rows int
	if err := db.QueryRow("SELECT count(*) FROM kine").Scan(&rows); err != nil || rows != 2000 {
		t.Fatalf("rows after conversion: %d, %v", rows, err)
	}
	// A second start leaves the file alone.
	logged.Reset()
	if err := prepareSQLite(ctx, path, slog.New(slog.NewTextHandler(&logged, nil))); err != nil || logged.Len() != 0 {
		t.Fatalf("second prepare: %v, logged %q", err, logged.String())
	}

	// Compaction: most rows deleted.
	if _, err := db.Exec("DELETE FROM kine WHERE id > 100"); err != nil {
		t.Fatal(err)
	}
	before, _ := pragmaInt(ctx, db, "page_count")
	freed, err := vacuumStep(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := pragmaInt(ctx, db, "page_count")
	if freed < before/2 || after > before/2 {
		t.Fatalf("vacuum freed %d pages: %d -> %d pages", freed, before, after)
	}
	// Little left to free: nothing done.
	if freed, err := vacuumStep(ctx, db); err != nil || freed != 0 {
		t.Fatalf("second vacuum: freed %d, %v", freed, err)
	}
}

// A damaged file (garbage over its middle, truncated, not a database at all)
// stops the start at once with one error that names the file and the way
// out; an intact one passes.
func TestPrepareSQLiteRefusesDamagedFiles(t *testing.T) {
	ctx := context.Background()
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	build := func(t *testing.T) string {
		path := filepath.Join(t.TempDir(), "state.db")
		if err := prepareSQLite(ctx, path, discard); err != nil {
			t.Fatal(err)
		}
		db, err := openSQLite(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, stmt := range []string{"CREATE TABLE kine (id INTEGER PRIMARY KEY, name TEXT, value BLOB)", "CREATE INDEX kine_name ON kine (name)"} {
			if _, err := db.Exec(stmt); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 2000 {
			if _, err := db.Exec("INSERT INTO kine (name, value) VALUES (?, ?)", fmt.Sprintf("/registry/x/%d", i), strings.Repeat("v", 500)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := db.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
			t.Fatal(err)
		}
		db.Close()
		return path
	}
	intact := build(t)
	if err := prepareSQLite(ctx, intact, discard); err != nil {
		t.Fatalf("intact file: %v", err)
	}
	for name, damage := range map[string]func(path string) error{
		"garbage in the middle": func(path string) error {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt(bytes.Repeat([]byte{0xA5}, 64<<10), 256<<10)
			return err
		},
		"truncated": func(path string) error {
			st, err := os.Stat(path)
			if err != nil {
				return err
			}
			return os.Truncate(path, st.Size()/2)
		},
		"not a database": func(path string) error { return os.WriteFile(path, bytes.Repeat([]byte("garbage!"), 4096), 0o600) },
	} {
		t.Run(name, func(t *testing.T) {
			path := build(t)
			if err := damage(path); err != nil {
				t.Fatal(err)
			}
			err := prepareSQLite(ctx, path, discard)
			if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "--allow-empty-datastore") {
				t.Fatalf("got %v, want ErrDamaged naming %s and the way out", err, path)
			}
			t.Logf("refused: %v", err)
		})
	}
}

// The default SQLite endpoint fsyncs every commit (synchronous=FULL): kine's
// own default, NORMAL, lost acknowledged writes in tests/reliability's power
// cut. A kine upgrade that changes its defaults fails here, not silently.
func TestSQLiteEndpointIsDurable(t *testing.T) {
	ep := New(Config{DBDir: "/d"}, slog.New(slog.DiscardHandler)).endpoint()
	if !strings.Contains(ep, "_synchronous=FULL") || strings.Contains(ep, "NORMAL") || !strings.Contains(ep, "_journal_mode=WAL") {
		t.Fatalf("endpoint %q: want WAL with _synchronous=FULL", ep)
	}
}

func TestWithErrno(t *testing.T) {
	for _, tt := range []struct {
		err  error
		full bool
	}{
		{errors.New("disk I/O error: no space left on device"), true},
		{errors.New("database or disk is full"), true},
		{fmt.Errorf("write: %w", syscall.ENOSPC), true},
		{errors.New("database disk image is malformed"), false},
	} {
		got := withErrno(tt.err)
		if errors.Is(got, syscall.ENOSPC) != tt.full || got.Error() != tt.err.Error() {
			t.Errorf("withErrno(%q) = %q, is ENOSPC %v; want %v with the same message", tt.err, got, errors.Is(got, syscall.ENOSPC), tt.full)
		}
	}
	if withErrno(nil) != nil {
		t.Error("withErrno(nil) != nil")
	}
}

// kineIndexes lists the indexes on kine's table.
func kineIndexes(t *testing.T, path string) []string {
	t.Helper()
	db, err := openSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'kine' ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	return names
}

// kineSchema runs what kine runs at every start (its table and the index
// bramble keeps it from making).
func kineSchema(t *testing.T, path string) {
	t.Helper()
	db, err := openSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, stmt := range []string{
		"CREATE TABLE IF NOT EXISTS kine (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, prev_revision INTEGER, value BLOB)",
		"CREATE INDEX IF NOT EXISTS kine_name_index ON kine (name)",
		"CREATE INDEX IF NOT EXISTS kine_name_id_index ON kine (name,id)",
		"INSERT INTO kine (name, prev_revision, value) VALUES ('/registry/a', 0, 'v')",
	} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
}

// kine's unused name index is never made in a new file, and dropped once
// from a file that has it; kine's statements still run, its rows are kept.
func TestUnusedKineIndex(t *testing.T) {
	ctx := context.Background()
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	fresh := filepath.Join(t.TempDir(), "state.db")
	if err := prepareSQLite(ctx, fresh, discard); err != nil {
		t.Fatal(err)
	}
	kineSchema(t, fresh)
	if got := kineIndexes(t, fresh); !slices.Equal(got, []string{"kine_name_id_index"}) {
		t.Errorf("new file: indexes on kine %v, want only kine_name_id_index", got)
	}

	old := filepath.Join(t.TempDir(), "state.db")
	kineSchema(t, old)
	var logged bytes.Buffer
	for range 2 {
		if err := prepareSQLite(ctx, old, slog.New(slog.NewTextHandler(&logged, nil))); err != nil {
			t.Fatal(err)
		}
		kineSchema(t, old)
	}
	if got := kineIndexes(t, old); !slices.Equal(got, []string{"kine_name_id_index"}) {
		t.Errorf("existing file: indexes on kine %v, want only kine_name_id_index", got)
	}
	if n := strings.Count(logged.String(), "dropped an index"); n != 1 {
		t.Errorf("logged the drop %d times, want once:\n%s", n, logged.String())
	}
	db, err := openSQLite(old)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var rows int
	if err := db.QueryRow("SELECT count(*) FROM kine").Scan(&rows); err != nil || rows != 3 {
		t.Errorf("rows %d (%v), want the 3 kine wrote", rows, err)
	}
}
