package datastore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestRefused(t *testing.T) {
	for err, want := range map[error]bool{
		fmt.Errorf("connect: %w", &pgconn.PgError{Code: "28P01"}): true,  // password authentication failed
		&pgconn.PgError{Code: "28000"}:                            true,  // no pg_hba.conf entry
		&pgconn.PgError{Code: "3D000"}:                            false, // no such database: kine creates it
		&mysql.MySQLError{Number: 1045}:                           true,
		&mysql.MySQLError{Number: 2003}:                           false,
		errors.New("connection refused"):                          false,
		nil:                                                       false,
	} {
		if got := refused(err); got != want {
			t.Errorf("refused(%v) = %v, want %v", err, got, want)
		}
	}
}

// A database that cannot be reached yet is left to kine's retries.
func TestProbeUnreachableIsNotRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, e := range []string{"postgres://u:s3cret@127.0.0.1:1/kine?sslmode=disable&connect_timeout=2", "mysql://u:s3cret@tcp(127.0.0.1:1)/kine?timeout=2s", "https://etcd:2379", ""} {
		if err := probe(ctx, e); err != nil {
			t.Errorf("%s: %v", Redacted(e), err)
		}
	}
}

// Whether a datastore holds a cluster cannot be told from an unreachable
// one: an error, never "no cluster".
func TestHoldsClusterUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := HoldsCluster(ctx, "postgres://u:s3cret@127.0.0.1:1/kine?sslmode=disable&connect_timeout=2"); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("unreachable: %v", err)
	}
	if held, err := HoldsCluster(ctx, "https://etcd:2379"); held || err != nil {
		t.Errorf("etcd endpoint: %v %v", held, err)
	}
}
