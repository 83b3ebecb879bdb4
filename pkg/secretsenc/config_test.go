package secretsenc

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/server/options/encryptionconfig"
	"k8s.io/apiserver/pkg/storage/value"
)

var secrets = schema.GroupResource{Resource: "secrets"}

// transformer is what the apiserver's own loader makes of the file.
func transformer(t *testing.T, path string) (value.Transformer, string) {
	t.Helper()
	ec, err := encryptionconfig.LoadEncryptionConfig(context.Background(), path, true, "test")
	if err != nil {
		t.Fatalf("the apiserver refuses %s: %v", path, err)
	}
	tr, ok := ec.Transformers[secrets]
	if !ok {
		t.Fatal("no transformer for secrets")
	}
	return tr, ec.EncryptionFileContentHash
}

func store(t *testing.T, tr value.Transformer, plain string) []byte {
	t.Helper()
	out, err := tr.TransformToStorage(context.Background(), []byte(plain), value.DefaultContext("/registry/secrets/default/s"))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// read returns the plain text and whether the apiserver would rewrite it.
func read(t *testing.T, tr value.Transformer, stored []byte) (string, bool) {
	t.Helper()
	out, stale, err := tr.TransformFromStorage(context.Background(), stored, value.DefaultContext("/registry/secrets/default/s"))
	if err != nil {
		t.Fatalf("cannot read %q: %v", stored[:min(len(stored), 40)], err)
	}
	return string(out), stale
}

func save(t *testing.T, c *Config, path string) {
	t.Helper()
	if err := c.Save(path); err != nil {
		t.Fatal(err)
	}
}

// The rotation's states, each loaded by the apiserver's own code: new
// writes use the newest key, older values stay readable (and are stale, so
// a rewrite re-encrypts them), and once the old key is dropped only the new
// one is needed.
func TestRotationStates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "encryption-config.yaml")
	c, err := New(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	save(t, c, path)
	if st := c.Status(); !st.Enabled || st.WriteKey != "key-1" || !slices.Equal(st.Keys, []string{"key-1"}) {
		t.Fatalf("new: %+v", st)
	}
	data, _ := os.ReadFile(path)
	tr, hash := transformer(t, path)
	if hash != Hash(data) {
		t.Errorf("Hash = %s, the apiserver's = %s", Hash(data), hash)
	}
	old := store(t, tr, "hunter2")
	if !bytes.HasPrefix(old, []byte(StoredPrefix("key-1"))) || bytes.Contains(old, []byte("hunter2")) {
		t.Fatalf("stored %q", old)
	}
	if StoredKey(old) != "secretbox:key-1" {
		t.Errorf("StoredKey = %q", StoredKey(old))
	}
	// Clear text written before encryption was on stays readable (stale).
	if got, stale := read(t, tr, []byte("plain")); got != "plain" || !stale {
		t.Errorf("clear text: %q stale=%v", got, stale)
	}

	name, err := c.AddKey(rand.Reader)
	if err != nil || name != "key-2" {
		t.Fatalf("AddKey = %q, %v", name, err)
	}
	save(t, c, path)
	if st := c.Status(); st.WriteKey != "key-2" || !slices.Equal(st.Keys, []string{"key-2", "key-1"}) {
		t.Fatalf("after AddKey: %+v", st)
	}
	tr, _ = transformer(t, path)
	if got, stale := read(t, tr, old); got != "hunter2" || !stale {
		t.Errorf("old value under the new key: %q stale=%v", got, stale)
	}
	fresh := store(t, tr, "hunter3")
	if !bytes.HasPrefix(fresh, []byte(StoredPrefix("key-2"))) {
		t.Fatalf("new writes: %q", fresh[:30])
	}
	if _, stale := read(t, tr, fresh); stale {
		t.Error("a value under the write key is stale")
	}

	if err := c.DropReadKeys(); err != nil {
		t.Fatal(err)
	}
	save(t, c, path)
	tr, _ = transformer(t, path)
	if got, _ := read(t, tr, fresh); got != "hunter3" {
		t.Errorf("after the drop: %q", got)
	}
	if _, _, err := tr.TransformFromStorage(context.Background(), old, value.DefaultContext("/registry/secrets/default/s")); err == nil {
		t.Error("a value of the dropped key is still readable")
	}
	// An interrupted rotation (two keys) is finished by the next one.
	c.AddKey(rand.Reader)
	if name, _ := c.AddKey(rand.Reader); name != "key-4" {
		t.Errorf("next key %q, want key-4", name)
	}
	if st := c.Status(); !slices.Equal(st.Keys, []string{"key-4", "key-3", "key-2"}) {
		t.Errorf("keys %q", st.Keys)
	}
}

func TestEnsure(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cred", "encryption-config.yaml")

	// Off on a fresh server: no file, no flag.
	if use, _, err := Ensure(path, false); err != nil || use {
		t.Fatalf("off, no file: use=%v err=%v", use, err)
	}
	if _, err := os.Stat(path); err == nil {
		t.Fatal("off created a file")
	}
	// On: a key, mode 0600; again: the same key.
	use, st, err := Ensure(path, true)
	if err != nil || !use || !st.Enabled || st.WriteKey != "key-1" {
		t.Fatalf("on: use=%v %+v err=%v", use, st, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v", fi.Mode(), err)
	}
	first, _ := os.ReadFile(path)
	if _, _, err := Ensure(path, true); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(first, again) {
		t.Error("a second start changed the file")
	}
	// Off after on: identity first, the key still reads.
	use, st, err = Ensure(path, false)
	if err != nil || !use || st.Enabled || !slices.Equal(st.Keys, []string{"key-1"}) {
		t.Fatalf("off after on: use=%v %+v err=%v", use, st, err)
	}
	tr, _ := transformer(t, path)
	if out := store(t, tr, "x"); string(out) != "x" {
		t.Errorf("off still encrypts: %q", out)
	}
	// On again: the same key writes.
	if _, st, _ = Ensure(path, true); !st.Enabled || st.WriteKey != "key-1" {
		t.Errorf("on again: %+v", st)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(first, after) {
		t.Errorf("off and on again changed the file:\n%s\n%s", first, after)
	}
	// The key never appears in what Status says.
	if strings.Contains(strings.Join(st.Keys, ""), "secret") {
		t.Error("status carries a secret")
	}
}

func TestParseRefusesOtherProviders(t *testing.T) {
	_, err := Parse([]byte("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - identity: {}\n"))
	if err == nil || !strings.Contains(err.Error(), "no secretbox provider") {
		t.Errorf("err = %v", err)
	}
}

func TestStoredKey(t *testing.T) {
	for in, want := range map[string]string{
		"k8s:enc:secretbox:v1:key-7:\x00\x01": "secretbox:key-7",
		"k8s:enc:aescbc:v1:k:abc":             "aescbc:k",
		"k8s\x00\x01plain protobuf":           ClearText,
		"k8s:enc:short":                       ClearText,
	} {
		if got := StoredKey([]byte(in)); got != want {
			t.Errorf("StoredKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestActiveHashLabel(t *testing.T) {
	line := reloadMetric + `{apiserver_id_hash="sha256:aaa",hash="sha256:bbb"} 1`
	if m := configHashLabel.FindStringSubmatch(line); m == nil || m[1] != "sha256:bbb" {
		t.Errorf("match %q", m)
	}
}
