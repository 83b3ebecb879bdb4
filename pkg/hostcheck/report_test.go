package hostcheck

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// reportOf detects a sample and renders its report.
func reportOf(t *testing.T, sample string) (Facts, string, int) {
	t.Helper()
	f, err := DetectFrom(loadSample(t, sample))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	missing, err := WriteReport(&b, f.Report())
	if err != nil {
		t.Fatal(err)
	}
	return f, b.String(), missing
}

// lineRE is the output contract tests/release (qemu) and users' scripts read.
var lineRE = regexp.MustCompile(`^  \[(ok|warn|MISSING)\] [^:]+: .+$`)

func checkFormat(t *testing.T, out string, missing int) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if lines[0] != "bramble check-config" {
		t.Errorf("first line %q", lines[0])
	}
	for _, l := range lines[1 : len(lines)-1] {
		if !lineRE.MatchString(l) {
			t.Errorf("line does not follow the format: %q", l)
		}
		if strings.Contains(l, "[MISSING]") && !strings.Contains(l, " -> fix: ") {
			t.Errorf("MISSING line without a fix: %q", l)
		}
	}
	if got := strings.Count(out, "[MISSING]"); got != missing {
		t.Errorf("WriteReport counted %d missing, output has %d", missing, got)
	}
	summary := lines[len(lines)-1]
	if (missing > 0) != strings.Contains(summary, "missing") {
		t.Errorf("summary %q does not match %d missing", summary, missing)
	}
	if !strings.Contains(out, "cgroup version") || !strings.Contains(out, "cgroup controller memory") {
		t.Errorf("no cgroup lines:\n%s", out)
	}
}

func TestReportThisMachine(t *testing.T) {
	_, out, missing := reportOf(t, "thismachine")
	t.Log("\n" + out)
	checkFormat(t, out, missing)
	if missing != 0 {
		t.Errorf("%d missing on the CI machine's sample", missing)
	}
	for _, want := range []string{
		"[warn] cgroup version: hybrid",
		"[ok] cgroup controller cpuacct: enabled",
		"[ok] mount propagation: / is private",
		"[warn] CAP_SYS_RESOURCE: missing",
		"[ok] init system: no systemd (cgroup driver cgroupfs)",
		"[ok] iptables: /usr/sbin/iptables",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

func TestReportHealthyV2(t *testing.T) {
	_, out, missing := reportOf(t, "healthy-v2")
	checkFormat(t, out, missing)
	if !strings.Contains(out, "[ok] cgroup version: v2") {
		t.Errorf("no v2 line:\n%s", out)
	}
	if strings.Contains(out, "cgroup controller cpuacct") {
		t.Errorf("cpuacct is a v1 controller, not checked on v2:\n%s", out)
	}
}

func TestReportPiWithoutMemory(t *testing.T) {
	for _, c := range []struct{ sample, file string }{
		{"pi-bookworm", PiFirmwareCmdline},
		{"pi-buster", PiLegacyCmdline},
	} {
		t.Run(c.sample, func(t *testing.T) {
			f, out, missing := reportOf(t, c.sample)
			t.Log("\n" + out)
			checkFormat(t, out, missing)
			if missing == 0 {
				t.Fatal("memory cgroup missing but nothing reported missing")
			}
			want := "[MISSING] cgroup controller memory: "
			var line string
			for _, l := range strings.Split(out, "\n") {
				if strings.Contains(l, want) {
					line = l
				}
			}
			if line == "" {
				t.Fatalf("no %q line", want)
			}
			for _, w := range []string{"add `cgroup_memory=1 cgroup_enable=memory` to the single line in " + c.file + " and reboot", "--fix-cgroups"} {
				if !strings.Contains(line, w) {
					t.Errorf("memory line lacks %q: %s", w, line)
				}
			}
			if !f.MemoryOffByCmdline() {
				t.Error("MemoryOffByCmdline false")
			}
		})
	}
	// With the module lists, a driver that is not loaded is still there.
	_, out, _ := reportOf(t, "pi-bookworm")
	for _, w := range []string{"[ok] vxlan:", "[ok] bridge:", "[warn] br_netfilter: module not loaded", "[MISSING] iptables:"} {
		if !strings.Contains(out, w) {
			t.Errorf("pi-bookworm report lacks %q", w)
		}
	}
}

func TestReportDrivers(t *testing.T) {
	m := loadSample(t, "pi-bookworm")
	delete(m, "lib/modules/6.6.51+rpt-rpi-v8/modules.dep")
	f, err := DetectFrom(m)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if _, err := WriteReport(&b, f.Report()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "[warn] vxlan: not loaded, and no module list") {
		t.Errorf("without module lists vxlan should be a warning:\n%s", b.String())
	}
	m = loadSample(t, "pi-bookworm")
	m["lib/modules/6.6.51+rpt-rpi-v8/modules.dep"].Data = []byte("kernel/fs/overlayfs/overlay.ko.xz:\n")
	if f, err = DetectFrom(m); err != nil {
		t.Fatal(err)
	}
	b.Reset()
	if _, err := WriteReport(&b, f.Report()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "[MISSING] vxlan: no vxlan driver") || !strings.Contains(b.String(), "modprobe vxlan") {
		t.Errorf("a kernel without vxlan should be missing it:\n%s", b.String())
	}
}

func TestFixBootCmdline(t *testing.T) {
	const line = "console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes rootwait quiet splash plymouth.ignore-serial-consoles cfg80211.ieee80211_regdom=GB"
	tests := []struct {
		name, in, want string
		changed        bool
	}{
		{"multi-word line", line + "\n", line + " cgroup_memory=1 cgroup_enable=memory\n", true},
		{"already fixed", line + " cgroup_memory=1 cgroup_enable=memory\n", line + " cgroup_memory=1 cgroup_enable=memory\n", false},
		{"cgroup_disable=memory present", "cgroup_disable=memory " + line + "\n", line + " cgroup_memory=1 cgroup_enable=memory\n", true},
		{"no final newline", line, line + " cgroup_memory=1 cgroup_enable=memory", true},
	}
	for _, layout := range []string{"bookworm", "older"} {
		for _, tt := range tests {
			t.Run(layout+"/"+tt.name, func(t *testing.T) {
				root := t.TempDir()
				file := filepath.Join(root, "boot", "cmdline.txt")
				if layout == "bookworm" {
					// The stub the old path keeps on bookworm is not the file.
					if err := os.MkdirAll(filepath.Join(root, "boot", "firmware"), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(file, []byte("DO NOT EDIT THIS FILE\n\nThe file you are looking for has moved to /boot/firmware/cmdline.txt\n"), 0o755); err != nil {
						t.Fatal(err)
					}
					if _, err := FixBootCmdline(file); err == nil || !strings.Contains(err.Error(), "/boot/firmware/cmdline.txt") {
						t.Errorf("the bookworm stub was not refused: %v", err)
					}
					file = filepath.Join(root, "boot", "firmware", "cmdline.txt")
				} else if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(file, []byte(tt.in), 0o755); err != nil { // vfat shows 0755
					t.Fatal(err)
				}
				res, err := FixBootCmdline(file)
				if err != nil {
					t.Fatal(err)
				}
				got, _ := os.ReadFile(file)
				if string(got) != tt.want || res.Changed != tt.changed {
					t.Fatalf("file now %q changed=%v, want %q changed=%v", got, res.Changed, tt.want, tt.changed)
				}
				if res.New != strings.TrimSuffix(tt.want, "\n") || res.Old != strings.TrimSuffix(tt.in, "\n") {
					t.Errorf("Old/New = %q / %q", res.Old, res.New)
				}
				backup := file + BackupSuffix
				if tt.changed {
					b, err := os.ReadFile(backup)
					if err != nil || string(b) != tt.in || res.Backup != backup {
						t.Errorf("backup %q (%v), want the old contents %q", b, err, tt.in)
					}
					if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o755 {
						t.Errorf("mode changed to %v", fi.Mode())
					}
				} else if _, err := os.Stat(backup); !os.IsNotExist(err) {
					t.Errorf("a backup was written although nothing changed: %v", err)
				}
				// Idempotent: a second run changes nothing.
				again, err := FixBootCmdline(file)
				if err != nil || again.Changed {
					t.Errorf("second run: changed=%v err=%v", again.Changed, err)
				}
				if b, _ := os.ReadFile(file); string(b) != tt.want {
					t.Errorf("second run changed the file to %q", b)
				}
				entries, _ := os.ReadDir(filepath.Dir(file))
				for _, e := range entries {
					if strings.Contains(e.Name(), ".tmp-") {
						t.Errorf("temporary file left: %s", e.Name())
					}
				}
			})
		}
	}
}

func TestFixBootCmdlineRefuses(t *testing.T) {
	dir := t.TempDir()
	for name, text := range map[string]string{
		"empty":     "",
		"blank":     "\n",
		"two lines": "root=/dev/sda2\nroot=/dev/sda3\n",
	} {
		file := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := FixBootCmdline(file); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if b, _ := os.ReadFile(file); string(b) != text {
			t.Errorf("%s: file changed", name)
		}
	}
	if _, err := FixBootCmdline(filepath.Join(dir, "absent")); err == nil {
		t.Error("absent file accepted")
	}
}
