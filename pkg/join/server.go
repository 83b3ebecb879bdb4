package join

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"github.com/bramble-pi/bramble/pkg/nodecreds"
	"github.com/bramble-pi/bramble/pkg/ratelimit"
	"github.com/bramble-pi/bramble/pkg/token"
)

// Server answers joining nodes. Its handlers sit in front of the apiserver on
// the same port; they need a Kubernetes client (bootstrap tokens, node
// passwords) and answer 503 until SetClient is called.
type Server struct {
	caBundle   []byte
	config     ClusterConfig
	secrets    []token.Token // server token, agent token: secrets that join
	serverNode string        // the server's own node name, never given out
	issue      func(nodeName string, nodeIP net.IP) (nodecreds.Bundle, error)
	log        *slog.Logger
	client     atomic.Pointer[clientHolder]
	mounts     []mount
}

// mount is another handler served on the same port (the image registry).
type mount struct {
	prefix  string
	handler http.Handler
}

// NewServer returns the join handlers. tokens are the static tokens that
// may join (the server token and, if set, the agent token); bootstrap tokens
// are looked up in the cluster.
func NewServer(caBundle []byte, cfg ClusterConfig, tokens []token.Token, serverNode string,
	issue func(string, net.IP) (nodecreds.Bundle, error), log *slog.Logger) *Server {
	s := &Server{caBundle: caBundle, config: cfg, serverNode: serverNode, issue: issue, log: log}
	for _, t := range tokens {
		if t.Secret != "" {
			s.secrets = append(s.secrets, t)
		}
	}
	return s
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
	// Wrong tokens: rate-limited per source address, logged in sums.
	node := ratelimit.New(ratelimit.Defaults("join"), s.log).Wrap(http.HandlerFunc(s.serveNode))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case CACertsPath:
			w.Header().Set("Content-Type", "application/x-pem-file")
			_, _ = w.Write(s.caBundle)
		case NodePath:
			node.ServeHTTP(w, r)
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
	password := r.Header.Get(PasswordHeader)
	if len(password) < 16 {
		http.Error(w, "missing or short node password", http.StatusBadRequest)
		return
	}
	if req.NodeName == s.serverNode {
		s.refuse(w, r, http.StatusConflict, fmt.Sprintf("node name %q is already registered by another machine (the server's own node); pick another --node-name", req.NodeName))
		return
	}
	cs := s.kube()
	if cs == nil {
		http.Error(w, "server is starting; try again", http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	if err := claimNodeName(ctx, cs, req.NodeName, password); err != nil {
		if errors.Is(err, errNameTaken) {
			s.refuse(w, r, http.StatusConflict, err.Error())
			return
		}
		s.log.Error("node password", "node", req.NodeName, "err", err)
		http.Error(w, "node password check failed on the server", http.StatusServiceUnavailable)
		return
	}
	certs, err := s.issue(req.NodeName, ip)
	if err != nil {
		s.log.Error("issue node credentials", "node", req.NodeName, "err", err)
		http.Error(w, "could not issue node credentials", http.StatusInternalServerError)
		return
	}
	s.log.Info("node joined", "node", req.NodeName, "ip", ip, "with", via, "from", r.RemoteAddr)
	writeJSON(w, NodeResponse{Config: s.config, Certs: certs})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
