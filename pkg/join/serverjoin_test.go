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
// joinTLS is a TLS server in front of the join handlers of *s, the tokens
// of its CA, and newServer, which sets *s to handlers made with options
// changed by mod, and context, logger for the calls.
func joinTLS(t *testing.T, s **Server) (ts *httptest.Server, ca []byte, hash string, serverTok, agentTok token.Token, newServer func(mod func(*ServerOptions)), ctx context.Context, log *slog.Logger) {
	apiserver := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	ts = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*s).Wrap(apiserver).ServeHTTP(w, r) }))
	t.Cleanup(ts.Close)
	ca = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw})
	hash = token.CAHash(ca)
	serverTok = token.Token{CAHash: hash, User: token.ServerUser, Secret: "server-secret-1234"}
	agentTok = token.Token{CAHash: hash, User: token.AgentUser, Secret: "agent-secret-5678"}
	newServer = func(mod func(*ServerOptions)) {
		o := ServerOptions{CABundle: ca, ClientCA: testCA(t).CertPEM, Tokens: []token.Token{serverTok, agentTok}, ServerNode: "pi1", Issuer: &fakeIssuer{ca: ca}}
		mod(&o)
		var err error
		if *s, err = NewServer(o, slog.New(slog.DiscardHandler)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ts, ca, hash, serverTok, agentTok, newServer, ctx, slog.New(slog.DiscardHandler)
}

func TestFetchBootstrap(t *testing.T) {
	var s *Server
	ts, ca, hash, serverTok, agentTok, serve, ctx, log := joinTLS(t, &s)
	state := bootstrap.State{}
	for _, f := range bootstrap.Files {
		if f.Required {
			state[f.Name] = []byte("data of " + f.Name)
		}
	}
	state[bootstrap.CAFile] = ca
	served := 0
	newServer := func(share bool) {
		serve(func(o *ServerOptions) {
			if share {
				o.Bootstrap = func() (bootstrap.State, error) { served++; return state, nil }
				o.Datastore = DatastoreExternal
			}
		})
	}
	newServer(true)

	got, err := FetchBootstrap(ctx, ts.URL, serverTok.String(), DatastoreExternal, log)
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
		_, err := FetchBootstrap(ctx, ts.URL, c.token, DatastoreExternal, log)
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

	// A joiner that means to run etcd is refused by a cluster on an
	// external datastore, before the state is read.
	before := served
	if _, err := FetchBootstrap(ctx, ts.URL, serverTok.String(), DatastoreEtcd, log); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "--datastore-endpoint") {
		t.Errorf("etcd joiner on an external cluster: %v", err)
	}
	if served != before {
		t.Error("the state was read for a joiner of the wrong datastore")
	}

	// A state that is not the token's cluster is refused by the joiner.
	state[bootstrap.CAFile] = []byte("another CA")
	if _, err := FetchBootstrap(ctx, ts.URL, serverTok.String(), DatastoreExternal, log); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("foreign state: %v", err)
	}

	newServer(false)
	if _, err := FetchBootstrap(ctx, ts.URL, serverTok.String(), DatastoreExternal, log); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "SQLite") {
		t.Errorf("SQLite server: %v", err)
	}
}

// The etcd member endpoint: only the server token, only on a cluster on
// embedded etcd; the member is added with what the joiner sent.
func TestAddEtcdMember(t *testing.T) {
	var s *Server
	ts, _, hash, serverTok, agentTok, serve, ctx, log := joinTLS(t, &s)
	var added []string
	newServer := func(etcd bool) {
		serve(func(o *ServerOptions) {
			if etcd {
				o.Datastore = DatastoreEtcd
				o.EtcdMember = func(_ context.Context, name, peerURL string) (string, error) {
					added = append(added, name+"="+peerURL)
					return "pi1=https://10.0.0.1:2380," + name + "=" + peerURL, nil
				}
			}
		})
	}
	newServer(true)
	for _, c := range []struct{ name, token string }{
		{"wrong secret", token.Token{CAHash: hash, User: token.ServerUser, Secret: "guessed-secret-00"}.String()},
		{"wrong CA hash", token.Token{CAHash: strings.Repeat("ab", 32), User: token.ServerUser, Secret: serverTok.Secret}.String()},
		{"agent token", agentTok.String()},
	} {
		if _, err := AddEtcdMember(ctx, ts.URL, c.token, "pi2", "https://10.0.0.2:2380", log); !errors.Is(err, ErrRefused) {
			t.Errorf("%s: %v, want a refusal", c.name, err)
		}
	}
	if len(added) != 0 {
		t.Fatalf("members added for refused requests: %v", added)
	}
	got, err := AddEtcdMember(ctx, ts.URL, serverTok.String(), "pi2", "https://10.0.0.2:2380", log)
	if err != nil || got != "pi1=https://10.0.0.1:2380,pi2=https://10.0.0.2:2380" || len(added) != 1 {
		t.Fatalf("AddEtcdMember = %q, %v (added %v)", got, err, added)
	}
	newServer(false)
	if _, err := AddEtcdMember(ctx, ts.URL, serverTok.String(), "pi2", "https://10.0.0.2:2380", log); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "--datastore-endpoint") {
		t.Errorf("cluster without etcd: %v", err)
	}
}
