package datastore

import (
	"strings"
	"testing"
)

func TestRedacted(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://bramble:s3cret@10.0.0.1:5432/kine?sslmode=disable": "postgres://bramble:xxxxx@10.0.0.1:5432/kine?sslmode=disable",
		"mysql://root:s3cret@tcp(10.0.0.1:3306)/kine":                  "mysql://root:xxxxx@tcp(10.0.0.1:3306)/kine",
		"postgres://bramble@10.0.0.1/kine":                             "postgres://bramble@10.0.0.1/kine",
		"postgres://u:p@ss@host/db":                                    "postgres://u:xxxxx@host/db",
		"sqlite:///var/lib/db/state.db?_journal=WAL":                   "sqlite:///var/lib/db/state.db?_journal=WAL",
		"https://etcd:2379":                                            "https://etcd:2379",
		"user:s3cret@host":                                             "(not an endpoint URL)",
	} {
		if got := Redacted(in); got != want {
			t.Errorf("Redacted(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCheckEndpoint(t *testing.T) {
	for _, ok := range []string{"", "postgres://u:p@h/db", "mysql://u:p@tcp(h:3306)/db", "sqlite:///tmp/x.db", "https://etcd:2379"} {
		if err := CheckEndpoint(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"postgress://u:s3cret@h/db", "u:s3cret@h/db", "postgres://"} {
		err := CheckEndpoint(bad)
		if err == nil {
			t.Errorf("%q accepted", bad)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%q: the error holds the password: %v", bad, err)
		}
	}
	if !Shared("postgres://h/db") || Shared("") || Shared("sqlite:///x") {
		t.Error("Shared")
	}
}
