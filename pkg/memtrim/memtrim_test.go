package memtrim

import (
	"os"
	"path/filepath"
	"testing"
)

// The test binary finds its own read-only mappings, pages them out and
// keeps running: the pages come back on use.
func TestPageOutExecutable(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exe, _ = filepath.EvalSymlinks(exe)
	ro, err := readOnlyMappings("/proc/self/maps", exe)
	if err != nil || len(ro) == 0 {
		t.Fatalf("read-only mappings of %s: %v", exe, err)
	}
	for _, m := range ro {
		if m.Writable() {
			t.Errorf("writable mapping listed: %+v", m)
		}
	}
	if _, err := readOnlyMappings("/proc/self/maps", "/nonexistent"); err == nil {
		t.Error("a file not mapped: want an error")
	}
	n, err := pageOutExecutable()
	if err != nil {
		t.Skipf("madvise not available here: %v", err)
	}
	if n == 0 {
		t.Error("no bytes paged out")
	}
}
