package hostcheck

import (
	"bufio"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"
	"unsafe"
)

// loadSample reads testdata/<name> into a MapFS rooted at "/", then applies
// its layout.txt (symlinks, empty directories and stand-in binaries).
func loadSample(t *testing.T, name string) fstest.MapFS {
	t.Helper()
	root := filepath.Join("testdata", name)
	m := fstest.MapFS{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		if rel == "layout.txt" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		m[filepath.ToSlash(rel)] = &fstest.MapFile{Data: b, Mode: 0o644}
		return nil
	})
	if err != nil {
		t.Fatalf("load sample %s: %v", name, err)
	}
	layout, err := os.ReadFile(filepath.Join(root, "layout.txt"))
	if errors.Is(err, fs.ErrNotExist) {
		return m
	}
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(layout)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch {
		case f[0] == "symlink" && len(f) == 3:
			m[f[1]] = &fstest.MapFile{Data: []byte(f[2]), Mode: fs.ModeSymlink | 0o777}
		case f[0] == "dir" && len(f) == 2:
			m[f[1]] = &fstest.MapFile{Mode: fs.ModeDir | 0o755}
		case f[0] == "file" && len(f) == 2:
			m[f[1]] = &fstest.MapFile{Data: []byte("stand-in\n"), Mode: 0o755}
		default:
			t.Fatalf("%s/layout.txt: bad line %q", name, sc.Text())
		}
	}
	return m
}

// dropLines removes the lines containing substr from a file of m.
func dropLines(t *testing.T, m fstest.MapFS, name, substr string) {
	t.Helper()
	f, ok := m[name]
	if !ok {
		t.Fatalf("no %s in sample", name)
	}
	var kept []string
	for _, l := range strings.SplitAfter(string(f.Data), "\n") {
		if !strings.Contains(l, substr) {
			kept = append(kept, l)
		}
	}
	m[name] = &fstest.MapFile{Data: []byte(strings.Join(kept, "")), Mode: f.Mode}
}

func TestDetectFromSamples(t *testing.T) {
	type want struct {
		cgroup         CgroupMode
		controllers    []string
		systemd        bool
		capSysResource bool
		rootShared     bool
		overlay        bool
		overlayModule  bool
		bridge         bool
		swap           bool
		iptablesMode   string
		nft            bool
		bootCmdline    string
		driver         string
		snapshotter    string
		// requireErr: substrings of RequireNode's error; nil means no error.
		requireErr []string
		// requireNot: substrings that must not be in the error.
		requireNot []string
	}
	tests := []struct {
		name   string
		sample string
		mutate func(t *testing.T, m fstest.MapFS)
		want   want
	}{
		{
			name:   "this machine: hybrid v1, no systemd, no CAP_SYS_RESOURCE, private /",
			sample: "thismachine",
			want: want{
				cgroup:       CgroupModeHybrid,
				controllers:  []string{"blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "memory", "pids"},
				overlay:      true,
				bridge:       true,
				iptablesMode: "nft",
				driver:       "cgroupfs",
				snapshotter:  "overlayfs",
			},
		},
		{
			name:   "this machine with the memory hierarchy unmounted",
			sample: "thismachine",
			mutate: func(t *testing.T, m fstest.MapFS) {
				dropLines(t, m, "proc/self/mountinfo", "/sys/fs/cgroup/memory ")
			},
			want: want{
				cgroup:       CgroupModeHybrid,
				controllers:  []string{"blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "pids"},
				overlay:      true,
				bridge:       true,
				iptablesMode: "nft",
				driver:       "cgroupfs",
				snapshotter:  "overlayfs",
				requireErr: []string{
					"cgroup controller memory missing",
					"mount -t cgroup -o memory cgroup /sys/fs/cgroup/memory",
				},
				requireNot: []string{"cmdline.txt", "cgroup_disable"},
			},
		},
		{
			name:   "this machine with the memory controller disabled by the kernel",
			sample: "thismachine",
			mutate: func(t *testing.T, m fstest.MapFS) {
				dropLines(t, m, "proc/self/mountinfo", "/sys/fs/cgroup/memory ")
				m["proc/cgroups"].Data = []byte(strings.Replace(string(m["proc/cgroups"].Data), "memory\t4\t39\t1", "memory\t0\t1\t0", 1))
				m["proc/cmdline"] = &fstest.MapFile{Data: []byte("console=ttyS0 cgroup_disable=memory quiet\n")}
			},
			want: want{
				cgroup:       CgroupModeHybrid,
				controllers:  []string{"blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "pids"},
				overlay:      true,
				bridge:       true,
				iptablesMode: "nft",
				driver:       "cgroupfs",
				snapshotter:  "overlayfs",
				requireErr: []string{
					"cgroup controller memory missing",
					"/proc/cmdline) contains cgroup_disable=memory",
					"remove `cgroup_disable=memory` from the kernel command line",
				},
				requireNot: []string{"cmdline.txt", "Raspberry Pi firmware"},
			},
		},
		{
			name:   "Raspberry Pi OS bookworm: v2, systemd, memory off by cgroup_disable=memory",
			sample: "pi-bookworm",
			want: want{
				cgroup:         CgroupModeV2,
				controllers:    []string{"cpu", "cpuset", "io", "pids"},
				systemd:        true,
				capSysResource: true,
				rootShared:     true,
				overlayModule:  true,
				swap:           true,
				bootCmdline:    "/boot/firmware/cmdline.txt",
				driver:         "systemd",
				snapshotter:    "overlayfs",
				requireErr: []string{
					"cgroup controller memory missing (kubelet needs cpu, cpuset, memory on a cgroup v2 host)",
					"/proc/cmdline) contains cgroup_disable=memory",
					"add `cgroup_memory=1 cgroup_enable=memory` to the single line in /boot/firmware/cmdline.txt and reboot",
				},
			},
		},
		{
			name:   "Raspberry Pi OS bookworm without the boot partition mounted",
			sample: "pi-bookworm",
			mutate: func(t *testing.T, m fstest.MapFS) {
				delete(m, "boot/firmware/cmdline.txt")
				delete(m, "boot/cmdline.txt")
			},
			want: want{
				cgroup:         CgroupModeV2,
				controllers:    []string{"cpu", "cpuset", "io", "pids"},
				systemd:        true,
				capSysResource: true,
				rootShared:     true,
				overlayModule:  true,
				swap:           true,
				driver:         "systemd",
				snapshotter:    "overlayfs",
				requireErr: []string{
					"to the single line in /boot/firmware/cmdline.txt (bookworm; /boot/cmdline.txt on older releases) and reboot",
				},
			},
		},
		{
			name:   "Raspberry Pi with /boot/cmdline.txt only (buster, hybrid, memory off in kernel)",
			sample: "pi-buster",
			want: want{
				cgroup:         CgroupModeHybrid,
				controllers:    []string{"blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "net_cls", "perf_event", "pids"},
				systemd:        true,
				capSysResource: true,
				rootShared:     true,
				overlay:        true,
				bridge:         true,
				iptablesMode:   "legacy",
				bootCmdline:    "/boot/cmdline.txt",
				driver:         "cgroupfs",
				snapshotter:    "overlayfs",
				requireErr: []string{
					"cgroup controller memory missing (kubelet needs cpu, cpuacct, cpuset, memory on a cgroup hybrid host)",
					"switched off (enabled 0 in /proc/cgroups)",
					"add `cgroup_memory=1 cgroup_enable=memory` to the single line in /boot/cmdline.txt and reboot",
				},
				requireNot: []string{"cgroup_disable", "/boot/firmware"},
			},
		},
		{
			name:   "Raspberry Pi with cpuset and memory off",
			sample: "pi-buster",
			mutate: func(t *testing.T, m fstest.MapFS) {
				dropLines(t, m, "proc/self/mountinfo", "/sys/fs/cgroup/cpuset ")
				m["proc/cgroups"].Data = []byte(strings.Replace(string(m["proc/cgroups"].Data), "cpuset\t5\t52\t1", "cpuset\t0\t1\t0", 1))
			},
			want: want{
				cgroup:         CgroupModeHybrid,
				controllers:    []string{"blkio", "cpu", "cpuacct", "devices", "freezer", "net_cls", "perf_event", "pids"},
				systemd:        true,
				capSysResource: true,
				rootShared:     true,
				overlay:        true,
				bridge:         true,
				iptablesMode:   "legacy",
				bootCmdline:    "/boot/cmdline.txt",
				driver:         "cgroupfs",
				snapshotter:    "overlayfs",
				requireErr: []string{
					"cgroup controllers cpuset, memory missing",
					"add `cgroup_enable=cpuset cgroup_memory=1 cgroup_enable=memory` to the single line in /boot/cmdline.txt and reboot",
				},
			},
		},
		{
			name:   "healthy cgroup v2 host",
			sample: "healthy-v2",
			want: want{
				cgroup:         CgroupModeV2,
				controllers:    []string{"cpu", "cpuset", "hugetlb", "io", "memory", "misc", "pids", "rdma"},
				systemd:        true,
				capSysResource: true,
				rootShared:     true,
				overlay:        true,
				bridge:         true,
				iptablesMode:   "nft",
				nft:            true,
				driver:         "systemd",
				snapshotter:    "overlayfs",
			},
		},
		{
			name:   "cgroup v2 without systemd uses cgroupfs",
			sample: "healthy-v2",
			mutate: func(t *testing.T, m fstest.MapFS) {
				delete(m, "run/systemd/system")
				delete(m, "proc/filesystems")
			},
			want: want{
				cgroup:         CgroupModeV2,
				controllers:    []string{"cpu", "cpuset", "hugetlb", "io", "memory", "misc", "pids", "rdma"},
				capSysResource: true,
				rootShared:     true,
				bridge:         true,
				iptablesMode:   "nft",
				nft:            true,
				driver:         "cgroupfs",
				snapshotter:    "native",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := loadSample(t, tt.sample)
			if tt.mutate != nil {
				tt.mutate(t, m)
			}
			f, err := DetectFrom(m)
			if err != nil {
				t.Fatalf("DetectFrom: %v", err)
			}
			w := tt.want
			check := func(what string, got, want any) {
				t.Helper()
				if got != want {
					t.Errorf("%s = %v, want %v", what, got, want)
				}
			}
			check("Cgroup", f.Cgroup, w.cgroup)
			if !slices.Equal(f.Controllers, w.controllers) {
				t.Errorf("Controllers = %v, want %v", f.Controllers, w.controllers)
			}
			check("Systemd", f.Systemd, w.systemd)
			check("CapSysResource", f.CapSysResource, w.capSysResource)
			check("RootShared", f.RootShared, w.rootShared)
			check("OverlayFS", f.OverlayFS, w.overlay)
			check("OverlayModule", f.OverlayModule, w.overlayModule)
			check("BridgeNetfilter", f.BridgeNetfilter, w.bridge)
			check("BridgeNFCallIptables", f.BridgeNFCallIptables, w.bridge)
			check("Swap", f.Swap, w.swap)
			check("Iptables.Mode", f.Iptables.Mode, w.iptablesMode)
			check("has nft", f.Iptables.Nft != "", w.nft)
			check("BootCmdline", f.BootCmdline, w.bootCmdline)
			check("CgroupDriver()", f.CgroupDriver(), w.driver)
			check("Snapshotter()", f.Snapshotter(), w.snapshotter)
			check("CgroupV1()", f.CgroupV1(), w.cgroup != CgroupModeV2)
			check("RestrictOOMScoreAdj()", f.RestrictOOMScoreAdj(), !w.capSysResource)
			check("NeedsOwnMountNamespace()", f.NeedsOwnMountNamespace(), !w.rootShared)
			if f.Cmdline == "" {
				t.Errorf("Cmdline is empty")
			}

			err = f.RequireNode()
			if w.requireErr == nil {
				if err != nil {
					t.Fatalf("RequireNode: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("RequireNode succeeded, want error with %q", w.requireErr)
			}
			t.Logf("RequireNode: %v", err)
			var mce *MissingControllersError
			if !errors.As(err, &mce) || len(mce.Missing) == 0 {
				t.Errorf("error %T is not a *MissingControllersError with Missing set", err)
			}
			for _, s := range w.requireErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error lacks %q", s)
				}
			}
			for _, s := range w.requireNot {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error should not contain %q", s)
				}
			}
		})
	}
}

func TestThisMachineSampleDetails(t *testing.T) {
	f, err := DetectFrom(loadSample(t, "thismachine"))
	if err != nil {
		t.Fatal(err)
	}
	if f.CgroupV2Mount != "/sys/fs/cgroup/unified" {
		t.Errorf("CgroupV2Mount = %q", f.CgroupV2Mount)
	}
	if got := f.CgroupV1Mounts["memory"]; got != "/sys/fs/cgroup/memory" {
		t.Errorf("memory mounted at %q", got)
	}
	if got := f.CgroupV1Mounts["name=systemd"]; got != "/sys/fs/cgroup/systemd" {
		t.Errorf("name=systemd mounted at %q", got)
	}
	// hugetlb is only on the (hybrid) v2 mount; net_cls is enabled but not mounted.
	for _, c := range []string{"hugetlb", "net_cls"} {
		if f.HasController(c) {
			t.Errorf("controller %s should not be usable", c)
		}
	}
	if f.Iptables.Iptables != "/usr/sbin/iptables" || f.Iptables.IptablesLegacy == "" || f.Iptables.IptablesNft == "" || f.Iptables.Nft != "" {
		t.Errorf("Iptables = %+v", f.Iptables)
	}
	// Warned about, in the report's words: cgroup v1, the missing
	// CAP_SYS_RESOURCE, and vxlan (the sample has no module lists).
	var names []string
	for _, w := range f.Warnings() {
		name, _, _ := strings.Cut(w, ":")
		names = append(names, name)
	}
	if want := []string{"cgroup version", "vxlan", "CAP_SYS_RESOURCE"}; !slices.Equal(names, want) {
		t.Errorf("Warnings() = %q, want %q", f.Warnings(), want)
	}
}

func TestWarnings(t *testing.T) {
	f, err := DetectFrom(loadSample(t, "pi-bookworm"))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(f.Warnings(), "\n")
	for _, s := range []string{"swap: on", "br_netfilter: module not loaded", "iptables: no iptables"} {
		if !strings.Contains(got, s) {
			t.Errorf("Warnings() lack %q:\n%s", s, got)
		}
	}
	if strings.Contains(got, "overlayfs") || strings.Contains(got, "pids") {
		t.Errorf("unexpected warning:\n%s", got)
	}
}

func TestNoCgroups(t *testing.T) {
	m := loadSample(t, "thismachine")
	dropLines(t, m, "proc/self/mountinfo", "cgroup")
	f, err := DetectFrom(m)
	if err != nil {
		t.Fatal(err)
	}
	if f.Cgroup != CgroupModeNone {
		t.Fatalf("Cgroup = %v, want none", f.Cgroup)
	}
	if err := f.RequireNode(); !errors.Is(err, ErrNoCgroups) {
		t.Fatalf("RequireNode = %v, want ErrNoCgroups", err)
	}
}

func TestDetectFromErrors(t *testing.T) {
	m := loadSample(t, "healthy-v2")
	delete(m, "proc/self/status")
	if _, err := DetectFrom(m); err == nil || !strings.Contains(err.Error(), "process status") {
		t.Errorf("missing status: err = %v", err)
	}
	m = loadSample(t, "healthy-v2")
	m["proc/self/mountinfo"] = &fstest.MapFile{Data: []byte("garbage line\n")}
	if _, err := DetectFrom(m); err == nil || !strings.Contains(err.Error(), "mountinfo") {
		t.Errorf("bad mountinfo: err = %v", err)
	}
}

func TestCmdlineFix(t *testing.T) {
	const piLine = "console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes rootwait quiet splash"
	tests := []struct {
		name, in, want string
		changed        bool
	}{
		{"bookworm line", piLine + "\n", piLine + " cgroup_memory=1 cgroup_enable=memory\n", true},
		{"no newline", piLine, piLine + " cgroup_memory=1 cgroup_enable=memory", true},
		{"already fixed", piLine + " cgroup_memory=1 cgroup_enable=memory\n", piLine + " cgroup_memory=1 cgroup_enable=memory\n", false},
		{"fixed, other order, odd spacing kept", "cgroup_enable=memory  root=/dev/sda2   cgroup_memory=1\n", "cgroup_enable=memory  root=/dev/sda2   cgroup_memory=1\n", false},
		{"half fixed", "root=/dev/sda2 cgroup_enable=memory\n", "root=/dev/sda2 cgroup_enable=memory cgroup_memory=1\n", true},
		{"enable in a list", "root=/dev/sda2 cgroup_enable=cpuset,memory cgroup_memory=1", "root=/dev/sda2 cgroup_enable=cpuset,memory cgroup_memory=1", false},
		{"removes cgroup_disable=memory", "cgroup_disable=memory root=/dev/sda2 rootwait\n", "root=/dev/sda2 rootwait cgroup_memory=1 cgroup_enable=memory\n", true},
		{"keeps other disabled controllers", "root=/dev/sda2 cgroup_disable=memory,blkio\n", "root=/dev/sda2 cgroup_disable=blkio cgroup_memory=1 cgroup_enable=memory\n", true},
		{"replaces cgroup_memory=0", "root=/dev/sda2 cgroup_memory=0 cgroup_enable=memory", "root=/dev/sda2 cgroup_enable=memory cgroup_memory=1", true},
		{"disable present although fixed", "cgroup_disable=memory cgroup_memory=1 cgroup_enable=memory", "cgroup_memory=1 cgroup_enable=memory", true},
		{"collapses whitespace only when changing", "  root=/dev/sda2\t rootwait  \n", "root=/dev/sda2 rootwait cgroup_memory=1 cgroup_enable=memory\n", true},
		{"CRLF", "root=/dev/sda2 rootwait\r\n", "root=/dev/sda2 rootwait cgroup_memory=1 cgroup_enable=memory\r\n", true},
		{"init args stay last", "root=/dev/sda2 -- single", "root=/dev/sda2 cgroup_memory=1 cgroup_enable=memory -- single", true},
		{"only the first line", "root=/dev/sda2\n# a stray second line\n", "root=/dev/sda2 cgroup_memory=1 cgroup_enable=memory\n# a stray second line\n", true},
		{"empty", "", "cgroup_memory=1 cgroup_enable=memory", true},
		{"similar words kept", "xcgroup_disable=memory cgroup_disable_foo=memory", "xcgroup_disable=memory cgroup_disable_foo=memory cgroup_memory=1 cgroup_enable=memory", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, changed := CmdlineFix(tt.in)
			if got != tt.want || changed != tt.changed {
				t.Fatalf("CmdlineFix(%q) = %q, %v; want %q, %v", tt.in, got, changed, tt.want, tt.changed)
			}
			again, changed2 := CmdlineFix(got)
			if again != got || changed2 {
				t.Fatalf("not idempotent: CmdlineFix(%q) = %q, %v", got, again, changed2)
			}
		})
	}
}

// TestDetectHost runs Detect on the real host, whatever it is (a Pi, a
// laptop, a CI VM), and checks it against what the kernel says through
// other means (statfs, capget, uname, findmnt) and against the invariants
// that hold on every host. The facts of the development VM are checked on
// its sample (testdata/thismachine), not here.
func TestDetectHost(t *testing.T) {
	f, err := Detect()
	if err != nil {
		t.Fatalf("Detect: %v", err)
	}
	t.Logf("facts: cgroup=%v controllers=%v systemd=%v capSysResource=%v rootShared=%v overlay=%v bridge=%v iptables=%+v swap=%v driver=%s",
		f.Cgroup, f.Controllers, f.Systemd, f.CapSysResource, f.RootShared, f.OverlayFS, f.BridgeNetfilter, f.Iptables, f.Swap, f.CgroupDriver())

	// cgroup2 at /sys/fs/cgroup <=> v2.
	var st syscall.Statfs_t
	if err := syscall.Statfs("/sys/fs/cgroup", &st); err == nil {
		const cgroup2Magic = 0x63677270
		if isV2 := st.Type == cgroup2Magic; isV2 != (f.Cgroup == CgroupModeV2) {
			t.Errorf("statfs says cgroup2=%v, Detect says %v", isV2, f.Cgroup)
		}
	}

	// CAP_SYS_RESOURCE from capget(2).
	if eff, ok := capgetEffective(); ok {
		if has := eff&(1<<capSysResource) != 0; has != f.CapSysResource {
			t.Errorf("capget says CAP_SYS_RESOURCE=%v, Detect says %v", has, f.CapSysResource)
		}
	}

	// The kernel release from uname(2).
	var uts syscall.Utsname
	if err := syscall.Uname(&uts); err == nil {
		var rel []byte
		for _, c := range uts.Release {
			if c == 0 {
				break
			}
			rel = append(rel, byte(c))
		}
		if string(rel) != f.KernelRelease {
			t.Errorf("uname says release %q, Detect says %q", rel, f.KernelRelease)
		}
	}

	// Propagation of / from findmnt, when util-linux is there.
	if out, err := exec.Command("findmnt", "-n", "-o", "PROPAGATION", "/").Output(); err == nil {
		prop := strings.TrimSpace(string(out))
		if shared := strings.Contains(prop, "shared"); shared != f.RootShared {
			t.Errorf("findmnt says / is %q, Detect says shared=%v", prop, f.RootShared)
		}
	}

	if _, err := os.Stat("/run/systemd/system"); (err == nil) != f.Systemd {
		t.Errorf("Systemd = %v, /run/systemd/system stat err = %v", f.Systemd, err)
	}

	checkInvariants(t, f)
}

// TestSampleInvariants: the invariants TestDetectHost checks on the real host
// hold on every sample host too.
func TestSampleInvariants(t *testing.T) {
	samples, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range samples {
		t.Run(e.Name(), func(t *testing.T) {
			f, err := DetectFrom(loadSample(t, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			checkInvariants(t, f)
		})
	}
}

// checkInvariants checks what holds between the facts on every host.
func checkInvariants(t *testing.T, f Facts) {
	t.Helper()
	switch f.Cgroup {
	case CgroupModeV2:
		if f.CgroupV2Mount != cgroupMountPoint || len(f.CgroupV1Mounts) != 0 {
			t.Errorf("v2: CgroupV2Mount %q, CgroupV1Mounts %v", f.CgroupV2Mount, f.CgroupV1Mounts)
		}
	case CgroupModeHybrid:
		if f.CgroupV2Mount == "" || f.CgroupV2Mount == cgroupMountPoint || len(f.CgroupV1Mounts) == 0 {
			t.Errorf("hybrid: CgroupV2Mount %q, CgroupV1Mounts %v", f.CgroupV2Mount, f.CgroupV1Mounts)
		}
	case CgroupModeV1:
		if f.CgroupV2Mount != "" || len(f.CgroupV1Mounts) == 0 {
			t.Errorf("v1: CgroupV2Mount %q, CgroupV1Mounts %v", f.CgroupV2Mount, f.CgroupV1Mounts)
		}
	case CgroupModeNone:
		if len(f.Controllers) != 0 {
			t.Errorf("no cgroups, but controllers %v", f.Controllers)
		}
	}
	if !slices.IsSorted(f.Controllers) {
		t.Errorf("Controllers not sorted: %v", f.Controllers)
	}
	for _, c := range f.KernelDisabled {
		if f.Cgroup != CgroupModeV2 && f.HasController(c) {
			t.Errorf("controller %s is off in /proc/cgroups but listed as usable", c)
		}
	}
	if f.CgroupV1() != (f.Cgroup != CgroupModeV2) {
		t.Errorf("CgroupV1() = %v with cgroup %v", f.CgroupV1(), f.Cgroup)
	}
	if want := map[bool]string{true: "systemd", false: "cgroupfs"}[f.Systemd && f.Cgroup == CgroupModeV2]; f.CgroupDriver() != want {
		t.Errorf("CgroupDriver() = %q, want %q (systemd %v, cgroup %v)", f.CgroupDriver(), want, f.Systemd, f.Cgroup)
	}
	if f.RestrictOOMScoreAdj() == f.CapSysResource {
		t.Errorf("RestrictOOMScoreAdj() = %v with CapSysResource %v", f.RestrictOOMScoreAdj(), f.CapSysResource)
	}
	if f.NeedsOwnMountNamespace() == f.RootShared {
		t.Errorf("NeedsOwnMountNamespace() = %v with RootShared %v", f.NeedsOwnMountNamespace(), f.RootShared)
	}
	if want := map[bool]string{true: "overlayfs", false: "native"}[f.OverlayFS || f.OverlayModule]; f.Snapshotter() != want {
		t.Errorf("Snapshotter() = %q, want %q", f.Snapshotter(), want)
	}
	if f.BridgeNetfilter && !f.Bridge {
		t.Error("bridge netfilter without the bridge driver")
	}
	if f.Iptables.Mode != "" && f.Iptables.Iptables == "" {
		t.Errorf("iptables mode %q without an iptables command", f.Iptables.Mode)
	}

	// RequireNode fails exactly when a required controller is missing.
	missing := f.Cgroup == CgroupModeNone
	for _, c := range RequiredControllers(f.Cgroup) {
		missing = missing || !f.HasController(c)
	}
	err := f.RequireNode()
	var mce *MissingControllersError
	switch {
	case missing && err == nil:
		t.Errorf("a required controller is missing (%v), RequireNode passes", f.Controllers)
	case !missing && err != nil:
		t.Errorf("RequireNode: %v, with every required controller there", err)
	case err != nil && !errors.As(err, &mce) && !errors.Is(err, ErrNoCgroups):
		t.Errorf("RequireNode error of type %T: %v", err, err)
	}

	// The report: one check per name, a fix for everything missing.
	seen := map[string]bool{}
	for _, c := range f.Report() {
		if seen[c.Name] {
			t.Errorf("report names %q twice", c.Name)
		}
		seen[c.Name] = true
		if c.Status == Missing && c.Fix == "" {
			t.Errorf("missing without a fix: %s", c)
		}
	}
}

// capgetEffective returns the effective capability set of this thread.
func capgetEffective() (uint64, bool) {
	hdr := struct {
		version uint32
		pid     int32
	}{version: 0x20080522} // _LINUX_CAPABILITY_VERSION_3
	var data [2]struct{ effective, permitted, inheritable uint32 }
	_, _, errno := syscall.RawSyscall(syscall.SYS_CAPGET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
	if errno != 0 {
		return 0, false
	}
	return uint64(data[1].effective)<<32 | uint64(data[0].effective), true
}

// AppArmor is on for containers only where the kernel runs it and
// containerd can load its profile; the sample of this machine has neither.
func TestAppArmor(t *testing.T) {
	withAppArmor := func(enabled string, securityfs, parser bool) fstest.MapFS {
		m := loadSample(t, "thismachine")
		m["sys/module/apparmor/parameters/enabled"] = &fstest.MapFile{Data: []byte(enabled + "\n")}
		if securityfs {
			m["sys/kernel/security/apparmor"] = &fstest.MapFile{Mode: fs.ModeDir | 0o755}
		}
		if parser {
			// Debian's merged /usr: /sbin is a link to usr/sbin.
			m["sbin"] = &fstest.MapFile{Data: []byte("usr/sbin"), Mode: fs.ModeSymlink | 0o777}
			m["usr/sbin/apparmor_parser"] = &fstest.MapFile{Data: []byte("stand-in\n"), Mode: 0o755}
		}
		return m
	}
	tests := []struct {
		name    string
		src     fstest.MapFS
		enabled bool
		why     string
	}{
		{"this machine: no AppArmor", loadSample(t, "thismachine"), false, "the kernel does not run AppArmor"},
		{"Debian 12 with the apparmor package", withAppArmor("Y", true, true), true, ""},
		{"module loaded but switched off (apparmor=0)", withAppArmor("N", true, true), false, "the kernel does not run AppArmor"},
		{"no securityfs entry", withAppArmor("Y", false, true), false, "the kernel does not run AppArmor"},
		{"no apparmor_parser", withAppArmor("Y", true, false), false, "/sbin/apparmor_parser is missing (apt-get install apparmor)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := DetectFrom(tt.src)
			if err != nil {
				t.Fatal(err)
			}
			enabled, why := f.AppArmor()
			if enabled != tt.enabled || !strings.Contains(why, tt.why) || (tt.enabled && why != "") {
				t.Errorf("AppArmor() = %v, %q; want %v and a reason with %q", enabled, why, tt.enabled, tt.why)
			}
			var line string
			for _, c := range f.Report() {
				if c.Name == "AppArmor" {
					line = c.Text()
				}
			}
			if line == "" || (tt.enabled != strings.Contains(line, "runtime/default")) {
				t.Errorf("report line %q", line)
			}
		})
	}
}
