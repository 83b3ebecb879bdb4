package unpack

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bramble-pi/bramble/pkg/unpack/unpacktest"
)

const fs0755Dir = os.ModeDir | 0o755

func archive(t *testing.T, entries ...unpacktest.Entry) Archive {
	t.Helper()
	data, sum := unpacktest.Archive(t, entries...)
	return Archive{Data: data, SHA256: sum, What: "test files"}
}

func TestInstall(t *testing.T) {
	base := filepath.Join(t.TempDir(), "data")
	a := archive(t, unpacktest.File("bin/x", "x"), unpacktest.File("bin/y", "yy"))
	dir, err := Install(base, a, nil)
	if err != nil {
		t.Fatal(err)
	}
	if dir != filepath.Join(base, a.SHA256[:HashLen]) || dir != a.Dir(base) {
		t.Fatalf("Install = %s", dir)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "bin", "y")); string(got) != "yy" {
		t.Errorf("bin/y = %q", got)
	}
	before, _ := os.Stat(filepath.Join(dir, "bin", "x"))
	if dir2, err := Install(base, a, nil); err != nil || dir2 != dir {
		t.Fatalf("second Install = %s, %v", dir2, err)
	}
	after, _ := os.Stat(filepath.Join(dir, "bin", "x"))
	if !os.SameFile(before, after) {
		t.Error("second Install rewrote bin/x")
	}
	if err := Verify(base, a.SHA256); err != nil {
		t.Error(err)
	}
}

// Without the flock, racers all extract and the atomic rename picks one.
func TestInstallConcurrentNoLock(t *testing.T) {
	useLock = false
	defer func() { useLock = true }()
	base := t.TempDir()
	a := archive(t, unpacktest.File("bin/x", strings.Repeat("x", 1<<20)))
	var wg sync.WaitGroup
	errs := make([]error, 8)
	start := make(chan struct{})
	for i := range 8 {
		wg.Go(func() {
			<-start
			_, errs[i] = Install(base, a, nil)
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("goroutine %d: %v", i, err)
		}
	}
	// No lock file this time, and nothing else left over.
	entries, _ := os.ReadDir(base)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{a.SHA256[:HashLen]}; !slices.Equal(names, want) {
		t.Errorf("base holds %v, want %v", names, want)
	}
	if err := Verify(base, a.SHA256); err != nil {
		t.Error(err)
	}
}

func TestRejectsBadArchives(t *testing.T) {
	ok := unpacktest.File("bin/ok", "#!/bin/sh\n")
	for name, e := range map[string]unpacktest.Entry{
		"dotdot":        unpacktest.File("bin/../../evil", "x"),
		"leading":       unpacktest.File("../evil", "x"),
		"absolute":      unpacktest.File("/tmp/evil", "x"),
		"symlink":       {Name: "bin/link", Type: tar.TypeSymlink, Body: "/etc/passwd"},
		"duplicate":     ok,
		"reserved name": unpacktest.File(manifestName, "{}"),
	} {
		t.Run(name, func(t *testing.T) {
			base := filepath.Join(t.TempDir(), "data")
			if _, err := Install(base, archive(t, ok, e), nil); err == nil {
				t.Fatal("Install accepted the archive")
			} else {
				t.Log(err)
			}
			entries, _ := os.ReadDir(base)
			for _, e := range entries {
				if e.Name() != LockName {
					t.Errorf("left %s behind", e.Name())
				}
			}
			if _, err := os.Lstat(filepath.Join(filepath.Dir(base), "evil")); err == nil {
				t.Error("wrote outside the base dir")
			}
		})
	}

	t.Run("hash mismatch", func(t *testing.T) {
		a := archive(t, ok)
		a.SHA256 = strings.Repeat("ab", 32)
		_, err := Install(t.TempDir(), a, nil)
		if err == nil || !strings.Contains(err.Error(), "sha256") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("truncated archive", func(t *testing.T) {
		a := archive(t, ok, unpacktest.File("bin/big", strings.Repeat("y", 100000)))
		a.Data = a.Data[:len(a.Data)-20]
		sum := sha256.Sum256(a.Data)
		a.SHA256 = hex.EncodeToString(sum[:])
		if _, err := Install(t.TempDir(), a, nil); err == nil {
			t.Fatal("Install accepted a truncated archive")
		}
	})
	t.Run("no archive", func(t *testing.T) {
		if _, err := Install(t.TempDir(), Archive{}, nil); err == nil {
			t.Fatal("Install accepted an empty archive")
		}
	})
}

func TestStaleTempRemoved(t *testing.T) {
	base := t.TempDir()
	stale := filepath.Join(base, TempPrefix+"crashed")
	fresh := filepath.Join(base, TempPrefix+"racer")
	for _, d := range []string{stale, fresh} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	if _, err := Install(base, archive(t, unpacktest.File("bin/x", "x")), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); err == nil {
		t.Error("stale temp dir kept")
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Error("recent temp dir removed")
	}
}

func TestSameTime(t *testing.T) {
	const rec = int64(1_700_000_000_123_456_789)
	for _, c := range []struct {
		got  int64
		want bool
	}{
		{rec, true},
		{rec - 456_789, true},             // kept in µs
		{rec - 123_456_789, true},         // kept in seconds
		{rec + 1, false},                  // written later
		{rec + int64(time.Second), false}, // written later
		{rec - int64(time.Second), false}, // set back by utimes
	} {
		if got := sameTime(c.got, rec); got != c.want {
			t.Errorf("sameTime(%d, %d) = %v", c.got, rec, got)
		}
	}
}

func TestNestedDirs(t *testing.T) {
	base := t.TempDir()
	dir, err := Install(base, archive(t, unpacktest.File("a/b/c/x", "x"), unpacktest.File("bin/y", "y")), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"a", "a/b", "a/b/c", "bin"} {
		fi, err := os.Stat(filepath.Join(dir, p))
		if err != nil || fi.Mode() != fs0755Dir {
			t.Errorf("%s: %v %v", p, fi, err)
		}
	}
}

func TestRelativeBase(t *testing.T) {
	t.Chdir(t.TempDir())
	dir, err := Install("rel", archive(t, unpacktest.File("bin/x", "x")), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(dir) {
		t.Errorf("dir %q is not absolute", dir)
	}
}

func TestReleaseKeepsContent(t *testing.T) {
	data := make([]byte, 5*os.Getpagesize()+123)
	for i := range data {
		data[i] = byte(i)
	}
	// On anonymous memory MADV_DONTNEED would zero the pages: Release is
	// for read-only embedded data only, so test it on a read-only file map.
	f := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(f, data, 0o600); err != nil {
		t.Fatal(err)
	}
	fd, err := os.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	m, err := unix.Mmap(int(fd.Fd()), 0, len(data), unix.PROT_READ, unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	Release(m[7:])
	if !bytes.Equal(m, data) {
		t.Fatal("content changed after Release")
	}
	Release(nil)
}
