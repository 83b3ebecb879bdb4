package cluster

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Down removes everything the cluster made, in this order: bramble
// processes (SIGTERM, then SIGKILL), whatever is left in the nodes' cgroups
// (containerd, shims, containers), bramble-killall.sh in every node's
// namespaces, the cgroups, the holders, the network namespaces, the
// created mount points; then it restores the kernel settings and removes
// the state dir. It works from state.json and, for anything not recorded
// there, from the names (<name>-* namespaces and cgroups), so it cleans a
// half-made or crashed cluster too. It is safe to call twice.
func (c *Cluster) Down() error {
	var errs []error
	nodes := c.Nodes()
	step, stepBegin := "", time.Now()
	mark := func(next string) {
		if d := time.Since(stepBegin); step != "" && d > time.Second {
			c.cfg.Logf("down: %s took %.1f s", step, d.Seconds())
		}
		step, stepBegin = next, time.Now()
	}
	defer mark("")
	mark("stopping bramble")

	// 1. bramble, gracefully and all at once.
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func(n *Node) {
			defer wg.Done()
			n.Process.terminate(20 * time.Second)
		}(n)
	}
	wg.Wait()

	// Nodes known by name only (state lost): their cgroups and namespaces.
	prefix := c.cfg.Name + "-"
	cgroups := map[string]bool{}
	for _, n := range nodes {
		cgroups[n.Cgroup] = true
	}
	for _, cg := range strayCgroups(prefix) {
		cgroups[cg] = true
	}

	mark("killing the nodes' cgroups")
	// 2. Everything left in the nodes' cgroups.
	for cg := range cgroups {
		if err := killCgroup(cg, 15*time.Second); err != nil {
			errs = append(errs, err)
		}
	}

	mark("bramble-killall.sh")
	// 3. The killall script in each node's namespaces, now that nothing runs
	// there: mounts, pod network namespaces, interfaces, iptables chains.
	for _, n := range nodes {
		if err := c.killall(n); err != nil {
			errs = append(errs, err)
		}
	}

	mark("holders")
	// 4. The holders, and any process left in a node's network namespace.
	for _, n := range nodes {
		n.Holder.signal(syscall.SIGKILL)
		n.Holder.waitGone(5 * time.Second)
	}
	for _, ns := range ListNetNS(prefix) {
		if ns == c.st.Switch {
			continue
		}
		out, _ := run("ip", "netns", "pids", ns)
		for _, f := range strings.Fields(out) {
			if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}

	mark("removing cgroups")
	// 5. The cgroups.
	for cg := range cgroups {
		if err := killCgroup(cg, 5*time.Second); err != nil {
			errs = append(errs, err)
		}
		if err := removeCgroup(cg, 10*time.Second); err != nil {
			errs = append(errs, err)
		}
	}

	mark("network namespaces")
	// 6. The network namespaces, nodes first, then the switch.
	for _, ns := range ListNetNS(prefix) {
		if ns != c.st.Switch {
			if err := deleteNetNS(ns); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := deleteNetNS(c.st.Switch); err != nil {
		errs = append(errs, err)
	}

	// 7. Mount points made on the host (left if something else uses them).
	for _, d := range c.st.Created {
		_ = syscall.Rmdir(d)
	}

	// 8. Kernel settings the kubelet changed.
	for f, v := range c.st.Kernel {
		if err := os.WriteFile(f, []byte(v+"\n"), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore %s: %w", f, err))
		}
	}

	if len(errs) > 0 {
		// Keep the state (and the logs) for a second try.
		return fmt.Errorf("cluster %s down: %w", c.cfg.Name, errors.Join(errs...))
	}
	mark("removing the state dir")
	if err := os.RemoveAll(c.cfg.StateDir); err != nil {
		return fmt.Errorf("remove state dir: %w", err)
	}
	c.mu.Lock()
	c.st = state{Name: c.cfg.Name, Switch: c.st.Switch}
	c.mu.Unlock()
	return nil
}

// killall runs bramble-killall.sh in the node's mount and network
// namespaces. It runs in a PID namespace of its own with its own /proc: the
// node's processes are gone already, and the script must not see (and match
// by path) another node's or the host's.
func (c *Cluster) killall(n *Node) error {
	if c.cfg.Killall == "" || !n.Holder.Alive() {
		return nil
	}
	script := `mount --make-private /proc && mount -t proc proc /proc && exec "$@"`
	cmd := c.InNode(n, "unshare", "--pid", "--fork", "--mount", "--propagation", "unchanged", "--",
		"/bin/sh", "-c", script, "sh", c.cfg.Killall, "-q",
		"--data-dir", n.DataDir(), "--run-dir", "/run/bramble", "--kubelet-dir", "/var/lib/kubelet")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("node %s: bramble-killall.sh: %w: %s", n.Host, err, strings.TrimSpace(string(out)))
	}
	if s := strings.TrimSpace(string(out)); s != "" {
		c.cfg.Logf("node %s: killall: %s", n.Host, s)
	}
	return nil
}

// strayCgroups lists top-level cgroups named <prefix>* in any hierarchy.
func strayCgroups(prefix string) []string {
	hs, _ := hierarchies()
	seen := map[string]bool{}
	var out []string
	for _, h := range hs {
		entries, _ := os.ReadDir(h.Mount)
		for _, e := range entries {
			if e.IsDir() && strings.HasPrefix(e.Name(), prefix) && !seen[e.Name()] {
				seen[e.Name()] = true
				out = append(out, "/"+e.Name())
			}
		}
	}
	return out
}

// Leftovers lists what of a cluster named name is still on the machine:
// network namespaces, cgroups, processes in them, the state dir. Empty
// after Down.
func Leftovers(name, stateDir string) []string {
	var left []string
	prefix := name + "-"
	for _, ns := range ListNetNS(prefix) {
		left = append(left, "network namespace "+ns)
	}
	for _, cg := range strayCgroups(prefix) {
		left = append(left, "cgroup "+cg)
		for _, pid := range CgroupPIDs(cg) {
			left = append(left, fmt.Sprintf("process %d (%s) in %s", pid, commOf(pid), cg))
		}
	}
	if _, err := os.Stat(stateDir); err == nil {
		left = append(left, "state dir "+stateDir)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mounts), "\n") {
		if strings.Contains(line, stateDir) || strings.Contains(line, "/run/netns/"+prefix) {
			left = append(left, "mount "+line)
		}
	}
	return left
}
