package cluster

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procStat reads a process's state letter, parent PID and start time.
func procStat(pid int) (st byte, ppid int, start uint64, ok bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, 0, false
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return 0, 0, 0, false
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 20 {
		return 0, 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	start, _ = strconv.ParseUint(f[19], 10, 64)
	return f[0][0], ppid, start, true
}

// identify records a live process.
func identify(pid int) (Proc, error) {
	_, _, start, ok := procStat(pid)
	if !ok {
		return Proc{}, fmt.Errorf("process %d is gone", pid)
	}
	return Proc{PID: pid, Start: start}, nil
}

// Alive says whether the recorded process still runs (a zombie does not).
func (p Proc) Alive() bool {
	if p.PID <= 0 {
		return false
	}
	st, _, start, ok := procStat(p.PID)
	return ok && start == p.Start && st != 'Z'
}

// signal sends sig when the process is still the recorded one.
func (p Proc) signal(sig syscall.Signal) {
	if p.Alive() {
		_ = syscall.Kill(p.PID, sig)
	}
}

// waitGone polls until the process is gone or timeout passes.
func (p Proc) waitGone(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for p.Alive() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// terminate sends SIGTERM, waits up to grace, then SIGKILL. It says whether
// SIGKILL was needed.
func (p Proc) terminate(grace time.Duration) (killed bool) {
	if !p.Alive() {
		return false
	}
	p.signal(syscall.SIGTERM)
	if p.waitGone(grace) {
		return false
	}
	p.signal(syscall.SIGKILL)
	p.waitGone(10 * time.Second)
	return true
}

// descendants lists the PIDs below the roots (not the roots themselves).
func descendants(roots ...int) []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, ppid, _, ok := procStat(pid); ok {
			children[ppid] = append(children[ppid], pid)
		}
	}
	var out []int
	queue := append([]int(nil), roots...)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// commOf is a process's command name.
func commOf(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// StatusKiB reads a field (VmRSS, ...) of /proc/PID/status in KiB.
func StatusKiB(pid int, field string) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			fs := strings.Fields(v)
			if len(fs) > 0 {
				n, _ := strconv.Atoi(fs[0])
				return n
			}
		}
	}
	return 0
}
