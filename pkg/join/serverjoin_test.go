package join

import (
	"context"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/bramble-pi/bramble/pkg/bootstrap"
	"github.com/bramble-pi/bramble/pkg/token"
)

// A server joining over real TLS: the bootstrap state comes only with the
// full server token of the cluster whose CA the server presents.
func TestFetchBootstrap(t *testing.T) {
	apiserver := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	var s *Server
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.Wrap(apiserver).ServeHTTP(w, r) }))
	defer ts.Close()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw})
	hash := token.CAHash(ca)
	serverTok := token.Token{CAHash: hash, User: token.ServerUser, Secret: "server-secret-1234"}
	agentTok := token.Token{CAHash: hash, User: token.AgentUser, Secret: "agent-secret-5678"}
	state := bootstrap.State{}
	for _, f := range bootstrap.Files {
		if f.Required {
			state[f.Name] = []byte("data of " + f.Name)
		}
	}
	state[bootstrap.CAFile] = ca
	served := 0
	newServer := func(share bool) {
		o := ServerOptions{CABundle: ca, ClientCA: testCA(t).CertPEM, Tokens: []token.Token{serverTok, agentTok}, ServerNode: "pi1", Issuer: &fakeIssuer{ca: ca}}
		if share {
			o.Bootstrap = func() (bootstrap.State, error) { served++; return state, nil }
		}
		var err error
		if s, err = NewServer(o, slog.New(slog.DiscardHandler)); err != nil {
			t.Fatal(err)
		}
	}
	newServer(true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log := slog.New(slog.DiscardHandler)

	got, err := FetchBootstrap(ctx, ts.URL, serverTok.String(), log)
	if err != nil {
		t.Fatal(err)
	}
	if string(got["tls/server-ca.key"]) != "data of tls/server-ca.key" || len(got) != len(state) {
		t.Fatalf("got %d files", len(got))
	}

	otherHash := strings.Repeat("ab", 32)
	for _, c := range []struct{ name, token, want string }{
		{"wrong secret", token.Token{CAHash: hash, User: token.ServerUser, Secret: "guessed-secret-00"}.String(), "only the server token joins servers"},
		{"wrong CA hash", token.Token{CAHash: otherHash, User: token.ServerUser, Secret: serverTok.Secret}.String(), "CA hash mismatch"},
		{"agent token", agentTok.String(), "only the server token"},
		{"bare secret", serverTok.Secret, "full server token"},
		{"no token", "", "--token"},
	} {
		before := served
		_, err := FetchBootstrap(ctx, ts.URL, c.token, log)
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want a refusal saying %q", c.name, err, c.want)
		}
		if strings.Contains(err.Error(), serverTok.Secret) {
			t.Errorf("%s: the error holds the secret: %v", c.name, err)
		}
		if served != before {
			t.Errorf("%s: the state was read for a refused request", c.name)
		}
	}

	// A state that is not the token's cluster is refused by the joiner.
	state[bootstrap.CAFile] = []byte("another CA")
	if _, err := FetchBootstrap(ctx, ts.URL, serverTok.String(), log); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("foreign state: %v", err)
	}

	newServer(false)
	if _, err := FetchBootstrap(ctx, ts.URL, serverTok.String(), log); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "SQLite") {
		t.Errorf("SQLite server: %v", err)
	}
}
