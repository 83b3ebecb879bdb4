package datastore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"
)

// The SQLite file's layout, chosen for an SD card: incremental auto-vacuum,
// so the pages kine's compaction frees can be given back to the filesystem
// (see vacuumStep) instead of the file staying at its high-water mark for
// ever. The page size stays SQLite's 4 KiB: 1 KiB pages made the WAL a
// quarter of the size, but the bytes written at idle (write_bytes) moved
// within run-to-run noise (296 KiB/min with 1 KiB pages, 287-362 with 4 KiB
// in three runs: the WAL is checkpointed four times as often), and larger
// objects would spill into more overflow pages.
//
// The mode takes effect only when the first table is created, or through a
// VACUUM: a new file gets it before kine creates its schema; an existing
// file is converted once, at start.
const (
	sqlitePageSize = 4096
	// autoVacuumIncremental is PRAGMA auto_vacuum's value for INCREMENTAL.
	autoVacuumIncremental = 2
)

// layoutTable pins the page size and vacuum mode in a new, empty file: the
// settings are only stored with the first table.
const layoutTable = `CREATE TABLE IF NOT EXISTS bramble_layout (name TEXT PRIMARY KEY, value TEXT)`

// kine creates six indexes on its table; every row it writes (a node lease
// renewal every 15 s at idle) changes a page of each, and each page is 4 KiB
// in the WAL on the SD card. kine_name_index (name) is never used: SQLite
// answers every name lookup kine makes from (name, id) or (name,
// prev_revision), which start with the same column (EXPLAIN QUERY PLAN of
// kine's queries is the same with and without it). bramble keeps kine from
// making it: an index of that name on bramble's own table holds the name, so
// kine's "CREATE INDEX IF NOT EXISTS kine_name_index" does nothing. One page
// fewer per write.
const (
	unusedKineIndex  = "kine_name_index"
	placeholderIndex = `CREATE INDEX IF NOT EXISTS ` + unusedKineIndex + ` ON bramble_layout (value)`
)

// OpenSQLite opens a SQLite file with the driver this build uses (cgo or
// pure Go) and a single connection, for statements outside kine (snapshots).
// The busy timeout rides out kine's transactions.
func OpenSQLite(path string) (*sql.DB, error) { return openSQLite(path) }

// openSQLite opens the file with a single connection for bramble's own
// statements (kine keeps its own pool). The busy timeout rides out kine's
// transactions.
func openSQLite(path string) (*sql.DB, error) {
	db, err := sql.Open(sqliteDriver, path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, withErrno(err))
	}
	db.SetMaxOpenConns(1)
	if _, err := db.Exec("PRAGMA busy_timeout = 10000"); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, withErrno(err))
	}
	return db, nil
}

// withErrno makes a SQLite error that says the disk is full match
// syscall.ENOSPC, so that the caller can tell the user what to free: the
// drivers keep the errno only in their message.
func withErrno(err error) error {
	if err == nil || errors.Is(err, syscall.ENOSPC) {
		return err
	}
	if msg := err.Error(); strings.Contains(msg, "no space left on device") || strings.Contains(msg, "database or disk is full") {
		return diskFullError{err}
	}
	return err
}

// diskFullError is a SQLite error that is also syscall.ENOSPC.
type diskFullError struct{ error }

func (e diskFullError) Unwrap() []error { return []error{e.error, syscall.ENOSPC} }

func pragmaInt(ctx context.Context, db *sql.DB, name string) (int64, error) {
	var v int64
	if err := db.QueryRowContext(ctx, "PRAGMA "+name).Scan(&v); err != nil {
		return 0, fmt.Errorf("PRAGMA %s: %w", name, err)
	}
	return v, nil
}

// prepareSQLite gives the file at path bramble's page size and vacuum mode
// before kine opens it: a new file is set up directly; an existing one with
// another layout is rewritten once by VACUUM (logged: on a large database
// and a slow card this takes a while). A failed conversion, e.g. for lack of
// the free space VACUUM needs, is logged and the file used as it is.
func prepareSQLite(ctx context.Context, path string, log *slog.Logger) error {
	fresh := false
	if st, err := os.Stat(path); errors.Is(err, os.ErrNotExist) || (err == nil && st.Size() == 0) {
		fresh = true
	}
	db, err := openSQLite(path)
	if err != nil {
		if !fresh && (strings.Contains(err.Error(), "not a database") || strings.Contains(err.Error(), "malformed")) {
			return damaged(path, err.Error())
		}
		return err
	}
	defer db.Close()
	if err := os.Chmod(path, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("restrict %s: %w", path, err)
	}
	if fresh {
		for _, stmt := range []string{
			fmt.Sprintf("PRAGMA page_size = %d", sqlitePageSize),
			fmt.Sprintf("PRAGMA auto_vacuum = %d", autoVacuumIncremental),
			layoutTable,
			placeholderIndex,
			"PRAGMA journal_mode = WAL",
		} {
			if _, err := db.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("set up %s: %s: %w", path, stmt, err)
			}
		}
		return nil
	}
	if err := quickCheck(ctx, db, path); err != nil {
		return err
	}
	if err := dropUnusedIndex(ctx, db, log); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	pageSize, err := pragmaInt(ctx, db, "page_size")
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	vacuum, err := pragmaInt(ctx, db, "auto_vacuum")
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if pageSize == sqlitePageSize && vacuum == autoVacuumIncremental {
		return nil
	}
	st, _ := os.Stat(path)
	log.Info("rewriting the database once so that it can shrink after compaction (incremental vacuum)",
		"file", path, "size_mib", st.Size()>>20, "page_size", pageSize)
	began := time.Now()
	// The layout of a WAL database can only change outside WAL mode.
	for _, stmt := range []string{
		"PRAGMA journal_mode = DELETE",
		fmt.Sprintf("PRAGMA page_size = %d", sqlitePageSize),
		fmt.Sprintf("PRAGMA auto_vacuum = %d", autoVacuumIncremental),
		"VACUUM",
		layoutTable,
	} {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			log.Warn("database not rewritten; it keeps its layout", "file", path, "statement", stmt, "err", err)
			break
		}
	}
	if _, err := db.ExecContext(ctx, "PRAGMA journal_mode = WAL"); err != nil {
		return fmt.Errorf("%s back to WAL mode: %w", path, err)
	}
	log.Info("database rewritten", "file", path, "took", time.Since(began).Round(time.Millisecond))
	return nil
}

// dropUnusedIndex replaces kine's unused index in a file kine made before
// bramble kept it from doing so (see unusedKineIndex), in one transaction.
func dropUnusedIndex(ctx context.Context, db *sql.DB, log *slog.Logger) error {
	var table string
	err := db.QueryRowContext(ctx, `SELECT tbl_name FROM sqlite_schema WHERE type = 'index' AND name = ?`, unusedKineIndex).Scan(&table)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return fmt.Errorf("look up index %s: %w", unusedKineIndex, err)
	case table == "bramble_layout":
		return nil
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("drop index %s: %w", unusedKineIndex, err)
	}
	defer tx.Rollback()
	for _, stmt := range []string{"DROP INDEX IF EXISTS " + unusedKineIndex, layoutTable, placeholderIndex} {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("drop index %s: %s: %w", unusedKineIndex, stmt, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("drop index %s: %w", unusedKineIndex, err)
	}
	if table != "" {
		log.Info("dropped an index kine never uses (one page fewer written per change)", "index", unusedKineIndex)
	}
	return nil
}

// ErrDamaged marks a database file bramble will not start on.
var ErrDamaged = errors.New("the database is damaged")

// quickCheck runs SQLite's quick_check (every page and index entry readable,
// no deep cross-checks: a fraction of a second for a small cluster's file),
// so that a truncated or overwritten file stops the start at once with one
// message naming it, instead of kine retrying it for minutes.
func quickCheck(ctx context.Context, db *sql.DB, path string) error {
	rows, err := db.QueryContext(ctx, "PRAGMA quick_check(3)")
	if err != nil {
		return damaged(path, err.Error())
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return damaged(path, err.Error())
		}
		if line != "ok" {
			problems = append(problems, line)
		}
	}
	if err := rows.Err(); err != nil {
		return damaged(path, err.Error())
	}
	if len(problems) > 0 {
		return damaged(path, strings.Join(problems, "; "))
	}
	return nil
}

// damaged is the one error a damaged file stops the start with: the file,
// what SQLite says (shortened), and the way out.
func damaged(path, detail string) error {
	detail = strings.Join(strings.Fields(detail), " ")
	if len(detail) > 200 {
		detail = detail[:200] + "..."
	}
	return fmt.Errorf("%s: %w (%s): restore it from a backup copy of state.db taken while bramble was stopped, "+
		"or move it (and state.db-wal, state.db-shm) away and start with --allow-empty-datastore to run the cluster on an empty datastore",
		path, ErrDamaged, detail)
}

// vacuumStep gives free pages back to the filesystem when more than a
// quarter of the file (and at least 1 MiB) is free: kine's compaction deletes
// old revisions, which leaves free pages behind. A small free list is kept:
// the next writes reuse it without growing the file again. It returns the
// pages freed.
func vacuumStep(ctx context.Context, db *sql.DB) (int64, error) {
	free, err := pragmaInt(ctx, db, "freelist_count")
	if err != nil {
		return 0, err
	}
	pages, err := pragmaInt(ctx, db, "page_count")
	if err != nil {
		return 0, err
	}
	const minFree = (1 << 20) / sqlitePageSize
	if free < minFree || free*4 < pages {
		return 0, nil
	}
	keep := pages / 16
	// The pragma frees one page per result row: read them all (an Exec
	// steps once and frees one page).
	rows, err := db.QueryContext(ctx, fmt.Sprintf("PRAGMA incremental_vacuum(%d)", free-keep))
	if err != nil {
		return 0, fmt.Errorf("incremental vacuum: %w", err)
	}
	for rows.Next() {
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return 0, fmt.Errorf("incremental vacuum: %w", err)
	}
	after, err := pragmaInt(ctx, db, "freelist_count")
	if err != nil {
		return 0, err
	}
	return free - after, nil
}
