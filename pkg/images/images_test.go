package images

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"

	"github.com/bramble-pi/bramble/pkg/bundle"
	"github.com/bramble-pi/bramble/tests/testutil"
)

func newTestLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testContainerd is a containerd daemon the test started.
type testContainerd struct {
	client      *client.Client
	snapshotter string
	dir         string
}

// containerdBinary is $BRAMBLE_TEST_CONTAINERD, else bramble's own
// containerd, unpacked from the helper bundle this test binary embeds (built
// with the tag bramble_assets, as `make test` does).
func containerdBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("BRAMBLE_TEST_CONTAINERD"); p != "" {
		return p
	}
	bin, err := bundle.Extract(t.TempDir(), nil)
	if err != nil {
		testutil.SkipOrFail(t, fmt.Sprintf("no containerd: run `make test` (it embeds the helper bundle) or set BRAMBLE_TEST_CONTAINERD: %v", err))
	}
	return filepath.Join(bin, "containerd")
}

// startContainerd runs a private containerd with everything under a temp
// dir and stops it (by PID) and unmounts what it left when the test ends.
func startContainerd(t *testing.T) *testContainerd {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run containerd")
	}
	bin := containerdBinary(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "containerd.sock")
	config := fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.snapshotter.v1.erofs",
  "io.containerd.nri.v1.nri",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[plugins.'io.containerd.internal.v1.opt']
  path = %[5]q

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = [%[6]q]
    conf_dir = %[7]q

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"

[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc",
		filepath.Join(dir, "opt"), filepath.Join(dir, "cni", "bin"), filepath.Join(dir, "cni", "conf"))
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "containerd.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", cfgPath, "--log-level", "info")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	tc := &testContainerd{dir: dir}
	t.Cleanup(func() {
		if tc.client != nil {
			_ = tc.client.Close()
		}
		pid := cmd.Process.Pid
		_ = syscall.Kill(pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(pid, syscall.SIGKILL)
			<-exited
		}
		logFile.Close()
		unmountUnder(t, dir)
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("containerd log:\n%s", lastLines(string(b), 40))
			}
		}
	})

	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-exited:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("containerd exited: %v\n%s", err, lastLines(string(b), 40))
		default:
		}
		if _, err := os.Stat(sock); err == nil {
			c, err := client.New(sock, client.WithDefaultNamespace(DefaultNamespace), client.WithTimeout(5*time.Second))
			if err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				ok, err := c.IsServing(ctx)
				cancel()
				if err == nil && ok {
					tc.client = c
					break
				}
				c.Close()
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logPath)
			t.Fatalf("containerd did not serve within 60s\n%s", lastLines(string(b), 40))
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Use overlayfs when the snapshotter loaded on this filesystem, else native.
	tc.snapshotter = "overlayfs"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := tc.client.IntrospectionService().Plugins(ctx, "type==io.containerd.snapshotter.v1,id==overlayfs")
	if err != nil || len(resp.Plugins) == 0 || resp.Plugins[0].GetInitErr() != nil {
		tc.snapshotter = "native"
	}
	t.Logf("containerd serving after %s, snapshotter %s", time.Since(start).Round(time.Millisecond), tc.snapshotter)
	return tc
}

// unmountUnder unmounts every mount below dir, deepest first, lazily when a
// plain unmount fails.
func unmountUnder(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Logf("read mountinfo: %v", err)
		return
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := strings.ReplaceAll(fields[4], `\040`, " ")
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			points = append(points, mp)
		}
	}
	sort.Slice(points, func(i, j int) bool { return strings.Count(points[i], "/") > strings.Count(points[j], "/") })
	for _, mp := range points {
		if err := syscall.Unmount(mp, 0); err != nil {
			if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil {
				t.Logf("unmount %s: %v", mp, err)
			}
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// checkImage asserts that name is in the k8s.io namespace, labelled for CRI,
// unpacked, and not in the default namespace.
func (tc *testContainerd) checkImage(t *testing.T, name string) {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), DefaultNamespace)
	img, err := tc.client.ImageService().Get(ctx, name)
	if err != nil {
		t.Errorf("image %s in %s: %v", name, DefaultNamespace, err)
		return
	}
	if img.Labels[criImageLabel] != criImageLabelValue || img.Labels[criPinnedLabel] != criPinnedLabelValue {
		t.Errorf("image %s labels = %v", name, img.Labels)
	}
	ok, err := client.NewImage(tc.client, img).IsUnpacked(ctx, tc.snapshotter)
	if err != nil || !ok {
		t.Errorf("image %s unpacked for %s: %v %v", name, tc.snapshotter, ok, err)
	}
	if _, err := tc.client.ImageService().Get(namespaces.WithNamespace(context.Background(), "default"), name); !errdefs.IsNotFound(err) {
		t.Errorf("image %s should not be in the default namespace (err %v)", name, err)
	}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestImportDir(t *testing.T) {
	tc := startContainerd(t)
	ctx := context.Background()

	imgA := testImage{name: "docker.io/bramble-test/oci-a:v1", file: "a.txt", content: "hello from a\n"}
	imgB := testImage{name: "bramble-test/docker-b:v2", file: "b.txt", content: "hello from b\n"}
	imgC := testImage{name: "docker.io/bramble-test/oci-c:v3", file: "c.txt", content: "hello from c\n"}
	imgD := testImage{name: "docker.io/bramble-test/never:v1", file: "d.txt", content: "never imported\n"}
	const nameB = "docker.io/bramble-test/docker-b:v2"

	dir := filepath.Join(tc.dir, "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "a.tar"), ociArchive(t, imgA))
	writeFile(t, filepath.Join(dir, "b.tar.zst"), zstdBytes(t, dockerArchive(t, imgB)))
	writeFile(t, filepath.Join(dir, "c.tgz"), gzipBytes(t, ociArchive(t, imgC)))
	writeFile(t, filepath.Join(dir, "README.txt"), []byte("not an archive\n"))
	// Bad archives: garbage, a truncated zstd stream, a layer whose bytes
	// no longer match its digest.
	writeFile(t, filepath.Join(dir, "garbage.tar"), bytes.Repeat([]byte("garbage!"), 200))
	full := zstdBytes(t, ociArchive(t, imgD))
	writeFile(t, filepath.Join(dir, "truncated.tar.zst"), full[:len(full)*2/3])
	corrupt := ociArchive(t, imgD)
	i := bytes.Index(corrupt, []byte("never imported"))
	if i < 0 {
		t.Fatal("layer content not found in archive")
	}
	corrupt[i] = 'N'
	writeFile(t, filepath.Join(dir, "corrupt-layer.tar"), corrupt)

	var logs testutil.SyncBuffer
	statePath := filepath.Join(tc.dir, "state", "bramble-images.json")
	im := New(tc.client, statePath, newTestLogger(&logs))
	im.Snapshotter = tc.snapshotter

	// First run: the good archives import, each bad one is named.
	start := time.Now()
	err := im.ImportDir(ctx, dir)
	t.Logf("first ImportDir took %s, err: %v", time.Since(start).Round(time.Millisecond), err)
	if err == nil {
		t.Fatal("ImportDir with bad archives succeeded")
	}
	for _, bad := range []string{"garbage.tar", "truncated.tar.zst", "corrupt-layer.tar"} {
		if !strings.Contains(err.Error(), filepath.Join(dir, bad)) {
			t.Errorf("error does not name %s: %v", bad, err)
		}
	}
	if !strings.Contains(err.Error(), "or the blob is corrupt") {
		t.Errorf("corrupt layer error lacks the hint: %v", err)
	}
	for _, good := range []string{"a.tar", "b.tar.zst", "c.tgz", "README"} {
		if strings.Contains(err.Error(), good) {
			t.Errorf("error names %s: %v", good, err)
		}
	}
	for _, n := range []string{imgA.name, nameB, imgC.name} {
		tc.checkImage(t, n)
	}
	nsCtx := namespaces.WithNamespace(ctx, DefaultNamespace)
	if _, err := tc.client.ImageService().Get(nsCtx, imgD.name); !errdefs.IsNotFound(err) {
		t.Errorf("image %s from the corrupt archive should not be left behind (err %v)", imgD.name, err)
	}
	if got := strings.Count(logs.String(), `msg="imported image archive"`); got != 3 {
		t.Errorf("imported %d archives, want 3; logs:\n%s", got, logs.String())
	}
	if !strings.Contains(logs.String(), "file=b.tar.zst") || !strings.Contains(logs.String(), "images=["+nameB+"]") {
		t.Errorf("import log line lacks file or images:\n%s", logs.String())
	}
	fi, err := os.Stat(statePath)
	if err != nil {
		t.Fatalf("state file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", fi.Mode().Perm())
	}

	// Second run: the good archives are skipped, the bad ones fail again.
	logs.Reset()
	start = time.Now()
	err = im.ImportDir(ctx, dir)
	t.Logf("second ImportDir took %s", time.Since(start).Round(time.Millisecond))
	if err == nil || !strings.Contains(err.Error(), "garbage.tar") {
		t.Fatalf("second ImportDir: err = %v", err)
	}
	if got := strings.Count(logs.String(), `msg="imported image archive"`); got != 0 {
		t.Errorf("second run imported %d archives, want 0; logs:\n%s", got, logs.String())
	}
	if got := strings.Count(logs.String(), "image archive unchanged, skipped"); got != 3 {
		t.Errorf("second run skipped %d archives, want 3; logs:\n%s", got, logs.String())
	}

	// Bad archives removed, one image deleted from containerd, one archive
	// touched: exactly those two are imported again.
	for _, bad := range []string{"garbage.tar", "truncated.tar.zst", "corrupt-layer.tar"} {
		if err := os.Remove(filepath.Join(dir, bad)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tc.client.ImageService().Delete(nsCtx, nameB); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(filepath.Join(dir, "c.tgz"), later, later); err != nil {
		t.Fatal(err)
	}
	logs.Reset()
	if err := im.ImportDir(ctx, dir); err != nil {
		t.Fatalf("third ImportDir: %v", err)
	}
	out := logs.String()
	if got := strings.Count(out, `msg="imported image archive"`); got != 2 ||
		!strings.Contains(out, "file=b.tar.zst") || !strings.Contains(out, "file=c.tgz") {
		t.Errorf("third run should import b.tar.zst and c.tgz only; logs:\n%s", out)
	}
	if !strings.Contains(out, "images are missing from containerd") {
		t.Errorf("third run does not say why b.tar.zst is imported again:\n%s", out)
	}
	for _, n := range []string{imgA.name, nameB, imgC.name} {
		tc.checkImage(t, n)
	}
	st, err := loadState(statePath)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range st.Files {
		keys = append(keys, filepath.Base(k))
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"a.tar", "b.tar.zst", "c.tgz"}) {
		t.Errorf("state lists %v", keys)
	}

	// A missing directory is nothing to import.
	if err := im.ImportDir(ctx, filepath.Join(tc.dir, "nope")); err != nil {
		t.Errorf("missing dir: %v", err)
	}
}

func TestImportReader(t *testing.T) {
	tc := startContainerd(t)
	ctx := context.Background()
	var logs testutil.SyncBuffer
	im := New(tc.client, filepath.Join(tc.dir, "images.json"), newTestLogger(&logs))
	im.Snapshotter = tc.snapshotter

	pause := testImage{name: "docker.io/bramble/pause:test", file: "pause", content: "#!/bin/sh\nsleep infinity\n"}
	archive := zstdBytes(t, ociArchive(t, pause))
	if err := im.ImportReader(ctx, "embedded pause", bytes.NewReader(archive)); err != nil {
		t.Fatalf("ImportReader: %v", err)
	}
	tc.checkImage(t, pause.name)
	if !strings.Contains(logs.String(), `msg="imported image archive" file="embedded pause"`) {
		t.Errorf("logs:\n%s", logs.String())
	}

	logs.Reset()
	if err := im.ImportReader(ctx, "embedded pause", bytes.NewReader(archive)); err != nil {
		t.Fatalf("second ImportReader: %v", err)
	}
	if strings.Contains(logs.String(), "imported image archive") || !strings.Contains(logs.String(), "images already present, skipped") {
		t.Errorf("second ImportReader should skip; logs:\n%s", logs.String())
	}

	err := im.ImportReader(ctx, "broken embedded", strings.NewReader("definitely not an archive"))
	if err == nil || !strings.Contains(err.Error(), "broken embedded") {
		t.Errorf("broken archive: err = %v", err)
	}
}

// TestImportBuiltImages imports the images another build step writes to
// dist/images/<arch> (busybox and pause), when they are there.
func TestImportBuiltImages(t *testing.T) {
	var files []string
	for _, n := range []string{"busybox.tar", "pause.tar"} {
		p := filepath.Join("..", "..", "dist", "images", runtime.GOARCH, n)
		if _, err := os.Stat(p); err == nil {
			files = append(files, p)
		}
	}
	if len(files) == 0 {
		t.Skip("no dist/images/" + runtime.GOARCH + "/{busybox,pause}.tar (built by the images step)")
	}
	tc := startContainerd(t)
	ctx := context.Background()
	dir := filepath.Join(tc.dir, "airgap")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, p := range files {
		abs, err := filepath.Abs(p)
		if err != nil {
			t.Fatal(err)
		}
		// A symlink, as a user might drop one into the images dir.
		if err := os.Symlink(abs, filepath.Join(dir, filepath.Base(p))); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		names, err := archiveImageNames(f, New(nil, "", nil).platform())
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		want = append(want, names...)
	}
	var logs testutil.SyncBuffer
	im := New(tc.client, filepath.Join(tc.dir, "images.json"), newTestLogger(&logs))
	im.Snapshotter = tc.snapshotter
	start := time.Now()
	if err := im.ImportDir(ctx, dir); err != nil {
		t.Fatalf("ImportDir: %v", err)
	}
	t.Logf("imported %v in %s", want, time.Since(start).Round(time.Millisecond))
	for _, n := range want {
		tc.checkImage(t, n)
	}
}
