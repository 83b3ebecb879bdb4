package images

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bramble-pi/bramble/tests/testutil"
)

// ------------------------------------------------------------------ helpers

// slow scales waiting times (not the timed assertions) under emulation.
func slow(d time.Duration) time.Duration {
	if emulated() {
		return 5 * d
	}
	return d
}

// unpackImage extracts an image's layers, in order, into a fresh rootfs under
// a temp dir (removed when the test ends) and returns it with the config.
func unpackImage(t *testing.T, name string) (string, imageConfig) {
	t.Helper()
	tmp := t.TempDir()
	blobs := filepath.Join(tmp, "blobs")
	rootfs := filepath.Join(tmp, "rootfs")
	for _, d := range []string{blobs, rootfs} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	a := readArchiveFile(t, imageArchive(t, name), blobs)
	m, c := a.image(t, imageRef(t, name))
	for _, l := range m.Layers {
		if l.MediaType != "application/vnd.oci.image.layer.v1.tar" {
			t.Fatalf("layer %s: media type %s, this test unpacks plain tars only", l.Digest, l.MediaType)
		}
		blob := filepath.Join(blobs, strings.TrimPrefix(l.Digest, "sha256:"))
		out, err := exec.Command("tar", "-C", rootfs, "--numeric-owner", "-xpf", blob).CombinedOutput()
		if err != nil {
			t.Fatalf("unpacking layer %s: %v: %s", l.Digest, err, out)
		}
	}
	if err := os.RemoveAll(blobs); err != nil {
		t.Fatal(err)
	}
	return rootfs, c
}

// imageUser resolves the config's User ("uid:gid", or a name in the image's
// /etc/passwd).
func imageUser(t *testing.T, rootfs, user string) (uint32, uint32) {
	t.Helper()
	if user == "" {
		return 0, 0
	}
	u, g, hasGroup := strings.Cut(user, ":")
	uid, err := strconv.ParseUint(u, 10, 32)
	if err != nil {
		data, err := os.ReadFile(filepath.Join(rootfs, "etc", "passwd"))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Split(line, ":")
			if len(f) > 3 && f[0] == u {
				uid, _ = strconv.ParseUint(f[2], 10, 32)
				if !hasGroup {
					g = f[3]
				}
				break
			}
		}
	}
	gid, err := strconv.ParseUint(g, 10, 32)
	if err != nil && hasGroup {
		t.Fatalf("group %q of user %q: only numeric groups are supported here", g, user)
	}
	return uint32(uid), uint32(gid)
}

// makeDevices creates the few device nodes programs expect in /dev (a
// container runtime would mount a tmpfs with these).
func makeDevices(t *testing.T, rootfs string) {
	t.Helper()
	dev := filepath.Join(rootfs, "dev")
	if err := os.MkdirAll(dev, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []struct {
		name         string
		major, minor uint32
	}{{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}} {
		p := filepath.Join(dev, d.name)
		_ = os.Remove(p)
		devnum := int((d.major << 8) | d.minor)
		if err := syscall.Mknod(p, syscall.S_IFCHR|0o666, devnum); err != nil {
			t.Fatalf("mknod %s: %v", p, err)
		}
		if err := os.Chmod(p, 0o666); err != nil {
			t.Fatal(err)
		}
	}
}

// container is a process started from an unpacked image.
type container struct {
	t      *testing.T
	cmd    *exec.Cmd
	out    *testutil.SyncBuffer
	done   chan struct{}
	err    error // set when done is closed
	exited time.Time
}

// startContainer runs argv (paths inside the image) chrooted into rootfs as
// the image's user, in its working directory, with the image's environment
// plus env, as PID 1 of a new PID namespace (like a container: SIGTERM and
// SIGKILL from here reach the whole tree) and in its own mount namespace
// holding a /proc that vanishes with it. The test kills it by PID at the end.
func startContainer(t *testing.T, rootfs string, c imageConfig, argv []string, env ...string) *container {
	t.Helper()
	uid, gid := imageUser(t, rootfs, c.Config.User)
	makeDevices(t, rootfs)
	proc := filepath.Join(rootfs, "proc")
	if err := os.MkdirAll(proc, 0o555); err != nil {
		t.Fatal(err)
	}
	// Mounted here, copied into the child's new mount namespace at clone and
	// detached here right after the start: nothing is left mounted on the host.
	if err := syscall.Mount("proc", proc, "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
		t.Fatalf("mount proc: %v", err)
	}
	detach := func() {
		if err := syscall.Unmount(proc, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			t.Errorf("unmount %s: %v", proc, err)
		}
	}

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = c.Config.WorkingDir
	if cmd.Dir == "" {
		cmd.Dir = "/"
	}
	cmd.Env = append(append([]string{}, c.Config.Env...), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Chroot:     rootfs,
		Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}},
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID,
	}
	out := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Start()
	detach()
	if err != nil {
		t.Fatalf("starting %v in %s: %v", argv, rootfs, err)
	}
	ct := &container{t: t, cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		ct.err = cmd.Wait()
		ct.exited = time.Now()
		close(ct.done)
	}()
	t.Cleanup(func() {
		select {
		case <-ct.done:
		default:
			_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
			<-ct.done
		}
		if t.Failed() {
			t.Logf("output of %v:\n%s", argv, out.String())
		}
	})
	return ct
}

func (ct *container) running() bool {
	select {
	case <-ct.done:
		return false
	default:
		return true
	}
}

// waitExit waits up to d for the process to end and returns its exit code.
func (ct *container) waitExit(d time.Duration) (int, bool) {
	select {
	case <-ct.done:
	case <-time.After(d):
		return 0, false
	}
	var ee *exec.ExitError
	if errors.As(ct.err, &ee) {
		return ee.ExitCode(), true
	}
	if ct.err != nil {
		return -1, true
	}
	return 0, true
}

// freePort picks a free port on 127.0.0.1 for proto "tcp" or "udp".
func freePort(t *testing.T, proto string) int {
	t.Helper()
	if proto == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

var httpClient = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
}

type response struct {
	status int
	body   string
	took   time.Duration
}

func request(t *testing.T, method, url string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return response{resp.StatusCode, strings.TrimSpace(string(body)), time.Since(start)}
}

// ------------------------------------------------------------------ plumber-api

func startPlumber(t *testing.T, rootfs string, c imageConfig) (*container, string) {
	t.Helper()
	port := freePort(t, "tcp")
	argv := append(append([]string{}, c.Config.Entrypoint...), c.Config.Cmd...)
	ct := startContainer(t, rootfs, c, argv, "HOST=127.0.0.1", "PORT="+strconv.Itoa(port))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(slow(90 * time.Second))
	for {
		if !ct.running() {
			t.Fatalf("plumber-api exited before answering (%v):\n%s", ct.err, ct.out.String())
		}
		resp, err := httpClient.Get(base + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return ct, base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("plumber-api did not answer /health on %s:\n%s", base, ct.out.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestPlumberAPI runs the plumber-api image without a cluster and exercises
// every endpoint of the design brief.
func TestPlumberAPI(t *testing.T) {
	needRoot(t)
	rootfs, c := unpackImage(t, "plumber-api")

	passwd, err := os.ReadFile(filepath.Join(rootfs, "etc", "passwd"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(passwd), "\nplumber:x:1000:1000:") {
		t.Errorf("/etc/passwd has no user plumber with uid 1000")
	}
	if len(c.Config.Entrypoint) == 0 || filepath.Base(c.Config.Entrypoint[0]) != "tini" {
		t.Errorf("entrypoint %v: want tini first (R as PID 1 ignores SIGTERM)", c.Config.Entrypoint)
	}

	ct, base := startPlumber(t, rootfs, c)

	t.Run("parity", func(t *testing.T) {
		for q, want := range map[string]string{"15": "odd", "4": "even", "-7": "odd", "0": "even", "12345678901234567890": "even"} {
			r := request(t, "GET", base+"/parity?int="+q)
			if r.status != 200 || r.body != want {
				t.Errorf("/parity?int=%s: %d %q, want 200 %q", q, r.status, r.body, want)
			}
		}
		for _, q := range []string{"abc", "1.5", "", "12a"} {
			r := request(t, "GET", base+"/parity?int="+q)
			if r.status != 400 || !strings.Contains(r.body, "integer") {
				t.Errorf("/parity?int=%s: %d %q, want 400 with a message about integers", q, r.status, r.body)
			}
		}
	})

	t.Run("docs", func(t *testing.T) {
		r := request(t, "GET", base+"/__docs__/")
		if r.status != 200 || !strings.Contains(strings.ToLower(r.body), "swagger") {
			t.Errorf("/__docs__/: %d, want 200 with Swagger UI (body starts %.100q)", r.status, r.body)
		}
	})

	t.Run("wait does not block", func(t *testing.T) {
		type result struct {
			r   response
			err error
		}
		done := make(chan result, 1)
		go func() {
			start := time.Now()
			resp, err := httpClient.Get(base + "/wait")
			if err != nil {
				done <- result{err: err}
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			done <- result{r: response{resp.StatusCode, string(body), time.Since(start)}, err: err}
		}()
		time.Sleep(500 * time.Millisecond)
		p := request(t, "GET", base+"/parity?int=15")
		if p.status != 200 || p.body != "odd" {
			t.Errorf("/parity during /wait: %d %q", p.status, p.body)
		}
		if p.took >= time.Second {
			t.Errorf("/parity took %v while /wait was running: /wait blocks the API", p.took)
		}
		res := <-done
		if res.err != nil {
			t.Fatalf("/wait: %v", res.err)
		}
		if res.r.took < 4500*time.Millisecond || res.r.took > slow(9*time.Second) {
			t.Errorf("/wait took %v, want about 5 s", res.r.took)
		}
		var body map[string]any
		if err := json.Unmarshal([]byte(res.r.body), &body); err != nil || res.r.status != 200 {
			t.Fatalf("/wait: %d %q: want JSON (%v)", res.r.status, res.r.body, err)
		}
		if s, ok := body["time"].(string); !ok || s == "" {
			t.Errorf("/wait: %q has no \"time\"", res.r.body)
		}
	})

	t.Run("fail", func(t *testing.T) {
		if r := request(t, "GET", base+"/health"); r.status != 200 || r.body != "OK" {
			t.Fatalf("/health before /fail: %d %q", r.status, r.body)
		}
		if r := request(t, "POST", base+"/fail"); r.status != 200 {
			t.Fatalf("POST /fail: %d %q", r.status, r.body)
		}
		for i := 0; i < 3; i++ {
			if r := request(t, "GET", base+"/health"); r.status != 500 {
				t.Fatalf("/health after /fail: %d %q, want 500", r.status, r.body)
			}
		}
		if r := request(t, "GET", base+"/parity?int=2"); r.body != "even" {
			t.Errorf("/parity after /fail: %q", r.body)
		}
	})

	t.Run("quit", func(t *testing.T) {
		if r := request(t, "POST", base+"/quit"); r.status != 200 {
			t.Errorf("POST /quit: %d %q", r.status, r.body)
		}
		if _, ok := ct.waitExit(slow(10 * time.Second)); !ok {
			t.Fatalf("the process is still running after POST /quit")
		}
	})

	t.Run("SIGTERM", func(t *testing.T) {
		ct, _ := startPlumber(t, rootfs, c)
		sent := time.Now()
		if err := ct.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if _, ok := ct.waitExit(10 * time.Second); !ok {
			t.Fatal("still running 10 s after SIGTERM")
		}
		if took := ct.exited.Sub(sent); took > 2*time.Second {
			t.Errorf("SIGTERM took %v to stop the API, want < 2 s", took)
		}
	})
}

// ------------------------------------------------------------------ coredns

// TestCoreDNS serves a test zone with the image's coredns on 127.0.0.1 and
// resolves a name through it.
func TestCoreDNS(t *testing.T) {
	needRoot(t)
	rootfs, c := unpackImage(t, "coredns")
	env := imagesEnv(t)

	ver, err := exec.Command(filepath.Join(rootfs, c.Config.Entrypoint[0]), "-version").CombinedOutput()
	if err != nil || !strings.Contains(string(ver), env["COREDNS_TAG"]) {
		t.Errorf("coredns -version: %v: %s (want %s)", err, ver, env["COREDNS_TAG"])
	}

	port := freePort(t, "udp")
	corefile := fmt.Sprintf(`.:%d {
    bind 127.0.0.1
    errors
    hosts {
        192.0.2.10 plumber.bramble.test
        fallthrough
    }
    template IN TXT bramble.test {
        answer "{{ .Name }} 60 IN TXT \"served by bramble coredns\""
    }
}
`, port)
	if err := os.MkdirAll(filepath.Join(rootfs, "etc", "coredns"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "etc", "coredns", "Corefile"), []byte(corefile), 0o644); err != nil {
		t.Fatal(err)
	}
	argv := append(append([]string{}, c.Config.Entrypoint...), "-conf", "/etc/coredns/Corefile")
	ct := startContainer(t, rootfs, c, argv)

	resolver := &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		},
	}
	deadline := time.Now().Add(slow(30 * time.Second))
	var addrs []string
	for {
		if !ct.running() {
			t.Fatalf("coredns exited (%v):\n%s", ct.err, ct.out.String())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		addrs, err = resolver.LookupHost(ctx, "plumber.bramble.test.")
		cancel()
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil || len(addrs) != 1 || addrs[0] != "192.0.2.10" {
		t.Fatalf("lookup plumber.bramble.test via coredns: %v %v, want [192.0.2.10]", addrs, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	txt, err := resolver.LookupTXT(ctx, "hello.bramble.test.")
	if err != nil || len(txt) != 1 || txt[0] != "served by bramble coredns" {
		t.Errorf("TXT hello.bramble.test via coredns: %q %v", txt, err)
	}
}

// ------------------------------------------------------------------ traefik

// TestTraefikVersion runs the image's traefik binary.
func TestTraefikVersion(t *testing.T) {
	needRoot(t)
	rootfs, c := unpackImage(t, "traefik")
	out, err := exec.Command(filepath.Join(rootfs, c.Config.Entrypoint[0]), "version").CombinedOutput()
	if err != nil {
		t.Fatalf("traefik version: %v: %s", err, out)
	}
	want := imagesEnv(t)["TRAEFIK_TAG"]
	if !strings.Contains(string(out), "Version:") || !strings.Contains(string(out), want) {
		t.Errorf("traefik version printed %q, want version %s", out, want)
	}
}

// ------------------------------------------------------------------ pause

// TestPause runs the pause binary as PID 1 of a new PID namespace: it must
// reap orphans re-parented to it and exit 0 on SIGTERM and SIGINT.
func TestPause(t *testing.T) {
	needRoot(t)
	testutil.NeedTools(t, "nsenter")
	rootfs, c := unpackImage(t, "pause")
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			ct := startContainer(t, rootfs, c, c.Config.Entrypoint)
			pid := ct.cmd.Process.Pid
			time.Sleep(slow(300 * time.Millisecond))

			// An orphan in pause's PID namespace: sh starts sleep and exits.
			// (sleep must not hold the output pipe, or this would wait for it.)
			out, err := exec.Command("nsenter", "--target", strconv.Itoa(pid), "--pid", "--",
				"/bin/sh", "-c", "sleep 1 </dev/null >/dev/null 2>&1 & exit 0").CombinedOutput()
			if err != nil {
				t.Fatalf("nsenter: %v: %s", err, out)
			}
			if kids := children(pid); len(kids) != 1 {
				ps, _ := exec.Command("ps", "-eo", "pid,ppid,stat,cmd").CombinedOutput()
				t.Errorf("pause (%d) has children %v, want the orphaned sleep\n%s", pid, kids, ps)
			}
			deadline := time.Now().Add(slow(5 * time.Second))
			for len(children(pid)) > 0 && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
			}
			if kids := children(pid); len(kids) > 0 {
				t.Errorf("pause did not reap: children %v left", kids)
			}

			if !ct.running() {
				t.Fatalf("pause exited early: %v\n%s", ct.err, ct.out.String())
			}
			if err := ct.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			code, ok := ct.waitExit(slow(5 * time.Second))
			if !ok || code != 0 {
				t.Errorf("after %v: exited=%v code=%d, want exit 0", sig, ok, code)
			}
		})
	}
}

// children lists the processes whose parent is pid, with their state
// ("S", "Z", ...), from /proc.
func children(pid int) []string {
	entries, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		var ppid, state string
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "PPid:"); ok {
				ppid = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(line, "State:"); ok {
				state = strings.Fields(v)[0]
			}
		}
		if ppid == strconv.Itoa(pid) {
			out = append(out, e.Name()+":"+state)
		}
	}
	return out
}
