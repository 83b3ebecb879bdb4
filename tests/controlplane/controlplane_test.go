// Package controlplane tests `bramble server --disable-agent` for real: a real
// SQLite file, the real apiserver, scheduler and controller-manager.
package controlplane

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/pem"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"

	"github.com/bramble-pi/bramble/tests/testutil"
)

const readyTimeout = 2 * time.Minute

func TestObjectsSurviveRestartInSQLite(t *testing.T) {
	testutil.RequireRoot(t)
	s := testutil.NewServer(t, "--disable-agent")
	s.Start()
	t.Logf("first start: ready after %s", s.WaitReady(readyTimeout))

	// A second server on the same data dir stops at once, and the first
	// is unharmed.
	second := testutil.NewServer(t, "--disable-agent")
	second.Args = append([]string{}, second.Args...)
	second.Args[2] = s.DataDir
	second.Start()
	if !second.Wait(30 * time.Second) {
		t.Fatal("a second server on the same data dir still runs after 30 s")
	}
	if out := second.Log.String(); !strings.Contains(out, "is in use by another bramble (pid "+strconv.Itoa(s.PID())+")") {
		t.Errorf("second server on the same data dir:\n%s", out)
	}

	s.MustKubectl("create", "namespace", "bramble-e2e")
	s.MustKubectl("-n", "bramble-e2e", "create", "deployment", "web", "--image=docker.io/bramble/busybox:test", "--replicas=2")
	s.MustKubectl("-n", "bramble-e2e", "create", "secret", "generic", "creds", "--from-literal=password=hunter2")

	if took := s.Stop(10 * time.Second); took > 10*time.Second {
		t.Fatalf("stop took %s", took)
	}
	assertNoProcesses(t, s.DataDir)

	s.Start()
	t.Logf("restart: ready after %s", s.WaitReady(readyTimeout))
	if out := s.MustKubectl("get", "namespace", "bramble-e2e", "-o", "name"); out != "namespace/bramble-e2e" {
		t.Fatalf("namespace after restart: %q", out)
	}
	if out := s.MustKubectl("-n", "bramble-e2e", "get", "deployment", "web", "-o", "jsonpath={.spec.replicas}"); out != "2" {
		t.Fatalf("deployment replicas after restart: %q", out)
	}
	if out := s.MustKubectl("-n", "bramble-e2e", "get", "secret", "creds", "-o", "jsonpath={.data.password}"); out != "aHVudGVyMg==" {
		t.Fatalf("secret after restart: %q", out)
	}
	// The controller-manager runs: the deployment got a ReplicaSet.
	testutil.WaitFor(t, 60*time.Second, "deployment has a ReplicaSet", func() bool {
		out, _ := s.Kubectl("-n", "bramble-e2e", "get", "replicasets", "-o", "name")
		return strings.Contains(out, "replicaset.apps/web-")
	})
	s.Stop(10 * time.Second)

	// The SQLite file itself holds the objects.
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(s.DataDir, "server", "db", "state.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, key := range []string{
		"/registry/namespaces/bramble-e2e",
		"/registry/deployments/bramble-e2e/web",
		"/registry/secrets/bramble-e2e/creds",
	} {
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM kine WHERE name = ? AND deleted = 0`, key).Scan(&n); err != nil {
			t.Fatalf("query %s: %v", key, err)
		}
		if n == 0 {
			t.Errorf("%s is not in state.db", key)
		}
	}
	db.Close()
	assertNoProcesses(t, s.DataDir)

	// A damaged or lost database stops the start at once, naming the file;
	// the cluster is never started empty under its old certificates.
	path := filepath.Join(s.DataDir, "server", "db", "state.db")
	refused := func(what, want string) {
		t.Helper()
		s.Start()
		begin := time.Now()
		if !s.Wait(30 * time.Second) {
			s.Stop(10 * time.Second)
			t.Fatalf("%s: the server still runs after 30 s", what)
		}
		out := s.Log.String()
		if s.ExitCode() == 0 || !strings.Contains(out, path) || !strings.Contains(out, want) || !strings.Contains(out, "--allow-empty-datastore") {
			t.Errorf("%s: exit %d, log:\n%s", what, s.ExitCode(), out)
		}
		t.Logf("%s: refused in %.1f s: %s", what, time.Since(begin).Seconds(), lastLine(out))
	}
	for _, f := range []string{path + "-wal", path + "-shm"} {
		_ = os.Remove(f)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, st.Size()/2); err != nil {
		t.Fatal(err)
	}
	refused("state.db truncated to half", "the database is damaged")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	refused("state.db deleted", "is missing")
	assertNoProcesses(t, s.DataDir)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func TestAuthentication(t *testing.T) {
	testutil.RequireRoot(t)
	s := testutil.NewServer(t, "--disable-agent")
	s.Start()
	s.WaitReady(readyTimeout)

	st, err := os.Stat(s.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("kubeconfig mode %v, want 0600", st.Mode().Perm())
	}
	for _, f := range []string{"server/token", "server/tls/server-ca.key", "server/tls/client-admin.key", "server/tls/service.key"} {
		st, err := os.Stat(filepath.Join(s.DataDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, st.Mode().Perm())
		}
	}
	st, err = os.Stat(filepath.Join(s.DataDir, "server", "tls"))
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("tls dir mode: %v %v, want 0700", st.Mode().Perm(), err)
	}

	// Anonymous: health checks only.
	if code := get(t, s.HTTPClient(), s.URL()+"/readyz"); code != http.StatusOK {
		t.Errorf("anonymous /readyz: %d", code)
	}
	if code := get(t, s.HTTPClient(), s.URL()+"/api/v1/namespaces"); code != http.StatusUnauthorized {
		t.Errorf("anonymous /api/v1/namespaces: %d, want 401", code)
	}

	// A client certificate from a CA the cluster never saw, claiming to be
	// an admin, is refused.
	forged := foreignClientCert(t, "system:admin", "system:masters")
	if code := get(t, s.HTTPClient(forged), s.URL()+"/api/v1/namespaces"); code != http.StatusUnauthorized {
		t.Errorf("foreign client certificate: %d, want 401", code)
	}
	// The real admin certificate works.
	admin, err := tls.LoadX509KeyPair(filepath.Join(s.DataDir, "server/tls/client-admin.crt"), filepath.Join(s.DataDir, "server/tls/client-admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	if code := get(t, s.HTTPClient(admin), s.URL()+"/api/v1/namespaces"); code != http.StatusOK {
		t.Errorf("admin certificate: %d, want 200", code)
	}
	// TLS 1.1, CBC and RSA key-exchange suites are refused.
	testutil.CheckTLSPolicy(t, "127.0.0.1:"+itoa(s.Port))

	// Wrong join tokens: the first ten are answered 401, then 429 with
	// Retry-After, per source address; logged in one line (the sums
	// follow once a minute), not one per request.
	codes := map[int]int{}
	c := s.HTTPClient()
	for range 300 {
		req, _ := http.NewRequest(http.MethodPost, s.URL()+"/v1-bramble/node", strings.NewReader(`{"nodeName":"pi9","nodeIP":"10.0.0.9"}`))
		req.SetBasicAuth("server", "not-the-secret")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		codes[resp.StatusCode]++
		if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
	}
	t.Logf("300 wrong join tokens: %v", codes)
	if codes[http.StatusUnauthorized] < 10 || codes[http.StatusUnauthorized] > 12 || codes[http.StatusUnauthorized]+codes[http.StatusTooManyRequests] != 300 {
		t.Errorf("300 wrong join tokens answered %v, want ~10 x 401 and the rest 429", codes)
	}
	var joinLines []string
	for _, l := range strings.Split(s.Log.String(), "\n") {
		if strings.Contains(l, "join refus") {
			joinLines = append(joinLines, l)
		}
	}
	t.Logf("log:\n%s", strings.Join(joinLines, "\n"))
	if len(joinLines) == 0 || len(joinLines) > 2 {
		t.Errorf("%d log lines about the refused joins, want 1 or 2:\n%s", len(joinLines), strings.Join(joinLines, "\n"))
	}
	if code := get(t, c, s.URL()+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz from the rate-limited address: %d", code)
	}

	// The token is printed by `bramble token show` and never logged.
	out, err := exec(t, "token", "show", "--data-dir", s.DataDir)
	if err != nil || !strings.HasPrefix(out, "K10") {
		t.Fatalf("token show: %q %v", out, err)
	}
	secret := out[strings.LastIndex(out, ":")+1:]
	s.Stop(10 * time.Second)
	if strings.Contains(s.Log.String(), secret) {
		t.Error("the server log contains the token secret")
	}
}

func get(t *testing.T, c *http.Client, url string) int {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func foreignClientCert(t *testing.T, cn, org string) tls.Certificate {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "evil-ca"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn, Organization: []string{org}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	cert, err := tls.X509KeyPair(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func assertNoProcesses(t *testing.T, dataDir string) {
	t.Helper()
	if pids := testutil.ProcessesUsing(dataDir); len(pids) > 0 {
		t.Fatalf("processes left running for %s: %v", dataDir, pids)
	}
}
