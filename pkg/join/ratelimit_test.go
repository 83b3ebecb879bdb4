package join

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/bramble-pi/bramble/pkg/token"
)

// Wrong tokens are rate-limited per source address: the first ten get 401,
// then 429 with Retry-After; one log line for all of them (the sums follow
// after a minute); /cacerts and the apiserver are not limited.
func TestJoinRateLimited(t *testing.T) {
	var logs strings.Builder
	s, err := NewServer(ServerOptions{CABundle: []byte("ca"), ClientCA: testCA(t).CertPEM,
		Tokens: []token.Token{{User: "server", Secret: "server-secret-1234"}}, ServerNode: "pi1", Issuer: &fakeIssuer{}},
		slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Wrap(http.NotFoundHandler()))
	defer ts.Close()
	codes := map[int]int{}
	for range 30 {
		req, _ := http.NewRequest(http.MethodPost, ts.URL+NodePath, strings.NewReader("{}"))
		req.SetBasicAuth("server", "guess")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		codes[resp.StatusCode]++
		if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
			t.Error("429 without Retry-After")
		}
	}
	if codes[http.StatusUnauthorized] != 10 || codes[http.StatusTooManyRequests] != 20 {
		t.Errorf("30 wrong tokens: %v, want 10 x 401, 20 x 429", codes)
	}
	if n := strings.Count(logs.String(), "\n"); n != 1 || !strings.Contains(logs.String(), `msg="join refused" from=127.0.0.1 status=401`) {
		t.Errorf("log:\n%s", logs.String())
	}
	for _, path := range []string{CACertsPath, "/api"} {
		resp, err := http.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests {
			t.Errorf("%s is rate-limited", path)
		}
	}
}
