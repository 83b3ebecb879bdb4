// Package serverlb is an agent's local load balancer for the apiserver: the
// kubelet, kube-proxy, flannel and the network-policy controller talk to
// 127.0.0.1:<port>, and each new connection goes to a server that answers,
// the one that answered last first. The servers are the one the agent
// joined (always kept) and those the cluster lists as the kubernetes
// Service's endpoints, so an agent keeps working when the server it joined
// dies, as long as another runs. TLS passes through untouched: the
// components verify the apiserver's certificate (it holds 127.0.0.1) with
// the server CA as before.
package serverlb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// DefaultPort is where an agent's load balancer listens on loopback.
const DefaultPort = 6444

// dialTimeout bounds one attempt to reach a server.
const dialTimeout = 3 * time.Second

// LB forwards loopback connections to the servers.
type LB struct {
	log      *slog.Logger
	listener net.Listener
	joined   string // host:port of the server the agent joined

	mu      sync.Mutex
	servers []string // joined first, then the cluster's
	active  string   // the server that answered last
}

// Listen opens the load balancer on 127.0.0.1:port; joined is the server
// the agent joined (host:port), used until the cluster names others.
func Listen(port int, joined string, log *slog.Logger) (*LB, error) {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return nil, fmt.Errorf("server load balancer: %w", err)
	}
	return &LB{log: log, listener: l, joined: joined, servers: []string{joined}, active: joined}, nil
}

// URL is the apiserver URL the node's components use.
func (lb *LB) URL() string { return "https://" + lb.listener.Addr().String() }

// Servers are the servers connections may go to.
func (lb *LB) Servers() []string {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return slices.Clone(lb.servers)
}

// SetServers replaces the servers the cluster lists (host:port); the joined
// one stays in the list.
func (lb *LB) SetServers(servers []string) {
	next := []string{lb.joined}
	for _, s := range servers {
		if !slices.Contains(next, s) {
			next = append(next, s)
		}
	}
	lb.mu.Lock()
	changed := !slices.Equal(lb.servers, next)
	lb.servers = next
	if !slices.Contains(next, lb.active) {
		lb.active = next[0]
	}
	lb.mu.Unlock()
	if changed {
		lb.log.Info("apiservers", "servers", next)
	}
}

// candidates are the servers in the order to try: the active one first.
func (lb *LB) candidates() []string {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	out := []string{lb.active}
	for _, s := range lb.servers {
		if s != lb.active {
			out = append(out, s)
		}
	}
	return out
}

// dial connects to the first server that answers.
func (lb *LB) dial(ctx context.Context) (net.Conn, error) {
	var errs []error
	for _, s := range lb.candidates() {
		d := net.Dialer{Timeout: dialTimeout, KeepAlive: 15 * time.Second}
		conn, err := d.DialContext(ctx, "tcp", s)
		if err == nil {
			lb.mu.Lock()
			if lb.active != s {
				lb.log.Info("apiserver connections go to another server", "from", lb.active, "to", s)
				lb.active = s
			}
			lb.mu.Unlock()
			return conn, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// followInterval is how often the list of servers is read again.
const followInterval = 15 * time.Second

// Follow keeps the servers in step with the kubernetes Service's endpoints
// (the apiservers that renew their lease), read through the load balancer
// itself with cs (kube-proxy's identity may read EndpointSlices), until ctx
// ends.
func (lb *LB) Follow(ctx context.Context, cs kubernetes.Interface) error {
	for {
		if servers, err := apiservers(ctx, cs); err == nil && len(servers) > 0 {
			lb.SetServers(servers)
		} else if err != nil && ctx.Err() == nil {
			lb.log.Debug("reading the apiservers' endpoints", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(followInterval):
		}
	}
}

// apiservers are the addresses (host:port) of the default/kubernetes
// Service's ready endpoints.
func apiservers(ctx context.Context, cs kubernetes.Interface) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	list, err := cs.DiscoveryV1().EndpointSlices(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=kubernetes"})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, es := range list.Items {
		for _, port := range es.Ports {
			if port.Port == nil || (port.Name != nil && *port.Name != "https") {
				continue
			}
			for _, ep := range es.Endpoints {
				if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
					continue
				}
				for _, addr := range ep.Addresses {
					out = append(out, net.JoinHostPort(addr, strconv.Itoa(int(*port.Port))))
				}
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// Run accepts connections until ctx ends.
func (lb *LB) Run(ctx context.Context) error {
	context.AfterFunc(ctx, func() { lb.listener.Close() })
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := lb.listener.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("server load balancer: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			lb.forward(ctx, conn)
		}()
	}
}

// forward pipes one client connection to a server.
func (lb *LB) forward(ctx context.Context, client net.Conn) {
	defer client.Close()
	server, err := lb.dial(ctx)
	if err != nil {
		if ctx.Err() == nil {
			lb.log.Warn("no apiserver answers", "servers", lb.Servers(), "err", err)
		}
		return
	}
	defer server.Close()
	stop := context.AfterFunc(ctx, func() { client.Close(); server.Close() })
	defer stop()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(server, client)
	go pipe(client, server)
	<-done
	<-done
}
