package deploy

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/types"

	"github.com/bramble-pi/bramble/pkg/pki"
)

// AnnotationTie proves that bramble applied an object for an add-on: an
// HMAC-SHA256, keyed by the server's tie key, over the add-on's name and the
// object's group, kind, namespace, name and UID. The controller deletes an
// object (a file removed, or an object dropped from it) only when its label
// names the add-on and this annotation verifies: Addon.status, which anyone
// allowed to edit Addons can change, only names the candidates. With the
// UID in it, a tie copied onto another object, even one re-created under
// the same name, does not verify.
const AnnotationTie = "bramble.io/addon-tie"

// annotationTieKey on an Addon names the key (keyID) its objects were tied
// with; an Addon without it, or with another key's, is applied again at
// start so that its objects get the current tie.
const annotationTieKey = "bramble.io/tie-key"

const tieKeySize = 32

// EnsureTieKey reads the tie key at path, creating it (mode 0600, random)
// at the first start.
func EnsureTieKey(path string) ([]byte, error) {
	key, err := os.ReadFile(path)
	switch {
	case err == nil:
		if len(key) != tieKeySize {
			return nil, fmt.Errorf("add-on tie key %s: %d bytes, want %d (delete it to make a new one; add-on objects tied with the old key are then left in place when their file is removed)", path, len(key), tieKeySize)
		}
		return key, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("read add-on tie key: %w", err)
	}
	key = make([]byte, tieKeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate add-on tie key: %w", err)
	}
	if err := pki.WriteFile(path, key, 0o600); err != nil {
		return nil, fmt.Errorf("add-on tie key: %w", err)
	}
	return key, nil
}

// tier computes and checks ties with one key.
type tier struct{ key []byte }

// object identifies an object for a tie: group is the API group (empty for
// the core group), namespace is empty for a cluster-scoped object.
type object struct {
	group, kind, namespace, name string
	uid                          types.UID
}

// tie is the AnnotationTie value of an object of the add-on.
func (t tier) tie(addon string, o object) string {
	m := hmac.New(sha256.New, t.key)
	// NUL cannot occur in any of these names: the fields cannot run together.
	m.Write([]byte(strings.Join([]string{"bramble-addon-tie-v1", addon, o.group, o.kind, o.namespace, o.name, string(o.uid)}, "\x00")))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// verify reports whether the labels and annotations of the object tie it to
// the add-on.
func (t tier) verify(addon string, o object, labels, annotations map[string]string) bool {
	if labels[LabelAddon] != addon || o.uid == "" {
		return false
	}
	got, err := base64.RawURLEncoding.DecodeString(annotations[AnnotationTie])
	if err != nil {
		return false
	}
	want, _ := base64.RawURLEncoding.DecodeString(t.tie(addon, o))
	return hmac.Equal(got, want)
}

// keyID names the key without revealing it.
func (t tier) keyID() string {
	m := hmac.New(sha256.New, t.key)
	m.Write([]byte("bramble-addon-tie-key-id"))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))[:16]
}
