// Package bootstrap is the state every server of one cluster shares: the
// certificate authorities with their keys, the service-account key, the
// Secrets encryption config, the add-on tie key and the join tokens. A
// server that joins (bramble server --server ... --token K10...) gets it from
// a running server sealed with a key derived from the server token, checks
// it against the token's CA hash and installs it into its data dir in one
// step, before anything else is written there.
package bootstrap

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/bramble-pi/bramble/pkg/atomicfile"
)

// File is one file of the shared state, by its path under <data-dir>/server.
type File struct {
	Name     string
	Required bool
}

// Files are the shared files. Leaf certificates are not shared: each server
// issues its own (its names and addresses) from the shared CAs.
var Files = []File{
	{"tls/server-ca.crt", true}, {"tls/server-ca.key", true},
	{"tls/client-ca.crt", true}, {"tls/client-ca.key", true},
	{"tls/kubelet-serving-ca.crt", true}, {"tls/kubelet-serving-ca.key", true},
	{"tls/request-header-ca.crt", true}, {"tls/request-header-ca.key", true},
	{"tls/aggregated-api-ca.crt", true}, {"tls/aggregated-api-ca.key", true},
	{"tls/service.key", true},
	// Embedded etcd's CAs (not in clusters made before they were).
	{"tls/etcd/server-ca.crt", false}, {"tls/etcd/server-ca.key", false},
	{"tls/etcd/peer-ca.crt", false}, {"tls/etcd/peer-ca.key", false},
	{"cred/encryption-config.yaml", false},
	{"cred/addon-tie.key", false},
	{"token", true},
	{"agent-token", false},
}

// CAFile is the server CA, whose hash the join token carries.
const CAFile = "tls/server-ca.crt"

// State is the shared files' contents by name (Files).
type State map[string][]byte

// Collect reads the shared files of a server (root: <data-dir>/server).
func Collect(root string) (State, error) {
	st := State{}
	for _, f := range Files {
		data, err := os.ReadFile(filepath.Join(root, f.Name))
		switch {
		case err == nil:
			st[f.Name] = data
		case errors.Is(err, fs.ErrNotExist) && !f.Required:
		default:
			return nil, fmt.Errorf("bootstrap state: %w", err)
		}
	}
	return st, nil
}

// Check refuses a state that is not the cluster the token names (its server
// CA does not hash to caHash), misses a required file or holds a file that
// is not one of Files.
func (st State) Check(caHash string) error {
	for name := range st {
		if !slices.ContainsFunc(Files, func(f File) bool { return f.Name == name }) {
			return fmt.Errorf("bootstrap state: unexpected file %q", name)
		}
	}
	for _, f := range Files {
		if f.Required && len(st[f.Name]) == 0 {
			return fmt.Errorf("bootstrap state: %s is missing", f.Name)
		}
	}
	sum := sha256.Sum256(st[CAFile])
	if subtle.ConstantTimeCompare([]byte(hex.EncodeToString(sum[:])), []byte(strings.ToLower(caHash))) != 1 {
		return errors.New("bootstrap state: its server CA does not match the token's CA hash")
	}
	return nil
}

// Installed reports whether a server's data dir (root: <data-dir>/server)
// already has the cluster's CA: it was set up before, by a first start or a
// join.
func Installed(root string) bool {
	_, err := os.Stat(filepath.Join(root, CAFile))
	return err == nil
}

// Install writes st into root (<data-dir>/server), files 0600 and
// directories 0700. When root does not exist yet (a fresh data dir) the
// files are written to a sibling directory first and renamed into place, so
// a failure leaves no half-written server directory. It refuses a root that
// already holds a CA.
func Install(root string, st State) error {
	if Installed(root) {
		return fmt.Errorf("%s already holds a cluster's certificates: remove it to join another cluster", root)
	}
	target := root
	_, err := os.Stat(root)
	fresh := errors.Is(err, fs.ErrNotExist)
	if fresh {
		if err := os.MkdirAll(filepath.Dir(root), 0o700); err != nil {
			return fmt.Errorf("bootstrap state: %w", err)
		}
		target, err = os.MkdirTemp(filepath.Dir(root), ".server-join-")
		if err != nil {
			return fmt.Errorf("bootstrap state: %w", err)
		}
		defer os.RemoveAll(target) // gone once renamed
	}
	// The CA last: its presence marks a complete install (Installed).
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range st {
			if !yield(n) {
				return
			}
		}
	})
	names = append(slices.DeleteFunc(names, func(n string) bool { return n == CAFile }), CAFile)
	for _, name := range names {
		path := filepath.Join(target, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return fmt.Errorf("bootstrap state: %w", err)
		}
		if err := atomicfile.Write(path, st[name], 0o600); err != nil {
			return fmt.Errorf("bootstrap state: %w", err)
		}
	}
	if fresh {
		if err := os.Chmod(target, 0o700); err != nil {
			return fmt.Errorf("bootstrap state: %w", err)
		}
		if err := os.Rename(target, root); err != nil {
			return fmt.Errorf("bootstrap state: %w", err)
		}
	}
	return nil
}

// Sealing: AES-256-GCM under a key derived from the server token's secret
// with PBKDF2-SHA256 and a random salt per message; the additional data
// binds the message to the cluster's CA hash. A user may pick a weak
// --token, hence a slow key derivation rather than a plain HKDF.
const (
	version    = 1
	iterations = 600_000 // OWASP's figure for PBKDF2-SHA256
	saltSize   = 16
	keySize    = 32
)

// sealed is the message on the wire.
type sealed struct {
	Version    int    `json:"version"`
	Iterations int    `json:"iterations"`
	Salt       []byte `json:"salt"`
	Nonce      []byte `json:"nonce"`
	Ciphertext []byte `json:"ciphertext"`
}

// ErrWrongSecret: the message does not open with this secret (or was
// changed, or belongs to another cluster).
var ErrWrongSecret = errors.New("the bootstrap state does not decrypt with this token (a wrong token, or another cluster)")

func aead(secret string, salt []byte, iter int) (cipher.AEAD, error) {
	key, err := pbkdf2.Key(sha256.New, secret, salt, iter, keySize)
	if err != nil {
		return nil, fmt.Errorf("bootstrap key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func additionalData(caHash string) []byte {
	return []byte(fmt.Sprintf("bramble-bootstrap-v%d:%s", version, strings.ToLower(caHash)))
}

// Seal encrypts st with the token secret, bound to the cluster's CA hash.
func Seal(st State, secret, caHash string) ([]byte, error) {
	if secret == "" {
		return nil, errors.New("bootstrap: empty token secret")
	}
	plain, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	m := sealed{Version: version, Iterations: iterations, Salt: make([]byte, saltSize)}
	if _, err := rand.Read(m.Salt); err != nil {
		return nil, err
	}
	g, err := aead(secret, m.Salt, m.Iterations)
	if err != nil {
		return nil, err
	}
	m.Nonce = make([]byte, g.NonceSize())
	if _, err := rand.Read(m.Nonce); err != nil {
		return nil, err
	}
	m.Ciphertext = g.Seal(nil, m.Nonce, plain, additionalData(caHash))
	return json.Marshal(m)
}

// Open decrypts a sealed state with the token secret; a wrong secret or
// CA hash is ErrWrongSecret. It does not Check the state.
func Open(data []byte, secret, caHash string) (State, error) {
	var m sealed
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("bootstrap state: not a sealed message: %w", err)
	}
	if m.Version != version {
		return nil, fmt.Errorf("bootstrap state: version %d, this bramble reads %d: use the same bramble version on every server", m.Version, version)
	}
	// A server can ask for more work, not for less than this bramble's.
	if m.Iterations < iterations || m.Iterations > 100*iterations || len(m.Salt) != saltSize {
		return nil, fmt.Errorf("bootstrap state: unexpected key derivation (%d iterations, %d-byte salt)", m.Iterations, len(m.Salt))
	}
	g, err := aead(secret, m.Salt, m.Iterations)
	if err != nil {
		return nil, err
	}
	if len(m.Nonce) != g.NonceSize() {
		return nil, errors.New("bootstrap state: bad nonce")
	}
	plain, err := g.Open(nil, m.Nonce, m.Ciphertext, additionalData(caHash))
	if err != nil {
		return nil, ErrWrongSecret
	}
	var st State
	if err := json.Unmarshal(plain, &st); err != nil {
		return nil, fmt.Errorf("bootstrap state: %w", err)
	}
	return st, nil
}
