// Package ratelimit slows down guessing at an HTTP endpoint: per source
// address it counts the requests the endpoint refused (401 or 403) and,
// once an address has used up its budget of failures, answers it 429 with
// Retry-After until the budget refills. Requests that succeed cost nothing,
// so a node that joins with a good token is never slowed down by its own
// retries.
//
// Refusals are logged aggregated: the first refusal of an address at once
// (with the reason the endpoint gave), then one line per address and
// window with the counts, never one line per request.
package ratelimit

import (
	"bytes"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Config is a limiter's budget and reporting.
type Config struct {
	// What names the endpoint in log lines ("join").
	What string
	// Burst failures are allowed from an address at once, then one more
	// per Every.
	Burst int
	Every time.Duration
	// Window is how often the counts of an address still failing are
	// logged.
	Window time.Duration
	// MaxSources is how many addresses are tracked at once; beyond it, new
	// addresses share one budget (an attacker with many addresses cannot
	// grow the table without bound).
	MaxSources int
}

// Defaults for an endpoint that takes a secret: 10 failures, then one per
// 5 s; counts logged once a minute; 4096 addresses.
func Defaults(what string) Config {
	return Config{What: what, Burst: 10, Every: 5 * time.Second, Window: time.Minute, MaxSources: 4096}
}

// Limiter tracks the failures per source address.
type Limiter struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	sources map[string]*source
}

// source is one address (an IPv6 /64) that failed recently.
type source struct {
	budget  *rate.Limiter
	failed  int // refusals in the current window
	limited int // 429 answers in the current window
	logged  int // refusals of this window already logged
	timer   *time.Timer
}

// overflow is the shared key once MaxSources addresses are tracked.
const overflow = "(other addresses)"

// New returns a limiter.
func New(cfg Config, log *slog.Logger) *Limiter {
	return &Limiter{cfg: cfg, log: log, sources: map[string]*source{}}
}

// Wrap limits next.
func (l *Limiter) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := sourceKey(r.RemoteAddr)
		if wait, ok := l.admit(key); !ok {
			secs := int(math.Ceil(wait.Seconds()))
			w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
			http.Error(w, fmt.Sprintf("too many failed attempts from this address: retry after %d s", max(secs, 1)), http.StatusTooManyRequests)
			return
		}
		rec := &recorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if rec.status == http.StatusUnauthorized || rec.status == http.StatusForbidden {
			l.fail(key, rec.status, rec.body.String())
		}
	})
}

// admit says whether key may be served now, or how long it must wait.
func (l *Limiter) admit(key string) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, s, _ := l.lookup(key, false)
	if s == nil {
		return 0, true
	}
	tokens := s.budget.Tokens()
	if tokens >= 1 {
		return 0, true
	}
	s.limited++
	return time.Duration((1 - tokens) * float64(l.cfg.Every)), false
}

// lookup finds the source of key (the shared one once the table is full),
// making it when create is set (and saying so). Call with mu held.
func (l *Limiter) lookup(key string, create bool) (string, *source, bool) {
	if s := l.sources[key]; s != nil {
		return key, s, false
	}
	if len(l.sources) >= l.cfg.MaxSources {
		key = overflow
	}
	s := l.sources[key]
	if s != nil || !create {
		return key, s, false
	}
	s = &source{budget: rate.NewLimiter(rate.Every(l.cfg.Every), l.cfg.Burst)}
	l.sources[key] = s
	s.timer = time.AfterFunc(l.cfg.Window, func() { l.endWindow(key) })
	return key, s, true
}

// fail counts a refusal from key; the first one of an address is logged at
// once, the rest when its window ends.
func (l *Limiter) fail(key string, status int, reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	key, s, created := l.lookup(key, true)
	if created {
		s.logged = 1
		l.log.Warn(l.cfg.What+" refused", "from", key, "status", status, "reason", strings.TrimSpace(reason),
			"next", fmt.Sprintf("refusals from this address are summed every %s, 429 after %d", l.cfg.Window, l.cfg.Burst))
	}
	s.budget.Allow() // spends one failure (none left: it was admitted concurrently)
	s.failed++
}

// endWindow logs what an address did in the window that ended; it forgets
// the address once it is quiet and its budget has refilled.
func (l *Limiter) endWindow(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.sources[key]
	if s == nil {
		return
	}
	active := s.failed > s.logged || s.limited > 0
	if active {
		l.log.Warn(l.cfg.What+" refusals", "from", key, "refused", s.failed, "rateLimited", s.limited, "window", l.cfg.Window)
	}
	s.failed, s.limited, s.logged = 0, 0, 0
	if !active && s.budget.Tokens() >= float64(l.cfg.Burst) {
		delete(l.sources, key)
		return
	}
	s.timer.Reset(l.cfg.Window)
}

// sourceKey is the address a request came from: the IP, or for IPv6 its
// /64 (one host usually has a whole /64).
func sourceKey(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip := net.ParseIP(host)
	switch {
	case ip == nil:
		return host
	case ip.To4() != nil:
		return ip.To4().String()
	default:
		return (&net.IPNet{IP: ip.Mask(net.CIDRMask(64, 128)), Mask: net.CIDRMask(64, 128)}).String()
	}
}

// recorder notes the status and the start of the body of a refusal (its
// reason, written for the client: it holds no secret).
type recorder struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if (r.status == http.StatusUnauthorized || r.status == http.StatusForbidden) && r.body.Len() < 200 {
		r.body.Write(b[:min(len(b), 200-r.body.Len())])
	}
	return r.ResponseWriter.Write(b)
}
