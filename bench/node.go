package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/bramble-pi/bramble/tests/testutil"
)

// node: a full single-node server. Seconds from start to node Ready (fresh
// data dir), a 10-replica Deployment to all Running, 500 ConfigMap creates;
// then, idle, memory of bramble + containerd, CPU and bytes written over
// 60 s; then seconds from a restart (SIGTERM, start again on the same data
// dir) to node Ready, and the size of the SQLite database.
func node(bin string, idle time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	n, cs, err := startBusyboxNode(ctx, bin)
	if err != nil {
		return err
	}
	defer n.stop()
	took := time.Since(n.p.started)
	load := record("start-ready", fmt.Sprintf("%.2f s", took.Seconds()))
	fmt.Printf("node Ready after start:      %6.2f s (fresh data dir, load %s)\n", took.Seconds(), load)

	begin := time.Now()
	out, err := exec.Command(bin, "kubectl", "--kubeconfig", n.kubeconfig, "create", "deployment", "bench", "--replicas=10",
		"--image=docker.io/bramble/busybox:test", "--", "sleep", "3600").CombinedOutput()
	if err != nil {
		return fmt.Errorf("create deployment: %v: %s", err, out)
	}
	if err := poll(ctx, func() bool {
		pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=bench"})
		if err != nil {
			return false
		}
		running := 0
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		return running == 10
	}); err != nil {
		return fmt.Errorf("10 replicas: %w", err)
	}
	fmt.Printf("10 replicas Running:        %6.2f s\n", time.Since(begin).Seconds())

	begin = time.Now()
	for i := 0; i < 500; i++ {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-%d", i)}, Data: map[string]string{"k": "v"}}
		if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("configmap %d: %w", i, err)
		}
	}
	fmt.Printf("500 ConfigMap creates:      %6.2f s\n", time.Since(begin).Seconds())
	_, _ = exec.Command(bin, "kubectl", "--kubeconfig", n.kubeconfig, "delete", "deployment", "bench").CombinedOutput()

	fmt.Printf("idling %s ...\n", idle)
	time.Sleep(idle)
	idleFigures(n, idle)

	// The restart: the context above may have been used up by the idle time.
	rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer rcancel()
	stopTook, err := n.restart()
	if err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	killed := ""
	if stopTook >= 15*time.Second {
		killed = " (not stopped: killed)"
	}
	fmt.Printf("stop after SIGTERM:          %6.2f s%s\n", stopTook.Seconds(), killed)
	if err := waitNodeReady(rctx, cs, n.p.started); err != nil {
		return fmt.Errorf("node Ready after restart: %w", err)
	}
	took = time.Since(n.p.started)
	load = record("restart-ready", fmt.Sprintf("%.2f s", took.Seconds()))
	fmt.Printf("node Ready after restart:    %6.2f s (Ready with a heartbeat from the new process, load %s)\n", took.Seconds(), load)
	fmt.Printf("SQLite at the end:           %s\n", sqliteSizes(n.data))
	return nil
}

// idleFigures reads the idle figures of a server node: memory after the idle
// time, then CPU and bytes written over 60 s.
func idleFigures(n *nodeRun, idle time.Duration) {
	after := ""
	if idle != 3*time.Minute {
		after = fmt.Sprintf(" (after %s, goal: 3m0s)", idle)
	}
	pids := []int{n.p.cmd.Process.Pid}
	cd := testutil.ContainerdPID(n.data)
	if cd > 0 {
		pids = append(pids, cd)
	}
	var rss, pss, anon int
	for _, pid := range pids {
		r := smapsRollup(pid)
		rss, pss, anon = rss+r["Rss"], pss+r["Pss"], anon+r["Anonymous"]
	}
	load := record("server-pss", fmt.Sprintf("%d MiB%s", pss/1024, after))
	record("server-anon", fmt.Sprintf("%d MiB%s", anon/1024, after))
	fmt.Printf("idle %s, bramble+containerd:  PSS %d MiB, anonymous %d MiB (RSS %d MiB), load %s\n", idle, pss/1024, anon/1024, rss/1024, load)
	if cd == 0 {
		fmt.Println("  (no containerd process found: bramble alone)")
	}
	fmt.Printf("  bramble's resident pages by mapping: %s\n", residentByMapping(pids[0]))
	fmt.Print(residentBinary(pids[0], 12))
	shims := containerdShims(containerdSocket(cd))
	shimPSS := 0
	for _, pid := range shims {
		shimPSS += smapsRollup(pid)["Pss"]
	}
	fmt.Printf("  containerd shims, not in that figure: %d, PSS %d MiB\n", len(shims), shimPSS/1024)

	// CPU and writes: bramble (the control plane, kine and its SQLite, the
	// kubelet...), its containerd and the shims, each with the children it
	// reaped in the window (iptables, runc, ...). Pods' processes are not
	// counted, except what a shim reaps (an exec probe's process).
	procs := slices.Concat(pids, shims)
	c0 := readCounters(procs)
	time.Sleep(60 * time.Second)
	c1 := readCounters(procs)
	var ticks, written int
	for pid, c := range c1 {
		if b, ok := c0[pid]; ok {
			ticks += max(c.ticks-b.ticks, 0)
			written += max(c.written-b.written, 0)
		}
	}
	what := fmt.Sprintf("bramble+containerd+%d shims and what they reaped", len(shims))
	cpu := float64(ticks) / 60 // ticks are 1/100 s: per 60 s, in % of one core
	load = record("server-cpu", fmt.Sprintf("%.1f %%", cpu))
	fmt.Printf("idle CPU over 60 s, %s: %5.1f %% of one core, load %s\n", what, cpu, load)
	mib := float64(written) / (1 << 20)
	load = record("server-writes", fmt.Sprintf("%.2f MiB/min", mib))
	fmt.Printf("idle disk writes over 60 s (write_bytes), same processes (SQLite is in bramble): %.2f MiB, load %s\n", mib, load)
}

// waitNodeReady waits until the (single) node is Ready with a heartbeat from
// since or later. Heartbeats have a resolution of one second; the status a
// stopped process left has an older one.
func waitNodeReady(ctx context.Context, cs *kubernetes.Clientset, since time.Time) error {
	since = since.Truncate(time.Second)
	return poll(ctx, func() bool {
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil || len(nodes.Items) == 0 {
			return false
		}
		for _, c := range nodes.Items[0].Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status == corev1.ConditionTrue && !c.LastHeartbeatTime.Time.Before(since)
			}
		}
		return false
	})
}

// startBusyboxNode starts a server with a node and the busybox test image
// in a fresh data dir and waits until its node is Ready.
func startBusyboxNode(ctx context.Context, bin string) (*nodeRun, *kubernetes.Clientset, error) {
	n, err := startNode(bin, false, filepath.Join("dist", "images", runtime.GOARCH, "busybox.tar"))
	if err != nil {
		return nil, nil, err
	}
	cs, err := waitClient(ctx, n.kubeconfig)
	if err == nil {
		err = waitNodeReady(ctx, cs, n.p.started)
	}
	if err != nil {
		n.stop()
		return nil, nil, fmt.Errorf("node Ready: %w", err)
	}
	return n, cs, nil
}

func waitClient(ctx context.Context, kubeconfig string) (*kubernetes.Clientset, error) {
	var cs *kubernetes.Clientset
	err := poll(ctx, func() bool {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return false
		}
		cfg.QPS, cfg.Burst = 1000, 1000
		cfg.Timeout = 30 * time.Second // a request to a stopping server fails instead of hanging
		cs, err = kubernetes.NewForConfig(cfg)
		return err == nil
	})
	return cs, err
}

func poll(ctx context.Context, ok func() bool) error {
	for ctx.Err() == nil {
		if ok() {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return ctx.Err()
}

// containerdSocket is the gRPC address in the config file a containerd
// process was started with ("" when unknown).
func containerdSocket(pid int) string {
	if pid <= 0 {
		return ""
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	args := strings.Split(string(cmdline), "\x00")
	config := ""
	for i, a := range args {
		if (a == "--config" || a == "-c") && i+1 < len(args) {
			config = args[i+1]
		} else if v, ok := strings.CutPrefix(a, "--config="); ok {
			config = v
		}
	}
	data, err := os.ReadFile(config)
	if err != nil {
		return ""
	}
	grpc := false
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			grpc = line == "[grpc]"
			continue
		}
		if k, v, ok := strings.Cut(line, "="); grpc && ok && strings.TrimSpace(k) == "address" {
			return strings.Trim(strings.TrimSpace(v), `"'`)
		}
	}
	return ""
}

// containerdShims lists the containerd shims serving the containerd at
// socket (all the machine's shims when socket is "").
func containerdShims(socket string) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if comm, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "comm")); !strings.HasPrefix(string(comm), "containerd-shim") {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		args := strings.Split(string(cmdline), "\x00")
		if socket == "" || slices.ContainsFunc(args, func(a string) bool { return a == socket || strings.HasSuffix(a, "="+socket) }) {
			out = append(out, pid)
		}
	}
	return out
}

// smapsRollup reads /proc/PID/smaps_rollup in KiB.
func smapsRollup(pid int) map[string]int {
	out := map[string]int{}
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 {
			n, err := strconv.Atoi(fields[1])
			if err == nil {
				out[strings.TrimSuffix(fields[0], ":")] = n
			}
		}
	}
	return out
}

// residentByMapping sums a process's resident KiB by kind of mapping: its
// executable's code, read-only data (rodata, pclntab), writable data, and
// anonymous memory (heap, stacks), to see what an idle node really keeps.
func residentByMapping(pid int) string {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	kinds := map[string]int{}
	kind := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":"):
			perms, path := fields[1], ""
			if len(fields) >= 6 {
				path = fields[5]
			}
			switch {
			case path == exe && strings.HasPrefix(perms, "r-x"):
				kind = "code"
			case path == exe && strings.HasPrefix(perms, "r--"):
				kind = "rodata"
			case path == exe:
				kind = "data"
			case path == "" || strings.HasPrefix(path, "["):
				kind = "anonymous"
			default:
				kind = "other files"
			}
		case len(fields) >= 2 && fields[0] == "Rss:":
			n, _ := strconv.Atoi(fields[1])
			kinds[kind] += n
		}
	}
	var parts []string
	for _, k := range []string{"code", "rodata", "data", "anonymous", "other files"} {
		parts = append(parts, fmt.Sprintf("%s %d MiB", k, kinds[k]/1024))
	}
	return strings.Join(parts, ", ")
}

func ticks(pids []int) int {
	total := 0
	for _, pid := range pids {
		total += cpuTicksOf(pid)
	}
	return total
}

type counters struct{ ticks, written int }

// readCounters reads, by process, its CPU time with that of the children
// it reaped (utime+stime+cutime+cstime, in 1/100 s) and the bytes it caused
// to be written to disk (write_bytes of /proc/PID/io, which also counts
// reaped children). A process gone is left out.
func readCounters(pids []int) map[int]counters {
	out := map[int]counters{}
	for _, pid := range pids {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(stat)
		fields := strings.Fields(s[strings.LastIndex(s, ")")+2:])
		if len(fields) < 15 {
			continue
		}
		var c counters
		for _, f := range fields[11:15] {
			n, _ := strconv.Atoi(f)
			c.ticks += n
		}
		io, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(io), "\n") {
			if v, ok := strings.CutPrefix(line, "write_bytes: "); ok {
				c.written, _ = strconv.Atoi(v)
			}
		}
		out[pid] = c
	}
	return out
}

// sqliteSizes describes the server's SQLite database: state.db and its WAL,
// and the free pages as of the last checkpoint (from the file's header).
func sqliteSizes(dataDir string) string {
	db, wal, free := sqliteFiles(dataDir)
	return fmt.Sprintf("state.db %.1f MiB + state.db-wal %.1f MiB = %.1f MiB (free pages at the last checkpoint: %.1f MiB)",
		mibOf(db), mibOf(wal), mibOf(db+wal), mibOf(free))
}

func sqliteFiles(dataDir string) (db, wal, free int64) {
	path := filepath.Join(dataDir, "server", "db", "state.db")
	if fi, err := os.Stat(path); err == nil {
		db = fi.Size()
	}
	if fi, err := os.Stat(path + "-wal"); err == nil {
		wal = fi.Size()
	}
	if f, err := os.Open(path); err == nil {
		h := make([]byte, 100)
		if _, err := f.ReadAt(h, 0); err == nil && string(h[:16]) == "SQLite format 3\x00" {
			page := int64(binary.BigEndian.Uint16(h[16:18]))
			if page == 1 {
				page = 65536
			}
			free = int64(binary.BigEndian.Uint32(h[36:40])) * page
		}
		f.Close()
	}
	return db, wal, free
}

func mibOf(n int64) float64 { return float64(n) / (1 << 20) }
