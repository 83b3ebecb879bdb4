// Package profiling serves Go's runtime profiles (net/http/pprof) on a
// loopback address, for `--debug-pprof`. The supervisor labels every
// component's goroutines (label "component"), so a CPU profile splits by
// component: `go tool pprof -tagfocus component=kubelet ...` or
// `-tags`. Heap profiles have no labels; their top functions name the
// component's packages.
package profiling

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// CheckAddress accepts host:port only for a loopback host: profiles expose
// memory contents and must never be reachable from the network.
func CheckAddress(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", addr, err)
	}
	if port == "" {
		return fmt.Errorf("%q has no port", addr)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q: profiles are served on loopback only (use 127.0.0.1:PORT)", addr)
	}
	return nil
}

// Serve listens on addr (loopback only) and serves /debug/pprof/ until ctx
// ends. It returns once the listener is open.
func Serve(ctx context.Context, addr string, log *slog.Logger) error {
	if err := CheckAddress(addr); err != nil {
		return err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("profiling listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("profiling server stopped", "err", err)
		}
	}()
	context.AfterFunc(ctx, func() { _ = srv.Close() })
	log.Info("serving Go profiles", "url", "http://"+l.Addr().String()+"/debug/pprof/")
	return nil
}
