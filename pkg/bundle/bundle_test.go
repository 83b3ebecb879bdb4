package bundle

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bramble-pi/bramble/pkg/unpack"
	"github.com/bramble-pi/bramble/pkg/unpack/unpacktest"
)

// Set in a subprocess started by TestExtractConcurrent: extract and exit.
const childEnv = "BRAMBLE_BUNDLE_TEST_EXTRACT_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		// Say we are ready, then wait for the parent to close stdin.
		fmt.Println("ready")
		_, _ = io.Copy(io.Discard, os.Stdin)
		bin, err := Extract(dir, nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(bin)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func needArchive(t *testing.T) {
	t.Helper()
	if len(archive) == 0 {
		t.Skip("built without the helper archive")
	}
}

// recorder is a slog handler that keeps records at min and above (Info
// unless set).
type recorder struct {
	mu   sync.Mutex
	min  slog.Level
	msgs []string
}

func (r *recorder) Enabled(_ context.Context, l slog.Level) bool { return l >= r.min }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, rec.Level.String()+" "+rec.Message)
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }
func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.msgs
	r.msgs = nil
	return m
}

func run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

func checkRuns(t *testing.T, bin string) {
	t.Helper()
	if out := run(t, nil, filepath.Join(bin, "runc"), "--version"); !strings.Contains(out, "runc version") {
		t.Errorf("runc --version: %q", out)
	}
	out := run(t, []string{"CNI_COMMAND=VERSION"}, filepath.Join(bin, "bridge"))
	if !strings.Contains(out, "cniVersion") || !strings.Contains(out, "supportedVersions") {
		t.Errorf("bridge VERSION: %q", out)
	}
	if out := run(t, nil, filepath.Join(bin, "containerd-shim-runc-v2"), "-v"); !strings.Contains(out, "v2.") {
		t.Errorf("shim -v: %q", out)
	}
	// Stamped with the release tag: "crictl version v1.36.0".
	if out := run(t, nil, filepath.Join(bin, "crictl"), "--version"); !strings.HasPrefix(out, "crictl version v1.") {
		t.Errorf("crictl --version: %q", out)
	}
}

// checkLayout asserts dataDir/data holds exactly one complete hash dir.
func checkLayout(t *testing.T, dataDir string) {
	t.Helper()
	base := filepath.Join(dataDir, "data")
	entries, err := os.ReadDir(base)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	// os.ReadDir sorts by name, and where the hash sorts depends on its first digit.
	want := []string{unpack.LockName, Hash(), currentLink}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("data dir holds %v, want %v", names, want)
	}
	if cur, err := os.Readlink(filepath.Join(base, currentLink)); err != nil || cur != Hash() {
		t.Errorf("current -> %q (%v), want %s", cur, err, Hash())
	}
	if err := Verify(dataDir); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

func TestHash(t *testing.T) {
	needArchive(t)
	sum := sha256.Sum256(archive)
	if want := hex.EncodeToString(sum[:])[:unpack.HashLen]; Hash() != want {
		t.Fatalf("Hash() = %q, archive sha256 starts %q (stale .sha256 sidecar?)", Hash(), want)
	}
}

func TestExtract(t *testing.T) {
	needArchive(t)
	dir := t.TempDir()
	rec := &recorder{}
	log := slog.New(rec)

	start := time.Now()
	bin, err := Extract(dir, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first Extract: %v (archive %d bytes)", time.Since(start), len(archive))
	if want := filepath.Join(dir, "data", Hash(), "bin"); bin != want {
		t.Fatalf("Extract = %s, want %s", bin, want)
	}
	if msgs := rec.take(); len(msgs) != 2 || msgs[0] != "INFO extracting helper binaries" {
		t.Errorf("first extraction logged %q", msgs)
	}
	for _, name := range []string{"runc", "containerd-shim-runc-v2", "bridge", "host-local", "loopback", "portmap", "crictl"} {
		fi, err := os.Stat(filepath.Join(bin, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != 0o755 {
			t.Errorf("%s: mode %v", name, fi.Mode())
		}
	}
	if fi, err := os.Stat(bin); err != nil || fi.Mode() != fs0755Dir {
		t.Errorf("bin dir: %v %v", fi.Mode(), err)
	}
	checkRuns(t, bin)
	checkLayout(t, dir)

	before, _ := os.Stat(filepath.Join(bin, "runc"))
	start = time.Now()
	rec.min = slog.LevelDebug
	bin2, err := Extract(dir, log)
	rec.min = slog.LevelInfo
	if err != nil || bin2 != bin {
		t.Fatalf("second Extract = %s, %v", bin2, err)
	}
	t.Logf("second Extract: %v", time.Since(start))
	// The cheap path (a stat of each file against the manifest, no lock, no
	// unpacking) is the one that says only this, at Debug.
	if msgs := rec.take(); !slices.Equal(msgs, []string{"DEBUG helper binaries present"}) {
		t.Errorf("second Extract logged %q, want only the cheap path's Debug line", msgs)
	}
	after, _ := os.Stat(filepath.Join(bin, "runc"))
	if !os.SameFile(before, after) || !before.ModTime().Equal(after.ModTime()) {
		t.Error("second Extract rewrote runc")
	}

	start = time.Now()
	if err := Verify(dir); err != nil {
		t.Fatal(err)
	}
	t.Logf("Verify (sha256 of every file): %v", time.Since(start))
}

const fs0755Dir = os.ModeDir | 0o755

func TestExtractConcurrent(t *testing.T) {
	needArchive(t)
	dir := t.TempDir()

	// Two subprocesses, started first and held at a barrier (their stdin).
	type child struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		out   *bufio.Reader
		err   bytes.Buffer
	}
	var children []*child
	for range 2 {
		c := &child{cmd: exec.Command(os.Args[0], "-test.run=^$")}
		c.cmd.Env = append(os.Environ(), childEnv+"="+dir)
		c.cmd.Stderr = &c.err
		var err error
		if c.stdin, err = c.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		stdout, err := c.cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		c.out = bufio.NewReader(stdout)
		if err := c.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if line, err := c.out.ReadString('\n'); line != "ready\n" {
			t.Fatalf("child: %q, %v", line, err)
		}
		children = append(children, c)
	}

	var wg sync.WaitGroup
	start := make(chan struct{})
	bins := make([]string, 8)
	errs := make([]error, 8)
	for i := range 8 {
		wg.Go(func() {
			<-start
			bins[i], errs[i] = Extract(dir, nil)
		})
	}
	for _, c := range children {
		c.stdin.Close()
	}
	close(start)
	wg.Wait()

	want := filepath.Join(dir, "data", Hash(), "bin")
	for i := range 8 {
		if errs[i] != nil || bins[i] != want {
			t.Errorf("goroutine %d: %s, %v", i, bins[i], errs[i])
		}
	}
	for i, c := range children {
		rest, _ := io.ReadAll(c.out)
		if err := c.cmd.Wait(); err != nil {
			t.Errorf("subprocess %d: %v\n%s", i, err, c.err.String())
		} else if got := strings.TrimSpace(string(rest)); got != want {
			t.Errorf("subprocess %d printed %q", i, got)
		}
	}
	checkLayout(t, dir)
	checkRuns(t, want)
}

func TestExtractRepairs(t *testing.T) {
	needArchive(t)
	damage := map[string]func(t *testing.T, bin string){
		"truncated": func(t *testing.T, bin string) {
			if err := os.Truncate(filepath.Join(bin, "runc"), 4096); err != nil {
				t.Fatal(err)
			}
		},
		"overwritten same size": func(t *testing.T, bin string) {
			overwrite(t, filepath.Join(bin, "bridge"), false)
		},
		"overwritten, mtime restored": func(t *testing.T, bin string) {
			overwrite(t, filepath.Join(bin, "portmap"), true)
		},
		"removed": func(t *testing.T, bin string) {
			if err := os.Remove(filepath.Join(bin, "loopback")); err != nil {
				t.Fatal(err)
			}
		},
		"chmod": func(t *testing.T, bin string) {
			if err := os.Chmod(filepath.Join(bin, "host-local"), 0o644); err != nil {
				t.Fatal(err)
			}
		},
		"no manifest": func(t *testing.T, bin string) {
			if err := os.Remove(filepath.Join(filepath.Dir(bin), ".manifest.json")); err != nil {
				t.Fatal(err)
			}
		},
		"current points elsewhere": func(t *testing.T, bin string) {
			base := filepath.Dir(filepath.Dir(bin))
			if err := replaceSymlink(base, currentLink, "0123456789abcdef"); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, fn := range damage {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			bin, err := Extract(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			fn(t, bin)
			rec := &recorder{}
			bin2, err := Extract(dir, slog.New(rec))
			if err != nil || bin2 != bin {
				t.Fatalf("Extract after damage: %s, %v", bin2, err)
			}
			msgs := rec.take()
			if name == "current points elsewhere" {
				if len(msgs) != 0 {
					t.Errorf("logged %q", msgs)
				}
				if l, _ := os.Readlink(filepath.Join(dir, "data", previousLink)); l != "0123456789abcdef" {
					t.Errorf("previous -> %q", l)
				}
				_ = os.Remove(filepath.Join(dir, "data", previousLink))
			} else if len(msgs) == 0 || !strings.HasPrefix(msgs[0], "WARN helper binaries damaged") {
				t.Errorf("logged %q, want a warning", msgs)
			}
			checkLayout(t, dir)
			checkRuns(t, bin)
		})
	}
}

// overwrite flips bytes in the middle of p without changing its size.
func overwrite(t *testing.T, p string, restoreMtime bool) {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // past the coarse timestamp clock tick
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xcc}, 512), fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if restoreMtime {
		if err := os.Chtimes(p, fi.ModTime(), fi.ModTime()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestVerifyDetectsContent(t *testing.T) {
	needArchive(t)
	dir := t.TempDir()
	bin, err := Extract(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	overwrite(t, filepath.Join(bin, "bridge"), true)
	if err := Verify(dir); err == nil {
		t.Fatal("Verify missed a modified file")
	}
}

// Upgrading swaps current to the new hash dir and keeps previous.
func TestCurrentAndPrevious(t *testing.T) {
	dir := t.TempDir()
	a, sumA := unpacktest.Archive(t, unpacktest.Entry{Name: "bin/", Type: tar.TypeDir}, unpacktest.File("bin/x", "a"))
	b, sumB := unpacktest.Archive(t, unpacktest.File("bin/x", "b"))
	for _, s := range []struct {
		data []byte
		sum  string
	}{{a, sumA}, {b, sumB}} {
		bin, err := extract(dir, s.data, s.sum, nil)
		if err != nil {
			t.Fatal(err)
		}
		if want := filepath.Join(dir, "data", s.sum[:unpack.HashLen], "bin"); bin != want {
			t.Fatalf("bin = %s, want %s", bin, want)
		}
	}
	base := filepath.Join(dir, "data")
	if l, _ := os.Readlink(filepath.Join(base, currentLink)); l != sumB[:unpack.HashLen] {
		t.Errorf("current -> %s", l)
	}
	if l, _ := os.Readlink(filepath.Join(base, previousLink)); l != sumA[:unpack.HashLen] {
		t.Errorf("previous -> %s", l)
	}
	if got, _ := os.ReadFile(filepath.Join(base, currentLink, "bin", "x")); string(got) != "b" {
		t.Errorf("current/bin/x = %q", got)
	}
}

func TestNoArchive(t *testing.T) {
	if _, err := extract(t.TempDir(), nil, "", nil); !errors.Is(err, ErrNoHelpers) {
		t.Fatalf("err = %v", err)
	}
}

func TestRelativeDataDir(t *testing.T) {
	t.Chdir(t.TempDir())
	data, sum := unpacktest.Archive(t, unpacktest.File("bin/x", "x"))
	bin, err := extract("rel", data, sum, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(bin) {
		t.Errorf("bin dir %q is not absolute", bin)
	}
}
