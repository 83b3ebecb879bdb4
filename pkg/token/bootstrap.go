package token

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Bootstrap tokens are stored the way Kubernetes stores them: a Secret
// bootstrap-token-<id> of type bootstrap.kubernetes.io/token in kube-system.
const (
	bootstrapNamespace  = "kube-system"
	bootstrapPrefix     = "bootstrap-token-"
	bootstrapSecretType = corev1.SecretType("bootstrap.kubernetes.io/token")
	// BootstrapGroup is the group joining nodes are recorded under.
	BootstrapGroup = "system:bootstrappers:bramble:default-node-token"
)

// ErrRejected marks a token the server does not accept.
var ErrRejected = errors.New("token was rejected")

// BootstrapInfo describes a stored bootstrap token (never its secret).
type BootstrapInfo struct {
	ID          string
	Description string
	Expires     time.Time // zero: never
}

// CreateBootstrap stores a new bootstrap token valid for ttl (0: forever).
func CreateBootstrap(ctx context.Context, cs kubernetes.Interface, caBundle []byte, ttl time.Duration, description string, now time.Time) (Token, error) {
	id, err := randomString(6)
	if err != nil {
		return Token{}, err
	}
	secret, err := randomString(16)
	if err != nil {
		return Token{}, err
	}
	data := map[string]string{
		"token-id":                       id,
		"token-secret":                   secret,
		"usage-bootstrap-authentication": "true",
		"auth-extra-groups":              BootstrapGroup,
	}
	if description != "" {
		data["description"] = description
	}
	if ttl > 0 {
		data["expiration"] = now.Add(ttl).UTC().Format(time.RFC3339)
	}
	obj := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: bootstrapPrefix + id, Namespace: bootstrapNamespace,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "bramble"}},
		Type: bootstrapSecretType,
		Data: map[string][]byte{},
	}
	for k, v := range data {
		obj.Data[k] = []byte(v)
	}
	if _, err := cs.CoreV1().Secrets(bootstrapNamespace).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		return Token{}, fmt.Errorf("store bootstrap token %s: %w", id, err)
	}
	return Token{CAHash: CAHash(caBundle), User: id, Secret: secret, Bootstrap: true}, nil
}

// ListBootstrap returns the stored bootstrap tokens, oldest first.
func ListBootstrap(ctx context.Context, cs kubernetes.Interface) ([]BootstrapInfo, error) {
	list, err := cs.CoreV1().Secrets(bootstrapNamespace).List(ctx, metav1.ListOptions{FieldSelector: "type=" + string(bootstrapSecretType)})
	if err != nil {
		return nil, fmt.Errorf("list bootstrap tokens: %w", err)
	}
	var out []BootstrapInfo
	for _, s := range list.Items {
		info := BootstrapInfo{ID: string(s.Data["token-id"]), Description: string(s.Data["description"])}
		if exp := string(s.Data["expiration"]); exp != "" {
			info.Expires, _ = time.Parse(time.RFC3339, exp)
		}
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b BootstrapInfo) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// DeleteBootstrap removes a bootstrap token by ID (or full/bare token).
func DeleteBootstrap(ctx context.Context, cs kubernetes.Interface, idOrToken string) error {
	id := idOrToken
	if t, err := Parse(idOrToken); err == nil && t.Bootstrap {
		id = t.User
	}
	err := cs.CoreV1().Secrets(bootstrapNamespace).Delete(ctx, bootstrapPrefix+id, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("no bootstrap token with ID %q", id)
	}
	if err != nil {
		return fmt.Errorf("delete bootstrap token %s: %w", id, err)
	}
	return nil
}

// VerifyBootstrap checks a bootstrap token against its stored Secret. The
// error wraps ErrRejected and says why (unknown, wrong secret, expired).
func VerifyBootstrap(ctx context.Context, cs kubernetes.Interface, t Token, now time.Time) error {
	s, err := cs.CoreV1().Secrets(bootstrapNamespace).Get(ctx, bootstrapPrefix+t.User, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("%w: bootstrap token %s does not exist (deleted, or never created on this server)", ErrRejected, t.User)
	}
	if err != nil {
		return fmt.Errorf("look up bootstrap token %s: %w", t.User, err)
	}
	if s.Type != bootstrapSecretType || subtle.ConstantTimeCompare(s.Data["token-secret"], []byte(t.Secret)) != 1 {
		return fmt.Errorf("%w: wrong secret for bootstrap token %s", ErrRejected, t.User)
	}
	if exp := string(s.Data["expiration"]); exp != "" {
		at, err := time.Parse(time.RFC3339, exp)
		if err != nil || !now.Before(at) {
			return fmt.Errorf("%w: bootstrap token %s has expired (at %s); create a new one with `bramble token create`", ErrRejected, t.User, exp)
		}
	}
	return nil
}

const tokenAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

func randomString(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate token: %w", err)
	}
	for i := range b {
		b[i] = tokenAlphabet[int(b[i])%len(tokenAlphabet)]
	}
	return string(b), nil
}
