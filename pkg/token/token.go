// Package token reads, writes and checks bramble join tokens.
//
// The full form is K10<sha256 of the CA bundle, hex>::<user>:<secret>. The CA
// hash lets a joining node check the server it talks to before it sends any
// secret. A bare secret is accepted too (no CA check possible).
package token

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/bramble-pi/bramble/pkg/pki"
)

const (
	prefix = "K10"
	// ServerUser is the user part of the server token.
	ServerUser = "server"
	// AgentUser is the user part of the agent token, which joins agents only.
	AgentUser = "node"
)

// bootstrapRE is a Kubernetes bootstrap token, <id>.<secret>.
var bootstrapRE = regexp.MustCompile(`^([a-z0-9]{6})\.([a-z0-9]{16})$`)

// Token is a parsed join token.
type Token struct {
	CAHash string // hex sha256 of the CA bundle; empty for a bare secret
	User   string // server, node, or a bootstrap token's ID
	Secret string
	// Bootstrap marks a bootstrap token (user = its ID): it expires.
	Bootstrap bool
}

// String renders the token in full form (or the bare secret if it has no CA hash).
func (t Token) String() string {
	creds := t.User + ":" + t.Secret
	if t.Bootstrap {
		creds = t.User + "." + t.Secret
	}
	switch {
	case t.CAHash != "":
		return prefix + t.CAHash + "::" + creds
	case t.Bootstrap:
		return creds
	default:
		return t.Secret
	}
}

// Redacted is safe to log.
func (t Token) Redacted() string {
	if t.CAHash == "" {
		return "<secret>"
	}
	return prefix + t.CAHash[:12] + "...::" + t.User + ":<secret>"
}

// Parse reads a full or bare token. Errors never echo the secret.
func Parse(s string) (Token, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Token{}, errors.New("token is empty")
	}
	if !strings.HasPrefix(s, prefix) || !strings.Contains(s, "::") {
		if m := bootstrapRE.FindStringSubmatch(s); m != nil {
			return Token{User: m[1], Secret: m[2], Bootstrap: true}, nil
		}
		if strings.ContainsAny(s, " \t\n:") {
			return Token{}, errors.New("token is malformed: a bare secret must not contain spaces or ':'")
		}
		return Token{Secret: s}, nil
	}
	hash, creds, _ := strings.Cut(strings.TrimPrefix(s, prefix), "::")
	if len(hash) != sha256.Size*2 {
		return Token{}, fmt.Errorf("token is malformed: CA hash has %d characters, want %d", len(hash), sha256.Size*2)
	}
	if _, err := hex.DecodeString(hash); err != nil {
		return Token{}, errors.New("token is malformed: CA hash is not hexadecimal")
	}
	if m := bootstrapRE.FindStringSubmatch(creds); m != nil {
		return Token{CAHash: strings.ToLower(hash), User: m[1], Secret: m[2], Bootstrap: true}, nil
	}
	user, secret, ok := strings.Cut(creds, ":")
	if !ok || user == "" || secret == "" {
		return Token{}, errors.New("token is malformed: want K10<ca-hash>::<user>:<secret> or K10<ca-hash>::<id>.<secret>")
	}
	return Token{CAHash: strings.ToLower(hash), User: user, Secret: secret}, nil
}

// CAHash is the hex sha256 of a CA bundle, as carried in tokens.
func CAHash(caBundle []byte) string {
	sum := sha256.Sum256(caBundle)
	return hex.EncodeToString(sum[:])
}

// VerifyCA checks a CA bundle fetched from a server against the token's hash.
func (t Token) VerifyCA(caBundle []byte) error {
	if t.CAHash == "" {
		return nil
	}
	got := CAHash(caBundle)
	if subtle.ConstantTimeCompare([]byte(got), []byte(t.CAHash)) != 1 {
		return fmt.Errorf("CA hash mismatch: the server's CA hashes to %s but the token expects %s; this is not the server the token was made for", got[:12], t.CAHash[:12])
	}
	return nil
}

// SecretMatches compares secrets in constant time.
func (t Token) SecretMatches(secret string) bool {
	return subtle.ConstantTimeCompare([]byte(t.Secret), []byte(secret)) == 1
}

// NewSecret returns a random secret.
func NewSecret() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate token secret: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// EnsureServer loads the server token at path, or creates it. given is the
// --token value (full or bare, may be empty). A given token whose secret differs
// from the stored one is an error: the cluster's token cannot silently change.
func EnsureServer(path string, caBundle []byte, given string) (Token, error) {
	return ensure(path, caBundle, given, ServerUser, "--token")
}

// EnsureAgent is EnsureServer for the optional agent token (--agent-token):
// it is stored when given and read back when not; with neither, it returns
// a zero Token and no error.
func EnsureAgent(path string, caBundle []byte, given string) (Token, error) {
	if given == "" {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return Token{}, nil
		}
	} else if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		// A new --agent-token replaces the old one.
		return Token{}, fmt.Errorf("replace agent token: %w", err)
	}
	return ensure(path, caBundle, given, AgentUser, "--agent-token")
}

func ensure(path string, caBundle []byte, given, user, flag string) (Token, error) {
	hash := CAHash(caBundle)
	var want Token
	if given != "" {
		t, err := Parse(given)
		if err != nil {
			return Token{}, fmt.Errorf("%s: %w", flag, err)
		}
		if t.CAHash != "" && t.CAHash != hash {
			return Token{}, fmt.Errorf("%s: its CA hash does not match this server's CA", flag)
		}
		want = Token{CAHash: hash, User: user, Secret: t.Secret}
	}
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		stored, err := Parse(string(data))
		if err != nil {
			return Token{}, fmt.Errorf("stored token %s: %w", path, err)
		}
		if want.Secret != "" && !want.SecretMatches(stored.Secret) {
			return Token{}, fmt.Errorf("%s differs from the token this server was set up with (%s); remove %s or use the stored one", flag, path, flag)
		}
		stored.CAHash, stored.User = hash, user
		if stored.String() != strings.TrimSpace(string(data)) {
			if err := pki.WriteSecret(path, []byte(stored.String()+"\n")); err != nil {
				return Token{}, err
			}
		}
		return stored, nil
	case errors.Is(err, os.ErrNotExist):
		if want.Secret == "" {
			secret, err := NewSecret()
			if err != nil {
				return Token{}, err
			}
			want = Token{CAHash: hash, User: user, Secret: secret}
		}
		if err := pki.WriteSecret(path, []byte(want.String()+"\n")); err != nil {
			return Token{}, err
		}
		return want, nil
	default:
		return Token{}, fmt.Errorf("read token: %w", err)
	}
}
