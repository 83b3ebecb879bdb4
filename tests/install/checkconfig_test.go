package install

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/bramble-pi/bramble/tests/testutil"
)

// checkConfig runs bin/bramble check-config and returns its output and exit
// status.
func checkConfig(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(testutil.Binary(t), append([]string{"check-config"}, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BRAMBLE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	}
	t.Fatalf("check-config: %v", err)
	return "", 0
}

// The output contract other tests (qemu-user runs of the release binaries)
// and users' scripts read.
var checkLine = regexp.MustCompile(`^  \[(ok|warn|MISSING)\] [^:]+: .+$`)

func requireReportFormat(t *testing.T, out string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if lines[0] != "bramble check-config" {
		t.Fatalf("first line %q, want \"bramble check-config\"", lines[0])
	}
	cgroup := false
	for _, l := range lines[1:] {
		if strings.HasPrefix(l, "  ") && !checkLine.MatchString(l) {
			t.Errorf("line out of format: %q", l)
		}
		cgroup = cgroup || (checkLine.MatchString(l) && strings.Contains(l, "cgroup"))
	}
	if !cgroup {
		t.Error("no cgroup line")
	}
}

func TestCheckConfigHost(t *testing.T) {
	out, code := checkConfig(t)
	t.Log("\n" + out)
	requireReportFormat(t, out)
	if code != 0 || strings.Contains(out, "[MISSING]") {
		t.Errorf("exit %d on this machine, which runs nodes", code)
	}
	if _, code := checkConfig(t, "--boot-dir", "/boot"); code == 0 {
		t.Error("--boot-dir without --fix-cgroups accepted")
	}
}

// copySample copies a pkg/hostcheck sample host tree to a temp dir.
func copySample(t *testing.T, name string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), name)
	src := filepath.Join(testutil.RepoRoot(t), "pkg", "hostcheck", "testdata", name)
	if b, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("copy %s: %v\n%s", name, err, b)
	}
	return dst
}

func TestCheckConfigPi(t *testing.T) {
	for _, c := range []struct{ sample, file string }{
		{"pi-bookworm", "boot/firmware/cmdline.txt"},
		{"pi-buster", "boot/cmdline.txt"},
	} {
		t.Run(c.sample, func(t *testing.T) {
			root := copySample(t, c.sample)
			file := filepath.Join(root, c.file)
			old := readFile(t, file)

			out, code := checkConfig(t, "--host-root", root)
			requireReportFormat(t, out)
			if code != 1 {
				t.Errorf("exit %d, want 1 without the memory cgroup", code)
			}
			requireContains(t, "report", out, "[MISSING] cgroup controller memory: ", "to the single line in /"+c.file+" and reboot", "required feature")

			out, _ = checkConfig(t, "--host-root", root, "--fix-cgroups")
			want := strings.TrimSuffix(old, "\n") + " cgroup_memory=1 cgroup_enable=memory\n"
			if got := readFile(t, file); got != want {
				t.Fatalf("%s: %q, want %q", c.file, got, want)
			}
			requireContains(t, "fix output", out, "fix-cgroups: edited "+file, "reboot")
			if readFile(t, file+".bramble-backup") != old {
				t.Error("backup differs from the old file")
			}
			out, _ = checkConfig(t, "--host-root", root, "--fix-cgroups")
			requireContains(t, "second fix output", out, "already enables the memory cgroup")
		})
	}

	// --boot-dir names the file's directory.
	root := copySample(t, "pi-bookworm")
	boot := t.TempDir()
	writeFile(t, filepath.Join(boot, "cmdline.txt"), "console=tty1 root=/dev/mmcblk0p2 cgroup_disable=memory rootwait\n", 0o644)
	if out, _ := checkConfig(t, "--host-root", root, "--fix-cgroups", "--boot-dir", boot); !strings.Contains(out, "edited "+boot) {
		t.Errorf("--boot-dir ignored:\n%s", out)
	}
	if got, want := readFile(t, filepath.Join(boot, "cmdline.txt")), "console=tty1 root=/dev/mmcblk0p2 rootwait cgroup_memory=1 cgroup_enable=memory\n"; got != want {
		t.Errorf("cmdline.txt %q, want %q", got, want)
	}
	// A host whose memory cgroup works: --fix-cgroups changes nothing.
	out, code := checkConfig(t, "--fix-cgroups", "--boot-dir", boot)
	if code != 0 || !strings.Contains(out, "nothing to change") {
		t.Errorf("exit %d:\n%s", code, out)
	}
}
