package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// hierarchy is one cgroup mount of the host.
type hierarchy struct {
	Mount  string // /sys/fs/cgroup/cpu
	FSType string // cgroup or cgroup2
	Opts   string // the v1 controllers or name=..., e.g. "cpu" or "name=systemd"
}

// hierarchies lists the host's cgroup mounts under /sys/fs/cgroup (v1, and
// the unified v2 one of a hybrid host, or the v2 root).
func hierarchies() ([]hierarchy, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	var out []hierarchy
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, x := range fields {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || len(fields) < sep+4 {
			continue
		}
		mp, fstype, super := fields[4], fields[sep+1], fields[sep+3]
		if fstype != "cgroup" && fstype != "cgroup2" {
			continue
		}
		if mp != "/sys/fs/cgroup" && !strings.HasPrefix(mp, "/sys/fs/cgroup/") || seen[mp] {
			continue
		}
		seen[mp] = true
		var opts []string
		for _, o := range strings.Split(super, ",") {
			if fstype == "cgroup" && o != "rw" && o != "ro" {
				opts = append(opts, o)
			}
		}
		out = append(out, hierarchy{Mount: mp, FSType: fstype, Opts: strings.Join(opts, ",")})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("no cgroup hierarchy mounted under /sys/fs/cgroup")
	}
	return out, nil
}

// cgroupSymlinks lists the symlinks in /sys/fs/cgroup (cpu -> cpu,cpuacct).
func cgroupSymlinks() map[string]string {
	out := map[string]string{}
	entries, _ := os.ReadDir("/sys/fs/cgroup")
	for _, e := range entries {
		if e.Type()&fs.ModeSymlink != 0 {
			if target, err := os.Readlink(filepath.Join("/sys/fs/cgroup", e.Name())); err == nil {
				out[e.Name()] = target
			}
		}
	}
	return out
}

// createCgroup makes the cgroup in every hierarchy; cpuset gets its parent's
// cpus and mems (an empty cpuset takes no process).
func createCgroup(cg string) error {
	hs, err := hierarchies()
	if err != nil {
		return err
	}
	for _, h := range hs {
		dir := filepath.Join(h.Mount, cg)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create cgroup %s: %w", dir, err)
		}
		if h.FSType == "cgroup" && hasOpt(h.Opts, "cpuset") {
			for _, name := range []string{"cpus", "mems"} {
				file := "cpuset." + name
				if _, err := os.Stat(filepath.Join(h.Mount, file)); err != nil {
					file = name // mounted with noprefix
				}
				v, err := os.ReadFile(filepath.Join(filepath.Dir(dir), file))
				if err != nil {
					return fmt.Errorf("read parent %s: %w", file, err)
				}
				if err := os.WriteFile(filepath.Join(dir, file), v, 0o644); err != nil {
					return fmt.Errorf("set %s of %s: %w", file, dir, err)
				}
			}
		}
	}
	return nil
}

func hasOpt(opts, want string) bool {
	for _, o := range strings.Split(opts, ",") {
		if o == want {
			return true
		}
	}
	return false
}

// cgroupDirs lists the cgroup's directories in every hierarchy, deepest
// first.
func cgroupDirs(cg string) []string {
	hs, _ := hierarchies()
	var dirs []string
	for _, h := range hs {
		root := filepath.Join(h.Mount, cg)
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
	}
	sort.Slice(dirs, func(i, j int) bool { return strings.Count(dirs[i], "/") > strings.Count(dirs[j], "/") })
	return dirs
}

// CgroupPIDs lists the processes in the cgroup (and below) in any hierarchy.
func CgroupPIDs(cg string) []int {
	seen := map[int]bool{}
	var pids []int
	for _, d := range cgroupDirs(cg) {
		data, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil && !seen[pid] {
				seen[pid] = true
				pids = append(pids, pid)
			}
		}
	}
	sort.Ints(pids)
	return pids
}

// CgroupExists says whether the cgroup is left in any hierarchy.
func CgroupExists(cg string) bool { return len(cgroupDirs(cg)) > 0 }

// killCgroup SIGKILLs everything in the cgroup, and every descendant of
// those processes wherever its cgroup (a container the kubelet put under
// another cgroup root is a child of its shim), until none is left.
func killCgroup(cg string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pids := CgroupPIDs(cg)
		pids = append(pids, descendants(pids...)...)
		alive := 0
		for _, pid := range pids {
			if st, _, _, ok := procStat(pid); ok && st != 'Z' {
				alive++
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if alive == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s: processes survive SIGKILL: %v", cg, pids)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// removeCgroup removes the cgroup's directories, deepest first. A cgroup
// whose last process just died can be busy for a moment: retry.
func removeCgroup(cg string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var errs []error
		for _, d := range cgroupDirs(cg) {
			if err := syscall.Rmdir(d); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
			}
		}
		if len(errs) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.Join(errs...)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
