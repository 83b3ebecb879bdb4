package datastore

import (
	"context"
	"path/filepath"
	"testing"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func createTxn(key string) *etcdserverpb.TxnRequest {
	return &etcdserverpb.TxnRequest{
		Compare: []*etcdserverpb.Compare{{Key: []byte(key), Target: etcdserverpb.Compare_MOD, Result: etcdserverpb.Compare_EQUAL,
			TargetUnion: &etcdserverpb.Compare_ModRevision{ModRevision: 0}}},
		Success: []*etcdserverpb.RequestOp{{Request: &etcdserverpb.RequestOp_RequestPut{RequestPut: &etcdserverpb.PutRequest{Key: []byte(key), Value: []byte("v")}}}},
	}
}

func updateTxn(key string, based int64) *etcdserverpb.TxnRequest {
	return &etcdserverpb.TxnRequest{
		Compare: []*etcdserverpb.Compare{{Key: []byte(key), Target: etcdserverpb.Compare_MOD, Result: etcdserverpb.Compare_EQUAL,
			TargetUnion: &etcdserverpb.Compare_ModRevision{ModRevision: based}}},
		Success: []*etcdserverpb.RequestOp{{Request: &etcdserverpb.RequestOp_RequestPut{RequestPut: &etcdserverpb.PutRequest{Key: []byte(key), Value: []byte("v")}}}},
		Failure: []*etcdserverpb.RequestOp{{Request: &etcdserverpb.RequestOp_RequestRange{RequestRange: &etcdserverpb.RangeRequest{Key: []byte(key)}}}},
	}
}

// notUpdated is kine's answer to an update it did not make: the key's
// current value, at revision current.
func notUpdated(current int64) grpc.UnaryHandler {
	return func(context.Context, any) (any, error) {
		return &etcdserverpb.TxnResponse{Succeeded: false, Header: &etcdserverpb.ResponseHeader{Revision: 9},
			Responses: []*etcdserverpb.ResponseOp{{Response: &etcdserverpb.ResponseOp_ResponseRange{ResponseRange: &etcdserverpb.RangeResponse{
				Kvs: []*mvccpb.KeyValue{{Key: []byte("/registry/a"), ModRevision: current}}, Count: 1}}}}}, nil
	}
}

// A create kine reports as done but whose row is not in the database (what
// kine answers when the INSERT failed) becomes an error, and so does an
// update kine answers as a conflict with the revision it was based on;
// stored creates, refused creates, conflicts and other requests pass
// unchanged.
func TestCheckCreates(t *testing.T) {
	db, err := openSQLite(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, stmt := range []string{`CREATE TABLE kine (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT)`, `INSERT INTO kine (id, name) VALUES (5, '/registry/a')`} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatal(err)
		}
	}
	check := checkCreates(sqliteStored(db))
	answer := func(succeeded bool, rev int64) grpc.UnaryHandler {
		return func(context.Context, any) (any, error) {
			return &etcdserverpb.TxnResponse{Succeeded: succeeded, Header: &etcdserverpb.ResponseHeader{Revision: rev}}, nil
		}
	}
	info := &grpc.UnaryServerInfo{FullMethod: "/etcdserverpb.KV/Txn"}
	for _, tc := range []struct {
		name    string
		req     any
		handler grpc.UnaryHandler
		fails   bool
	}{
		{"stored create", createTxn("/registry/a"), answer(true, 5), false},
		{"create not stored (kine answered the current revision)", createTxn("/registry/b"), answer(true, 5), true},
		{"create of an existing key", createTxn("/registry/a"), answer(false, 5), false},
		{"update", updateTxn("/registry/a", 5), answer(true, 6), false},
		{"update conflict (the key changed since revision 5)", updateTxn("/registry/a", 5), notUpdated(7), false},
		{"update refused by the database (the key is still at revision 5)", updateTxn("/registry/a", 5), notUpdated(5), true},
		{"other txn", &etcdserverpb.TxnRequest{}, answer(true, 6), false},
		{"range", &etcdserverpb.RangeRequest{Key: []byte("/registry/b")}, func(context.Context, any) (any, error) { return &etcdserverpb.RangeResponse{}, nil }, false},
	} {
		_, err := check(context.Background(), tc.req, info, tc.handler)
		if tc.fails != (err != nil) {
			t.Errorf("%s: err = %v", tc.name, err)
		}
		if err != nil && status.Code(err) != codes.Unavailable {
			t.Errorf("%s: code %s, want Unavailable", tc.name, status.Code(err))
		}
	}
}
