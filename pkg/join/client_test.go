package join

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/bramble-pi/bramble/pkg/token"
)

// A token whose CA hash does not match the server's CA must be refused before
// anything secret is sent: the server sees /cacerts and nothing else.
func TestCAMismatchSendsNoSecret(t *testing.T) {
	var secretSeen, nodeCalls atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, _, ok := r.BasicAuth(); ok || r.Header.Get(PasswordHeader) != "" {
			secretSeen.Add(1)
		}
		if r.URL.Path == CACertsPath {
			_, _ = io.WriteString(w, "-----BEGIN CERTIFICATE-----\nnot the token's CA\n-----END CERTIFICATE-----\n")
			return
		}
		nodeCalls.Add(1)
	}))
	defer srv.Close()
	tok := token.Token{CAHash: token.CAHash([]byte("another CA")), User: token.ServerUser, Secret: "s3cret"}
	_, _, err := Ensure(context.Background(), Request{Server: srv.URL, Token: tok.String(), NodeName: "pi2", NodeIP: net.ParseIP("10.0.0.2"), Dir: t.TempDir()}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "CA hash mismatch") {
		t.Fatalf("want a CA hash mismatch refusal, got %v", err)
	}
	if secretSeen.Load() != 0 || nodeCalls.Load() != 0 {
		t.Fatalf("secret sent %d times, node endpoint called %d times", secretSeen.Load(), nodeCalls.Load())
	}
}

func TestValidateServerURL(t *testing.T) {
	for _, bad := range []string{"http://pi1:6443", "pi1:6443", "https://"} {
		if _, err := ValidateServerURL(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if got, err := ValidateServerURL("https://pi1:6443/"); err != nil || got != "https://pi1:6443" {
		t.Fatalf("got %q, %v", got, err)
	}
}
