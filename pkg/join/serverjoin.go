package join

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/bramble-pi/bramble/pkg/bootstrap"
	"github.com/bramble-pi/bramble/pkg/token"
)

// serveBootstrap gives a joining server the cluster's shared state
// (pkg/bootstrap), sealed with the server token's secret. Only the server
// token is accepted: agent and bootstrap tokens join nodes, not servers.
func (s *Server) serveBootstrap(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return
	}
	_, secret, ok := r.BasicAuth()
	if !ok || secret == "" || s.serverToken.Secret == "" || !s.serverToken.SecretMatches(secret) {
		s.refuse(w, r, http.StatusUnauthorized, fmt.Sprintf("%v: only the server token joins servers", token.ErrRejected))
		return
	}
	if s.bootstrap == nil {
		s.refuse(w, r, http.StatusForbidden, "this server keeps its datastore in SQLite in its own data dir, which no other server can share: servers join a cluster started with --datastore-endpoint")
		return
	}
	st, err := s.bootstrap()
	if err != nil {
		s.log.Error("bootstrap state for a joining server", "err", err)
		http.Error(w, "the server could not read its bootstrap state", http.StatusInternalServerError)
		return
	}
	msg, err := bootstrap.Seal(st, secret, token.CAHash(s.caBundle))
	if err != nil {
		s.log.Error("sealing the bootstrap state", "err", err)
		http.Error(w, "the server could not seal its bootstrap state", http.StatusInternalServerError)
		return
	}
	s.log.Info("bootstrap state sent to a joining server", "from", r.RemoteAddr)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(msg)
}

// FetchBootstrap gets the cluster's shared state from a running server for
// a server that joins: the server's CA must match the full token's hash
// (checked before the token is sent), the state is sealed with the token's
// secret and must hold that same CA. Refusals (a wrong token, another
// cluster, a server that cannot share its datastore) are ErrRefused;
// an unreachable server is retried until ctx ends. Nothing is written.
func FetchBootstrap(ctx context.Context, server, tokenText string, log *slog.Logger) (bootstrap.State, error) {
	tok, err := ServerToken(tokenText)
	if err != nil {
		return nil, err
	}
	var st bootstrap.State
	err = retry(ctx, server, log, func() error {
		st, err = fetchBootstrap(ctx, server, tok, log)
		return err
	})
	return st, err
}

// ServerToken parses the token of a joining server: the full server token
// (K10<CA hash>::server:<secret>); the CA hash is required.
func ServerToken(text string) (token.Token, error) {
	if text == "" {
		return token.Token{}, fmt.Errorf("%w: --token (BRAMBLE_TOKEN) is required to join a server: the server token, from <data-dir>/server/token of a running server", ErrRefused)
	}
	tok, err := token.Parse(text)
	if err != nil {
		return token.Token{}, fmt.Errorf("%w: --token: %w", ErrRefused, err)
	}
	switch {
	case tok.CAHash == "":
		return token.Token{}, fmt.Errorf("%w: --token: a server joins only with the full server token K10<CA hash>::server:<secret> (from <data-dir>/server/token of a running server): its CA hash verifies the cluster", ErrRefused)
	case tok.Bootstrap || tok.User != token.ServerUser:
		return token.Token{}, fmt.Errorf("%w: --token: only the server token (K10...::server:...) joins servers; %q tokens join agents", ErrRefused, tok.User)
	}
	return tok, nil
}

func fetchBootstrap(ctx context.Context, server string, tok token.Token, log *slog.Logger) (bootstrap.State, error) {
	client, err := pinnedClient(ctx, server, tok, log)
	if err != nil {
		return nil, err
	}
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, server+BootstrapPath, bytes.NewReader(nil))
	if err != nil {
		return nil, err
	}
	r.SetBasicAuth(tok.User, tok.Secret)
	body, code, err := sendPinned(client, r, server)
	if err != nil {
		return nil, err
	}
	switch code {
	case http.StatusOK:
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound:
		return nil, fmt.Errorf("%w by %s: %s", ErrRefused, server, strings.TrimSpace(string(body)))
	default:
		return nil, fmt.Errorf("server join %s: HTTP %d: %s", server, code, strings.TrimSpace(string(body)))
	}
	st, err := bootstrap.Open(body, tok.Secret, tok.CAHash)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrRefused, server, err)
	}
	if err := st.Check(tok.CAHash); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrRefused, server, err)
	}
	return st, nil
}
