package ratelimit

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/bramble-pi/bramble/tests/testutil"
)

// lines are the log lines written so far.
func lines(logs *testutil.SyncBuffer) []string {
	return strings.Split(strings.TrimSpace(logs.String()), "\n")
}

// endpoint answers 200 to the password "good", 401 to anything else.
var endpoint = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Password") != "good" {
		http.Error(w, "wrong password", http.StatusUnauthorized)
		return
	}
	_, _ = w.Write([]byte("welcome"))
})

func call(h http.Handler, from, password string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, "/join", nil)
	r.RemoteAddr = from
	r.Header.Set("Password", password)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestLimiter(t *testing.T) {
	logs := &testutil.SyncBuffer{}
	cfg := Config{What: "join", Burst: 3, Every: 400 * time.Millisecond, Window: 2 * time.Second, MaxSources: 2}
	l := New(cfg, slog.New(slog.NewTextHandler(logs, nil)))
	h := l.Wrap(endpoint)
	const attacker = "192.0.2.7:50000"

	// Successes cost nothing.
	for range 10 {
		if w := call(h, attacker, "good"); w.Code != http.StatusOK {
			t.Fatalf("good password: %d", w.Code)
		}
	}
	// The burst of failures is answered by the endpoint, then 429.
	codes := map[int]int{}
	var retry string
	for range 50 {
		w := call(h, "192.0.2.7:"+"50001", "guess")
		codes[w.Code]++
		if w.Code == http.StatusTooManyRequests {
			retry = w.Header().Get("Retry-After")
		}
	}
	if codes[http.StatusUnauthorized] != 3 || codes[http.StatusTooManyRequests] != 47 {
		t.Errorf("50 wrong passwords: %v, want 3 x 401 and 47 x 429", codes)
	}
	if retry != "1" {
		t.Errorf("Retry-After %q, want 1 (s)", retry)
	}
	// While limited, the address gets 429 even with the right password;
	// another address is not affected.
	if w := call(h, attacker, "good"); w.Code != http.StatusTooManyRequests {
		t.Errorf("good password from a limited address: %d", w.Code)
	}
	if w := call(h, "198.51.100.1:1", "guess"); w.Code != http.StatusUnauthorized {
		t.Errorf("another address: %d, want 401", w.Code)
	}
	// The budget refills: one more try after Every.
	time.Sleep(cfg.Every + 50*time.Millisecond)
	if w := call(h, attacker, "guess"); w.Code != http.StatusUnauthorized {
		t.Errorf("after %s: %d, want the endpoint's 401", cfg.Every, w.Code)
	}
	if w := call(h, attacker, "guess"); w.Code != http.StatusTooManyRequests {
		t.Errorf("right after: %d, want 429", w.Code)
	}

	// Logs: the first refusal of each address at once, then one summary
	// per address and window.
	got := lines(logs)
	if len(got) != 2 || !strings.Contains(got[0], `msg="join refused" from=192.0.2.7 status=401 reason="wrong password"`) ||
		!strings.Contains(got[1], "from=198.51.100.1") {
		t.Fatalf("log before the window ends:\n%s", strings.Join(got, "\n"))
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(lines(logs)) < 3 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	got = lines(logs)
	if len(got) != 3 || !strings.Contains(got[2], `msg="join refusals" from=192.0.2.7 refused=4 rateLimited=49`) {
		t.Fatalf("log after the window:\n%s", strings.Join(got, "\n"))
	}
	// Quiet addresses with a full budget are forgotten.
	tracked := func() int {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.sources)
	}
	deadline = time.Now().Add(10 * time.Second)
	for tracked() > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := tracked(); n != 0 {
		t.Errorf("%d addresses still tracked", n)
	}
	if n := len(lines(logs)); n != 3 {
		t.Errorf("%d log lines, want 3:\n%s", n, strings.Join(lines(logs), "\n"))
	}
}

// Beyond MaxSources new addresses share one budget.
func TestLimiterOverflow(t *testing.T) {
	logs := &testutil.SyncBuffer{}
	l := New(Config{What: "join", Burst: 1, Every: time.Hour, Window: time.Hour, MaxSources: 2}, slog.New(slog.NewTextHandler(logs, nil)))
	h := l.Wrap(endpoint)
	for _, from := range []string{"192.0.2.1:1", "192.0.2.2:1", "192.0.2.3:1", "192.0.2.4:1"} {
		call(h, from, "guess")
	}
	if w := call(h, "192.0.2.5:1", "guess"); w.Code != http.StatusTooManyRequests {
		t.Errorf("a new address once the table is full: %d, want 429 (shared budget spent)", w.Code)
	}
	if n := len(l.sources); n != 3 {
		t.Errorf("%d sources, want 2 and the shared one", n)
	}
	if !strings.Contains(strings.Join(lines(logs), "\n"), `from="(other addresses)"`) {
		t.Errorf("log:\n%s", strings.Join(lines(logs), "\n"))
	}
}

func TestSourceKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7:50000":            "192.0.2.7",
		"[2001:db8:1:2:3:4:5:6]:443": "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1]:443": "2001:db8:1:2::/64",
		"[::ffff:192.0.2.7]:1":       "192.0.2.7",
		"not-an-address":             "not-an-address",
	} {
		if got := sourceKey(in); got != want {
			t.Errorf("sourceKey(%q) = %q, want %q", in, got, want)
		}
	}
}
