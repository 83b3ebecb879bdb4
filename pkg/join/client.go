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
	"github.com/bramble-pi/bramble/pkg/tlspolicy"
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
	// Version is credsVersion when the node joined.
	Version int `json:"version,omitempty"`
}

// credsVersion changes when the credentials a server issues change in a way
// stored ones cannot follow; a node with older ones joins again (with its
// token). 2: keys generated on the node, kubelet serving certificates from
// the kubelet-serving CA, a flannel identity per node.
const credsVersion = 2

func statePath(dir string) string { return filepath.Join(dir, "join.json") }

// Ensure returns the cluster settings and the node's credentials: the stored
// ones when the node has joined this server under this name before (its node
// password re-checked; certificates due for renewal renewed with the current
// ones), else new ones from a join with the token (retrying while the server
// is unreachable, until ctx ends).
func Ensure(ctx context.Context, req Request, log *slog.Logger) (ClusterConfig, nodecreds.Files, error) {
	creds := nodecreds.In(req.Dir)
	password, err := nodePassword(req.Dir)
	if err != nil {
		return ClusterConfig{}, creds, err
	}
	var st state
	stored := false
	if data, err := os.ReadFile(statePath(req.Dir)); err == nil && json.Unmarshal(data, &st) == nil &&
		st.Server == req.Server && st.Node == req.NodeName {
		stored = true
		if st.Version != credsVersion {
			stored = false
			log.Info("the stored node credentials are from an older bramble: joining again", "server", req.Server)
		}
	}
	switch {
	case stored && creds.Valid(time.Now()) == nil:
		log.Info("using stored node credentials", "server", req.Server, "node", req.NodeName)
		if err := recheckPassword(ctx, req.Server, creds, password, log); err != nil {
			return ClusterConfig{}, creds, err
		}
		return st.Config, creds, nil
	case stored && creds.Usable(time.Now()) == nil:
		// Due for renewal, not expired: renewed with the current ones (this
		// re-checks the node password too), no token needed.
		wctx, cancel := context.WithTimeout(ctx, recheckWait)
		err := retry(wctx, req.Server, log, func() error { return renew(wctx, req, creds) })
		cancel()
		if err == nil {
			log.Info("node certificates renewed", "server", req.Server, "expires", creds.Expiry().Format(time.RFC3339))
			return st.Config, creds, nil
		}
		if errors.As(err, new(nameTaken)) {
			return ClusterConfig{}, creds, err
		}
		log.Warn("could not renew the node certificates with the current ones; joining with the token", "err", err)
	case stored:
		log.Info("the stored node certificates have expired: joining again with the token", "server", req.Server)
	}
	if req.Token == "" {
		return ClusterConfig{}, creds, fmt.Errorf("%w: --token (BRAMBLE_TOKEN) is required to join %s", ErrRefused, req.Server)
	}
	tok, err := token.Parse(req.Token)
	if err != nil {
		return ClusterConfig{}, creds, fmt.Errorf("%w: --token: %w", ErrRefused, err)
	}
	csrs, err := creds.CSRs(req.NodeName)
	if err != nil {
		return ClusterConfig{}, creds, err
	}
	var resp NodeResponse
	err = retry(ctx, req.Server, log, func() error {
		resp, err = join(ctx, req, tok, password, csrs, log)
		return err
	})
	if err != nil {
		return ClusterConfig{}, creds, err
	}
	if err := creds.Write(resp.Certs); err != nil {
		return ClusterConfig{}, creds, err
	}
	if err := creds.WriteKubeconfigs(req.Server); err != nil {
		return ClusterConfig{}, creds, err
	}
	data, err := json.MarshalIndent(state{Server: req.Server, Config: resp.Config, Node: req.NodeName, Version: credsVersion}, "", "  ")
	if err != nil {
		return ClusterConfig{}, creds, err
	}
	if err := pki.WriteFile(statePath(req.Dir), data, 0o600); err != nil {
		return ClusterConfig{}, creds, err
	}
	return resp.Config, creds, nil
}

// retry calls f until it succeeds, is refused (ErrRefused) or ctx ends,
// every 2 s while the server cannot be reached.
func retry(ctx context.Context, server string, log *slog.Logger, f func() error) error {
	for attempt := 0; ; attempt++ {
		err := f()
		if err == nil || errors.Is(err, ErrRefused) {
			return err
		}
		if attempt%6 == 0 {
			log.Warn("waiting for the server", "server", server, "err", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("join %s: %w (last error: %w)", server, ctx.Err(), err)
		case <-time.After(2 * time.Second):
		}
	}
}

// recheckWait is how long a start with stored credentials waits for the
// server to re-check the node password before it goes on without.
const recheckWait = 15 * time.Second

// recheckPassword has the server check (and, when missing, store again) the
// node password, so that a name stays this machine's after `kubectl delete
// node` and a name another machine has since taken is refused. A server that
// cannot be reached within recheckWait does not keep the node from starting
// with its stored credentials (a Pi cluster whose server is rebooting).
func recheckPassword(ctx context.Context, server string, creds nodecreds.Files, password string, log *slog.Logger) error {
	client, err := nodeHTTPClient(creds)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, recheckWait)
	defer cancel()
	err = retry(wctx, server, log, func() error {
		_, err := postAsNode(wctx, client, server+PasswordPath, password, nil)
		return err
	})
	switch {
	case err == nil:
		log.Debug("node password checked", "server", server)
		return nil
	case errors.Is(err, ErrRefused):
		return err
	case ctx.Err() != nil:
		return ctx.Err()
	default:
		log.Warn("could not re-check the node password; starting with the stored credentials", "server", server, "err", err)
		return nil
	}
}

// nodeHTTPClient talks to the server as the node: its kubelet client
// certificate, the server CA it joined with.
func nodeHTTPClient(creds nodecreds.Files) (*http.Client, error) {
	cert, err := tls.LoadX509KeyPair(creds.Cert(nodecreds.KubeletClient), creds.Key(nodecreds.KubeletClient))
	if err != nil {
		return nil, fmt.Errorf("node credentials: %w", err)
	}
	ca, err := os.ReadFile(creds.ServerCA)
	if err != nil {
		return nil, fmt.Errorf("node credentials: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("node credentials: %s holds no certificate", creds.ServerCA)
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: tlspolicy.Apply(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}),
	}}, nil
}

// postAsNode posts body (JSON, or nothing) with the node password; a refusal
// (401, 403, 409) is ErrRefused.
func postAsNode(ctx context.Context, client *http.Client, url, password string, body []byte) ([]byte, error) {
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	r.Header.Set(PasswordHeader, password)
	r.Header.Set("Content-Type", "application/json")
	data, code, err := send(client, r)
	if err != nil {
		return nil, err
	}
	switch code {
	case http.StatusOK:
		return data, nil
	case http.StatusConflict:
		return nil, fmt.Errorf("%w by %s: %w", ErrRefused, url, nameTaken{strings.TrimSpace(string(data))})
	case http.StatusUnauthorized, http.StatusForbidden:
		return nil, fmt.Errorf("%w by %s: %s", ErrRefused, url, strings.TrimSpace(string(data)))
	default:
		return nil, fmt.Errorf("%s: HTTP %d: %s", url, code, strings.TrimSpace(string(data)))
	}
}

// nameTaken is the server's 409 to a node: another machine holds its name.
type nameTaken struct{ msg string }

func (e nameTaken) Error() string { return e.msg }

// KeepCurrent renews the node's certificates through the server, with no
// token, whenever one of them needs renewal (pki.NeedsRenewal: a third of
// its lifetime left), checking every tenth of the shortest lifetime (at most
// hourly), until ctx ends. The kubelet, kube-proxy and flannel read the new
// files by themselves (client-go reloads client certificates; the kubelet
// reloads its serving certificate).
func KeepCurrent(ctx context.Context, req Request, log *slog.Logger) error {
	creds := nodecreds.In(req.Dir)
	for {
		wait := creds.RenewCheckInterval()
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		if creds.Valid(time.Now()) == nil {
			continue
		}
		if err := renew(ctx, req, creds); err != nil {
			if errors.Is(err, ErrRefused) {
				log.Error("the server refused to renew this node's certificates: they will expire; join again with a token", "err", err)
			} else if ctx.Err() == nil {
				log.Warn("renewing node certificates failed; trying again", "server", req.Server, "err", err)
			}
			continue
		}
		log.Info("node certificates renewed", "server", req.Server, "expires", creds.Expiry().Format(time.RFC3339))
	}
}

func renew(ctx context.Context, req Request, creds nodecreds.Files) error {
	password, err := nodePassword(req.Dir)
	if err != nil {
		return err
	}
	client, err := nodeHTTPClient(creds)
	if err != nil {
		return err
	}
	csrs, err := creds.CSRs(req.NodeName)
	if err != nil {
		return err
	}
	payload, err := json.Marshal(NodeRequest{NodeName: req.NodeName, NodeIP: req.NodeIP.String(), CSRs: csrs})
	if err != nil {
		return err
	}
	body, err := postAsNode(ctx, client, req.Server+RenewPath, password, payload)
	if err != nil {
		return err
	}
	var resp NodeResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		return fmt.Errorf("renew at %s: bad answer: %w", req.Server, err)
	}
	return creds.Write(resp.Certs)
}

// FetchCA gets the server's CA bundle. The connection is not verified: the
// caller checks the bundle against the token's hash before trusting it.
func FetchCA(ctx context.Context, server string) ([]byte, error) {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: tlspolicy.Apply(&tls.Config{InsecureSkipVerify: true}), //nolint:gosec // checked against the token's hash
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

// pinnedClient fetches the server's CA, checks it against the token's hash
// and returns a client that trusts only that CA.
func pinnedClient(ctx context.Context, server string, tok token.Token, log *slog.Logger) (*http.Client, error) {
	ca, err := FetchCA(ctx, server)
	if err != nil {
		return nil, err
	}
	if tok.CAHash == "" {
		log.Warn("the token has no CA hash, so the server cannot be verified before the token is sent; use the full K10... token from `bramble token show`")
	} else if err := tok.VerifyCA(ca); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrRefused, server, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("%w: %s sent an unreadable CA", ErrRefused, server)
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: tlspolicy.Apply(&tls.Config{RootCAs: pool}),
	}}, nil
}

// sendPinned sends r with the pinned client, turning a TLS failure
// (the server's certificate does not fit its CA or name) into a refusal.
func sendPinned(client *http.Client, r *http.Request, server string) ([]byte, int, error) {
	body, code, err := send(client, r)
	if err != nil {
		var uerr x509.UnknownAuthorityError
		var herr x509.HostnameError
		if errors.As(err, &herr) {
			return nil, 0, fmt.Errorf("%w: %s: %w (add the name or address you join with to the server's --tls-san)", ErrRefused, server, err)
		}
		if errors.As(err, &uerr) {
			return nil, 0, fmt.Errorf("%w: %s: %w", ErrRefused, server, err)
		}
		return nil, 0, err
	}
	return body, code, nil
}

func join(ctx context.Context, req Request, tok token.Token, password string, csrs map[string][]byte, log *slog.Logger) (NodeResponse, error) {
	client, err := pinnedClient(ctx, req.Server, tok, log)
	if err != nil {
		return NodeResponse{}, err
	}
	user := tok.User
	if user == "" {
		user = token.AgentUser
	}
	payload, err := json.Marshal(NodeRequest{NodeName: req.NodeName, NodeIP: req.NodeIP.String(), CSRs: csrs})
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
	body, code, err := sendPinned(client, r, req.Server)
	if err != nil {
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
