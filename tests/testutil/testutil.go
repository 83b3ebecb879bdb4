// Package testutil starts real bramble processes for the integration tests and
// stops them, by PID, when a test ends.
package testutil

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RepoRoot is the directory holding go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
}

// Binary is bin/bramble, built by `make`.
func Binary(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(RepoRoot(t), "bin", "bramble")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s missing: run `make` (make test builds it): %v", bin, err)
	}
	return bin
}

// RequireRoot fails the test when not run as root: these tests are part of
// `make test`, which runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this integration test needs root")
	}
}

// SkipOrFail is the one skip policy of the integration tests: a test that
// cannot run here (a missing tool, not root, ...) is skipped with why, and
// `make test` counts and lists the skips; under CI (CI=true) it fails
// instead, so a CI run never goes green by not running a test.
func SkipOrFail(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: a test that cannot run fails)", why)
	}
	t.Skip(why)
}

// NeedTools calls SkipOrFail unless every named command is in PATH.
func NeedTools(t testing.TB, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			SkipOrFail(t, name+" is not installed (scripts/deps.sh installs what the tests need)")
		}
	}
}

// NeedRoot calls SkipOrFail when not run as root.
func NeedRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(t, "needs root ("+why+")")
	}
}

// FreePort returns a TCP port free on loopback right now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// SyncBuffer is a goroutine-safe buffer for a process's output.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// Reset empties the buffer.
func (b *SyncBuffer) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Reset()
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Server is a running `bramble server`.
type Server struct {
	t          testing.TB
	DataDir    string
	Kubeconfig string
	Port       int
	Args       []string
	Env        []string
	// Command, when set, is what is run instead of the absolute path of
	// bin/bramble (e.g. "./bin/bramble"), from Dir.
	Command string
	Dir     string
	cmd     *exec.Cmd
	done    chan struct{}
	Log     *SyncBuffer
}

// NewServer prepares a server in a fresh data dir on a free port. Extra args
// are appended to the generated ones.
func NewServer(t testing.TB, args ...string) *Server {
	t.Helper()
	dir := t.TempDir()
	s := &Server{t: t, DataDir: filepath.Join(dir, "data"), Kubeconfig: filepath.Join(dir, "kubeconfig.yaml"), Port: FreePort(t)}
	s.Args = append([]string{"server",
		"--data-dir", s.DataDir,
		"--https-listen-port", strconv.Itoa(s.Port),
		"--write-kubeconfig", s.Kubeconfig,
		"--config", filepath.Join(dir, "no-config.yaml"),
		// The air-gap tarball in dist/ is imported only where a test puts
		// it (in agent/images), not into every test node.
		"--shipped-images=false",
	}, args...)
	// Without an explicit --config the server would read /etc/bramble/config.yaml.
	if err := os.WriteFile(filepath.Join(dir, "no-config.yaml"), []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// SetT ties a Server built by hand (not by NewServer) to its test.
func (s *Server) SetT(t testing.TB) { s.t = t }

// Start starts the server process.
func (s *Server) Start() {
	s.t.Helper()
	s.Log = &SyncBuffer{}
	bin := Binary(s.t)
	if s.Command != "" {
		bin = s.Command
	}
	s.cmd = exec.Command(bin, s.Args...)
	s.cmd.Dir = s.Dir
	s.cmd.Env = append(os.Environ(), s.Env...)
	s.cmd.Stdout, s.cmd.Stderr = s.Log, s.Log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.done = make(chan struct{})
	cmd, done := s.cmd, s.done
	go func() { _ = cmd.Wait(); close(done) }()
	s.t.Cleanup(func() {
		if s.Running() {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if s.t.Failed() {
			s.t.Logf("server log (last 6000 bytes):\n%s", tail(s.Log.String(), 6000))
		}
	})
}

// PID is the server's process ID.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Running says whether the process has not exited.
func (s *Server) Running() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// Wait waits for the process to exit on its own.
func (s *Server) Wait(timeout time.Duration) (exited bool) {
	select {
	case <-s.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// ExitCode is the process's exit status once it exited.
func (s *Server) ExitCode() int { return s.cmd.ProcessState.ExitCode() }

// Stop sends SIGTERM and returns how long the process took to exit; after
// timeout it is killed and the test fails.
func (s *Server) Stop(timeout time.Duration) time.Duration {
	s.t.Helper()
	begin := time.Now()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	if !s.Wait(timeout) {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
		s.t.Fatalf("server did not stop within %s of SIGTERM", timeout)
	}
	return time.Since(begin)
}

// URL is the apiserver's base URL.
func (s *Server) URL() string { return fmt.Sprintf("https://127.0.0.1:%d", s.Port) }

// CAFile is the server CA the apiserver's certificate chains to.
func (s *Server) CAFile() string { return filepath.Join(s.DataDir, "server", "tls", "server-ca.crt") }

// HTTPClient trusts the server CA and presents certs (if any).
func (s *Server) HTTPClient(certs ...tls.Certificate) *http.Client {
	s.t.Helper()
	ca, err := os.ReadFile(s.CAFile())
	if err != nil {
		s.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: certs},
	}}
}

// WaitReady waits until /readyz answers ok (anonymously) and the kubeconfig
// exists.
func (s *Server) WaitReady(timeout time.Duration) time.Duration {
	s.t.Helper()
	begin := time.Now()
	deadline := begin.Add(timeout)
	for time.Now().Before(deadline) {
		if !s.Running() {
			s.t.Fatalf("server exited early (status %d)", s.ExitCode())
		}
		if _, err := os.Stat(s.CAFile()); err == nil {
			resp, err := s.HTTPClient().Get(s.URL() + "/readyz")
			if err == nil {
				resp.Body.Close()
				if _, kerr := os.Stat(s.Kubeconfig); resp.StatusCode == 200 && kerr == nil {
					return time.Since(begin)
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("server not ready within %s", timeout)
	return 0
}

// Kubectl runs `bramble kubectl` with the server's kubeconfig.
func (s *Server) Kubectl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, Binary(s.t), append([]string{"kubectl", "--kubeconfig", s.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// MustKubectl is Kubectl that fails the test on error.
func (s *Server) MustKubectl(args ...string) string {
	s.t.Helper()
	out, err := s.Kubectl(args...)
	if err != nil {
		s.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// ProcessesUsing lists PIDs whose command line mentions s (e.g. a data dir).
func ProcessesUsing(s string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmdline, []byte(s)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Busybox is the test image `make test-images` builds.
const Busybox = "docker.io/bramble/busybox:test"

// PreloadBusybox puts the busybox test image into the server's agent/images,
// which the node imports at start. Call it before Start.
func PreloadBusybox(t testing.TB, s *Server) {
	t.Helper()
	image := filepath.Join(RepoRoot(t), "dist", "images", Arch(), "busybox.tar")
	data, err := os.ReadFile(image)
	if err != nil {
		t.Fatalf("busybox test image missing (make test-images builds it): %v", err)
	}
	dir := filepath.Join(s.DataDir, "agent", "images")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "busybox.tar"), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// StartBusyboxNode starts a server without its add-ons, with the busybox
// test image preloaded, and waits until it and its node are ready.
func StartBusyboxNode(t testing.TB, timeout time.Duration) *Server {
	t.Helper()
	s := NewServer(t, "--disable", "traefik,coredns,plumber-api")
	CleanupNode(t, s)
	PreloadBusybox(t, s)
	s.Start()
	t.Logf("ready after %s", s.WaitReady(timeout))
	WaitNodeReady(t, s, timeout)
	return s
}

// WaitServiceAccount waits for the default service account of namespace
// ns, without which no pod can be created in it.
func WaitServiceAccount(t testing.TB, s *Server, ns string) {
	t.Helper()
	WaitFor(t, time.Minute, "service account "+ns+"/default", func() bool {
		_, err := s.Kubectl("-n", ns, "get", "serviceaccount", "default")
		return err == nil
	})
}

// WaitNodeReady waits until the server's (first) node reports Ready.
func WaitNodeReady(t testing.TB, s *Server, timeout time.Duration) {
	t.Helper()
	WaitFor(t, timeout, "node Ready", func() bool {
		out, _ := s.Kubectl("get", "nodes", "-o", `jsonpath={.items[0].status.conditions[?(@.type=="Ready")].status}`)
		return out == "True"
	})
}

// ContainerdPID finds the containerd of the bramble with this data dir:
// `bramble containerd --config <data-dir>/...` (containerd built into
// bramble) or `<data-dir>/data/<hash>/bin/containerd --config ...` (a
// separate executable); 0 if none runs.
func ContainerdPID(dataDir string) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		args := strings.Split(string(cmdline), "\x00")
		if len(args) < 2 || !strings.Contains(string(cmdline), filepath.Clean(dataDir)+"/") {
			continue
		}
		if args[1] == "containerd" || filepath.Base(args[0]) == "containerd" {
			return pid
		}
	}
	return 0
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// Arch is the Go architecture the images were built for.
func Arch() string { return runtime.GOARCH }

// WaitFor polls ok every half second until it holds, failing the test after timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if ok() {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s", what, timeout)
}

// kernelSettings are the sysctls bramble sets for the kubelet
// (pkg/kernelparams); node tests put them back.
var kernelSettings = []string{"/proc/sys/kernel/panic", "/proc/sys/kernel/panic_on_oops", "/proc/sys/vm/overcommit_memory",
	"/proc/sys/vm/panic_on_oom", "/proc/sys/kernel/keys/root_maxkeys", "/proc/sys/kernel/keys/root_maxbytes"}

// CleanupNode makes a test that runs a node leave the machine as it found it:
// after the test, bramble-killall.sh runs for the server's data dir and the
// kernel settings the kubelet changed are restored. Call it before Start.
func CleanupNode(t testing.TB, s *Server) {
	t.Helper()
	saved := map[string][]byte{}
	for _, f := range kernelSettings {
		saved[f], _ = os.ReadFile(f)
	}
	t.Cleanup(func() {
		Killall(t, s.DataDir)
		for f, v := range saved {
			_ = os.WriteFile(f, v, 0o644)
		}
	})
}

// Killall runs scripts/bramble-killall.sh for a data dir.
func Killall(t testing.TB, dataDir string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(RepoRoot(t), "scripts", "bramble-killall.sh"))
	cmd.Env = append(os.Environ(), "BRAMBLE_DATA_DIR="+dataDir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("bramble-killall.sh: %v\n%s", err, out)
	}
}

// HTTPClient is a plain HTTP client for the tests' requests to workloads.
var HTTPClient = &http.Client{Timeout: 10 * time.Second}

// Get fetches url and returns the status and body; a transport error is
// status 0 with the error as the body.
func Get(url string) (int, string) {
	resp, err := HTTPClient.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// weakTLSClients are TLS client settings bramble's TLS policy
// (pkg/tlspolicy) refuses: TLS 1.1, and TLS 1.2 with CBC suites (SHA-1 and
// SHA-256 MACs) or static RSA key exchange. Each offers only what it names.
var weakTLSClients = []struct {
	name         string
	min, max     uint16
	cipherSuites []uint16
}{
	{"TLS 1.1", tls.VersionTLS10, tls.VersionTLS11, nil},
	{"TLS 1.2 TLS_RSA_WITH_AES_128_CBC_SHA", tls.VersionTLS12, tls.VersionTLS12, []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA}},
	{"TLS 1.2 TLS_RSA_WITH_AES_128_GCM_SHA256", tls.VersionTLS12, tls.VersionTLS12, []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256}},
	{"TLS 1.2 ECDHE-RSA-AES128-CBC-SHA", tls.VersionTLS12, tls.VersionTLS12, []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA}},
	{"TLS 1.2 ECDHE-ECDSA-AES128-CBC-SHA", tls.VersionTLS12, tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}},
	{"TLS 1.2 ECDHE-ECDSA-AES128-CBC-SHA256", tls.VersionTLS12, tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256}},
}

// handshake is a TLS handshake with addr (its certificate is not checked:
// only what the server agrees to is of interest here).
func handshake(addr string, c *tls.Config) (*tls.ConnectionState, error) {
	c.InsecureSkipVerify = true //nolint:gosec // only the handshake's parameters are checked
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, c)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	st := conn.ConnectionState()
	return &st, nil
}

// CheckTLSPolicy fails the test unless the TLS server at addr refuses every
// weak client (TLS 1.1; TLS 1.2 with CBC or RSA key-exchange suites) and
// accepts TLS 1.3 and TLS 1.2 with ECDHE and AES-GCM or ChaCha20-Poly1305
// (so a refusal is the policy, not a server that refuses everything).
func CheckTLSPolicy(t testing.TB, addr string) {
	t.Helper()
	for _, w := range weakTLSClients {
		if st, err := handshake(addr, &tls.Config{MinVersion: w.min, MaxVersion: w.max, CipherSuites: w.cipherSuites}); err == nil {
			t.Errorf("%s: a weak client (%s) got a session: %s, %s", addr, w.name, tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
		}
	}
	for _, good := range []struct {
		name string
		c    *tls.Config
	}{
		{"TLS 1.3", &tls.Config{MinVersion: tls.VersionTLS13}},
		{"TLS 1.2 ECDHE with AES-GCM", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}}},
		{"TLS 1.2 ECDHE with ChaCha20-Poly1305", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256}}},
	} {
		if _, err := handshake(addr, good.c); err != nil {
			t.Errorf("%s: a strong client (%s) was refused: %v", addr, good.name, err)
		}
	}
}

// topQuantity is a kubectl top figure above zero: 12m, 1, 345Mi.
var topQuantity = regexp.MustCompile(`^0*[1-9][0-9]*(m|Ki|Mi|Gi)?$`)

// TopNonZero reports whether a kubectl top column holds a figure above
// zero (not 0m, and not <unknown>: a node or pod without figures yet).
func TopNonZero(q string) bool { return topQuantity.MatchString(q) }
