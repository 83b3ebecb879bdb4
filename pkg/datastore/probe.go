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

// probe connects once to a postgres:// or mysql:// endpoint and returns
// the error when the database refuses the credentials; other failures (not
// reachable yet) are left to kine's retries. The error names the endpoint
// without its password.
func probe(ctx context.Context, endpoint string) error {
	driver, dsn := "", ""
	switch {
	case strings.HasPrefix(endpoint, "postgres://"), strings.HasPrefix(endpoint, "postgresql://"):
		driver, dsn = "pgx", endpoint
	case strings.HasPrefix(endpoint, "mysql://"):
		driver, dsn = "mysql", strings.TrimPrefix(endpoint, "mysql://")
	default:
		return nil
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return fmt.Errorf("--datastore-endpoint %s: %w", Redacted(endpoint), err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); refused(err) {
		return fmt.Errorf("--datastore-endpoint %s: the database refused the user or password: %w", Redacted(endpoint), err)
	}
	return nil
}
