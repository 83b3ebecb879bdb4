package join

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bramble-pi/bramble/pkg/nodecreds"
	"github.com/bramble-pi/bramble/pkg/pki"
	"github.com/bramble-pi/bramble/pkg/token"
)

// ErrRefused marks a refusal that retrying cannot fix: a wrong token, a CA
// that does not match the token, a node name taken by another machine.
var ErrRefused = errors.New("join refused")

// Request is what a node needs to join.
type Request struct {
	Server   string // https://<host>:6443
	Token    string // full or bare; may be empty when stored credentials suffice
	NodeName string
	NodeIP   net.IP
	Dir      string // <data-dir>/agent: credentials, node password, join state
}

// state is what a joined node remembers, so that a restart needs no token.
type state struct {
	Server string        `json:"server"`
	Config ClusterConfig `json:"config"`
	Node   string        `json:"node"`
}

func statePath(dir string) string { return filepath.Join(dir, "join.json") }

// Ensure returns the cluster settings and the node's credentials: the stored
// ones when the node has joined this server under this name before and its
// certificates are current, else fetched from the server (retrying while the
// server is unreachable, until ctx ends).
func Ensure(ctx context.Context, req Request, log *slog.Logger) (ClusterConfig, nodecreds.Files, error) {
	creds := nodecreds.In(req.Dir)
	var st state
	if data, err := os.ReadFile(statePath(req.Dir)); err == nil && json.Unmarshal(data, &st) == nil &&
		st.Server == req.Server && st.Node == req.NodeName && creds.Valid(time.Now()) == nil {
		log.Info("using stored node credentials", "server", req.Server, "node", req.NodeName)
		return st.Config, creds, nil
	}
	if req.Token == "" {
		return ClusterConfig{}, creds, fmt.Errorf("%w: --token (BRAMBLE_TOKEN) is required to join %s", ErrRefused, req.Server)
	}
	tok, err := token.Parse(req.Token)
	if err != nil {
		return ClusterConfig{}, creds, fmt.Errorf("%w: --token: %w", ErrRefused, err)
	}
	password, err := nodePassword(req.Dir)
	if err != nil {
		return ClusterConfig{}, creds, err
	}
	var resp NodeResponse
	for attempt := 0; ; attempt++ {
		resp, err = join(ctx, req, tok, password, log)
		if err == nil {
			break
		}
		if errors.Is(err, ErrRefused) {
			return ClusterConfig{}, creds, err
		}
		if attempt%6 == 0 {
			log.Warn("waiting for the server", "server", req.Server, "err", err)
		}
		select {
		case <-ctx.Done():
			return ClusterConfig{}, creds, fmt.Errorf("join %s: %w (last error: %w)", req.Server, ctx.Err(), err)
		case <-time.After(2 * time.Second):
		}
	}
	if err := creds.Write(resp.Certs); err != nil {
		return ClusterConfig{}, creds, err
	}
	if err := creds.WriteKubeconfigs(req.Server); err != nil {
		return ClusterConfig{}, creds, err
	}
	data, err := json.MarshalIndent(state{Server: req.Server, Config: resp.Config, Node: req.NodeName}, "", "  ")
	if err != nil {
		return ClusterConfig{}, creds, err
	}
	if err := pki.WriteFile(statePath(req.Dir), data, 0o600); err != nil {
		return ClusterConfig{}, creds, err
	}
	return resp.Config, creds, nil
}

// FetchCA gets the server's CA bundle. The connection is not verified: the
// caller checks the bundle against the token's hash before trusting it.
func FetchCA(ctx context.Context, server string) ([]byte, error) {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}, //nolint:gosec // checked against the token's hash
	}}
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, server+CACertsPath, nil)
	if err != nil {
		return nil, err
	}
	body, code, err := send(client, r)
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("HTTP %d: %s", code, strings.TrimSpace(string(body)))
	}
	if err != nil {
		return nil, fmt.Errorf("fetch CA from %s: %w", server, err)
	}
	if !bytes.Contains(body, []byte("BEGIN CERTIFICATE")) {
		return nil, fmt.Errorf("%w: %s%s did not return a CA certificate: is this a bramble server?", ErrRefused, server, CACertsPath)
	}
	return body, nil
}

func join(ctx context.Context, req Request, tok token.Token, password string, log *slog.Logger) (NodeResponse, error) {
	ca, err := FetchCA(ctx, req.Server)
	if err != nil {
		return NodeResponse{}, err
	}
	if tok.CAHash == "" {
		log.Warn("the token has no CA hash, so the server cannot be verified before the token is sent; use the full K10... token from `bramble token show`")
	} else if err := tok.VerifyCA(ca); err != nil {
		return NodeResponse{}, fmt.Errorf("%w: %s: %w", ErrRefused, req.Server, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return NodeResponse{}, fmt.Errorf("%w: %s sent an unreadable CA", ErrRefused, req.Server)
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}}
	user := tok.User
	if user == "" {
		user = token.AgentUser
	}
	payload, err := json.Marshal(NodeRequest{NodeName: req.NodeName, NodeIP: req.NodeIP.String()})
	if err != nil {
		return NodeResponse{}, err
	}
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, req.Server+NodePath, bytes.NewReader(payload))
	if err != nil {
		return NodeResponse{}, err
	}
	r.Header.Set(PasswordHeader, password)
	r.Header.Set("Content-Type", "application/json")
	r.SetBasicAuth(user, tok.Secret)
	body, code, err := send(client, r)
	if err != nil {
		var uerr x509.UnknownAuthorityError
		var herr x509.HostnameError
		if errors.As(err, &herr) {
			return NodeResponse{}, fmt.Errorf("%w: %s: %w (add the name or address you join with to the server's --tls-san)", ErrRefused, req.Server, err)
		}
		if errors.As(err, &uerr) {
			return NodeResponse{}, fmt.Errorf("%w: %s: %w", ErrRefused, req.Server, err)
		}
		return NodeResponse{}, err
	}
	msg := strings.TrimSpace(string(body))
	switch code {
	case http.StatusOK:
	case http.StatusUnauthorized, http.StatusConflict, http.StatusBadRequest, http.StatusForbidden:
		return NodeResponse{}, fmt.Errorf("%w by %s: %s", ErrRefused, req.Server, msg)
	default:
		return NodeResponse{}, fmt.Errorf("join %s: HTTP %d: %s", req.Server, code, msg)
	}
	var resp NodeResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		return NodeResponse{}, fmt.Errorf("join %s: bad answer: %w", req.Server, err)
	}
	return resp, nil
}

func send(client *http.Client, r *http.Request) ([]byte, int, error) {
	resp, err := client.Do(r)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return data, resp.StatusCode, err
}

// nodePassword reads the node's password, creating it on first use.
func nodePassword(dir string) (string, error) {
	path := filepath.Join(dir, "node-password")
	if data, err := os.ReadFile(path); err == nil {
		if p := strings.TrimSpace(string(data)); p != "" {
			return p, nil
		}
	}
	p, err := token.NewSecret()
	if err != nil {
		return "", err
	}
	if err := pki.WriteSecret(path, []byte(p+"\n")); err != nil {
		return "", fmt.Errorf("store node password: %w", err)
	}
	return p, nil
}

// ValidateServerURL checks --server.
func ValidateServerURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("--server: %q is not a URL like https://<host>:6443", s)
	}
	return strings.TrimRight(s, "/"), nil
}
