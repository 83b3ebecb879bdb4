// Package release tests the release binaries in dist/ (make release, or the
// faster-packed make release-test-binaries that make test builds): their
// checksum files, the amd64 binary against bin/bramble, and the arm64 and
// armhf binaries under qemu-user (binfmt_misc, set up by make images-deps).
package release

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bramble-pi/bramble/tests/testutil"
)

var arches = []string{"amd64", "arm64", "armhf"}

// qemuBinfmt is the binfmt_misc entry that lets the kernel run each foreign arch.
var qemuBinfmt = map[string]string{"arm64": "qemu-aarch64", "armhf": "qemu-arm"}

func dist(t *testing.T) string {
	return filepath.Join(testutil.RepoRoot(t), "dist")
}

// releaseBinary returns dist/bramble-<arch>, failing when it is missing.
func releaseBinary(t *testing.T, arch string) string {
	t.Helper()
	p := filepath.Join(dist(t), "bramble-"+arch)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s missing: run `make release-test-binaries` (make test builds it): %v", p, err)
	}
	return p
}

type result struct {
	out    string // stdout
	stderr string // the launcher's progress lines, errors
	code   int
	took   time.Duration
}

// run runs bin with args (argv[0] = name) in a clean environment whose
// BRAMBLE_DATA_DIR is dataDir, so nothing is unpacked under /var/lib/bramble.
func run(t *testing.T, bin, name, dataDir string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Args[0] = name
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + dataDir, "BRAMBLE_DATA_DIR=" + dataDir}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := result{out: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && exit.Exited():
		r.code = exit.ExitCode()
	default:
		t.Fatalf("%s %v: %v (a crash?)\n%s%s", name, args, err, r.out, r.stderr)
	}
	return r
}

func mustRun(t *testing.T, bin, name, dataDir string, args ...string) result {
	t.Helper()
	r := run(t, bin, name, dataDir, args...)
	if r.code != 0 {
		t.Fatalf("%s %v: exit %d\n%s%s", name, args, r.code, r.out, r.stderr)
	}
	return r
}

// versionLine is `bramble --version`: "bramble version <version>
// (kubernetes <k8s>, commit <commit>)".
var versionLine = regexp.MustCompile(`^bramble version (\S+) \(kubernetes (v1\.\d+\.\d+), commit (\S+)\)$`)

// checkVersion checks that out names a stamped version, with bin/bramble's
// Kubernetes version. (bin/bramble itself may predate the last commit: make
// relinks it only when a source changed, so the stamps are not compared.)
func checkVersion(t *testing.T, what, out string) {
	t.Helper()
	got := versionLine.FindStringSubmatch(strings.TrimSpace(out))
	want := versionLine.FindStringSubmatch(strings.TrimSpace(
		mustRun(t, testutil.Binary(t), "bramble", t.TempDir(), "--version").out))
	switch {
	case want == nil:
		t.Fatalf("bin/bramble --version does not parse")
	case got == nil:
		t.Fatalf("%s --version = %q, want %q", what, out, versionLine)
	case got[1] == "v0.0.0-dev" || got[3] == "unknown":
		t.Errorf("%s --version = %q: not stamped with the build's version", what, out)
	case got[2] != want[2]:
		t.Errorf("%s says kubernetes %s, bin/bramble %s (stale dist? make release-test-binaries)", what, got[2], want[2])
	}
}

var sumLine = regexp.MustCompile(`^[0-9a-f]{64}  (bramble-[a-z0-9-]+(?:\.tar\.zst)?)$`)

func TestChecksumFiles(t *testing.T) {
	for _, arch := range arches {
		t.Run(arch, func(t *testing.T) {
			releaseBinary(t, arch)
			name := "sha256sum-" + arch + ".txt"
			f, err := os.Open(filepath.Join(dist(t), name))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			files := map[string]bool{}
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				m := sumLine.FindStringSubmatch(sc.Text())
				if m == nil {
					t.Fatalf("%s: line %q is not `<sha256>  <file>`", name, sc.Text())
				}
				files[m[1]] = true
			}
			if !files["bramble-"+arch] {
				t.Errorf("%s does not list bramble-%s: %v", name, arch, files)
			}
			for f := range files {
				if f != "bramble-"+arch && f != "bramble-airgap-images-"+arch+".tar.zst" {
					t.Errorf("%s lists %s, not an artifact of %s", name, f, arch)
				}
			}
			cmd := exec.Command("sha256sum", "-c", name)
			cmd.Dir = dist(t)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("sha256sum -c %s: %v\n%s", name, err, out)
			}
		})
	}
}

// The amd64 release binary answers like bin/bramble, also as kubectl
// through a symlink, and unpacks itself once into <data-dir>/data/<hash>.
func TestAmd64LikeBinBramble(t *testing.T) {
	if testutil.Arch() != "amd64" {
		t.Skip("the amd64 comparison needs an amd64 machine")
	}
	bin := releaseBinary(t, "amd64")
	dataDir := t.TempDir()
	first := mustRun(t, bin, "bramble", dataDir, "--version")
	checkVersion(t, "dist/bramble-amd64", first.out)
	inner, err := filepath.Glob(filepath.Join(dataDir, "data", "*", "bin", "bramble"))
	if err != nil || len(inner) != 1 {
		t.Fatalf("unpacked binaries: %v %v", inner, err)
	}
	before, err := os.Stat(inner[0])
	if err != nil {
		t.Fatal(err)
	}
	second := mustRun(t, bin, "bramble", dataDir, "--version")
	after, _ := os.Stat(inner[0])
	if !os.SameFile(before, after) || !before.ModTime().Equal(after.ModTime()) {
		t.Error("the second start unpacked the binary again")
	}
	if second.out != first.out {
		t.Errorf("second start said %q, first %q", second.out, first.out)
	}
	t.Logf("first start (unpack %d MB + --version): %v; second: %v; bin/bramble --version: %v",
		before.Size()>>20, first.took, second.took, mustRun(t, testutil.Binary(t), "bramble", dataDir, "--version").took)

	// Multi-call through a symlink: argv[0] survives the exec.
	links := t.TempDir()
	kubectl := filepath.Join(links, "kubectl")
	if err := os.Symlink(bin, kubectl); err != nil {
		t.Fatal(err)
	}
	got := mustRun(t, kubectl, kubectl, dataDir, "version", "--client").out
	wantKubectl := mustRun(t, filepath.Join(testutil.RepoRoot(t), "bin", "kubectl"), "kubectl", dataDir, "version", "--client").out
	if got != wantKubectl || !strings.Contains(got, "Client Version: v1.") {
		t.Errorf("kubectl version --client via the release binary:\n%s\nbin/kubectl:\n%s", got, wantKubectl)
	}
}

// A non-root user whose data dir is not writable gets the binary unpacked
// into its cache dir instead.
func TestNonRootFallsBackToCacheDir(t *testing.T) {
	testutil.RequireRoot(t)
	if testutil.Arch() != "amd64" {
		t.Skip("needs an amd64 machine")
	}
	bin := releaseBinary(t, "amd64")
	// t.TempDir's parent is 0700: nobody needs a home it can reach.
	home, err := os.MkdirTemp("", "bramble-release-home-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(home) })
	if err := os.Chmod(home, 0o777); err != nil {
		t.Fatal(err)
	}
	rootOnly := t.TempDir() // 0700, owned by root
	cmd := exec.Command(bin, "--version")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + home, "BRAMBLE_DATA_DIR=" + rootOnly}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("--version as nobody: %v\n%s", err, out)
	}
	checkVersion(t, "dist/bramble-amd64 as nobody", string(out))
	if m, _ := filepath.Glob(filepath.Join(home, ".cache", "bramble", "data", "*", "bin", "bramble")); len(m) != 1 {
		t.Errorf("nothing unpacked under %s/.cache/bramble/data", home)
	}
}

// The arm64 and armhf binaries start under qemu-user: the launcher, the
// unpacked binary it execs, and check-config reading this host.
func TestForeignArchesUnderQemu(t *testing.T) {
	versions := map[string]string{}
	for _, arch := range []string{"arm64", "armhf"} {
		t.Run(arch, func(t *testing.T) {
			bin := releaseBinary(t, arch)
			if _, err := os.Stat("/proc/sys/fs/binfmt_misc/" + qemuBinfmt[arch]); err != nil {
				t.Fatalf("binfmt_misc has no %s: run `make images-deps ARCH=%s` (make test does): %v",
					qemuBinfmt[arch], map[string]string{"arm64": "arm64", "armhf": "arm"}[arch], err)
			}
			dataDir := t.TempDir()
			first := mustRun(t, bin, "bramble", dataDir, "--version")
			checkVersion(t, "dist/bramble-"+arch, first.out)
			versions[arch] = first.out
			second := mustRun(t, bin, "bramble", dataDir, "--version")
			if second.stderr != "" {
				t.Errorf("second start wrote to stderr: %q", second.stderr)
			}
			t.Logf("under qemu: first start (unpack + --version) %v %q, second %v", first.took, first.stderr, second.took)

			t.Run("check-config", func(t *testing.T) {
				r := run(t, bin, "bramble", dataDir, "check-config")
				if r.code != 0 && r.code != 1 {
					t.Fatalf("check-config exited %d (want 0 or 1)\n%s%s", r.code, r.out, r.stderr)
				}
				lines := strings.Split(strings.TrimSpace(r.out), "\n")
				if lines[0] != "bramble check-config" {
					t.Errorf("first line %q, want %q", lines[0], "bramble check-config")
				}
				if !strings.Contains(r.out, "cgroup") {
					t.Errorf("no cgroup line:\n%s", r.out)
				}
				t.Logf("check-config under qemu: exit %d in %v", r.code, r.took)
			})
		})
	}
	if versions["arm64"] != versions["armhf"] {
		t.Errorf("arm64 and armhf binaries are from different builds: %q, %q", versions["arm64"], versions["armhf"])
	}
}
