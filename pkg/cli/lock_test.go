package cli

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// A second bramble on the same data dir is refused while the first holds
// it, with the holder's PID; released, the data dir can be taken again. The
// second taker is another process: flock locks belong to open files, so a
// second open in the same process would be refused too, but a child shows
// what two bramble processes see.
func TestLockDataDir(t *testing.T) {
	dir := t.TempDir()
	if os.Getenv("BRAMBLE_TEST_LOCK_DIR") != "" {
		_, err := lockDataDir(os.Getenv("BRAMBLE_TEST_LOCK_DIR"))
		if err != nil {
			os.Stdout.WriteString(err.Error())
		}
		os.Exit(0)
	}
	release, err := lockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	second := func() string {
		cmd := exec.Command(os.Args[0], "-test.run=^TestLockDataDir$")
		cmd.Env = append(os.Environ(), "BRAMBLE_TEST_LOCK_DIR="+dir)
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	if out := second(); !strings.Contains(out, "in use by another bramble (pid "+strconv.Itoa(os.Getpid())+")") {
		t.Errorf("second bramble while the first holds the data dir: %q", out)
	}
	release()
	if out := second(); out != "" {
		t.Errorf("after release: %q", out)
	}
	if fi, err := os.Stat(dir + "/bramble.lock"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("lock file: %v %v", fi, err)
	}
}
