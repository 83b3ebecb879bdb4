// Package killall tests scripts/bramble-killall.sh for real (root needed):
// in a network namespace of its own, with a private mount namespace and a
// private /run/netns, against stand-in processes whose command lines point at
// a temporary data dir. Nothing of the host's network, mounts or processes is
// touched: decoys for another data dir must survive.
package killall

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bramble-pi/bramble/tests/testutil"
)

func script(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "scripts", "bramble-killall.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	return p
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// standIn starts /bin/sh under the name prog (a symlink), running code with
// args after it, and returns its process. The test reaps it at the end.
func standIn(t *testing.T, prog, code string, args ...string) *exec.Cmd {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(prog), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(prog); err != nil {
		if err := os.Symlink("/bin/sh", prog); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(prog, append([]string{"-c", code, filepath.Base(prog)}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", prog, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		// Whatever is left of the process group (decoys, or survivors
		// after a failure) goes, by its own PGID.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	})
	return cmd
}

// children returns the PIDs whose parent is pid.
func children(pid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		s = s[strings.LastIndex(s, ")")+2:]
		f := strings.Fields(s)
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	s = s[strings.LastIndex(s, ")")+2:]
	return !strings.HasPrefix(s, "Z")
}

// waitChildren waits until pid has n children (the stand-ins fork sleeps).
func waitChildren(t *testing.T, pid, n int) []int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := children(pid)
		if len(c) >= n {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d has %d children, want %d", pid, len(c), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestKillall(t *testing.T) {
	testutil.NeedRoot(t, "namespaces, mounts, iptables")
	testutil.NeedTools(t, "ip", "unshare", "iptables", "iptables-save", "mount", "umount")
	killall := script(t)

	// The network namespace the whole test runs in.
	ns := fmt.Sprintf("bramble-killall-test-%d", rand.IntN(1<<30))
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", ns).CombinedOutput(); err != nil {
			t.Errorf("delete netns %s: %v\n%s", ns, err, out)
		}
	})
	inNS := func(args ...string) (string, error) {
		out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
		return string(out), err
	}
	mustNS := func(args ...string) {
		t.Helper()
		if out, err := inNS(args...); err != nil {
			t.Fatalf("in %s: %s: %v\n%s", ns, strings.Join(args, " "), err, out)
		}
	}

	base := t.TempDir()
	data := filepath.Join(base, "data")
	runDir := filepath.Join(base, "run")
	kubelet := filepath.Join(base, "kubelet")
	other := filepath.Join(base, "data2") // another node's data dir: hands off
	for _, d := range []string{
		filepath.Join(data, "mnt"),
		filepath.Join(kubelet, "pods", "uid-1", "volumes", "kubernetes.io~empty-dir", "cache"),
		filepath.Join(runDir, "containerd"),
		filepath.Join(other, "bin"),
	} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(runDir, "containerd", "containerd.sock")

	// Stand-ins: bramble (stops its child on SIGTERM, as the real one
	// does), containerd, a shim with two "container" processes, and decoys
	// of another node that must survive.
	const graceful = `trap 'kill $c; exit 0' TERM; sleep 1000 & c=$!; wait`
	bramble := standIn(t, filepath.Join(base, "bin", "bramble"), graceful, "server", "--data-dir", data)
	ctrd := standIn(t, filepath.Join(data, "data", "current", "bin", "containerd"), graceful, "--config", filepath.Join(data, "agent", "etc", "containerd", "config.toml"))
	shim := standIn(t, filepath.Join(data, "data", "current", "bin", "containerd-shim-runc-v2"),
		`sleep 1001 & sleep 1002 & wait`, "-namespace", "k8s.io", "-id", "abc", "-address", sock)
	decoyShim := standIn(t, filepath.Join(other, "bin", "containerd-shim-runc-v2"),
		`sleep 1003 & wait`, "-namespace", "k8s.io", "-address", filepath.Join(other, "containerd.sock"))
	decoyBramble := standIn(t, filepath.Join(base, "bin", "bramble"), graceful, "agent", "--data-dir", other)

	var victims []int
	victims = append(victims, bramble.Process.Pid, ctrd.Process.Pid, shim.Process.Pid)
	victims = append(victims, waitChildren(t, bramble.Process.Pid, 1)...)
	victims = append(victims, waitChildren(t, ctrd.Process.Pid, 1)...)
	victims = append(victims, waitChildren(t, shim.Process.Pid, 2)...)
	survivors := []int{decoyShim.Process.Pid, decoyBramble.Process.Pid}
	survivors = append(survivors, waitChildren(t, decoyShim.Process.Pid, 1)...)
	survivors = append(survivors, waitChildren(t, decoyBramble.Process.Pid, 1)...)

	// Network leftovers in the test namespace.
	mustNS("ip", "link", "add", "cni0", "type", "bridge")
	mustNS("ip", "link", "add", "flannel.1", "type", "vxlan", "id", "1", "dstport", "8472", "nolearning")
	mustNS("ip", "link", "add", "keep0", "type", "bridge")
	for _, table := range []string{"nat", "filter"} {
		for _, chain := range []string{"KUBE-TEST", "FLANNEL-TEST", "CNI-TEST"} {
			mustNS("iptables", "-t", table, "-N", chain)
		}
	}
	mustNS("iptables", "-t", "nat", "-A", "PREROUTING", "-j", "KUBE-TEST")
	mustNS("iptables", "-t", "nat", "-A", "POSTROUTING", "-m", "comment", "--comment", "flanneld masq", "-j", "FLANNEL-TEST")
	mustNS("iptables", "-t", "nat", "-A", "CNI-TEST", "-j", "KUBE-TEST")
	mustNS("iptables", "-A", "FORWARD", "-j", "FLANNEL-TEST")
	mustNS("iptables", "-A", "FORWARD", "-j", "CNI-TEST")
	mustNS("iptables", "-A", "KUBE-TEST", "-j", "ACCEPT")
	mustNS("iptables", "-N", "KEEP-ME")
	mustNS("iptables", "-A", "FORWARD", "-s", "192.0.2.1/32", "-j", "KEEP-ME")
	haveLegacy := false
	if _, err := exec.LookPath("iptables-legacy"); err == nil {
		haveLegacy = true
		mustNS("iptables-legacy", "-t", "nat", "-N", "KUBE-LEGACY-TEST")
		mustNS("iptables-legacy", "-t", "nat", "-A", "OUTPUT", "-j", "KUBE-LEGACY-TEST")
		mustNS("iptables-legacy", "-t", "mangle", "-N", "KUBE-IPTABLES-HINT")
	}
	// The network-policy controller's ipsets, one used by a rule (the rule
	// must go first), and one of someone else's.
	haveIpset := false
	if _, err := exec.LookPath("ipset"); err == nil {
		haveIpset = true
		for _, set := range []string{"KUBE-SRC-TEST", "KUBE-DST-TEST", "kube-router-local-pods", "keep-me-set"} {
			mustNS("ipset", "create", set, "hash:ip")
		}
		mustNS("ipset", "create", "inet6:KUBE-DST-TEST6", "hash:ip", "family", "inet6")
		mustNS("iptables", "-A", "KUBE-TEST", "-m", "set", "--match-set", "KUBE-SRC-TEST", "src", "-j", "ACCEPT")
	}
	haveIP6 := false
	if _, err := exec.LookPath("ip6tables"); err == nil {
		haveIP6 = true
		mustNS("ip6tables", "-t", "filter", "-N", "KUBE-TEST6")
		mustNS("ip6tables", "-A", "INPUT", "-j", "KUBE-TEST6")
	}

	// Inside a private mount namespace (own /run/netns, so the host's pod
	// namespaces stay out of sight): mounts, a pod namespace, two runs of
	// the script, and checks that nothing is left mounted.
	inner := fmt.Sprintf(`set -e
mount -t tmpfs bramble-test-netns /run/netns
ip netns add cni-bramble-killall-test
mount -t tmpfs bramble-test %[1]s/mnt
mkdir %[1]s/mnt/nested
mount -t tmpfs bramble-test %[1]s/mnt/nested
mount -t tmpfs bramble-test %[2]s/pods/uid-1/volumes/kubernetes.io~empty-dir/cache
mkdir -p %[3]s/shm
mount -t tmpfs bramble-test %[3]s/shm
echo "=== first run"
%[4]s --data-dir %[1]s/ --run-dir %[3]s --kubelet-dir %[2]s
echo "=== second run"
%[4]s --data-dir %[1]s --run-dir %[3]s --kubelet-dir %[2]s
echo "=== end"
if grep -E " (%[1]s|%[2]s|%[3]s)[/ ]" /proc/self/mountinfo; then echo "MOUNTS LEFT"; exit 1; fi
if ip netns list | grep cni-; then echo "NETNS LEFT"; exit 1; fi
if [ -e %[3]s ]; then echo "RUN DIR LEFT"; exit 1; fi
`, data, kubelet, runDir, killall)
	start := time.Now()
	out, err := inNS("unshare", "-m", "--propagation", "private", "sh", "-c", inner)
	t.Logf("killall twice took %s; output:\n%s", time.Since(start).Round(time.Millisecond), out)
	if err != nil {
		t.Fatalf("script run failed: %v", err)
	}
	first, second, _ := strings.Cut(out, "=== second run")
	second, _, _ = strings.Cut(second, "=== end")
	if strings.TrimSpace(second) != "" {
		t.Errorf("second run should have nothing to do, said:\n%s", second)
	}
	for _, want := range []string{"stopping bramble", "stopping containerd", "killing shims", "unmounting", "deleting interface cni0", "deleting interface flannel.1", "deleting network namespace cni-bramble-killall-test", "removing " + runDir} {
		if !strings.Contains(first, want) {
			t.Errorf("first run output lacks %q", want)
		}
	}

	// Processes.
	deadline := time.Now().Add(5 * time.Second)
	for _, p := range victims {
		for alive(p) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(p) {
			t.Errorf("process %d survived", p)
		}
	}
	for _, p := range survivors {
		if !alive(p) {
			t.Errorf("decoy process %d of another data dir was killed", p)
		}
	}

	// Interfaces.
	for _, l := range []string{"cni0", "flannel.1"} {
		if _, err := inNS("ip", "link", "show", l); err == nil {
			t.Errorf("interface %s survived", l)
		}
	}
	if _, err := inNS("ip", "link", "show", "keep0"); err != nil {
		t.Errorf("unrelated interface keep0 was removed: %v", err)
	}

	// Firewall.
	leftover := regexp.MustCompile(`(?m)^:(KUBE|FLANNEL|CNI)-|(KUBE|FLANNEL|CNI)-[A-Z0-9-]+`)
	dumps := [][]string{{"iptables-save"}}
	if haveLegacy {
		dumps = append(dumps, []string{"iptables-legacy-save"})
	}
	if haveIP6 {
		dumps = append(dumps, []string{"ip6tables-save"})
	}
	for _, d := range dumps {
		out, err := inNS(d...)
		if err != nil {
			t.Fatalf("%s: %v\n%s", d[0], err, out)
		}
		if m := leftover.FindAllString(out, -1); m != nil {
			t.Errorf("%s still has %v:\n%s", d[0], m, out)
		}
		if d[0] == "iptables-save" && (!strings.Contains(out, ":KEEP-ME") || !strings.Contains(out, "-A FORWARD -s 192.0.2.1/32 -j KEEP-ME")) {
			t.Errorf("unrelated chain KEEP-ME or its rule was removed:\n%s", out)
		}
	}

	if haveIpset {
		out, err := inNS("ipset", "list", "-n")
		if err != nil {
			t.Fatalf("ipset list: %v\n%s", err, out)
		}
		if got := strings.Fields(out); len(got) != 1 || got[0] != "keep-me-set" {
			t.Errorf("ipsets after killall: %q, want only keep-me-set", got)
		}
	}

	// The data dir itself stays.
	if _, err := os.Stat(filepath.Join(data, "mnt")); err != nil {
		t.Errorf("data dir content removed: %v", err)
	}
	if b, _ := os.ReadFile("/proc/self/mountinfo"); bytes.Contains(b, []byte(base)) {
		t.Errorf("test mounts leaked into the test's own mount namespace")
	}
}

// TestRefusesSystemDirs checks the guard against cleaning up "/" or "/run"
// (with --check, so a broken guard cannot do harm).
func TestRefusesSystemDirs(t *testing.T) {
	testutil.NeedRoot(t, "the script refuses to run as another user")
	if out, err := exec.Command("sh", script(t), "--check", "--data-dir", "/var/lib/bramble-x/", "--run-dir", "/run/bramble-x").CombinedOutput(); err != nil {
		t.Fatalf("--check with good dirs: %v\n%s", err, out)
	}
	// Where a symbolic link leads counts too.
	link := filepath.Join(t.TempDir(), "data")
	if err := os.Symlink("/var", link); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"--data-dir", "/"},
		{"--data-dir", "/var//"},
		{"--data-dir", "/var/lib"},
		{"--data-dir", "/usr/local/bramble"},
		{"--data-dir", "/home/pi"},
		{"--data-dir", "/etc/bramble"},
		{"--data-dir", "/var/lib/bramble/../.."},
		{"--data-dir", link},
		{"--run-dir", "/run/"},
		{"--kubelet-dir", "relative/path"},
		{"--bogus"},
	} {
		out, err := exec.Command("sh", append([]string{script(t), "--check"}, args...)...).CombinedOutput()
		if err == nil {
			t.Errorf("%v: script succeeded:\n%s", args, out)
		}
		if !strings.Contains(string(out), "killall: error:") {
			t.Errorf("%v: no error message:\n%s", args, out)
		}
	}
}
