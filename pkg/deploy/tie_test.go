package deploy

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEnsureTieKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cred", "addon-tie.key")
	key, err := EnsureTieKey(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 || len(key) != tieKeySize {
		t.Fatalf("key file mode %v, %d bytes", st.Mode().Perm(), len(key))
	}
	again, err := EnsureTieKey(path)
	if err != nil || !bytes.Equal(again, key) {
		t.Fatalf("second start: err %v, same key %v", err, bytes.Equal(again, key))
	}
	if err := os.WriteFile(path, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureTieKey(path); err == nil || !strings.Contains(err.Error(), "5 bytes") {
		t.Fatalf("truncated key: err %v", err)
	}
}

func TestTieVerify(t *testing.T) {
	tr := tier{key: bytes.Repeat([]byte{1}, tieKeySize)}
	other := tier{key: bytes.Repeat([]byte{2}, tieKeySize)}
	web := object{group: "apps", kind: "Deployment", namespace: "kube-system", name: "web", uid: "u-1"}
	labels := map[string]string{LabelAddon: "user"}
	ann := map[string]string{AnnotationTie: tr.tie("user", web)}
	if !tr.verify("user", web, labels, ann) {
		t.Fatal("own tie does not verify")
	}
	with := func(f func(o *object)) object { o := web; f(&o); return o }
	for _, c := range []struct {
		name                string
		addon               string
		obj                 object
		labels, annotations map[string]string
		verifier            tier
	}{
		{"other add-on", "coredns", web, map[string]string{LabelAddon: "coredns"}, ann, tr},
		{"other name", "user", with(func(o *object) { o.name = "coredns" }), labels, ann, tr},
		{"other namespace", "user", with(func(o *object) { o.namespace = "default" }), labels, ann, tr},
		{"other kind", "user", with(func(o *object) { o.kind = "DaemonSet" }), labels, ann, tr},
		{"other group", "user", with(func(o *object) { o.group = "" }), labels, ann, tr},
		{"re-created (other UID)", "user", with(func(o *object) { o.uid = "u-2" }), labels, ann, tr},
		{"no UID", "user", with(func(o *object) { o.uid = "" }), labels, map[string]string{AnnotationTie: tr.tie("user", with(func(o *object) { o.uid = "" }))}, tr},
		{"label missing", "user", web, nil, ann, tr},
		{"annotation missing", "user", web, labels, nil, tr},
		{"annotation garbage", "user", web, labels, map[string]string{AnnotationTie: "%%"}, tr},
		{"other key", "user", web, labels, ann, other},
		// The fields are separated: moving a character between them changes the tie.
		{"fields shifted", "use", with(func(o *object) { o.group = "rapps" }), map[string]string{LabelAddon: "use"}, ann, tr},
	} {
		if c.verifier.verify(c.addon, c.obj, c.labels, c.annotations) {
			t.Errorf("%s: verifies", c.name)
		}
	}
	if tr.keyID() == other.keyID() || strings.Contains(tr.keyID(), string(tr.key)) {
		t.Error("key IDs do not tell keys apart")
	}
}
