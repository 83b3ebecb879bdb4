package datastore

import (
	"context"
	"database/sql"
	"math"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

// kine (v0.17.5) answers a create whose INSERT failed (SQLITE_FULL on a
// full disk, an I/O error) as a success when the key did not exist: its
// LogStructured.Create drops the Append error and returns the current
// revision. The apiserver then acknowledges an object that was never
// stored (tests/reliability's full disk: 500 of 500 creates acknowledged,
// none in the database). checkCreates asks the database, by primary key,
// whether the row kine reports exists for the key, and turns a create that
// was not stored into an error the client sees.

// createKey is the key of a txn kine treats as a create (compare
// mod_revision == 0, one put, no failure branch), "" for any other.
func createKey(txn *etcdserverpb.TxnRequest) string {
	if len(txn.Compare) == 1 && txn.Compare[0].Target == etcdserverpb.Compare_MOD &&
		txn.Compare[0].Result == etcdserverpb.Compare_EQUAL && txn.Compare[0].GetModRevision() == 0 &&
		len(txn.Failure) == 0 && len(txn.Success) == 1 && txn.Success[0].GetRequestPut() != nil {
		return string(txn.Success[0].GetRequestPut().Key)
	}
	return ""
}

// stored says whether kine's row at revision rev is key (kine's revision is
// the row's id).
type stored func(ctx context.Context, rev int64, key string) (bool, error)

func sqliteStored(db *sql.DB) stored {
	return func(ctx context.Context, rev int64, key string) (bool, error) {
		var n int
		err := db.QueryRowContext(ctx, `SELECT count(*) FROM kine WHERE id = ? AND name = ?`, rev, key).Scan(&n)
		return n > 0, err
	}
}

// checkCreates is the gRPC interceptor that confirms every successful
// create.
func checkCreates(isStored stored) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		txn, ok := req.(*etcdserverpb.TxnRequest)
		if err != nil || !ok {
			return resp, err
		}
		key := createKey(txn)
		out, ok := resp.(*etcdserverpb.TxnResponse)
		if key == "" || !ok || !out.Succeeded || out.Header == nil {
			return resp, nil
		}
		found, err := isStored(ctx, out.Header.Revision, key)
		switch {
		case err != nil:
			return nil, status.Errorf(codes.Unavailable, "create of %s not confirmed by the database: %v", key, err)
		case !found:
			return nil, status.Errorf(codes.Unavailable, "create of %s was not stored (the database refused the write: disk full or an I/O error?)", key)
		}
		return resp, nil
	}
}

// grpcServer is kine's gRPC server as kine builds it by default (etcd's
// keepalive, stream and message limits) with checkCreates.
func grpcServer(isStored stored) *grpc.Server {
	return grpc.NewServer(
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 2 * time.Hour, Timeout: 20 * time.Second}),
		grpc.MaxConcurrentStreams(math.MaxUint32),
		// etcd's request limit (1.5 MiB) plus gRPC's overhead.
		grpc.MaxRecvMsgSize(int(1.5*(1<<20))+512*1024),
		grpc.MaxSendMsgSize(math.MaxInt32),
		grpc.UnaryInterceptor(checkCreates(isStored)),
	)
}
