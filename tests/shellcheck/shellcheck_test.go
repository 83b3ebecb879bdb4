// Package shellcheck runs shellcheck on every shell script in the
// repository: the files git tracks (or that are new, not ignored) whose name
// ends in .sh or whose first line is a sh or bash shebang. The scripts
// install.sh generates are checked by tests/install.
package shellcheck

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/bramble-pi/bramble/tests/testutil"
)

var shebang = regexp.MustCompile(`^#!\s*(/usr)?/bin/(env\s+)?(ba|da)?sh\b`)

// scripts lists the repository's shell scripts, relative to the root.
func scripts(t *testing.T, repo string) []string {
	t.Helper()
	cmd := exec.Command("git", "ls-files", "--cached", "--others", "--exclude-standard", "-z")
	cmd.Dir = repo
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	var found []string
	for _, f := range strings.Split(string(out), "\x00") {
		if f == "" {
			continue
		}
		if strings.HasSuffix(f, ".sh") {
			found = append(found, f)
			continue
		}
		fi, err := os.Lstat(filepath.Join(repo, f))
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		b := make([]byte, 64)
		fh, err := os.Open(filepath.Join(repo, f))
		if err != nil {
			t.Fatal(err)
		}
		n, _ := fh.Read(b)
		fh.Close()
		first, _, _ := bytes.Cut(b[:n], []byte("\n"))
		if shebang.Match(first) {
			found = append(found, f)
		}
	}
	return found
}

func TestShellcheck(t *testing.T) {
	if _, err := exec.LookPath("shellcheck"); err != nil {
		t.Fatal("shellcheck is missing: scripts/deps.sh (make deps) installs it")
	}
	repo := testutil.RepoRoot(t)
	files := scripts(t, repo)
	for _, want := range []string{"install.sh", "scripts/bramble-killall.sh", "scripts/deps.sh", "scripts/testroot.sh"} {
		found := false
		for _, f := range files {
			found = found || f == want
		}
		if !found {
			t.Errorf("%s not found among the scripts %q", want, files)
		}
	}
	cmd := exec.Command("shellcheck", append([]string{"-x"}, files...)...)
	cmd.Dir = repo
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("shellcheck -x on %d scripts: %v\n%s", len(files), err, out)
	}
	t.Logf("shellcheck: %d scripts clean: %s", len(files), strings.Join(files, " "))
}
