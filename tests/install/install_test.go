// Package install tests install.sh for real (root needed): each test unpacks
// a fresh Debian bookworm minbase root filesystem (scripts/testroot.sh,
// cached by `make testroot`), copies install.sh into it and runs it with
// chroot in a PID and mount namespace of its own, against an HTTPS server on
// 127.0.0.1 serving the release layout (bramble-amd64 = bin/bramble, a small
// stand-in for the image tarball, sha256sum-amd64.txt); its certificate comes
// from a test CA that the root filesystem's system store
// (/etc/ssl/certs/ca-certificates.crt, what curl and wget read) trusts. The chroot has no init system: systemd and OpenRC
// are detected the way install.sh detects them (/run/systemd/system and a
// systemctl; /sbin/openrc-run and rc-update), with stub commands that record
// their calls. The uninstall script runs in a network namespace of its own
// too, so its killall step can only touch the chroot's own world.
package install

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bramble-pi/bramble/tests/testutil"
)

const arch = "amd64"

var base struct {
	once sync.Once
	dir  string
	err  error
}

// TestMain removes the unpacked root filesystem the tests share.
func TestMain(m *testing.M) {
	code := m.Run()
	if base.dir != "" {
		os.RemoveAll(base.dir)
	}
	os.Exit(code)
}

// unpackBase unpacks the cached Debian root filesystem once per test run.
func unpackBase(t *testing.T) string {
	t.Helper()
	base.once.Do(func() {
		out, err := exec.Command(filepath.Join(testutil.RepoRoot(t), "scripts", "testroot.sh"), arch).Output()
		if err != nil {
			base.err = fmt.Errorf("scripts/testroot.sh (make testroot builds it): %w", err)
			return
		}
		tarball := strings.TrimSpace(string(out))
		if base.dir, base.err = os.MkdirTemp("", "bramble-install-base-"); base.err != nil {
			return
		}
		start := time.Now()
		cmd := exec.Command("sh", "-c", `zstd -dc "$1" | tar -C "$2" -xf -`, "sh", tarball, base.dir)
		if b, err := cmd.CombinedOutput(); err != nil {
			base.err = fmt.Errorf("unpack %s: %w\n%s", tarball, err, b)
			return
		}
		t.Logf("unpacked %s in %s", filepath.Base(tarball), time.Since(start).Round(time.Millisecond))
	})
	if base.err != nil {
		t.Fatal(base.err)
	}
	return base.dir
}

// rootfs gives the test a fresh copy of the Debian root filesystem: an
// overlay whose lower layer is the shared unpacked tarball.
func rootfs(t *testing.T) string {
	t.Helper()
	testutil.RequireRoot(t)
	if runtime.GOARCH != arch {
		t.Skipf("the install tests serve the %s binary; this is %s", arch, runtime.GOARCH)
	}
	lower := unpackBase(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	for _, d := range []string{"upper", "work", "root"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, filepath.Join(dir, "upper"), filepath.Join(dir, "work"))
	if err := syscall.Mount("overlay", root, "overlay", 0, opts); err != nil {
		t.Fatalf("mount overlay: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(root, 0); err != nil {
			t.Errorf("unmount %s: %v", root, err)
		}
	})
	// The killall step of the uninstall script must never reach the host:
	// without ip and iptables in the chroot it cannot touch interfaces or
	// rules even by mistake.
	for _, p := range []string{"sbin/ip", "bin/ip", "usr/sbin/iptables", "usr/sbin/nft"} {
		if _, err := os.Lstat(filepath.Join(root, p)); err == nil {
			t.Fatalf("the test root has /%s: refusing to run killall in it", p)
		}
	}
	// install.sh may apt-get install iptables and ipset: a recording stand-in
	// (no test reaches a Debian mirror).
	writeFile(t, filepath.Join(root, "usr/bin/apt-get"), "#!/bin/sh\necho \"apt-get $*\" >>/var/log/apt-calls\n", 0o755)
	copyFile(t, filepath.Join(testutil.RepoRoot(t), "install.sh"), filepath.Join(root, "tmp", "install.sh"), 0o755)
	writeFile(t, filepath.Join(root, "etc/ssl/certs/ca-certificates.crt"), string(releaseTLS(t).caPEM), 0o644)
	return root
}

// releaseCA is the test CA and the release server's certificate (for
// 127.0.0.1).
type releaseCA struct {
	once  sync.Once
	caPEM []byte
	cert  tls.Certificate
	err   error
}

var testCA releaseCA

// releaseTLS makes the test CA once per test run.
func releaseTLS(t *testing.T) *releaseCA {
	t.Helper()
	testCA.once.Do(func() {
		key := func() *ecdsa.PrivateKey {
			k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil && testCA.err == nil {
				testCA.err = err
			}
			return k
		}
		caKey, leafKey := key(), key()
		now := time.Now()
		ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bramble install test CA"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign}
		caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
		if err != nil {
			testCA.err = err
			return
		}
		leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
		leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &leafKey.PublicKey, caKey)
		if err != nil {
			testCA.err = err
			return
		}
		testCA.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
		testCA.cert = tls.Certificate{Certificate: [][]byte{leafDER, caDER}, PrivateKey: leafKey}
	})
	if testCA.err != nil {
		t.Fatalf("test CA: %v", testCA.err)
	}
	return &testCA
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dst, string(b), mode)
}

func writeFile(t *testing.T, name, text string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(text), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(name, mode); err != nil {
		t.Fatal(err)
	}
}

func sha256File(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

var binSum struct {
	once sync.Once
	sum  string
}

// binarySHA256 is the sha256 of bin/bramble, computed once.
func binarySHA256(t *testing.T) string {
	t.Helper()
	bin := testutil.Binary(t)
	binSum.once.Do(func() { binSum.sum = sha256File(t, bin) })
	return binSum.sum
}

const imagesName = "bramble-airgap-images-" + arch + ".tar.zst"

// releaseServer serves the release layout on https://127.0.0.1: bramble-amd64 is
// bin/bramble, the image tarball a small stand-in (install.sh only
// downloads, checks and places it; the real one is tested end to end
// elsewhere), sha256sum-amd64.txt lists both. It logs the files served.
type releaseServer struct {
	url string

	mu        sync.Mutex
	images    []byte        // the tarball served
	binSum    string        // the sums file's line for the binary ("" leaves it out)
	imagesSum string        // and for the tarball
	stall     time.Duration // the tarball's second half comes this much later
	served    []string
}

func newRelease(t *testing.T) *releaseServer {
	t.Helper()
	bin := testutil.Binary(t)
	r := &releaseServer{binSum: binarySHA256(t)}
	r.setImages(fakeImages("v1"))
	mux := http.NewServeMux()
	mux.HandleFunc("/bramble-"+arch, func(w http.ResponseWriter, req *http.Request) {
		r.log(req)
		http.ServeFile(w, req, bin)
	})
	mux.HandleFunc("/"+imagesName, func(w http.ResponseWriter, req *http.Request) {
		r.log(req)
		r.mu.Lock()
		b, stall := r.images, r.stall
		r.mu.Unlock()
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		w.Write(b[:len(b)/2])
		w.(http.Flusher).Flush()
		time.Sleep(stall)
		w.Write(b[len(b)/2:])
	})
	mux.HandleFunc("/sha256sum-"+arch+".txt", func(w http.ResponseWriter, req *http.Request) {
		r.log(req)
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.binSum != "" {
			fmt.Fprintf(w, "%s  bramble-%s\n", r.binSum, arch)
		}
		if r.imagesSum != "" {
			fmt.Fprintf(w, "%s  %s\n", r.imagesSum, imagesName)
		}
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{releaseTLS(t).cert}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes of the untrusted-server checks
	srv.StartTLS()
	t.Cleanup(srv.Close)
	r.url = srv.URL
	return r
}

func (r *releaseServer) log(req *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.served = append(r.served, req.Method+" "+req.URL.Path)
}

// setImages serves b as the tarball, listed with its sha256.
func (r *releaseServer) setImages(b []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sum := sha256.Sum256(b)
	r.images, r.imagesSum = b, hex.EncodeToString(sum[:])
}

// update changes what the server serves.
func (r *releaseServer) update(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f()
}

// corruptImages lists b's sha256 but serves b with one bit flipped.
func (r *releaseServer) corruptImages(b []byte) {
	r.setImages(b)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.images = slices.Clone(b)
	r.images[len(b)/3] ^= 1
}

// gets counts the GET requests for a file.
func (r *releaseServer) gets(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.served {
		if s == "GET /"+name {
			n++
		}
	}
	return n
}

// fakeImages is a stand-in image tarball, 256 KiB, different per version.
func fakeImages(version string) []byte {
	return []byte(strings.Repeat("bramble images "+version+"\n", 256<<10)[:256<<10])
}

// requireImages checks the tarball installed in the data dir (relative to
// root): the served content, file 0644 in a 0700 directory.
func requireImages(t *testing.T, root, dataDir string, want []byte) {
	t.Helper()
	dir := filepath.Join(root, dataDir, "agent", "images")
	b, err := os.ReadFile(filepath.Join(dir, imagesName))
	if err != nil {
		t.Fatalf("image tarball: %v", err)
	}
	if string(b) != string(want) {
		t.Errorf("%s/%s differs from the tarball served", dataDir, imagesName)
	}
	requireMode(t, dir, 0o700)
	requireMode(t, filepath.Join(dir, imagesName), 0o644)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("%s holds %d files, want only %s", dir, len(entries), imagesName)
	}
}

// run runs a command in the chroot with a fresh PID and mount namespace
// (proc mounted for it) and, with isolateNet, a network namespace of its
// own. env is all the environment it gets, besides PATH.
func run(t *testing.T, root string, isolateNet bool, env []string, dir string, argv ...string) (string, error) {
	t.Helper()
	args := []string{"--pid", "--fork", "--mount", "--mount-proc=" + filepath.Join(root, "proc")}
	if isolateNet {
		args = append(args, "--net")
	}
	inner := fmt.Sprintf(`cd %s && exec "$@"`, dir)
	args = append(args, "chroot", root, "env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root")
	args = append(args, env...)
	args = append(args, "sh", "-c", inner, "sh")
	args = append(args, argv...)
	cmd := exec.Command("unshare", args...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("%s (%s):\n%s", strings.Join(argv, " "), time.Since(start).Round(time.Millisecond), out)
	return string(out), err
}

func install(t *testing.T, root string, env ...string) (string, error) {
	t.Helper()
	return run(t, root, false, env, "/", "sh", "/tmp/install.sh")
}

func uninstall(t *testing.T, root string) {
	t.Helper()
	if _, err := run(t, root, true, nil, "/", "/usr/local/bin/bramble-uninstall.sh"); err != nil {
		t.Fatalf("uninstall: %v", err)
	}
}

// tree lists every path below root (with its type), except the ones the
// test itself makes and the kernel file systems.
func tree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "proc" || rel == "sys" || rel == "dev" {
			return filepath.SkipDir
		}
		if rel == "tmp/install.sh" || rel == "var/log/calls" || rel == "var/log/apt-calls" || rel == "." {
			return nil
		}
		out = append(out, rel+" "+d.Type().String())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffTrees(before, after []string) (added, removed []string) {
	for _, p := range after {
		if !slices.Contains(before, p) {
			added = append(added, p)
		}
	}
	for _, p := range before {
		if !slices.Contains(after, p) {
			removed = append(removed, p)
		}
	}
	return added, removed
}

func requireSameTree(t *testing.T, before []string, root, when string) {
	t.Helper()
	added, removed := diffTrees(before, tree(t, root))
	if len(added)+len(removed) > 0 {
		t.Errorf("%s: added %q, removed %q", when, added, removed)
	}
}

// stubs installs recording stand-ins for the host's init tools in the
// chroot: each appends "name args" to /var/log/calls.
func stubs(t *testing.T, root string, names ...string) {
	t.Helper()
	for _, n := range names {
		writeFile(t, filepath.Join(root, n), "#!/bin/sh\necho \""+filepath.Base(n)+" $*\" >>/var/log/calls\n", 0o755)
	}
}

func calls(t *testing.T, root string) []string { return logLines(t, root, "var/log/calls") }

// aptCalls are the apt-get commands install.sh ran.
func aptCalls(t *testing.T, root string) []string { return logLines(t, root, "var/log/apt-calls") }

func logLines(t *testing.T, root, name string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, name))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func fakeSystemd(t *testing.T, root string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(root, "run/systemd/system"), 0o755); err != nil {
		t.Fatal(err)
	}
	stubs(t, root, "usr/bin/systemctl")
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func requireMode(t *testing.T, name string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != want {
		t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), want)
	}
}

func requireContains(t *testing.T, what, text string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, text)
		}
	}
}

// requireInstalled checks the binary, the symlinks and the two scripts.
func requireInstalled(t *testing.T, root string) {
	t.Helper()
	bin := filepath.Join(root, "usr/local/bin")
	if got, want := sha256File(t, filepath.Join(bin, "bramble")), binarySHA256(t); got != want {
		t.Errorf("installed bramble differs from bin/bramble")
	}
	requireMode(t, filepath.Join(bin, "bramble"), 0o755)
	for _, l := range []string{"kubectl", "crictl", "ctr"} {
		if target, err := os.Readlink(filepath.Join(bin, l)); err != nil || target != "bramble" {
			t.Errorf("%s: link to %q (%v), want bramble", l, target, err)
		}
	}
	// One killall script: the installed one is the repository's.
	if readFile(t, filepath.Join(bin, "bramble-killall.sh")) != readFile(t, filepath.Join(testutil.RepoRoot(t), "scripts", "bramble-killall.sh")) {
		t.Error("installed bramble-killall.sh differs from scripts/bramble-killall.sh")
	}
	requireMode(t, filepath.Join(bin, "bramble-killall.sh"), 0o755)
	requireMode(t, filepath.Join(bin, "bramble-uninstall.sh"), 0o755)
	shellcheck(t, "-s", "sh", filepath.Join(bin, "bramble-uninstall.sh"))
}

func shellcheck(t *testing.T, args ...string) {
	t.Helper()
	if b, err := exec.Command("shellcheck", args...).CombinedOutput(); err != nil {
		t.Errorf("shellcheck %s: %v\n%s", strings.Join(args, " "), err, b)
	}
}

func TestSystemdServer(t *testing.T) {
	root := rootfs(t)
	fakeSystemd(t, root)
	before := tree(t, root)
	rel := newRelease(t)
	start := time.Now()
	// As `curl -sfL ... | sh -s - ARGS` runs it: the script on stdin.
	// Secrets given as arguments go to the env file, not the unit.
	out, err := run(t, root, false, []string{
		"INSTALL_BRAMBLE_DOWNLOAD_URL=" + rel.url,
		"BRAMBLE_TOKEN=s3cret-token", "BRAMBLE_NODE_NAME=pi1",
		"INSTALL_BRAMBLE_EXEC=server --node-label role=test --datastore-endpoint=postgres://bramble:db-s3cret@db/bramble"},
		"/", "sh", "-c", "sh -s - --agent-token agent-s3cret --disable traefik </tmp/install.sh")
	if err != nil {
		t.Fatalf("install.sh: %v", err)
	}
	t.Logf("install.sh (download, verify, install) took %s", time.Since(start).Round(time.Millisecond))
	requireContains(t, "output", out, "sha256 of bramble-amd64 verified", "installing bramble server for amd64 on Debian GNU/Linux 12 (bookworm)",
		"sha256 of "+imagesName+" verified", "installed /var/lib/bramble/agent/images/"+imagesName)
	requireInstalled(t, root)
	requireImages(t, root, "var/lib/bramble", fakeImages("v1"))

	unit := readFile(t, filepath.Join(root, "etc/systemd/system/bramble.service"))
	requireContains(t, "unit", unit, "Type=notify\n", "KillMode=process\n", "Delegate=yes\n", "Restart=always\n",
		"LimitNOFILE=1048576\n", "TasksMax=infinity\n", "WantedBy=multi-user.target\n",
		"EnvironmentFile=-/etc/systemd/system/bramble.service.env\n",
		"ExecStart=/usr/local/bin/bramble server '--node-label' 'role=test' '--disable' 'traefik'\n")
	envFile := filepath.Join(root, "etc/systemd/system/bramble.service.env")
	requireMode(t, envFile, 0o600)
	if got, want := readFile(t, envFile), "BRAMBLE_AGENT_TOKEN='agent-s3cret'\nBRAMBLE_DATASTORE_ENDPOINT='postgres://bramble:db-s3cret@db/bramble'\n"+
		"BRAMBLE_NODE_NAME='pi1'\nBRAMBLE_TOKEN='s3cret-token'\n"; got != want {
		t.Errorf("env file:\n%s\nwant:\n%s", got, want)
	}
	requireContains(t, "output", out, "--agent-token: written to the environment file as BRAMBLE_AGENT_TOKEN",
		"--datastore-endpoint: written to the environment file as BRAMBLE_DATASTORE_ENDPOINT")
	for _, secret := range []string{"s3cret-token", "agent-s3cret", "db-s3cret"} {
		if strings.Contains(out, secret) || strings.Contains(unit, secret) {
			t.Errorf("install.sh printed %s or put it in the unit", secret)
		}
	}
	// The chroot has neither iptables nor ipset.
	requireContains(t, "output", out, "installing the Debian packages iptables ipset")
	if got, want := aptCalls(t, root), []string{"apt-get install -y --no-install-recommends iptables ipset"}; !slices.Equal(got, want) {
		t.Errorf("apt-get calls %q, want %q", got, want)
	}
	if got, want := calls(t, root), []string{"systemctl daemon-reload", "systemctl enable bramble", "systemctl restart bramble"}; !slices.Equal(got, want) {
		t.Errorf("systemctl calls %q, want %q", got, want)
	}

	// Installing again (an upgrade) works and changes nothing else; the
	// image tarball, unchanged, is not downloaded again.
	upgrade := []string{"INSTALL_BRAMBLE_DOWNLOAD_URL=" + rel.url, "BRAMBLE_TOKEN=s3cret-token", "BRAMBLE_NODE_NAME=pi1", "INSTALL_BRAMBLE_EXEC=--disable traefik"}
	out, err = install(t, root, upgrade...)
	if err != nil {
		t.Fatalf("second install.sh: %v", err)
	}
	requireInstalled(t, root)
	requireContains(t, "second output", out, "/var/lib/bramble/agent/images/"+imagesName+" unchanged")
	if n := rel.gets(imagesName); n != 1 {
		t.Errorf("%s downloaded %d times after the same release twice, want once", imagesName, n)
	}
	requireImages(t, root, "var/lib/bramble", fakeImages("v1"))

	// A release with other images: the tarball is replaced.
	rel.setImages(fakeImages("v2"))
	if _, err := install(t, root, upgrade...); err != nil {
		t.Fatalf("install.sh with new images: %v", err)
	}
	if n := rel.gets(imagesName); n != 2 {
		t.Errorf("%s downloaded %d times, want twice", imagesName, n)
	}
	requireImages(t, root, "var/lib/bramble", fakeImages("v2"))

	// An upgrade whose tarball does not match its checksum changes nothing:
	// not the tarball, not the env file, no service call.
	withV2 := tree(t, root)
	envBefore, callsBefore := readFile(t, envFile), calls(t, root)
	rel.corruptImages(fakeImages("v3"))
	out, err = install(t, root, "INSTALL_BRAMBLE_DOWNLOAD_URL="+rel.url, "BRAMBLE_TOKEN=s3cret-token", "BRAMBLE_NODE_NAME=pi9")
	if err == nil {
		t.Fatal("install.sh accepted a corrupted image tarball")
	}
	requireContains(t, "output", out, "sha256 mismatch for "+imagesName, "nothing was installed")
	requireSameTree(t, withV2, root, "after the refused upgrade")
	requireImages(t, root, "var/lib/bramble", fakeImages("v2"))
	if readFile(t, envFile) != envBefore || !slices.Equal(calls(t, root), callsBefore) {
		t.Error("the refused upgrade changed the env file or called systemctl")
	}

	// The node would have left state behind: uninstall removes it too.
	for _, d := range []string{"var/lib/bramble/server/db", "var/lib/bramble/agent/images", "var/lib/kubelet/pods", "etc/bramble", "var/log/pods", "var/lib/cni/networks"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(root, "etc/bramble/bramble.yaml"), "kubeconfig\n", 0o600)
	uninstall(t, root)
	requireSameTree(t, before, root, "after uninstall")
	c := calls(t, root)
	requireContains(t, "systemctl calls", strings.Join(c, "\n"), "systemctl stop bramble", "systemctl disable bramble")
}

func TestSystemdAgentAndSkips(t *testing.T) {
	root := rootfs(t)
	fakeSystemd(t, root)
	rel := newRelease(t)
	url := rel.url

	// BRAMBLE_URL without BRAMBLE_TOKEN: a clear error, nothing installed.
	before := tree(t, root)
	out, err := install(t, root, "INSTALL_BRAMBLE_DOWNLOAD_URL="+url, "BRAMBLE_URL=https://10.0.0.1:6443")
	if err == nil {
		t.Fatal("agent install without BRAMBLE_TOKEN succeeded")
	}
	requireContains(t, "output", out, "needs BRAMBLE_TOKEN")
	requireSameTree(t, before, root, "after the refused install")
	// A value the env file cannot hold: refused before anything is installed.
	out, err = install(t, root, "INSTALL_BRAMBLE_DOWNLOAD_URL="+url, "BRAMBLE_URL=https://10.0.0.1:6443", "BRAMBLE_TOKEN=it's")
	if err == nil {
		t.Fatal("a token with a quote was accepted")
	}
	requireContains(t, "output", out, "BRAMBLE_TOKEN contains a quote")
	if strings.Contains(out, "it's") {
		t.Error("the refused token was printed")
	}
	requireSameTree(t, before, root, "after the refused token")

	// Agent, enabled but not started, in a data dir of its own. The image
	// tarball comes slowly: install.sh says how far it got meanwhile.
	rel.update(func() { rel.stall = 7 * time.Second })
	out, err = install(t, root, "INSTALL_BRAMBLE_DOWNLOAD_URL="+url, "BRAMBLE_URL=https://10.0.0.1:6443",
		"BRAMBLE_TOKEN=K10abc::server:def", "INSTALL_BRAMBLE_SKIP_START=true", "BRAMBLE_DATA_DIR=/srv/bramble",
		"INSTALL_BRAMBLE_SKIP_PACKAGES=true")
	if err != nil {
		t.Fatal(err)
	}
	if c := aptCalls(t, root); len(c) > 0 {
		t.Errorf("INSTALL_BRAMBLE_SKIP_PACKAGES=true: apt-get ran: %q", c)
	}
	rel.update(func() { rel.stall = 0 })
	requireContains(t, "agent output", out, "sha256 of "+imagesName+" verified", imagesName+": 0.1 MB so far",
		"installed /srv/bramble/agent/images/"+imagesName)
	requireImages(t, root, "srv/bramble", fakeImages("v1"))
	unit := readFile(t, filepath.Join(root, "etc/systemd/system/bramble-agent.service"))
	requireContains(t, "agent unit", unit, "ExecStart=/usr/local/bin/bramble agent\n", "EnvironmentFile=-/etc/systemd/system/bramble-agent.service.env\n")
	env := readFile(t, filepath.Join(root, "etc/systemd/system/bramble-agent.service.env"))
	requireContains(t, "agent env", env, "BRAMBLE_URL='https://10.0.0.1:6443'\n", "BRAMBLE_TOKEN='K10abc::server:def'\n")
	if got, want := calls(t, root), []string{"systemctl daemon-reload", "systemctl enable bramble-agent"}; !slices.Equal(got, want) {
		t.Errorf("SKIP_START: systemctl calls %q, want %q", got, want)
	}
	uninstall(t, root)
	requireSameTree(t, before, root, "after uninstall")

	// SKIP_ENABLE: the unit is written, nothing enabled or started.
	// SKIP_IMAGES: no tarball, not even a checksum for one needed.
	if err := os.Remove(filepath.Join(root, "var/log/calls")); err != nil {
		t.Fatal(err)
	}
	rel.update(func() { rel.imagesSum = "" })
	if _, err := install(t, root, "INSTALL_BRAMBLE_DOWNLOAD_URL="+url, "INSTALL_BRAMBLE_SKIP_ENABLE=true", "INSTALL_BRAMBLE_SYMLINK=skip",
		"INSTALL_BRAMBLE_SKIP_IMAGES=true"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(root, "var/lib/bramble")); err == nil {
		t.Error("INSTALL_BRAMBLE_SKIP_IMAGES=true: /var/lib/bramble was made")
	}
	if n := rel.gets(imagesName); n != 1 {
		t.Errorf("%s downloaded %d times, want once (not with INSTALL_BRAMBLE_SKIP_IMAGES)", imagesName, n)
	}
	if _, err := os.Lstat(filepath.Join(root, "usr/local/bin/kubectl")); err == nil {
		t.Error("INSTALL_BRAMBLE_SYMLINK=skip made a kubectl symlink")
	}
	if got, want := calls(t, root), []string{"systemctl daemon-reload"}; !slices.Equal(got, want) {
		t.Errorf("SKIP_ENABLE: systemctl calls %q, want %q", got, want)
	}
	uninstall(t, root)
	requireSameTree(t, before, root, "after the second uninstall")
}

func TestOpenRC(t *testing.T) {
	root := rootfs(t)
	stubs(t, root, "sbin/openrc-run", "sbin/rc-update", "sbin/rc-service")
	before := tree(t, root)
	if _, err := install(t, root, "INSTALL_BRAMBLE_DOWNLOAD_URL="+newRelease(t).url,
		"INSTALL_BRAMBLE_EXEC=server --node-name pi1 -t tok-s3cret"); err != nil {
		t.Fatal(err)
	}
	requireInstalled(t, root)
	script := filepath.Join(root, "etc/init.d/bramble")
	requireMode(t, script, 0o755)
	text := readFile(t, script)
	requireContains(t, "OpenRC script", text, "#!/sbin/openrc-run\n", "supervisor=supervise-daemon\n",
		"command='/usr/local/bin/bramble'\n", "command_args=\"server '--node-name' 'pi1'\"\n",
		"if [ -f '/etc/bramble/bramble.env' ]; then . '/etc/bramble/bramble.env'; fi\n")
	shellcheck(t, "-s", "sh", script)
	requireMode(t, filepath.Join(root, "etc/bramble/bramble.env"), 0o600)
	if env := readFile(t, filepath.Join(root, "etc/bramble/bramble.env")); env != "BRAMBLE_TOKEN='tok-s3cret'\n" {
		t.Errorf("env file %q, want the token from -t", env)
	}
	if got, want := calls(t, root), []string{"rc-update add bramble default", "rc-service bramble restart"}; !slices.Equal(got, want) {
		t.Errorf("OpenRC calls %q, want %q", got, want)
	}
	// The script's own shell: sourcing it defines the service.
	out, err := exec.Command("sh", "-c", `. "$1"; echo "$command $command_args"`, "sh", script).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "/usr/local/bin/bramble server '--node-name' 'pi1'" {
		t.Errorf("sourcing the OpenRC script: %q %v", out, err)
	}
	uninstall(t, root)
	requireSameTree(t, before, root, "after uninstall")
	requireContains(t, "OpenRC calls", strings.Join(calls(t, root), "\n"), "rc-service bramble stop", "rc-update del bramble default")
}

func TestNoInitWget(t *testing.T) {
	root := rootfs(t)
	// wget instead of curl.
	if err := os.Remove(filepath.Join(root, "usr/bin/curl")); err != nil {
		t.Fatal(err)
	}
	// A kubectl that is not ours stays.
	writeFile(t, filepath.Join(root, "usr/local/bin/kubectl"), "#!/bin/sh\necho mine\n", 0o755)
	before := tree(t, root)
	out, err := install(t, root, "INSTALL_BRAMBLE_DOWNLOAD_URL="+newRelease(t).url)
	if err != nil {
		t.Fatal(err)
	}
	requireImages(t, root, "var/lib/bramble", fakeImages("v1"))
	requireContains(t, "output", out, "sha256 of bramble-amd64 verified", "sha256 of "+imagesName+" verified", "no init system found", "set -a; . /etc/bramble/bramble.env; set +a; exec /usr/local/bin/bramble server", "skipping /usr/local/bin/kubectl")
	if readFile(t, filepath.Join(root, "usr/local/bin/kubectl")) != "#!/bin/sh\necho mine\n" {
		t.Error("a kubectl that is not bramble's was replaced")
	}
	requireMode(t, filepath.Join(root, "etc/bramble/bramble.env"), 0o600)
	if _, err := os.Lstat(filepath.Join(root, "etc/systemd/system/bramble.service")); err == nil {
		t.Error("a systemd unit without systemd")
	}
	uninstall(t, root)
	requireSameTree(t, before, root, "after uninstall")
}

func TestChecksumMismatch(t *testing.T) {
	root := rootfs(t)
	fakeSystemd(t, root)
	before := tree(t, root)
	rel := newRelease(t)
	refused := func(what string, want ...string) {
		t.Helper()
		out, err := install(t, root, "INSTALL_BRAMBLE_DOWNLOAD_URL="+rel.url)
		if err == nil {
			t.Fatalf("install.sh succeeded with %s", what)
		}
		requireContains(t, "output", out, want...)
		requireSameTree(t, before, root, "after the install with "+what)
		if c := calls(t, root); len(c) > 0 {
			t.Errorf("systemctl called: %q", c)
		}
	}
	rel.update(func() { rel.binSum = strings.Repeat("0", 64) })
	refused("a wrong checksum of the binary", "sha256 mismatch for bramble-amd64", "nothing was installed")
	rel.update(func() { rel.binSum = binarySHA256(t) })
	rel.corruptImages(fakeImages("v1"))
	refused("a corrupted image tarball", "sha256 mismatch for "+imagesName, "nothing was installed")
	// A sums file without the tarball: refused before any download.
	rel.update(func() { rel.imagesSum = "" })
	n := rel.gets("bramble-" + arch)
	refused("no checksum for the image tarball", "sha256sum-amd64.txt at "+rel.url+" lists no "+imagesName, "nothing was installed", "INSTALL_BRAMBLE_SKIP_IMAGES=true")
	if rel.gets("bramble-"+arch) != n {
		t.Error("the binary was downloaded although the sums file lists no image tarball")
	}
	// A server that is not there: a clear download error, nothing installed.
	out, err := install(t, root, "INSTALL_BRAMBLE_DOWNLOAD_URL=https://127.0.0.1:9/nothing")
	if err == nil {
		t.Fatal("install.sh succeeded without a server")
	}
	requireContains(t, "output", out, "download of https://127.0.0.1:9/nothing/sha256sum-amd64.txt failed")
	requireSameTree(t, before, root, "after the failed download")
}

// Downloads are https only, from a server whose certificate the system
// trusts: plain http is refused before anything is fetched, and so is a
// server with a certificate of another CA, with curl and with wget.
func TestDownloadNeedsTrustedHTTPS(t *testing.T) {
	root := rootfs(t)
	before := tree(t, root)
	plain := httptest.NewServer(http.NotFoundHandler())
	defer plain.Close()
	out, err := install(t, root, "INSTALL_BRAMBLE_DOWNLOAD_URL="+plain.URL)
	if err == nil {
		t.Fatal("install.sh accepted an http:// download URL")
	}
	requireContains(t, "output", out, "INSTALL_BRAMBLE_DOWNLOAD_URL is http://, refused")
	// httptest's own certificate; a sums file a client that does not
	// verify would take (and then fail later, at another file).
	untrusted := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "%s  bramble-%s\n%s  %s\n", binarySHA256(t), arch, strings.Repeat("0", 64), imagesName)
	}))
	untrusted.Config.ErrorLog = log.New(io.Discard, "", 0)
	defer untrusted.Close()
	for _, tool := range []string{"curl", "wget"} {
		out, err = install(t, root, "INSTALL_BRAMBLE_DOWNLOAD_URL="+untrusted.URL)
		if err == nil {
			t.Fatalf("%s: install.sh downloaded from a server it cannot verify", tool)
		}
		requireContains(t, tool+" output", out, "download of "+untrusted.URL+"/sha256sum-amd64.txt failed")
		requireSameTree(t, before, root, tool+": after the untrusted server")
		if tool == "curl" {
			// The next round with wget.
			if err := os.Rename(filepath.Join(root, "usr/bin/curl"), filepath.Join(root, "usr/bin/curl.off")); err != nil {
				t.Fatal(err)
			}
			before = tree(t, root)
		}
	}
}

// A data dir the uninstall script would wipe a system directory with is
// refused at install (as a variable and as an argument), and the
// uninstall script refuses one that became a link to such a directory.
func TestRefusesSystemDataDir(t *testing.T) {
	root := rootfs(t)
	fakeSystemd(t, root)
	before := tree(t, root)
	rel := newRelease(t)
	for _, env := range [][]string{
		{"BRAMBLE_DATA_DIR=/var"},
		{"BRAMBLE_DATA_DIR=/home/pi/"},
		{"INSTALL_BRAMBLE_EXEC=server --data-dir /usr"},
		{"INSTALL_BRAMBLE_EXEC=server -d=/etc/bramble"},
	} {
		out, err := install(t, root, append(env, "INSTALL_BRAMBLE_DOWNLOAD_URL="+rel.url)...)
		if err == nil {
			t.Fatalf("%s: installed", env)
		}
		requireContains(t, fmt.Sprint(env, " output"), out, "a system directory", "cannot be bramble's data dir", "nothing was installed")
		requireSameTree(t, before, root, fmt.Sprint("after ", env))
	}
	if n := rel.gets(imagesName); n != 0 {
		t.Errorf("the image tarball was downloaded %d times for refused installs", n)
	}

	if _, err := install(t, root, "INSTALL_BRAMBLE_DOWNLOAD_URL="+rel.url, "BRAMBLE_DATA_DIR=/srv/bramble"); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(root, "srv/bramble")
	if err := os.Rename(data, data+".real"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/var", data); err != nil {
		t.Fatal(err)
	}
	installed := tree(t, root)
	out, err := run(t, root, true, nil, "/", "/usr/local/bin/bramble-uninstall.sh")
	if err == nil {
		t.Fatal("the uninstall script ran with the data dir a link to /var")
	}
	requireContains(t, "uninstall output", out, "refusing to clean up '/srv/bramble': it is /var, a system directory")
	requireSameTree(t, installed, root, "after the refused uninstall")
	if err := os.Remove(data); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(data+".real", data); err != nil {
		t.Fatal(err)
	}
	uninstall(t, root)
	requireSameTree(t, before, root, "after uninstall")
}

// TestAirgap installs with no network at all (a network namespace with only
// a loopback that is down) from files in the current directory.
func TestAirgap(t *testing.T) {
	root := rootfs(t)
	repo := testutil.RepoRoot(t)
	images := filepath.Join(repo, "dist", "bramble-airgap-images-"+arch+".tar.zst")
	if _, err := os.Stat(images); err != nil {
		t.Fatalf("%s missing: `make airgap` builds it (make test does): %v", images, err)
	}
	before := tree(t, root)
	dir := filepath.Join(root, "root", "bundle")
	copyFile(t, testutil.Binary(t), filepath.Join(dir, "bramble-"+arch), 0o755)
	copyFile(t, images, filepath.Join(dir, filepath.Base(images)), 0o644)
	writeFile(t, filepath.Join(dir, "sha256sum-"+arch+".txt"),
		binarySHA256(t)+"  bramble-"+arch+"\n"+sha256File(t, images)+"  "+imagesName+"\n", 0o644)
	withBundle := tree(t, root)

	out, err := run(t, root, true, []string{"INSTALL_BRAMBLE_SKIP_DOWNLOAD=true", "BRAMBLE_DATA_DIR=/srv/bramble"}, "/root/bundle", "sh", "/tmp/install.sh")
	if err != nil {
		t.Fatal(err)
	}
	requireContains(t, "output", out, "sha256 of bramble-amd64 verified", "sha256 of "+imagesName+" verified", "installed /srv/bramble/agent/images/"+imagesName)
	if strings.Contains(out, "downloading") {
		t.Error("the air-gapped install downloaded something")
	}
	requireInstalled(t, root)
	if sha256File(t, filepath.Join(root, "srv/bramble/agent/images", filepath.Base(images))) != sha256File(t, images) {
		t.Error("the image tarball in the data dir differs")
	}
	requireContains(t, "env file", readFile(t, filepath.Join(root, "etc/bramble/bramble.env")), "BRAMBLE_DATA_DIR='/srv/bramble'\n")
	if c := aptCalls(t, root); len(c) > 0 {
		t.Errorf("the air-gapped install ran apt-get: %q", c)
	}

	uninstall(t, root)
	requireSameTree(t, withBundle, root, "after uninstall")
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	requireSameTree(t, before, root, "without the bundle")

	// A local directory as the download URL: the same checks as a
	// download (the sums file required), no network.
	copyFile(t, testutil.Binary(t), filepath.Join(dir, "bramble-"+arch), 0o755)
	copyFile(t, images, filepath.Join(dir, filepath.Base(images)), 0o644)
	writeFile(t, filepath.Join(dir, "sha256sum-"+arch+".txt"),
		binarySHA256(t)+"  bramble-"+arch+"\n"+sha256File(t, images)+"  "+imagesName+"\n", 0o644)
	out, err = run(t, root, true, []string{"INSTALL_BRAMBLE_DOWNLOAD_URL=/root/bundle"}, "/", "sh", "/tmp/install.sh")
	if err != nil {
		t.Fatal(err)
	}
	requireContains(t, "output", out, "downloading file:///root/bundle/bramble-amd64", "sha256 of bramble-amd64 verified", "sha256 of "+imagesName+" verified")
	requireInstalled(t, root)
	uninstall(t, root)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	requireSameTree(t, before, root, "after uninstalling the install from a directory")

	// Without the files: a clear error naming the directory.
	out, err = run(t, root, true, []string{"INSTALL_BRAMBLE_SKIP_DOWNLOAD=true"}, "/root", "sh", "/tmp/install.sh")
	if err == nil {
		t.Fatal("air-gapped install without a binary succeeded")
	}
	requireContains(t, "output", out, "air-gapped install: no bramble-amd64 or bramble in /root")
	requireSameTree(t, before, root, "after the failed air-gapped install")
}

// TestFixCgroups: a Raspberry Pi (the pi-bookworm sample of pkg/hostcheck,
// memory cgroup switched off by the firmware) gets its cmdline.txt fixed by
// INSTALL_BRAMBLE_FIX_CGROUPS=true, through bramble check-config.
func TestFixCgroups(t *testing.T) {
	root := rootfs(t)
	sample := filepath.Join(testutil.RepoRoot(t), "pkg", "hostcheck", "testdata", "pi-bookworm")
	pi := filepath.Join(root, "pi")
	if b, err := exec.Command("cp", "-a", sample, pi).CombinedOutput(); err != nil {
		t.Fatalf("copy sample: %v\n%s", err, b)
	}
	cmdline := filepath.Join(pi, "boot/firmware/cmdline.txt")
	old := readFile(t, cmdline)
	dir := filepath.Join(root, "root")
	copyFile(t, testutil.Binary(t), filepath.Join(dir, "bramble"), 0o755)
	env := []string{"INSTALL_BRAMBLE_SKIP_DOWNLOAD=true", "BRAMBLE_HOST_ROOT=/pi"}

	out, err := run(t, root, true, env, "/root", "sh", "/tmp/install.sh")
	if err != nil {
		t.Fatal(err)
	}
	requireContains(t, "output without the fix", out, "[MISSING] cgroup controller memory:", "/boot/firmware/cmdline.txt", "INSTALL_BRAMBLE_FIX_CGROUPS=true")
	if readFile(t, cmdline) != old {
		t.Fatal("cmdline.txt changed without INSTALL_BRAMBLE_FIX_CGROUPS")
	}

	out, err = run(t, root, true, append(env, "INSTALL_BRAMBLE_FIX_CGROUPS=true"), "/root", "sh", "/tmp/install.sh")
	if err != nil {
		t.Fatal(err)
	}
	want := strings.TrimSuffix(old, "\n") + " cgroup_memory=1 cgroup_enable=memory\n"
	if got := readFile(t, cmdline); got != want {
		t.Fatalf("cmdline.txt:\n%q\nwant\n%q", got, want)
	}
	if readFile(t, cmdline+".bramble-backup") != old {
		t.Error("no backup of the old cmdline.txt")
	}
	requireContains(t, "output with the fix", out, "edited /pi/boot/firmware/cmdline.txt", "reboot", "after:  "+strings.TrimSuffix(want, "\n"))
	if strings.Contains(readFile(t, filepath.Join(root, "etc/bramble/bramble.env")), "HOST_ROOT") {
		t.Error("the test hook BRAMBLE_HOST_ROOT landed in the env file")
	}

	// Again: already fixed, nothing changes.
	out, err = run(t, root, true, append(env, "INSTALL_BRAMBLE_FIX_CGROUPS=true"), "/root", "sh", "/tmp/install.sh")
	if err != nil {
		t.Fatal(err)
	}
	requireContains(t, "output of the second fix", out, "already enables the memory cgroup")
	if got := readFile(t, cmdline); got != want {
		t.Errorf("second run changed cmdline.txt to %q", got)
	}
}
