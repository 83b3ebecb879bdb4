package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// addons: seconds from `bramble server` start (README's path: the air-gap
// tarball `make` put in dist/, found by bramble itself) to the first "odd"
// through the ingress; then, after idle, RSS of bramble,
// containerd, the shims and every pod's processes.
func addons(bin string, idle time.Duration) error {
	if _, err := os.Stat(filepath.Join(filepath.Dir(filepath.Dir(bin)), "dist", "bramble-airgap-images-"+runtime.GOARCH+".tar.zst")); err != nil {
		return fmt.Errorf("run make first (it builds the air-gap tarball): %w", err)
	}
	n, err := startNode(bin, true)
	if err != nil {
		return err
	}
	defer n.stop()
	p, data := n.p, n.data
	begin := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	if err := poll(ctx, func() bool {
		resp, err := client.Get("http://127.0.0.1/parity?int=15")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == 200 && strings.TrimSpace(string(b)) == "odd"
	}); err != nil {
		return fmt.Errorf("no odd through the ingress: %w", err)
	}
	fmt.Printf("first odd through Traefik:   %6.2f s after start (README path, fresh data dir, load %s)\n", time.Since(begin).Seconds(), loadavg())
	fmt.Printf("idling %s ...\n", idle)
	time.Sleep(idle)
	pids := append([]int{p.cmd.Process.Pid}, containerdPID(data))
	pids = append(pids, shimTrees()...)
	rss := 0
	for _, pid := range pids {
		rss += smapsRollup(pid)["Rss"]
	}
	fmt.Printf("RSS bramble+containerd+pods: %d MiB (%d processes)\n", rss/1024, len(pids))
	return nil
}

// shimTrees lists the containerd shims and all their descendants.
func shimTrees() []int {
	parent := map[int]int{}
	var shims []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(stat)
		fields := strings.Fields(s[strings.LastIndex(s, ")")+2:])
		if len(fields) > 1 {
			parent[pid], _ = strconv.Atoi(fields[1])
		}
		if comm, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "comm")); strings.HasPrefix(string(comm), "containerd-shim") {
			shims = append(shims, pid)
		}
	}
	in := map[int]bool{}
	for _, s := range shims {
		in[s] = true
	}
	for changed := true; changed; {
		changed = false
		for pid, pp := range parent {
			if in[pp] && !in[pid] {
				in[pid], changed = true, true
			}
		}
	}
	out := make([]int, 0, len(in))
	for pid := range in {
		out = append(out, pid)
	}
	return out
}

// loadavg is the machine's 1-minute load average, printed with figures that
// depend on it.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}
