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

// Its Update does the same with a failed INSERT: it answers "not updated"
// with the key's current value, which the apiserver takes for a conflict
// and retries, every retry failing again, until the request times out (a
// client waits a minute and learns nothing). A real conflict returns a
// value newer than the one the update was based on; a write the database
// refused returns that very revision. checkCreates turns the latter into an
// error.

// updateOf returns the revision an update txn (compare mod_revision, one
// put, a range as the failure branch) is based on and its key; 0 and "" for
// any other txn.
func updateOf(txn *etcdserverpb.TxnRequest) (int64, string) {
	if len(txn.Compare) == 1 && txn.Compare[0].Target == etcdserverpb.Compare_MOD &&
		txn.Compare[0].Result == etcdserverpb.Compare_EQUAL && txn.Compare[0].GetModRevision() > 0 &&
		len(txn.Success) == 1 && txn.Success[0].GetRequestPut() != nil &&
		len(txn.Failure) == 1 && txn.Failure[0].GetRequestRange() != nil {
		return txn.Compare[0].GetModRevision(), string(txn.Compare[0].Key)
	}
	return 0, ""
}

// updateRefused reports whether a failed update's answer carries the very
// revision the update was based on: nothing changed the key, the database
// refused the write.
func updateRefused(based int64, out *etcdserverpb.TxnResponse) bool {
	if out.Succeeded || len(out.Responses) != 1 {
		return false
	}
	r := out.Responses[0].GetResponseRange()
	return r != nil && len(r.Kvs) == 1 && r.Kvs[0].ModRevision == based
}

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
// create and tells a refused update from a conflict.
func checkCreates(isStored stored) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		txn, ok := req.(*etcdserverpb.TxnRequest)
		if err != nil || !ok {
			return resp, err
		}
		out, ok := resp.(*etcdserverpb.TxnResponse)
		if !ok {
			return resp, nil
		}
		if based, key := updateOf(txn); key != "" && updateRefused(based, out) {
			return nil, status.Errorf(codes.Unavailable, "update of %s was not stored (the database refused the write: disk full or an I/O error?)", key)
		}
		key := createKey(txn)
		if key == "" || !out.Succeeded || out.Header == nil {
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
