package atomicfile

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWrite(t *testing.T) {
	tests := []struct {
		name    string
		before  string // "" = no file yet
		data    string
		perm    fs.FileMode
		subdirs string // created by Write
	}{
		{name: "new file", data: "hello\n", perm: 0o600},
		{name: "replaces", before: "old contents, longer than the new\n", data: "new\n", perm: 0o644},
		{name: "mode despite umask", data: "x", perm: 0o666},
		{name: "empty", before: "something", data: "", perm: 0o600},
		{name: "creates parents", data: "deep", perm: 0o600, subdirs: "a/b"},
		{name: "same contents, other mode", before: "same", data: "same", perm: 0o644},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, tt.subdirs, "file")
			if tt.before != "" {
				if err := os.WriteFile(path, []byte(tt.before), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if err := Write(path, []byte(tt.data), tt.perm); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(path)
			if err != nil || string(b) != tt.data {
				t.Fatalf("read back %q, %v; want %q", b, err, tt.data)
			}
			fi, err := os.Stat(path)
			if err != nil || fi.Mode().Perm() != tt.perm {
				t.Errorf("mode %v, %v; want %v", fi.Mode().Perm(), err, tt.perm)
			}
			if tt.subdirs != "" {
				if fi, err := os.Stat(filepath.Join(dir, "a")); err != nil || fi.Mode().Perm() != 0o700 {
					t.Errorf("created parent: %v, %v; want mode 0700", fi.Mode().Perm(), err)
				}
			}
			entries, _ := os.ReadDir(filepath.Dir(path))
			if len(entries) != 1 {
				t.Errorf("directory holds %d entries, want only the file: %v", len(entries), entries)
			}
		})
	}
}

// TestWriteUnchanged: rewriting the same contents and mode leaves the file
// alone (same inode, same modification time): no SD card write.
func TestWriteUnchanged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "file")
	if err := Write(path, []byte("kubeconfig"), 0o600); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := Write(path, []byte("kubeconfig"), 0o600); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) || !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("an identical write replaced the file (inode or mtime changed)")
	}
	if err := Write(path, []byte("kubeconfig 2"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "kubeconfig 2" {
		t.Errorf("a changed write was skipped: %q", b)
	}
}

func TestWriteFails(t *testing.T) {
	dir := t.TempDir()
	// A file where the parent directory should be.
	notDir := filepath.Join(dir, "plain")
	if err := os.WriteFile(notDir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Write(filepath.Join(notDir, "file"), []byte("data"), 0o600); err == nil || !strings.Contains(err.Error(), notDir) {
		t.Errorf("parent is a file: err = %v, want one naming %s", err, notDir)
	}
	// A directory where the file should be: the rename fails, nothing is left.
	target := filepath.Join(dir, "sub")
	if err := os.MkdirAll(filepath.Join(target, "inside"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Write(target, []byte("data"), 0o600); err == nil || !strings.Contains(err.Error(), target) {
		t.Errorf("target is a directory: err = %v, want one naming %s", err, target)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
}
