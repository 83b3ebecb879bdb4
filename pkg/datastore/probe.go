package datastore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver (kine's too)
)

// refused is the database's answer that retrying cannot change: the user or
// its password is wrong (PostgreSQL's SQLSTATE class 28, MySQL's access
// denied). Kine retries every failure for five minutes; this one stops
// bramble at once.
func refused(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return strings.HasPrefix(pgErr.Code, "28")
	}
	var myErr *mysql.MySQLError
	if errors.As(err, &myErr) {
		return myErr.Number == 1045 || myErr.Number == 1044 || myErr.Number == 1698
	}
	return false
}

// openSQL opens a postgres:// or mysql:// endpoint with database/sql; nil
// for other endpoints.
func openSQL(endpoint string) (*sql.DB, error) {
	driver, dsn := "", ""
	switch {
	case strings.HasPrefix(endpoint, "postgres://"), strings.HasPrefix(endpoint, "postgresql://"):
		driver, dsn = "pgx", endpoint
	case strings.HasPrefix(endpoint, "mysql://"):
		driver, dsn = "mysql", strings.TrimPrefix(endpoint, "mysql://")
	default:
		return nil, nil
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return nil, fmt.Errorf("--datastore-endpoint %s: %w", Redacted(endpoint), err)
	}
	return db, nil
}

// absent: the database or kine's table does not exist (yet): no cluster.
func absent(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "3D000" || pgErr.Code == "42P01" // no such database, no such table
	}
	var myErr *mysql.MySQLError
	if errors.As(err, &myErr) {
		return myErr.Number == 1049 || myErr.Number == 1146
	}
	return false
}

// HoldsCluster reports whether a postgres:// or mysql:// datastore holds a
// cluster's objects already (kine's table has Kubernetes keys), read with
// one query before kine or anything else starts: a new server on it must
// join that cluster (--server) instead of making a second set of
// certificate authorities over the same objects. Other endpoints: false.
func HoldsCluster(ctx context.Context, endpoint string) (bool, error) {
	db, err := openSQL(endpoint)
	if err != nil || db == nil {
		return false, err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var one int
	err = db.QueryRowContext(ctx, "SELECT 1 FROM kine WHERE name LIKE '/registry/%' LIMIT 1").Scan(&one)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, sql.ErrNoRows) || absent(err):
		return false, nil
	case refused(err):
		return false, fmt.Errorf("--datastore-endpoint %s: the database refused the user or password: %w", Redacted(endpoint), err)
	default:
		return false, fmt.Errorf("--datastore-endpoint %s: %w", Redacted(endpoint), err)
	}
}

// probe connects once to a postgres:// or mysql:// endpoint and returns
// the error when the database refuses the credentials; other failures (not
// reachable yet) are left to kine's retries. The error names the endpoint
// without its password.
func probe(ctx context.Context, endpoint string) error {
	db, err := openSQL(endpoint)
	if err != nil || db == nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); refused(err) {
		return fmt.Errorf("--datastore-endpoint %s: the database refused the user or password: %w", Redacted(endpoint), err)
	}
	return nil
}
