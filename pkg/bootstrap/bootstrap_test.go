package bootstrap

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testState() (State, string) {
	st := State{}
	for _, f := range Files {
		if f.Required {
			st[f.Name] = []byte("content of " + f.Name)
		}
	}
	sum := sha256.Sum256(st[CAFile])
	return st, hex.EncodeToString(sum[:])
}

func TestSealOpen(t *testing.T) {
	st, hash := testState()
	msg, err := Seal(st, "s3cret", hash)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(msg), "content of") {
		t.Fatal("the sealed message holds clear text")
	}
	got, err := Open(msg, "s3cret", hash)
	if err != nil {
		t.Fatal(err)
	}
	if string(got["tls/server-ca.key"]) != "content of tls/server-ca.key" {
		t.Fatalf("opened %q", got["tls/server-ca.key"])
	}
	if _, err := Open(msg, "other", hash); !errors.Is(err, ErrWrongSecret) {
		t.Fatalf("wrong secret: %v", err)
	}
	if _, err := Open(msg, "s3cret", strings.Repeat("0", 64)); !errors.Is(err, ErrWrongSecret) {
		t.Fatalf("wrong CA hash: %v", err)
	}
	if _, err := Seal(st, "", hash); err == nil {
		t.Fatal("empty secret accepted")
	}
	// A server may not lower the key derivation's cost.
	weak := strings.Replace(string(msg), `"iterations":600000`, `"iterations":1`, 1)
	if _, err := Open([]byte(weak), "s3cret", hash); err == nil || !strings.Contains(err.Error(), "key derivation") {
		t.Fatalf("1 iteration: %v", err)
	}
}

func TestCheck(t *testing.T) {
	st, hash := testState()
	if err := st.Check(hash); err != nil {
		t.Fatal(err)
	}
	if err := st.Check(strings.Repeat("a", 64)); err == nil || !strings.Contains(err.Error(), "CA hash") {
		t.Fatalf("other CA: %v", err)
	}
	extra, _ := testState()
	extra["../../etc/passwd"] = []byte("x")
	if err := extra.Check(hash); err == nil || !strings.Contains(err.Error(), "unexpected file") {
		t.Fatalf("unknown file: %v", err)
	}
	missing, _ := testState()
	delete(missing, "tls/service.key")
	if err := missing.Check(hash); err == nil || !strings.Contains(err.Error(), "tls/service.key") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestInstallFreshAndCollect(t *testing.T) {
	st, _ := testState()
	st["agent-token"] = []byte("agent")
	data := t.TempDir()
	root := filepath.Join(data, "server")
	if err := Install(root, st); err != nil {
		t.Fatal(err)
	}
	for name := range st {
		fi, err := os.Stat(filepath.Join(root, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %o", name, fi.Mode().Perm())
		}
	}
	for _, d := range []string{root, filepath.Join(root, "tls"), filepath.Join(root, "cred")} {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %o", d, fi.Mode().Perm())
		}
	}
	entries, _ := os.ReadDir(data)
	if len(entries) != 1 {
		t.Errorf("data dir holds %d entries, want only server/", len(entries))
	}
	back, err := Collect(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != len(st) {
		t.Errorf("collected %d files, installed %d", len(back), len(st))
	}
	if err := Install(root, st); err == nil {
		t.Fatal("installed over an existing CA")
	}
}

func TestCollectMissingRequired(t *testing.T) {
	if _, err := Collect(t.TempDir()); err == nil {
		t.Fatal("collected a state without CA")
	}
}
