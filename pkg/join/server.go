package join

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"github.com/bramble-pi/bramble/pkg/bootstrap"
	"github.com/bramble-pi/bramble/pkg/nodecreds"
	"github.com/bramble-pi/bramble/pkg/ratelimit"
	"github.com/bramble-pi/bramble/pkg/token"
)

// Server answers joining nodes. Its handlers sit in front of the apiserver on
// the same port; they need a Kubernetes client (bootstrap tokens, node
// passwords) and answer 503 until SetClient is called.
type Server struct {
	caBundle   []byte
	clientCAs  *x509.CertPool // verifies nodes' kubelet client certificates
	config     ClusterConfig
	secrets    []token.Token // server token, agent token: secrets that join
	serverNode string        // the server's own node name, never given out
	issuer     Issuer
	log        *slog.Logger
	// serverToken alone fetches the bootstrap state; bootstrap reads it
	// (nil: this server's datastore cannot be shared).
	serverToken token.Token
	bootstrap   func() (bootstrap.State, error)
	datastore   string
	etcdMember  func(ctx context.Context, name, peerURL string) (string, error)
	client      atomic.Pointer[clientHolder]
	mounts      []mount
}

// Issuer signs a joining node's certificates.
type Issuer interface {
	// Reserved says why a node may not hold a name or address (nil when it
	// may): the apiserver's own, loopback, the cluster's networks...
	Reserved(nodeName string, nodeIP net.IP) error
	// SignNode signs the node's certificate requests (by identity name).
	SignNode(nodeName string, nodeIP net.IP, csrs map[string][]byte) (nodecreds.Bundle, error)
}

// ServerOptions are what the join endpoints serve and check.
type ServerOptions struct {
	CABundle   []byte // the server CA, served at /cacerts and hashed into tokens
	ClientCA   []byte // the CA of nodes' client certificates (PasswordPath)
	Cluster    ClusterConfig
	Tokens     []token.Token // static tokens that may join: server and agent token
	ServerNode string        // the server's own node name
	Issuer     Issuer
	// Bootstrap reads the state a joining server gets (BootstrapPath); nil
	// when other servers cannot share this one's datastore (SQLite).
	Bootstrap func() (bootstrap.State, error)
	// Datastore is what the cluster shares: DatastoreEtcd or
	// DatastoreExternal (with Bootstrap).
	Datastore string
	// EtcdMember adds a joining server's etcd member as a learner and
	// returns the initial cluster (EtcdMemberPath); nil without embedded
	// etcd.
	EtcdMember func(ctx context.Context, name, peerURL string) (string, error)
}

// mount is another handler served on the same port (the image registry).
type mount struct {
	prefix  string
	handler http.Handler
}

// NewServer returns the join handlers. Bootstrap tokens are looked up in
// the cluster; o.Tokens with an empty secret are ignored.
func NewServer(o ServerOptions, log *slog.Logger) (*Server, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(o.ClientCA) {
		return nil, errors.New("join: the client CA is not a PEM certificate")
	}
	s := &Server{caBundle: o.CABundle, clientCAs: pool, config: o.Cluster, serverNode: o.ServerNode, issuer: o.Issuer, log: log, bootstrap: o.Bootstrap,
		datastore: o.Datastore, etcdMember: o.EtcdMember}
	for _, t := range o.Tokens {
		if t.Secret != "" {
			s.secrets = append(s.secrets, t)
		}
		if t.User == token.ServerUser && t.Secret != "" {
			s.serverToken = t
		}
	}
	return s, nil
}

// clientHolder lets an interface value sit in an atomic.Pointer.
type clientHolder struct{ kubernetes.Interface }

// SetClient makes the authenticated endpoints available (any
// kubernetes.Interface: the apiserver's clientset, or a fake in tests).
func (s *Server) SetClient(cs kubernetes.Interface) { s.client.Store(&clientHolder{cs}) }

// kube is the client, or nil before SetClient.
func (s *Server) kube() kubernetes.Interface {
	if h := s.client.Load(); h != nil {
		return h.Interface
	}
	return nil
}

// Mount serves every path below prefix with h, in front of the apiserver
// like the join paths. Call it before the apiserver serves.
func (s *Server) Mount(prefix string, h http.Handler) {
	s.mounts = append(s.mounts, mount{prefix: prefix, handler: h})
}

// Wrap serves the join paths and the mounted handlers and hands every other
// request to next.
func (s *Server) Wrap(next http.Handler) http.Handler {
	// Wrong tokens and certificates: rate-limited per source address, logged
	// in sums.
	limited := ratelimit.New(ratelimit.Defaults("join"), s.log).Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case NodePath:
			s.serveNode(w, r)
		case PasswordPath:
			s.servePassword(w, r)
		case RenewPath:
			s.serveRenew(w, r)
		case BootstrapPath:
			s.serveBootstrap(w, r)
		case EtcdMemberPath:
			s.serveEtcdMember(w, r)
		}
	}))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case CACertsPath:
			w.Header().Set("Content-Type", "application/x-pem-file")
			_, _ = w.Write(s.caBundle)
		case NodePath, PasswordPath, RenewPath, BootstrapPath, EtcdMemberPath:
			limited.ServeHTTP(w, r)
		default:
			for _, m := range s.mounts {
				if strings.HasPrefix(r.URL.Path, m.prefix) {
					m.handler.ServeHTTP(w, r)
					return
				}
			}
			next.ServeHTTP(w, r)
		}
	})
}

// authenticate checks the request's token (HTTP basic auth: user = the
// token's user or bootstrap ID, password = its secret). It writes the
// refusal itself and returns a description of the token for logs.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (string, bool) {
	user, secret, ok := r.BasicAuth()
	if !ok || secret == "" {
		http.Error(w, "no join token: send the token as basic auth", http.StatusUnauthorized)
		return "", false
	}
	for _, known := range s.secrets {
		if known.SecretMatches(secret) {
			return known.User + " token", true
		}
	}
	if parsed, err := token.Parse(user + "." + secret); err == nil && parsed.Bootstrap {
		cs := s.kube()
		if cs == nil {
			http.Error(w, "server is starting; try again", http.StatusServiceUnavailable)
			return "", false
		}
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		err := token.VerifyBootstrap(ctx, cs, parsed, time.Now())
		if err == nil {
			return "bootstrap token " + parsed.User, true
		}
		if !errors.Is(err, token.ErrRejected) {
			s.log.Error("bootstrap token lookup failed", "id", parsed.User, "err", err)
			http.Error(w, "bootstrap token lookup failed on the server", http.StatusServiceUnavailable)
			return "", false
		}
		s.refuse(w, r, http.StatusUnauthorized, err.Error())
		return "", false
	}
	s.refuse(w, r, http.StatusUnauthorized, fmt.Sprintf("%v: wrong secret for user %q", token.ErrRejected, user))
	return "", false
}

func (s *Server) refuse(w http.ResponseWriter, r *http.Request, code int, msg string) {
	if code != http.StatusUnauthorized { // the rate limiter logs those, summed
		s.log.Warn("join refused", "from", r.RemoteAddr, "reason", msg)
	}
	http.Error(w, msg, code)
}

func (s *Server) serveNode(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return
	}
	via, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	var req NodeRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
		http.Error(w, "bad join request: "+err.Error(), http.StatusBadRequest)
		return
	}
	if errs := validation.IsDNS1123Subdomain(req.NodeName); len(errs) > 0 {
		http.Error(w, fmt.Sprintf("node name %q is not valid: %v", req.NodeName, errs), http.StatusBadRequest)
		return
	}
	ip := net.ParseIP(req.NodeIP)
	if ip == nil {
		http.Error(w, fmt.Sprintf("node IP %q is not an IP address", req.NodeIP), http.StatusBadRequest)
		return
	}
	password, ok := passwordOf(w, r)
	if !ok {
		return
	}
	if req.NodeName == s.serverNode {
		s.refuse(w, r, http.StatusConflict, fmt.Sprintf("node name %q is already registered by another machine (the server's own node); pick another --node-name", req.NodeName))
		return
	}
	if err := s.issuer.Reserved(req.NodeName, ip); err != nil {
		s.refuse(w, r, http.StatusForbidden, err.Error()+"; pick another --node-name or --node-ip")
		return
	}
	if len(req.CSRs) == 0 {
		http.Error(w, "the join request has no certificate requests: this agent is older than the server; upgrade it", http.StatusBadRequest)
		return
	}
	if !s.claim(w, r, req.NodeName, password, false) {
		return
	}
	certs, err := s.issuer.SignNode(req.NodeName, ip, req.CSRs)
	if err != nil {
		s.refuse(w, r, http.StatusBadRequest, "could not sign the node's certificates: "+err.Error())
		return
	}
	s.log.Info("node joined", "node", req.NodeName, "ip", ip, "with", via, "from", r.RemoteAddr)
	writeJSON(w, NodeResponse{Config: s.config, Certs: certs})
}

// servePassword re-checks the node password of a joined node, which proves
// its name with its kubelet client certificate: it stores the password's
// hash when the name has none (after `kubectl delete node`, say) and refuses
// a password that differs from the stored one.
func (s *Server) servePassword(w http.ResponseWriter, r *http.Request) {
	node, ok := s.provenNode(w, r)
	if !ok {
		return
	}
	s.log.Debug("node password checked", "node", node)
	_, _ = io.WriteString(w, "ok\n")
}

// serveRenew signs new certificates for a joined node before its current
// ones expire: the node proves its name as for servePassword.
func (s *Server) serveRenew(w http.ResponseWriter, r *http.Request) {
	node, ok := s.provenNode(w, r)
	if !ok {
		return
	}
	var req NodeRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
		http.Error(w, "bad renewal request: "+err.Error(), http.StatusBadRequest)
		return
	}
	ip := net.ParseIP(req.NodeIP)
	switch {
	case req.NodeName != node:
		s.refuse(w, r, http.StatusForbidden, fmt.Sprintf("node %s asked for certificates of %q", node, req.NodeName))
		return
	case ip == nil:
		http.Error(w, fmt.Sprintf("node IP %q is not an IP address", req.NodeIP), http.StatusBadRequest)
		return
	}
	if err := s.issuer.Reserved(node, ip); err != nil {
		s.refuse(w, r, http.StatusForbidden, err.Error())
		return
	}
	certs, err := s.issuer.SignNode(node, ip, req.CSRs)
	if err != nil {
		s.refuse(w, r, http.StatusBadRequest, "could not sign the node's certificates: "+err.Error())
		return
	}
	s.log.Info("node certificates renewed", "node", node, "ip", ip)
	writeJSON(w, NodeResponse{Config: s.config, Certs: certs})
}

// provenNode is the node a request comes from, proven by its kubelet client
// certificate and its node password (re-stored when missing). It writes the
// refusal itself.
func (s *Server) provenNode(w http.ResponseWriter, r *http.Request) (string, bool) {
	if r.Method != http.MethodPost {
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return "", false
	}
	node, err := s.nodeOf(r)
	if err != nil {
		s.refuse(w, r, http.StatusUnauthorized, err.Error())
		return "", false
	}
	password, ok := passwordOf(w, r)
	if !ok || !s.claim(w, r, node, password, true) {
		return "", false
	}
	return node, true
}

// passwordOf is the request's node password; it writes the refusal itself.
func passwordOf(w http.ResponseWriter, r *http.Request) (string, bool) {
	password := r.Header.Get(PasswordHeader)
	if len(password) < 16 {
		http.Error(w, "missing or short node password", http.StatusBadRequest)
		return "", false
	}
	return password, true
}

// claim stores or checks node's password (claimNodeName; nodeProven when
// the request proved it is that node); it writes the refusal itself.
func (s *Server) claim(w http.ResponseWriter, r *http.Request, node, password string, nodeProven bool) bool {
	cs := s.kube()
	if cs == nil {
		http.Error(w, "server is starting; try again", http.StatusServiceUnavailable)
		return false
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	if err := claimNodeName(ctx, cs, node, password, nodeProven); err != nil {
		if errors.Is(err, errNameTaken) {
			s.refuse(w, r, http.StatusConflict, err.Error())
			return false
		}
		s.log.Error("node password", "node", node, "err", err)
		http.Error(w, "node password check failed on the server", http.StatusServiceUnavailable)
		return false
	}
	return true
}

// nodeOf is the node name in the request's kubelet client certificate,
// verified against the client CA.
func (s *Server) nodeOf(r *http.Request) (string, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return "", errors.New("no client certificate: present the node's kubelet client certificate")
	}
	leaf := r.TLS.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range r.TLS.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: s.clientCAs, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return "", fmt.Errorf("client certificate: %w", err)
	}
	node, ok := strings.CutPrefix(leaf.Subject.CommonName, "system:node:")
	if !ok || node == "" || !slices.Contains(leaf.Subject.Organization, "system:nodes") {
		return "", fmt.Errorf("client certificate %q is not a node's", leaf.Subject.CommonName)
	}
	return node, nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
