package join

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/bramble-pi/bramble/pkg/bootstrap"
	"github.com/bramble-pi/bramble/pkg/token"
)

// serverTokenPost accepts a POST with the server token as basic auth and
// returns its secret; anything else is answered (refusals counted by the
// rate limiter).
func (s *Server) serverTokenPost(w http.ResponseWriter, r *http.Request) (string, bool) {
	if r.Method != http.MethodPost {
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return "", false
	}
	_, secret, ok := r.BasicAuth()
	if !ok || secret == "" || s.serverToken.Secret == "" || !s.serverToken.SecretMatches(secret) {
		s.refuse(w, r, http.StatusUnauthorized, fmt.Sprintf("%v: only the server token joins servers", token.ErrRejected))
		return "", false
	}
	return secret, true
}

// serveBootstrap gives a joining server the cluster's shared state
// (pkg/bootstrap), sealed with the server token's secret. Only the server
// token is accepted: agent and bootstrap tokens join nodes, not servers.
func (s *Server) serveBootstrap(w http.ResponseWriter, r *http.Request) {
	secret, ok := s.serverTokenPost(w, r)
	if !ok {
		return
	}
	if s.bootstrap == nil {
		s.refuse(w, r, http.StatusForbidden, "this server keeps its datastore in SQLite in its own data dir, which no other server can share: servers join a cluster started with --cluster-init (embedded etcd) or --datastore-endpoint")
		return
	}
	// A joiner that does not say (an older bramble) means an external one.
	if want := cmp.Or(r.Header.Get(DatastoreHeader), DatastoreExternal); want != s.datastore {
		msg := "this cluster keeps its datastore in embedded etcd: join it without --datastore-endpoint (the joining server becomes an etcd member)"
		if s.datastore != DatastoreEtcd {
			msg = "this cluster shares an external datastore: give the --datastore-endpoint the other servers use"
		}
		s.refuse(w, r, http.StatusConflict, msg)
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
//
// datastore is DatastoreEtcd or DatastoreExternal: what this server means
// to share; a cluster that shares the other kind refuses.
func FetchBootstrap(ctx context.Context, server, tokenText, datastore string, log *slog.Logger) (bootstrap.State, error) {
	tok, err := ServerToken(tokenText)
	if err != nil {
		return nil, err
	}
	var st bootstrap.State
	err = retry(ctx, server, log, func() error {
		st, err = fetchBootstrap(ctx, server, tok, datastore, log)
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

func fetchBootstrap(ctx context.Context, server string, tok token.Token, datastore string, log *slog.Logger) (bootstrap.State, error) {
	client, err := pinnedClient(ctx, server, tok, log)
	if err != nil {
		return nil, err
	}
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, server+BootstrapPath, bytes.NewReader(nil))
	if err != nil {
		return nil, err
	}
	r.SetBasicAuth(tok.User, tok.Secret)
	r.Header.Set(DatastoreHeader, datastore)
	body, code, err := sendPinned(client, r, server)
	if err != nil {
		return nil, err
	}
	switch code {
	case http.StatusOK:
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusConflict:
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

// serveEtcdMember adds a joining server's etcd member to the cluster as a
// learner (it has the bootstrap state already, so the same server token).
func (s *Server) serveEtcdMember(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.serverTokenPost(w, r); !ok {
		return
	}
	if s.etcdMember == nil {
		s.refuse(w, r, http.StatusConflict, "this cluster does not run embedded etcd: join it with the --datastore-endpoint the other servers use")
		return
	}
	var req EtcdMemberRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		http.Error(w, "bad etcd member request: "+err.Error(), http.StatusBadRequest)
		return
	}
	cluster, err := s.etcdMember(r.Context(), req.Name, req.PeerURL)
	if err != nil {
		s.log.Error("adding an etcd member", "name", req.Name, "peer", req.PeerURL, "err", err)
		http.Error(w, "adding the etcd member: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	s.log.Info("etcd learner added for a joining server", "name", req.Name, "peer", req.PeerURL, "from", r.RemoteAddr)
	writeJSON(w, EtcdMemberResponse{InitialCluster: cluster})
}

// AddEtcdMember has a running server (server, pinned to the token's CA)
// add this server's etcd member (name, peerURL) as a learner, and returns
// the initial cluster to start it with. A refusal is ErrRefused; an
// unreachable server, or one that could not add the member yet (etcd
// refuses a reconfiguration while a member is down), is retried until
// ctx ends.
func AddEtcdMember(ctx context.Context, server, tokenText, name, peerURL string, log *slog.Logger) (string, error) {
	tok, err := ServerToken(tokenText)
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(EtcdMemberRequest{Name: name, PeerURL: peerURL})
	if err != nil {
		return "", err
	}
	var out EtcdMemberResponse
	err = retry(ctx, server, log, func() error {
		client, err := pinnedClient(ctx, server, tok, log)
		if err != nil {
			return err
		}
		r, err := http.NewRequestWithContext(ctx, http.MethodPost, server+EtcdMemberPath, bytes.NewReader(payload))
		if err != nil {
			return err
		}
		r.SetBasicAuth(tok.User, tok.Secret)
		r.Header.Set("Content-Type", "application/json")
		body, code, err := sendPinned(client, r, server)
		if err != nil {
			return err
		}
		switch code {
		case http.StatusOK:
			if err := json.Unmarshal(body, &out); err != nil || out.InitialCluster == "" {
				return fmt.Errorf("%w: %s: a bad etcd member answer", ErrRefused, server)
			}
			return nil
		case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusConflict, http.StatusBadRequest:
			return fmt.Errorf("%w by %s: %s", ErrRefused, server, strings.TrimSpace(string(body)))
		default:
			return fmt.Errorf("etcd member add at %s: HTTP %d: %s", server, code, strings.TrimSpace(string(body)))
		}
	})
	return out.InitialCluster, err
}
